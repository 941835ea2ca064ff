//! `umi eval static`: α-UMi's static evaluation (planner, then caller or summarizer on
//! its decision, with the gold history) over a ToolBench static test file, written as
//! the reference's `predictions.json` plus `metrics.json`, and printed as a table.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use futures::future::BoxFuture;
use umi_core::agent::RoleKind;
use umi_core::constraint::Constraint;
use umi_core::error::CoreError;
use umi_core::parse::{parse_backbone_output, parse_output};
use umi_core::presets;
use umi_core::prompt::{template, RolePrompts};
use umi_core::scores::Metrics;
use umi_core::static_backbone::{
    build_backbone_samples, score_backbone, BackboneSample, GiveUpInput,
};
use umi_core::static_eval::{
    build_samples, parse_records, reference_order, score, score_predictions, Sample, StaticRecord,
};
use umi_eval::{Journal, PromptModels, Shard, StaticRun};
use umi_worker::roles::EngineRoles;

use super::args::roles::{Answerers, ConstrainRole, RoleArgs};
use super::support::output::write_json_atomically;
use super::support::progress::Progress;
use super::support::run_manifest;
use serde_json::json;
use umi_core::manifest::section;

#[derive(Subcommand, Debug)]
pub enum EvalCommand {
    /// Step-level evaluation on a static test file (Plan ACC, Act. EM, Hallu., Arg. F1, R-L).
    Static(Box<StaticArgs>),
    /// StableToolBench's solvable pass rate of a directory of answer files, judged by an
    /// OpenAI-compatible model.
    PassRate(super::pass_rate::PassRateArgs),
    /// ToolEval's win rate: a folder of answers against a reference's answers to the same
    /// queries, each pair judged by an OpenAI-compatible model.
    WinRate(super::win_rate::WinRateArgs),
    /// Scores a `predictions.json` (umi's, or one the seed's `infer_pipeline.py` wrote) as
    /// `evaluate-multi_agent.py` does: `metrics.json` and `hallu_cases.json`.
    Score(ScoreArgs),
}

/// Which agent `umi eval` evaluates.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum StaticAgent {
    /// α-UMi's planner, then caller or summarizer on its decision (`infer_pipeline.py`,
    /// scored as `evaluate-multi_agent.py`).
    AlphaUmi,
    /// The single-LLM baseline (GLPFT's stage-1 backbone): one model, the
    /// `toolbench_backbone` prompt as `prepro_backbone.py` renders it, cleaned as
    /// `inference.py` and scored as `evaluate-backbone.py`; the planner's model plays it.
    Backbone,
}

#[derive(Args, Debug)]
pub struct ScoreArgs {
    /// The predictions file.
    #[arg(long)]
    pub predictions: PathBuf,
    /// Whose evaluator reads it: `alpha-umi` (`evaluate-multi_agent.py`) or `backbone`
    /// (`evaluate-backbone.py`, for `inference.py`'s files).
    #[arg(long, value_enum, default_value_t = StaticAgent::AlphaUmi)]
    pub agent: StaticAgent,
    /// Where metrics.json and hallu_cases.json go (default: beside the predictions).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct StaticArgs {
    /// A static test file (e.g. data/toolbench-static/out_of_domain.json).
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long, value_parser = Answerers::eval_values(), default_value = "model")]
    pub roles: Answerers,
    /// The agent evaluated: α-UMi's three roles, or the single-LLM baseline.
    #[arg(long, value_enum, default_value_t = StaticAgent::AlphaUmi)]
    pub agent: StaticAgent,
    /// With --agent backbone: a give-up step's prompt holds its own history.
    /// `prepro_backbone.py` reuses the previous step's prompt for it (stale, from another
    /// record when the give-up comes first), which is the default, as the reference scores.
    #[arg(long)]
    pub fix_give_up_prompt: bool,
    /// Only the first N records.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Output directory (default: eval-out/<data file stem>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Only the steps of records K, K+N, K+2N, ... (written as K/N): run N shards at once,
    /// e.g. one per GPU with the same --out, then once without --shard to score them all.
    #[arg(long, value_parser = parse_shard)]
    pub shard: Option<(usize, usize)>,
    /// Records evaluated at once: their calls share the engine's batches (--max-batch).
    /// The predictions are the same for any value.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    #[command(flatten)]
    pub role_args: RoleArgs,
    /// Add to an --out whose calls were made with other inputs (its manifest.json differs
    /// from this run's); without it such a run is refused, naming the differences.
    #[arg(long)]
    pub force: bool,
}

