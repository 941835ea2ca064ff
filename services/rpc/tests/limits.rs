//! A gRPC server's limits, observed from outside: silent sockets and stalled TLS
//! handshakes are closed, connections past the cap are closed at once, the HTTP/2
//! stream cap is announced, health Watch streams are bounded, and health follows the
//! server's probe.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::service::Routes;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use umi_rpc::security::{ServerSecurity, ServerTls};
use umi_rpc::serve::{serve_with, HealthProbe, Limits, ServeOptions, Shutdown};

const NAME: &str = "test.Service";

/// Serves nothing but health on a loopback port, until the test ends.
async fn server(security: ServerSecurity, options: ServeOptions) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        serve_with(
            listener,
            NAME,
            Routes::default(),
            &security,
            Shutdown::on(std::future::pending()),
            options,
        )
        .await
    });
    addr
}

fn limits(change: impl FnOnce(&mut Limits)) -> ServeOptions {
    let mut limits = Limits::default();
    change(&mut limits);
    ServeOptions {
        limits,
        probe: None,
    }
}

/// How long until the server closes `stream` (reads EOF or an error), at most `within`.
async fn closed_after(stream: &mut TcpStream, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return started.elapsed(),
                Ok(_) => continue,
            }
        }
    })
    .await
    .ok()
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_idle_timeout() {
    let addr = server(
        ServerSecurity::open(),
        limits(|l| l.idle_timeout = Duration::from_millis(300)),
    )
    .await;
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let closed = closed_after(&mut silent, Duration::from_secs(5)).await;
    assert!(closed.is_some(), "a silent connection stayed open");
}

#[tokio::test]
async fn a_tls_handshake_never_finished_is_dropped_after_the_handshake_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let pki = umi_rpc::pki::write_loopback_pki(dir.path()).unwrap();
    let tls = ServerTls {
        cert: pki.cert,
        key: pki.key,
        client_ca: None,
    };
    let security = ServerSecurity::new(Some(&tls), None).unwrap();
    let addr = server(
        security,
        limits(|l| l.tls_handshake = Duration::from_millis(300)),
    )
    .await;
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    // Half a ClientHello record header: the handshake starts and never goes on.
    stalled.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    let closed = closed_after(&mut stalled, Duration::from_secs(5)).await;
    assert!(closed.is_some(), "a stalled TLS handshake stayed open");
}

#[tokio::test]
async fn a_connection_past_the_cap_is_closed_at_once_and_admitted_when_one_leaves() {
    let addr = server(ServerSecurity::open(), limits(|l| l.max_connections = 1)).await;
    let first = TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut second = TcpStream::connect(addr).await.unwrap();
    assert!(
        closed_after(&mut second, Duration::from_secs(2))
            .await
            .is_some(),
        "a second connection was kept past a cap of one"
    );
    drop(first);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut third = TcpStream::connect(addr).await.unwrap();
    assert!(
        closed_after(&mut third, Duration::from_millis(500))
            .await
            .is_none(),
        "the slot of a closed connection was not freed"
    );
}

#[tokio::test]
async fn the_server_announces_its_stream_cap_per_connection() {
    let addr = server(
        ServerSecurity::open(),
        limits(|l| l.max_streams_per_connection = 7),
    )
    .await;
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    conn.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap(); // empty SETTINGS
    let mut header = [0u8; 9];
    conn.read_exact(&mut header).await.unwrap();
    assert_eq!(header[3], 4, "the server's first frame is its SETTINGS");
    let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
    let mut payload = vec![0u8; len];
    conn.read_exact(&mut payload).await.unwrap();
    let max_streams = payload
        .chunks(6)
        .find(|s| u16::from_be_bytes([s[0], s[1]]) == 3) // SETTINGS_MAX_CONCURRENT_STREAMS
        .map(|s| u32::from_be_bytes([s[2], s[3], s[4], s[5]]));
    assert_eq!(max_streams, Some(7));
}

async fn health(addr: std::net::SocketAddr) -> HealthClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    HealthClient::new(channel)
}

fn ask(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.into(),
    }
}

#[tokio::test]
async fn health_watch_streams_are_bounded_and_a_closed_one_frees_its_slot() {
    let addr = server(ServerSecurity::open(), limits(|l| l.max_health_watches = 1)).await;
    let mut client = health(addr).await;
    let first = client.watch(ask(NAME)).await.unwrap();
    let refused = client.watch(ask(NAME)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    // Check stays open whatever Watch holds.
    client.check(ask(NAME)).await.unwrap();
    drop(first);
    let mut admitted = false;
    for _ in 0..50 {
        if client.watch(ask(NAME)).await.is_ok() {
            admitted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(admitted, "a closed Watch did not free its slot");
}

#[tokio::test]
async fn health_follows_the_probe_not_serving_while_it_fails() {
    let healthy = Arc::new(AtomicBool::new(true));
    let probe: HealthProbe = {
        let healthy = healthy.clone();
        Arc::new(move || {
            if healthy.load(Ordering::SeqCst) {
                Ok(())
            } else {
                Err("the engine thread is stuck".into())
            }
        })
    };
    let addr = server(
        ServerSecurity::open(),
        ServeOptions {
            limits: Limits::default(),
            probe: Some(probe),
        },
    )
    .await;
    let mut client = health(addr).await;
    let status =
        |r: tonic::Response<tonic_health::pb::HealthCheckResponse>| r.into_inner().status();
    assert_eq!(
        status(client.check(ask(NAME)).await.unwrap()),
        ServingStatus::Serving
    );
    healthy.store(false, Ordering::SeqCst);
    let mut seen = Vec::new();
    for _ in 0..40 {
        let now = (
            status(client.check(ask(NAME)).await.unwrap()),
            status(client.check(ask("")).await.unwrap()),
        );
        seen.push(now);
        if now == (ServingStatus::NotServing, ServingStatus::NotServing) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        seen.last(),
        Some(&(ServingStatus::NotServing, ServingStatus::NotServing))
    );
    healthy.store(true, Ordering::SeqCst);
    let mut back = false;
    for _ in 0..40 {
        if status(client.check(ask(NAME)).await.unwrap()) == ServingStatus::Serving {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(back, "health did not turn SERVING again");
}
