//! The simulator as StableToolBench's server (`server/main.py`) answers a call, against
//! tests/fixtures/stb-server.expected.json, written by scripts/make_server_fixture.py
//! running the server's own code on tests/fixtures/stb-tools/ and stb-cache/: the
//! API document of the simulation prompt with and without a tools folder, the order
//! cache → real API → simulation, `check_result`, the wait between tries; and, where
//! umi parts from the server on purpose, a failed simulation is never saved.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use umi_core::env::{ApiCall, ApiReply, ToolBackend};
use umi_tools::cache::{Lookup, ResponseCache};
use umi_tools::miss_simulator::{
    failure_reply, user_prompt, MissSimulator, RETRY_WAIT, SYSTEM_PROMPT,
};
use umi_tools::real_api::{check_result, RealApi};
use umi_tools::simulator::Simulator;
use umi_tools::tools_folder::{api_doc, ToolsFolder};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn expected() -> Value {
    let path = fixtures().join("stb-server.expected.json");
    serde_json::from_slice(&std::fs::read(path).expect("fixture")).expect("fixture JSON")
}

fn call_of(v: &Value) -> ApiCall {
    let text = |k: &str| v[k].as_str().expect(k).to_string();
    ApiCall {
        category: text("category"),
        tool_name: text("tool_name"),
        api_name: text("api_name"),
        tool_input: text("tool_input"),
        ..ApiCall::default()
    }
}

/// A copy of the response cache fixture, to be written to.
fn cache_copy(dir: &Path) -> PathBuf {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let path = entry.unwrap().path();
            let target = to.join(path.file_name().unwrap());
            if path.is_dir() {
                copy(&path, &target);
            } else {
                std::fs::copy(&path, &target).unwrap();
            }
        }
    }
    let root = dir.join("tool_response_cache");
    copy(&fixtures().join("stb-cache"), &root);
    root
}

/// Every file under `root` with its bytes.
fn snapshot(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                out.push((path, bytes));
            }
        }
    }
    out.sort();
    out
}

/// One request a stand-in server read: its header lines (names lower-cased) and body.
#[derive(Clone, Debug)]
struct Request {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

type Answer = Box<dyn Fn(usize) -> (u16, String) + Send + Sync>;

/// A stand-in HTTP server: the n-th request (from 0) is answered `answer(n)`, one
/// request a connection. Yields its base URL and the requests read.
async fn serve(answer: Answer) -> (String, Arc<Mutex<Vec<Request>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = requests.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut got = Vec::new();
            let mut buf = vec![0u8; 8192];
            let request = loop {
                let n = sock.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    break None;
                }
                got.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&got).to_string();
                let Some(end) = text.find("\r\n\r\n") else {
                    continue;
                };
                let headers: Vec<(String, String)> = text[..end]
                    .lines()
                    .skip(1)
                    .filter_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        Some((k.trim().to_ascii_lowercase(), v.trim().to_string()))
                    })
                    .collect();
                let len: usize = headers
                    .iter()
                    .find(|(k, _)| k == "content-length")
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(0);
                if got.len() >= end + 4 + len {
                    break Some(Request {
                        headers,
                        body: got[end + 4..end + 4 + len].to_vec(),
                    });
                }
            };
            let Some(request) = request else { continue };
            let n = {
                let mut seen = seen.lock().unwrap();
                seen.push(request);
                seen.len() - 1
            };
            let (status, body) = answer(n);
            let head = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = sock.write_all(head.as_bytes()).await;
            let _ = sock.write_all(body.as_bytes()).await;
        }
    });
    (base, requests)
}

/// A chat completion whose message is `content`.
fn completion(content: &str) -> String {
    json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]})
        .to_string()
}

/// A model endpoint answering the given message contents in turn.
async fn scripted_model(answers: Vec<String>) -> (String, Arc<Mutex<Vec<Request>>>) {
    serve(Box::new(move |n| {
        (200, completion(answers.get(n).map_or("", String::as_str)))
    }))
    .await
}