fn parse_shard(s: &str) -> Result<(usize, usize), String> {
    let parsed = s
        .split_once('/')
        .and_then(|(k, n)| Some((k.trim().parse().ok()?, n.trim().parse().ok()?)));
    match parsed {
        Some((k, n)) if n > 0 && k < n => Ok((k, n)),
        _ => Err(format!("{s:?} is not K/N with 0 <= K < N (e.g. 0/2)")),
    }
}

pub async fn run(cmd: EvalCommand) -> anyhow::Result<()> {
    match cmd {
        EvalCommand::Static(a) => static_eval(*a).await,
        EvalCommand::PassRate(a) => super::pass_rate::run(a).await,
        EvalCommand::WinRate(a) => super::win_rate::run(a).await,
        EvalCommand::Score(a) => score_file(a),
    }
}

/// The steps of one static run: α-UMi's, or the backbone's.
enum Steps {
    AlphaUmi(Vec<Sample>),
    Backbone(Vec<BackboneSample>),
}

impl Steps {
    fn build(
        a: &StaticArgs,
        records: &[StaticRecord],
        prompts: &RolePrompts,
    ) -> anyhow::Result<Steps> {
        let steps = match a.agent {
            StaticAgent::AlphaUmi => Steps::AlphaUmi(build_samples(records, prompts)?),
            StaticAgent::Backbone => {
                let give_up = if a.fix_give_up_prompt {
                    GiveUpInput::Own
                } else {
                    GiveUpInput::Previous
                };
                Steps::Backbone(build_backbone_samples(
                    records,
                    template("toolbench_backbone")?,
                    give_up,
                )?)
            }
        };
        Ok(steps)
    }

    fn len(&self) -> usize {
        match self {
            Steps::AlphaUmi(s) => s.len(),
            Steps::Backbone(s) => s.len(),
        }
    }

    fn shard(&self, shard: (usize, usize)) -> Shard {
        match self {
            Steps::AlphaUmi(s) => Shard::of(s, shard),
            Steps::Backbone(s) => {
                Shard::of_records(&s.iter().map(|s| s.record).collect::<Vec<_>>(), shard)
            }
        }
    }
}

