//! `umi run` end to end on the real model: the embedded default over the shipped query
//! set (small budgets so it fits a test), resume after a kill, and bad input.

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::umi;

fn answer_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.retain(|p| p.to_string_lossy().ends_with("_DFS_woFilter_w2.json"));
    v.sort();
    v
}

fn check_answer_file(path: &Path) {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    for key in [
        "win",
        "tree",
        "forward_args",
        "compare_candidates",
        "answer_generation",
    ] {
        assert!(v.get(key).is_some(), "{} lacks {key}", path.display());
    }
    let gen = &v["answer_generation"];
    assert!(gen["query"].as_str().is_some_and(|q| !q.is_empty()));
    assert_eq!(
        gen["function"].as_array().unwrap().last().unwrap()["name"],
        "Finish"
    );
    assert!(gen["query_count"].as_u64().unwrap() >= 1);
    assert_eq!(v["tree"]["tree"]["node_type"], "Action Input");
    assert_eq!(v["forward_args"]["tree_beam_size"], 2);
}

const BUDGET: [&str; 4] = ["--max-new-tokens", "24", "--max-steps", "2"];

/// `--log-calls` logged each role call the trace holds, task by task in order, with its
/// rendered prompt and the engine's counts.
fn check_call_log(log: &Path, trace: &Path) {
    let lines = |path: &Path| -> Vec<Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let logged = lines(log);
    let mut expected = 0;
    for task in lines(trace) {
        let id = task["id"].as_str().unwrap();
        let of_task: Vec<&Value> = logged.iter().filter(|c| c["task_id"] == id).collect();
        let traced = task["calls"]["role_calls"].as_array().unwrap();
        assert_eq!(of_task.len(), traced.len(), "task {id}");
        for (call, traced) in of_task.iter().zip(traced) {
            assert_eq!(call["role"], traced["role"], "task {id}");
            assert_eq!(call["prompt_tokens"], traced["prompt_tokens"], "task {id}");
            assert_eq!(
                call["generated_tokens"], traced["generated_tokens"],
                "task {id}"
            );
            // α-UMi's role templates, rendered.
            let prompt = call["prompt"].as_str().unwrap();
            let start = match traced["role"].as_str().unwrap() {
                "summarizer" => "Make a conclusion based on the conversation history:\n",
                _ => "You have assess to the following apis:\n",
            };
            assert!(prompt.starts_with(start), "{call}");
        }
        expected += traced.len();
    }
    assert!(expected > 0);
    assert_eq!(logged.len(), expected);
}

#[test]
fn embedded_default_answers_every_shipped_query() {
    let out = tempfile::tempdir().unwrap();
    let calls = tempfile::NamedTempFile::new().unwrap();
    let status = umi()
        .args(["run", "--out"])
        .arg(out.path())
        .args(BUDGET)
        .arg("--log-calls")
        .arg(calls.path())
        .status()
        .unwrap();
    assert!(status.success());
    check_call_log(calls.path(), &out.path().join("trace.jsonl"));
    let files = answer_files(out.path());
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "1_DFS_woFilter_w2.json",
            "2_DFS_woFilter_w2.json",
            "9001_DFS_woFilter_w2.json",
            "9002_DFS_woFilter_w2.json"
        ]
    );
    for f in &files {
        check_answer_file(f);
    }
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["queries"], 4);
    let ended = summary["solved"].as_u64().unwrap()
        + summary["gave_up"].as_u64().unwrap()
        + summary["exhausted"].as_u64().unwrap();
    assert_eq!(ended, 4);
    assert_eq!(summary["failed"], 0);
    assert!(!out.path().read_dir().unwrap().any(|e| e
        .unwrap()
        .path()
        .to_string_lossy()
        .ends_with(".tmp")));
}

#[test]
fn a_run_killed_midway_resumes_without_redoing_finished_queries() {
    let out = tempfile::tempdir().unwrap();
    // One query at a time: with the default concurrency all four finish within
    // moments of each other and the kill can come too late.
    let mut child = umi()
        .args(["run", "--concurrency", "1", "--out"])
        .arg(out.path())
        .args(BUDGET)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    while answer_files(out.path()).is_empty() {
        assert!(Instant::now() < deadline, "no answer file within 300 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let finished: Vec<(PathBuf, std::time::SystemTime)> = answer_files(out.path())
        .into_iter()
        .map(|p| {
            check_answer_file(&p); // never half-written
            let t = std::fs::metadata(&p).unwrap().modified().unwrap();
            (p, t)
        })
        .collect();
    assert!(
        finished.len() < 4,
        "the run finished before it could be killed"
    );

    let output = umi()
        .args(["run", "--out"])
        .arg(out.path())
        .args(BUDGET)
        .output()
        .unwrap();
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("{} of 4 queries already answered", finished.len())),
        "{stderr}"
    );
    // The resumed run's summary counts every query of the file, the skipped ones too.
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["queries"], 4);
    assert_eq!(summary["skipped_done"], finished.len());
    let outcomes: u64 = ["solved", "gave_up", "exhausted", "failed"]
        .iter()
        .map(|k| summary[k].as_u64().unwrap())
        .sum();
    assert_eq!(outcomes, 4, "every query's outcome is counted: {summary}");
    for (path, mtime) in &finished {
        assert_eq!(
            &std::fs::metadata(path).unwrap().modified().unwrap(),
            mtime,
            "{} was redone",
            path.display()
        );
    }
    assert_eq!(answer_files(out.path()).len(), 4);
}

