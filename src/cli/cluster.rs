//! `umi cluster up`: a whole cluster on this machine, for a laptop demo or a smoke
//! test: etcd on loopback, role workers that register in it, and a coordinator that
//! finds them there. Ctrl-C (or SIGTERM) stops everything, workers drained first.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use tokio::process::{Child, Command};
use umi_core::presets;

use super::args::model::ModelArgs;

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Start etcd, the role workers and the coordinator; stop them on Ctrl-C.
    Up(UpArgs),
}

#[derive(Args, Debug)]
pub struct UpArgs {
    /// Where etcd keeps its data and the processes their logs.
    #[arg(long, default_value = "runs/cluster")]
    pub dir: PathBuf,
    /// etcd's client port (its peer port is the next one).
    #[arg(long, default_value_t = 2379)]
    pub etcd_port: u16,
    /// The coordinator's port.
    #[arg(long, default_value_t = 50050)]
    pub coordinator_port: u16,
    /// Replicas of each role.
    #[arg(long, default_value_t = 1)]
    pub planners: usize,
    #[arg(long, default_value_t = 1)]
    pub callers: usize,
    #[arg(long, default_value_t = 1)]
    pub summarizers: usize,
    /// The coordinator's agent steps per task (default: 12 with the bundled model, else 200).
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// The coordinator's new tokens per role call (default: 128 with the bundled model,
    /// else 512).
    #[arg(long)]
    pub max_new_tokens: Option<usize>,
    /// Tasks the coordinator solves at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    #[command(flatten)]
    pub model: ModelArgs,
}

pub async fn run(cmd: ClusterCommand) -> anyhow::Result<()> {
    match cmd {
        ClusterCommand::Up(a) => up(a).await,
    }
}

async fn up(a: UpArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&a.dir).with_context(|| format!("creating {}", a.dir.display()))?;
    let exe = std::env::current_exe().context("finding the umi binary")?;
    let etcd_url = format!("http://127.0.0.1:{}", a.etcd_port);
    let peer_url = format!("http://127.0.0.1:{}", a.etcd_port + 1);
    let mut etcd = spawn(
        Command::new("etcd").args([
            "--name",
            "umi",
            "--data-dir",
            &a.dir.join("etcd").to_string_lossy(),
            "--logger=zap",
            "--log-level=warn",
            "--listen-client-urls",
            &etcd_url,
            "--advertise-client-urls",
            &etcd_url,
            "--listen-peer-urls",
            &peer_url,
            "--initial-advertise-peer-urls",
            &peer_url,
            "--initial-cluster",
            &format!("umi={peer_url}"),
        ]),
        &a.dir.join("etcd.log"),
    )
    .context("starting etcd (Debian: apt-get install etcd-server)")?;
    wait_healthy(&mut etcd, &etcd_url).await?;
    eprintln!("umi cluster: etcd on {etcd_url}");

    let mut model_flags = vec![
        "--dtype".to_string(),
        a.model.dtype.to_string(),
        "--device".to_string(),
        a.model.device.clone(),
        "--max-batch".to_string(),
        a.model.max_batch.to_string(),
        "--prefix-cache-mb".to_string(),
        a.model.prefix_cache_mb.to_string(),
        "--max-queue".to_string(),
        a.model.max_queue.to_string(),
    ];
    if let Some(m) = &a.model.model {
        model_flags.extend(["--model".to_string(), m.to_string_lossy().into_owned()]);
    }
    if let Some(t) = &a.model.tokenizer {
        model_flags.extend(["--tokenizer".to_string(), t.to_string_lossy().into_owned()]);
    }
    let mut workers = Vec::new();
    for (role, n) in [
        ("planner", a.planners),
        ("caller", a.callers),
        ("summarizer", a.summarizers),
    ] {
        for i in 0..n {
            let log = a.dir.join(format!("{role}-{i}.log"));
            let child = spawn(
                Command::new(&exe)
                    .args([
                        "worker",
                        "--role",
                        role,
                        "--listen",
                        "127.0.0.1:0",
                        "--etcd",
                        &etcd_url,
                    ])
                    .args(&model_flags),
                &log,
            )?;
            eprintln!("umi cluster: {role} worker {i} (log: {})", log.display());
            workers.push(child);
        }
    }
    let mut coordinator_cmd = Command::new(&exe);
    // The bundled 135M model gets `umi run`'s demo budgets.
    let demo = a.model.model.is_none();
    let max_steps = a.max_steps.unwrap_or(presets::max_steps(demo));
    let max_new_tokens = a
        .max_new_tokens
        .unwrap_or(presets::realtime(demo).max_new_tokens);
    coordinator_cmd.args([
        "coordinator",
        "--listen",
        &format!("127.0.0.1:{}", a.coordinator_port),
        "--etcd",
        &etcd_url,
        "--max-steps",
        &max_steps.to_string(),
        "--max-new-tokens",
        &max_new_tokens.to_string(),
        "--concurrency",
        &a.concurrency.to_string(),
    ]);
    coordinator_cmd
        .arg("--task-journal")
        .arg(a.dir.join("tasks.jsonl"));
    let coordinator_log = a.dir.join("coordinator.log");
    let mut coordinator = spawn(&mut coordinator_cmd, &coordinator_log)?;
    let coordinator_url = format!("http://127.0.0.1:{}", a.coordinator_port);
    eprintln!(
        "umi cluster: coordinator on {coordinator_url} (log: {})\n\
         umi cluster: try `umi run --coordinator {coordinator_url}`; Ctrl-C stops the cluster",
        coordinator_log.display()
    );

    tokio::select! {
        _ = super::support::shutdown::signal() => {}
        status = coordinator.wait() => eprintln!("umi cluster: the coordinator exited ({status:?})"),
    }
    eprintln!("umi cluster: stopping");
    stop(&mut coordinator).await;
    // Workers drain at the same time; each leaves etcd first, so etcd stops last.
    futures::future::join_all(workers.iter_mut().map(stop)).await;
    stop(&mut etcd).await;
    Ok(())
}

fn spawn(cmd: &mut Command, log: &std::path::Path) -> anyhow::Result<Child> {
    let file = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let err = file.try_clone()?;
    // A process group of its own: Ctrl-C in the terminal reaches only `umi cluster`,
    // which then stops the children in order (coordinator, workers, etcd last).
    #[cfg(unix)]
    cmd.process_group(0);
    cmd.stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {:?}", cmd.as_std().get_program()))
}

/// Polls etcd's /health until it answers, or fails if etcd exits or takes over 10 s.
async fn wait_healthy(etcd: &mut Child, url: &str) -> anyhow::Result<()> {
    let health = format!("{url}/health");
    for _ in 0..100 {
        if let Some(status) = etcd.try_wait()? {
            bail!("etcd exited at startup ({status}); is the port taken? see its log");
        }
        if let Ok(r) = umi_tools::http::get(&health, Duration::from_millis(500)).await {
            if r.status == 200 && String::from_utf8_lossy(&r.body).contains("true") {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("etcd at {url} was not healthy after 10 s")
}

/// SIGTERM, then SIGKILL if the process has not exited within 30 s.
async fn stop(child: &mut Child) {
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
