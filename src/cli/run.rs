//! `umi run`: the main job. Solves each query of a ToolBench query file with α-UMi roles
//! and DFSDT, writes one ToolBench answer file per query (atomically), resumes by skipping
//! queries whose answer file exists, and prints a summary.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use futures::StreamExt;
use serde::Serialize;
use serde_json::Value;
use umi_core::agent::RoleModels;
use umi_core::agents::AgentKind;
use umi_core::constraint::ConstrainCaller;
use umi_core::dfs::{Outcome, SearchConfig};
use umi_core::env::ToolBackend;
use umi_core::presets::{self, Sampling};
use umi_core::task::{method_name, solve, Query, Solved};
use umi_core::trace::{TaskTrace, TraceLine};
use umi_roles::{ByRole, RoleSource, RolesSpec};

use super::args::engine::EngineArgs;
use super::args::model::runs_demo_model;
use super::args::remote::RemoteArgs;
use super::args::roles::{Answerers, ConstrainRole, RoleArgs};
use super::args::tools::ToolArgs;
use super::support::call_log::CallLog;
use super::support::output::{json_files_in, write_json_atomically};
use super::support::progress::Progress;
use super::support::run_manifest;
use super::support::trace_file::TraceFile;

/// Which converters the answer files are written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AnswerFormat {
    AlphaUmi,
    Toolbench,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// A ToolBench query file (`test_instructions` schema), or a directory of ToolBench
    /// answer files whose queries are run again (their APIs rebuilt from each file's
    /// function list; ids from the file names).
    /// Default: the demo queries built into umi (data/queries/demo.json).
    #[arg(long)]
    pub queries: Option<PathBuf>,
    /// What answers the roles.
    #[arg(long, value_parser = Answerers::run_values(), default_value = "models")]
    pub roles: Answerers,
    /// The agent: `alpha-umi` (planner, caller, summarizer), or the reference runner's
    /// single-model backbones, played by the planner's model: `toolllama` (ToolBench's
    /// ToolLLaMA prompt and ReAct parser) or `openai-functions` (an OpenAI-compatible
    /// chat with function calling, as `chatgpt_function`; needs --planner-endpoint
    /// openai+http://HOST:PORT/v1). The latter two write upstream ToolBench's answer files.
    #[arg(long, value_parser = agent_kind, default_value = "alpha-umi")]
    pub agent: AgentKind,
    /// The answer files' message roles: `alpha-umi` as α-UMi's real-time code writes
    /// them (read by its ToolEval converter), or `toolbench` for upstream ToolBench's and
    /// StableToolBench's converters (a system message first, observations as
    /// `function` messages). Default: the agent's (`toolbench` for toolllama and
    /// openai-functions, whose messages are ToolBench's).
    #[arg(long, value_enum)]
    pub answer_format: Option<AnswerFormat>,
    /// Node depth at which a chain ends (`single_chain_max_step`; each agent step adds 3
    /// nodes). Default: 12, the reference's; with --roles replay, deep enough for the
    /// longest recorded chain.
    #[arg(long)]
    pub max_depth: Option<usize>,
    /// Directory for the answer files (default: runs/<query file stem>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Submit the queries to a coordinator (`umi coordinator`) at this address, e.g.
    /// http://127.0.0.1:50050, instead of solving them here; the search, tools and
    /// sampling are the coordinator's.
    #[arg(long)]
    pub coordinator: Option<String>,
    /// Seconds the coordinator may stay unreachable (not started yet, restarting on its
    /// journal, a network cut) before the run gives up on it; meanwhile it reconnects and
    /// resubmits its open tasks.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = umi_rpc::coordinator_client::DEFAULT_PATIENCE.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..),
        requires = "coordinator"
    )]
    pub coordinator_patience: u64,
    /// The bearer token presented to the coordinator (a file holding one token); an
    /// https:// coordinator also needs --tls-ca.
    #[arg(long, env = "UMI_COORDINATOR_TOKEN_FILE")]
    pub auth_token_file: Option<PathBuf>,
    #[command(flatten)]
    pub tools: ToolArgs,
    /// Children tried per search node: 2 = DFS_woFilter_w2, 1 = a single chain (CoT).
    #[arg(long, default_value_t = 2)]
    pub width: usize,
    /// Agent steps (model calls of the planner) per query before giving up on it.
    /// Default: 200 (the reference), or 12 with the bundled demo model.
    #[arg(long)]
    pub max_steps: Option<usize>,
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// Queries solved at once; their role calls share the engine's batches. Default: what
    /// the roles can batch (--max-batch, which is also a worker's default). The answers
    /// do not depend on it: every call is seeded by its task and its place in the task.
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Appends each role call made here to FILE, one JSON line per call: its rendered
    /// prompt (before the engine's truncation) and its prompt, cached and generated token
    /// counts. For making the same calls elsewhere (`scripts/bench_seed.sh realtime`).
    #[arg(long, value_name = "FILE")]
    pub log_calls: Option<PathBuf>,
    #[command(flatten)]
    pub role_args: RoleArgs,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Add to an --out whose answers were made with other inputs (its manifest.json
    /// differs from this run's); without it such a run is refused, naming the differences.
    #[arg(long)]
    pub force: bool,
}

