//! `umi cluster up`: a whole cluster on this machine (`support::local_cluster`), for a
//! laptop demo or a smoke test: etcd on loopback, role workers that register in it, and a
//! coordinator that finds them there. Ctrl-C (or SIGTERM) stops everything, workers
//! drained first.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use umi_core::presets;

use super::args::engine::EngineArgs;
use super::args::model::{runs_demo_model, ModelArgs};
use super::support::children::{CoordinatorSettings, WorkerSettings};
use super::support::local_cluster::{ClusterSpec, LocalCluster, RoleSpec};

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
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Serve Prometheus metrics from every process, each on a free loopback port (named
    /// in its log).
    #[arg(long)]
    pub metrics: bool,
}

pub async fn run(cmd: ClusterCommand) -> anyhow::Result<()> {
    match cmd {
        ClusterCommand::Up(a) => up(a).await,
    }
}

async fn up(a: UpArgs) -> anyhow::Result<()> {
    let spec = a.spec();
    let mut cluster = LocalCluster::start(&spec).await?;
    // Suggest the client command only once it works: every worker loaded and registered.
    if let Err(e) = cluster
        .wait_ready(&spec, std::time::Duration::from_secs(600))
        .await
    {
        cluster.stop().await;
        return Err(e);
    }
    eprintln!(
        "umi cluster: try `umi run --coordinator {} --tls-ca {} --auth-token-file {}`; Ctrl-C stops the cluster",
        cluster.coordinator_at.address,
        cluster.pki.ca.display(),
        cluster.pki.token.display()
    );
    tokio::select! {
        _ = super::support::shutdown::signal() => {}
        status = cluster.coordinator.child.wait() => eprintln!("umi cluster: the coordinator exited ({status:?})"),
    }
    eprintln!("umi cluster: stopping");
    cluster.stop().await;
    Ok(())
}

impl UpArgs {
    /// The processes to start: each worker with this command's model and engine
    /// settings, the coordinator with its budgets.
    pub fn spec(&self) -> ClusterSpec {
        let m = &self.model;
        let worker = WorkerSettings {
            sim: self.engine.is_sim(),
            sim_profile: self.engine.sim_profile.clone(),
            dtype: Some(m.dtype.to_string()),
            device: Some(m.device.clone()),
            max_batch: m.max_batch,
            prefill_chunk: Some(m.prefill_chunk),
            prefix_cache_mb: m.prefix_cache_mb,
            max_queue: m.max_queue,
            model: m.model.clone(),
            tokenizer: m.tokenizer.clone(),
            adapter: m.adapter.clone(),
        };
        // The bundled 135M model gets `umi run`'s demo budgets.
        let demo = runs_demo_model(m, &self.engine);
        let max_steps = self.max_steps.unwrap_or(presets::max_steps(demo));
        let max_new_tokens = self
            .max_new_tokens
            .unwrap_or(presets::realtime(demo).max_new_tokens);
        let coordinator = CoordinatorSettings {
            concurrency: self.concurrency,
            max_steps: Some(max_steps),
            max_new_tokens: Some(max_new_tokens),
            ..CoordinatorSettings::default()
        };
        ClusterSpec {
            dir: self.dir.clone(),
            etcd_port: self.etcd_port,
            coordinator_port: self.coordinator_port,
            roles: [
                ("planner", self.planners),
                ("caller", self.callers),
                ("summarizer", self.summarizers),
            ]
            .into_iter()
            .map(|(role, replicas)| RoleSpec {
                role,
                replicas,
                settings: worker.clone(),
            })
            .collect(),
            coordinator,
            metrics: self.metrics,
        }
    }
}
