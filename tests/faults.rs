//! Faults under load, the small version of `scripts/fault_suite.sh`: role workers on the
//! simulated engine (a test double with a fast latency profile), a real etcd and a
//! coordinator with a task journal, as real processes on loopback. While
//! `umi run --coordinator` solves 60 tasks, a planner replica is SIGKILLed and restarted,
//! then the coordinator is SIGKILLed and restarted at its address on its journal. Every
//! task must get exactly one answer file, none failed, none solved twice.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::procs::{
    coordinator_command, start_coordinator, start_worker, worker_command, Etcd, Proc,
};
use support::{block_on, umi};
use umi_rpc::pb::coordinator_client::CoordinatorClient;
use umi_rpc::pb::StatusRequest;

const TASKS: usize = 60;

fn sim_worker(role: &str, etcd: &str, profile: &Path) -> (Proc, String) {
    let mut cmd: Command = worker_command(role, Some(etcd));
    cmd.args(["--engine", "sim", "--lease-ttl", "3", "--sim-profile"])
        .arg(profile);
    start_worker(&mut cmd)
}

fn ended(coordinator: &str) -> u32 {
    block_on(async {
        let Ok(channel) = support::client_security().connect(coordinator).await else {
            return 0;
        };
        let mut c = CoordinatorClient::new(channel);
        c.status(StatusRequest {})
            .await
            .map(|s| s.into_inner().ended)
            .unwrap_or(0)
    })
}

fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < timeout, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The real ToolBench queries, copied to `n` tasks with distinct ids and texts.
fn queries(dir: &Path, n: usize) -> std::path::PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let base: Vec<serde_json::Value> = ["G1", "G2"]
        .iter()
        .flat_map(|g| {
            let path = root.join(format!("data/toolbench-real/instruction/{g}_query.json"));
            serde_json::from_slice::<Vec<serde_json::Value>>(&std::fs::read(path).unwrap()).unwrap()
        })
        .collect();
    let many: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            let mut q = base[i % base.len()].clone();
            q["query_id"] = serde_json::json!(format!("f{i}"));
            q["query"] =
                serde_json::json!(format!("{} (request {i})", q["query"].as_str().unwrap()));
            q
        })
        .collect();
    let path = dir.join("queries.json");
    std::fs::write(&path, serde_json::to_vec(&many).unwrap()).unwrap();
    path
}

#[test]
fn killed_planner_and_coordinator_lose_and_duplicate_no_task() {
    let dir = tempfile::tempdir().unwrap();
    // About ten times faster than the default 7B-on-an-H100 profile.
    let profile = dir.path().join("fast.json");
    std::fs::write(
        &profile,
        r#"{"name": "fast", "decode_step_ms": 0.6, "prefill_ms_per_token": 0.004, "prefill_overhead_ms": 0.3}"#,
    )
    .unwrap();
    let etcd = Etcd::start();
    let (mut planner0, _) = sim_worker("planner", &etcd.url, &profile);
    let _planner1 = sim_worker("planner", &etcd.url, &profile);
    let _caller = sim_worker("caller", &etcd.url, &profile);
    let _summarizer = sim_worker("summarizer", &etcd.url, &profile);
    let journal = dir.path().join("tasks.jsonl");
    let coordinator_flags = |cmd: &mut Command| {
        cmd.env("RUST_LOG", "umi_coordinator=info")
            .args([
                "--concurrency",
                "16",
                "--role-deadline",
                "30",
                "--task-journal",
            ])
            .arg(&journal);
    };
    let mut cmd = coordinator_command(&etcd.url, "127.0.0.1:0");
    coordinator_flags(&mut cmd);
    let (mut first, coord) = start_coordinator(&mut cmd);
    let q = queries(dir.path(), TASKS);
    let out = dir.path().join("answers");
    let mut run = Proc::spawn(
        umi()
            .args(["run", "--coordinator", &coord, "--queries"])
            .arg(&q)
            .arg("--out")
            .arg(&out),
    );

    wait_until("5 tasks ended", Duration::from_secs(120), || {
        ended(&coord) >= 5
    });
    planner0.signal("KILL");
    let _ = planner0.child.wait();
    let _planner0_again = sim_worker("planner", &etcd.url, &profile);

    wait_until("20 tasks ended", Duration::from_secs(120), || {
        ended(&coord) >= 20
    });
    first.signal("KILL");
    let _ = first.child.wait();
    let mut cmd = coordinator_command(&etcd.url, coord.trim_start_matches("https://"));
    coordinator_flags(&mut cmd);
    let (mut second, _) = start_coordinator(&mut cmd);

    let status = run.wait();
    assert!(status.success(), "{}", run.stderr());
    assert!(
        run.stderr().contains("lost the coordinator"),
        "{}",
        run.stderr()
    );

    // One answer file per task, none failed, each marked as the simulated engine's.
    let mut files = 0;
    for entry in std::fs::read_dir(&out).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .ends_with("_DFS_woFilter_w2.json")
        {
            let a: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            assert!(
                a.get("failure").is_none(),
                "{}: {}",
                path.display(),
                a["failure"]
            );
            assert_eq!(a["engine"], "sim", "{}", path.display());
            files += 1;
        }
    }
    assert_eq!(files, TASKS, "{}", run.stderr());
    // No task solved twice across the two coordinators (a failed run may be retried).
    second.terminate();
    let logs = first.stderr() + "\n" + &second.stderr();
    let mut solved: HashMap<&str, usize> = HashMap::new();
    for line in logs.lines().filter(|l| l.contains("task ended")) {
        let field = |key: &str| line.split(key).nth(1).and_then(|r| r.split(' ').next());
        if let (Some(id), Some(state)) = (field("task_id="), field("state=")) {
            if state != "failed" && state != "cancelled" {
                *solved.entry(id).or_default() += 1;
            }
        }
    }
    assert!(
        solved.len() >= TASKS - 5,
        "too few end lines: {}",
        solved.len()
    );
    let twice: Vec<_> = solved.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "solved twice: {twice:?}");
}