/// `--agent`'s values.
fn agent_kind(name: &str) -> Result<AgentKind, String> {
    AgentKind::parse(name).ok_or_else(|| {
        let known: Vec<&str> = AgentKind::ALL.iter().map(|a| a.as_str()).collect();
        format!("{name:?} is not an agent (known: {})", known.join(", "))
    })
}

/// The demo queries, built in so that `umi run` works from any directory.
pub const DEMO_QUERIES: &str = include_str!("../../data/queries/demo.json");

/// Reads a query file, or the queries of a directory of answer files, naming the file,
/// the query and the field at fault; no path: the built-in demo queries.
fn read_queries(path: Option<&Path>) -> anyhow::Result<Vec<Query>> {
    let Some(path) = path else {
        let values: Vec<Value> =
            serde_json::from_str(DEMO_QUERIES).context("the built-in demo queries")?;
        return umi_core::task::queries_from_json(&values).context("the built-in demo queries");
    };
    if path.is_dir() {
        return read_answer_queries(path);
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let values: Vec<Value> = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: not a JSON array of queries: {e}", path.display()))?;
    umi_core::task::queries_from_json(&values).with_context(|| format!("{}", path.display()))
}

/// The queries of the ToolBench answer files in `dir` (`<id>_<method>.json`, the id
/// read as ToolEval's converter reads it: the name up to its first `_`).
fn read_answer_queries(dir: &Path) -> anyhow::Result<Vec<Query>> {
    // A folder umi wrote also holds its summary and manifest: no answers.
    let files: Vec<PathBuf> = json_files_in(dir)?
        .into_iter()
        .filter(|f| {
            let name = f.file_name().unwrap_or_default();
            name != "summary.json" && name != umi_core::manifest::FILE_NAME
        })
        .collect();
    let mut queries = Vec::new();
    for file in &files {
        let name = file.file_stem().unwrap_or_default().to_string_lossy();
        let id = name.split('_').next().unwrap_or_default();
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let value: Value =
            serde_json::from_str(&text).with_context(|| format!("{}: not JSON", file.display()))?;
        queries.push(
            Query::from_answer_file(id, &value).with_context(|| format!("{}", file.display()))?,
        );
    }
    if queries.is_empty() {
        bail!("{}: no answer files (*.json) in it", dir.display());
    }
    let mut ids: Vec<&str> = queries.iter().map(|q| q.id.as_str()).collect();
    ids.sort_unstable();
    if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
        bail!(
            "{}: two answer files for query id {:?} (answers are named after ids)",
            dir.display(),
            w[0]
        );
    }
    Ok(queries)
}

/// How one query ended, solved here or by a coordinator.
pub struct Finished {
    /// The answer file's content (null: nothing to write).
    pub answer: Value,
    pub outcome: Outcome,
    /// Why it failed, if it did (a role or tool unreachable, or cancelled).
    pub failure: Option<String>,
    pub steps: usize,
    pub tokens: usize,
    /// Its calls, where they were made here (a coordinator's tasks have none).
    pub calls: Option<TaskTrace>,
}

impl From<Solved> for Finished {
    fn from(s: Solved) -> Self {
        Finished {
            answer: s.answer,
            outcome: s.outcome,
            failure: s.failure.map(|e| e.to_string()),
            steps: s.steps,
            tokens: s.tokens,
            calls: Some(s.trace),
        }
    }
}

#[derive(Default, Serialize)]
struct Summary {
    queries: usize,
    skipped_done: usize,
    solved: usize,
    gave_up: usize,
    /// Ended with no answer and no give-up: every chain dead-ended or the step budget
    /// ran out (a search outcome, not an error).
    exhausted: usize,
    /// Could not be solved: a role or tool was unreachable (the answer file says why; a
    /// rerun tries them again).
    failed: usize,
    steps: usize,
    tokens: usize,
    seconds: f64,
}

