//! LoRA roles end to end: `umi run` with a PEFT adapter per role on one base checkpoint
//! (the tiny random LLaMA and the adapters of scripts/make_lora_fixture.py; its text is
//! noise, the machinery is what is tested), merged into three copies of the weights or
//! served unmerged by one engine: the same answer files either way, and not the base
//! model's.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::procs::{every_role_worker_command, start_worker};
use support::{answer_bytes, serve_as_worker_of_every_role, umi};
use umi_rpc::pb;
use umi_rpc::pb::role_worker_client::RoleWorkerClient;

fn root(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

const ADAPTERS: [&str; 6] = [
    "--planner-adapter",
    "tests/fixtures/tiny-lora-qv",
    "--caller-adapter",
    "tests/fixtures/tiny-lora-all",
    "--summarizer-adapter",
    "tests/fixtures/tiny-lora-qv",
];

fn run(out: &Path, extra: &[&str]) {
    run_with(Command::new(env!("CARGO_BIN_EXE_umi")), out, extra);
}

fn run_with(mut umi: Command, out: &Path, extra: &[&str]) {
    let status = umi
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
    let adapters = ADAPTERS;
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

/// One worker serving the three roles, each with its adapter on one copy of the base
/// weights (`umi worker --role planner --role caller --role summarizer`), answers as the
/// unmerged roles in process; a role it does not serve is refused by name.
#[test]
fn one_worker_serves_three_roles_each_with_its_adapter_as_in_process() {
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("local");
    run(
        &local,
        &[&ADAPTERS[..], &["--adapter-mode", "unmerged"]].concat(),
    );

    let mut cmd = every_role_worker_command();
    cmd.current_dir(root(""))
        .args(["--model", "tests/fixtures/tiny-llama-sharded"])
        .args(ADAPTERS);
    let (_worker, address) = start_worker(&mut cmd);
    let remote = dir.path().join("remote");
    let endpoints = [
        "--planner-endpoint",
        &address,
        "--caller-endpoint",
        &address,
        "--summarizer-endpoint",
        &address,
    ];
    run_with(umi(), &remote, &endpoints);
    assert_eq!(answer_bytes(&local).len(), 4);
    assert!(
        answer_bytes(&local) == answer_bytes(&remote),
        "the three-role worker wrote other answer files than the roles in process"
    );

    // A worker of two roles refuses the third, naming what it serves.
    let mut cmd = umi();
    serve_as_worker_of_every_role(&mut cmd);
    cmd.current_dir(root(""))
        .args(["worker", "--listen", "127.0.0.1:0"])
        .args(["--role", "planner", "--role", "caller"])
        .args(["--model", "tests/fixtures/tiny-llama-sharded"]);
    let (_two, two) = start_worker(&mut cmd);
    let refused = support::block_on(async {
        let mut client = RoleWorkerClient::new(support::channel(&two));
        let info = client.info(pb::InfoRequest {}).await.unwrap().into_inner();
        assert_eq!(
            info.roles,
            [pb::Role::Planner as i32, pb::Role::Caller as i32]
        );
        client
            .generate(pb::GenerateRequest {
                role: pb::Role::Summarizer as i32,
                ..Default::default()
            })
            .await
            .unwrap_err()
    });
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused
            .message()
            .contains("serves the planner+caller roles, not summarizer"),
        "{refused:?}"
    );
}
