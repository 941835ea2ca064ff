//! `umi model convert`: GGUF ⇄ HuggingFace safetensors directory.
//!
//! The two formats store the same LLaMA weights under different names and with the Q/K
//! projection rows in different orders (llama.cpp interleaves rotary pairs, HuggingFace
//! keeps the two halves apart), so conversion renames, permutes and (GGUF → HF)
//! dequantizes.

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};

use crate::config::LlamaConfig;
use crate::error::{EngineError, Result};
use crate::tokenizer::Tokenizer;
use crate::weights::{
    gguf_to_hf_name, hf_to_gguf_name, GgufSource, HfSource, RopeLayout, TensorSource,
};

/// Writes `out_dir/{config.json, tokenizer.json, model.safetensors}` from a GGUF file,
/// with tensors in `dtype`.
pub fn gguf_to_hf(gguf: &Path, out_dir: &Path, dtype: DType) -> Result<()> {
    let mut source = GgufSource::open(gguf)?;
    let config = LlamaConfig::from_gguf(gguf, &source.content)?;
    let tokenizer = Tokenizer::from_gguf(gguf, &source.content)?;
    let names: Vec<String> = source.content.tensor_infos.keys().cloned().collect();
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for gguf_name in names {
        let hf_name = gguf_to_hf_name(&gguf_name).ok_or_else(|| {
            EngineError::load(gguf, format!("tensor {gguf_name} has no HuggingFace name"))
        })?;
        let tensor = source
            .take(&hf_name, &Device::Cpu)?
            .dequantize(&Device::Cpu)?;
        let tensor = reorder_rope(&config, &hf_name, tensor, RopeLayout::Halves)?;
        tensors.insert(hf_name, tensor.to_dtype(dtype)?);
    }
    std::fs::create_dir_all(out_dir).map_err(|e| EngineError::io(out_dir, e))?;
    let config_path = out_dir.join("config.json");
    let config_json = serde_json::to_string_pretty(&config.to_hf_json()).unwrap_or_default();
    write_atomically(&config_path, config_json.as_bytes())?;
    tokenizer.save_json(&out_dir.join("tokenizer.json"))?;
    let weights = out_dir.join("model.safetensors");
    umi_durable::replace_with(&weights, |tmp| {
        candle_core::safetensors::save(&tensors, tmp).map_err(std::io::Error::other)
    })
    .map_err(|e| EngineError::io(e.path, e.source))
}

