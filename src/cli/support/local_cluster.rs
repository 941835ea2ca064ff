//! A whole cluster as child processes on this machine: etcd on loopback, role workers
//! that register in it, and a coordinator that finds them there. `umi cluster up` and
//! `umi bench cluster` start one; stopping it stops the coordinator first, then the
//! workers (each leaves etcd and drains), then etcd. Security is on as in production
//! (deploy/): a throwaway CA (in `<dir>/secrets`, made fresh at each start) signs the
//! loopback certificate of the coordinator and etcd and one certificate per worker role;
//! etcd requires client certificates and has auth on, with one user per role that may
//! write only its role's prefix; clients present one token to the coordinator, which
//! presents another to the workers.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::process::{Child, Command};
use umi_core::agent::RoleKind;
use umi_discovery::access::{self, Accounts};
use umi_discovery::{Certificate, EtcdTarget, Identity, TlsOptions};
use umi_rpc::coordinator_client::CoordinatorAt;
use umi_rpc::pb::coordinator_client::CoordinatorClient;
use umi_rpc::pb::StatusRequest;
use umi_rpc::pki::{random_token, write_loopback_pki, write_private, LoopbackPki};
use umi_rpc::security::{ClientSecurity, ClientTls};

use super::children::{
    CoordinatorCommand, CoordinatorSettings, EtcdClient, EtcdClientTls, EtcdCommand, EtcdServerTls,
    ServerSecrets, WorkerCommand, WorkerSettings,
};

/// What to start.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// Where etcd keeps its data and the processes their logs.
    pub dir: PathBuf,
    pub etcd_port: u16,
    pub coordinator_port: u16,
    /// The workers of each role.
    pub roles: Vec<RoleSpec>,
    /// The coordinator's budgets and routing (besides its address, etcd and journal).
    pub coordinator: CoordinatorSettings,
    /// Give every process a Prometheus endpoint on a free loopback port.
    pub metrics: bool,
}

/// One role's replicas and the settings each gets (engine, model, batch...).
#[derive(Debug, Clone)]
pub struct RoleSpec {
    pub role: &'static str,
    pub replicas: usize,
    pub settings: WorkerSettings,
}

/// A started process and where its metrics are served.
pub struct Process {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
    pub metrics: Option<SocketAddr>,
}

pub struct LocalCluster {
    pub etcd: Process,
    pub workers: Vec<Process>,
    pub coordinator: Process,
    /// The coordinator's https:// address and what clients present to it.
    pub coordinator_at: CoordinatorAt,
    /// The throwaway CA, certificate and token the cluster uses.
    pub pki: LoopbackPki,
}

impl LocalCluster {
    pub async fn start(spec: &ClusterSpec) -> anyhow::Result<LocalCluster> {
        std::fs::create_dir_all(&spec.dir)
            .with_context(|| format!("creating {}", spec.dir.display()))?;
        let exe = std::env::current_exe().context("finding the umi binary")?;
        // Someone else's etcd (or anything) on our ports would be used silently: refuse.
        for (port, what) in [
            (spec.etcd_port, "--etcd-port"),
            (
                spec.etcd_port.wrapping_add(1),
                "--etcd-port + 1 (etcd's peer port)",
            ),
            (spec.coordinator_port, "--coordinator-port"),
        ] {
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
                bail!("port {port} ({what}) is taken on 127.0.0.1 (another etcd or cluster?): stop it or choose another port");
            }
        }
        let secrets_dir = spec.dir.join("secrets");
        let pki = write_loopback_pki(&secrets_dir)?;
        let StartedEtcd {
            process: etcd,
            url: etcd_url,
            users: etcd_users,
        } = start_secured_etcd(spec, &pki, &secrets_dir).await?;
        let etcd_as = |user: &str| EtcdClient {
            url: etcd_url.clone(),
            tls: Some(EtcdClientTls {
                ca: pki.ca.clone(),
                cert: pki.cert.clone(),
                key: pki.key.clone(),
            }),
            user: Some((user.to_string(), etcd_users.password_file(user))),
        };

