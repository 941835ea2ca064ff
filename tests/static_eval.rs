//! α-UMi fidelity without a model: prompt rendering against inputs written from the
//! reference's rules in Python, ROUGE-L against the `rouge` package itself, and the whole
//! static pipeline with oracle roles.

use std::path::PathBuf;

use umi_core::prompt::RolePrompts;
use umi_core::rouge::rouge_l_f;
use umi_core::static_eval::{build_samples, parse_records, reference_order, score};

fn root(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn records() -> Vec<umi_core::static_eval::StaticRecord> {
    parse_records(
        &std::fs::read_to_string(root("data/toolbench-static/out_of_domain.json")).unwrap(),
    )
    .unwrap()
}

/// Pins, for records 0, 45 (non-ASCII in a tool doc: `\u00e9` escapes), 101 and 399:
/// json.dumps defaults in `{doc}` (", "/": " separators, key order, ensure_ascii), the
/// blank line after the docs, the replacement order, `</s>` after every turn but
/// observations, the `planner: ` label the static pipeline gives the planner turn, the
/// caller's `{thought}` = cut planner output, and the three role suffixes.
#[test]
fn prompts_match_the_reference_rules_byte_for_byte() {
    let records = records();
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root("tests/fixtures/static-prompts.expected.json")).unwrap(),
    )
    .unwrap();
    let prompts = RolePrompts::toolbench();
    let mut samples = build_samples(&records, &prompts).unwrap();
    let mut checked = 0;
    for case in expected.as_array().unwrap() {
        let r = case["record"].as_u64().unwrap() as usize;
        let turn = case["turn"].as_u64().unwrap() as usize;
        // Samples are emitted per record in turn order; find this one by its history length.
        let sample = samples
            .iter_mut()
            .find(|s| s.instruction == records[r].instruction && s.history.len() == turn)
            .unwrap();
        assert_eq!(
            sample.model_input,
            case["planner"].as_str().unwrap(),
            "planner input, record {r} turn {turn}"
        );
        let gold = sample.oracle_output();
        sample.route(&gold, &prompts);
        if let Some(caller) = case.get("caller") {
            assert_eq!(
                sample.model_input_for_caller.as_deref(),
                caller.as_str(),
                "caller input, record {r} turn {turn}"
            );
        }
        if let Some(summarizer) = case.get("summarizer") {
            assert_eq!(
                sample.model_input_for_summarizer.as_deref(),
                summarizer.as_str(),
                "summarizer input, record {r} turn {turn}"
            );
        }
        checked += 1;
    }
    assert_eq!(checked, 14);
    assert!(records[45]
        .tools
        .iter()
        .any(|t| t.render().contains("\\u00e9")));
}

#[test]
fn rouge_l_equals_the_rouge_package() {
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root("tests/fixtures/rouge-l.expected.json")).unwrap(),
    )
    .unwrap();
    let mut sum = 0.0;
    let cases = expected["cases"].as_array().unwrap();
    for case in cases {
        let f = rouge_l_f(case["hyp"].as_str().unwrap(), case["ref"].as_str().unwrap()).unwrap();
        let want = case["f"].as_f64().unwrap();
        assert!((f - want).abs() < 1e-12, "{f} vs {want} for {case}");
        sum += f;
    }
    let avg = sum / cases.len() as f64;
    assert!((avg - expected["avg_f"].as_f64().unwrap()).abs() < 1e-12);
}

#[test]
fn oracle_roles_score_perfectly_on_out_of_domain() {
    let prompts = RolePrompts::toolbench();
    let mut samples = build_samples(&records(), &prompts).unwrap();
    assert_eq!(samples.len(), 1547);
    for s in samples.iter_mut() {
        let planner = s.oracle_output();
        if s.route(&planner, &prompts) != umi_core::parse::Decision::GiveUp {
            let output = s.oracle_output();
            s.finish(&output);
        }
    }
    let samples = reference_order(samples);
    let m = score(&samples);
    assert_eq!(m.samples, 1547);
    assert_eq!(m.plan_em, 1.0);
    assert_eq!(m.action_em, Some(1.0));
    assert_eq!(m.f1, Some(1.0 + 1e-30));
    assert_eq!(m.hallu_rate, 0.0);
    // Identical texts: the package's F = 2PR/(P+R+1e-8) = 0.999999995, averaged over
    // 294 conclusions with sequential float sums as the package does.
    assert!(
        (m.rouge_l.unwrap() - 2.0 / (2.0 + 1e-8)).abs() < 1e-12,
        "{:?}",
        m.rouge_l
    );
    assert!(m.rouge_l.unwrap() < 1.0);
    assert_eq!(m.rouge_rejected, 0);
    // Reference order: 1,146 caller samples, then 107 give-ups, then 294 conclusions.
    assert!(samples[0].model_input_for_caller.is_some());
    assert!(
        samples[1146].model_input_for_caller.is_none()
            && samples[1146].model_input_for_summarizer.is_none()
    );
    assert!(samples[1253].model_input_for_summarizer.is_some());
}

