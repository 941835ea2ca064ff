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
