//! `umi bench cluster`: the load benchmark. For each planner replica count it starts a
//! whole cluster on this machine (etcd, the role workers on the simulated engine, a
//! coordinator), solves T tasks through it as `umi run --coordinator` does, scrapes every
//! process's metrics and reports tasks/s, role-call latency, queue wait, batch size,
//! prefix-cache hits and each planner replica's share of the calls.
//!
//! The simulated engine (`umi_engine::sim`) is a test double: it waits the time its
//! latency profile gives instead of running a model, so the figures say how umi's
//! scheduling, routing and coordination scale, not how fast a model is.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use serde::Serialize;
use serde_json::Value;
use umi_core::dfs::Outcome;
use umi_core::task::Query;

use super::args::engine::EngineKind;
use super::args::remote::RoutingArg;
use super::support::children::{CoordinatorSettings, WorkerSettings};
use super::support::local_cluster::{free_ports, ClusterSpec, LocalCluster, RoleSpec};
use super::support::prometheus::{self, Sample};

#[derive(Args, Debug)]
pub struct ClusterBenchArgs {
    /// Tasks per run.
    #[arg(long, default_value_t = 1000)]
    pub tasks: usize,
    /// Planner replicas, one run each (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    pub planners: Vec<usize>,
    /// Caller and summarizer replicas. They get --other-max-batch and enough replicas
    /// that the planner stays the bottleneck at 8 planner replicas (a newcomer's prefill
    /// holds a whole batch back, so a single caller replica would cap the cluster).
    #[arg(long, default_value_t = 4)]
    pub callers: usize,
    #[arg(long, default_value_t = 2)]
    pub summarizers: usize,
    /// Requests a planner replica decodes together.
    #[arg(long, default_value_t = 8)]
    pub max_batch: usize,
    /// Requests a caller or summarizer replica decodes together.
    #[arg(long, default_value_t = 64)]
    pub other_max_batch: usize,
    /// Tasks the coordinator solves at once.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// How role calls pick a replica.
    #[arg(long, value_enum, default_value = "affinity")]
    pub routing: RoutingArg,
    /// Prefix-cache memory per worker in MiB (an H100 serving a 7B model keeps about
    /// 40 GB of key/value state).
    #[arg(long, default_value_t = 40_000)]
    pub prefix_cache_mb: usize,
    /// The simulated engine's latency profile (default: LLaMA-2-7B bf16 on one H100).
    #[arg(long)]
    pub sim_profile: Option<PathBuf>,
    /// Query files whose queries are copied, with distinct ids and tool descriptions, up
    /// to --tasks (default: the real ToolBench queries under data/).
    #[arg(long)]
    pub queries: Vec<PathBuf>,
    /// Where the runs keep their logs and the report (report.json).
    #[arg(long, default_value = "target/bench-cluster")]
    pub dir: PathBuf,
    /// What serves the roles: `sim` (the simulated engine, a test double) or `model`
    /// (the bundled model on this machine's CPU; keep --tasks small).
    #[arg(long, value_enum, default_value = "sim")]
    pub engine: EngineKind,
    /// With `--engine model`: the weights' precision.
    #[arg(long, default_value = "quantized")]
    pub dtype: String,
    /// The coordinator's agent steps per task (default: the reference's 200).
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// The coordinator's new tokens per role call (default: the reference's 512).
    #[arg(long)]
    pub max_new_tokens: Option<usize>,
}