#[test]
fn malformed_static_files_name_the_record() {
    let err = parse_records("[{\"tools\": [], \"instruction\": \"x\", \"conversations\": [{\"from\": \"robot\", \"value\": \"\"}]}]")
        .unwrap_err()
        .to_string();
    assert!(err.contains("record 0") && err.contains("robot"), "{err}");
    let err = parse_records("{}").unwrap_err().to_string();
    assert!(err.contains("not a JSON array"), "{err}");
    let err = parse_records("[{\"tools\": [{\"function\": \"no name\"}], \"instruction\": \"x\", \"conversations\": []}]")
        .unwrap_err()
        .to_string();
    assert!(err.contains("record 0") && err.contains("Name"), "{err}");
    // A tool doc that is a string of broken JSON rather than an object.
    let err = parse_records(
        "[{\"tools\": [\"{\\\"Name\\\": \"], \"instruction\": \"x\", \"conversations\": []}]",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("record 0") && err.contains("tool doc"),
        "{err}"
    );
}

/// `umi eval static` in two shards sharing one output folder, then a scoring run, gives
/// the files an unsharded run gives (oracle roles, so no model is needed).
#[test]
fn sharded_evaluation_scores_as_one_run() {
    let umi = |out: &std::path::Path, shard: Option<&str>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_umi"));
        cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["eval", "static", "--roles", "oracle", "--limit", "30"])
            .args([
                "--data",
                "data/toolbench-static/out_of_domain.json",
                "--out",
            ])
            .arg(out);
        if let Some(s) = shard {
            cmd.args(["--shard", s]);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let whole = tempfile::tempdir().unwrap();
    umi(whole.path(), None);
    let sharded = tempfile::tempdir().unwrap();
    umi(sharded.path(), Some("0/2"));
    assert!(
        !sharded.path().join("metrics.json").exists(),
        "a shard scored alone"
    );
    umi(sharded.path(), Some("1/2"));
    let journal = || std::fs::read_to_string(sharded.path().join("journal.jsonl")).unwrap();
    let after_shards = journal();
    umi(sharded.path(), None);
    // The scoring run found every call in the shards' journal and made none of its own.
    assert_eq!(journal(), after_shards);
    assert_eq!(
        after_shards.matches(r#""stage":"planner""#).count(),
        std::fs::read_to_string(whole.path().join("journal.jsonl"))
            .unwrap()
            .matches(r#""stage":"planner""#)
            .count()
    );
    for file in ["predictions.json", "metrics.json"] {
        assert_eq!(
            std::fs::read(whole.path().join(file)).unwrap(),
            std::fs::read(sharded.path().join(file)).unwrap(),
            "{file} differs"
        );
    }
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_umi"))
        .args(["eval", "static", "--data", "x.json", "--shard", "2/2"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is not K/N"));
}

/// Records evaluated concurrently (their calls batched by the engine, with sampling)
/// give the predictions of one record at a time, call for call: each call is seeded by
/// its step, and batching never changes a sequence's arithmetic.
#[test]
fn concurrent_records_give_the_predictions_of_one_at_a_time() {
    let run = |concurrency: &str| {
        let out = tempfile::tempdir().unwrap();
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_umi"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args([
                "eval",
                "static",
                "--data",
                "data/toolbench-static/out_of_domain.json",
            ])
            .args([
                "--limit",
                "3",
                "--dtype",
                "quantized",
                "--max-new-tokens",
                "8",
            ])
            .args(["--concurrency", concurrency, "--max-batch", "3", "--out"])
            .arg(out.path())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            stdout.contains("served by the prefix cache"),
            "no token accounting in {stdout}"
        );
        let read = |f: &str| std::fs::read(out.path().join(f)).unwrap();
        (read("predictions.json"), read("metrics.json"))
    };
    let one = run("1");
    let three = run("3");
    assert!(one.0 == three.0, "predictions differ with --concurrency 3");
    assert_eq!(one.1, three.1);
}

/// `umi eval score` on a predictions file of mixed outcomes (right and wrong plans,
/// actions, arguments; easy and hard call steps; hallucinated tools) gives the metrics
/// and hallucination cases that α-UMi's own `evaluate-multi_agent.py` gave for it
/// (scripts/make_score_fixture.py ran the reference script). A wrong action counts 0 in
/// both the easy and the hard F1, as there.
#[test]
fn eval_score_gives_the_reference_evaluators_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = root("tests/fixtures/static-score");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_umi"))
        .args(["eval", "score", "--predictions"])
        .arg(fixture.join("predictions.json"))
        .arg("--out")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let read = |p: PathBuf| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    let expected = read(fixture.join("metrics.expected.json"));
    let got = read(dir.path().join("metrics.json"));
    for (key, want) in expected.as_object().unwrap() {
        let (want, have) = (want.as_f64().unwrap(), got[key].as_f64().unwrap());
        assert!(
            (want - have).abs() <= 1e-12 * want.abs().max(1.0),
            "{key}: reference {want}, umi {have}"
        );
    }
    let hallu: Vec<String> = read(dir.path().join("hallu_cases.json"))
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["predictions"].as_str().unwrap().to_string())
        .collect();
    let want: Vec<String> =
        serde_json::from_value(read(fixture.join("hallu_cases.expected.json"))).unwrap();
    assert_eq!(hallu, want);
    // An entry without its reference is named.
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"[{"tools": [], "predictions": "x"}]"#).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_umi"))
        .args(["eval", "score", "--predictions"])
        .arg(&bad)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("prediction 0") && stderr.contains("reference"),
        "{stderr}"
    );
}