async fn static_eval(a: StaticArgs) -> anyhow::Result<()> {
    if a.fix_give_up_prompt && a.agent != StaticAgent::Backbone {
        bail!("--fix-give-up-prompt applies to --agent backbone only");
    }
    let text = std::fs::read_to_string(&a.data)
        .with_context(|| format!("reading {}", a.data.display()))?;
    let mut records = parse_records(&text).with_context(|| format!("{}", a.data.display()))?;
    if let Some(limit) = a.limit {
        records.truncate(limit);
    }
    let prompts = RolePrompts::toolbench();
    let mut steps =
        Steps::build(&a, &records, &prompts).with_context(|| format!("{}", a.data.display()))?;
    if steps.len() == 0 {
        bail!("{}: no steps to evaluate", a.data.display());
    }
    let engines = match a.roles {
        Answerers::Replay => None,
        Answerers::Models => Some(a.role_args.start(presets::STATIC)?),
    };
    let out = a.out.clone().unwrap_or_else(|| default_out(&a.data));
    super::support::output::writable_dir(&out, "--out")?;
    // Every finished call is journaled, so an interrupted run resumes where it stopped.
    let mut journal = Journal::open(&out.join("journal.jsonl"), &fingerprint(&a))?;
    let resumed = !journal.is_empty();
    run_manifest::check_and_write(&out, resumed, a.force, |digests| {
        let roles = match a.roles {
            Answerers::Replay => json!("oracle: each role replays the reference's output"),
            Answerers::Models => run_manifest::model_roles(&a.role_args, None, digests)?,
        };
        let sampling =
            (a.roles == Answerers::Models).then(|| a.role_args.sampling.over(presets::STATIC));
        let mut manifest = section([
            ("created_by", run_manifest::created_by()),
            ("data", digests.of(&a.data)?),
            ("limit", json!(a.limit)),
            ("roles", roles),
            ("sampling", json!(sampling)),
        ]);
        if let (Some(ConstrainRole::Caller), Some(m)) =
            (a.role_args.constrain, manifest.as_object_mut())
        {
            m.insert("constrain".into(), json!("caller"));
        }
        // Only a backbone run names its agent: α-UMi runs keep their earlier manifests.
        if let (StaticAgent::Backbone, Some(m)) = (a.agent, manifest.as_object_mut()) {
            m.insert("agent".into(), json!("backbone"));
            m.insert("fix_give_up_prompt".into(), json!(a.fix_give_up_prompt));
        }
        Ok(manifest)
    })?;
    if resumed {
        eprintln!(
            "resuming: {} model calls already done in {}",
            journal.len(),
            out.display()
        );
    }

    // Each step's calls depend only on that step (and its seed on its index), so shards
    // split the records' steps and share the journal.
    let shard = steps.shard(a.shard.unwrap_or((0, 1)));
    // Each record has one call in flight: more records than the engine runs and queues
    // (--max-batch + --max-queue) would be refused as overloaded.
    let engine_room = a.role_args.model.max_batch + a.role_args.model.max_queue;
    let start = Instant::now();
    let mut progress = Progress::new("steps", shard.steps());
    let models = engines.as_ref().map(Engines);
    let run = StaticRun {
        prompts: &prompts,
        models: models.as_ref().map(|m| m as &dyn PromptModels),
        concurrency: a.concurrency.clamp(1, engine_room),
        constrain_caller: a.role_args.constrain == Some(ConstrainRole::Caller),
    };
    match &mut steps {
        Steps::AlphaUmi(samples) => {
            run.run(samples, shard, &mut journal, || progress.tick())
                .await?
        }
        Steps::Backbone(samples) => {
            run.run_backbone(samples, shard, &mut journal, || progress.tick())
                .await?
        }
    }
    progress.finish();
    let elapsed = start.elapsed();
    if let Some((shard, shards)) = a.shard {
        eprintln!(
            "shard {shard}/{shards} done in {:.0} s; when every shard is done, run again without --shard to score",
            elapsed.as_secs_f64()
        );
        return Ok(());
    }
    // Each agent's files as its reference scripts write them: the multi-agent samples in
    // `infer_pipeline.py`'s order, the backbone's in the data's.
    let metrics = match steps {
        Steps::AlphaUmi(samples) => {
            let samples = reference_order(samples);
            let metrics = score(&samples);
            write_outputs(&out, &samples, &metrics)?;
            metrics
        }
        Steps::Backbone(samples) => {
            let metrics = score_backbone(&samples);
            write_outputs(&out, &samples, &metrics)?;
            metrics
        }
    };
    print_table(
        &a.data,
        records.len(),
        &metrics,
        Some(elapsed.as_secs_f64()),
    );
    if let Some(usage) = engines.as_ref().map(EngineRoles::usage) {
        if usage.calls > 0 {
            println!("{usage}");
        }
    }
    let (model_seconds, untimed) = journal.seconds();
    if resumed {
        println!(
            "(resumed run: {model_seconds:.0} s of model calls over all its runs{})",
            if untimed > 0 {
                format!(", plus {untimed} calls journaled without a duration")
            } else {
                String::new()
            }
        );
    }
    eprintln!(
        "wrote {}/{{predictions,metrics,hallu_cases}}.json",
        out.display()
    );
    Ok(())
}

/// `predictions.json`, then the scores of [`write_scores`].
fn write_outputs<S: serde::Serialize>(
    out: &Path,
    samples: &[S],
    m: &Metrics,
) -> anyhow::Result<()> {
    write_json_atomically(&out.join("predictions.json"), samples)?;
    write_scores(out, samples, m)
}

/// `metrics.json` and `hallu_cases.json` (the hallucinated samples).
fn write_scores<S: serde::Serialize>(out: &Path, samples: &[S], m: &Metrics) -> anyhow::Result<()> {
    write_json_atomically(&out.join("metrics.json"), m)?;
    let cases: Vec<&S> = m.hallucinated.iter().map(|&i| &samples[i]).collect();
    write_json_atomically(&out.join("hallu_cases.json"), &cases)
}

