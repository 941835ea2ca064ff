//! `umi bench engine`: prefill and decode throughput of one model, for one stream or
//! several at once (continuous batching).

use std::time::Instant;

use anyhow::Context;
use clap::{Args, Subcommand};
use umi_engine::{Constraint, Engine, EngineConfig, GenerateOutput, GenerateRequest, Prompt};

use super::args::model::ModelArgs;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Prefill and decode tokens per second for a model, prompt length and dtype.
    Engine(EngineBenchArgs),
    /// Calls per second of one role's replicas under concurrent load.
    Role(super::bench_role::RoleBenchArgs),
    /// Tasks per second of a whole local cluster on the simulated engine, for several
    /// planner replica counts (the load benchmark).
    Cluster(super::bench_cluster::ClusterBenchArgs),
    /// This machine's compute and memory peaks, and a model's prefill and decode as
    /// fractions of them.
    Roofline(super::bench_roofline::RooflineArgs),
}

#[derive(Args, Debug)]
pub struct EngineBenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Prompt length in tokens.
    #[arg(long, default_value_t = 128)]
    pub prompt_tokens: usize,
    /// Tokens to generate (EOS is ignored so every run decodes this many).
    #[arg(long, default_value_t = 64)]
    pub gen_tokens: usize,
    /// Requests in flight at once (the engine batches up to --max-batch of them).
    #[arg(long, default_value_t = 1)]
    pub streams: usize,
    /// Timed runs after one warm-up; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Print one JSON object instead of a table row.
    #[arg(long)]
    pub json: bool,
    /// Print the prompt's token ids as a JSON list and exit, so that reference engines
    /// (scripts/bench_reference.py) can run exactly the same prompt.
    #[arg(long)]
    pub print_prompt_ids: bool,
    /// Constrain the output to the JSON schema in this file (structured output's cost;
    /// a grammar that completes early stops the run short of --gen-tokens).
    #[arg(long, value_name = "FILE", conflicts_with = "regex")]
    pub json_schema: Option<std::path::PathBuf>,
    /// Constrain the output to this regular expression.
    #[arg(long, value_name = "REGEX")]
    pub regex: Option<String>,
}

/// Prose to tokenize for the synthetic prompt; any text works, this reads naturally.
const FILLER: &str =
    "The planner reads the task, the tool documentation and the trajectory so far, \
writes a rationale and decides who acts next. The caller turns the rationale into one API call. \
The summarizer writes the final answer from the whole trajectory. ";

pub async fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Engine(a) => engine(a).await,
        BenchCommand::Role(a) => super::bench_role::run(a).await,
        BenchCommand::Cluster(a) => super::bench_cluster::run(a).await,
        BenchCommand::Roofline(a) => super::bench_roofline::run(a).await,
    }
}

async fn engine(a: EngineBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.prompt_tokens > 0 && a.gen_tokens > 1 && a.streams > 0,
        "need --prompt-tokens >= 1, --gen-tokens >= 2 and --streams >= 1"
    );
    let loaded = a.model.load()?;
    // Every run repeats the same prompt: without this the prefix cache would make
    // prefill look free.
    let engine = Engine::start_with(
        loaded,
        EngineConfig {
            prefix_cache_bytes: 0,
            ..a.model.engine_config()?
        },
    );
    let prompt = filler_prompt(&engine, a.prompt_tokens)?;
    if a.print_prompt_ids {
        println!("{}", serde_json::to_string(&prompt)?);
        return Ok(());
    }
    let constraint = match (&a.json_schema, &a.regex) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--json-schema {}", path.display()))?;
            let schema = serde_json::from_str(&text)
                .with_context(|| format!("--json-schema {}: not JSON", path.display()))?;
            Some(Constraint::JsonSchema(schema))
        }
        (None, Some(rx)) => Some(Constraint::Regex(rx.clone())),
        (None, None) => None,
    };
    let request = GenerateRequest {
        max_new_tokens: a.gen_tokens,
        ignore_eos: true,
        constraint,
        ..GenerateRequest::new(Prompt::Tokens(prompt))
    };
    let Timings {
        prefill,
        decode,
        total,
        grammar_us,
    } = timed(&engine, &request, a.streams, a.repeats).await?;
    let info = engine.info();
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "engine": "umi", "model": info.name, "dtype": info.dtype, "device": info.device,
                "prompt_tokens": a.prompt_tokens, "gen_tokens": a.gen_tokens,
                "streams": a.streams, "max_batch": info.max_batch,
                "prefill_tok_s": prefill, "decode_tok_s": decode, "total_tok_s": total,
                "constrained": request.constraint.is_some(),
                "grammar_us_per_token": grammar_us,
            })
        );
    } else {
        println!(
            "umi  {:<28} {:<9} prompt {:>5}  gen {:>4}  prefill {:>8.1} tok/s  decode {:>7.1} tok/s{}",
            info.name,
            info.dtype,
            a.prompt_tokens,
            a.gen_tokens,
            prefill,
            decode,
            match request.constraint {
                Some(_) => format!("  (constrained: grammar {grammar_us:.0} µs/token)"),
                None => String::new(),
            }
        );
        if a.streams > 1 {
            println!(
                "     {} streams, max batch {}: {total:.1} generated tok/s in all (per stream: the medians above)",
                a.streams, info.max_batch
            );
        }
    }
    Ok(())
}

/// A prompt of `tokens` tokens of prose.
pub(crate) fn filler_prompt(engine: &Engine, tokens: usize) -> anyhow::Result<Vec<u32>> {
    let mut prompt = Vec::new();
    while prompt.len() < tokens {
        prompt.extend(engine.tokenizer().encode(FILLER)?);
    }
    prompt.truncate(tokens);
    Ok(prompt)
}

/// Medians over timed runs: per stream, prefill and decode tokens per second; over all
/// streams, generated tokens per second of wall time; the grammar's µs per token.
pub(crate) struct Timings {
    pub prefill: f64,
    pub decode: f64,
    pub total: f64,
    pub grammar_us: f64,
}

/// `request` sent `streams` times at once, once to warm up, then `repeats` timed runs.
pub(crate) async fn timed(
    engine: &Engine,
    request: &GenerateRequest,
    streams: usize,
    repeats: usize,
) -> anyhow::Result<Timings> {
    let run =
        || futures::future::try_join_all((0..streams).map(|_| engine.generate(request.clone())));
    run().await?;
    let (mut prefill, mut decode, mut total) = (Vec::new(), Vec::new(), Vec::new());
    let mut grammar_us = Vec::new();
    for _ in 0..repeats.max(1) {
        let start = Instant::now();
        let outs: Vec<GenerateOutput> = run().await?;
        let wall = start.elapsed().as_secs_f64();
        let generated: usize = outs.iter().map(|o| o.generated_tokens()).sum();
        total.push(generated as f64 / wall);
        let each =
            |f: fn(&GenerateOutput) -> f64| median(&mut outs.iter().map(f).collect::<Vec<_>>());
        prefill.push(each(GenerateOutput::prefill_tokens_per_second));
        grammar_us.push(each(|o| {
            o.constraint_time.as_secs_f64() * 1e6 / o.generated_tokens().max(1) as f64
        }));
        decode.push(each(GenerateOutput::decode_tokens_per_second));
    }
    Ok(Timings {
        prefill: median(&mut prefill),
        decode: median(&mut decode),
        total: median(&mut total),
        grammar_us: median(&mut grammar_us),
    })
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}
