//! The distributed system as it runs on a cluster: a real etcd (random ports, fresh data
//! dir), role workers that register in it, a coordinator that discovers them, and
//! `umi run --coordinator` submitting tasks, all as real processes on loopback.

mod support;

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use support::procs::{coordinator, coordinator_at, free_port, queries, worker, Etcd, Proc};
use support::{block_on, channel, metric, scrape, umi};
use umi_rpc::pb::coordinator_client::CoordinatorClient;
use umi_rpc::pb::role_worker_client::RoleWorkerClient;
use umi_rpc::pb::InfoRequest;
use umi_rpc::pb::StatusRequest;

/// (calls served, calls in flight) of a worker.
fn load(worker: &str) -> (u64, u32) {
    block_on(async {
        let mut c = RoleWorkerClient::new(channel(worker));
        let info = c.info(InfoRequest {}).await.unwrap().into_inner();
        (info.served, info.in_flight)
    })
}

/// The planner addresses the coordinator currently routes to.
fn coordinator_sees(coordinator: &str, role: &str) -> HashSet<String> {
    block_on(async {
        let mut c = CoordinatorClient::new(channel(coordinator));
        let status = c.status(StatusRequest {}).await.unwrap().into_inner();
        status
            .roles
            .into_iter()
            .filter(|r| r.role == role)
            .flat_map(|r| r.addresses)
            .collect()
    })
}

/// Waits until the coordinator routes to a worker of every role.
fn wait_for_all_roles(coordinator: &str) {
    wait_until(
        "the coordinator sees all roles",
        Duration::from_secs(5),
        || {
            ["planner", "caller", "summarizer"]
                .iter()
                .all(|r| !coordinator_sees(coordinator, r).is_empty())
        },
    );
}

fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < timeout, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

fn answers(dir: &Path) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with("_DFS_woFilter_w2.json") {
            out.push(serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap());
        }
    }
    out
}

fn run_via(coordinator: &str, queries: &Path, out: &Path) -> Proc {
    run_via_with(coordinator, queries, out, &[])
}

/// `umi run --coordinator` with `extra` flags.
fn run_via_with(coordinator: &str, queries: &Path, out: &Path, extra: &[&str]) -> Proc {
    let mut cmd = umi();
    cmd.args(["run", "--coordinator", coordinator])
        .args(extra)
        .arg("--queries")
        .arg(queries)
        .arg("--out")
        .arg(out);
    Proc::spawn(&mut cmd)
}

#[test]
fn workers_found_in_etcd_answer_as_the_in_process_run() {
    let etcd = Etcd::start();
    let _workers = ["planner", "caller", "summarizer"].map(|r| worker(r, Some(&etcd.url)));
    // The coordinator's budgets (support::procs::coordinator): greedy, 8 tokens, 2 steps.
    let metrics_at = format!("127.0.0.1:{}", free_port());
    let (_coord, coord) = coordinator(&etcd.url, &["--metrics-listen", &metrics_at]);
    wait_for_all_roles(&coord);
    let remote = tempfile::tempdir().unwrap();
    let q = queries(remote.path(), 1);
    let mut run = run_via(&coord, &q, remote.path());
    assert!(run.wait().success(), "{}", run.stderr());

    let local = tempfile::tempdir().unwrap();
    let status = umi()
        .args(["run", "--dtype", "quantized", "--temperature", "0"])
        .args(["--max-new-tokens", "8", "--max-steps", "2", "--queries"])
        .arg(&q)
        .arg("--out")
        .arg(local.path())
        .status()
        .unwrap();
    assert!(status.success());
    let (r, l) = (&answers(remote.path())[0], &answers(local.path())[0]);
    assert!(r.get("failure").is_none(), "{}", r["failure"]);
    assert_eq!(r["tree"], l["tree"]);
    assert_eq!(r["answer_generation"], l["answer_generation"]);

    // The coordinator's Prometheus endpoint saw the task end and its role calls.
    let text = scrape(&metrics_at);
    let ended: f64 = ["answered", "gave_up", "exhausted"]
        .iter()
        .filter_map(|s| metric(&text, &format!("umi_tasks_ended_total{{state=\"{s}\"}}")))
        .sum();
    assert_eq!(ended, 1.0, "{text}");
    let planner_calls = metric(
        &text,
        "umi_role_call_duration_seconds_count{role=\"planner\"}",
    )
    .unwrap_or_else(|| panic!("no planner calls in:\n{text}"));
    // One planner call per agent step at least (an empty output is asked again).
    assert!(planner_calls >= r["answer_generation"]["query_count"].as_f64().unwrap());
    assert_eq!(
        metric(&text, "umi_tasks{state=\"running\"}"),
        Some(0.0),
        "{text}"
    );
}