/// One run's figures.
#[derive(Debug, Serialize)]
struct RunReport {
    engine: String,
    planners: usize,
    routing: String,
    tasks: usize,
    answered: usize,
    gave_up: usize,
    exhausted: usize,
    failed: usize,
    /// Answers marked otherwise than the engine that wrote them (must be 0: on the
    /// simulated engine every answer says `"engine": "sim"`, on a model none does).
    unmarked: usize,
    seconds: f64,
    tasks_per_second: f64,
    /// Tasks/s over (planners × tasks/s with the fewest planners measured).
    scaling_efficiency: Option<f64>,
    /// Tasks/s between the 10th and the 90th percentile of completions: the rate once
    /// the cluster is full, without the fill at the start (every task's first answer
    /// waits a whole task's latency) and the drain at the end.
    steady_tasks_per_second: f64,
    steady_efficiency: Option<f64>,
    /// Role-call latency seen by the coordinator, per role: (p50, p99) seconds.
    role_call_p50_p99: BTreeMap<String, (f64, f64)>,
    /// Planner replicas: mean and p99 queue wait (seconds), mean decode batch size.
    planner_queue_wait_mean: f64,
    planner_queue_wait_p99: f64,
    planner_mean_batch: f64,
    /// Planner prompt tokens served by the prefix cache.
    planner_prefix_hit_rate: f64,
    /// Each planner replica's share of the planner calls.
    planner_shares: Vec<f64>,
}

pub async fn run(a: ClusterBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.tasks > 0 && a.concurrency > 0 && a.planners.iter().all(|&n| n > 0),
        "--tasks, --concurrency and every --planners count must be at least 1"
    );
    let queries = bench_queries(&a)?;
    std::fs::create_dir_all(&a.dir).with_context(|| format!("creating {}", a.dir.display()))?;
    let mut reports: Vec<RunReport> = Vec::new();
    for &planners in &a.planners {
        let report = one_run(&a, planners, &queries).await?;
        eprintln!(
            "planners={planners}: {} tasks in {:.1} s, {:.2} tasks/s",
            report.tasks, report.seconds, report.tasks_per_second
        );
        reports.push(report);
    }
    if let Some(base) = reports.iter().min_by_key(|r| r.planners) {
        let (n, rate, steady) = (
            base.planners as f64,
            base.tasks_per_second,
            base.steady_tasks_per_second,
        );
        for r in &mut reports {
            let scale = n / r.planners as f64;
            r.scaling_efficiency = Some(r.tasks_per_second * scale / rate);
            r.steady_efficiency =
                (steady > 0.0).then(|| r.steady_tasks_per_second * scale / steady);
        }
    }
    let path = a.dir.join("report.json");
    std::fs::write(&path, serde_json::to_string_pretty(&reports)?)
        .with_context(|| format!("writing {}", path.display()))?;
    print_table(&reports);
    eprintln!("report: {}", path.display());
    Ok(())
}

/// The query files' queries, copied up to `--tasks`: copy i of a query gets id `b<i>`,
/// its text with ` (request i)` and its APIs' descriptions with ` [i]`, so no two tasks
/// share a seed or their tool docs (as distinct ToolBench queries do not), while every
/// prompt still starts with α-UMi's shared instructions.
fn bench_queries(a: &ClusterBenchArgs) -> anyhow::Result<Vec<Query>> {
    let files = if a.queries.is_empty() {
        ["G1_query.json", "G2_query.json", "G3_query.json"]
            .iter()
            .map(|f| PathBuf::from("data/toolbench-real/instruction").join(f))
            .collect()
    } else {
        a.queries.clone()
    };
    let mut base: Vec<Value> = Vec::new();
    for f in &files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        let values: Vec<Value> = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a JSON array of queries", f.display()))?;
        base.extend(values);
    }
    anyhow::ensure!(!base.is_empty(), "no queries in {files:?}");
    let copies: Vec<Value> = (0..a.tasks)
        .map(|i| {
            let mut q = base[i % base.len()].clone();
            q["query_id"] = Value::String(format!("b{i}"));
            if let Some(text) = q["query"].as_str() {
                q["query"] = Value::String(format!("{text} (request {i})"));
            }
            if let Some(apis) = q["api_list"].as_array_mut() {
                for api in apis {
                    let d = api["api_description"].as_str().unwrap_or("").to_string();
                    api["api_description"] = Value::String(format!("{d} [{i}]"));
                }
            }
            q
        })
        .collect();
    Ok(umi_core::task::queries_from_json(&copies)?)
}

