//! The StableToolBench loop from the command line: `umi tools call` reads a response cache
//! in StableToolBench's layout and prints the recorded reply unchanged; a `--record` path
//! that holds no recordings is refused, named.

mod support;

use std::path::{Path, PathBuf};

use serde_json::Value;
use support::{replay, umi};

fn root(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

#[test]
fn tools_call_prints_the_cached_reply_of_a_call_named_as_in_an_api_list() {
    let cases: Value = serde_json::from_slice(
        &std::fs::read(root("tests/fixtures/stb-cache.expected.json")).unwrap(),
    )
    .unwrap();
    for case in cases.as_array().unwrap() {
        let output = umi()
            .args(["tools", "call", "--record"])
            .arg(root("tests/fixtures/stb-cache"))
            .args(["--category", case["category"].as_str().unwrap()])
            .args(["--tool", case["tool"].as_str().unwrap()])
            .args(["--api", case["api"].as_str().unwrap()])
            .args(["--input", case["input"].as_str().unwrap()])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{stderr}");
        let printed: Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(printed, case["reply"], "{case}");
        assert!(stderr.contains("1 from the response cache"), "{stderr}");
    }
}

#[test]
fn a_record_path_without_recordings_is_refused_by_name() {
    let empty = tempfile::tempdir().unwrap();
    let output = umi()
        .args(["tools", "call", "--record"])
        .arg(empty.path())
        .args(["--category", "Data", "--tool", "t", "--api", "a"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&empty.path().display().to_string())
            && stderr.contains("no recorded responses"),
        "{stderr}"
    );
}

/// What StableToolBench's (and upstream ToolBench's) `convert_to_answer_format.py` needs
/// of a solved answer file: a system and a user message first, then only the roles it
/// knows (`function` for observations, never α-UMi's `observation`), each non-Finish call
/// followed by its result. Returns the tool steps it lists.
fn stabletoolbench_steps(answer: &Value) -> usize {
    let conversation = answer["answer_generation"]["train_messages"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .as_array()
        .unwrap();
    assert_eq!(conversation[0]["role"], "system");
    assert_eq!(conversation[1]["role"], "user");
    let mut steps = 0;
    for (i, m) in conversation.iter().enumerate().skip(2) {
        let role = m["role"].as_str().unwrap();
        assert!(
            ["system", "user", "function", "tool", "assistant"].contains(&role),
            "Unkown role {role}"
        );
        if role == "assistant" {
            let name = &m["function_call"]["name"];
            if name != "Finish" {
                assert_eq!(conversation[i + 1]["role"], "function");
                assert!(conversation[i + 1]["content"].is_string());
            }
            steps += 1;
        }
    }
    steps
}

#[test]
fn replayed_answers_in_toolbench_format_are_what_stabletoolbench_converts() {
    let recordings = root("data/toolbench-real/answer/G1_answer");
    let out = tempfile::tempdir().unwrap();
    replay(&recordings, out.path(), &["--answer-format", "toolbench"]);
    let mut solved = 0;
    for entry in std::fs::read_dir(out.path()).unwrap() {
        let path = entry.unwrap().path();
        if !path.to_string_lossy().ends_with("_DFS_woFilter_w2.json") {
            continue;
        }
        let answer: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        if answer["win"] == true {
            // Every call of the chain is listed: the first is not skipped as α-UMi's
            // converter skips it on its own format.
            assert!(stabletoolbench_steps(&answer) >= 2, "{}", path.display());
            solved += 1;
        }
    }
    assert_eq!(solved, 4);
}

/// Single-chain (CoT@1) files in toolbench format: solved ones list their calls as the
/// converter reads them, unsolved ones (the recorded give-ups) carry their chain in
/// `trys`, which the converter reads for queries without an answer.
#[test]
fn single_chain_answers_carry_trys_for_unsolved_queries() {
    let recordings = root("data/toolbench-real/answer/G1_answer");
    let out = tempfile::tempdir().unwrap();
    replay(
        &recordings,
        out.path(),
        &["--width", "1", "--answer-format", "toolbench"],
    );
    let (mut solved, mut unsolved) = (0, 0);
    for entry in std::fs::read_dir(out.path()).unwrap() {
        let path = entry.unwrap().path();
        if !path.to_string_lossy().ends_with("_CoT@1.json") {
            continue;
        }
        let answer: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(answer["forward_args"]["tree_beam_size"], 1);
        assert_eq!(answer["try_count"], 1, "{}", path.display());
        let chain = answer["trys"][0]["chain"].as_array().unwrap();
        assert_eq!(answer["trys"][0]["win"], answer["win"]);
        if answer["win"] == true {
            assert!(stabletoolbench_steps(&answer) >= 2, "{}", path.display());
            solved += 1;
        } else {
            assert!(!chain.is_empty(), "{}: an empty try", path.display());
            assert!(chain.iter().all(|n| n["node_type"].is_string()));
            unsolved += 1;
        }
    }
    assert_eq!((solved, unsolved), (4, 1));
}

/// A scripted judge (a test double, not a model) on loopback, answering StableToolBench's
/// forced function calls: `check_answer_status` is Unsure for queries about 'Gondrand'
/// and Solved otherwise; `parse_answer_status` is Solved. Counts the detail checks.
fn scripted_judge() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}/v1", listener.local_addr().unwrap());
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = calls.clone();
    std::thread::spawn(move || {
        for sock in listener.incoming() {
            let mut sock = sock.unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 65536];
            let body = loop {
                let n = sock.read(&mut buf).unwrap();
                got.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&got).into_owned();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len: usize = text
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse().ok())?
                        })
                        .unwrap_or(0);
                    if got.len() >= end + 4 + len {
                        break got[end + 4..end + 4 + len].to_vec();
                    }
                }
            };
            let request: Value = serde_json::from_slice(&body).unwrap();
            let function = request["tool_choice"]["function"]["name"]
                .as_str()
                .unwrap()
                .to_string();
            let prompt = request["messages"][0]["content"].as_str().unwrap();
            if function == "parse_answer_status" {
                assert!(
                    prompt.contains("\"answer_details\": [{\"role\": \"system\""),
                    "{prompt}"
                );
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            let status = if function == "check_answer_status" && prompt.contains("'Gondrand'") {
                "Unsure"
            } else {
                "Solved"
            };
            let arguments =
                serde_json::json!({"answer_status": status, "reason": "scripted"}).to_string();
            let reply = serde_json::json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": null,
                "tool_calls": [{"id": "c", "type": "function", "function": {"name": function, "arguments": arguments}}]}}]})
            .to_string();
            let head = format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", reply.len());
            let _ = sock.write_all(head.as_bytes());
            let _ = sock.write_all(reply.as_bytes());
        }
    });
    (base, calls)
}