#[test]
fn malformed_query_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("{\"not\": \"a list\"}", "not a JSON array of queries"),
        ("[{\"query\": \"q\", \"api_list\": []}]", "query 0 has no \"query_id\""),
        (
            "[{\"query\": \"q\", \"query_id\": 7, \"api_list\": [{\"category_name\": \"c\", \"tool_name\": \"T\", \"api_name\": \"a\"}]}]",
            "query 7: API \"a\" of tool \"T\" has no documentation",
        ),
        (
            "[{\"query\": \"q\", \"query_id\": 8, \"api_list\": [{\"category_name\": 3, \"tool_name\": \"T\", \"api_name\": \"a\", \"required_parameters\": []}]}]",
            "query 8: bad api_list entry",
        ),
    ];
    for (i, (text, expected)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("q{i}.json"));
        std::fs::write(&path, text).unwrap();
        let output = umi()
            .args(["run", "--queries"])
            .arg(&path)
            .arg("--out")
            .arg(dir.path().join("out"))
            .output()
            .unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{expected:?} not in: {stderr}");
        assert!(stderr.contains(&path.display().to_string()), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

/// Sampled (temperature 0.5, the real-time default) answers do not depend on how many
/// queries run at once: each call is seeded by its task and its place in the task, and
/// batching never changes a sequence's arithmetic.
#[test]
fn sampled_answers_do_not_depend_on_the_concurrency() {
    let run = |concurrency: &str| {
        let out = tempfile::tempdir().unwrap();
        let status = umi()
            .args([
                "run",
                "--dtype",
                "quantized",
                "--concurrency",
                concurrency,
                "--out",
            ])
            .arg(out.path())
            .args(BUDGET)
            .status()
            .unwrap();
        assert!(status.success());
        answer_files(out.path())
            .iter()
            .map(|f| {
                let v: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(f).unwrap()).unwrap();
                (
                    v["tree"].clone(),
                    v["answer_generation"]["final_answer"].clone(),
                )
            })
            .collect::<Vec<_>>()
    };
    let one = run("1");
    let four = run("4");
    assert_eq!(one.len(), 4);
    assert!(one == four, "the answers changed with --concurrency 4");
}