fn miss_simulator(base: &str, tools: Option<ToolsFolder>) -> MissSimulator {
    let mut m = MissSimulator::new(format!("{base}/v1"), "gpt-4-turbo".into());
    m.retry_wait = Duration::from_millis(1);
    m.tools = tools;
    m
}

fn tools() -> ToolsFolder {
    ToolsFolder::open(&fixtures().join("stb-tools")).unwrap()
}

/// The user message is the server's, byte for byte, with the tools folder (its
/// `tool_description` and the matching `api_list` entries, `[]` when none matches) and
/// without it (both fields empty strings), its cache's replies as examples.
#[test]
fn the_api_document_is_the_servers_with_and_without_a_tools_folder() {
    let expected = expected();
    assert_eq!(expected["system_prompt"], SYSTEM_PROMPT);
    let cache = ResponseCache::open(&fixtures().join("stb-cache")).unwrap();
    let tools = tools();
    let cases = expected["prompts"].as_array().unwrap();
    assert_eq!(cases.len(), 22);
    for case in cases {
        let call = call_of(&case["call"]);
        let folder = case["tools_folder"].as_bool().unwrap().then_some(&tools);
        let key = ResponseCache::key_of(&call.tool_input).unwrap();
        let prompt = user_prompt(&api_doc(folder, &call), &key, &cache.examples(&call));
        assert_eq!(prompt, case["user_prompt"].as_str().unwrap(), "{case}");
    }
}

/// The server's order, case by case on one cache (so that what one case saves is the
/// next one's example): a cached input is answered from the cache alone; otherwise the
/// real API gets the server's body and headers, and its reply is used (and saved) when
/// `check_result` accepts it; else the model is asked, with the server's request, until
/// it answers JSON, and that is saved. Where the model never answers JSON the server
/// saves its "Failed to generate fake response"; umi answers it but saves nothing.
#[tokio::test]
async fn calls_go_to_the_cache_then_the_real_api_then_the_simulation() {
    let expected = expected();
    let dir = tempfile::tempdir().unwrap();
    let root = cache_copy(dir.path());
    for case in expected["order"].as_array().unwrap() {
        let name = case["case"].as_str().unwrap();
        let status = case["real"]["status"].as_u64().unwrap() as u16;
        let body = case["real"]["body"].as_str().unwrap().to_string();
        let (real_base, real_requests) = serve(Box::new(move |_| (status, body.clone()))).await;
        let answers: Vec<String> = case["model_answers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect();
        let (model_base, model_requests) = scripted_model(answers).await;

        let mut sim = Simulator::new();
        sim.add_cache(ResponseCache::open(&root).unwrap());
        let mut real = RealApi::new(format!("{real_base}/rapidapi"), "KEY".into());
        real.timeout = Duration::from_secs(10);
        sim.answer_from_real_api(real);
        sim.simulate_misses(miss_simulator(&model_base, Some(tools())));
        sim.save_new_replies(true);
        let call = call_of(&case["call"]);
        let before = snapshot(&root);

        let reply = sim.call(&call).await.unwrap();
        assert_eq!(reply, ApiReply::from_entry(&case["reply"]), "{name}");

        let real_requests = real_requests.lock().unwrap().clone();
        let want = case["real_requests"].as_array().unwrap();
        assert_eq!(real_requests.len(), want.len(), "{name}");
        for (got, want) in real_requests.iter().zip(want) {
            assert_eq!(got.json(), want["body"], "{name}");
            for (k, v) in want["headers"].as_object().unwrap() {
                assert_eq!(
                    got.header(&k.to_ascii_lowercase()),
                    v.as_str(),
                    "{name}: {k}"
                );
            }
        }
        let model_requests = model_requests.lock().unwrap().clone();
        assert_eq!(
            model_requests.len() as u64,
            case["model_requests"].as_u64().unwrap(),
            "{name}"
        );
        if let Some(first) = model_requests.first() {
            let (got, want) = (first.json(), &case["first_model_request"]);
            assert_eq!(got["messages"], want["messages"], "{name}");
            assert_eq!(got["model"], want["model"], "{name}");
            assert_eq!(got["max_tokens"], want["max_tokens"], "{name}");
            assert_eq!(got["temperature"].as_f64(), want["temperature"].as_f64());
            assert_eq!(got["response_format"], want["response_format"], "{name}");
        }

        let cache = ResponseCache::open(&root).unwrap();
        if case["reply"]["error"] == "Failed to generate fake response" {
            // The server saves its failure (`saved` holds it); umi never does.
            assert_eq!(case["saved"], case["reply"], "{name}");
            assert_eq!(snapshot(&root), before, "{name}");
            assert_eq!(cache.lookup(&call), Lookup::Miss, "{name}");
        } else {
            assert_eq!(
                cache.lookup(&call),
                Lookup::Hit(case["saved"].clone()),
                "{name}"
            );
        }
    }
}

/// A simulation that fails (the endpoint unreachable, an HTTP error, a body that is not
/// a completion, a message that is not JSON, three times) answers the server's
/// "Failed to generate fake response" and leaves the cache as it was.
#[tokio::test]
async fn failed_simulations_are_never_saved() {
    let unreachable = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port())
    };
    let cases: Vec<(&str, Option<Answer>)> = vec![
        ("unreachable", None),
        ("http 500", Some(Box::new(|_| (500, completion("{}"))))),
        ("http 429", Some(Box::new(|_| (429, String::new())))),
        (
            "not a completion",
            Some(Box::new(|_| (200, "<html>".into()))),
        ),
        (
            "no message",
            Some(Box::new(|_| (200, json!({"choices": []}).to_string()))),
        ),
        (
            "not JSON",
            Some(Box::new(|_| (200, completion("Sure! Here it is: {")))),
        ),
    ];
    let expected = expected();
    let call = call_of(&expected["order"][1]["call"]);
    for (name, answer) in cases {
        let dir = tempfile::tempdir().unwrap();
        let root = cache_copy(dir.path());
        let (base, requests) = match answer {
            Some(answer) => {
                let (base, requests) = serve(answer).await;
                (base, Some(requests))
            }
            None => (unreachable.clone(), None),
        };
        let mut sim = Simulator::new();
        sim.add_cache(ResponseCache::open(&root).unwrap());
        sim.simulate_misses(miss_simulator(&base, None));
        sim.save_new_replies(true);
        let before = snapshot(&root);
        let reply = sim.call(&call).await.unwrap();
        assert_eq!(reply, ApiReply::from_entry(&failure_reply()), "{name}");
        assert_eq!(snapshot(&root), before, "{name}");
        if let Some(requests) = requests {
            assert_eq!(requests.lock().unwrap().len(), 3, "{name}");
        }
        let report = sim.report().unwrap();
        assert!(report.contains("1 failed"), "{name}: {report}");
    }
}

