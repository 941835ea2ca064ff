//! `umi coordinator`: solve submitted ToolBench tasks with DFSDT over role workers found
//! in etcd (or at fixed addresses), serving `umi.v1.Coordinator`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Args;
use umi_coordinator::service::{serve, CoordinatorService, Settings};
use umi_coordinator::tasks::TaskSettings;
use umi_core::agents::AgentKind;
use umi_core::dfs::SearchConfig;
use umi_core::presets::{realtime_for, REFERENCE_MAX_STEPS};
use umi_rpc::serve::Shutdown;

use super::args::metrics::MetricsArgs;
use super::args::remote::RemoteArgs;
use super::args::roles::SamplingArgs;
use super::args::security::{describe, ServerSecurityArgs};
use super::args::tools::ToolArgs;

#[derive(Args, Debug)]
pub struct CoordinatorArgs {
    /// Address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:50050")]
    pub listen: SocketAddr,
    /// Who may call this coordinator: TLS and bearer tokens (required off loopback).
    /// Each token's holder owns the tasks it submits: others can neither see, fetch nor
    /// cancel them.
    #[command(flatten)]
    pub security: ServerSecurityArgs,
    /// Serve beyond loopback without --auth-token-file (so with --insecure-network):
    /// every client is the same anonymous caller and shares one task namespace, seeing,
    /// fetching and cancelling everyone's tasks. Refused without this flag.
    #[arg(long)]
    pub anonymous: bool,
    #[command(flatten)]
    pub remote: RemoteArgs,
    #[command(flatten)]
    pub tools: ToolArgs,
    /// Children tried per search node: 2 = DFS_woFilter_w2, 1 = a single chain (CoT).
    #[arg(long, default_value_t = 2)]
    pub width: usize,
    /// The agent: `alpha-umi`, or `toolllama` (one model, ToolBench's ReAct prompt,
    /// played by the planner's workers). (`openai-functions` runs with `umi run
    /// --planner-endpoint openai+http://…`.)
    #[arg(long, value_parser = coordinator_agent, default_value = "alpha-umi")]
    pub agent: AgentKind,
    /// Agent steps (planner calls) per task before giving up on it.
    #[arg(long, default_value_t = REFERENCE_MAX_STEPS)]
    pub max_steps: usize,
    /// Tasks solved at once; the others wait in the queue.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Unfinished (queued or running) tasks at most: a submission past it is refused as
    /// RESOURCE_EXHAUSTED (`umi run --coordinator` waits and submits the rest as tasks
    /// end) instead of queueing without bound.
    #[arg(long, default_value_t = 4096)]
    pub max_pending: usize,
    /// Unfinished tasks one caller (one token holder) may have at most, so no holder
    /// fills the whole --max-pending; past it a submission is refused as
    /// RESOURCE_EXHAUSTED, which `umi run --coordinator` waits out the same way.
    #[arg(long, default_value_t = 4096)]
    pub max_pending_per_caller: usize,
    /// Ended tasks kept at most (each with its query and answer) within --retention:
    /// past it the oldest are forgotten, those whose answers were fetched first, and a
    /// Fetch of one finds nothing, as after the retention.
    #[arg(long, default_value_t = 10_000)]
    pub max_ended: usize,
    /// Seconds an ended task's answer is kept for clients to fetch.
    #[arg(long, default_value_t = 3600)]
    pub retention: u64,
    /// A file journaling every task and answer, so that a coordinator restarted on it
    /// keeps the answers and runs again the tasks it had not finished. Without it, a
    /// restart forgets all tasks.
    #[arg(long, env = "UMI_TASK_JOURNAL")]
    pub task_journal: Option<PathBuf>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub metrics: MetricsArgs,
}

