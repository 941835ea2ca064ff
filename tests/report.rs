//! `umi report`: the page of a benchmark run (query groups replayed and judged, and one
//! solved by the bundled model) and of a static evaluation, each opened in headless
//! Chromium (`tests/clients/report_page.py`), the way people look at it; bad folders are
//! refused by name.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::{replay, scripted_judge, umi};

fn root(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn ok(output: std::process::Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Opens `page` in Chromium, checks it against `expect`, and keeps a screenshot under
/// the target folder (printed, so a failed run shows where to look).
fn check_in_chromium(page: &Path, name: &str, expect: serde_json::Value) {
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let shot = shots.join(format!("{name}.png"));
    let output = Command::new("python3")
        .arg(root("tests/clients/report_page.py"))
        .arg(page)
        .arg(&shot)
        .arg(expect.to_string())
        .output()
        .unwrap();
    println!("screenshot: {}", shot.display());
    let stdout = ok(output, "the page in Chromium");
    println!("{stdout}");
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 10_000,
        "an empty screenshot"
    );
}

/// Two query groups replayed from recorded ToolBench answers (G1 judged by a scripted
/// judge, a test double, and compared with G2), and two queries solved by the bundled
/// model with small budgets:
/// outcomes, distributions, calls over time with prefix-cache reuse, tool calls by
/// source, search trees and the pass rate, all drawn.
#[test]
fn a_benchmark_run_renders_in_chromium() {
    let out = tempfile::tempdir().unwrap();
    for g in ["G1", "G2"] {
        let recordings = root(&format!("data/toolbench-real/answer/{g}_answer"));
        replay(&recordings, &out.path().join(g), &[]);
    }
    let (judge, _, _) = scripted_judge();
    ok(
        umi()
            .args(["eval", "pass-rate", "--judge", &judge, "--answers"])
            .arg(out.path().join("G1"))
            .output()
            .unwrap(),
        "the pass rate",
    );
    // G1 against G2 (mostly other queries: each side's unanswered ones count for the other).
    let stdout = ok(
        umi()
            .args([
                "eval",
                "win-rate",
                "--evaluate-times",
                "1",
                "--judge",
                &judge,
            ])
            .arg("--answers")
            .arg(out.path().join("G1"))
            .arg("--reference")
            .arg(out.path().join("G2"))
            .output()
            .unwrap(),
        "the win rate",
    );
    assert!(
        stdout.starts_with("Test set: G1. Reference model: G2, Candidate model: G1. Win rate: "),
        "{stdout}"
    );
    let model_run = out.path().join("model");
    let queries = support::procs::queries(out.path(), 2);
    ok(
        umi()
            .args([
                "run",
                "--dtype",
                "quantized",
                "--max-new-tokens",
                "16",
                "--max-steps",
                "3",
                "--queries",
            ])
            .arg(&queries)
            .arg("--out")
            .arg(&model_run)
            .output()
            .unwrap(),
        "the model's run",
    );
    let trace = std::fs::read_to_string(model_run.join("trace.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = trace
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{trace}");
    let calls = lines[0]["calls"]["role_calls"].as_array().unwrap();
    assert!(
        !calls.is_empty() && calls[0]["prompt_tokens"].as_u64().unwrap() > 0,
        "{trace}"
    );

    let stdout = ok(
        umi().arg("report").arg(out.path()).output().unwrap(),
        "umi report",
    );
    let page = out.path().join("report.html");
    assert_eq!(stdout.trim(), page.display().to_string());
    let html = std::fs::read_to_string(&page).unwrap();
    for group in ["G1", "G2", "model"] {
        assert!(html.contains(&format!("<td>{group}</td>")), "group {group}");
    }
    assert!(html.contains("id=\"card-pass-rate\""), "G1 was judged");
    assert!(html.contains("id=\"card-win-rate\""), "G1 was compared");
    assert!(
        html.contains("<td>recorded</td>"),
        "replayed calls are from recorded answers"
    );
    check_in_chromium(
        &page,
        "run",
        serde_json::json!({
            "sections": ["summary", "outcomes", "distributions", "role-calls", "tool-calls", "trees"],
            "min_charts": 7,
            "trees": 6,
            "text": ["Outcomes per group", "pass rate", "win rate", "planner", "recorded"],
        }),
    );

    // Named trees, another output path.
    let named = out.path().join("named.html");
    ok(
        umi()
            .arg("report")
            .arg(out.path())
            .args(["--tree", "10", "--out"])
            .arg(&named)
            .output()
            .unwrap(),
        "umi report --tree",
    );
    let html = std::fs::read_to_string(&named).unwrap();
    assert_eq!(html.matches("class=\"search-tree\"").count(), 1);
}

/// A static evaluation's folder: the metrics beside the paper's rows and the per-step
/// errors, from the predictions `umi eval score` scored.
#[test]
fn a_static_evaluation_renders_in_chromium() {
    let out = tempfile::tempdir().unwrap();
    let predictions = out.path().join("predictions.json");
    std::fs::copy(
        root("tests/fixtures/static-score/predictions.json"),
        &predictions,
    )
    .unwrap();
    ok(
        umi()
            .args(["eval", "score", "--predictions"])
            .arg(&predictions)
            .arg("--out")
            .arg(out.path())
            .output()
            .unwrap(),
        "umi eval score",
    );
    ok(
        umi().arg("report").arg(out.path()).output().unwrap(),
        "umi report",
    );
    let page = out.path().join("report.html");
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("7B α-UMi w/ reuse") && html.contains("89.72"));
    assert!(html.contains("class=\"confusion\""));
    check_in_chromium(
        &page,
        "static",
        serde_json::json!({
            "sections": ["summary", "metrics", "step-errors"],
            "min_charts": 1,
            "trees": 0,
            "text": ["Metrics beside the paper's", "Per-step errors", "this run"],
        }),
    );
}

#[test]
fn folders_without_results_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let output = umi().arg("report").arg(dir.path()).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&dir.path().display().to_string()),
        "{stderr}"
    );
    assert!(stderr.contains("no answer files"), "{stderr}");

    // A damaged trace is named with its line.
    std::fs::write(dir.path().join("trace.jsonl"), "{\"id\": 1}\nnot json\n").unwrap();
    let output = umi().arg("report").arg(dir.path()).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("trace.jsonl") && stderr.contains("line 1"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    let output = umi()
        .arg("report")
        .arg(dir.path().join("missing"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("not a folder"));
}
