//! Which model plays each α-UMi role, and how one role call is made on it: the prompt
//! tokenized with BOS, left-truncated to the input budget (as the reference does, keeping
//! the last tokens), then sampled.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use umi_engine::{Engine, GenerateOutput, GenerateRequest, Prompt, SamplingParams};

use super::model_args::ModelArgs;

#[derive(Args, Debug, Clone)]
pub struct RoleArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Planner checkpoint (default: --model, the single-backbone case).
    #[arg(long)]
    pub planner_model: Option<PathBuf>,
    /// Caller checkpoint (default: --model).
    #[arg(long)]
    pub caller_model: Option<PathBuf>,
    /// Summarizer checkpoint (default: --model).
    #[arg(long)]
    pub summarizer_model: Option<PathBuf>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

/// How every role call samples (flags over the mode's defaults).
#[derive(Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Prompt tokens kept (the last ones) per call; the reference uses 3750 (static) or
    /// 3576 (real time).
    #[arg(long)]
    pub max_input_tokens: Option<usize>,
    /// New tokens per call (the reference: 512).
    #[arg(long)]
    pub max_new_tokens: Option<usize>,
    /// Sampling temperature (0 = greedy). Default: the reference's for the mode.
    #[arg(long)]
    pub temperature: Option<f64>,
    #[arg(long)]
    pub top_p: Option<f64>,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

/// The three role engines; one engine (one copy of the weights) per distinct checkpoint.
#[derive(Clone)]
pub struct RoleEngines {
    pub planner: Engine,
    pub caller: Engine,
    pub summarizer: Engine,
    pub max_input_tokens: usize,
    pub request: GenerateRequest,
}

/// Sampling the reference uses by default in a mode.
pub struct Defaults {
    pub temperature: f64,
    pub top_p: Option<f64>,
    pub max_input_tokens: usize,
    pub max_new_tokens: usize,
    /// 1 reproduces the real-time pipeline's `force_generate` (EOS at step 0 ignored).
    pub min_new_tokens: usize,
}

impl RoleArgs {
    pub fn start(&self, defaults: Defaults) -> anyhow::Result<RoleEngines> {
        let mut engines: HashMap<PathBuf, Engine> = HashMap::new();
        let base = self.model.model_path();
        let mut engine_for = |path: Option<&PathBuf>| -> anyhow::Result<Engine> {
            let path = path.cloned().unwrap_or_else(|| base.clone());
            if let Some(e) = engines.get(&path) {
                return Ok(e.clone());
            }
            let args = ModelArgs {
                model: Some(path.clone()),
                ..self.model.clone()
            };
            let engine = args.start()?;
            engines.insert(path, engine.clone());
            Ok(engine)
        };
        let planner = engine_for(self.planner_model.as_ref()).context("planner model")?;
        let caller = engine_for(self.caller_model.as_ref()).context("caller model")?;
        let summarizer = engine_for(self.summarizer_model.as_ref()).context("summarizer model")?;
        let (request, max_input_tokens) = self.sampling.request(&defaults);
        Ok(RoleEngines {
            planner,
            caller,
            summarizer,
            max_input_tokens,
            request,
        })
    }
}

impl SamplingArgs {
    /// The generation settings of every role call (flags over the mode's defaults), and
    /// the prompt-token budget.
    pub fn request(&self, defaults: &Defaults) -> (GenerateRequest, usize) {
        let request = GenerateRequest {
            max_new_tokens: self.max_new_tokens.unwrap_or(defaults.max_new_tokens),
            min_new_tokens: defaults.min_new_tokens,
            sampling: SamplingParams {
                temperature: self.temperature.unwrap_or(defaults.temperature),
                top_p: self.top_p.or(defaults.top_p),
                top_k: None,
                seed: self.seed,
            },
            ..GenerateRequest::new(Prompt::Tokens(vec![]))
        };
        (
            request,
            self.max_input_tokens.unwrap_or(defaults.max_input_tokens),
        )
    }

    /// The same settings as sent to a remote role worker.
    pub fn wire(&self, defaults: &Defaults) -> umi_worker::pb::Sampling {
        let (request, max_input_tokens) = self.request(defaults);
        umi_worker::pb::Sampling {
            temperature: request.sampling.temperature,
            top_p: request.sampling.top_p,
            top_k: request.sampling.top_k.map(|k| k as u32),
            seed: request.sampling.seed,
            max_new_tokens: request.max_new_tokens as u32,
            min_new_tokens: request.min_new_tokens as u32,
            max_input_tokens: max_input_tokens as u32,
        }
    }
}

impl RoleEngines {
    /// One role call: encode, keep the last `max_input_tokens`, generate.
    pub async fn call(
        &self,
        engine: &Engine,
        prompt: &str,
        seed_offset: u64,
    ) -> anyhow::Result<GenerateOutput> {
        let started = std::time::Instant::now();
        let mut request = self.request.clone();
        request.sampling.seed = request.sampling.seed.wrapping_add(seed_offset);
        let out = engine
            .generate_truncated(prompt, self.max_input_tokens, request)
            .await?;
        tracing::debug!(
            prompt_tokens = out.prompt_tokens,
            cached_tokens = out.cached_tokens,
            generated_tokens = out.generated_tokens(),
            latency_ms = started.elapsed().as_millis() as u64,
            "role call"
        );
        Ok(out)
    }
}