async fn one_run(
    a: &ClusterBenchArgs,
    planners: usize,
    queries: &[Query],
) -> anyhow::Result<RunReport> {
    let routing = match a.routing {
        RoutingArg::Affinity => "affinity",
        RoutingArg::LeastOutstanding => "least-outstanding",
    };
    let engine_name = match a.engine {
        EngineKind::Sim => umi_core::agent::EngineKind::Sim,
        EngineKind::Model => umi_core::agent::EngineKind::Model,
    }
    .label();
    let dir = a
        .dir
        .join(format!("{engine_name}-planners-{planners}-{routing}"));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    let worker = |batch: usize| WorkerSettings {
        sim: true,
        sim_profile: a.sim_profile.clone(),
        max_batch: batch,
        prefix_cache_mb: a.prefix_cache_mb,
        max_queue: 2 * a.concurrency,
        ..WorkerSettings::default()
    };
    let spec = ClusterSpec {
        dir: dir.clone(),
        etcd_port: free_ports(2)?,
        coordinator_port: free_ports(1)?,
        roles: vec![
            RoleSpec {
                role: "planner",
                replicas: planners,
                settings: worker(a.max_batch),
            },
            RoleSpec {
                role: "caller",
                replicas: a.callers,
                settings: worker(a.other_max_batch),
            },
            RoleSpec {
                role: "summarizer",
                replicas: a.summarizers,
                settings: worker(a.other_max_batch),
            },
        ],
        coordinator: CoordinatorSettings {
            concurrency: a.concurrency,
            max_pending: Some(a.tasks + 1),
            max_steps: a.max_steps,
            max_new_tokens: a.max_new_tokens,
            routing: Some(routing),
        },
        metrics: true,
    };
    let mut cluster = LocalCluster::start(&spec).await?;
    let outcome = async {
        cluster.wait_ready(&spec, Duration::from_secs(60)).await?;
        measure(
            planners,
            routing,
            a.engine == EngineKind::Sim,
            &cluster,
            queries,
        )
        .await
    }
    .await;
    cluster.stop().await;
    outcome
}

