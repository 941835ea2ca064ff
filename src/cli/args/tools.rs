//! Which tools the agent calls: the offline simulator over recorded responses, or
//! ToolBench's RapidAPI service; the local tools are always there.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use serde_json::Value;
use umi_core::env::ToolBackend;
use umi_core::replay::ReplayRoles;
use umi_tools::cache::ResponseCache;
use umi_tools::miss_simulator::MissSimulator;
use umi_tools::rapidapi::{RapidApi, TOOLBENCH_SERVER};
use umi_tools::real_api::RealApi;
use umi_tools::router::Router;
use umi_tools::simulator::Simulator;
use umi_tools::tools_folder::ToolsFolder;

/// ToolBench's public RapidAPI service.

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Tools {
    /// Recorded responses (offline), plus the local tools.
    Simulator,
    /// ToolBench's RapidAPI service (needs --toolbench-key), plus the local tools.
    Rapidapi,
}

#[derive(Args, Debug, Clone)]
pub struct ToolArgs {
    /// Where non-local tool calls go.
    #[arg(long, value_enum, default_value = "simulator")]
    pub tools: Tools,
    /// Recorded responses for the simulator: ToolBench answer files or directories of
    /// them, or static trajectory files (repeatable). Default: the ToolBench answers and
    /// the static set under data/.
    #[arg(long)]
    pub record: Vec<PathBuf>,
    /// ToolBench's RapidAPI service (http or https), for --tools rapidapi (default:
    /// ToolBench's public server); also a StableToolBench server (`…/virtual`). With
    /// --tools simulator, the real API a call nothing recorded goes to before it is
    /// simulated, as StableToolBench's server goes to its `toolbench_url` (needs
    /// --toolbench-key).
    #[arg(long)]
    pub rapidapi_url: Option<String>,
    /// Minimum milliseconds between two calls to that server (calls otherwise run
    /// concurrently). Default: 2000 for ToolBench's public server (its limit is 30 calls
    /// a minute, the reference sleeps 2 s before each), 0 for any other.
    #[arg(long)]
    pub tool_pacing_ms: Option<u64>,
    /// The largest tool response body read from that server, in bytes; a larger one
    /// is a failed call (its observation says so), never buffered whole.
    #[arg(long, default_value_t = umi_tools::http::DEFAULT_MAX_BODY, env = "UMI_TOOL_MAX_RESPONSE_BYTES")]
    pub tool_max_response_bytes: usize,
    /// Answer tool calls nothing recorded with this OpenAI-compatible chat endpoint
    /// (`http://host:port/v1`), as StableToolBench's server does (its prompt, the API's
    /// documentation, up to five cached replies as examples).
    #[arg(long)]
    pub simulate_with: Option<String>,
    /// The model name for --simulate-with (StableToolBench's default: gpt-4-turbo).
    #[arg(long, default_value = "gpt-4-turbo")]
    pub simulate_model: String,
    /// The API key for --simulate-with.
    #[arg(long, env = "UMI_SIMULATE_API_KEY", hide_env_values = true)]
    pub simulate_api_key: Option<String>,
    /// ToolBench's tools folder (`toolenv/tools`: `<category>/<tool>.json`), from which
    /// --simulate-with's API documentation is read as StableToolBench's server reads it
    /// (the tool's description, the API's name and description); without it the
    /// document is the server's empty one. The toolllama and openai-functions agents'
    /// system message lists each tool with its description from here (`None` without).
    #[arg(long, env = "UMI_TOOLS_FOLDER")]
    pub tools_folder: Option<PathBuf>,
    /// Save each new reply (simulated, or the real API's) into the (first) response
    /// cache given to --record, atomically, in StableToolBench's layout; a failed
    /// simulation never.
    #[arg(long)]
    pub save_cache: bool,
    /// The key ToolBench issued you, sent with every call to its service.
    #[arg(long, env = "TOOLBENCH_KEY", hide_env_values = true)]
    pub toolbench_key: Option<String>,
    /// Send --toolbench-key over plain http:// beyond this machine, readable on the
    /// way. ToolBench's public server (the default --rapidapi-url) speaks only http;
    /// without this flag such a URL is refused.
    #[arg(long)]
    pub send_key_over_http: bool,
}