/// One worker serving the three roles registers under each role's key: the coordinator
/// routes every role to it and runs a task on it alone; stopped, it leaves all three.
#[test]
fn a_worker_of_three_roles_registers_under_each_and_leaves_all() {
    let etcd = Etcd::start();
    let mut cmd = support::procs::every_role_worker_command();
    cmd.args(["--dtype", "quantized", "--etcd", &etcd.url]);
    let (mut worker, address) = support::procs::start_worker(&mut cmd);
    let (_coord, coord) = coordinator(&etcd.url, &[]);
    wait_for_all_roles(&coord);
    for role in ["planner", "caller", "summarizer"] {
        assert_eq!(
            coordinator_sees(&coord, role),
            HashSet::from([address.clone()]),
            "{role}"
        );
    }
    let remote = tempfile::tempdir().unwrap();
    let q = queries(remote.path(), 1);
    let mut run = run_via(&coord, &q, remote.path());
    assert!(run.wait().success(), "{}", run.stderr());
    let answer = &answers(remote.path())[0];
    assert!(answer.get("failure").is_none(), "{}", answer["failure"]);

    worker.terminate();
    wait_until(
        "the worker leaves every role",
        Duration::from_secs(10),
        || {
            ["planner", "caller", "summarizer"]
                .iter()
                .all(|r| coordinator_sees(&coord, r).is_empty())
        },
    );
}

/// A coordinator with `--agent toolllama` solves tasks on the planner's workers alone
/// (no caller or summarizer registered), writing upstream ToolBench's answer files.
#[test]
fn a_toolllama_coordinator_needs_only_planner_workers() {
    let etcd = Etcd::start();
    let (_planner, _) = worker("planner", Some(&etcd.url));
    let (_coord, coord) = coordinator(&etcd.url, &["--agent", "toolllama"]);
    wait_until(
        "the coordinator sees the planner",
        Duration::from_secs(5),
        || !coordinator_sees(&coord, "planner").is_empty(),
    );
    let remote = tempfile::tempdir().unwrap();
    let q = queries(remote.path(), 1);
    let mut run = run_via(&coord, &q, remote.path());
    assert!(run.wait().success(), "{}", run.stderr());
    let answer = &answers(remote.path())[0];
    assert!(answer.get("failure").is_none(), "{}", answer["failure"]);
    assert!(answer["forward_args"].get("prompt_type").is_none());
    assert_eq!(
        answer["tree"]["tree"]["children"][0]["node_type"],
        "Thought"
    );
}

/// Admission control at the coordinator: with 2 unfinished tasks at most, a client with 5
/// queries is refused, waits, and submits the rest as tasks end; every query is answered.
#[test]
fn a_full_coordinator_refuses_submissions_and_the_client_waits() {
    let etcd = Etcd::start();
    let _workers = ["planner", "caller", "summarizer"].map(|r| worker(r, Some(&etcd.url)));
    let (_coord, coord) = coordinator(&etcd.url, &["--max-pending", "2", "--concurrency", "1"]);
    wait_for_all_roles(&coord);
    let dir = tempfile::tempdir().unwrap();
    let q = queries(dir.path(), 5);
    let mut run = run_via(&coord, &q, dir.path());
    assert!(run.wait().success(), "{}", run.stderr());
    assert!(
        run.stderr().contains("the coordinator is full"),
        "the coordinator never refused: {}",
        run.stderr()
    );
    let answers = answers(dir.path());
    assert_eq!(answers.len(), 5);
    for answer in &answers {
        assert!(answer.get("failure").is_none(), "{}", answer["failure"]);
    }
}

