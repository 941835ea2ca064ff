//! The single-LLM baseline's static evaluation against the reference's own scripts:
//! samples as `prepro_backbone.py` wrote them, metrics as `evaluate-backbone.py` computed
//! them (tests/fixtures/static-backbone, by scripts/make_backbone_fixture.py), and
//! `umi eval static --agent backbone` end to end with the bundled model.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use umi_core::prompt::template;
use umi_core::static_backbone::{build_backbone_samples, score_backbone, GiveUpInput};
use umi_core::static_eval::parse_records;

fn root(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn records() -> Vec<umi_core::static_eval::StaticRecord> {
    parse_records(
        &std::fs::read_to_string(root("data/toolbench-static/out_of_domain.json")).unwrap(),
    )
    .unwrap()
}

fn fixture(name: &str) -> Value {
    read(&root("tests/fixtures/static-backbone").join(name))
}

/// Each sample's prompt, target and history as the reference's script wrote them, for
/// the first 6 records: the merged history (thought + the call or conclusion, no caller
/// or conclusion turns), the template's trailing newline, and a give-up's stale prompt
/// (the previous step's), which record 0's last step has.
#[test]
fn samples_match_prepro_backbones_byte_for_byte() {
    let expected = fixture("samples.json");
    let expected = expected.as_array().unwrap();
    let samples = build_backbone_samples(
        &records()[..6],
        template("toolbench_backbone").unwrap(),
        GiveUpInput::Previous,
    )
    .unwrap();
    assert_eq!(samples.len(), expected.len());
    let mut stale = 0;
    for (i, (s, e)) in samples.iter().zip(expected).enumerate() {
        assert_eq!(
            s.model_input,
            e["input"].as_str().unwrap(),
            "sample {i}'s prompt"
        );
        assert_eq!(
            s.reference,
            e["target"].as_str().unwrap(),
            "sample {i}'s target"
        );
        assert_eq!(
            serde_json::to_value(&s.history).unwrap(),
            e["history"],
            "sample {i}"
        );
        assert_eq!(
            serde_json::to_value(&s.tools).unwrap(),
            e["tools"],
            "sample {i}"
        );
        if s.reference.ends_with("conclusion: give up.") && i > 0 {
            stale += usize::from(s.model_input == samples[i - 1].model_input);
        }
    }
    assert!(stale > 0, "no give-up reused the previous prompt");
}

/// The whole file: as many samples as the script makes (1,547: 294 conclusions, 107
/// give-ups), and the reference's own outputs score perfectly.
#[test]
fn the_reference_outputs_score_perfectly_on_out_of_domain() {
    let template = template("toolbench_backbone").unwrap();
    let mut samples = build_backbone_samples(&records(), template, GiveUpInput::Previous).unwrap();
    assert_eq!(samples.len(), 1547);
    let ends = |s: &str| samples.iter().filter(|x| x.reference.contains(s)).count();
    assert_eq!(ends("\nconclusion: give up."), 107);
    assert_eq!(ends("\nconclusion: ") - 107, 294);
    for s in samples.iter_mut() {
        let reference = s.reference.clone();
        s.finish(&reference);
    }
    let m = score_backbone(&samples);
    assert_eq!(
        (m.plan_em, m.action_em, m.hallu_rate),
        (1.0, Some(1.0), 0.0)
    );
    assert_eq!(m.f1, Some(1.0 + 1e-30));
    // The fix changes only the give-ups' prompts.
    let fixed = build_backbone_samples(&records(), template, GiveUpInput::Own).unwrap();
    let changed: Vec<_> = fixed
        .iter()
        .zip(&samples)
        .filter(|(a, b)| a.model_input != b.model_input)
        .collect();
    assert!(!changed.is_empty());
    assert!(changed
        .iter()
        .all(|(a, _)| a.reference.ends_with("conclusion: give up.")));
}

/// `umi eval score --agent backbone` on predictions of mixed outcomes gives what the
/// reference's `evaluate-backbone.py` gave for them (run with the `--agent_mode` argument
/// it reads but never defines), hallucination cases included.
#[test]
fn eval_score_backbone_gives_evaluate_backbones_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_umi"))
        .args(["eval", "score", "--agent", "backbone", "--predictions"])
        .arg(root("tests/fixtures/static-backbone/predictions.json"))
        .arg("--out")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let expected = fixture("metrics.json");
    let got = read(&dir.path().join("metrics.json"));
    for (key, want) in expected.as_object().unwrap() {
        let (want, have) = (want.as_f64().unwrap(), got[key].as_f64().unwrap());
        assert!(
            (want - have).abs() <= 1e-12 * want.abs().max(1.0),
            "{key}: reference {want}, umi {have}"
        );
    }
    assert_eq!(
        read(&dir.path().join("hallu_cases.json")),
        fixture("hallu_cases.json")
    );
    // The multi-agent evaluator reads the same file otherwise (it looks for `</s>`).
    let output = Command::new(env!("CARGO_BIN_EXE_umi"))
        .args(["eval", "score", "--predictions"])
        .arg(root("tests/fixtures/static-backbone/predictions.json"))
        .arg("--out")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(output.status.success());
    assert_ne!(
        read(&dir.path().join("metrics.json"))["plan_em"],
        expected["plan_em"]
    );
}

/// The bundled model as the backbone over two records: one call per step, the prompts the
/// reference renders, `inference.py`'s keys, the evaluator's metrics; a second run
/// resumes from the journal and writes the same predictions.
#[test]
fn eval_static_backbone_runs_the_bundled_model() {
    let out = tempfile::tempdir().unwrap();
    let run = || {
        let output = Command::new(env!("CARGO_BIN_EXE_umi"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["eval", "static", "--agent", "backbone"])
            .args(["--data", "data/toolbench-static/out_of_domain.json"])
            .args([
                "--limit",
                "2",
                "--dtype",
                "quantized",
                "--max-new-tokens",
                "8",
            ])
            .arg("--out")
            .arg(out.path())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        (
            String::from_utf8_lossy(&output.stderr).into_owned(),
            std::fs::read(out.path().join("predictions.json")).unwrap(),
        )
    };
    let (_, first) = run();
    let predictions: Value = serde_json::from_slice(&first).unwrap();
    let predictions = predictions.as_array().unwrap();
    let two_records = build_backbone_samples(
        &records()[..2],
        template("toolbench_backbone").unwrap(),
        GiveUpInput::Previous,
    )
    .unwrap()
    .len();
    let expected = fixture("samples.json");
    let from_two_records = &expected.as_array().unwrap()[..two_records];
    assert_eq!(predictions.len(), from_two_records.len());
    for (p, e) in predictions.iter().zip(from_two_records) {
        let keys: Vec<&str> = p.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "tools",
                "history",
                "model_input",
                "reference",
                "predictions"
            ]
        );
        assert_eq!(p["model_input"], e["input"]);
        assert_eq!(p["reference"], e["target"]);
        assert!(!p["predictions"].as_str().unwrap().is_empty());
    }
    let metrics = read(&out.path().join("metrics.json"));
    for key in [
        "rouge",
        "plan_em",
        "action_em",
        "easy_f1",
        "hard_f1",
        "f1",
        "hallu_rate",
    ] {
        assert!(metrics.get(key).is_some(), "no {key} in {metrics}");
    }
    let (stderr, again) = run();
    assert!(stderr.contains("resuming"), "{stderr}");
    assert!(first == again, "a resumed run wrote other predictions");
}