pub async fn run(a: CoordinatorArgs) -> anyhow::Result<()> {
    if a.width == 0
        || a.concurrency == 0
        || a.max_steps == 0
        || a.max_pending == 0
        || a.max_pending_per_caller == 0
        || a.max_ended == 0
    {
        bail!("--width, --max-steps, --concurrency, --max-pending, --max-pending-per-caller and --max-ended must be at least 1");
    }
    a.metrics.install(a.security.insecure_network)?;
    let security = a.security.security(a.listen)?;
    check_ownership(a.listen, security.has_tokens(), a.anonymous)?;
    if a.tools.save_cache {
        eprintln!(
            "umi coordinator: --save-cache: every reply --simulate-with invents or the real API gives is saved in the response cache and answered to every client, whoever's task asked for it"
        );
    }
    let planner_only = a.agent != AgentKind::AlphaUmi;
    let roles = a
        .remote
        .roles(a.sampling.over(realtime_for(a.agent, false)), planner_only)
        .await?
        .context("the coordinator needs role workers: give --etcd, or the --*-endpoint flags (all three; the planner's alone with --agent toolllama)")?;
    let membership = roles.membership().clone();
    let settings = Settings {
        tasks: TaskSettings {
            roles: Arc::new(roles),
            backend: Arc::new(a.tools.backend()?),
            search: SearchConfig {
                tree_beam_size: a.width,
                max_query_count: a.max_steps,
                seed: a.sampling.seed,
                agent: a.agent,
                ..SearchConfig::default()
            },
            concurrency: a.concurrency,
            retention: std::time::Duration::from_secs(a.retention),
            max_pending: a.max_pending,
            max_pending_per_caller: a.max_pending_per_caller,
            max_ended: a.max_ended,
        },
        membership,
        journal: a.task_journal.clone(),
    };
    let service = CoordinatorService::new(settings)?;
    if let Some(path) = &a.task_journal {
        let r = service.recovered();
        eprintln!(
            "umi coordinator: task journal {}: {} ended tasks kept, {} to run again",
            path.display(),
            r.kept,
            r.rerun
        );
        if r.failed_for_crashes > 0 {
            eprintln!(
                "umi coordinator: {} of them failed: the coordinator went down too often while they ran",
                r.failed_for_crashes
            );
        }
        // From now on a panic that takes the process down is recorded with the tasks it
        // hit, so the next start blames only those.
        umi_coordinator::journal::record_panics(path.clone());
    }
    let listener = tokio::net::TcpListener::bind(a.listen)
        .await
        .with_context(|| format!("listening on {}", a.listen))?;
    let addr = listener.local_addr()?;
    eprintln!(
        "umi coordinator: listening on {}://{addr} ({})",
        security.scheme(),
        describe(&security)
    );
    serve(
        listener,
        service,
        &security,
        Shutdown::on(super::support::shutdown::signal()),
    )
    .await
    .with_context(|| format!("serving on {addr}"))?;
    eprintln!("umi coordinator: stopped");
    Ok(())
}

/// Task ownership comes from tokens: without them every caller is the same one. On
/// loopback that is this machine's users; beyond it, anyone who reaches the port, so
/// it takes an explicit --anonymous.
fn check_ownership(listen: SocketAddr, has_tokens: bool, anonymous: bool) -> anyhow::Result<()> {
    if has_tokens && anonymous {
        bail!("--anonymous and --auth-token-file contradict each other: tokens give each holder its own tasks");
    }
    if !has_tokens && !anonymous && !listen.ip().is_loopback() {
        bail!(
            "--listen {listen} without --auth-token-file would let every client see, fetch and cancel every task: \
             give --auth-token-file (each token's holder owns its tasks), or --anonymous if all clients may share one task namespace"
        );
    }
    if anonymous {
        eprintln!("umi coordinator: --anonymous: every client shares one task namespace");
    }
    Ok(())
}

/// `--agent`'s values on a coordinator, whose roles are umi workers.
fn coordinator_agent(name: &str) -> Result<AgentKind, String> {
    match AgentKind::parse(name) {
        Some(AgentKind::OpenAiFunctions) => Err("openai-functions calls an OpenAI-compatible endpoint, not umi workers: run it with umi run --agent openai-functions --planner-endpoint openai+http://HOST:PORT/v1".into()),
        Some(agent) => Ok(agent),
        None => Err(format!("{name:?} is not an agent (alpha-umi, toolllama)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beyond_loopback_tasks_have_owners_unless_the_operator_says_anonymous() {
        let far: SocketAddr = "0.0.0.0:50050".parse().unwrap();
        let near: SocketAddr = "127.0.0.1:50050".parse().unwrap();
        let e = check_ownership(far, false, false).unwrap_err().to_string();
        assert!(
            e.contains("--auth-token-file") && e.contains("--anonymous"),
            "{e}"
        );
        assert!(check_ownership(far, false, true).is_ok());
        assert!(check_ownership(far, true, false).is_ok());
        assert!(check_ownership(near, false, false).is_ok());
        assert!(check_ownership(near, true, true).is_err());
    }
}
