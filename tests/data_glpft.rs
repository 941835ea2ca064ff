//! `umi data glpft` end to end: ToolBench answer files in, the six files the reference's
//! scripts write out, byte for byte (tests/fixtures/glpft, by
//! scripts/make_glpft_fixture.py); bad input named, or left out and listed on request.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Output};

fn root(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn umi(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_umi"))
        .args(["data", "glpft"])
        .args(args)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn expected(name: &str) -> Vec<u8> {
    let path = root("tests/fixtures/glpft/toolbench-real/expected/all-trajectories")
        .join(format!("{name}.gz"));
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_end(&mut bytes)
        .unwrap();
    bytes
}

#[test]
fn answer_files_to_the_reference_scripts_training_files() {
    let dir = tempfile::tempdir().unwrap();
    let data = umi_data::testing::toolbench_fixture(&root(""), dir.path()).unwrap();
    let out = dir.path().join("train");
    let run = umi(&[
        "--toolbench",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--all-trajectories",
    ]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    let files = [
        (
            "raw_data_stage_1.json",
            out.join("raw_data/raw_data_stage_1.json"),
        ),
        (
            "raw_data_stage_2.json",
            out.join("raw_data/raw_data_stage_2.json"),
        ),
        ("train_backbone.json", out.join("train_backbone.json")),
        ("train_planner.json", out.join("train_planner.json")),
        ("train_caller.json", out.join("train_caller.json")),
        ("train_summarizer.json", out.join("train_summarizer.json")),
    ];
    for (name, path) in &files {
        assert!(
            std::fs::read(path).unwrap() == expected(name),
            "{name} differs from the reference scripts' (umi-data's tests show where)"
        );
    }
    let stdout = text(&run.stdout);
    assert!(stdout.contains("      24  "), "{stdout}");
    assert!(
        stdout.contains("4 answer files have no train_messages"),
        "{stdout}"
    );

    // Without the fix: stage 1's first 20, and a note saying so.
    let run = umi(&[
        "--toolbench",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    let stderr = text(&run.stderr);
    assert!(
        stderr.contains("kept its first 20 trajectories"),
        "{stderr}"
    );
    assert!(stderr.contains("--all-trajectories"), "{stderr}");
    assert!(
        text(&run.stdout).contains("      20  "),
        "{}",
        text(&run.stdout)
    );
}

#[test]
fn a_file_the_scripts_stop_on_is_named_or_left_out_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let data = umi_data::testing::toolbench_fixture(&root(""), dir.path()).unwrap();
    let broken = data.join("answer/G2_answer/7_broken.json");
    std::fs::write(&broken, "{\"answer_generation\": ").unwrap();
    let out = dir.path().join("train");
    let args = [
        "--toolbench",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--all-trajectories",
    ];
    let run = umi(&args);
    assert!(!run.status.success());
    let stderr = text(&run.stderr);
    assert!(stderr.contains("7_broken.json"), "{stderr}");
    assert!(stderr.contains("not JSON"), "{stderr}");
    assert!(stderr.contains("--skip-invalid"), "{stderr}");
    assert!(
        !out.join("train_planner.json").exists(),
        "a partial file was left"
    );

    let run = umi(&[&args[..], &["--skip-invalid"]].concat());
    assert!(run.status.success(), "{}", text(&run.stderr));
    let stderr = text(&run.stderr);
    assert!(stderr.contains("left out 1 trajectories"), "{stderr}");
    assert!(stderr.contains("7_broken.json"), "{stderr}");
    assert!(
        std::fs::read(out.join("train_planner.json")).unwrap() == expected("train_planner.json")
    );

    // A ToolBench folder without its test ids: the missing file is named.
    std::fs::remove_file(data.join("test_query_ids/G1_tool.json")).unwrap();
    let run = umi(&args);
    assert!(!run.status.success());
    let stderr = text(&run.stderr);
    assert!(stderr.contains("test_query_ids/G1_tool.json"), "{stderr}");
}
