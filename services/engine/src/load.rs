//! Opening a checkpoint: a GGUF file or a HuggingFace directory, plus its tokenizer.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;

use crate::config::LlamaConfig;
use crate::device::WeightDType;
use crate::error::{EngineError, Result};
use crate::lora::{LoraAdapter, LoraSource};
use crate::model::Llama;
use crate::tokenizer::Tokenizer;
use crate::weights::{GgufSource, HfSource, TensorSource};

#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// A `.gguf` file or a HuggingFace model directory.
    pub model: PathBuf,
    /// Overrides the tokenizer found with the weights (`tokenizer.json` or `tokenizer.model`).
    pub tokenizer: Option<PathBuf>,
    pub dtype: WeightDType,
    pub device: Device,
    /// A PEFT LoRA adapter directory, merged into the weights as they load.
    pub adapter: Option<PathBuf>,
}

/// A model ready to generate: weights, tokenizer, and a name for logs and metrics.
pub struct LoadedModel {
    pub name: String,
    pub model: Llama,
    pub tokenizer: Tokenizer,
}

impl LoadedModel {
    /// Serves the LoRA adapter in `dir` unmerged as `name`: requests naming it
    /// (`GenerateRequest::adapter`) run with it, others on the base weights, in the same
    /// batches.
    pub fn serve_adapter(&mut self, name: &str, dir: &Path) -> Result<()> {
        self.model.add_adapter(name, LoraAdapter::open(dir)?)?;
        tracing::info!(adapter = %dir.display(), name, "LoRA adapter served unmerged");
        Ok(())
    }
}

pub fn load(opts: &LoadOptions) -> Result<LoadedModel> {
    let path = &opts.model;
    let start = Instant::now();
    let meta = std::fs::metadata(path).map_err(|e| EngineError::load(path, e))?;
    // Header, config and tokenizer first: they are cheap, and a mismatch should be
    // reported before gigabytes of weights are read.
    let (config, mut source, found_tokenizer, tokenizer_origin): (_, Box<dyn TensorSource>, _, _) =
        if meta.is_dir() {
            let config = LlamaConfig::from_hf_json(&path.join("config.json"))?;
            let (tokenizer, origin) = match &opts.tokenizer {
                Some(t) => (tokenizer_file(t)?, t.clone()),
                None => hf_dir_tokenizer(path)?,
            };
            (config, Box::new(HfSource::open(path)?), tokenizer, origin)
        } else {
            let source = GgufSource::open(path)?;
            let config = LlamaConfig::from_gguf(path, &source.content)?;
            let embedded = Tokenizer::from_gguf(path, &source.content)?;
            let (tokenizer, origin) = match &opts.tokenizer {
                Some(t) => {
                    let given = tokenizer_file(t)?;
                    check_same_vocabulary(&given, &embedded, t, path)?;
                    (given, t.clone())
                }
                None => (embedded, path.clone()),
            };
            (config, Box::new(source), tokenizer, origin)
        };
    let mut tokenizer = found_tokenizer;
    check_vocabulary_size(&tokenizer, &tokenizer_origin, config.vocab_size)?;
    if tokenizer.eos_ids().is_empty() {
        tokenizer.set_eos_ids(config.eos_token_ids.clone());
    }
    let dtype = resolve_dtype(opts.dtype, path, meta.is_dir())?;
    let model = match &opts.adapter {
        None => Llama::load(config, source.as_mut(), dtype, &opts.device)?,
        Some(dir) => {
            // Read (and checked) before the base weights load.
            let mut adapter = LoraAdapter::open(dir)?;
            adapter.match_rope_layout(
                source.rope_layout(),
                config.num_attention_heads,
                config.num_key_value_heads,
            )?;
            let dense = !matches!(dtype, WeightDType::Quantized | WeightDType::Q8_0);
            let mut merging = LoraSource::new(source.as_mut(), adapter, dense);
            let model = Llama::load(config, &mut merging, dtype, &opts.device)?;
            let weights = merging.finish()?;
            tracing::info!(adapter = %dir.display(), weights, "LoRA adapter merged");
            model
        }
    };
    let file_name = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().trim_end_matches(".gguf").to_string())
            .unwrap_or_else(|| p.display().to_string())
    };
    let name = match &opts.adapter {
        None => file_name(path),
        Some(dir) => format!("{}+{}", file_name(path), file_name(dir)),
    };
    tracing::info!(
        model = %name,
        dtype = %dtype,
        layers = model.config().num_hidden_layers,
        vocab = model.config().vocab_size,
        load_ms = start.elapsed().as_millis() as u64,
        "model loaded"
    );
    Ok(LoadedModel {
        name,
        model,
        tokenizer,
    })
}

