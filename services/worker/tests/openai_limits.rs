//! The OpenAI-compatible endpoints as served (`openai_server::serve_within`): a client
//! that trickles its request headers is cut off (slowloris), while other clients are
//! answered. On the simulated engine (a test double): only the listener is under test.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use umi_engine::sim::{SimEngine, SimProfile};
use umi_engine::EngineConfig;
use umi_rpc::http_listener::HttpLimits;
use umi_worker::openai_server;
use umi_worker::roles::RoleEngine;

async fn read_to_close(stream: &mut TcpStream, within: Duration) -> Option<String> {
    let mut got = Vec::new();
    let read = tokio::time::timeout(within, stream.read_to_end(&mut got)).await;
    read.ok()
        .map(|_| String::from_utf8_lossy(&got).into_owned())
}

#[tokio::test]
async fn a_client_trickling_its_headers_is_cut_off_and_others_are_served() {
    let engine = SimEngine::start(SimProfile::default(), EngineConfig::default()).unwrap();
    let router = openai_server::router(
        RoleEngine::new(engine),
        openai_server::Settings {
            model: "sim".into(),
            ..Default::default()
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let limits = HttpLimits {
        header_read_timeout: Duration::from_millis(500),
        ..HttpLimits::default()
    };
    tokio::spawn(openai_server::serve_within(
        listener,
        router,
        limits,
        std::future::pending(),
    ));

    let mut slow = TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    let trickle = async {
        for byte in b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
            if slow.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let normal = async {
        let mut ok = TcpStream::connect(addr).await.unwrap();
        ok.write_all(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        read_to_close(&mut ok, Duration::from_secs(5)).await
    };
    let ((), answer) = tokio::join!(trickle, normal);
    let answer = answer.expect("the normal client was answered");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"sim\""), "{answer}");
    assert!(
        read_to_close(&mut slow, Duration::from_secs(5))
            .await
            .is_some(),
        "the trickling client was never cut off"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}
