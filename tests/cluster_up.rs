//! `umi cluster up` as an operator meets it: a port already taken is refused by name
//! (never someone else's etcd used silently), the cluster runs with TLS and a token of
//! its own (the command it suggests works; another token is refused), and a SIGKILLed
//! `umi cluster up` takes its etcd, workers and coordinator with it (parent-death
//! signals).

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::procs::{free_port, Proc};
use support::umi;

/// The live (not zombie) children of `pid`, from /proc.
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces, so read after the last ')'.
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
        if fields[1].parse::<u32>() == Ok(pid) && fields[0] != "Z" {
            out.push(child);
        }
    }
    out
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s[s.rfind(')').unwrap() + 2..].starts_with('Z'))
        .unwrap_or(false)
}

fn up(dir: &Path, etcd_port: u16, coordinator_port: u16) -> std::process::Command {
    let mut cmd = umi();
    cmd.args(["cluster", "up", "--engine", "sim", "--dir"])
        .arg(dir)
        .args(["--etcd-port", &etcd_port.to_string()])
        .args(["--coordinator-port", &coordinator_port.to_string()]);
    cmd
}

#[test]
fn a_taken_etcd_port_is_refused_by_name() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let output = up(dir.path(), port, free_port()).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("port {port} (--etcd-port) is taken")),
        "{stderr}"
    );
}

#[test]
fn a_sigkilled_cluster_takes_its_children_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let (etcd_port, coordinator_port) = (free_port(), free_port());
    let mut cluster = Proc::spawn(&mut up(dir.path(), etcd_port, coordinator_port));
    let line = cluster.wait_for("Ctrl-C stops the cluster", Duration::from_secs(60));

    // Security is on: the suggested command (its throwaway CA and token) is served...
    let suggested = line.split('`').nth(1).unwrap();
    assert!(suggested.contains("https://"), "{suggested}");
    let run = |args: &[&str], out: &Path| {
        umi()
            .args(args)
            .args(["--queries", "tests/fixtures/one-query.json", "--out"])
            .arg(out)
            .output()
            .unwrap()
    };
    let args: Vec<&str> = suggested.split(' ').skip(1).collect();
    let served = run(&args, &dir.path().join("served"));
    assert!(
        String::from_utf8_lossy(&served.stdout).contains("1 queries"),
        "{}",
        String::from_utf8_lossy(&served.stderr)
    );
    // The answer, summary.json, manifest.json and trace.jsonl.
    assert_eq!(
        std::fs::read_dir(dir.path().join("served"))
            .unwrap()
            .count(),
        4
    );
    // ...and a client with another token (the test suite's own) is refused.
    let without: Vec<&str> = args
        .iter()
        .copied()
        .take_while(|a| *a != "--auth-token-file")
        .collect();
    let refused = run(&without, &dir.path().join("refused"));
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("bearer token"), "{stderr}");

    no_way_around_the_tokens(&dir.path().join("secrets"), etcd_port, coordinator_port);

    let pid = cluster.child.id();
    let kids = children(pid);
    // etcd, a planner, a caller, a summarizer and the coordinator.
    assert_eq!(kids.len(), 5, "{kids:?}\n{}", cluster.stderr());
    cluster.signal("KILL");
    let _ = cluster.child.wait();
    let start = Instant::now();
    while kids.iter().any(|&k| alive(k)) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "children still running after the parent was killed: {:?}",
            kids.iter().filter(|&&k| alive(k)).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A local user without the cluster's secrets, or a client holding only the client
/// token, cannot get at a task's prompts: etcd refuses anyone without the cluster's
/// client certificate and, with it, lets each role's user write only its own prefix;
/// and the workers refuse the clients' token (only the coordinator's is theirs).
fn no_way_around_the_tokens(secrets: &Path, etcd_port: u16, coordinator_port: u16) {
    use umi_discovery::registry::Registration;
    use umi_discovery::{Certificate, EtcdTarget, Identity, TlsOptions, WorkerInfo};
    let read = |name: &str| std::fs::read(secrets.join(name)).unwrap();
    let password = |user: &str| {
        String::from_utf8(read(&format!("etcd-{user}-password")))
            .unwrap()
            .trim()
            .to_string()
    };
    let url = format!("https://127.0.0.1:{etcd_port}");
    let ca_only = TlsOptions::new().ca_certificate(Certificate::from_pem(read("ca.pem")));
    let certified = ca_only.clone().identity(Identity::from_pem(
        read("loopback.pem"),
        read("loopback-key.pem"),
    ));
    let target = |tls: Option<TlsOptions>, user: Option<&str>| EtcdTarget {
        endpoints: vec![url.clone()],
        tls,
        user: user.map(|u| (u.to_string(), password(u))),
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let register = |target: EtcdTarget, role: &'static str| async move {
            Registration::register(
                &target,
                "/umi",
                WorkerInfo::at(role, "https://127.0.0.1:1"),
                Duration::from_secs(3),
            )
            .await
        };
        // Plaintext, TLS without the client certificate, and the certificate without a
        // user: all refused.
        assert!(register(
            EtcdTarget::new(vec![format!("http://127.0.0.1:{etcd_port}")]),
            "planner"
        )
        .await
        .is_err());
        assert!(register(target(Some(ca_only.clone()), None), "planner")
            .await
            .is_err());
        assert!(register(target(Some(certified.clone()), None), "planner")
            .await
            .is_err());
        // The caller's user may register callers, not planners; the coordinator's none.
        assert!(
            register(target(Some(certified.clone()), Some("caller")), "planner")
                .await
                .is_err()
        );
        assert!(register(
            target(Some(certified.clone()), Some("coordinator")),
            "planner"
        )
        .await
        .is_err());
        let caller = register(target(Some(certified.clone()), Some("caller")), "caller")
            .await
            .expect("the caller user registers a caller");
        caller.deregister().await.unwrap();

        // The clients' token opens the coordinator, not the workers.
        let client = umi_rpc::security::ClientSecurity::new(
            &umi_rpc::security::ClientTls {
                ca: Some(secrets.join("ca.pem")),
                ..Default::default()
            },
            Some(&secrets.join("token")),
        )
        .unwrap();
        let coordinator = client
            .connect(&format!("https://127.0.0.1:{coordinator_port}"))
            .await
            .unwrap();
        let status = umi_rpc::pb::coordinator_client::CoordinatorClient::new(coordinator)
            .status(umi_rpc::pb::StatusRequest {})
            .await
            .unwrap()
            .into_inner();
        let planner = status
            .roles
            .iter()
            .find(|r| r.role == "planner")
            .and_then(|r| r.addresses.first())
            .expect("the coordinator sees a planner")
            .clone();
        let worker = client
            .worker_endpoint(&planner, "planner")
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut call = tonic::Request::new(umi_rpc::pb::InfoRequest {});
        client.token().authorize(call.metadata_mut());
        let refused = umi_rpc::pb::role_worker_client::RoleWorkerClient::new(worker)
            .info(call)
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused}");
    });
}