impl RunArgs {
    /// Queries at once: as asked, else as many as the roles' engines batch together.
    fn concurrency(&self) -> usize {
        self.concurrency.unwrap_or(self.role_args.model.max_batch)
    }

    /// Whether the bundled demo model plays the roles, in process (`runs_demo_model`;
    /// not replayed recordings, no remote workers or servers).
    fn demo(&self) -> bool {
        self.roles == Answerers::Models
            && !self.remote.is_set()
            && runs_demo_model(&self.role_args.model, &self.engine)
    }

    /// What plays each role of a run solved here, sampling with `sampling`: recordings
    /// replayed, or models (workers or OpenAI-compatible servers as the remote flags say,
    /// the other roles in process).
    fn roles_spec(&self, sampling: Sampling) -> anyhow::Result<RolesSpec> {
        let mut spec = RolesSpec {
            sources: ByRole::all(RoleSource::InProcess),
            sampling,
            in_process: None,
            workers: None,
            openai: None,
            replay: None,
        };
        if self.role_args.constrain.is_some() {
            if self.agent != AgentKind::AlphaUmi {
                bail!(
                    "--constrain caller holds α-UMi's caller to a grammar: --agent {} has no caller",
                    self.agent
                );
            }
            if self.roles == Answerers::Replay || self.engine.is_sim() {
                bail!("--constrain caller needs a model to decode under the grammar: replayed roles and the simulated engine write their own text; drop --constrain");
            }
        }
        match self.roles {
            Answerers::Replay => {
                if self.agent != AgentKind::AlphaUmi {
                    bail!(
                        "--roles replay replays α-UMi's roles: drop --agent {}",
                        self.agent
                    );
                }
                if self.remote.is_set() || self.role_args.model.model.is_some() {
                    bail!("--roles replay answers from recordings: drop the --model and --*-endpoint flags");
                }
                spec.sources = ByRole::all(RoleSource::Replay);
                spec.replay = Some(Arc::new(self.tools.replay_roles()?));
            }
            Answerers::Models => {
                self.remote
                    .apply(&mut spec, self.agent != AgentKind::AlphaUmi)?;
                if self.agent != AgentKind::AlphaUmi {
                    // One model plays the agent: the planner's.
                    spec.sources = ByRole::all(spec.sources.planner.clone());
                }
                if self.agent == AgentKind::OpenAiFunctions
                    && !matches!(spec.sources.planner, RoleSource::OpenAi(_))
                {
                    bail!("--agent openai-functions calls an OpenAI-compatible chat endpoint with function calling: give --planner-endpoint openai+http://HOST:PORT/v1 (vLLM, TGI, OpenAI, or a umi worker's --openai-listen)");
                }
                if spec.any(|s| *s == RoleSource::InProcess) {
                    spec.in_process = Some(self.role_args.in_process(&self.engine)?);
                }
            }
        }
        Ok(spec)
    }

    /// What the roles sample with when this process decides it (not a coordinator's run,
    /// not replayed recordings).
    fn sampling(&self) -> Option<umi_core::presets::Sampling> {
        (self.coordinator.is_none() && self.roles == Answerers::Models).then(|| {
            self.role_args
                .sampling
                .over(presets::realtime_for(self.agent, self.demo()))
        })
    }

    /// The answer files' format: the flag's, else the agent's own. α-UMi's format for a
    /// ToolBench agent's messages is refused (they have no α-UMi turns to keep).
    pub fn answer_format(&self) -> anyhow::Result<AnswerFormat> {
        let own = if self.agent.toolbench_messages() {
            AnswerFormat::Toolbench
        } else {
            AnswerFormat::AlphaUmi
        };
        match self.answer_format {
            Some(AnswerFormat::AlphaUmi) if own == AnswerFormat::Toolbench => bail!(
                "--agent {} writes upstream ToolBench's messages: drop --answer-format alpha-umi",
                self.agent
            ),
            Some(format) => Ok(format),
            None => Ok(own),
        }
    }
}

impl Summary {
    fn count(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Answered => self.solved += 1,
            Outcome::GaveUp => self.gave_up += 1,
            Outcome::Exhausted => self.exhausted += 1,
        }
    }
}

