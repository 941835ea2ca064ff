//! The load benchmark end to end, small: `umi bench cluster` starts whole clusters (real
//! etcd, role workers on the simulated engine, a test double with a fast profile, and a
//! coordinator, as real processes), solves tasks through them and reports from their
//! metrics. Also: task affinity keeps a task's prompts in one replica's prefix cache.

mod support;

use std::path::Path;

use serde_json::Value;
use support::umi;

/// About ten times faster than the default 7B-on-an-H100 profile.
const FAST: &str = r#"{"name": "fast", "decode_step_ms": 0.6, "prefill_ms_per_token": 0.004, "prefill_overhead_ms": 0.3}"#;

fn bench(dir: &Path, planners: &str, routing: &str, tasks: usize) -> Vec<Value> {
    let profile = dir.join("fast.json");
    std::fs::write(&profile, FAST).unwrap();
    let out = umi()
        .args([
            "bench",
            "cluster",
            "--planners",
            planners,
            "--routing",
            routing,
        ])
        .args(["--tasks", &tasks.to_string(), "--concurrency", "16"])
        .arg("--sim-profile")
        .arg(&profile)
        .arg("--dir")
        .arg(dir.join(routing))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("| sim | "), "{stdout}");
    let report = std::fs::read(dir.join(routing).join("report.json")).unwrap();
    serde_json::from_slice(&report).unwrap()
}

#[test]
fn the_load_benchmark_solves_every_task_and_spreads_the_planner_calls() {
    let dir = tempfile::tempdir().unwrap();
    let runs = bench(dir.path(), "1,2", "affinity", 40);
    assert_eq!(runs.len(), 2);
    for r in &runs {
        let n = |k: &str| r[k].as_u64().unwrap();
        assert_eq!(n("answered") + n("gave_up") + n("exhausted"), 40, "{r}");
        assert_eq!(n("failed"), 0, "{r}");
        assert_eq!(n("unmarked"), 0, "answers not marked as simulated: {r}");
        assert!(r["tasks_per_second"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["planner_mean_batch"].as_f64().unwrap() >= 1.0, "{r}");
        assert!(
            r["role_call_p50_p99"]["planner"][1].as_f64().unwrap() > 0.0,
            "{r}"
        );
    }
    let shares: Vec<f64> = runs[1]["planner_shares"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_f64().unwrap())
        .collect();
    assert_eq!(shares.len(), 2);
    assert!(shares.iter().all(|&s| s > 0.2), "{shares:?}");
}

#[test]
fn task_affinity_keeps_prefix_hits_that_least_outstanding_routing_loses() {
    let dir = tempfile::tempdir().unwrap();
    let hits = |routing: &str| {
        bench(dir.path(), "3", routing, 48)[0]["planner_prefix_hit_rate"]
            .as_f64()
            .unwrap()
    };
    let affinity = hits("affinity");
    let spread = hits("least-outstanding");
    assert!(
        affinity > spread + 0.1,
        "affinity {affinity:.2} vs least outstanding {spread:.2}"
    );
}
