//! `umi run`: the main job. Solves each query of a ToolBench query file with α-UMi roles
//! and DFSDT, writes one ToolBench answer file per query (atomically), resumes by skipping
//! queries whose answer file exists, and prints a summary.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use futures::StreamExt;
use serde::Serialize;
use serde_json::Value;
use tracing::Instrument;
use umi_core::agent::{BoxFuture, Generated, RoleKind, RoleModels, RoleRequest};
use umi_core::answer::answer_json;
use umi_core::dfs::{Outcome, Search, SearchConfig};
use umi_core::env::{ToolBackend, ToolEnv};
use umi_core::prompt::RolePrompts;
use umi_core::tool::ApiSpec;
use umi_tools::rapidapi::RapidApi;
use umi_tools::router::Router;
use umi_tools::simulator::Simulator;
use umi_worker::client::RemoteRoles;

use super::output::write_json_atomically;
use super::progress::Progress;
use super::roles::{Defaults, RoleArgs, RoleEngines};

/// Budgets for the bundled 135M demo model, which rarely emits EOS: with the reference's
/// (512 tokens, 200 steps) the demo would run for hours.
const DEMO_MAX_NEW_TOKENS: usize = 128;
const DEMO_MAX_STEPS: usize = 12;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Tools {
    /// Recorded responses (offline), plus the local tools.
    Simulator,
    /// ToolBench's RapidAPI service (needs --toolbench-key), plus the local tools.
    Rapidapi,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// A ToolBench query file (`test_instructions` schema).
    #[arg(long, default_value = "data/queries/demo.json")]
    pub queries: PathBuf,
    /// Directory for the answer files (default: runs/<query file stem>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "simulator")]
    pub tools: Tools,
    /// Recorded responses for the simulator: ToolBench answer files or directories of
    /// them, or static trajectory files (repeatable). Default: the ToolBench answers and
    /// the static set under data/.
    #[arg(long)]
    pub record: Vec<PathBuf>,
    #[arg(long, default_value = "http://8.130.32.149:8080/rapidapi")]
    pub rapidapi_url: String,
    #[arg(long, env = "TOOLBENCH_KEY")]
    pub toolbench_key: Option<String>,
    /// Children tried per search node: 2 = DFS_woFilter_w2, 1 = a single chain (CoT).
    #[arg(long, default_value_t = 2)]
    pub width: usize,
    /// Agent steps (model calls of the planner) per query before giving up on it.
    /// Default: 200 (the reference), or 12 with the bundled demo model.
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Role workers (`umi worker`) to use instead of in-process models, e.g.
    /// http://127.0.0.1:50051; all three or none.
    #[arg(long)]
    pub planner_endpoint: Option<String>,
    #[arg(long)]
    pub caller_endpoint: Option<String>,
    #[arg(long)]
    pub summarizer_endpoint: Option<String>,
    /// Queries solved at once.
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    #[command(flatten)]
    pub role_args: RoleArgs,
}

#[derive(Debug)]
struct Query {
    id: String,
    text: String,
    apis: Vec<ApiSpec>,
}

/// Reads a query file, naming the query and field at fault.
fn read_queries(path: &Path) -> anyhow::Result<Vec<Query>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let values: Vec<Value> = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: not a JSON array of queries: {e}", path.display()))?;
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let id = match v.get("query_id") {
                Some(Value::Number(n)) => n.to_string(),
                Some(Value::String(s)) => s.clone(),
                _ => bail!("{}: query {i} has no \"query_id\"", path.display()),
            };
            let text = v
                .get("query")
                .and_then(Value::as_str)
                .ok_or_else(|| anyhow::anyhow!("{}: query {id} has no \"query\" text", path.display()))?
                .to_string();
            let list = v
                .get("api_list")
                .and_then(Value::as_array)
                .ok_or_else(|| anyhow::anyhow!("{}: query {id} has no \"api_list\" (retrieval of tools is not supported)", path.display()))?;
            let apis = list
                .iter()
                .map(|api| {
                    if api.get("required_parameters").is_none() {
                        let tool = api.get("tool_name").and_then(Value::as_str).unwrap_or("?");
                        let name = api.get("api_name").and_then(Value::as_str).unwrap_or("?");
                        bail!(
                            "{}: query {id}: API {name:?} of tool {tool:?} has no documentation in the query file (ToolBench's tool folder is not supported)",
                            path.display()
                        );
                    }
                    serde_json::from_value::<ApiSpec>(api.clone())
                        .map_err(|e| anyhow::anyhow!("{}: query {id}: bad api_list entry: {e}", path.display()))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            Ok(Query { id, text, apis })
        })
        .collect()
}

