//! The StableToolBench loop from the command line: `umi tools call` reads a response cache
//! in StableToolBench's layout and prints the recorded reply unchanged; a `--record` path
//! that holds no recordings is refused, named.

mod support;

use std::path::{Path, PathBuf};

use serde_json::Value;
use support::{replay, scripted_judge, umi};

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

    let (judge, calls, _) = scripted_judge();
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

fn pass_rate(judge: &str, args: &[&str], dirs: &[&Path]) -> (String, String) {
    let mut command = umi();
    command
        .args(["eval", "pass-rate", "--judge", judge])
        .args(args);
    for dir in dirs {
        command.arg("--answers").arg(dir);
    }
    let output = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{stderr}");
    (String::from_utf8_lossy(&output.stdout).into_owned(), stderr)
}

/// One folder with a CoT@1 and a DFS answer file per query (StableToolBench's converter
/// reads the files whose name holds `--method`): each query counts once, of the method
/// asked for; the default is what `umi run` writes by default.
#[test]
fn the_pass_rate_counts_the_answers_of_one_method() {
    let recordings = root("data/toolbench-real/answer/G1_answer");
    let out = tempfile::tempdir().unwrap();
    replay(&recordings, out.path(), &[]);
    replay(&recordings, out.path(), &["--width", "1"]);
    let (judge, _, _) = scripted_judge();
    let (stdout, _) = pass_rate(&judge, &["--evaluate-times", "1"], &[out.path()]);
    assert!(stdout.contains("(5 queries, 1 judgments each)"), "{stdout}");
    let (stdout, _) = pass_rate(
        &judge,
        &["--evaluate-times", "1", "--method", "CoT@1"],
        &[out.path()],
    );
    assert!(stdout.contains("(5 queries, 1 judgments each)"), "{stdout}");
    let output = umi()
        .args([
            "eval",
            "pass-rate",
            "--judge",
            &judge,
            "--method",
            "DFS_woFilter_w3",
        ])
        .arg("--answers")
        .arg(out.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("methods there: CoT@1, DFS_woFilter_w2"),
        "{stderr}"
    );
}