async fn measure(
    planners: usize,
    routing: &str,
    sim: bool,
    cluster: &LocalCluster,
    queries: &[Query],
) -> anyhow::Result<RunReport> {
    let todo: Vec<&Query> = queries.iter().collect();
    let mut r = RunReport {
        engine: if sim {
            umi_core::agent::EngineKind::Sim
        } else {
            umi_core::agent::EngineKind::Model
        }
        .label()
        .to_string(),
        planners,
        routing: routing.to_string(),
        tasks: todo.len(),
        answered: 0,
        gave_up: 0,
        exhausted: 0,
        failed: 0,
        unmarked: 0,
        seconds: 0.0,
        tasks_per_second: 0.0,
        scaling_efficiency: None,
        steady_tasks_per_second: 0.0,
        steady_efficiency: None,
        role_call_p50_p99: BTreeMap::new(),
        planner_queue_wait_mean: 0.0,
        planner_queue_wait_p99: 0.0,
        planner_mean_batch: 0.0,
        planner_prefix_hit_rate: 0.0,
        planner_shares: vec![],
    };
    let started = Instant::now();
    let mut ends: Vec<f64> = Vec::with_capacity(todo.len());
    super::submit::solve_all(&cluster.coordinator_at, &todo, &mut |_, f| {
        ends.push(started.elapsed().as_secs_f64());
        match (&f.failure, f.outcome) {
            (Some(_), _) => r.failed += 1,
            (None, Outcome::Answered) => r.answered += 1,
            (None, Outcome::GaveUp) => r.gave_up += 1,
            (None, Outcome::Exhausted) => r.exhausted += 1,
        }
        let marked = f.answer.get("engine").and_then(Value::as_str)
            == Some(umi_core::agent::EngineKind::Sim.label());
        if sim && !marked || !sim && marked {
            r.unmarked += 1;
        }
        Ok(())
    })
    .await?;
    r.seconds = started.elapsed().as_secs_f64();
    r.tasks_per_second = r.tasks as f64 / r.seconds;
    let (first, last) = (ends.len() / 10, ends.len() * 9 / 10);
    if last > first && ends[last - 1] > ends[first] {
        r.steady_tasks_per_second = (last - 1 - first) as f64 / (ends[last - 1] - ends[first]);
    }

    let coordinator = scrape(cluster.coordinator.metrics).await?;
    for role in ["planner", "caller", "summarizer"] {
        let with = [("role", role)];
        let name = umi_rpc::metrics::ROLE_CALL_DURATION;
        if let (Some(p50), Some(p99)) = (
            prometheus::quantile(&coordinator, name, &with, 0.5),
            prometheus::quantile(&coordinator, name, &with, 0.99),
        ) {
            r.role_call_p50_p99.insert(role.to_string(), (p50, p99));
        }
    }
    let mut planner_scrapes: Vec<Vec<Sample>> = Vec::new();
    for w in cluster
        .workers
        .iter()
        .filter(|w| w.name.starts_with("planner-"))
    {
        planner_scrapes.push(scrape(w.metrics).await?);
    }
    let all: Vec<Sample> = planner_scrapes.iter().flatten().cloned().collect();
    use umi_engine::metrics as m;
    r.planner_queue_wait_mean = prometheus::mean(&all, m::QUEUE_WAIT, &[]).unwrap_or(0.0);
    r.planner_queue_wait_p99 = prometheus::quantile(&all, m::QUEUE_WAIT, &[], 0.99).unwrap_or(0.0);
    r.planner_mean_batch = prometheus::mean(&all, m::BATCH_SIZE, &[]).unwrap_or(0.0);
    let queried = prometheus::sum(&all, m::PREFIX_CACHE_QUERIES, &[]);
    if queried > 0.0 {
        r.planner_prefix_hit_rate = prometheus::sum(&all, m::PREFIX_CACHE_HITS, &[]) / queried;
    }
    let served: Vec<f64> = planner_scrapes
        .iter()
        .map(|s| prometheus::sum(s, m::REQUESTS_FINISHED, &[]))
        .collect();
    let total: f64 = served.iter().sum();
    r.planner_shares = served.iter().map(|n| n / total.max(1.0)).collect();
    Ok(r)
}

async fn scrape(addr: Option<std::net::SocketAddr>) -> anyhow::Result<Vec<Sample>> {
    prometheus::scrape(addr.context("a process without a metrics endpoint")?).await
}

fn print_table(reports: &[RunReport]) {
    println!(
        "| engine | planners | routing | tasks | answered / gave up / exhausted / failed | s | tasks/s | efficiency | steady tasks/s | steady efficiency | planner call p50 / p99 s | queue wait mean / p99 s | mean batch | prefix hits | planner shares |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in reports {
        let (p50, p99) = r
            .role_call_p50_p99
            .get("planner")
            .copied()
            .unwrap_or_default();
        let shares: Vec<String> = r
            .planner_shares
            .iter()
            .map(|s| format!("{:.0}%", s * 100.0))
            .collect();
        println!(
            "| {} | {} | {} | {} | {} / {} / {} / {} | {:.1} | {:.2} | {} | {:.2} | {} | {:.2} / {:.2} | {:.2} / {:.2} | {:.1} | {:.0}% | {} |",
            r.engine,
            r.planners,
            r.routing,
            r.tasks,
            r.answered,
            r.gave_up,
            r.exhausted,
            r.failed,
            r.seconds,
            r.tasks_per_second,
            r.scaling_efficiency.map_or("-".to_string(), |e| format!("{e:.2}")),
            r.steady_tasks_per_second,
            r.steady_efficiency.map_or("-".to_string(), |e| format!("{e:.2}")),
            p50,
            p99,
            r.planner_queue_wait_mean,
            r.planner_queue_wait_p99,
            r.planner_mean_batch,
            r.planner_prefix_hit_rate * 100.0,
            shares.join(" "),
        );
    }
}
