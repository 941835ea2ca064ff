//! `umi bench role`: throughput of one role's replicas behind the coordinator's client
//! (`ClusterRoles`: task-affinity choice (the default routing)), under concurrent load.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use futures::StreamExt;
use serde_json::Value;
use umi_core::agent::{RoleKind, RoleModels, RoleRequest};
use umi_core::presets::Sampling;
use umi_core::prompt::HistoryTurn;
use umi_core::task::Query;
use umi_discovery::membership::Membership;
use umi_discovery::WorkerInfo;
use umi_rpc::cluster::{ClusterRoles, RetryPolicy};

use super::args::etcd::EtcdArgs;
use super::args::roles::role_kind;
use super::args::security::ClientTlsArgs;

#[derive(Args, Debug)]
pub struct RoleBenchArgs {
    #[arg(long, value_parser = role_kind(), default_value = "planner")]
    pub role: RoleKind,
    /// A replica's address (repeat for more), e.g. http://127.0.0.1:50051.
    #[arg(long, required_unless_present = "etcd")]
    pub endpoint: Vec<String>,
    /// Or find the replicas in etcd.
    #[command(flatten)]
    pub etcd: EtcdArgs,
    /// How to reach https:// replicas.
    #[command(flatten)]
    pub tls: ClientTlsArgs,
    /// The bearer token presented to the replicas (a file holding one token).
    #[arg(long, env = "UMI_WORKER_TOKEN_FILE")]
    pub worker_token_file: Option<std::path::PathBuf>,
    /// Calls made in all.
    #[arg(long, default_value_t = 64)]
    pub requests: usize,
    /// Calls in flight at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// New tokens per call (EOS is ignored, so every call makes this many).
    #[arg(long, default_value_t = 32)]
    pub max_new_tokens: u32,
    /// The query file whose first query's tools and text make the prompts.
    #[arg(long, default_value = "data/queries/demo.json")]
    pub queries: std::path::PathBuf,
}

pub async fn run(a: RoleBenchArgs) -> anyhow::Result<()> {
    let role = a.role;
    let text = std::fs::read_to_string(&a.queries)
        .with_context(|| format!("reading {}", a.queries.display()))?;
    let values: Vec<Value> = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a JSON array of queries", a.queries.display()))?;
    let first = values
        .first()
        .with_context(|| format!("{}: no queries", a.queries.display()))?;
    let query = Query::from_json(0, first).with_context(|| format!("{}", a.queries.display()))?;
    let tools: Vec<_> = query.apis.iter().map(|api| api.doc()).collect();

    let membership = if !a.etcd.is_set() {
        Membership::fixed(
            a.endpoint
                .iter()
                .map(|address| WorkerInfo::at(role.as_str(), address)),
        )
    } else {
        Membership::etcd(&a.etcd.target()?, &a.etcd.etcd_prefix).await?
    };
    let replicas = membership.workers(role.as_str()).len();
    // Greedy, the whole prompt, and exactly max_new_tokens new tokens per call.
    let sampling = Sampling {
        temperature: 0.0,
        top_p: None,
        top_k: None,
        seed: 0,
        max_input_tokens: 0,
        max_new_tokens: a.max_new_tokens as usize,
        min_new_tokens: a.max_new_tokens as usize,
    };
    let security = a.tls.security(a.worker_token_file.as_deref())?;
    let roles = ClusterRoles::new(membership, security, sampling, RetryPolicy::default());
    let request = |i: usize| RoleRequest {
        task_id: format!("bench-{i}"),
        ..RoleRequest::alpha_umi(
            role,
            tools.clone(),
            // Distinct queries, as concurrent tasks have: only the tool docs are shared.
            vec![HistoryTurn::new(
                "user",
                &format!("{} (request {i})", query.text),
            )],
            (role == RoleKind::Caller).then(|| "Call the first tool.".to_string()),
        )
    };
    // One warm-up call per replica, so model loading and first connections are not timed.
    for i in 0..replicas {
        roles
            .generate(request(usize::MAX - i))
            .await
            .map_err(anyhow::Error::msg)?;
    }
    let started = Instant::now();
    let mut latencies: Vec<Duration> = Vec::with_capacity(a.requests);
    let mut tokens = 0usize;
    let mut calls = futures::stream::iter((0..a.requests).map(|i| {
        let (roles, req) = (&roles, request(i));
        async move {
            let t = Instant::now();
            roles
                .generate(req)
                .await
                .map(|g| (t.elapsed(), g.generated_tokens))
        }
    }))
    .buffer_unordered(a.concurrency.max(1));
    while let Some(result) = calls.next().await {
        let (latency, generated) = result.map_err(anyhow::Error::msg)?;
        latencies.push(latency);
        tokens += generated;
    }
    let secs = started.elapsed().as_secs_f64();
    latencies.sort();
    let p = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize].as_secs_f64();
    println!(
        "{} role, {replicas} replica(s), {} calls, concurrency {}: {:.2} calls/s, {:.1} generated tok/s, latency p50 {:.2} s p90 {:.2} s",
        role.as_str(),
        a.requests,
        a.concurrency,
        a.requests as f64 / secs,
        tokens as f64 / secs,
        p(0.5),
        p(0.9)
    );
    Ok(())
}
