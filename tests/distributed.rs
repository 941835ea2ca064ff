//! Role workers as real processes over gRPC on loopback: a task solved across three
//! workers gives the same answer as the in-process run with the same greedy model, and
//! workers shut down cleanly on SIGTERM.

mod support;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use support::umi;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts a worker and waits for its "listening" line.
fn start_worker(role: &str) -> (Child, String) {
    let port = free_port();
    let mut child = umi()
        .args([
            "worker",
            "--role",
            role,
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let line = lines.next().expect("worker exited").unwrap();
    assert!(
        line.contains(&format!("{role} role on 127.0.0.1:{port}")),
        "{line}"
    );
    // Keep draining stderr so the worker never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, format!("http://127.0.0.1:{port}"))
}

fn sigterm(child: &mut Child) -> std::process::ExitStatus {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    child.wait().unwrap()
}

const GREEDY: [&str; 8] = [
    "--temperature",
    "0",
    "--max-new-tokens",
    "24",
    "--max-steps",
    "2",
    "--queries",
    "tests/fixtures/one-query.json",
];

fn answer(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("9001_DFS_woFilter_w2.json")).unwrap()).unwrap()
}

#[test]
fn three_workers_answer_as_the_in_process_run() {
    let (mut planner, p) = start_worker("planner");
    let (mut caller, c) = start_worker("caller");
    let (mut summarizer, s) = start_worker("summarizer");
    let remote = tempfile::tempdir().unwrap();
    let status = umi()
        .args(["run", "--out"])
        .arg(remote.path())
        .args(GREEDY)
        .args([
            "--planner-endpoint",
            &p,
            "--caller-endpoint",
            &c,
            "--summarizer-endpoint",
            &s,
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let local = tempfile::tempdir().unwrap();
    let status = umi()
        .args(["run", "--out"])
        .arg(local.path())
        .args(GREEDY)
        .status()
        .unwrap();
    assert!(status.success());

    let (r, l) = (answer(remote.path()), answer(local.path()));
    assert_eq!(r["tree"], l["tree"]);
    assert_eq!(
        r["answer_generation"]["final_answer"],
        l["answer_generation"]["final_answer"]
    );
    assert_eq!(
        r["answer_generation"]["query_count"],
        l["answer_generation"]["query_count"]
    );
    assert!(r.get("failure").is_none(), "{}", r["failure"]);

    for child in [&mut planner, &mut caller, &mut summarizer] {
        assert!(
            sigterm(child).success(),
            "a worker did not exit cleanly on SIGTERM"
        );
    }
}

#[test]
fn an_unknown_role_is_refused_at_startup() {
    let out = umi().args(["worker", "--role", "chef"]).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("invalid value 'chef'") && stderr.contains("planner"),
        "{stderr}"
    );
}

#[test]
fn an_unreachable_worker_is_a_recorded_failure_not_a_hang() {
    let dead = format!("http://127.0.0.1:{}", free_port());
    let out_dir = tempfile::tempdir().unwrap();
    let status = umi()
        .args(["run", "--out"])
        .arg(out_dir.path())
        .args(GREEDY)
        .args([
            "--planner-endpoint",
            &dead,
            "--caller-endpoint",
            &dead,
            "--summarizer-endpoint",
            &dead,
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let a = answer(out_dir.path());
    assert!(
        a["failure"].as_str().unwrap().contains("planner worker"),
        "{}",
        a["failure"]
    );
}