#[test]
fn a_second_planner_replica_is_used_within_a_second_of_registering() {
    let etcd = Etcd::start();
    let (_a, planner_a) = worker("planner", Some(&etcd.url));
    let (_c, _) = worker("caller", Some(&etcd.url));
    let (_s, _) = worker("summarizer", Some(&etcd.url));
    let (_coord, coord) = coordinator(&etcd.url, &["--concurrency", "4"]);
    wait_until(
        "the coordinator sees planner A",
        Duration::from_secs(5),
        || coordinator_sees(&coord, "planner").contains(&planner_a),
    );

    let (mut b, planner_b) = worker("planner", Some(&etcd.url));
    b.wait_for("registered as", Duration::from_secs(1));
    let seen_after = wait_until(
        "the coordinator sees planner B",
        Duration::from_secs(1),
        || coordinator_sees(&coord, "planner").contains(&planner_b),
    );
    eprintln!("planner B routable {seen_after:?} after it registered");

    let dir = tempfile::tempdir().unwrap();
    let mut run = run_via(&coord, &queries(dir.path(), 4), dir.path());
    assert!(run.wait().success(), "{}", run.stderr());
    assert_eq!(answers(dir.path()).len(), 4);
    let (served_a, _) = load(&planner_a);
    let (served_b, _) = load(&planner_b);
    assert!(
        served_b > 0,
        "planner B served nothing (A served {served_a})"
    );
    assert!(
        served_a > 0,
        "planner A served nothing (B served {served_b})"
    );
}

#[test]
fn a_replica_killed_mid_run_costs_no_task() {
    let etcd = Etcd::start();
    let (mut a, planner_a) = worker("planner", Some(&etcd.url));
    let (_b, planner_b) = worker("planner", Some(&etcd.url));
    let (_c, _) = worker("caller", Some(&etcd.url));
    let (_s, _) = worker("summarizer", Some(&etcd.url));
    let (_coord, coord) = coordinator(&etcd.url, &["--concurrency", "8"]);
    wait_until("both planners routable", Duration::from_secs(5), || {
        coordinator_sees(&coord, "planner").len() == 2
    });

    let dir = tempfile::tempdir().unwrap();
    let mut run = run_via(&coord, &queries(dir.path(), 8), dir.path());
    // Kill A while it is serving: its in-flight calls must move to B.
    wait_until("planner A busy", Duration::from_secs(60), || {
        load(&planner_a).1 > 0
    });
    a.signal("KILL");
    let _ = a.child.wait();

    let status = run.wait();
    assert!(status.success(), "{}", run.stderr());
    let answers = answers(dir.path());
    assert_eq!(answers.len(), 8, "{}", run.stderr());
    for answer in &answers {
        assert!(
            answer.get("failure").is_none(),
            "a task failed: {}",
            answer["failure"]
        );
    }
    assert!(load(&planner_b).0 > 0);
}

