//! The flags every model-loading command shares, and where the default model lives.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use umi_engine::{Engine, EngineConfig, LoadOptions, LoadedModel, WeightDType};

/// Where `scripts/setup.sh` puts the bundled SmolLM2 model.
pub const BUNDLED_MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// A .gguf file or a HuggingFace model directory (default: the bundled SmolLM2).
    #[arg(long, env = "UMI_MODEL")]
    pub model: Option<PathBuf>,
    /// tokenizer.json or tokenizer.model, overriding the one beside the weights.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Weight precision: auto (a HuggingFace directory's torch_dtype, f32 for GGUF),
    /// quantized (GGUF only: kept as stored), q8_0 (re-quantized at load), f32, f16 or
    /// bf16.
    #[arg(long, default_value = "auto")]
    pub dtype: WeightDType,
    /// cpu or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Requests decoded together in one forward pass (continuous batching); more wait in
    /// the queue. 1 serves requests one at a time.
    #[arg(long, default_value_t = 8, env = "UMI_MAX_BATCH")]
    pub max_batch: usize,
    /// Memory (MiB) for the key/value state of finished requests, reused by later ones
    /// that share their prefix (α-UMi's calls of a task share tool docs and history);
    /// least recently used first out. 0 disables prefix reuse.
    #[arg(long, default_value_t = umi_engine::engine::DEFAULT_PREFIX_CACHE_MB, env = "UMI_PREFIX_CACHE_MB")]
    pub prefix_cache_mb: usize,
    /// Requests that may wait for a batch slot; past it a request is refused at once as
    /// overloaded (a worker answers RESOURCE_EXHAUSTED, and its clients try another
    /// replica or back off) instead of queueing without bound.
    #[arg(long, default_value_t = umi_engine::engine::DEFAULT_MAX_QUEUE, env = "UMI_MAX_QUEUE")]
    pub max_queue: usize,
}

impl ModelArgs {
    pub fn model_path(&self) -> PathBuf {
        self.model.clone().unwrap_or_else(bundled_model)
    }

    pub fn load(&self) -> anyhow::Result<LoadedModel> {
        let device = umi_engine::parse_device(&self.device)?;
        let opts = LoadOptions {
            model: self.model_path(),
            tokenizer: self.tokenizer.clone(),
            dtype: self.dtype,
            device,
        };
        let path = opts.model.display().to_string();
        umi_engine::load(&opts).with_context(|| format!("loading model {path}"))
    }

    /// Loads the model and starts its engine.
    pub fn start(&self) -> anyhow::Result<Engine> {
        let config = self.engine_config()?;
        Ok(Engine::start_with(self.load()?, config))
    }

    pub fn engine_config(&self) -> anyhow::Result<EngineConfig> {
        anyhow::ensure!(self.max_batch >= 1, "--max-batch must be at least 1");
        anyhow::ensure!(self.max_queue >= 1, "--max-queue must be at least 1");
        Ok(EngineConfig {
            max_batch: self.max_batch,
            prefix_cache_bytes: self.prefix_cache_mb.saturating_mul(1 << 20),
            max_queue: self.max_queue,
        })
    }
}

/// The bundled model: relative to the working directory, else to the repository that
/// holds this binary (`target/<profile>/umi`).
pub fn bundled_model() -> PathBuf {
    let relative = PathBuf::from(BUNDLED_MODEL);
    if relative.exists() {
        return relative;
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(|root| root.join(BUNDLED_MODEL)))
        .filter(|p| p.exists())
        .unwrap_or(relative)
}