        let mut workers = Vec::new();
        for RoleSpec {
            role,
            replicas,
            settings,
        } in &spec.roles
        {
            let kind =
                RoleKind::parse(role).with_context(|| format!("{role:?} is not an α-UMi role"))?;
            let identity = pki.worker(kind);
            // Each role's workers: their role's certificate and etcd user, and the token
            // only the coordinator presents.
            let secrets = ServerSecrets {
                cert: identity.cert.clone(),
                key: identity.key.clone(),
                token: pki.worker_token.clone(),
            };
            let etcd_client = etcd_as(&access::role_user(role));
            for i in 0..*replicas {
                let name = format!("{role}-{i}");
                let metrics = spec.metrics.then(free_port).transpose()?;
                let mut cmd = Command::new(&exe);
                cmd.args(
                    WorkerCommand {
                        role,
                        listen: "127.0.0.1:0",
                        etcd: &etcd_client,
                        secrets: &secrets,
                        settings,
                        metrics_listen: metrics,
                    }
                    .args(),
                );
                let log = spec.dir.join(format!("{name}.log"));
                workers.push(spawn(&name, &mut cmd, &log, metrics)?);
                eprintln!("umi cluster: {role} worker {i} (log: {})", log.display());
            }
        }
        let coordinator_url = format!("https://127.0.0.1:{}", spec.coordinator_port);
        let metrics = spec.metrics.then(free_port).transpose()?;
        let mut cmd = Command::new(&exe);
        // The coordinator: the loopback certificate, the clients' token, the workers'
        // token to present to them, and the etcd user that may only read.
        let secrets = ServerSecrets {
            cert: pki.cert.clone(),
            key: pki.key.clone(),
            token: pki.token.clone(),
        };
        cmd.args(
            CoordinatorCommand {
                listen: &format!("127.0.0.1:{}", spec.coordinator_port),
                etcd: &etcd_as(access::READER_USER),
                secrets: &secrets,
                ca: &pki.ca,
                worker_token: &pki.worker_token,
                settings: &spec.coordinator,
                task_journal: spec.dir.join("tasks.jsonl"),
                metrics_listen: metrics,
            }
            .args(),
        );
        let log = spec.dir.join("coordinator.log");
        let coordinator = spawn("coordinator", &mut cmd, &log, metrics)?;
        eprintln!(
            "umi cluster: coordinator on {coordinator_url} (log: {})",
            log.display()
        );
        let security = ClientSecurity::new(
            &ClientTls {
                ca: Some(pki.ca.clone()),
                ..ClientTls::default()
            },
            Some(&pki.token),
        )?;
        Ok(LocalCluster {
            etcd,
            workers,
            coordinator,
            coordinator_at: CoordinatorAt {
                address: coordinator_url,
                security,
                patience: umi_rpc::coordinator_client::DEFAULT_PATIENCE,
            },
            pki,
        })
    }

    /// Waits until the coordinator sees every worker of `spec` (or fails after `limit`).
    pub async fn wait_ready(&mut self, spec: &ClusterSpec, limit: Duration) -> anyhow::Result<()> {
        let started = std::time::Instant::now();
        loop {
            if let Some(status) = self.coordinator.child.try_wait()? {
                bail!(
                    "the coordinator exited at startup ({status}); see {}",
                    self.coordinator.log.display()
                );
            }
            for w in &mut self.workers {
                if let Some(status) = w.child.try_wait()? {
                    bail!(
                        "{} exited at startup ({status}); see {}",
                        w.name,
                        w.log.display()
                    );
                }
            }
            let at = &self.coordinator_at;
            if let Ok(channel) = at.security.connect(&at.address).await {
                let mut client = CoordinatorClient::new(channel);
                if let Ok(status) = client.status(StatusRequest {}).await {
                    let status = status.into_inner();
                    let ready = spec.roles.iter().all(|want| {
                        status
                            .roles
                            .iter()
                            .find(|r| r.role == want.role)
                            .is_some_and(|r| r.addresses.len() >= want.replicas)
                    });
                    if ready {
                        return Ok(());
                    }
                }
            }
            if started.elapsed() > limit {
                bail!(
                    "the cluster was not ready after {} s; see the logs in {}",
                    limit.as_secs(),
                    spec.dir.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Stops everything in order: coordinator, workers (draining at once), etcd.
    pub async fn stop(mut self) {
        stop(&mut self.coordinator.child).await;
        futures::future::join_all(self.workers.iter_mut().map(|w| stop(&mut w.child))).await;
        stop(&mut self.etcd.child).await;
    }
}

/// A loopback address with a port free now (the child binds it a moment later). It is
/// drawn below Linux's ephemeral range (32768 and up), so that no connection or
/// `--listen 127.0.0.1:0` takes it in between.
fn free_port() -> anyhow::Result<SocketAddr> {
    Ok(SocketAddr::from(([127, 0, 0, 1], free_ports(1)?)))
}

/// The first of `n` consecutive loopback ports free now, below the ephemeral range.
pub fn free_ports(n: u16) -> anyhow::Result<u16> {
    use std::hash::{BuildHasher, Hasher};
    for _ in 0..200 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u8(0);
        let first = 20_000 + (h.finish() % 12_000) as u16;
        let free =
            (first..first + n).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok());
        if free {
            return Ok(first);
        }
    }
    bail!("no {n} free consecutive loopback ports between 20000 and 32000")
}

/// Starts `cmd` (whose command line serves its metrics on `metrics`, if given) with its
/// output in `log`.
fn spawn(
    name: &str,
    cmd: &mut Command,
    log: &Path,
    metrics: Option<SocketAddr>,
) -> anyhow::Result<Process> {
    let file = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let err = file.try_clone()?;
    // A process group of its own: Ctrl-C in the terminal reaches only the parent, which
    // then stops the children in order.
    #[cfg(unix)]
    cmd.process_group(0);
    // And if the parent dies without stopping them (SIGKILL, a crash), the kernel sends
    // each child SIGTERM: no orphaned etcd or workers holding ports and memory.
    #[cfg(target_os = "linux")]
    // SAFETY: the closure runs in the forked child before exec and only makes the
    // async-signal-safe prctl(2) and getppid(2) calls; this is the one way to ask the
    // kernel for a parent-death signal (measured need: a SIGKILLed `umi cluster up`
    // otherwise leaves every child running).
    unsafe {
        let parent = std::process::id() as libc::pid_t;
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl: then no signal would come.
            if libc::getppid() != parent {
                libc::raise(libc::SIGTERM);
            }
            Ok(())
        });
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {:?}", cmd.as_std().get_program()))?;
    Ok(Process {
        name: name.to_string(),
        child,
        log: log.to_path_buf(),
        metrics,
    })
}