#[test]
fn sigterm_drains_in_flight_calls_and_leaves_the_registry() {
    let etcd = Etcd::start();
    let (mut w, address) = worker("planner", Some(&etcd.url));
    let etcd_url = etcd.url.clone();
    let listed = move || {
        block_on(async {
            umi_discovery::membership::Membership::etcd(
                &umi_discovery::EtcdTarget::new(vec![etcd_url.clone()]),
                "/umi",
            )
            .await
            .unwrap()
            .workers("planner")
            .len()
        })
    };
    assert_eq!(listed(), 1);

    // A long call (64 tokens, EOS ignored) in flight when SIGTERM arrives.
    let call = {
        let address = address.clone();
        std::thread::spawn(move || {
            block_on(async {
                let mut c = RoleWorkerClient::new(channel(&address));
                c.generate(umi_rpc::pb::GenerateRequest {
                    role: umi_rpc::pb::Role::Planner as i32,
                    tools_json: vec![],
                    history: vec![umi_rpc::pb::HistoryTurn {
                        label: "user".into(),
                        value: "Tell me a long story.".into(),
                    }],
                    thought: None,
                    sampling: Some(umi_rpc::pb::Sampling {
                        max_new_tokens: 64,
                        min_new_tokens: 64,
                        ..Default::default()
                    }),
                    task_id: "drain".into(),
                    ..Default::default()
                })
                .await
            })
        })
    };
    wait_until("the call in flight", Duration::from_secs(10), || {
        load(&address).1 == 1
    });
    let status = w.terminate();
    let reply = call
        .join()
        .unwrap()
        .expect("the in-flight call was cut off");
    assert_eq!(reply.into_inner().generated_tokens, 64);
    assert!(status.success(), "{}", w.stderr());
    assert!(w.stderr().contains("deregistered"), "{}", w.stderr());
    assert_eq!(listed(), 0, "the worker's entry outlived its shutdown");
}

#[test]
fn the_coordinator_rides_out_an_etcd_outage() {
    let mut etcd = Etcd::start();
    let (_p, planner) = worker("planner", Some(&etcd.url));
    let (_c, _) = worker("caller", Some(&etcd.url));
    let (_s, _) = worker("summarizer", Some(&etcd.url));
    let (coord_proc, coord) = coordinator(&etcd.url, &[]);
    wait_until(
        "the coordinator sees the planner",
        Duration::from_secs(5),
        || coordinator_sees(&coord, "planner").contains(&planner),
    );

    etcd.stop();
    // With etcd gone, the last known workers still serve.
    let dir = tempfile::tempdir().unwrap();
    let mut run = run_via(&coord, &queries(dir.path(), 2), dir.path());
    assert!(run.wait().success(), "{}", run.stderr());
    for answer in answers(dir.path()) {
        assert!(answer.get("failure").is_none(), "{}", answer["failure"]);
    }
    assert!(coordinator_sees(&coord, "planner").contains(&planner));

    // etcd returns: the coordinator follows it again, and sees a new replica.
    etcd.restart();
    let (_p2, planner2) = worker("planner", Some(&etcd.url));
    wait_until(
        "the coordinator sees the new planner",
        Duration::from_secs(10),
        || coordinator_sees(&coord, "planner").contains(&planner2),
    );
    assert!(
        coord_proc.stderr().contains("etcd watch lost"),
        "{}",
        coord_proc.stderr()
    );
}

/// (queued, running, ended) tasks of a coordinator.
fn task_counts(coordinator: &str) -> (u32, u32, u32) {
    block_on(async {
        let mut c = CoordinatorClient::new(channel(coordinator));
        let s = c.status(StatusRequest {}).await.unwrap().into_inner();
        (s.queued, s.running, s.ended)
    })
}

