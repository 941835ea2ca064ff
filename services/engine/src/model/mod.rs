//! A LLaMA decoder on candle whose weights are either GGUF-quantized or dense.
//!
//! The key/value cache lives outside the model (`kv_cache::KvCache`), so one set of
//! weights serves any number of sequences.
//!
//! This file holds the model and its forward pass; the rest, one idea a file:
//! `build` (loading and packing the weights), `rope` (the rotary tables), `attention`
//! (which attention path a layer takes, and candle's per-sequence one), `attention_cpu`
//! (the AVX-512 path) and `attention_padded` (a decode batch as one computation on an
//! accelerator).

mod attention;
mod attention_cpu;
mod attention_padded;
mod build;
mod rope;

use candle_core::{DType, Device, Tensor};

use crate::config::LlamaConfig;
use crate::device::WeightDType;
use crate::error::{EngineError, Result};
pub use crate::kv_cache::KvCache;
use crate::kv_cache::LayerKv;
use crate::linear::Linear;

use attention::causal_mask;
use rope::Rope;

/// Q, K and V projections are stored stacked in one matrix (and gate/up in another): one
/// pass over the input instead of three, which is what decode time is made of.
struct Attention {
    qkv: Linear,
    o: Linear,
}

struct Mlp {
    gate_up: Linear,
    down: Linear,
}

struct Layer {
    attn_norm: Tensor,
    attn: Attention,
    ffn_norm: Tensor,
    mlp: Mlp,
}

pub struct Llama {
    config: LlamaConfig,
    embed: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    lm_head: Linear,
    rope: Rope,
    /// Activation dtype: f32 for quantized weights, else the weights' dtype.
    dtype: DType,
    device: Device,
    context: usize,
    weight_dtype: WeightDType,
}

impl Llama {
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn context_len(&self) -> usize {
        self.context
    }

    pub fn weight_dtype(&self) -> WeightDType {
        self.weight_dtype
    }

    pub fn new_cache(&self) -> KvCache {
        KvCache {
            layers: (0..self.layers.len()).map(|_| None).collect(),
            len: 0,
        }
    }

    /// Runs `tokens` (appended after what `cache` holds) and returns the f32 logits of
    /// the last position, shape (vocab,).
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Tensor> {
        let seq = tokens.len();
        let offset = cache.len;
        if seq == 0 {
            return Err(EngineError::invalid("input", "no tokens to run"));
        }
        self.check_room(offset + seq)?;
        let ids = Tensor::new(tokens, &self.device)?;
        let mut x = self.embed.index_select(&ids, 0)?.unsqueeze(0)?;
        let mask = if seq > 1 {
            Some(causal_mask(seq, offset, &self.device)?)
        } else {
            None
        };
        for (i, layer) in self.layers.iter().enumerate() {
            let residual = x.clone();
            let normed = self.rms_norm(&x, &layer.attn_norm)?;
            let qkv = layer.attn.qkv.forward(&normed)?;
            let mut ys = self.attend(
                &[qkv],
                &[offset],
                &mut [&mut cache.layers[i]],
                mask.as_ref(),
            )?;
            x = (layer.attn.o.forward(&ys.remove(0))? + residual)?;
            x = self.mlp(layer, &x)?;
        }
        cache.len += seq;
        let last = x.narrow(1, seq - 1, 1)?;
        let logits = self.lm_head.forward(&self.rms_norm(&last, &self.norm)?)?;
        Ok(logits.flatten_all()?.to_dtype(DType::F32)?)
    }

    /// One decode step for several sequences at once: `tokens[i]` is appended after what
    /// `caches[i]` holds. Returns the f32 logits, shape (batch, vocab).
    ///
    /// The matrix products run once for the whole batch (the weights are read once);
    /// attention runs per sequence, since each has its own length. Row for row the
    /// logits are those `forward` gives each sequence alone.
    pub fn forward_batch(&self, tokens: &[u32], caches: &mut [&mut KvCache]) -> Result<Tensor> {
        if tokens.is_empty() || tokens.len() != caches.len() {
            return Err(EngineError::invalid(
                "batch",
                format!("{} tokens for {} sequences", tokens.len(), caches.len()),
            ));
        }
        if let ([token], [cache]) = (tokens, &mut *caches) {
            return Ok(self.forward(&[*token], cache)?.unsqueeze(0)?);
        }
        for cache in caches.iter() {
            self.check_room(cache.len + 1)?;
        }
        let ids = Tensor::new(tokens, &self.device)?;
        // (batch, 1, hidden): each sequence is a batch row of length one.
        let mut x = self.embed.index_select(&ids, 0)?.unsqueeze(1)?;
        for (i, layer) in self.layers.iter().enumerate() {
            let residual = x.clone();
            let normed = self.rms_norm(&x, &layer.attn_norm)?;
            let qkv = layer.attn.qkv.forward(&normed)?;
            let rows = (0..caches.len())
                .map(|s| qkv.narrow(0, s, 1))
                .collect::<candle_core::Result<Vec<_>>>()?;
            let offsets: Vec<usize> = caches.iter().map(|c| c.len).collect();
            let mut slots: Vec<&mut Option<LayerKv>> =
                caches.iter_mut().map(|c| &mut c.layers[i]).collect();
            let ys = self.attend(&rows, &offsets, &mut slots, None)?;
            x = (layer.attn.o.forward(&Tensor::cat(&ys, 0)?)? + residual)?;
            x = self.mlp(layer, &x)?;
        }
        for cache in caches.iter_mut() {
            cache.len += 1;
        }
        let logits = self.lm_head.forward(&self.rms_norm(&x, &self.norm)?)?;
        Ok(logits.squeeze(1)?.to_dtype(DType::F32)?)
    }

    fn check_room(&self, positions: usize) -> Result<()> {
        if positions > self.context {
            return Err(EngineError::PromptTooLong {
                prompt: positions,
                context: self.context,
            });
        }
        Ok(())
    }

    fn rms_norm(&self, x: &Tensor, weight: &Tensor) -> Result<Tensor> {
        crate::pointwise::rms_norm(x, weight, self.config.rms_norm_eps as f32)
    }

    /// The feed-forward block with its residual connection.
    fn mlp(&self, layer: &Layer, x: &Tensor) -> Result<Tensor> {
        let mlp = &layer.mlp;
        let gate_up = mlp.gate_up.forward(&self.rms_norm(x, &layer.ffn_norm)?)?;
        let ff = self.config.intermediate_size;
        let act = crate::pointwise::silu_mul(&gate_up, ff)?;
        Ok((mlp.down.forward(&act)? + x)?)
    }
}