fn score_file(a: ScoreArgs) -> anyhow::Result<()> {
    let path = &a.predictions;
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let entries: Vec<serde_json::Value> = serde_json::from_slice(&bytes)
        .with_context(|| format!("{}: not a JSON array of predictions", path.display()))?;
    let parse = match a.agent {
        StaticAgent::AlphaUmi => parse_output,
        StaticAgent::Backbone => parse_backbone_output,
    };
    let metrics = score_predictions(&entries, parse).with_context(|| path.display().to_string())?;
    let out = match a.out {
        Some(dir) => dir,
        None => path.parent().map(Path::to_path_buf).unwrap_or_default(),
    };
    super::support::output::writable_dir(&out, "--out")?;
    write_scores(&out, &entries, &metrics)?;
    let records = entries
        .iter()
        .filter_map(|e| e.get("instruction").and_then(serde_json::Value::as_str))
        .collect::<std::collections::HashSet<_>>()
        .len();
    print_table(path, records, &metrics, None);
    eprintln!("wrote {}/{{metrics,hallu_cases}}.json", out.display());
    Ok(())
}

/// What makes two runs the same run, so a journal is resumed only by its own run. Named
/// fields, so refactoring the flag structs does not orphan a journal.
fn fingerprint(a: &StaticArgs) -> String {
    let r = &a.role_args;
    let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
    let mut fingerprint = serde_json::json!({
        "data": a.data.display().to_string(),
        "limit": a.limit,
        // The names of the enum this flag had: earlier journals compare equal.
        "roles": match a.roles {
            Answerers::Models => "Model",
            Answerers::Replay => "Oracle",
        },
        "model": path(&r.model.model),
        "tokenizer": path(&r.model.tokenizer),
        "dtype": r.model.dtype.to_string(),
        // The kind of device, not its number: shards run on cuda:0, cuda:1, ...
        "device": r.model.device.split(':').next(),
        "planner_model": path(&r.planner_model),
        "caller_model": path(&r.caller_model),
        "summarizer_model": path(&r.summarizer_model),
        "max_input_tokens": r.sampling.max_input_tokens,
        "max_new_tokens": r.sampling.max_new_tokens,
        "temperature": r.sampling.temperature,
        "top_p": r.sampling.top_p,
        "seed": r.sampling.seed,
    });
    // Only a backbone run names its agent: α-UMi journals keep their fingerprints.
    if let (StaticAgent::Backbone, Some(f)) = (a.agent, fingerprint.as_object_mut()) {
        f.insert("agent".into(), "backbone".into());
        f.insert("fix_give_up_prompt".into(), a.fix_give_up_prompt.into());
    }
    // Only a constrained run names it: earlier journals keep their fingerprints.
    if let (Some(ConstrainRole::Caller), Some(f)) = (r.constrain, fingerprint.as_object_mut()) {
        f.insert("constrain".into(), "caller".into());
    }
    fingerprint.to_string()
}

/// The in-process engines as the static runner calls them.
struct Engines<'a>(&'a EngineRoles);

impl PromptModels for Engines<'_> {
    fn call<'a>(
        &'a self,
        role: RoleKind,
        prompt: &'a str,
        seed_offset: u64,
        constraint: Option<Constraint>,
    ) -> BoxFuture<'a, Result<String, CoreError>> {
        Box::pin(async move {
            let output = self
                .0
                .call_prompt(role, prompt, seed_offset, constraint)
                .await?;
            Ok(output.text)
        })
    }
}

fn default_out(data: &Path) -> PathBuf {
    let stem = data
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "static".into());
    PathBuf::from("eval-out").join(stem)
}

fn pct(x: Option<f64>) -> String {
    x.map_or_else(|| "n/a".to_string(), |v| format!("{:.2}", v * 100.0))
}

fn print_table(data: &Path, records: usize, m: &Metrics, secs: Option<f64>) {
    let time = secs.map(|s| format!(", {s:.0} s")).unwrap_or_default();
    println!(
        "{} ({} records, {} steps{time})",
        data.display(),
        records,
        m.samples,
    );
    println!("| Plan ACC | Act. EM | Hallu. | Arg. F1 | easy F1 | hard F1 | R-L |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {} | {} | {} | {} | {} | {} | {} |",
        pct(Some(m.plan_em)),
        pct(m.action_em),
        pct(Some(m.hallu_rate)),
        pct(m.f1),
        pct(m.easy_f1),
        pct(m.hard_f1),
        pct(m.rouge_l)
    );
    if m.rouge_rejected > 0 {
        println!("({} conclusion steps had an empty predicted answer: the rouge package rejects those; scored 0)", m.rouge_rejected);
    }
}