/// A tokenizer made for other weights is refused before they load: one with more tokens
/// than the model's vocabulary, or far fewer (checkpoints pad their embedding rows by at
/// most a few hundred for alignment; a gap past 1,024 rows and an eighth of the
/// vocabulary is another vocabulary, whose ids would name other tokens).
fn check_vocabulary_size(tokenizer: &Tokenizer, origin: &Path, vocab: usize) -> Result<()> {
    let tokens = tokenizer.vocab_size();
    if tokens > vocab || vocab - tokens > (vocab / 8).max(1024) {
        return Err(EngineError::load(
            origin,
            format!("tokenizer has {tokens} tokens but the model's vocabulary has {vocab}: tokenizer and weights do not match"),
        ));
    }
    Ok(())
}

/// A tokenizer given for a GGUF file must spell the file's own vocabulary: the token of a
/// sample of ids (every id of small vocabularies, about 1,000 spread over large ones) must
/// map back to the same id. A differently built tokenizer of the same vocabulary passes.
fn check_same_vocabulary(
    given: &Tokenizer,
    embedded: &Tokenizer,
    origin: &Path,
    model: &Path,
) -> Result<()> {
    let size = embedded.vocab_size() as u32;
    let step = (size / 1000).max(1);
    let mut checked = 0usize;
    let mut differ = Vec::new();
    for id in (0..size).step_by(step as usize) {
        let Some(token) = embedded.hf().id_to_token(id) else {
            continue;
        };
        checked += 1;
        if given.token_to_id(&token) != Some(id) {
            differ.push((id, token));
        }
    }
    // A few ids may be spelled differently (e.g. byte tokens); most must agree.
    if differ.len() * 100 > checked {
        let (id, token) = &differ[0];
        return Err(EngineError::load(
            origin,
            format!(
                "tokenizer does not match the vocabulary of {}: {} of {checked} sampled ids name other tokens (id {id} is {token:?} in the model)",
                model.display(),
                differ.len()
            ),
        ));
    }
    Ok(())
}

/// The precision weights are loaded in: `auto` is a HuggingFace directory's
/// `torch_dtype` (f32 when it names none) and f32 for GGUF; "quantized" means "as
/// stored", which for dense HuggingFace weights is f32.
pub fn resolve_dtype(asked: WeightDType, path: &Path, is_dir: bool) -> Result<WeightDType> {
    Ok(match (asked, is_dir) {
        (WeightDType::Quantized, true) => WeightDType::F32,
        (WeightDType::Auto, false) => WeightDType::F32,
        (WeightDType::Auto, true) => {
            let config = path.join("config.json");
            let text =
                std::fs::read_to_string(&config).map_err(|e| EngineError::load(&config, e))?;
            let value: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| EngineError::load(&config, format!("invalid config: {e}")))?;
            match value.get("torch_dtype").and_then(serde_json::Value::as_str) {
                None | Some("float32") => WeightDType::F32,
                Some("bfloat16") => WeightDType::BF16,
                Some("float16") => WeightDType::F16,
                Some(other) => {
                    return Err(EngineError::load(
                        &config,
                        format!("torch_dtype {other:?} is not one umi loads (float32, float16, bfloat16): give --dtype"),
                    ))
                }
            }
        }
        (d, _) => d,
    })
}

fn hf_dir_tokenizer(dir: &Path) -> Result<(Tokenizer, PathBuf)> {
    let json = dir.join("tokenizer.json");
    if json.exists() {
        return Ok((Tokenizer::from_json_file(&json)?, json));
    }
    let spm = dir.join("tokenizer.model");
    if spm.exists() {
        return Ok((Tokenizer::from_sentencepiece_file(&spm)?, spm));
    }
    Err(EngineError::load(
        dir,
        "no tokenizer.json or tokenizer.model",
    ))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_takes_the_checkpoints_torch_dtype_and_f32_for_gguf() {
        let dir = tempfile::tempdir().unwrap();
        let with = |torch_dtype: &str| {
            std::fs::write(
                dir.path().join("config.json"),
                format!(r#"{{"model_type": "llama"{torch_dtype}}}"#),
            )
            .unwrap();
            resolve_dtype(WeightDType::Auto, dir.path(), true)
        };
        assert_eq!(
            with(r#", "torch_dtype": "bfloat16""#).unwrap(),
            WeightDType::BF16
        );
        assert_eq!(
            with(r#", "torch_dtype": "float16""#).unwrap(),
            WeightDType::F16
        );
        assert_eq!(
            with(r#", "torch_dtype": "float32""#).unwrap(),
            WeightDType::F32
        );
        assert_eq!(with("").unwrap(), WeightDType::F32);
        let err = with(r#", "torch_dtype": "int8""#).unwrap_err().to_string();
        assert!(
            err.contains("config.json") && err.contains("\"int8\""),
            "{err}"
        );
        // Asked for by name, the precision is kept; GGUF files stay f32 under auto.
        assert_eq!(
            resolve_dtype(WeightDType::BF16, dir.path(), true).unwrap(),
            WeightDType::BF16
        );
        assert_eq!(
            resolve_dtype(WeightDType::Auto, Path::new("m.gguf"), false).unwrap(),
            WeightDType::F32
        );
        assert_eq!(
            resolve_dtype(WeightDType::Quantized, dir.path(), true).unwrap(),
            WeightDType::F32
        );
    }
}