/// Role calls on in-process engines, each in a `role_call` span.
struct EngineRoles {
    engines: RoleEngines,
    prompts: RolePrompts,
    calls: AtomicU64,
}

impl RoleModels for EngineRoles {
    fn generate<'a>(&'a self, request: RoleRequest) -> BoxFuture<'a, Result<Generated, String>> {
        Box::pin(async move {
            let role = request.role;
            let prompt = request.render(&self.prompts);
            let engine = match role {
                RoleKind::Planner => &self.engines.planner,
                RoleKind::Caller => &self.engines.caller,
                RoleKind::Summarizer => &self.engines.summarizer,
            };
            let n = self.calls.fetch_add(1, Ordering::Relaxed);
            let span = tracing::info_span!("role_call", role = role.as_str());
            let out = self
                .engines
                .call(engine, &prompt, n)
                .instrument(span)
                .await
                .map_err(|e| format!("{} call failed: {e:#}", role.as_str()))?;
            Ok(Generated {
                generated_tokens: out.generated_tokens(),
                prompt_tokens: out.prompt_tokens,
                text: out.text,
            })
        })
    }
}

#[derive(Default, Serialize)]
struct Summary {
    queries: usize,
    skipped_done: usize,
    solved: usize,
    gave_up: usize,
    failed: usize,
    steps: usize,
    tokens: usize,
    seconds: f64,
}

fn load_simulator(paths: &[PathBuf]) -> anyhow::Result<Simulator> {
    let mut sim = Simulator::new();
    for path in paths {
        let files: Vec<PathBuf> = if path.is_dir() {
            let mut v: Vec<PathBuf> = walk_json(path)?;
            v.sort();
            v
        } else {
            vec![path.clone()]
        };
        for file in files {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let value: Value = serde_json::from_str(&text)
                .with_context(|| format!("{}: not JSON", file.display()))?;
            if value.is_array() {
                let records = umi_core::static_eval::parse_records(&text)
                    .with_context(|| format!("{}", file.display()))?;
                sim.add_static_records(&records);
            } else {
                sim.add_answer_file(&value);
            }
        }
    }
    Ok(sim)
}

fn walk_json(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            out.extend(walk_json(&path)?);
        } else if path.extension().is_some_and(|e| e == "json") {
            out.push(path);
        }
    }
    Ok(out)
}

