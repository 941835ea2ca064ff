//! The LLaMA hyper-parameters, read from GGUF metadata or a HuggingFace `config.json`.

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file;
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};

/// Hyper-parameters of a LLaMA-architecture decoder, in HuggingFace naming.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub vocab_size: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    /// Linear rope scaling (`rope_scaling: {"type": "linear", "factor": F}`, used by
    /// LLaMA-2 fine-tunes with a longer context): positions are divided by F. 1 is none.
    #[serde(default = "no_rope_scaling")]
    pub rope_scaling_factor: f64,
}

fn no_rope_scaling() -> f64 {
    1.0
}

impl LlamaConfig {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Reads `config.json` from a HuggingFace model directory.
    pub fn from_hf_json(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| EngineError::load(path, e))?;
        let raw: HfConfig = serde_json::from_str(&text)
            .map_err(|e| EngineError::load(path, format!("invalid config: {e}")))?;
        let architecture = raw
            .architectures
            .as_ref()
            .and_then(|a| a.first().cloned())
            .or_else(|| raw.model_type.clone())
            .unwrap_or_else(|| "<none>".to_string());
        let is_llama = raw.model_type.as_deref() == Some("llama")
            || architecture == "LlamaForCausalLM"
            || architecture == "llama";
        if !is_llama {
            return Err(EngineError::load(
                path,
                format!("unknown architecture {architecture:?}: umi serves LLaMA-family models (LlamaForCausalLM)"),
            ));
        }
        let missing = |field: &str| EngineError::load(path, format!("missing field {field:?}"));
        let num_attention_heads = raw
            .num_attention_heads
            .ok_or_else(|| missing("num_attention_heads"))?;
        let rope_scaling_factor = match raw.rope_scaling.filter(|v| !v.is_null()) {
            None => 1.0,
            Some(scaling) => {
                rope_scaling_factor(&scaling).map_err(|m| EngineError::load(path, m))?
            }
        };
        let config = LlamaConfig {
            hidden_size: raw.hidden_size.ok_or_else(|| missing("hidden_size"))?,
            intermediate_size: raw
                .intermediate_size
                .ok_or_else(|| missing("intermediate_size"))?,
            num_hidden_layers: raw
                .num_hidden_layers
                .ok_or_else(|| missing("num_hidden_layers"))?,
            num_attention_heads,
            num_key_value_heads: raw.num_key_value_heads.unwrap_or(num_attention_heads),
            vocab_size: raw.vocab_size.ok_or_else(|| missing("vocab_size"))?,
            rms_norm_eps: raw.rms_norm_eps.unwrap_or(1e-6),
            rope_theta: raw.rope_theta.unwrap_or(10_000.0),
            max_position_embeddings: raw.max_position_embeddings.unwrap_or(4096),
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
            bos_token_id: raw.bos_token_id,
            eos_token_ids: match raw.eos_token_id {
                Some(EosIds::One(id)) => vec![id],
                Some(EosIds::Many(ids)) => ids,
                None => vec![],
            },
            rope_scaling_factor,
        };
        config.validate().map_err(|m| EngineError::load(path, m))?;
        Ok(config)
    }

    /// Reads the `llama.*` keys of a GGUF header.
    pub fn from_gguf(path: &Path, content: &gguf_file::Content) -> Result<Self> {
        let md = &content.metadata;
        let arch = md
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .unwrap_or_else(|| "<none>".to_string());
        if arch != "llama" {
            return Err(EngineError::load(
                path,
                format!("unknown architecture {arch:?}: umi serves LLaMA-family models"),
            ));
        }
        let get = |key: &str| -> Result<&gguf_file::Value> {
            md.get(&format!("llama.{key}"))
                .ok_or_else(|| EngineError::load(path, format!("GGUF metadata lacks llama.{key}")))
        };
        let usize_of = |key: &str| -> Result<usize> {
            let value = get(key)?;
            value
                .to_u32()
                .map(|v| v as usize)
                .or_else(|_| value.to_u64().map(|v| v as usize))
                .map_err(|e| EngineError::load(path, format!("llama.{key}: {e}")))
        };
        let num_attention_heads = usize_of("attention.head_count")?;
        let vocab_size = match usize_of("vocab_size") {
            Ok(v) => v,
            Err(_) => gguf_token_count(md).ok_or_else(|| {
                EngineError::load(
                    path,
                    "GGUF metadata has neither llama.vocab_size nor tokenizer.ggml.tokens",
                )
            })?,
        };
        let tie_word_embeddings = !content.tensor_infos.contains_key("output.weight");
        let config = LlamaConfig {
            hidden_size: usize_of("embedding_length")?,
            intermediate_size: usize_of("feed_forward_length")?,
            num_hidden_layers: usize_of("block_count")?,
            num_attention_heads,
            num_key_value_heads: usize_of("attention.head_count_kv").unwrap_or(num_attention_heads),
            vocab_size,
            rms_norm_eps: get("attention.layer_norm_rms_epsilon")
                .and_then(|v| v.to_f32().map_err(|e| EngineError::load(path, e)))
                .map(f64::from)
                .unwrap_or(1e-5),
            rope_theta: get("rope.freq_base")
                .and_then(|v| v.to_f32().map_err(|e| EngineError::load(path, e)))
                .map(f64::from)
                .unwrap_or(10_000.0),
            max_position_embeddings: usize_of("context_length").unwrap_or(4096),
            tie_word_embeddings,
            bos_token_id: md
                .get("tokenizer.ggml.bos_token_id")
                .and_then(|v| v.to_u32().ok()),
            eos_token_ids: md
                .get("tokenizer.ggml.eos_token_id")
                .and_then(|v| v.to_u32().ok())
                .into_iter()
                .collect(),
            rope_scaling_factor: match md
                .get("llama.rope.scaling.type")
                .and_then(|v| v.to_string().ok())
                .map(String::as_str)
            {
                None | Some("none") => 1.0,
                Some("linear") => get("rope.scaling.factor")
                    .and_then(|v| v.to_f32().map_err(|e| EngineError::load(path, e)))
                    .map(f64::from)?,
                Some(other) => {
                    return Err(EngineError::load(
                        path,
                        format!("rope scaling {other:?} is not supported (only linear)"),
                    ))
                }
            },
        };
        config.validate().map_err(|m| EngineError::load(path, m))?;
        Ok(config)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Err(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if self.num_key_value_heads == 0
            || !self
                .num_attention_heads
                .is_multiple_of(self.num_key_value_heads)
        {
            return Err(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.num_attention_heads, self.num_key_value_heads
            ));
        }
        if !(self.rope_scaling_factor.is_finite() && self.rope_scaling_factor >= 1.0) {
            return Err(format!(
                "rope scaling factor {} is not a number of at least 1",
                self.rope_scaling_factor
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            return Err(format!(
                "head dimension {} is odd; rope needs it even",
                self.head_dim()
            ));
        }
        Ok(())
    }

    /// The `config.json` written by `umi model convert`.
    pub fn to_hf_json(&self) -> serde_json::Value {
        serde_json::json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "vocab_size": self.vocab_size,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": match self.eos_token_ids.as_slice() {
                [one] => serde_json::json!(one),
                many => serde_json::json!(many),
            },
            "hidden_act": "silu",
            "torch_dtype": "float32",
            "rope_scaling": (self.rope_scaling_factor != 1.0).then(|| serde_json::json!({
                "type": "linear",
                "factor": self.rope_scaling_factor,
            })),
        })
    }
}