impl ToolArgs {
    /// The recordings given, or the bundled ones (in the working directory's `data/`, else
    /// `$UMI_HOME/data` or an install's `share/umi/data`).
    pub fn record_paths(&self) -> Vec<PathBuf> {
        if !self.record.is_empty() {
            return self.record.clone();
        }
        let mut roots = vec![PathBuf::new()];
        if let Some(home) = std::env::var_os("UMI_HOME").filter(|h| !h.is_empty()) {
            roots.push(PathBuf::from(home));
        }
        if let Some(dir) = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(Path::to_path_buf))
        {
            roots.push(dir.join("../share/umi"));
        }
        let Some(root) = roots
            .into_iter()
            .find(|r| r.join("data/toolbench-real/answer").exists())
        else {
            return Vec::new();
        };
        [
            "data/toolbench-real/answer",
            "data/toolbench-static/out_of_domain.json",
        ]
        .into_iter()
        .map(|p| root.join(p))
        .filter(|p| p.exists())
        .collect()
    }

    /// Replay roles over the answer files among the recordings.
    pub fn replay_roles(&self) -> anyhow::Result<ReplayRoles> {
        let paths = self.record_paths();
        let mut roles = ReplayRoles::new();
        let mut chains = 0;
        let answers: Vec<PathBuf> = paths
            .iter()
            .filter(|p| !ResponseCache::looks_like_cache(p))
            .cloned()
            .collect();
        for file in json_files(&answers)? {
            let value = read_json(&file)?;
            if value.is_object() {
                chains += usize::from(roles.add_answer_file(&value));
            }
        }
        if roles.is_empty() {
            bail!(
                "--roles replay: no ToolBench answer files among the recordings ({})",
                paths
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        tracing::info!(queries = roles.len(), chains, "replay roles loaded");
        Ok(roles)
    }

    pub fn backend(&self) -> anyhow::Result<Router> {
        let fallback: Box<dyn ToolBackend> = match self.tools {
            Tools::Simulator => {
                let mut sim = load_simulator(&self.record_paths())?;
                // StableToolBench's server order: cache, real API, simulation.
                if let Some(url) = &self.rapidapi_url {
                    let key = self.toolbench_key.clone().context(
                        "--rapidapi-url with --tools simulator needs --toolbench-key (or $TOOLBENCH_KEY)",
                    )?;
                    self.check_key_destination(url)?;
                    let mut real = RealApi::new(url.clone(), key);
                    if let Some(ms) = self.tool_pacing_ms {
                        real.pacing = std::time::Duration::from_millis(ms);
                    }
                    real.max_response_bytes = self.tool_max_response_bytes;
                    sim.answer_from_real_api(real);
                }
                if let Some(base) = &self.simulate_with {
                    let mut simulator =
                        MissSimulator::new(base.clone(), self.simulate_model.clone());
                    if self.simulate_api_key.is_some() {
                        umi_tools::http::check_clear_text(base).context("--simulate-api-key")?;
                    }
                    simulator.api_key = self.simulate_api_key.clone();
                    if let Some(folder) = &self.tools_folder {
                        simulator.tools = Some(ToolsFolder::open(folder)?);
                    }
                    sim.simulate_misses(simulator);
                }
                if self.save_cache {
                    if self.simulate_with.is_none() && self.rapidapi_url.is_none() {
                        bail!("--save-cache saves what --simulate-with invents or --rapidapi-url answers: give one");
                    }
                    if !sim.has_cache() {
                        bail!("--save-cache needs a StableToolBench response cache folder among --record");
                    }
                    sim.save_new_replies(true);
                }
                tracing::info!(responses = sim.len(), "simulator loaded");
                Box::new(sim)
            }
            Tools::Rapidapi => {
                let key = self
                    .toolbench_key
                    .clone()
                    .context("--tools rapidapi needs --toolbench-key (or $TOOLBENCH_KEY)")?;
                let url = self.rapidapi_url.as_deref().unwrap_or(TOOLBENCH_SERVER);
                self.check_key_destination(url)?;
                let mut client = RapidApi::new(url.to_string(), key);
                if let Some(ms) = self.tool_pacing_ms {
                    client.pacing = std::time::Duration::from_millis(ms);
                }
                client.max_response_bytes = self.tool_max_response_bytes;
                Box::new(client)
            }
        };
        let router = Router::new(fallback);
        // For ToolBench agents' system message; a folder that is not there (e.g. a stale
        // $UMI_TOOLS_FOLDER) describes nothing (`umi run` refuses it for those agents).
        Ok(match self.tools_folder.as_deref().map(ToolsFolder::open) {
            Some(Ok(folder)) => router.with_tools_folder(folder),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "--tools-folder: not used");
                router
            }
            None => router,
        })
    }
}

/// The simulator over `paths`: StableToolBench response caches, ToolBench answer files
/// (or folders of them) and static record files. A path that yields nothing is an error
/// naming it.
fn load_simulator(paths: &[PathBuf]) -> anyhow::Result<Simulator> {
    let mut sim = Simulator::new();
    for path in paths {
        if ResponseCache::looks_like_cache(path) {
            let cache = ResponseCache::open(path)?;
            tracing::info!(path = %path.display(), files = cache.files(), "response cache opened");
            sim.add_cache(cache);
            continue;
        }
        let mut added = 0;
        for file in json_files(std::slice::from_ref(path))? {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let value: Value = serde_json::from_str(&text)
                .with_context(|| format!("{}: not JSON", file.display()))?;
            added += if value.is_array() {
                let records = umi_core::static_eval::parse_records(&text)
                    .with_context(|| format!("{}", file.display()))?;
                sim.add_static_records(&records)
            } else {
                sim.add_answer_file(&value)
            };
        }
        if added == 0 {
            bail!(
                "--record {}: no recorded responses in it (expected ToolBench answer files, static records, or a StableToolBench tool response cache: <category>/<tool>_for_<category>/<api>.json)",
                path.display()
            );
        }
    }
    Ok(sim)
}

/// The JSON files of `paths`: files as given, directories walked (sorted).
impl ToolArgs {
    /// Refuses to send --toolbench-key in clear beyond loopback unless
    /// --send-key-over-http says so.
    fn check_key_destination(&self, url: &str) -> anyhow::Result<()> {
        if self.send_key_over_http {
            return Ok(());
        }
        umi_tools::http::check_clear_text(url).context(
            "--toolbench-key (give --send-key-over-http to send it anyway, e.g. to ToolBench's public server, which speaks only http)",
        )
    }
}

fn json_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found = walk_json(path)?;
            found.sort();
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

fn read_json(file: &Path) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not JSON", file.display()))
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