/// A started etcd: its process, client URL, and the users made for the cluster.
struct StartedEtcd {
    process: Process,
    url: String,
    users: EtcdUsers,
}

/// The password files of the etcd users made for one cluster (in its secrets folder).
struct EtcdUsers {
    dir: PathBuf,
}

impl EtcdUsers {
    fn password_file(&self, user: &str) -> PathBuf {
        self.dir.join(format!("etcd-{user}-password"))
    }
}

/// Starts etcd as production runs it (deploy/): TLS on its client and peer ports with
/// client certificates from the cluster's CA required, and auth on, with one user per
/// worker role that may write only its role's prefix and a coordinator user that may
/// only read. A local user without the cluster's secrets can neither read nor register
/// anything. etcd's data is the workers' leases only: a data folder from an earlier
/// start (whose users had other passwords) is removed first.
async fn start_secured_etcd(
    spec: &ClusterSpec,
    pki: &LoopbackPki,
    secrets_dir: &Path,
) -> anyhow::Result<StartedEtcd> {
    let data_dir = spec.dir.join("etcd");
    if data_dir.join("member").is_dir() {
        std::fs::remove_dir_all(&data_dir)
            .with_context(|| format!("removing the earlier etcd data in {}", data_dir.display()))?;
    }
    let url = format!("https://127.0.0.1:{}", spec.etcd_port);
    let peer_url = format!("https://127.0.0.1:{}", spec.etcd_port + 1);
    let mut etcd_cmd = Command::new("etcd");
    etcd_cmd.args(
        EtcdCommand {
            data_dir,
            client_url: &url,
            peer_url: &peer_url,
            tls: Some(EtcdServerTls {
                cert: pki.cert.clone(),
                key: pki.key.clone(),
                ca: pki.ca.clone(),
            }),
        }
        .args(),
    );
    let mut process = spawn("etcd", &mut etcd_cmd, &spec.dir.join("etcd.log"), None)
        .context("starting etcd (Debian: apt-get install etcd-server)")?;
    let read =
        |path: &Path| std::fs::read(path).with_context(|| format!("reading {}", path.display()));
    let admin = EtcdTarget {
        endpoints: vec![url.clone()],
        tls: Some(
            TlsOptions::new()
                .ca_certificate(Certificate::from_pem(read(&pki.ca)?))
                .identity(Identity::from_pem(read(&pki.cert)?, read(&pki.key)?)),
        ),
        user: None,
    };
    tokio::select! {
        ready = access::wait_ready(&admin, Duration::from_secs(10)) => {
            ready.with_context(|| format!("etcd at {url} did not answer within 10 s; see {}", process.log.display()))?
        }
        status = process.child.wait() => {
            bail!("etcd exited at startup ({:?}); is the port taken? see {}", status, process.log.display())
        }
    }
    let users = EtcdUsers {
        dir: secrets_dir.to_path_buf(),
    };
    let password = |user: &str| -> anyhow::Result<String> {
        let password = random_token()?;
        let path = users.password_file(user);
        write_private(&path, format!("{password}\n").as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(password)
    };
    let accounts = Accounts {
        root: random_token()?,
        reader: password(access::READER_USER)?,
        roles: spec
            .roles
            .iter()
            .map(|r| Ok((r.role.to_string(), password(&access::role_user(r.role))?)))
            .collect::<anyhow::Result<_>>()?,
    };
    access::enable_auth(&admin, "/umi", &accounts)
        .await
        .context("turning etcd's auth on")?;
    eprintln!("umi cluster: etcd on {url} (TLS, client certificates, a user per role)");
    Ok(StartedEtcd {
        process,
        url,
        users,
    })
}

/// SIGTERM, then SIGKILL if the process has not exited within 30 s.
pub async fn stop(child: &mut Child) {
    if let Some(pid) = child.id() {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        if tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .is_ok()
        {
            return;
        }
    }
    let _ = child.kill().await;
}