/// The factor of a `rope_scaling` entry of `config.json`: linear only, other types
/// refused by name.
fn rope_scaling_factor(scaling: &serde_json::Value) -> std::result::Result<f64, String> {
    // `type` in older configs, `rope_type` in newer ones.
    let kind = scaling
        .get("type")
        .or_else(|| scaling.get("rope_type"))
        .and_then(serde_json::Value::as_str)
        .unwrap_or("<none>");
    if kind != "linear" {
        return Err(format!(
            "rope_scaling type {kind:?} is not supported (only \"linear\")"
        ));
    }
    scaling
        .get("factor")
        .and_then(serde_json::Value::as_f64)
        .ok_or_else(|| format!("rope_scaling {scaling} has no numeric \"factor\""))
}

fn gguf_token_count(md: &HashMap<String, gguf_file::Value>) -> Option<usize> {
    md.get("tokenizer.ggml.tokens")?
        .to_vec()
        .ok()
        .map(|v| v.len())
}

#[derive(Deserialize)]
struct HfConfig {
    architectures: Option<Vec<String>>,
    model_type: Option<String>,
    hidden_size: Option<usize>,
    intermediate_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    num_key_value_heads: Option<usize>,
    vocab_size: Option<usize>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    max_position_embeddings: Option<usize>,
    tie_word_embeddings: Option<bool>,
    bos_token_id: Option<u32>,
    eos_token_id: Option<EosIds>,
    rope_scaling: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum EosIds {
    One(u32),
    Many(Vec<u32>),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, json: &str) -> std::path::PathBuf {
        let path = dir.join("config.json");
        std::fs::write(&path, json).unwrap();
        path
    }