#[test]
fn a_coordinator_killed_mid_run_resumes_from_its_task_journal() {
    let etcd = Etcd::start();
    let _workers = ["planner", "caller", "summarizer"].map(|r| worker(r, Some(&etcd.url)));
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("tasks.jsonl");
    let flags = [
        "--concurrency",
        "1",
        "--task-journal",
        journal.to_str().unwrap(),
    ];
    let q = queries(dir.path(), 6);
    let out = dir.path().join("answers");
    std::fs::create_dir(&out).unwrap();

    let (mut first, coord) = coordinator(&etcd.url, &flags);
    let mut run = run_via(&coord, &q, &out);
    wait_until("2 tasks ended", Duration::from_secs(120), || {
        task_counts(&coord).2 >= 2
    });
    first.signal("KILL");
    let _ = first.child.wait();

    // Restarted at the same address on its journal.
    let (mut second, coord) =
        coordinator_at(&etcd.url, coord.trim_start_matches("https://"), &flags);
    // "task journal PATH: K ended tasks kept, R to run again"
    let line = second.wait_for("ended tasks kept", Duration::from_secs(5));
    let numbers: Vec<u32> = line
        .rsplit(": ")
        .next()
        .unwrap()
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    let [kept, rerun] = numbers[..] else {
        panic!("{line}")
    };
    assert!(kept >= 2, "answers lost in the restart: {line}");
    assert_eq!(kept + rerun, 6, "tasks lost in the restart: {line}");
    let (queued, running, ended) = task_counts(&coord);
    assert!(ended >= kept && queued + running + ended == 6);

    // The client reconnected, resubmitted its open tasks and got every answer.
    assert!(run.wait().success(), "{}", run.stderr());
    assert!(
        run.stderr().contains("lost the coordinator"),
        "{}",
        run.stderr()
    );
    assert_eq!(answers(&out).len(), 6, "{}", run.stderr());

    // A fresh answer directory, so the kept answers are fetched from the new coordinator.
    let out = dir.path().join("answers-after");
    std::fs::create_dir(&out).unwrap();
    let mut rerun = run_via(&coord, &q, &out);
    assert!(rerun.wait().success(), "{}", rerun.stderr());
    let answers = answers(&out);
    assert_eq!(answers.len(), 6, "{}", rerun.stderr());
    for answer in &answers {
        assert!(answer.get("failure").is_none(), "{}", answer["failure"]);
    }
}

#[test]
fn a_role_with_no_live_worker_is_a_recorded_failure_after_the_deadline_and_retried_later() {
    let etcd = Etcd::start();
    // Long enough for a loaded machine to serve a call, short enough for a test.
    let (mut coord_proc, coord) = coordinator(&etcd.url, &["--role-deadline", "6"]);
    let dir = tempfile::tempdir().unwrap();
    let q = queries(dir.path(), 1);
    let started = Instant::now();
    let mut run = run_via(&coord, &q, dir.path());
    // The run ends, its exit status saying a query failed.
    assert!(!run.wait().success(), "{}", run.stderr());
    let took = started.elapsed();
    let failure = answers(dir.path())[0]["failure"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(failure.contains("no live planner worker"), "{failure}");
    assert!(
        took >= Duration::from_secs(6) && took < Duration::from_secs(40),
        "{took:?}"
    );

    // Workers arrive; the same query file run again retries the failed task.
    let _workers = ["planner", "caller", "summarizer"].map(|r| worker(r, Some(&etcd.url)));
    wait_until(
        "the coordinator sees a planner",
        Duration::from_secs(5),
        || !coordinator_sees(&coord, "planner").is_empty(),
    );
    let mut rerun = run_via(&coord, &q, dir.path());
    assert!(rerun.wait().success(), "{}", rerun.stderr());
    let answer = &answers(dir.path())[0];
    assert!(answer.get("failure").is_none(), "{}", answer["failure"]);

    // SIGTERM with a client still watching: the coordinator does not wait for it, and
    // the client gives up after its patience (3 s here, 300 by default).
    let elsewhere = tempfile::tempdir().unwrap();
    let mut watcher = run_via_with(
        &coord,
        &queries(dir.path(), 3),
        elsewhere.path(),
        &["--coordinator-patience", "3"],
    );
    wait_until("tasks running", Duration::from_secs(10), || {
        block_on(async {
            let mut c = CoordinatorClient::new(channel(&coord));
            c.status(StatusRequest {})
                .await
                .unwrap()
                .into_inner()
                .running
                > 0
        })
    });
    let stopping = Instant::now();
    assert!(coord_proc.terminate().success(), "{}", coord_proc.stderr());
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "{:?}",
        stopping.elapsed()
    );
    assert!(!watcher.wait().success());
    assert!(
        watcher.stderr().contains("unreachable for 3 s"),
        "{}",
        watcher.stderr()
    );
}

