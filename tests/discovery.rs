//! Discovery against a real etcd: quiet while nothing fails (no watch dropped, no lease
//! renewal failed, over many keep-alive periods and past every client timeout), and a
//! silent etcd host still noticed within seconds.

mod support;

use std::time::{Duration, Instant};

use support::procs::Etcd;
use umi_discovery::membership::Membership;
use umi_discovery::registry::Registration;
use umi_discovery::WorkerInfo;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn wait_until(what: &str, timeout: Duration, ok: impl Fn() -> bool) -> Duration {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < timeout, "{what}: not within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    start.elapsed()
}

#[test]
fn discovery_is_quiet_without_faults_and_notices_a_silent_etcd() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("umi_discovery=debug")
        .with_test_writer()
        .try_init();
    let etcd = Etcd::start();
    let endpoints = umi_discovery::EtcdTarget::new(vec![etcd.url.clone()]);
    runtime().block_on(async {
        // A 3 s lease renews every second, on one long-lived keep-alive stream.
        let registration = Registration::register(
            &endpoints,
            "/umi",
            WorkerInfo::at("planner", "http://127.0.0.1:1"),
            Duration::from_secs(3),
        )
        .await
        .unwrap();
        let membership = Membership::etcd(&endpoints, "/umi").await.unwrap();
        assert_eq!(membership.workers("planner").len(), 1);

        // Well past the 3 s request timeout and several HTTP/2 ping periods; the soak
        // run (`UMI_QUIET_SECS=600`, see README) watches for ten minutes.
        let quiet = Duration::from_secs(
            std::env::var("UMI_QUIET_SECS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(20),
        );
        let start = Instant::now();
        while start.elapsed() < quiet {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let health = registration.health();
            assert_eq!(
                membership.workers("planner").len(),
                1,
                "the worker left the set at {:?} (watches lost {}, renewals failed {}, leases lost {})",
                start.elapsed(),
                membership.watch_losses(),
                health.failed_renewals.load(std::sync::atomic::Ordering::Relaxed),
                health.lost.load(std::sync::atomic::Ordering::Relaxed),
            );
        }
        let health = registration.health();
        let failed = health
            .failed_renewals
            .load(std::sync::atomic::Ordering::Relaxed);
        let lost = health.lost.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(
            (membership.watch_losses(), failed, lost),
            (0, 0, 0),
            "(watches lost, renewals failed, leases lost) in {quiet:?} without a fault"
        );

        // The etcd host goes silent (no RST, no answers): both sides notice in seconds.
        etcd.signal("STOP");
        let noticed = wait_until(
            "the watch noticing a silent etcd",
            Duration::from_secs(20),
            || membership.watch_losses() > 0,
        )
        .await;
        eprintln!("a silent etcd was noticed by the watch after {noticed:?}");
        wait_until("a lease renewal failing", Duration::from_secs(10), || {
            health
                .failed_renewals
                .load(std::sync::atomic::Ordering::Relaxed)
                > 0
        })
        .await;
        etcd.signal("CONT");
        // Back: the worker is (still, or again) in the set.
        wait_until("the worker listed again", Duration::from_secs(20), || {
            membership.workers("planner").len() == 1
        })
        .await;
        registration.deregister().await.unwrap();
    });
}

