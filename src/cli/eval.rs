//! `umi eval static`: α-UMi's static evaluation (planner, then caller or summarizer on
//! its decision, with the gold history) over a ToolBench static test file, written as
//! the reference's `predictions.json` plus `metrics.json`, and printed as a table.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use umi_core::agent::RoleKind;
use umi_core::metrics::Metrics;
use umi_core::parse::{parse_output, Decision};
use umi_core::presets;
use umi_core::prompt::RolePrompts;
use umi_core::static_eval::{build_samples, parse_records, reference_order, score, Sample};
use umi_worker::roles::EngineRoles;

use super::args::roles::RoleArgs;
use super::support::eval_journal::Journal;
use super::support::output::write_json_atomically;
use super::support::progress::Progress;

#[derive(Subcommand, Debug)]
pub enum EvalCommand {
    /// Step-level evaluation on a static test file (Plan ACC, Act. EM, Hallu., Arg. F1, R-L).
    Static(StaticArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Roles {
    /// The models given by --model / --planner-model / ...
    Model,
    /// Each role replays the reference's output for its step (checks the pipeline).
    Oracle,
}

#[derive(Args, Debug)]
pub struct StaticArgs {
    /// A static test file (e.g. data/toolbench-static/out_of_domain.json).
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long, value_enum, default_value = "model")]
    pub roles: Roles,
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
    #[command(flatten)]
    pub role_args: RoleArgs,
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
        EvalCommand::Static(a) => static_eval(a).await,
    }
}

async fn static_eval(a: StaticArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&a.data)
        .with_context(|| format!("reading {}", a.data.display()))?;
    let mut records = parse_records(&text).with_context(|| format!("{}", a.data.display()))?;
    if let Some(limit) = a.limit {
        records.truncate(limit);
    }
    let prompts = RolePrompts::toolbench();
    let mut samples =
        build_samples(&records, &prompts).with_context(|| format!("{}", a.data.display()))?;
    if samples.is_empty() {
        bail!("{}: no planner steps to evaluate", a.data.display());
    }
    let engines = match a.roles {
        Roles::Oracle => None,
        Roles::Model => Some(a.role_args.start(presets::STATIC)?),
    };
    let out = a.out.clone().unwrap_or_else(|| default_out(&a.data));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    // Every finished call is journaled, so an interrupted run resumes where it stopped.
    let mut journal = Journal::open(&out.join("journal.jsonl"), &fingerprint(&a))?;
    if journal.len() > 0 {
        eprintln!(
            "resuming: {} model calls already done in {}",
            journal.len(),
            out.display()
        );
    }

    // Each step's calls depend only on that step (and its seed on its index), so shards
    // split the steps and share the journal. A record's steps stay in one shard: each
    // step's prompt extends the previous one's, which the prefix cache reuses.
    let (shard, shards) = a.shard.unwrap_or((0, 1));
    let record_of: Vec<usize> = samples
        .iter()
        .scan((0usize, None::<&str>), |(n, last), s| {
            if last.is_some_and(|l| l != s.instruction) {
                *n += 1;
            }
            *last = Some(&s.instruction);
            Some(*n)
        })
        .collect();
    let mine = |i: usize| record_of[i] % shards == shard;
    let start = Instant::now();
    let mut progress = Progress::new("planner", (0..samples.len()).filter(|&i| mine(i)).count());
    for (i, s) in samples.iter_mut().enumerate() {
        if !mine(i) {
            continue;
        }
        let output = match journal.get("planner", i) {
            Some(done) => done.to_string(),
            None => {
                let input = s.model_input.clone();
                let t = Instant::now();
                let output = role_output(&engines, s, RoleKind::Planner, &input, i as u64).await?;
                journal.record("planner", i, &output, t.elapsed().as_secs_f64())?;
                output
            }
        };
        s.route(&output, &prompts);
        progress.tick();
    }
    progress.finish();
    let pending: Vec<usize> = (0..samples.len())
        .filter(|&i| mine(i) && samples[i].decision != Some(Decision::GiveUp))
        .collect();
    let mut progress = Progress::new("caller/summarizer", pending.len());
    for i in pending {
        let s = &mut samples[i];
        let (input, conclusion) = match (&s.model_input_for_caller, &s.model_input_for_summarizer) {
            (Some(c), _) => (c.clone(), false),
            (None, Some(m)) => (m.clone(), true),
            (None, None) => continue,
        };
        let output = match journal.get("answer", i) {
            Some(done) => done.to_string(),
            None => {
                let t = Instant::now();
                let role = if conclusion {
                    RoleKind::Summarizer
                } else {
                    RoleKind::Caller
                };
                let output = role_output(&engines, s, role, &input, i as u64).await?;
                journal.record("answer", i, &output, t.elapsed().as_secs_f64())?;
                output
            }
        };
        s.finish(&output);
        progress.tick();
    }
    progress.finish();
    let elapsed = start.elapsed();
    if a.shard.is_some() {
        eprintln!(
            "shard {shard}/{shards} done in {:.0} s; when every shard is done, run again without --shard to score",
            elapsed.as_secs_f64()
        );
        return Ok(());
    }
    let samples = reference_order(samples);
    let metrics = score(&samples);

    write_json_atomically(&out.join("predictions.json"), &samples)?;
    write_json_atomically(&out.join("metrics.json"), &metrics)?;
    write_json_atomically(&out.join("hallu_cases.json"), &hallucinations(&samples))?;
    print_table(&a.data, records.len(), &metrics, elapsed.as_secs_f64());
    let (model_seconds, untimed) = journal.seconds();
    if model_seconds > elapsed.as_secs_f64() + 1.0 || untimed > 0 {
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

/// What makes two runs the same run, so a journal is resumed only by its own run. Named
/// fields, so refactoring the flag structs does not orphan a journal.
fn fingerprint(a: &StaticArgs) -> String {
    let r = &a.role_args;
    let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
    serde_json::json!({
        "data": a.data.display().to_string(),
        "limit": a.limit,
        "roles": format!("{:?}", a.roles),
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
    })
    .to_string()
}

/// One step's output: the model's (seeded by the step's index), or the reference's.
async fn role_output(
    engines: &Option<EngineRoles>,
    sample: &Sample,
    role: RoleKind,
    input: &str,
    seed_offset: u64,
) -> anyhow::Result<String> {
    match engines {
        None => Ok(sample.oracle_output()),
        Some(e) => Ok(e.call_prompt(role, input, seed_offset).await?.text),
    }
}

fn hallucinations(samples: &[Sample]) -> Vec<&Sample> {
    samples
        .iter()
        .filter(|s| {
            let action = parse_output(&s.predictions).action;
            action != "none" && !s.tools.iter().any(|t| t.name() == action)
        })
        .collect()
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

fn print_table(data: &Path, records: usize, m: &Metrics, secs: f64) {
    println!(
        "{} ({} records, {} steps, {:.0} s)",
        data.display(),
        records,
        m.samples,
        secs
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