/// StableToolBench's pass rate over replayed answers with a scripted judge: the four
/// recorded answers of G1 are judged (one of them through `parse_answer_status`), the
/// give-up is Unsolved without asking; the result file has StableToolBench's schema.
#[test]
fn the_pass_rate_judges_answers_as_stabletoolbench_does() {
    let recordings = root("data/toolbench-real/answer/G1_answer");
    let out = tempfile::tempdir().unwrap();
    replay(&recordings, out.path(), &[]);
    let refused = umi()
        .args(["eval", "pass-rate", "--answers"])
        .arg(out.path())
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("needs a judge"));

    let (judge, calls) = scripted_judge();
    let output = umi()
        .args([
            "eval",
            "pass-rate",
            "--evaluate-times",
            "2",
            "--judge",
            &judge,
            "--answers",
        ])
        .arg(out.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.starts_with("Solve rate: 80.0% Std: 0.0%"),
        "{stdout}"
    );
    let result: Value =
        serde_json::from_slice(&std::fs::read(out.path().join("pass_rate.json")).unwrap()).unwrap();
    assert_eq!(result.as_object().unwrap().len(), 5);
    assert_eq!(result["69"]["is_solved"]["0"], "AnswerStatus.Unsolved");
    assert_eq!(result["10"]["is_solved"]["1"], "AnswerStatus.Solved");
    assert!(result["10"]["final_step"]
        .as_str()
        .unwrap()
        .starts_with("Final step: {'name': 'Finish'"));
    // The two 'Gondrand' answers were Unsure at first, in both runs: detail checks.
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 4);

    // Judged again over the same folder: its own result files are not read as answers.
    let again = umi()
        .args(["eval", "pass-rate", "--judge", &judge, "--answers"])
        .arg(out.path())
        .output()
        .unwrap();
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert!(String::from_utf8_lossy(&again.stdout).contains("(5 queries"));
}
