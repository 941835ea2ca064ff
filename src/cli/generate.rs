//! `umi generate`: one prompt, one model, text streamed to stdout.

use std::io::Write;

use clap::Args;
use umi_engine::{GenerateRequest, Prompt, SamplingParams, StreamEvent};

use super::args::model::ModelArgs;

const SMOLLM_SYSTEM: &str = "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

#[derive(Args, Debug)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The prompt text.
    #[arg(long)]
    pub prompt: String,
    /// Wrap the prompt in a ChatML conversation (system + user turn, assistant to answer).
    #[arg(long)]
    pub chat: bool,
    /// System message for --chat.
    #[arg(long, default_value = SMOLLM_SYSTEM)]
    pub system: String,
    #[arg(long, default_value_t = 256)]
    pub max_new_tokens: usize,
    /// 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    #[arg(long)]
    pub top_p: Option<f64>,
    #[arg(long)]
    pub top_k: Option<usize>,
    #[arg(long, default_value_t = 299_792_458)]
    pub seed: u64,
    /// Stop when the text reaches this string (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    /// Also print the generated token ids (to stderr), e.g. to compare greedy picks with
    /// another implementation's (scripts/bench_7b_cpu.sh).
    #[arg(long)]
    pub show_token_ids: bool,
}

/// The ChatML rendering SmolLM2 and other ChatML models were trained on.
pub fn chatml(system: &str, user: &str) -> String {
    format!("<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n")
}

pub async fn run(args: GenerateArgs) -> anyhow::Result<()> {
    let engine = args.model.start()?;
    let prompt = if args.chat {
        chatml(&args.system, &args.prompt)
    } else {
        args.prompt.clone()
    };
    let request = GenerateRequest {
        max_new_tokens: args.max_new_tokens,
        sampling: SamplingParams {
            temperature: args.temperature,
            top_p: args.top_p,
            top_k: args.top_k,
            seed: args.seed,
        },
        stop_strings: args.stop.clone(),
        ..GenerateRequest::new(Prompt::Text(prompt))
    };
    let mut events = engine.stream(request)?;
    let mut stdout = std::io::stdout();
    while let Some(event) = events.recv().await {
        match event? {
            StreamEvent::Text { text, .. } => {
                stdout.write_all(text.as_bytes())?;
                stdout.flush()?;
            }
            StreamEvent::Done(out) => {
                println!();
                eprintln!(
                    "[{} prompt tokens, {} generated, finish: {:?}; prefill {:.1} tok/s, decode {:.1} tok/s]",
                    out.prompt_tokens,
                    out.generated_tokens(),
                    out.finish_reason,
                    out.prefill_tokens_per_second(),
                    out.decode_tokens_per_second(),
                );
                if args.show_token_ids {
                    eprintln!("token ids: {:?}", out.token_ids);
                }
            }
        }
    }
    Ok(())
}