    #[test]
    fn reads_alpha_umi_7b_config() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            r#"{"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":4096,
                "intermediate_size":11008,"num_hidden_layers":32,"num_attention_heads":32,
                "max_position_embeddings":4096,"rms_norm_eps":1e-06,"vocab_size":32000,
                "bos_token_id":1,"eos_token_id":2,"pad_token_id":0,"rope_scaling":null}"#,
        );
        let c = LlamaConfig::from_hf_json(&path).unwrap();
        assert_eq!(c.num_key_value_heads, 32);
        assert_eq!(c.head_dim(), 128);
        assert_eq!(c.eos_token_ids, vec![2]);
        assert_eq!(c.rope_theta, 10_000.0);
        assert!(!c.tie_word_embeddings);
    }

    #[test]
    fn unknown_architecture_is_named_with_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            r#"{"architectures":["MistralForCausalLM"],"model_type":"mistral","hidden_size":8}"#,
        );
        let err = LlamaConfig::from_hf_json(&path).unwrap_err().to_string();
        assert!(err.contains("config.json"), "{err}");
        assert!(
            err.contains("unknown architecture \"MistralForCausalLM\""),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1);
    }

    #[test]
    fn config_round_trips_through_json() {
        let dir = tempfile::tempdir().unwrap();
        let c = LlamaConfig {
            hidden_size: 576,
            intermediate_size: 1536,
            num_hidden_layers: 30,
            num_attention_heads: 9,
            num_key_value_heads: 3,
            vocab_size: 49152,
            rms_norm_eps: 1e-5,
            rope_theta: 100000.0,
            max_position_embeddings: 8192,
            tie_word_embeddings: true,
            bos_token_id: Some(1),
            eos_token_ids: vec![2],
            rope_scaling_factor: 1.0,
        };
        let path = write(dir.path(), &c.to_hf_json().to_string());
        assert_eq!(LlamaConfig::from_hf_json(&path).unwrap(), c);
        let scaled = LlamaConfig {
            rope_scaling_factor: 2.0,
            ..c
        };
        let path = write(dir.path(), &scaled.to_hf_json().to_string());
        assert_eq!(LlamaConfig::from_hf_json(&path).unwrap(), scaled);
    }

    #[test]
    fn linear_rope_scaling_is_read_and_other_types_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let config = |scaling: &str| {
            format!(
                r#"{{"model_type":"llama","hidden_size":64,"intermediate_size":128,
                "num_hidden_layers":1,"num_attention_heads":4,"vocab_size":10,
                "rope_scaling":{scaling}}}"#
            )
        };
        let path = write(dir.path(), &config(r#"{"type":"linear","factor":4.0}"#));
        assert_eq!(
            LlamaConfig::from_hf_json(&path)
                .unwrap()
                .rope_scaling_factor,
            4.0
        );
        for (scaling, says) in [
            (
                r#"{"type":"dynamic","factor":2.0}"#,
                "\"dynamic\" is not supported",
            ),
            (
                r#"{"rope_type":"llama3","factor":8.0}"#,
                "\"llama3\" is not supported",
            ),
            (r#"{"type":"linear"}"#, "no numeric \"factor\""),
            (r#"{"type":"linear","factor":0.5}"#, "at least 1"),
        ] {
            let path = write(dir.path(), &config(scaling));
            let err = LlamaConfig::from_hf_json(&path).unwrap_err().to_string();
            assert!(err.contains(says), "{scaling}: {err}");
        }
    }
}
