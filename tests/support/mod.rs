//! Shared helpers for whole-system tests.

#![allow(dead_code)]

pub mod procs;
pub mod tree_chat;

/// The `umi` binary, run from the repository root, with security on as in production:
/// every server it starts (worker, coordinator) serves TLS with the test PKI's loopback
/// certificate and requires its token; every client trusts its CA and presents the token
/// (to coordinators and to workers). Set through umi's environment variables, which flags
/// override.
pub fn umi() -> std::process::Command {
    let pki = pki();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_umi"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("UMI_TLS_CERT", &pki.cert)
        .env("UMI_TLS_KEY", &pki.key)
        .env("UMI_TLS_CA", &pki.ca)
        .env("UMI_AUTH_TOKEN_FILE", &pki.token)
        .env("UMI_COORDINATOR_TOKEN_FILE", &pki.token)
        .env("UMI_WORKER_TOKEN_FILE", &pki.token);
    cmd
}

/// Gives a `umi worker` command the test PKI's certificate of `role` (clients check a
/// worker's certificate against its role's name).
pub fn serve_as_worker(cmd: &mut std::process::Command, role: &str) {
    if let Some(kind) = umi_core::agent::RoleKind::parse(role) {
        let identity = pki().worker(kind);
        cmd.env("UMI_TLS_CERT", &identity.cert)
            .env("UMI_TLS_KEY", &identity.key);
    }
}

/// Gives a `umi worker` command the test PKI's certificate naming every role (a worker
/// serving several).
pub fn serve_as_worker_of_every_role(cmd: &mut std::process::Command) {
    let (cert, key) = &pki().every_role;
    cmd.env("UMI_TLS_CERT", cert).env("UMI_TLS_KEY", key);
}

/// This test process's throwaway CA, loopback certificate and token (made once).
pub fn pki() -> &'static umi_rpc::pki::LoopbackPki {
    static PKI: std::sync::OnceLock<umi_rpc::pki::LoopbackPki> = std::sync::OnceLock::new();
    PKI.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("umi-test-pki-{}", std::process::id()));
        umi_rpc::pki::write_loopback_pki(&dir).expect("writing the test PKI")
    })
}

/// What test clients present: the test CA and token.
pub fn client_security() -> umi_rpc::security::ClientSecurity {
    let pki = pki();
    umi_rpc::security::ClientSecurity::new(&ca_only(), Some(&pki.token))
        .expect("the test PKI loads")
}

/// A client trusting the test CA and presenting `token` as its bearer token (`None`: no
/// token at all).
pub fn presenting(token: Option<&str>) -> umi_rpc::security::ClientSecurity {
    let header = token.map(|t| format!("Bearer {t}").parse().expect("a header value"));
    umi_rpc::security::ClientSecurity::with_token(&ca_only(), header).expect("the test CA loads")
}

fn ca_only() -> umi_rpc::security::ClientTls {
    umi_rpc::security::ClientTls {
        ca: Some(pki().ca.clone()),
        ..Default::default()
    }
}

/// A lazily connected channel to a umi server at `url` (https:// with the test PKI),
/// carrying the test token.
pub fn channel(url: &str) -> umi_rpc::security::AuthedChannel {
    client_security()
        .channel(url)
        .expect("a usable server address")
}

/// `umi run --roles replay` over the recorded answer files of `recordings` (their
/// queries, tools and trajectories), writing into `out`; fails the test if the run fails.
pub fn replay(recordings: &std::path::Path, out: &std::path::Path, extra: &[&str]) {
    let output = umi()
        .args(["run", "--roles", "replay", "--queries"])
        .arg(recordings)
        .arg("--record")
        .arg(recordings)
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "replaying {}: {}",
        recordings.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The answer files a run wrote into `dir` (`<id>_DFS_woFilter_w2.json`), by name, with
/// their bytes: what two runs are compared by.
pub fn answer_bytes(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with("_DFS_woFilter_w2.json"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    files.sort();
    files
}

/// Runs a future to completion on a fresh single-thread runtime (gRPC calls from
/// synchronous tests).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// A plain HTTP/1.1 GET of `path` at `addr` (host:port): the whole response, status line
/// and headers included, or `None` if no connection or request could be made.
pub fn http_get(addr: &str, path: &str, read_timeout: std::time::Duration) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(read_timeout)).ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .ok()?;
    let mut response = String::new();
    let _ = s.read_to_string(&mut response);
    Some(response)
}

/// The text a Prometheus endpoint serves at `addr` (host:port).
pub fn scrape(addr: &str) -> String {
    let body = http_get(addr, "/metrics", std::time::Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no metrics endpoint at {addr}"));
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    body
}

/// The value of the sample named `series` (with its labels, as written) in `text`.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// The body of one HTTP/1.1 request read from `sock` (by its Content-Length), for the
/// scripted OpenAI-compatible endpoints of the tests; None if the peer hung up first.
pub fn read_request_body(sock: &mut std::net::TcpStream) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        let n = sock.read(&mut buf).ok().filter(|&n| n > 0)?;
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let len: usize = text
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if got.len() >= end + 4 + len {
                return Some(got[end + 4..end + 4 + len].to_vec());
            }
        }
    }
}

/// Writes a 200 response with a JSON body.
pub fn write_json_response(sock: &mut std::net::TcpStream, body: &str) {
    use std::io::Write;
    let head = format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
    let _ = sock.write_all(head.as_bytes());
    let _ = sock.write_all(body.as_bytes());
}

/// A scripted judge (a test double, not a model) on loopback, answering StableToolBench's
/// forced function calls: `check_answer_status` is Unsure for queries about 'Gondrand'
/// and Solved otherwise; `parse_answer_status` is Solved; `check_task_solvable` is
/// Solvable; `select_better_answer` picks Answer_1. Counts the detail checks, and all
/// requests.
pub fn scripted_judge() -> (
    String,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}/v1", listener.local_addr().unwrap());
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = calls.clone();
    let requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let all = requests.clone();
    std::thread::spawn(move || {
        for sock in listener.incoming() {
            let mut sock = sock.unwrap();
            let Some(body) = read_request_body(&mut sock) else {
                continue;
            };
            let request = serde_json::from_slice::<serde_json::Value>(&body).unwrap();
            all.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let function = request["tool_choice"]["function"]["name"]
                .as_str()
                .unwrap()
                .to_string();
            let prompt = request["messages"][0]["content"].as_str().unwrap();
            if function == "parse_answer_status" {
                assert!(
                    prompt.contains("\"answer_details\": [{\"role\": \"system\""),
                    "{prompt}"
                );
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            let status = if function == "check_answer_status" && prompt.contains("'Gondrand'") {
                "Unsure"
            } else {
                "Solved"
            };
            let arguments = match function.as_str() {
                "select_better_answer" => serde_json::json!({"index": 1, "reason": "scripted"}),
                "check_task_solvable" => serde_json::json!({"task_status": "Solvable"}),
                _ => serde_json::json!({"answer_status": status, "reason": "scripted"}),
            }
            .to_string();
            let reply = serde_json::json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": null,
                "tool_calls": [{"id": "c", "type": "function", "function": {"name": function, "arguments": arguments}}]}}]})
            .to_string();
            write_json_response(&mut sock, &reply);
        }
    });
    (base, calls, requests)
}
