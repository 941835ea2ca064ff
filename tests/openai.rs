//! OpenAI-compatible endpoints both ways, on loopback: a worker's `--openai-listen`
//! serving `/v1/completions` and `/v1/chat/completions` (both streamed too) with its API
//! key required, and `umi run` playing roles through `openai+http://` against it, mixed
//! with a role in process, giving the same greedy answer file as the roles in process.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::procs::{free_port, queries, start_worker, worker_command};
use support::umi;

const KEY: &str = "test-key-123";

fn post(port: u16, path: &str, key: Option<&str>, body: &Value) -> (u16, String) {
    let body = body.to_string();
    let auth = key.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
    let request = format!(
        "POST {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    let status = reply[9..12].parse().unwrap();
    let body = reply
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

#[test]
fn openai_endpoints_serve_check_keys_and_play_roles_like_the_engine_in_process() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut cmd = worker_command("planner", None);
    cmd.args(["--openai-listen", &listen, "--openai-api-key", KEY]);
    let (_worker, _) = start_worker(&mut cmd);

    // No key, a wrong key: refused before any work.
    let ask = json!({"prompt": "The capital of France is", "max_tokens": 8, "temperature": 0});
    assert_eq!(post(port, "/v1/completions", None, &ask).0, 401);
    assert_eq!(post(port, "/v1/completions", Some("wrong"), &ask).0, 401);
    // Bad input named.
    let (status, body) = post(
        port,
        "/v1/completions",
        Some(KEY),
        &json!({"prompt": "x", "max_tokens": 1_000_000}),
    );
    assert_eq!(status, 400);
    assert!(body.contains("max_tokens"), "{body}");

    // Function calling: a forced call comes back as one (its arguments decoded under the
    // function's schema); the legacy fields are refused by name.
    let tools = json!([{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}}}]);
    let chat = |extra: Value| {
        let mut body = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 12});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        post(port, "/v1/chat/completions", Some(KEY), &body)
    };
    let forced = json!({"type": "function", "function": {"name": "f"}});
    let (status, body) =
        chat(json!({"tools": tools, "tool_choice": forced, "temperature": 0, "max_tokens": 48}));
    assert_eq!(status, 200, "{body}");
    let reply: Value = serde_json::from_str(&body).unwrap();
    let call = &reply["choices"][0]["message"]["tool_calls"][0]["function"];
    assert_eq!(call["name"], "f", "{body}");
    let arguments: Value = serde_json::from_str(call["arguments"].as_str().unwrap()).unwrap();
    assert!(arguments["n"].is_i64(), "{body}");
    let (status, body) = chat(json!({"functions": [{"name": "f"}]}));
    assert_eq!(status, 400);
    assert!(body.contains("functions"), "{body}");
    let (status, body) = chat(json!({"tools": tools, "tool_choice": "auto"}));
    assert_eq!(status, 200, "{body}");
    let reply: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(reply["choices"][0]["message"]["role"], "assistant");

    let (status, body) = post(port, "/v1/completions", Some(KEY), &ask);
    assert_eq!(status, 200, "{body}");
    let whole: Value = serde_json::from_str(&body).unwrap();
    let text = whole["choices"][0]["text"].as_str().unwrap().to_string();
    assert!(!text.is_empty());
    assert_eq!(whole["usage"]["completion_tokens"], 8);

    // Streamed: the same greedy text in pieces, then [DONE].
    let mut streamed = ask.clone();
    streamed["stream"] = json!(true);
    let (status, body) = post(port, "/v1/completions", Some(KEY), &streamed);
    assert_eq!(status, 200);
    let pieces: String = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| {
            serde_json::from_str::<Value>(d).unwrap()["choices"][0]["text"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert_eq!(pieces, text);
    assert!(body.trim_end().ends_with("data: [DONE]"), "{body}");

    let chat = json!({"messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 6, "temperature": 0});
    let (status, body) = post(port, "/v1/chat/completions", Some(KEY), &chat);
    assert_eq!(status, 200, "{body}");
    let reply: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(reply["object"], "chat.completion");
    assert_eq!(reply["choices"][0]["message"]["role"], "assistant");
    let answer = reply["choices"][0]["message"]["content"].as_str().unwrap();
    // Streamed chat: the same greedy reply in deltas, then [DONE].
    let mut streamed = chat.clone();
    streamed["stream"] = json!(true);
    let (status, body) = post(port, "/v1/chat/completions", Some(KEY), &streamed);
    assert_eq!(status, 200, "{body}");
    let deltas: String = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| {
            let chunk: Value = serde_json::from_str(d).unwrap();
            assert_eq!(chunk["object"], "chat.completion.chunk");
            chunk["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert_eq!(deltas, answer);
    assert!(body.trim_end().ends_with("data: [DONE]"), "{body}");

    // Planner and caller through openai+http://, the summarizer in process (roles mix):
    // the answer file of all three roles in process.
    let dir = tempfile::tempdir().unwrap();
    let file = queries(dir.path(), 1);
    let budget = [
        "--temperature",
        "0",
        "--max-new-tokens",
        "24",
        "--max-steps",
        "2",
    ];
    let endpoint = format!("openai+http://{listen}/v1");
    let remote_out = dir.path().join("remote");
    let status = umi()
        .args(["run", "--queries"])
        .arg(&file)
        .arg("--out")
        .arg(&remote_out)
        .args([
            "--planner-endpoint",
            &endpoint,
            "--caller-endpoint",
            &endpoint,
        ])
        .args(["--dtype", "quantized"])
        .env("OPENAI_API_KEY", KEY)
        .args(budget)
        .status()
        .unwrap();
    assert!(status.success());
    let local_out = dir.path().join("local");
    let status = umi()
        .args(["run", "--queries"])
        .arg(&file)
        .arg("--out")
        .arg(&local_out)
        .args(["--dtype", "quantized"])
        .args(budget)
        .status()
        .unwrap();
    assert!(status.success());
    let read = |d: &std::path::Path| -> Value {
        serde_json::from_slice(&std::fs::read(d.join("1_DFS_woFilter_w2.json")).unwrap()).unwrap()
    };
    let (remote, local) = (read(&remote_out), read(&local_out));
    assert!(remote["answer_generation"]["query_count"].as_u64().unwrap() >= 1);
    assert_eq!(remote, local);
}

/// Structured output and function calling through the `openai` Python package: JSON
/// schemas and objects, forced, required and free calls, streamed too, vLLM's guided
/// fields, and refusals in OpenAI's error shape (`tests/clients/openai_structured.py`).
#[test]
fn the_openai_python_client_gets_structured_output_and_tool_calls() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut cmd = worker_command("planner", None);
    cmd.args(["--openai-listen", &listen, "--openai-api-key", KEY]);
    let (_worker, _) = start_worker(&mut cmd);
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/openai_structured.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(format!("http://{listen}/v1"))
        .arg(KEY)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        !stderr.contains("No module named 'openai'"),
        "the openai package is missing: run scripts/setup.sh"
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("ok ")).count(),
        12,
        "{stdout}"
    );
}