pub async fn run(a: RunArgs) -> anyhow::Result<()> {
    if a.width == 0 || a.concurrency() == 0 {
        bail!("--width and --concurrency must be at least 1");
    }
    let queries = read_queries(a.queries.as_deref())?;
    let answer_format = a.answer_format()?;
    if let Some(folder) = a.tools.tools_folder.as_ref().filter(|f| !f.is_dir()) {
        if a.agent.toolbench_messages() {
            bail!(
                "--tools-folder {}: not a folder (the tools' descriptions of --agent {} come from it)",
                folder.display(),
                a.agent
            );
        }
    }
    let out_dir = a.out.clone().unwrap_or_else(|| {
        let stem = match &a.queries {
            Some(path) => path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
            None => "demo".into(),
        };
        PathBuf::from("runs").join(stem)
    });
    super::support::output::writable_dir(&out_dir, "--out")?;
    let coordinator = match &a.coordinator {
        Some(address) => Some(super::submit::CoordinatorAt {
            address: address.clone(),
            security: a.remote.tls.security(a.auth_token_file.as_deref())?,
            patience: std::time::Duration::from_secs(a.coordinator_patience),
        }),
        None => None,
    };
    let method = match &coordinator {
        Some(c) => super::submit::method(c).await?,
        None => method_name(a.width),
    };
    let answer_path = |id: &str| out_dir.join(format!("{id}_{method}.json"));
    // Any answer of this method in the folder, not only this query set's.
    let suffix = format!("_{method}.json");
    let has_answers = json_files_in(&out_dir)?
        .iter()
        .any(|f| f.to_string_lossy().ends_with(&suffix));
    let max_steps = a.max_steps.unwrap_or(presets::max_steps(a.demo()));
    run_manifest::check_and_write(&out_dir, has_answers, a.force, |digests| {
        run_manifest::build(&a, &method, a.sampling(), max_steps, digests)
    })?;
    let mut summary = Summary {
        queries: queries.len(),
        ..Summary::default()
    };
    let mut todo: Vec<&Query> = Vec::new();
    for query in &queries {
        match done_outcome(&answer_path(&query.id)) {
            Some(outcome) => {
                summary.skipped_done += 1;
                summary.count(outcome);
            }
            None => todo.push(query),
        }
    }
    if summary.skipped_done > 0 {
        eprintln!(
            "{} of {} queries already answered in {}: skipping them",
            summary.skipped_done,
            queries.len(),
            out_dir.display()
        );
    }

    let start = Instant::now();
    let mut trace = TraceFile::open(&out_dir)?;
    let mut progress = Progress::new("queries", todo.len());
    let mut finish = |id: &str, mut solved: Finished| -> anyhow::Result<()> {
        if answer_format == AnswerFormat::Toolbench {
            umi_core::answer::toolbench_roles(&mut solved.answer);
        }
        if !solved.answer.is_null() {
            write_json_atomically(&answer_path(id), &solved.answer)
                .with_context(|| format!("writing the answer of query {id}"))?;
        }
        trace.append(&TraceLine {
            id: id.to_string(),
            method: method.clone(),
            outcome: solved.outcome,
            failure: solved.failure.clone(),
            steps: solved.steps,
            tokens: solved.tokens,
            calls: solved.calls.take(),
        })?;
        summary.steps += solved.steps;
        summary.tokens += solved.tokens;
        match (solved.outcome, &solved.failure) {
            (_, Some(reason)) => {
                summary.failed += 1;
                tracing::warn!(query = %id, %reason, "query failed");
            }
            (outcome, None) => summary.count(outcome),
        }
        progress.message(format!(
            "solved {} gave up {} exhausted {} failed {}",
            summary.solved, summary.gave_up, summary.exhausted, summary.failed
        ));
        progress.tick();
        Ok(())
    };
    match &coordinator {
        Some(c) => {
            if a.remote.has_endpoints() || a.role_args.model.model.is_some() {
                bail!("with --coordinator the coordinator's workers and models are used: drop the --model and --*-endpoint flags");
            }
            if a.width != 2
                || a.max_steps.is_some()
                || a.max_depth.is_some()
                || a.agent != AgentKind::AlphaUmi
            {
                bail!("with --coordinator the search settings are the coordinator's: drop --agent, --width, --max-steps and --max-depth");
            }
            if a.roles == Answerers::Replay {
                bail!("--roles replay runs here: drop --coordinator");
            }
            if a.role_args.constrain.is_some() {
                bail!("--constrain caller applies to roles called from here; with --coordinator its roles are the coordinator's: drop --constrain");
            }
            if a.log_calls.is_some() {
                bail!("--log-calls logs role calls made here; with --coordinator they are the coordinator's: drop --log-calls");
            }
            super::submit::solve_all(c, &todo, &mut finish).await?;
        }
        None => solve_here(&a, &todo, &mut finish).await?,
    }
    progress.finish();
    summary.seconds = start.elapsed().as_secs_f64();
    write_json_atomically(&out_dir.join("summary.json"), &summary)?;
    println!(
        "{} queries ({} already done): solved {}, gave up {}, exhausted {}, failed {}; {} agent steps, {} tokens, {:.1} s -> {}",
        summary.queries,
        summary.skipped_done,
        summary.solved,
        summary.gave_up,
        summary.exhausted,
        summary.failed,
        summary.steps,
        summary.tokens,
        summary.seconds,
        out_dir.display()
    );
    if summary.failed > 0 {
        bail!(
            "{} of {} queries failed (a role or tool could not be reached): their answer files in {} say why, and running again retries them",
            summary.failed,
            todo.len(),
            out_dir.display()
        );
    }
    Ok(())
}

