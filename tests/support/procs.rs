//! Real processes for whole-system tests: etcd on loopback (random free ports, fresh
//! data dir), `umi worker` and `umi coordinator`, each killed when dropped.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::umi;

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process whose stderr is collected line by line.
pub struct Proc {
    pub child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Proc {
    pub fn spawn(cmd: &mut Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Proc {
            child,
            lines,
            reader: Some(reader),
        }
    }

    /// Waits for the exit, then for the reader to take in the last of stderr (its end,
    /// or up to 5 s where a grandchild still holds the pipe), so `stderr` after `wait`
    /// holds everything the process wrote.
    pub fn wait(&mut self) -> ExitStatus {
        let status = self.child.wait().unwrap();
        if let Some(reader) = self.reader.take() {
            let start = Instant::now();
            while !reader.is_finished() && start.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(10));
            }
            if reader.is_finished() {
                let _ = reader.join();
            }
        }
        status
    }

    /// The first stderr line containing `needle`, waiting up to `timeout`.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> String {
        let start = Instant::now();
        loop {
            if let Some(l) = self.line_with(needle) {
                return l;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // Let the reader thread catch up before reporting.
                std::thread::sleep(Duration::from_millis(100));
                if let Some(l) = self.line_with(needle) {
                    return l;
                }
                panic!(
                    "process exited ({status}) before {needle:?}:\n{}",
                    self.stderr()
                );
            }
            assert!(
                start.elapsed() < timeout,
                "no {needle:?} within {timeout:?}:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn line_with(&self, needle: &str) -> Option<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.contains(needle))
            .cloned()
    }

    pub fn stderr(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{signal} failed");
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal("TERM");
        self.wait()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Etcd {
    pub url: String,
    /// Serving clients over TLS with the test PKI's loopback certificate, requiring
    /// client certificates from its CA.
    tls: bool,
    client_port: u16,
    peer_port: u16,
    dir: tempfile::TempDir,
    proc: Option<Proc>,
}

impl Etcd {
    pub fn start() -> Etcd {
        Self::start_with(false)
    }

    /// An etcd whose clients must speak TLS and present a certificate of the test CA.
    pub fn start_tls() -> Etcd {
        Self::start_with(true)
    }

    fn start_with(tls: bool) -> Etcd {
        let mut etcd = Etcd {
            url: String::new(),
            tls,
            client_port: free_port(),
            peer_port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            proc: None,
        };
        let scheme = if tls { "https" } else { "http" };
        etcd.url = format!("{scheme}://127.0.0.1:{}", etcd.client_port);
        etcd.restart();
        etcd
    }

    /// Starts (again) on the same ports and data dir, and waits for /health.
    pub fn restart(&mut self) {
        let client = self.url.clone();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut cmd = Command::new("etcd");
        cmd.args(["--name", "n1", "--data-dir"])
            .arg(self.dir.path().join("data"))
            .args(["--logger=zap", "--log-level=warn"])
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("n1={peer}")]);
        if self.tls {
            let pki = super::pki();
            cmd.arg("--cert-file")
                .arg(&pki.cert)
                .arg("--key-file")
                .arg(&pki.key)
                .arg("--trusted-ca-file")
                .arg(&pki.ca)
                .arg("--client-cert-auth");
        }
        let mut proc = Proc::spawn(&mut cmd);
        let start = Instant::now();
        // Over TLS the plain /health probe cannot ask: an open port will do.
        let up = |port| {
            if self.tls {
                TcpStream::connect(("127.0.0.1", port)).is_ok()
            } else {
                healthy(port)
            }
        };
        while !up(self.client_port) {
            if let Ok(Some(status)) = proc.child.try_wait() {
                panic!("etcd exited ({status}):\n{}", proc.stderr());
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "etcd not healthy:\n{}",
                proc.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.proc = Some(proc);
    }

    /// Kills etcd and waits until its port is closed.
    pub fn stop(&mut self) {
        self.proc.take();
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.client_port)).is_ok() {
            assert!(start.elapsed() < Duration::from_secs(10));
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Sends a signal to the running etcd (STOP makes it a silent host).
    pub fn signal(&self, signal: &str) {
        self.proc
            .as_ref()
            .expect("etcd is not running")
            .signal(signal);
    }
}

fn healthy(port: u16) -> bool {
    super::http_get(
        &format!("127.0.0.1:{port}"),
        "/health",
        Duration::from_secs(1),
    )
    .is_some_and(|r| r.starts_with("HTTP/1.1 200") && r.contains("\"health\":\"true\""))
}

/// The command that starts a role worker on a free port, registered in `etcd` when
/// given.
pub fn worker_command(role: &str, etcd: Option<&str>) -> Command {
    let mut cmd = umi();
    super::serve_as_worker(&mut cmd, role);
    cmd.args([
        "worker",
        "--role",
        role,
        "--listen",
        "127.0.0.1:0",
        "--dtype",
        "quantized",
    ]);
    if let Some(url) = etcd {
        cmd.args(["--etcd", url]);
    }
    cmd
}

/// A `umi worker` serving the three roles on one model, with the certificate naming them
/// all; the caller adds the model and its other flags.
pub fn every_role_worker_command() -> Command {
    let mut cmd = umi();
    super::serve_as_worker_of_every_role(&mut cmd);
    cmd.args(["worker", "--listen", "127.0.0.1:0"]).args([
        "--role",
        "planner",
        "--role",
        "caller",
        "--role",
        "summarizer",
    ]);
    cmd
}

/// Starts a worker command; returns once it serves, with its address.
pub fn start_worker(cmd: &mut Command) -> (Proc, String) {
    let mut p = Proc::spawn(cmd);
    let line = p.wait_for(" role on ", Duration::from_secs(60));
    let url = line
        .split(" role on ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_string();
    (p, url)
}

/// A role worker on a free port, registered in `etcd` when given; returns once it
/// serves, with its address.
pub fn worker(role: &str, etcd: Option<&str>) -> (Proc, String) {
    start_worker(&mut worker_command(role, etcd))
}

/// A coordinator following `etcd`, with small budgets so tests stay quick.
pub fn coordinator(etcd: &str, extra: &[&str]) -> (Proc, String) {
    coordinator_at(etcd, "127.0.0.1:0", extra)
}

/// The same on `listen` (a restarted coordinator at its old address).
pub fn coordinator_at(etcd: &str, listen: &str, extra: &[&str]) -> (Proc, String) {
    let mut cmd = coordinator_command(etcd, listen);
    cmd.args([
        "--temperature",
        "0",
        "--max-new-tokens",
        "8",
        "--max-steps",
        "2",
    ])
    .args(extra);
    start_coordinator(&mut cmd)
}

/// The command that starts a coordinator on `listen`, following `etcd`.
pub fn coordinator_command(etcd: &str, listen: &str) -> Command {
    let mut cmd = umi();
    cmd.args(["coordinator", "--listen", listen, "--etcd", etcd]);
    cmd
}

/// Starts a coordinator command; returns once it listens, with its address.
pub fn start_coordinator(cmd: &mut Command) -> (Proc, String) {
    let mut p = Proc::spawn(cmd);
    let line = p.wait_for("listening on ", Duration::from_secs(60));
    let url = line
        .split("listening on ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_string();
    (p, url)
}

/// `n` copies of the one-query fixture (ids 1..=n), written to a file in `dir`.
pub fn queries(dir: &Path, n: usize) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let one: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(root.join("tests/fixtures/one-query.json")).unwrap())
            .unwrap();
    let many: Vec<serde_json::Value> = (1..=n)
        .map(|i| {
            let mut q = one[0].clone();
            q["query_id"] = serde_json::json!(i);
            q
        })
        .collect();
    let path = dir.join(format!("queries-{n}.json"));
    std::fs::write(&path, serde_json::to_vec(&many).unwrap()).unwrap();
    path
}