/// A rerun over unchanged answers asks the judge nothing and writes the same result file;
/// one more evaluation asks only for it.
#[test]
fn the_pass_rate_reuses_its_verdicts() {
    let recordings = root("data/toolbench-real/answer/G1_answer");
    let out = tempfile::tempdir().unwrap();
    replay(&recordings, out.path(), &[]);
    let (judge, _, requests) = scripted_judge();
    let count = || requests.load(std::sync::atomic::Ordering::SeqCst);
    let (first, _) = pass_rate(&judge, &["--evaluate-times", "2"], &[out.path()]);
    // Four answers judged twice, two of them Unsure first: 2 * (4 + 2) requests.
    assert_eq!(count(), 12);
    let result = std::fs::read(out.path().join("pass_rate.json")).unwrap();
    let (again, stderr) = pass_rate(&judge, &["--evaluate-times", "2"], &[out.path()]);
    assert_eq!(count(), 12, "{stderr}");
    assert_eq!(again, first);
    assert!(
        stderr.contains("0 judgments asked of the judge, 8 reused"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(out.path().join("pass_rate.json")).unwrap(),
        result
    );
    pass_rate(&judge, &["--evaluate-times", "3"], &[out.path()]);
    assert_eq!(count(), 18);
}

/// Two inference runs: each one's rate, then their mean and (population) standard
/// deviation, printed and in the summaries.
#[test]
fn the_pass_rate_of_several_runs_is_their_mean_and_std() {
    let recordings = root("data/toolbench-real/answer/G1_answer");
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    replay(&recordings, one.path(), &[]);
    replay(&recordings, two.path(), &[]);
    // The second run lacks query 10 (Solved in the first): 3 of 4 solved.
    std::fs::remove_file(two.path().join("10_DFS_woFilter_w2.json")).unwrap();
    let (judge, _, _) = scripted_judge();
    let summary = one.path().join("over-runs.json");
    let (stdout, _) = pass_rate(
        &judge,
        &[
            "--evaluate-times",
            "1",
            "--summary",
            summary.to_str().unwrap(),
        ],
        &[one.path(), two.path()],
    );
    assert!(
        stdout.contains("Solve rate: 80.0% Std: 0.0% (5 queries"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Solve rate: 75.0% Std: 0.0% (4 queries"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Over 2 runs: Solve rate: 77.5% Std: 2.5%"),
        "{stdout}"
    );
    let over: Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    assert_eq!(over["solve_rate_mean"], 77.5);
    assert_eq!(over["solve_rate_std"], 2.5);
    let run: Value =
        serde_json::from_slice(&std::fs::read(two.path().join("pass_rate.summary.json")).unwrap())
            .unwrap();
    assert_eq!(run["solve_rate"], 75.0);
    assert_eq!(run["queries"], 4);
    assert_eq!(run["over_runs"], over);
}

/// ToolEval's win rate of replayed answers against a reference whose final answers
/// differ (so the judge compares them), with a scripted judge: every query judged in
/// each round, a query the candidate did not answer counted for the reference, the
/// preference file in StableToolBench's schema, and a rerun asking nothing.
#[test]
fn the_win_rate_compares_answers_as_tooleval_does() {
    let recordings = root("data/toolbench-real/answer/G1_answer");
    let dir = tempfile::tempdir().unwrap();
    let (reference, candidate) = (dir.path().join("ref"), dir.path().join("cand"));
    replay(&recordings, &reference, &[]);
    replay(&recordings, &candidate, &[]);
    for entry in std::fs::read_dir(&reference).unwrap() {
        let path = entry.unwrap().path();
        if !path.to_string_lossy().ends_with("_DFS_woFilter_w2.json") {
            continue;
        }
        let mut answer: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let text = answer["answer_generation"]["final_answer"]
            .as_str()
            .unwrap()
            .to_string();
        if !text.is_empty() {
            answer["answer_generation"]["final_answer"] =
                Value::String(format!("{text} (shorter)"));
        }
        std::fs::write(&path, serde_json::to_vec(&answer).unwrap()).unwrap();
    }
    std::fs::remove_file(candidate.join("10_DFS_woFilter_w2.json")).unwrap();

    let (judge, _, requests) = scripted_judge();
    let count = || requests.load(std::sync::atomic::Ordering::SeqCst);
    let win_rate = || {
        let output = umi()
            .args([
                "eval",
                "win-rate",
                "--evaluate-times",
                "3",
                "--judge",
                &judge,
            ])
            .arg("--answers")
            .arg(&candidate)
            .arg("--reference")
            .arg(&reference)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "{stderr}");
        (String::from_utf8_lossy(&output.stdout).into_owned(), stderr)
    };
    let (stdout, _) = win_rate();
    let asked = count();
    assert!(asked > 0);
    let file: Value =
        serde_json::from_slice(&std::fs::read(candidate.join("win_rate.json")).unwrap()).unwrap();
    let entries = file.as_object().unwrap();
    assert_eq!(entries.len(), 5, "{file}");
    let mut won = 0;
    for (id, entry) in entries {
        let (r, c) = (
            entry["ref"].as_u64().unwrap(),
            entry["cand"].as_u64().unwrap(),
        );
        assert_eq!(r + c, 3, "query {id}: {entry}");
        for round in 0..3 {
            assert_eq!(entry[format!("round_{round}")], "complete");
        }
        won += usize::from(c > r);
    }
    assert_eq!(file["10"]["ref"], 3, "unanswered by the candidate");
    let summary: Value =
        serde_json::from_slice(&std::fs::read(candidate.join("win_rate.summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["win_rate"], won as f64 / 5.0);
    let expected = format!(
        "Test set: cand. Reference model: ref, Candidate model: cand. Win rate: {:?}, Tie rate: 0.0\n",
        won as f64 / 5.0
    );
    assert_eq!(stdout, expected);

    let (again, stderr) = win_rate();
    assert_eq!(count(), asked, "{stderr}");
    assert_eq!(again, stdout);
    assert!(
        stderr.contains("0 judgments asked of the judge, 12 reused"),
        "{stderr}"
    );

    let refused = umi()
        .args(["eval", "win-rate", "--answers"])
        .arg(&candidate)
        .arg("--reference")
        .arg(&reference)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("needs a judge"));
}
