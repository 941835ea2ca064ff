//! Opening a checkpoint: a GGUF file or a HuggingFace directory, plus its tokenizer.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;

use crate::config::LlamaConfig;
use crate::device::WeightDType;
use crate::error::{EngineError, Result};
use crate::model::Llama;
use crate::tokenizer::Tokenizer;
use crate::weights::{GgufSource, HfSource};

#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// A `.gguf` file or a HuggingFace model directory.
    pub model: PathBuf,
    /// Overrides the tokenizer found beside the weights (`tokenizer.json` or `tokenizer.model`).
    pub tokenizer: Option<PathBuf>,
    pub dtype: WeightDType,
    pub device: Device,
}

/// A model ready to generate: weights, tokenizer, and a name for logs and metrics.
pub struct LoadedModel {
    pub name: String,
    pub model: Llama,
    pub tokenizer: Tokenizer,
}

pub fn load(opts: &LoadOptions) -> Result<LoadedModel> {
    let path = &opts.model;
    let start = Instant::now();
    let meta = std::fs::metadata(path).map_err(|e| EngineError::load(path, e))?;
    let (model, found_tokenizer) = if meta.is_dir() {
        load_hf_dir(path, opts)?
    } else {
        load_gguf(path, opts)?
    };
    let mut tokenizer = match &opts.tokenizer {
        Some(t) => tokenizer_file(t)?,
        None => found_tokenizer,
    };
    let tokenizer_path = opts.tokenizer.clone().unwrap_or_else(|| path.clone());
    let vocab = model.config().vocab_size;
    if tokenizer.vocab_size() > vocab {
        return Err(EngineError::load(
            tokenizer_path,
            format!(
                "tokenizer has {} tokens but the model's vocabulary has {vocab}: tokenizer and weights do not match",
                tokenizer.vocab_size()
            ),
        ));
    }
    if !model.config().eos_token_ids.is_empty() && tokenizer.eos_ids().is_empty() {
        tokenizer.set_eos_ids(model.config().eos_token_ids.clone());
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().trim_end_matches(".gguf").to_string())
        .unwrap_or_else(|| path.display().to_string());
    tracing::info!(
        model = %name,
        dtype = %opts.dtype,
        layers = model.config().num_hidden_layers,
        vocab,
        load_ms = start.elapsed().as_millis() as u64,
        "model loaded"
    );
    Ok(LoadedModel {
        name,
        model,
        tokenizer,
    })
}

fn load_gguf(path: &Path, opts: &LoadOptions) -> Result<(Llama, Tokenizer)> {
    let mut source = GgufSource::open(path)?;
    let config = LlamaConfig::from_gguf(path, &source.content)?;
    let tokenizer = match &opts.tokenizer {
        Some(_) => None,
        None => Some(Tokenizer::from_gguf(path, &source.content)?),
    };
    let model = Llama::load(config, &mut source, opts.dtype, &opts.device)?;
    // The tokenizer override (if any) is applied by the caller.
    let tokenizer = match tokenizer {
        Some(t) => t,
        None => tokenizer_file(opts.tokenizer.as_deref().unwrap_or(path))?,
    };
    Ok((model, tokenizer))
}

fn load_hf_dir(dir: &Path, opts: &LoadOptions) -> Result<(Llama, Tokenizer)> {
    let config = LlamaConfig::from_hf_json(&dir.join("config.json"))?;
    let tokenizer = match &opts.tokenizer {
        Some(t) => tokenizer_file(t)?,
        None => {
            let json = dir.join("tokenizer.json");
            let spm = dir.join("tokenizer.model");
            if json.exists() {
                Tokenizer::from_json_file(&json)?
            } else if spm.exists() {
                Tokenizer::from_sentencepiece_file(&spm)?
            } else {
                return Err(EngineError::load(
                    dir,
                    "no tokenizer.json or tokenizer.model",
                ));
            }
        }
    };
    let dtype = match opts.dtype {
        WeightDType::Quantized => WeightDType::F32,
        d => d,
    };
    let mut source = HfSource::open(dir)?;
    let model = Llama::load(config, &mut source, dtype, &opts.device)?;
    Ok((model, tokenizer))
}

/// A tokenizer given on its own: `tokenizer.json`, or a SentencePiece model.
pub fn tokenizer_file(path: &Path) -> Result<Tokenizer> {
    if !path.exists() {
        return Err(EngineError::load(path, "no such file"));
    }
    if path.extension().is_some_and(|e| e == "json") {
        Tokenizer::from_json_file(path)
    } else {
        Tokenizer::from_sentencepiece_file(path)
    }
}