pub async fn run(a: RunArgs) -> anyhow::Result<()> {
    if a.width == 0 || a.concurrency == 0 {
        bail!("--width and --concurrency must be at least 1");
    }
    let queries = read_queries(&a.queries)?;
    let method = if a.width == 1 {
        "CoT@1".to_string()
    } else {
        format!("DFS_woFilter_w{}", a.width)
    };
    let out_dir = a.out.clone().unwrap_or_else(|| {
        PathBuf::from("runs").join(
            a.queries
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
        )
    });
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    // The bundled demo model runs in process: no --model and no remote workers.
    let remote = a.planner_endpoint.is_some()
        || a.caller_endpoint.is_some()
        || a.summarizer_endpoint.is_some();
    let demo = a.role_args.model.model.is_none() && !remote;
    let config = SearchConfig {
        tree_beam_size: a.width,
        max_query_count: a
            .max_steps
            .unwrap_or(if demo { DEMO_MAX_STEPS } else { 200 }),
        ..SearchConfig::default()
    };
    let fallback: Box<dyn ToolBackend> = match a.tools {
        Tools::Simulator => {
            let paths = if a.record.is_empty() {
                vec![
                    PathBuf::from("data/toolbench-real/answer"),
                    PathBuf::from("data/toolbench-static/out_of_domain.json"),
                ]
                .into_iter()
                .filter(|p| p.exists())
                .collect()
            } else {
                a.record.clone()
            };
            let sim = load_simulator(&paths)?;
            tracing::info!(responses = sim.len(), "simulator loaded");
            Box::new(sim)
        }
        Tools::Rapidapi => {
            let key = a
                .toolbench_key
                .clone()
                .context("--tools rapidapi needs --toolbench-key (or $TOOLBENCH_KEY)")?;
            Box::new(RapidApi::new(a.rapidapi_url.clone(), key))
        }
    };
    let backend = Router::new(fallback);
    // The real-time pipeline: temperature 0.5 sampling, no top-p, 512 new tokens, the
    // last 3576 prompt tokens, EOS ignored at the first step.
    let defaults = Defaults {
        temperature: 0.5,
        top_p: None,
        max_input_tokens: 3576,
        max_new_tokens: if demo { DEMO_MAX_NEW_TOKENS } else { 512 },
        min_new_tokens: 1,
    };
    let roles: Box<dyn RoleModels> = match (&a.planner_endpoint, &a.caller_endpoint, &a.summarizer_endpoint) {
        (None, None, None) => Box::new(EngineRoles {
            engines: a.role_args.start(defaults)?,
            prompts: RolePrompts::toolbench(),
            calls: AtomicU64::new(0),
        }),
        (Some(p), Some(c), Some(s)) => {
            let (request, max_input_tokens) = a.role_args.request(&defaults);
            let sampling = umi_worker::pb::Sampling {
                temperature: request.sampling.temperature,
                top_p: request.sampling.top_p,
                top_k: request.sampling.top_k.map(|k| k as u32),
                seed: request.sampling.seed,
                max_new_tokens: request.max_new_tokens as u32,
                min_new_tokens: request.min_new_tokens as u32,
                max_input_tokens: max_input_tokens as u32,
            };
            Box::new(RemoteRoles::new(p, c, s, sampling).map_err(anyhow::Error::msg)?)
        }
        _ => bail!("give all three of --planner-endpoint, --caller-endpoint and --summarizer-endpoint, or none"),
    };

    let answer_path = |q: &Query| out_dir.join(format!("{}_{}.json", q.id, method));
    let todo: Vec<&Query> = queries
        .iter()
        .filter(|q| !is_done(&answer_path(q)))
        .collect();
    let mut summary = Summary {
        queries: queries.len(),
        skipped_done: queries.len() - todo.len(),
        ..Summary::default()
    };
    if summary.skipped_done > 0 {
        eprintln!(
            "{} of {} queries already answered in {}: skipping them",
            summary.skipped_done,
            queries.len(),
            out_dir.display()
        );
    }
    let start = Instant::now();
    let mut progress = Progress::new("queries", todo.len());
    let mut results = futures::stream::iter(todo.into_iter().map(|q| {
        let (roles, backend, config, method) = (roles.as_ref(), &backend, config.clone(), method.clone());
        let path = answer_path(q);
        async move {
            let span = tracing::info_span!("task", task_id = %q.id, steps = tracing::field::Empty, outcome = tracing::field::Empty);
            let env = ToolEnv::new(q.apis.clone(), backend);
            let mut search = Search::new(&q.text, config);
            search.run(roles, &env).instrument(span.clone()).await;
            span.record("steps", search.query_count);
            span.record("outcome", tracing::field::debug(search.outcome()));
            let mut answer = answer_json(&search, env.functions(), &method);
            if let Some(reason) = &search.failure {
                answer["failure"] = Value::String(reason.clone());
            }
            let written = write_json_atomically(&path, &answer);
            (q, search.outcome(), search.failure.clone(), search.query_count, search.total_tokens, written)
        }
    }))
    .buffer_unordered(a.concurrency);
    while let Some((q, outcome, failure, steps, tokens, written)) = results.next().await {
        written.with_context(|| format!("writing the answer of query {}", q.id))?;
        summary.steps += steps;
        summary.tokens += tokens;
        match (outcome, failure) {
            (_, Some(reason)) => {
                summary.failed += 1;
                tracing::warn!(query = %q.id, %reason, "query failed");
            }
            (Outcome::Answered, None) => summary.solved += 1,
            (Outcome::GaveUp, None) => summary.gave_up += 1,
            (Outcome::Exhausted, None) => summary.failed += 1,
        }
        progress.message(format!(
            "solved {} gave up {} failed {}",
            summary.solved, summary.gave_up, summary.failed
        ));
        progress.tick();
    }
    progress.finish();
    summary.seconds = start.elapsed().as_secs_f64();
    write_json_atomically(&out_dir.join("summary.json"), &summary)?;
    println!(
        "{} queries ({} already done): solved {}, gave up {}, failed {}; {} agent steps, {} tokens, {:.1} s -> {}",
        summary.queries,
        summary.skipped_done,
        summary.solved,
        summary.gave_up,
        summary.failed,
        summary.steps,
        summary.tokens,
        summary.seconds,
        out_dir.display()
    );
    Ok(())
}

/// An answer file that exists and parses is finished work.
fn is_done(path: &Path) -> bool {
    std::fs::read(path)
        .ok()
        .is_some_and(|b| serde_json::from_slice::<Value>(&b).is_ok())
}
