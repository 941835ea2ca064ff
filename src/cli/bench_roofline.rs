//! `umi bench roofline`: this machine's compute and memory peaks (`umi_engine::roofline`),
//! then one model's prefill as a fraction of the compute peak (GFLOP/s achieved over the
//! peak of the instructions its kernel uses) and its one-stream decode as a fraction of
//! the read bandwidth (weights and keys/values read per second over the peak).

use std::time::Duration;

use clap::Args;
use umi_engine::device::WeightDType;
use umi_engine::gemm::{kernel, Kernel};
use umi_engine::roofline::{self, Peaks};
use umi_engine::{Engine, EngineConfig, GenerateRequest, Prompt};

use super::args::model::ModelArgs;
use super::bench::{filler_prompt, timed};

#[derive(Args, Debug)]
pub struct RooflineArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Prompt lengths whose prefill is measured.
    #[arg(long, value_delimiter = ',', default_value = "512,2048")]
    pub prompt_tokens: Vec<usize>,
    /// Tokens decoded after the first prompt (one stream).
    #[arg(long, default_value_t = 64)]
    pub gen_tokens: usize,
    /// Timed runs per figure after one warm-up; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Seconds per try of each peak (three tries, the best kept).
    #[arg(long, default_value_t = 0.5)]
    pub peak_seconds: f64,
    /// MiB read for the memory peak: larger than the last-level cache.
    #[arg(long, default_value_t = 2048)]
    pub dram_mb: usize,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(a: RooflineArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        !a.prompt_tokens.is_empty() && a.prompt_tokens.iter().all(|&t| t > 0) && a.gen_tokens > 1,
        "need --prompt-tokens of at least 1 and --gen-tokens >= 2"
    );
    anyhow::ensure!(
        a.peak_seconds.is_finite() && a.peak_seconds > 0.0 && a.dram_mb > 0,
        "need a positive --peak-seconds and --dram-mb"
    );
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let time = Duration::from_secs_f64(a.peak_seconds);
    let peaks = roofline::measure(threads, time, a.dram_mb << 20);

    let loaded = a.model.load()?;
    let costs = loaded.model.costs();
    let weight_bytes = costs.layer_bytes + costs.lm_head_bytes;
    let model_sized_gbs = roofline::read_bandwidth(threads, weight_bytes, time);
    let bf16_kernel =
        kernel() == Kernel::Avx512Bf16 && loaded.model.weight_dtype() == WeightDType::BF16;
    let compute_peak = match (bf16_kernel, peaks.bf16_gflops) {
        (true, Some(bf16)) => bf16,
        _ => peaks.f32_gflops,
    };
    let engine = Engine::start_with(
        loaded,
        EngineConfig {
            prefix_cache_bytes: 0,
            ..a.model.engine_config()?
        },
    );
    let info = engine.info().clone();
    let mut prefill_rows = Vec::new();
    let mut decode_row = None;
    for (i, &tokens) in a.prompt_tokens.iter().enumerate() {
        let prompt = filler_prompt(&engine, tokens)?;
        let gen = if i == 0 { a.gen_tokens } else { 2 };
        let request = GenerateRequest {
            max_new_tokens: gen,
            ignore_eos: true,
            ..GenerateRequest::new(Prompt::Tokens(prompt))
        };
        let t = timed(&engine, &request, 1, a.repeats).await?;
        let gflops = t.prefill * costs.prefill_flops(tokens) / tokens as f64 / 1e9;
        prefill_rows.push((tokens, t.prefill, gflops, gflops / compute_peak));
        if i == 0 {
            // Decode reads the weights and, on average, the keys and values of the
            // prompt plus half the generated tokens.
            let context = tokens + a.gen_tokens / 2;
            let gbs = t.decode * costs.decode_bytes(context) / 1e9;
            decode_row = Some((context, t.decode, gbs));
        }
    }
    let (context, decode_tok_s, decode_gbs) = decode_row.unwrap_or_default();
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "peaks": peaks,
                "model_sized_read_gbs": model_sized_gbs,
                "model": info.name, "dtype": info.dtype, "costs": costs,
                "compute_peak_gflops": compute_peak,
                "prefill": prefill_rows.iter().map(|(t, tok_s, g, f)| serde_json::json!({
                    "prompt_tokens": t, "tok_s": tok_s, "gflops": g, "of_peak": f,
                })).collect::<Vec<_>>(),
                "decode": {
                    "context": context, "tok_s": decode_tok_s, "gbs": decode_gbs,
                    "of_dram_read": decode_gbs / peaks.dram_gbs,
                    "of_model_sized_read": decode_gbs / model_sized_gbs,
                },
            })
        );
        return Ok(());
    }
    print_peaks(&peaks, weight_bytes, model_sized_gbs);
    println!(
        "model {} ({}): {:.1} M layer parameters + {:.1} M output head, {:.1} MB of weights read per decode step",
        info.name,
        info.dtype,
        costs.layer_params as f64 / 1e6,
        costs.lm_head_params as f64 / 1e6,
        weight_bytes as f64 / 1e6
    );
    let peak_name = if bf16_kernel { "bf16 dot" } else { "f32 FMA" };
    for (tokens, tok_s, gflops, of_peak) in &prefill_rows {
        println!(
            "prefill {tokens:>5} tokens: {tok_s:>8.1} tok/s  {gflops:>7.1} GFLOP/s  {:>5.1}% of the {peak_name} peak",
            100.0 * of_peak
        );
    }
    println!(
        "decode, 1 stream at {context} tokens: {decode_tok_s:>6.1} tok/s  {decode_gbs:>6.1} GB/s read  {:>5.1}% of the memory peak, {:.1}% of the model-sized read",
        100.0 * decode_gbs / peaks.dram_gbs,
        100.0 * decode_gbs / model_sized_gbs
    );
    Ok(())
}

fn print_peaks(p: &Peaks, weight_bytes: usize, model_sized_gbs: f64) {
    println!(
        "machine: {} threads; f32 FMA {:.1} GFLOP/s; bf16 dot {}; read {:.1} GB/s ({} MiB), {:.1} GB/s ({:.0} MB, the model's weights: may stay in cache)",
        p.threads,
        p.f32_gflops,
        p.bf16_gflops
            .map_or("none (no AVX512-BF16)".to_string(), |g| format!("{g:.1} GFLOP/s")),
        p.dram_gbs,
        p.dram_bytes >> 20,
        model_sized_gbs,
        weight_bytes as f64 / 1e6
    );
}