/// etcd with auth on, as deploy/README.md sets it up: only a worker user may register
/// under /umi/workers/, a read-only user may follow it, and nobody anonymous does either.
#[test]
fn with_etcd_auth_only_the_worker_user_registers_and_readers_only_read() {
    use etcd_client::{Permission, PermissionType};
    use umi_discovery::EtcdTarget;
    let etcd = Etcd::start();
    let anonymous = EtcdTarget::new(vec![etcd.url.clone()]);
    let as_user = |user: &str| EtcdTarget {
        user: Some((user.to_string(), format!("{user}-password"))),
        ..anonymous.clone()
    };
    runtime().block_on(async {
        let mut admin = etcd_client::Client::connect([etcd.url.as_str()], None)
            .await
            .unwrap();
        for (user, role) in [
            ("root", "root"),
            ("worker", "umi-worker"),
            ("coordinator", "umi-reader"),
        ] {
            admin
                .user_add(user, format!("{user}-password"), None)
                .await
                .unwrap();
            if role != "root" {
                admin.role_add(role).await.unwrap();
            }
            admin.user_grant_role(user, role).await.unwrap();
        }
        let prefix = |kind, key: &str| Permission::new(kind, key).with_prefix();
        admin
            .role_grant_permission(
                "umi-worker",
                prefix(PermissionType::Readwrite, "/umi/workers/"),
            )
            .await
            .unwrap();
        admin
            .role_grant_permission("umi-reader", prefix(PermissionType::Read, "/umi/"))
            .await
            .unwrap();
        admin.auth_enable().await.unwrap();

        let register = |target: EtcdTarget, address: &'static str| async move {
            Registration::register(
                &target,
                "/umi",
                WorkerInfo::at("planner", address),
                Duration::from_secs(3),
            )
            .await
        };
        // Anonymous and read-only clients cannot register (a rogue worker entry).
        let refused = register(anonymous.clone(), "https://rogue:1")
            .await
            .err()
            .unwrap();
        assert!(refused.to_string().contains(&etcd.url), "{refused}");
        assert!(register(as_user("coordinator"), "https://rogue:2")
            .await
            .is_err());
        // The worker user can; the reader follows it; anonymous cannot even list.
        let registration = register(as_user("worker"), "https://10.0.0.7:50051")
            .await
            .unwrap();
        let membership = Membership::etcd(&as_user("coordinator"), "/umi")
            .await
            .unwrap();
        let listed: Vec<String> = membership
            .workers("planner")
            .into_iter()
            .map(|w| w.address)
            .collect();
        assert_eq!(listed, ["https://10.0.0.7:50051"]);
        assert!(Membership::etcd(&anonymous, "/umi").await.is_err());
        registration.deregister().await.unwrap();
    });
}

/// etcd serving TLS and requiring client certificates: a worker with the CA and a
/// certificate registers, a client without them is refused.
#[test]
fn over_tls_with_client_certificates_only_certified_clients_register() {
    use umi_discovery::{Certificate, EtcdTarget, Identity, TlsOptions};
    let etcd = Etcd::start_tls();
    let pki = support::pki();
    let read = |p: &std::path::Path| std::fs::read(p).unwrap();
    let certified = EtcdTarget {
        tls: Some(
            TlsOptions::new()
                .ca_certificate(Certificate::from_pem(read(&pki.ca)))
                .identity(Identity::from_pem(read(&pki.cert), read(&pki.key))),
        ),
        ..EtcdTarget::new(vec![etcd.url.clone()])
    };
    let no_certificate = EtcdTarget {
        tls: Some(TlsOptions::new().ca_certificate(Certificate::from_pem(read(&pki.ca)))),
        ..EtcdTarget::new(vec![etcd.url.clone()])
    };
    runtime().block_on(async {
        let register = |target: EtcdTarget| async move {
            Registration::register(
                &target,
                "/umi",
                WorkerInfo::at("planner", "https://127.0.0.1:1"),
                Duration::from_secs(3),
            )
            .await
        };
        // etcd may still be starting behind its open port.
        let mut registration = None;
        for _ in 0..50 {
            if let Ok(r) = register(certified.clone()).await {
                registration = Some(r);
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let registration = registration.expect("a certified client registers over TLS");
        assert!(register(no_certificate).await.is_err());
        assert!(register(EtcdTarget::new(vec![etcd.url.clone()]))
            .await
            .is_err());
        let membership = Membership::etcd(&certified, "/umi").await.unwrap();
        assert_eq!(membership.workers("planner").len(), 1);
        registration.deregister().await.unwrap();
    });
}