/// Writes a GGUF file (tensors in F32 or F16) from a HuggingFace directory. The
/// tokenizer is embedded when it is byte-level BPE (`tokenizer.ggml.model = gpt2`).
pub fn hf_to_gguf(dir: &Path, out: &Path, dtype: GgmlDType) -> Result<()> {
    if !matches!(dtype, GgmlDType::F32 | GgmlDType::F16) {
        return Err(EngineError::invalid(
            "dtype",
            "GGUF output supports f32 and f16",
        ));
    }
    let config = LlamaConfig::from_hf_json(&dir.join("config.json"))?;
    let mut source = HfSource::open(dir)?;
    let mut names: Vec<String> = (0..config.num_hidden_layers)
        .flat_map(|i| {
            [
                "input_layernorm.weight",
                "self_attn.q_proj.weight",
                "self_attn.k_proj.weight",
                "self_attn.v_proj.weight",
                "self_attn.o_proj.weight",
                "post_attention_layernorm.weight",
                "mlp.gate_proj.weight",
                "mlp.up_proj.weight",
                "mlp.down_proj.weight",
            ]
            .map(|s| format!("model.layers.{i}.{s}"))
        })
        .collect();
    names.extend([
        "model.embed_tokens.weight".to_string(),
        "model.norm.weight".to_string(),
    ]);
    if source.contains("lm_head.weight") && !config.tie_word_embeddings {
        names.push("lm_head.weight".to_string());
    }
    let mut tensors: Vec<(String, QTensor)> = Vec::with_capacity(names.len());
    for name in &names {
        let tensor = source
            .take(name, &Device::Cpu)?
            .dequantize(&Device::Cpu)?
            .to_dtype(DType::F32)?;
        let tensor = reorder_rope(&config, name, tensor, RopeLayout::Interleaved)?;
        // Norms stay F32, as llama.cpp writes them.
        let qdtype = if tensor.rank() == 1 {
            GgmlDType::F32
        } else {
            dtype
        };
        let gguf_name = hf_to_gguf_name(name).unwrap_or_else(|| name.clone());
        tensors.push((gguf_name, QTensor::quantize(&tensor, qdtype)?));
    }

    let mut metadata: Vec<(String, gguf_file::Value)> = vec![
        (
            "general.architecture".into(),
            gguf_file::Value::String("llama".into()),
        ),
        (
            "general.name".into(),
            gguf_file::Value::String(dir_name(dir)),
        ),
        (
            "llama.context_length".into(),
            u32_value(config.max_position_embeddings),
        ),
        (
            "llama.embedding_length".into(),
            u32_value(config.hidden_size),
        ),
        (
            "llama.feed_forward_length".into(),
            u32_value(config.intermediate_size),
        ),
        (
            "llama.block_count".into(),
            u32_value(config.num_hidden_layers),
        ),
        (
            "llama.attention.head_count".into(),
            u32_value(config.num_attention_heads),
        ),
        (
            "llama.attention.head_count_kv".into(),
            u32_value(config.num_key_value_heads),
        ),
        (
            "llama.attention.layer_norm_rms_epsilon".into(),
            gguf_file::Value::F32(config.rms_norm_eps as f32),
        ),
        (
            "llama.rope.freq_base".into(),
            gguf_file::Value::F32(config.rope_theta as f32),
        ),
        ("llama.vocab_size".into(), u32_value(config.vocab_size)),
        (
            "llama.rope.dimension_count".into(),
            u32_value(config.head_dim()),
        ),
    ];
    let tokenizer_json = dir.join("tokenizer.json");
    if tokenizer_json.exists() {
        let tokenizer = Tokenizer::from_json_file(&tokenizer_json)?;
        metadata.extend(byte_level_tokenizer_metadata(
            &tokenizer_json,
            &tokenizer,
            &config,
        )?);
    }
    let md_refs: Vec<(&str, &gguf_file::Value)> =
        metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut buf = std::io::Cursor::new(Vec::new());
    gguf_file::write(&mut buf, &md_refs, &tensor_refs).map_err(|e| EngineError::load(out, e))?;
    write_atomically(out, buf.get_ref())
}

/// Q and K rows move between rope layouts; every other tensor is unchanged.
fn reorder_rope(
    config: &LlamaConfig,
    hf_name: &str,
    tensor: Tensor,
    to: RopeLayout,
) -> Result<Tensor> {
    let heads = if hf_name.ends_with("self_attn.q_proj.weight") {
        config.num_attention_heads
    } else if hf_name.ends_with("self_attn.k_proj.weight") {
        config.num_key_value_heads
    } else {
        return Ok(tensor);
    };
    Ok(permute_rope_rows(&tensor, heads, to)?)
}

