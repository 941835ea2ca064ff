//! `umi-data` against the reference's own scripts: every file byte-identical to what
//! `prepro_raw_stage_{1,2}.py` and `prepro_{backbone,planner,caller,summarizer}.py`
//! wrote for the same input (tests/fixtures/glpft, by scripts/make_glpft_fixture.py).

use std::io::Read;
use std::path::{Path, PathBuf};

use umi_core::static_backbone::GiveUpInput;
use umi_data::pipeline::{MODES, RAW_DIR, STAGE_1_FILE, STAGE_2_FILE};
use umi_data::roles::Templates;
use umi_data::{run, Options, Source, Summary};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixtures() -> PathBuf {
    root().join("tests/fixtures/glpft")
}

fn gunzip(path: &Path) -> Vec<u8> {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(file)
        .read_to_end(&mut bytes)
        .unwrap();
    bytes
}

fn options() -> Options {
    Options {
        templates: Templates::family("toolbench").unwrap(),
        all_trajectories: false,
        give_up: GiveUpInput::Previous,
        skip_invalid: false,
    }
}

fn pipeline(source: Source, out: &Path, options: Options) -> Summary {
    run(&source, out, &options, &mut |_| {}).unwrap()
}

/// The files a run writes, by their names in the expected folder.
fn written(out: &Path, with_stage1: bool, with_stage2: bool) -> Vec<(String, PathBuf)> {
    let mut files = Vec::new();
    if with_stage1 {
        files.push((
            STAGE_1_FILE.to_string(),
            out.join(RAW_DIR).join(STAGE_1_FILE),
        ));
    }
    if with_stage2 {
        files.push((
            STAGE_2_FILE.to_string(),
            out.join(RAW_DIR).join(STAGE_2_FILE),
        ));
    }
    for mode in MODES {
        let name = format!("train_{mode}.json");
        files.push((name.clone(), out.join(name)));
    }
    files
}

/// Each written file equals `expected/<name>.gz`; a difference is shown where it starts.
fn assert_identical(expected: &Path, files: &[(String, PathBuf)]) {
    for (name, path) in files {
        let want = gunzip(&expected.join(format!("{name}.gz")));
        let got = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if want != got {
            let at = want.iter().zip(&got).take_while(|(a, b)| a == b).count();
            let around = |b: &[u8]| {
                String::from_utf8_lossy(&b[at.saturating_sub(80)..(at + 80).min(b.len())])
                    .into_owned()
            };
            panic!(
                "{name}: differs from the reference's at byte {at} (lengths {} and {})\n\
                 reference: {:?}\numi:       {:?}",
                want.len(),
                got.len(),
                around(&want),
                around(&got)
            );
        }
    }
}

#[test]
fn the_seeds_train_example_from_its_stage_1() {
    let dir = tempfile::tempdir().unwrap();
    let stage1 = dir.path().join("raw_data_stage_1.json");
    std::fs::write(
        &stage1,
        gunzip(&fixtures().join("train-example/raw_data_stage_1.json.gz")),
    )
    .unwrap();
    let out = dir.path().join("train");
    let summary = pipeline(Source::Stage1(stage1), &out, options());
    let counts: Vec<usize> = summary.files.iter().map(|(_, n)| *n).collect();
    // What the scripts print: 20 conversations, 79 / 79 / 59 / 14 records.
    assert_eq!(counts, [20, 79, 79, 59, 14]);
    assert_eq!(summary.backbone_endings.finished, 14);
    assert_eq!(summary.backbone_endings.gave_up, 6);
    assert_identical(
        &fixtures().join("train-example/expected"),
        &written(&out, false, true),
    );
}

#[test]
fn toolbench_answer_files_through_all_six_scripts() {
    let dir = tempfile::tempdir().unwrap();
    let data = umi_data::testing::toolbench_fixture(&root(), dir.path()).unwrap();
    let out = dir.path().join("train");
    let summary = pipeline(Source::ToolBench(data.clone()), &out, options());
    // Stage 1 stops at its 20 trajectories (of 24: 30 files, 2 test ids, 4 without
    // train_messages).
    assert_eq!(summary.files[0].1, 20);
    assert!(summary.unread_files > 0);
    assert_identical(
        &fixtures().join("toolbench-real/expected"),
        &written(&out, true, true),
    );

    let all = dir.path().join("all");
    let summary = pipeline(
        Source::ToolBench(data),
        &all,
        Options {
            all_trajectories: true,
            ..options()
        },
    );
    assert_eq!(summary.files[0].1, 24);
    assert_eq!(summary.without_train_messages, 4);
    assert_eq!(summary.unread_files, 0);
    assert_identical(
        &fixtures().join("toolbench-real/expected/all-trajectories"),
        &written(&all, true, true),
    );
}

#[test]
fn the_role_scripts_from_a_stage_2_file() {
    let dir = tempfile::tempdir().unwrap();
    let stage2 = dir.path().join("raw_data_stage_2.json");
    let expected = fixtures().join("toolbench-real/expected/all-trajectories");
    std::fs::write(&stage2, gunzip(&expected.join("raw_data_stage_2.json.gz"))).unwrap();
    let out = dir.path().join("train");
    pipeline(Source::Stage2(stage2), &out, options());
    assert!(!out.join(RAW_DIR).exists());
    assert_identical(&expected, &written(&out, false, false));
}
