//! Role workers as real processes over gRPC on loopback: a task solved across three
//! workers gives the same answer as the in-process run with the same greedy model, and
//! workers shut down cleanly on SIGTERM.

mod support;

use std::path::Path;

use support::procs::{
    free_port, start_worker as start_worker_command, worker as start_worker, worker_command,
};
use support::{block_on, metric, scrape, umi};

const GREEDY: [&str; 10] = [
    "--dtype",
    "quantized",
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
    let (mut planner, p) = start_worker("planner", None);
    let (mut caller, c) = start_worker("caller", None);
    let (mut summarizer, s) = start_worker("summarizer", None);
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

    for worker in [&mut planner, &mut caller, &mut summarizer] {
        assert!(
            worker.terminate().success(),
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
    let dead = format!("https://127.0.0.1:{}", free_port());
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
    // The run ends, and says by its exit status that a query failed.
    assert!(!status.success());
    let a = answer(out_dir.path());
    // The reason names the role, the class of failure and the attempts.
    assert!(
        a["failure"]
            .as_str()
            .unwrap()
            .starts_with("planner: unavailable after 3 attempts: "),
        "{}",
        a["failure"]
    );
}

/// Also: the worker's Prometheus endpoint counts the two requests.
#[test]
fn the_streamed_answer_is_the_plain_answer_and_health_says_serving() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    use umi_rpc::pb;

    let metrics_at = format!("127.0.0.1:{}", free_port());
    let mut cmd = worker_command("summarizer", None);
    cmd.args(["--metrics-listen", &metrics_at]);
    let (mut worker, address) = start_worker_command(&mut cmd);
    let request = pb::GenerateRequest {
        role: pb::Role::Summarizer as i32,
        tools_json: vec![],
        history: vec![pb::HistoryTurn {
            label: "user".into(),
            value: "What is the capital of France?".into(),
        }],
        thought: None,
        sampling: Some(pb::Sampling {
            max_new_tokens: 16,
            ..Default::default()
        }),
        task_id: "stream".into(),
        ..Default::default()
    };
    let generated = block_on(async {
        // Health checks need TLS but no token (load balancers and probes have none).
        let ca_only = support::presenting(None);
        let mut health = HealthClient::new(ca_only.connect(&address).await.unwrap());
        let status = health
            .check(HealthCheckRequest {
                service: "umi.v1.RoleWorker".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32);

        // The role service itself refuses a caller without the token, before any work.
        let mut anonymous =
            pb::role_worker_client::RoleWorkerClient::new(ca_only.connect(&address).await.unwrap());
        let refused = anonymous.generate(request.clone()).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
        // And a plaintext client gets no gRPC answer at all from a TLS listener.
        let plain = tonic::transport::Endpoint::from_shared(address.replace("https://", "http://"))
            .unwrap()
            .connect()
            .await;
        if let Ok(plain) = plain {
            let mut c = pb::role_worker_client::RoleWorkerClient::new(plain);
            assert!(c.generate(request.clone()).await.is_err());
        }

        let mut client = pb::role_worker_client::RoleWorkerClient::new(support::channel(&address));
        let plain = client.generate(request.clone()).await.unwrap().into_inner();
        let mut stream = client.generate_stream(request).await.unwrap().into_inner();
        let (mut text, mut chunks, mut done) = (String::new(), 0, None);
        while let Some(chunk) = stream.message().await.unwrap() {
            assert!(done.is_none(), "a chunk came after the last one");
            text.push_str(&chunk.text);
            chunks += 1;
            done = chunk.done;
        }
        let done = done.expect("no final chunk");
        assert!(
            chunks > 2,
            "the answer came in {chunks} chunk(s), not streamed"
        );
        assert_eq!(text, plain.text);
        assert_eq!(done.text, plain.text);
        assert_eq!(done.generated_tokens, plain.generated_tokens);
        plain.generated_tokens
    });
    let generated = f64::from(generated);
    let text = scrape(&metrics_at);
    let series =
        |name: &str| metric(&text, name).unwrap_or_else(|| panic!("no {name} in:\n{text}"));
    assert_eq!(
        series("umi_engine_generation_tokens_total"),
        2.0 * generated
    );
    assert_eq!(series("umi_engine_time_to_first_token_seconds_count"), 2.0);
    assert!(series("umi_engine_prompt_tokens_total") > 0.0);
    // The second request shares the first's prompt: the prefix cache serves most of it.
    assert!(series("umi_engine_prefix_cache_hit_tokens_total") > 0.0);
    // The engine thread updates the gauge right after it sends the last answer.
    let mut running = series("umi_engine_requests_running");
    for _ in 0..50 {
        if running == 0.0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        running = metric(&scrape(&metrics_at), "umi_engine_requests_running").unwrap();
    }
    assert_eq!(running, 0.0, "{}", scrape(&metrics_at));
    assert!(worker.terminate().success());
}

/// Admission control end to end: a worker that lets one request wait refuses the excess
/// of 12 concurrent calls as RESOURCE_EXHAUSTED, and the client (`umi bench role`, through
/// the coordinator's `ClusterRoles`) backs off and retries until every call is served.
#[test]
fn an_overloaded_worker_refuses_the_excess_and_no_call_is_lost() {
    let metrics_at = format!("127.0.0.1:{}", free_port());
    let mut cmd = worker_command("planner", None);
    cmd.args([
        "--max-batch",
        "1",
        "--max-queue",
        "1",
        "--metrics-listen",
        &metrics_at,
    ]);
    let (mut worker, address) = start_worker_command(&mut cmd);
    let out = umi()
        .args(["bench", "role", "--role", "planner", "--endpoint", &address])
        .args([
            "--requests",
            "12",
            "--concurrency",
            "12",
            "--max-new-tokens",
            "8",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("12 calls"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let text = scrape(&metrics_at);
    let refused = metric(&text, "umi_engine_requests_refused_total").unwrap_or(0.0);
    assert!(refused > 0.0, "nothing was refused:\n{text}");
    assert!(worker.terminate().success());
}

/// Kilobytes of a process's memory from /proc: `VmRSS` (now) or `VmHWM` (peak).
fn memory_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .trim_start_matches(':')
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Admission control at scale (on the simulated engine, a test double, so that 200 calls
/// take seconds): 200 concurrent calls to one worker that runs 4 and lets 4 wait. The
/// excess is refused at once, the worker's memory stays flat (the refused calls hold
/// nothing there), and after the client's retries every call is served.
#[test]
fn two_hundred_concurrent_calls_to_a_small_queue_are_all_served_in_bounded_memory() {
    let metrics_at = format!("127.0.0.1:{}", free_port());
    let mut cmd = worker_command("planner", None);
    cmd.args(["--engine", "sim", "--max-batch", "4", "--max-queue", "4"])
        .args(["--metrics-listen", &metrics_at]);
    let (mut worker, address) = start_worker_command(&mut cmd);
    let pid = worker.child.id();
    let before = memory_kb(pid, "VmRSS");
    let out = umi()
        .args(["bench", "role", "--role", "planner", "--endpoint", &address])
        .args([
            "--requests",
            "200",
            "--concurrency",
            "200",
            "--max-new-tokens",
            "16",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("200 calls"), "{stdout}");
    let peak = memory_kb(pid, "VmHWM");
    assert!(
        peak < before + 64 * 1024,
        "the worker grew from {before} kB to a peak of {peak} kB"
    );
    let text = scrape(&metrics_at);
    let refused = metric(&text, "umi_engine_requests_refused_total").unwrap_or(0.0);
    assert!(refused > 0.0, "nothing was refused:\n{text}");
    let finished: f64 = text
        .lines()
        .filter(|l| l.starts_with("umi_engine_requests_finished_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    // The 200 calls and `umi bench role`'s warm-up call, each served once.
    assert_eq!(finished, 201.0, "{text}");
    assert!(text.contains("umi_engine_info{engine=\"sim\""), "{text}");
    assert!(worker.terminate().success());
}

/// A worker started with --tls-client-ca (mutual TLS) refuses, in the handshake, a client
/// without a certificate from that CA, and serves one with it; and a worker listening
/// beyond loopback will not start without TLS and tokens.
#[test]
fn mutual_tls_refuses_clients_without_a_certificate_and_open_listeners_are_refused() {
    use umi_rpc::security::{ClientSecurity, ClientTls};
    let pki = support::pki();
    let mut cmd = worker_command("planner", None);
    cmd.arg("--tls-client-ca").arg(&pki.ca);
    let (_worker, address) = start_worker_command(&mut cmd);
    let client = |cert: bool| {
        ClientSecurity::new(
            &ClientTls {
                ca: Some(pki.ca.clone()),
                cert: cert.then(|| pki.cert.clone()),
                key: cert.then(|| pki.key.clone()),
                domain: None,
            },
            Some(&pki.token),
        )
        .unwrap()
    };
    block_on(async {
        let info = |security: ClientSecurity| {
            let address = address.clone();
            async move {
                let channel = security.connect(&address).await?;
                umi_rpc::pb::role_worker_client::RoleWorkerClient::new(channel)
                    .info(umi_rpc::pb::InfoRequest {})
                    .await
                    .map_err(|s| umi_rpc::security::SecurityError::Config(s.to_string()))
            }
        };
        assert!(
            info(client(false)).await.is_err(),
            "served without a client certificate"
        );
        let served = info(client(true)).await.unwrap().into_inner();
        assert_eq!(served.role, umi_rpc::pb::Role::Planner as i32);
    });

    let open = umi()
        .args(["worker", "--role", "planner", "--listen", "0.0.0.0:0"])
        .env_remove("UMI_TLS_CERT")
        .env_remove("UMI_TLS_KEY")
        .output()
        .unwrap();
    assert!(!open.status.success());
    let stderr = String::from_utf8_lossy(&open.stderr);
    assert!(
        stderr.contains("faces the network") && stderr.contains("--tls-cert"),
        "{stderr}"
    );
}