/// The `tokenizer.ggml.*` keys for a byte-level BPE tokenizer.json.
fn byte_level_tokenizer_metadata(
    path: &Path,
    tokenizer: &Tokenizer,
    config: &LlamaConfig,
) -> Result<Vec<(String, gguf_file::Value)>> {
    let text = std::fs::read_to_string(path).map_err(|e| EngineError::load(path, e))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| EngineError::load(path, format!("invalid JSON: {e}")))?;
    let model = &json["model"];
    let is_byte_level = text.contains("\"ByteLevel\"") && model["type"] == "BPE";
    if !is_byte_level {
        return Err(EngineError::load(
            path,
            "only byte-level BPE tokenizers can be embedded in GGUF; convert without it and pass --tokenizer",
        ));
    }
    let vocab = tokenizer.hf().get_vocab(true);
    let mut tokens = vec![String::new(); vocab.len()];
    for (token, id) in &vocab {
        if let Some(slot) = tokens.get_mut(*id as usize) {
            *slot = token.clone();
        }
    }
    let specials: Vec<u32> = json["added_tokens"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|t| t["special"] == true)
                .filter_map(|t| t["id"].as_u64().map(|id| id as u32))
                .collect()
        })
        .unwrap_or_default();
    let types: Vec<gguf_file::Value> = (0..tokens.len() as u32)
        .map(|id| gguf_file::Value::I32(if specials.contains(&id) { 3 } else { 1 }))
        .collect();
    let merges: Vec<gguf_file::Value> = model["merges"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(|merge| match merge {
                    serde_json::Value::String(s) => Some(s.clone()),
                    serde_json::Value::Array(pair) => Some(format!(
                        "{} {}",
                        pair.first()?.as_str()?,
                        pair.get(1)?.as_str()?
                    )),
                    _ => None,
                })
                .map(gguf_file::Value::String)
                .collect()
        })
        .unwrap_or_default();
    let pre = if text.contains("\"Digits\"") {
        "smollm"
    } else {
        "default"
    };
    let mut md = vec![
        (
            "tokenizer.ggml.model".to_string(),
            gguf_file::Value::String("gpt2".into()),
        ),
        (
            "tokenizer.ggml.pre".to_string(),
            gguf_file::Value::String(pre.into()),
        ),
        (
            "tokenizer.ggml.tokens".to_string(),
            gguf_file::Value::Array(tokens.into_iter().map(gguf_file::Value::String).collect()),
        ),
        (
            "tokenizer.ggml.token_type".to_string(),
            gguf_file::Value::Array(types),
        ),
        (
            "tokenizer.ggml.merges".to_string(),
            gguf_file::Value::Array(merges),
        ),
        (
            "tokenizer.ggml.add_bos_token".to_string(),
            gguf_file::Value::Bool(tokenizer.bos_id().is_some()),
        ),
    ];
    if let Some(bos) = config.bos_token_id {
        md.push((
            "tokenizer.ggml.bos_token_id".into(),
            gguf_file::Value::U32(bos),
        ));
    }
    if let Some(&eos) = tokenizer.eos_ids().first().or(config.eos_token_ids.first()) {
        md.push((
            "tokenizer.ggml.eos_token_id".into(),
            gguf_file::Value::U32(eos),
        ));
    }
    Ok(md)
}

fn u32_value(v: usize) -> gguf_file::Value {
    gguf_file::Value::U32(v as u32)
}

fn dir_name(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Writes beside the target, then renames, so a crash never leaves a half-written file.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    umi_durable::write(path, bytes).map_err(|e| EngineError::io(e.path, e.source))
}

/// Applies llama.cpp's Q/K row permutation (HF halves → interleaved) or undoes it.
/// `w` is (heads * head_dim, in).
pub fn permute_rope_rows(w: &Tensor, heads: usize, to: RopeLayout) -> candle_core::Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    let half = rows / heads / 2;
    match to {
        // HF [h][2][half] -> GGUF [h][half][2]
        RopeLayout::Interleaved => w
            .reshape((heads, 2, half, cols))?
            .transpose(1, 2)?
            .reshape((rows, cols)),
        // GGUF [h][half][2] -> HF [h][2][half]
        RopeLayout::Halves => w
            .reshape((heads, half, 2, cols))?
            .transpose(1, 2)?
            .reshape((rows, cols)),
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    #[test]
    fn rope_permutation_round_trips_and_interleaves() {
        // 2 heads, head_dim 4, 1 column: rows are [h0: a0 a1 b0 b1][h1: ...] in HF layout.
        let w = Tensor::arange(0f32, 8., &Device::Cpu)
            .unwrap()
            .reshape((8, 1))
            .unwrap();
        let inter = permute_rope_rows(&w, 2, RopeLayout::Interleaved).unwrap();
        let rows: Vec<f32> = inter.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(rows, vec![0., 2., 1., 3., 4., 6., 5., 7.]);
        let back = permute_rope_rows(&inter, 2, RopeLayout::Halves).unwrap();
        assert_eq!(
            back.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            (0..8).map(|i| i as f32).collect::<Vec<_>>()
        );
    }
}
