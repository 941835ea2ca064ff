//! LoRA roles end to end: `umi run` with a PEFT adapter per role on one base checkpoint
//! (the tiny random LLaMA and the adapters of scripts/make_lora_fixture.py; its text is
//! noise, the machinery is what is tested), merged into three copies of the weights or
//! served unmerged by one engine: the same answer files either way, and not the base
//! model's.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::answer_bytes;

fn root(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn run(out: &Path, extra: &[&str]) {
    let status = Command::new(env!("CARGO_BIN_EXE_umi"))
        .current_dir(root(""))
        .args(["run", "--model", "tests/fixtures/tiny-llama-sharded"])
        .args([
            "--max-input-tokens",
            "200",
            "--max-new-tokens",
            "16",
            "--max-steps",
            "6",
        ])
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
}

#[test]
fn per_role_adapters_merged_or_unmerged_give_the_same_answers() {
    let dir = tempfile::tempdir().unwrap();
    let adapters = [
        "--planner-adapter",
        "tests/fixtures/tiny-lora-qv",
        "--caller-adapter",
        "tests/fixtures/tiny-lora-all",
        "--summarizer-adapter",
        "tests/fixtures/tiny-lora-qv",
    ];
    let merged = dir.path().join("merged");
    run(&merged, &adapters);
    let unmerged = dir.path().join("unmerged");
    run(
        &unmerged,
        &[&adapters[..], &["--adapter-mode", "unmerged"]].concat(),
    );
    let base = dir.path().join("base");
    run(&base, &[]);

    let (m, u, b) = (
        answer_bytes(&merged),
        answer_bytes(&unmerged),
        answer_bytes(&base),
    );
    assert_eq!(m.len(), 4, "the four demo queries");
    assert!(
        m == u,
        "merged and unmerged adapters wrote different answer files"
    );
    assert!(m != b, "the adapters changed nothing");
    // The manifest names each role's adapter.
    let manifest = std::fs::read_to_string(unmerged.join("manifest.json")).unwrap();
    assert!(manifest.contains("\"adapter\""), "{manifest}");
}
