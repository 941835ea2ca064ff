//! The flags every model-loading command shares, and where the default model lives.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use umi_engine::{Engine, EngineConfig, LoadOptions, LoadedModel, WeightDType};

use super::engine::EngineArgs;

/// The largest `--prefill-chunk`: one chunk's attention scores grow with its square.
pub const MAX_PREFILL_CHUNK: usize = 8192;

/// Where `scripts/setup.sh` puts the bundled SmolLM2 model.
pub const BUNDLED_MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

/// Whether the engines these flags start run the bundled demo model: no --model, not the
/// simulated engine (which stands for a full-size model). The one rule for the demo's
/// budgets (`presets::realtime(true)`, `presets::max_steps(true)`): `umi run` applies it
/// when its roles play in process, `umi cluster up` to the workers it starts with these
/// flags.
pub fn runs_demo_model(model: &ModelArgs, engine: &EngineArgs) -> bool {
    model.model.is_none() && !engine.is_sim()
}

#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// A .gguf file or a HuggingFace model directory (default: the bundled SmolLM2).
    #[arg(long, env = "UMI_MODEL")]
    pub model: Option<PathBuf>,
    /// tokenizer.json or tokenizer.model, overriding the one beside the weights.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// A PEFT LoRA adapter directory (adapter_config.json, adapter_model.safetensors or
    /// .bin), merged into the model's weights at load: no cost per token.
    #[arg(long, value_name = "DIR", env = "UMI_ADAPTER")]
    pub adapter: Option<PathBuf>,
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
    /// Prompt tokens one forward pass runs (each step's token budget for prompts; every
    /// decoding request adds one token beside them): a long prompt runs in chunks of this
    /// size while other requests decode. Answers do not depend on what runs beside a
    /// prompt, but may differ in their last bits between two settings.
    #[arg(long, value_name = "TOKENS", default_value_t = umi_engine::generate::DEFAULT_PREFILL_CHUNK, env = "UMI_PREFILL_CHUNK")]
    pub prefill_chunk: usize,
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
    /// The checkpoint: --model, else the bundled model (found as [`bundled_model`] says).
    pub fn model_path(&self) -> anyhow::Result<PathBuf> {
        match &self.model {
            Some(path) => Ok(path.clone()),
            None => bundled_model(),
        }
    }

    pub fn load(&self) -> anyhow::Result<LoadedModel> {
        let device = umi_engine::parse_device(&self.device)?;
        let opts = LoadOptions {
            model: self.model_path()?,
            tokenizer: self.tokenizer.clone(),
            dtype: self.dtype,
            device,
            adapter: self.adapter.clone(),
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
        anyhow::ensure!(
            (1..=MAX_PREFILL_CHUNK).contains(&self.prefill_chunk),
            "--prefill-chunk must be 1 to {MAX_PREFILL_CHUNK} tokens, not {}",
            self.prefill_chunk
        );
        Ok(EngineConfig {
            max_batch: self.max_batch,
            prefill_chunk: self.prefill_chunk,
            prefix_cache_bytes: self.prefix_cache_mb.saturating_mul(1 << 20),
            max_queue: self.max_queue,
        })
    }
}

/// Where the bundled model is looked for, in order: `$UMI_HOME/models`, `models/` beside
/// the binary and in `../share/umi` from it (an install: `scripts/install.sh`), `models/`
/// in the working directory, and the checkout that holds this binary
/// (`target/<profile>/umi`).
pub fn bundled_model_candidates() -> Vec<PathBuf> {
    let file = Path::new(BUNDLED_MODEL)
        .file_name()
        .map(PathBuf::from)
        .unwrap_or_default();
    let mut out = Vec::new();
    if let Some(home) = std::env::var_os("UMI_HOME").filter(|h| !h.is_empty()) {
        out.push(PathBuf::from(home).join("models").join(&file));
    }
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf));
    if let Some(dir) = &exe_dir {
        out.push(dir.join("models").join(&file));
        out.push(dir.join("../share/umi/models").join(&file));
    }
    out.push(PathBuf::from(BUNDLED_MODEL));
    if let Some(checkout) = exe_dir.as_deref().and_then(|d| d.ancestors().nth(2)) {
        out.push(checkout.join(BUNDLED_MODEL));
    }
    out
}

/// The bundled model, or an error naming every place it was looked for.
pub fn bundled_model() -> anyhow::Result<PathBuf> {
    let candidates = bundled_model_candidates();
    if let Some(found) = candidates.iter().find(|p| p.is_file()) {
        return Ok(found.clone());
    }
    let home = if std::env::var_os("UMI_HOME").is_some() {
        ""
    } else {
        " ($UMI_HOME is not set)"
    };
    Err(crate::cli::report::Actionable {
        cause: format!(
            "no --model given and the bundled model is not installed: looked for {}{home}",
            candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        remedy: "run scripts/setup.sh in the checkout, install with scripts/install.sh, set UMI_HOME to a folder holding models/, or pass --model".into(),
    }
    .into())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    /// The model flags as a command of their own.
    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        model: super::ModelArgs,
    }

    fn engine_config(args: &[&str]) -> anyhow::Result<umi_engine::EngineConfig> {
        let argv = std::iter::once("umi").chain(args.iter().copied());
        Flags::try_parse_from(argv).unwrap().model.engine_config()
    }

    #[test]
    fn the_prefill_chunk_is_the_engines_and_out_of_range_ones_are_refused_by_name() {
        let default = engine_config(&[]).unwrap();
        assert_eq!(
            default.prefill_chunk,
            umi_engine::generate::DEFAULT_PREFILL_CHUNK
        );
        assert_eq!(
            engine_config(&["--prefill-chunk", "100"])
                .unwrap()
                .prefill_chunk,
            100
        );
        for bad in ["0", "8193"] {
            let e = engine_config(&["--prefill-chunk", bad]).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("--prefill-chunk must be 1 to 8192 tokens, not {bad}")
            );
        }
    }
}