/// An --out that cannot be written is refused before any model work (its answers would
/// be lost at the first write), and `--coordinator` given a role worker says so.
#[test]
fn an_unwritable_out_and_a_worker_as_coordinator_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let started = Instant::now();
    let output = umi()
        .args(["run", "--out"])
        .arg(file.join("answers"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--out") && stderr.contains("a-file"),
        "{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "it solved first"
    );

    let (_worker, address) = support::procs::worker("planner", None);
    let output = umi()
        .args(["run", "--coordinator", &address, "--out"])
        .arg(dir.path().join("out"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("is not a coordinator"), "{stderr}");
}

/// Every run writes manifest.json (umi's version and commit, each role's checkpoint by
/// SHA-256, sampling, budgets, tools, method); a run adding to answers made with other
/// inputs is refused, naming what differs, unless --force; the same inputs resume.
#[test]
fn the_manifest_names_the_inputs_and_a_resume_with_other_inputs_is_refused() {
    let out = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        umi()
            .args([
                "run",
                "--dtype",
                "quantized",
                "--queries",
                "tests/fixtures/one-query.json",
            ])
            .args(["--max-new-tokens", "8", "--max-steps", "1", "--out"])
            .arg(out.path())
            .args(extra)
            .output()
            .unwrap()
    };
    let first = run(&[]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("manifest.json")).unwrap()).unwrap();
    // The bundled model's digest, as scripts/setup.sh checks it.
    const BUNDLED_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
    for role in ["planner", "caller", "summarizer"] {
        assert_eq!(
            manifest["roles"][role]["checkpoint"]["sha256"], BUNDLED_SHA256,
            "{manifest}"
        );
        assert_eq!(manifest["roles"][role]["dtype"], "quantized");
    }
    assert_eq!(manifest["sampling"]["temperature"], 0.5);
    assert_eq!(manifest["sampling"]["max_new_tokens"], 8);
    assert_eq!(manifest["method"], "DFS_woFilter_w2");
    assert_eq!(manifest["search"]["max_steps"], 1);
    assert_eq!(manifest["tools"]["backend"], "simulator");
    assert_eq!(manifest["created_by"]["umi"], env!("CARGO_PKG_VERSION"));
    assert_eq!(manifest["queries"]["path"], "tests/fixtures/one-query.json");
    assert_eq!(manifest["queries"]["sha256"].as_str().unwrap().len(), 64);

    let other = run(&["--temperature", "0.9"]);
    let stderr = String::from_utf8_lossy(&other.stderr);
    assert!(!other.status.success());
    assert!(
        stderr.contains("/sampling/temperature: was 0.5, now 0.9") && stderr.contains("--force"),
        "{stderr}"
    );
    let same = run(&[]);
    assert!(
        same.status.success(),
        "{}",
        String::from_utf8_lossy(&same.stderr)
    );
    let forced = run(&["--temperature", "0.9", "--force"]);
    assert!(
        forced.status.success(),
        "{}",
        String::from_utf8_lossy(&forced.stderr)
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["sampling"]["temperature"], 0.9);

    // The folder, as a query source (its answer files' queries), is read past its
    // summary.json and manifest.json.
    let again = tempfile::tempdir().unwrap();
    let rerun = umi()
        .args([
            "run",
            "--dtype",
            "quantized",
            "--max-new-tokens",
            "8",
            "--max-steps",
            "1",
        ])
        .arg("--queries")
        .arg(out.path())
        .arg("--out")
        .arg(again.path())
        .output()
        .unwrap();
    assert!(
        rerun.status.success(),
        "{}",
        String::from_utf8_lossy(&rerun.stderr)
    );
    assert_eq!(answer_files(again.path()).len(), 1);
}

/// `--constrain caller`: each action the caller takes is one the query offers, with a JSON
/// object as input (the bundled model, decoding freely, names none of them).
#[test]
fn a_constrained_caller_calls_only_the_offered_apis() {
    let dir = tempfile::tempdir().unwrap();
    let file = support::procs::queries(dir.path(), 1);
    let out = dir.path().join("out");
    let status = umi()
        .args(["run", "--queries"])
        .arg(&file)
        .arg("--out")
        .arg(&out)
        .args(["--dtype", "quantized", "--constrain", "caller"])
        .args(["--max-steps", "3", "--max-new-tokens", "48"])
        .status()
        .unwrap();
    assert!(status.success());
    let answer: Value =
        serde_json::from_slice(&std::fs::read(out.join("1_DFS_woFilter_w2.json")).unwrap())
            .unwrap();
    let offered: Vec<&str> = answer["answer_generation"]["function"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["name"].as_str())
        .filter(|n| *n != "Finish")
        .collect();
    fn nodes<'a>(node: &'a Value, out: &mut Vec<&'a Value>) {
        out.push(node);
        for child in node["children"].as_array().into_iter().flatten() {
            nodes(child, out);
        }
    }
    let mut all = Vec::new();
    nodes(&answer["tree"]["tree"], &mut all);
    let actions: Vec<&Value> = all
        .iter()
        .copied()
        .filter(|n| n["node_type"] == "Action")
        .collect();
    assert!(!actions.is_empty(), "no call was made");
    for action in actions {
        let name = action["description"].as_str().unwrap();
        assert!(offered.contains(&name), "{name} is not among {offered:?}");
        for input in action["children"].as_array().unwrap() {
            let text = input["description"].as_str().unwrap();
            let args: Value = serde_json::from_str(text).unwrap();
            assert!(args.is_object(), "{text}");
        }
    }
    // Only α-UMi has a caller to constrain.
    let refused = umi()
        .args(["run", "--queries"])
        .arg(&file)
        .arg("--out")
        .arg(dir.path().join("other"))
        .args(["--agent", "toolllama", "--constrain", "caller"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("--constrain caller"), "{stderr}");
    // Replayed roles write their own text: nothing to constrain.
    let replayed = umi()
        .args(["run", "--roles", "replay", "--constrain", "caller", "--out"])
        .arg(dir.path().join("replayed"))
        .output()
        .unwrap();
    assert!(!replayed.status.success());
    let stderr = String::from_utf8_lossy(&replayed.stderr);
    assert!(
        stderr.contains("--constrain caller needs a model"),
        "{stderr}"
    );
    // The run's manifest names the grammar, so a resume without it is refused.
    let manifest = std::fs::read_to_string(out.join("manifest.json")).unwrap();
    assert!(manifest.contains("\"constrain\": \"caller\""), "{manifest}");
}