#[test]
fn a_worker_that_cannot_reach_etcd_exits_with_a_clear_message() {
    let dead = format!("http://127.0.0.1:{}", free_port());
    let out = umi()
        .args([
            "worker",
            "--role",
            "planner",
            "--listen",
            "127.0.0.1:0",
            "--dtype",
            "quantized",
            "--etcd",
            &dead,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("registering in etcd") && stderr.contains(&dead),
        "{stderr}"
    );
}

#[test]
fn a_worker_whose_model_fails_to_load_exits_with_a_clear_message() {
    let out = umi()
        .args([
            "worker",
            "--role",
            "caller",
            "--model",
            "/nonexistent/model.gguf",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("loading model /nonexistent/model.gguf"),
        "{stderr}"
    );
}

/// A coordinator client presenting `token` (TLS with the test CA).
fn client_with_token(
    coordinator: &str,
    token: &str,
) -> CoordinatorClient<umi_rpc::security::AuthedChannel> {
    CoordinatorClient::new(
        support::presenting(Some(token))
            .channel(coordinator)
            .unwrap(),
    )
}

#[test]
fn each_token_holder_sees_only_its_own_tasks_and_no_token_is_refused() {
    use umi_rpc::pb::{CancelRequest, FetchRequest, SubmitRequest, Task, WatchRequest};
    let etcd = Etcd::start();
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = ("a1ice-0123456789abcdef", "b0b-fedcba9876543210xyz");
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("alice:{alice}\nbob:{bob}\n")).unwrap();
    // Readable by this user only: umi refuses token files others can read.
    #[cfg(unix)]
    std::fs::set_permissions(&tokens, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    // No workers: the tasks wait in the queue, which is all ownership needs.
    let (_coord_proc, coord) = coordinator(
        &etcd.url,
        &[
            "--auth-token-file",
            tokens.to_str().unwrap(),
            "--role-deadline",
            "60",
        ],
    );
    let task = |id: &str, query: &str| Task {
        id: id.into(),
        query: query.into(),
        api_list_json: "[]".into(),
    };
    block_on(async {
        // Without a token, or with one the coordinator does not hold: refused, before any work.
        let mut anonymous =
            CoordinatorClient::new(support::presenting(None).channel(&coord).unwrap());
        let refused = anonymous.status(StatusRequest {}).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        let mut stranger = client_with_token(&coord, "st4anger-0123456789abcdef");
        let refused = stranger
            .submit(SubmitRequest {
                tasks: vec![task("t1", "stranger's")],
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);

        let mut a = client_with_token(&coord, alice);
        let mut b = client_with_token(&coord, bob);
        a.submit(SubmitRequest {
            tasks: vec![task("t1", "alice's query")],
        })
        .await
        .unwrap();
        // Bob cannot fetch, watch or cancel it, and may use the same id for his own.
        let fetch = |id: &str| FetchRequest { task_id: id.into() };
        assert_eq!(
            b.fetch(fetch("t1")).await.unwrap_err().code(),
            tonic::Code::NotFound
        );
        assert_eq!(
            b.watch(WatchRequest {
                task_ids: vec!["t1".into()]
            })
            .await
            .unwrap_err()
            .code(),
            tonic::Code::NotFound
        );
        let cancelled = b
            .cancel(CancelRequest {
                task_id: "t1".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .cancelled;
        assert!(!cancelled, "bob cancelled alice's task");
        b.submit(SubmitRequest {
            tasks: vec![task("t1", "bob's other query"), task("t2", "bob's")],
        })
        .await
        .unwrap();
        // An unfiltered watch lists the caller's tasks only, under the ids they gave.
        let listed = |mut client: CoordinatorClient<_>| async move {
            let mut stream = client
                .watch(WatchRequest { task_ids: vec![] })
                .await
                .unwrap()
                .into_inner();
            let mut ids = HashSet::new();
            while let Ok(Ok(Some(e))) =
                tokio::time::timeout(Duration::from_millis(500), stream.message()).await
            {
                ids.insert(e.task_id);
            }
            ids
        };
        assert_eq!(
            listed(b.clone()).await,
            HashSet::from(["t1".into(), "t2".into()])
        );
        assert_eq!(listed(a.clone()).await, HashSet::from(["t1".to_string()]));
        // Alice's task is hers, and still there.
        let mine = a.fetch(fetch("t1")).await.unwrap().into_inner();
        assert_eq!(mine.task.unwrap().task_id, "t1");
        assert!(
            a.cancel(CancelRequest {
                task_id: "t1".into()
            })
            .await
            .unwrap()
            .into_inner()
            .cancelled
        );
    });
}

/// The reproducibility promise (README): the same queries with the same inputs give
/// byte-identical answer files in process at `--concurrency 1` and 8 and through a
/// cluster with two replicas of every role, with sampled decoding (temperature 0.5, the
/// real-time default). Each call is seeded by its task and its place in the task, a
/// sequence's arithmetic does not depend on its batch, and nothing in an answer file
/// depends on which replica served a call or when.
#[test]
fn answer_files_are_byte_identical_at_any_concurrency_and_on_a_cluster() {
    const SAMPLED: [&str; 8] = [
        "--temperature",
        "0.5",
        "--max-new-tokens",
        "16",
        "--max-steps",
        "3",
        "--seed",
        "7",
    ];
    let dir = tempfile::tempdir().unwrap();
    let q = queries(dir.path(), 4);
    let files = support::answer_bytes;
    let in_process = |concurrency: &str| {
        let out = dir.path().join(format!("local-{concurrency}"));
        let status = umi()
            .args(["run", "--dtype", "quantized", "--queries"])
            .arg(&q)
            .args(["--concurrency", concurrency, "--out"])
            .arg(&out)
            .args(SAMPLED)
            .status()
            .unwrap();
        assert!(status.success());
        files(&out)
    };
    let one = in_process("1");
    assert_eq!(one.len(), 4);
    assert!(
        one == in_process("8"),
        "answer files changed with --concurrency 8"
    );

    let etcd = Etcd::start();
    let _workers: Vec<_> = [
        "planner",
        "planner",
        "caller",
        "caller",
        "summarizer",
        "summarizer",
    ]
    .iter()
    .map(|r| worker(r, Some(&etcd.url)))
    .collect();
    let mut cmd = support::procs::coordinator_command(&etcd.url, "127.0.0.1:0");
    cmd.args(SAMPLED).args(["--concurrency", "4"]);
    let (_coord, coord) = support::procs::start_coordinator(&mut cmd);
    wait_until(
        "the coordinator sees two replicas of each role",
        Duration::from_secs(20),
        || {
            ["planner", "caller", "summarizer"]
                .iter()
                .all(|r| coordinator_sees(&coord, r).len() == 2)
        },
    );
    let out = dir.path().join("cluster");
    let mut run = run_via(&coord, &q, &out);
    assert!(run.wait().success(), "{}", run.stderr());
    let cluster = files(&out);
    for ((name, local), (_, remote)) in one.iter().zip(&cluster) {
        assert!(
            local == remote,
            "{name} differs between the in-process run and the cluster"
        );
    }
    assert_eq!(cluster.len(), 4);
}

/// A client started before its coordinator (or during a restart, while the coordinator
/// reads its journal) waits for it, as it does when the coordinator goes away mid-run,
/// instead of failing at once.
#[test]
fn a_client_started_before_the_coordinator_waits_for_it() {
    let etcd = Etcd::start();
    let _workers = ["planner", "caller", "summarizer"].map(|r| worker(r, Some(&etcd.url)));
    let dir = tempfile::tempdir().unwrap();
    let q = queries(dir.path(), 2);
    let out = dir.path().join("answers");
    let listen = format!("127.0.0.1:{}", free_port());
    let mut run = run_via(&format!("https://{listen}"), &q, &out);
    run.wait_for("waiting for the coordinator", Duration::from_secs(20));
    let (_coord, _) = coordinator_at(&etcd.url, &listen, &[]);
    assert!(run.wait().success(), "{}", run.stderr());
    assert_eq!(answers(&out).len(), 2, "{}", run.stderr());
}
