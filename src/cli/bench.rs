//! `umi bench engine`: prefill and decode throughput of one model, one stream.

use clap::{Args, Subcommand};
use umi_engine::{Engine, EngineConfig, GenerateRequest, Prompt};

use super::model_args::ModelArgs;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Prefill and decode tokens per second for a model, prompt length and dtype.
    Engine(EngineBenchArgs),
    /// Calls per second of one role's replicas under concurrent load.
    Role(super::bench_role::RoleBenchArgs),
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
    }
}

async fn engine(a: EngineBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.prompt_tokens > 0 && a.gen_tokens > 1,
        "need --prompt-tokens >= 1 and --gen-tokens >= 2"
    );
    let loaded = a.model.load()?;
    // Every run repeats the same prompt: without this the prefix cache would make
    // prefill look free.
    let engine = Engine::start_with(
        loaded,
        EngineConfig {
            prefix_cache_entries: 0,
        },
    );
    let mut prompt = Vec::new();
    while prompt.len() < a.prompt_tokens {
        prompt.extend(engine.tokenizer().encode(FILLER)?);
    }
    prompt.truncate(a.prompt_tokens);
    if a.print_prompt_ids {
        println!("{}", serde_json::to_string(&prompt)?);
        return Ok(());
    }
    let request = GenerateRequest {
        max_new_tokens: a.gen_tokens,
        ignore_eos: true,
        ..GenerateRequest::new(Prompt::Tokens(prompt))
    };
    engine.generate(request.clone()).await?;
    let mut prefill = Vec::new();
    let mut decode = Vec::new();
    for _ in 0..a.repeats.max(1) {
        let out = engine.generate(request.clone()).await?;
        prefill.push(out.prefill_tokens_per_second());
        decode.push(out.decode_tokens_per_second());
    }
    let (prefill, decode) = (median(&mut prefill), median(&mut decode));
    let info = engine.info();
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "engine": "umi", "model": info.name, "dtype": info.dtype, "device": info.device,
                "prompt_tokens": a.prompt_tokens, "gen_tokens": a.gen_tokens,
                "prefill_tok_s": prefill, "decode_tok_s": decode,
            })
        );
    } else {
        println!(
            "umi  {:<28} {:<9} prompt {:>5}  gen {:>4}  prefill {:>8.1} tok/s  decode {:>7.1} tok/s",
            info.name, info.dtype, a.prompt_tokens, a.gen_tokens, prefill, decode
        );
    }
    Ok(())
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}