/// The server sleeps 1 s after a try that gave no JSON; umi waits that long between
/// tries (`RETRY_WAIT`, here shortened).
#[tokio::test]
async fn tries_are_spaced_as_the_server_spaces_them() {
    let expected = expected();
    assert_eq!(
        RETRY_WAIT,
        Duration::from_secs_f64(expected["retry_sleeps"][0].as_f64().unwrap())
    );
    let retried = expected["order"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["case"] == "model_retried")
        .unwrap();
    assert_eq!(retried["sleeps"], json!([1]));
    let (base, requests) = scripted_model(vec!["no".into(), "no".into(), "no".into()]).await;
    let mut m = miss_simulator(&base, None);
    m.retry_wait = Duration::from_millis(150);
    let call = call_of(&expected["order"][1]["call"]);
    let start = Instant::now();
    assert!(m.simulate(&call, "{}", &[]).await.is_err());
    let took = start.elapsed();
    assert_eq!(requests.lock().unwrap().len(), 3);
    assert!(took >= Duration::from_millis(300), "{took:?}");
}

/// The server's `check_result` on real-API replies.
#[test]
fn real_replies_are_judged_by_the_servers_check_result() {
    let expected = expected();
    let cases = expected["check_result"].as_array().unwrap();
    assert!(cases.len() > 40);
    for case in cases {
        assert_eq!(
            check_result(&case["reply"]),
            case["usable"].as_bool().unwrap(),
            "{}",
            case["reply"]
        );
    }
}