/// Solves `todo` in this process: roles on in-process engines or remote workers.
async fn solve_here(
    a: &RunArgs,
    todo: &[&Query],
    finish: &mut impl FnMut(&str, Finished) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let demo = a.demo();
    let backend = a.tools.backend()?;
    let sampling = a
        .role_args
        .sampling
        .over(presets::realtime_for(a.agent, demo));
    let spec = a.roles_spec(sampling)?;
    let replay = spec.replay.clone();
    let roles = umi_roles::build(spec).await?;
    let models: Arc<dyn RoleModels> = match a.role_args.constrain {
        Some(ConstrainRole::Caller) => Arc::new(ConstrainCaller(roles.models.clone())),
        None => roles.models.clone(),
    };
    let models: Arc<dyn RoleModels> = match &a.log_calls {
        Some(path) => Arc::new(CallLog::open(models, path)?),
        None => models,
    };
    for (role, model, base) in &roles.openai {
        eprintln!("{} role: {model} at {base}", role.as_str());
    }
    let reference_depth = SearchConfig::default().single_chain_max_step;
    let config = SearchConfig {
        tree_beam_size: a.width,
        max_query_count: a.max_steps.unwrap_or(presets::max_steps(demo)),
        single_chain_max_step: a.max_depth.unwrap_or_else(|| {
            // A recorded ChatGPT chain can hold more calls than 4 α-UMi steps (it may
            // skip the thought node); replay deep enough, and say so.
            let needed = replay.as_ref().map_or(0, |r| 3 * r.longest());
            if needed > reference_depth {
                eprintln!("--roles replay: chains up to depth {needed} (the reference stops at {reference_depth}) to fit the longest recording");
            }
            needed.max(reference_depth)
        }),
        seed: a.role_args.sampling.seed,
        agent: a.agent,
        ..SearchConfig::default()
    };
    let mut results = futures::stream::iter(todo.iter().map(|q| {
        let (backend, config) = (&backend, config.clone());
        let roles = models.as_ref();
        async move { (q, solve(q, roles, backend, config).await) }
    }))
    .buffer_unordered(a.concurrency());
    while let Some((q, solved)) = results.next().await {
        finish(&q.id, solved.into())?;
    }
    drop(results);
    if let Some(usage) = roles.engines.as_ref().map(|e| e.usage()) {
        eprintln!("{usage}");
    }
    if let Some(report) = backend.report() {
        eprintln!("{report}");
    }
    Ok(())
}

/// An answer file that exists, parses and records no failure is finished work; a
/// query that failed (a worker or tool unreachable) is tried again.
/// The outcome an earlier run recorded in `path`, if that query is done: its answer file
/// is whole and says neither that it failed (a rerun retries those) nor nothing.
fn done_outcome(path: &Path) -> Option<Outcome> {
    let bytes = std::fs::read(path).ok()?;
    let answer = serde_json::from_slice::<Value>(&bytes).ok()?;
    if answer.get("failure").is_some() {
        return None;
    }
    umi_core::answer::recorded_outcome(&answer)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<crate::Args, clap::Error> {
        crate::Args::try_parse_from(["umi", "run"].iter().chain(args))
    }

    #[test]
    fn the_coordinator_patience_is_a_positive_count_of_seconds_for_a_coordinator_run() {
        let crate::Command::Run(a) = parse(&["--coordinator", "https://c:1"]).unwrap().command
        else {
            panic!("not parsed as `umi run`")
        };
        assert_eq!(a.coordinator_patience, 300);
        for refused in [
            &[
                "--coordinator",
                "https://c:1",
                "--coordinator-patience",
                "0",
            ][..],
            &["--coordinator-patience", "5"][..],
        ] {
            let Err(e) = parse(refused) else {
                panic!("{refused:?} was taken")
            };
            let e = e.to_string();
            assert!(e.contains("--coordinator"), "{refused:?}: {e}");
        }
    }
}
