//! The RapidAPI client against local TCP peers: a server that never answers (the
//! reference's timeout observation) and a stand-in service that answers in ToolBench's
//! `{"error", "response"}` shape, checking the request it receives.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use umi_core::env::ToolEnv;
use umi_core::tool::{ApiParam, ApiSpec};
use umi_tools::rapidapi::RapidApi;

fn api() -> Vec<ApiSpec> {
    vec![ApiSpec {
        category_name: "Weather".into(),
        tool_name: "Weather API".into(),
        api_name: "Current".into(),
        api_description: None,
        required_parameters: vec![ApiParam {
            name: "city".into(),
            kind: "STRING".into(),
            description: None,
            default: None,
        }],
        optional_parameters: vec![],
        method: None,
        shown_description: None,
    }]
}

fn client(port: u16) -> RapidApi {
    let mut c = RapidApi::new(format!("http://127.0.0.1:{port}/rapidapi"), "KEY".into());
    c.timeout = Duration::from_millis(300);
    c.pacing = Duration::ZERO;
    c
}

#[tokio::test]
async fn a_silent_server_times_out_into_an_observation() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock); // accept, never answer
        }
    });
    let backend = client(port);
    let env = ToolEnv::new(api(), &backend);
    let (obs, status) = env
        .step("current_for_weather_api", "{\"city\": \"Paris\"}")
        .await;
    assert_eq!(obs, r#"{"error": "request time out", "response": ""}"#);
    assert_eq!(status, 12);
}

/// A stand-in service answering one request with `body`; yields the request it read.
async fn serve_once(body: &'static str) -> (u16, tokio::task::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 4096];
        let mut got = Vec::new();
        // Read headers and the body (Content-Length) before answering.
        loop {
            let n = sock.read(&mut buf).await.unwrap();
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got);
            if let Some(end) = text.find("\r\n\r\n") {
                // Header names are case-insensitive (hyper writes them in lower case).
                let len: usize = text
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length").then_some(value)
                    })
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if got.len() >= end + 4 + len {
                    break;
                }
            }
        }
        let reply = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        sock.write_all(reply.as_bytes()).await.unwrap();
        String::from_utf8_lossy(&got).into_owned()
    });
    (port, server)
}

#[tokio::test]
async fn replies_become_quoted_observations_and_the_request_has_toolbench_fields() {
    let (port, server) = serve_once(r#"{"error": "", "response": "{'temp': 21}"}"#).await;
    let backend = client(port);
    let env = ToolEnv::new(api(), &backend);
    let (obs, status) = env
        .step("current_for_weather_api", "{\"city\": \"Paris\"}")
        .await;
    assert_eq!((obs.as_str(), status), (r#""{'temp': 21}""#, 0));
    let request = server.await.unwrap();
    assert!(
        request.starts_with("POST /rapidapi HTTP/1.1\r\n"),
        "{request}"
    );
    assert!(
        request
            .lines()
            .any(|l| l.eq_ignore_ascii_case("toolbench_key: KEY")),
        "{request}"
    );
    let body: serde_json::Value =
        serde_json::from_str(request.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["category"], "Weather");
    assert_eq!(body["tool_name"], "weather_api");
    // The reference sends `change_name(standardize(api_name))`, not the raw name.
    assert_eq!(body["api_name"], "current");
    assert_eq!(body["tool_input"], "{\"city\": \"Paris\"}");
    assert_eq!(body["strip"], "truncate");
}

/// Pins the reference's reaction to `Rate limit per minute error...`: status 10, the
/// error as the observation, and a pause (10 s there) before the client goes on.
#[tokio::test]
async fn a_rate_limit_reply_pauses_the_client() {
    let (port, server) =
        serve_once(r#"{"error": "Rate limit per minute error...", "response": ""}"#).await;
    let mut backend = client(port);
    backend.rate_limit_pause = Duration::from_millis(400);
    let env = ToolEnv::new(api(), &backend);
    let start = std::time::Instant::now();
    let (obs, status) = env.step("current_for_weather_api", "{}").await;
    assert_eq!(
        (obs.as_str(), status),
        (r#"{"message": "Rate limit per minute error..."}"#, 10)
    );
    assert!(
        start.elapsed() >= Duration::from_millis(400),
        "{:?}",
        start.elapsed()
    );
    server.await.unwrap();
}

/// The reference's 2 s pause belongs to ToolBench's public server alone; any other server
/// is called without one, and a pause given by hand spaces the calls.
#[test]
fn pacing_defaults_to_two_seconds_only_for_toolbenchs_public_server() {
    use umi_tools::rapidapi::{default_pacing, TOOLBENCH_SERVER};
    assert_eq!(default_pacing(TOOLBENCH_SERVER), Duration::from_secs(2));
    assert_eq!(
        default_pacing(&format!("{TOOLBENCH_SERVER}/")),
        Duration::from_secs(2)
    );
    assert_eq!(
        default_pacing("http://127.0.0.1:8080/virtual"),
        Duration::ZERO
    );
    let client = RapidApi::new("http://localhost:9/rapidapi".into(), "K".into());
    assert_eq!(client.pacing, Duration::ZERO);
}

/// A stand-in service answering every request after `delay`, recording when each arrived.
async fn serve_slowly(
    delay: Duration,
) -> (
    u16,
    std::sync::Arc<std::sync::Mutex<Vec<std::time::Instant>>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let arrivals = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = arrivals.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let _ = sock.read(&mut buf).await;
                seen.lock().unwrap().push(std::time::Instant::now());
                tokio::time::sleep(delay).await;
                let body = r#"{"error": "", "response": "ok"}"#;
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(reply.as_bytes()).await;
            });
        }
    });
    (port, arrivals)
}

#[tokio::test(flavor = "multi_thread")]
async fn calls_overlap_without_pacing_and_are_spaced_with_it() {
    let (port, arrivals) = serve_slowly(Duration::from_millis(400)).await;
    let mut backend = client(port);
    backend.timeout = Duration::from_secs(5);
    let env = ToolEnv::new(api(), &backend);
    let start = std::time::Instant::now();
    let (a, b) = tokio::join!(
        env.step("current_for_weather_api", "{\"city\": \"Paris\"}"),
        env.step("current_for_weather_api", "{\"city\": \"Rome\"}")
    );
    assert_eq!((a.1, b.1), (0, 0), "{a:?} {b:?}");
    // Two 400 ms calls at once: well under the 800 ms they take one after the other.
    assert!(
        start.elapsed() < Duration::from_millis(750),
        "{:?}",
        start.elapsed()
    );

    let (port, arrivals_paced) = serve_slowly(Duration::ZERO).await;
    let mut paced = client(port);
    paced.pacing = Duration::from_millis(300);
    let env = ToolEnv::new(api(), &paced);
    let _ = tokio::join!(
        env.step("current_for_weather_api", "{\"city\": \"Paris\"}"),
        env.step("current_for_weather_api", "{\"city\": \"Rome\"}")
    );
    let at = arrivals_paced.lock().unwrap().clone();
    assert_eq!(at.len(), 2);
    let gap = at[1].duration_since(at[0]);
    assert!(gap >= Duration::from_millis(280), "{gap:?}");
    assert_eq!(arrivals.lock().unwrap().len(), 2);
}
