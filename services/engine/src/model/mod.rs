//! A LLaMA decoder on candle whose weights are either GGUF-quantized or dense.
//!
//! The key/value cache lives outside the model (`kv_cache::KvCache`), so one set of
//! weights serves any number of sequences.
//!
//! LoRA adapters served unmerged ride along the base weights: a request names one, and
//! each linear layer adds that adapter's low-rank product to its row (`lora.rs`).
//!
//! This file holds the model and its forward pass; the rest, one idea a file:
//! `build` (loading and packing the weights), `rope` (the rotary tables), `attention`
//! (which attention path a layer takes, and candle's per-sequence one), `attention_cpu`
//! (the x86-64 path, AVX-512 or AVX2) and `attention_padded` (a decode batch as one computation on an
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
use crate::lora::{LoraAdapter, LowRank};
use crate::weights::RopeLayout;

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

/// An adapter served unmerged: its share of each linear layer.
struct ServedAdapter {
    name: String,
    layers: Vec<LayerLora>,
    lm_head: Option<LowRank>,
}

#[derive(Default)]
struct LayerLora {
    qkv: Option<LowRank>,
    o: Option<LowRank>,
    gate_up: Option<LowRank>,
    down: Option<LowRank>,
}

/// Which adapter each row of a forward pass takes: one for a whole sequence (prefill), or
/// one per row (a decode batch).
#[derive(Clone)]
enum Rows<'a> {
    One(Option<&'a ServedAdapter>),
    Each(Vec<Option<&'a ServedAdapter>>),
}

/// The next chunk of one sequence's prompt, for a mixed step (`Llama::forward_mixed`).
pub struct Chunk<'c> {
    pub tokens: &'c [u32],
    pub cache: &'c mut KvCache,
    pub adapter: Option<usize>,
}

/// Rows of a forward pass that share a shape and a path through the kernels: a prompt
/// chunk of one sequence (1, chunk, hidden) or a decode batch (batch, 1, hidden).
struct Part<'m, 'c> {
    x: Tensor,
    rows: Rows<'m>,
    caches: Vec<&'c mut KvCache>,
    /// Where each sequence's new rows start.
    offsets: Vec<usize>,
    mask: Option<Tensor>,
    /// Positions each sequence gains.
    new_tokens: usize,
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
    /// Adapters served unmerged, by their index in requests.
    adapters: Vec<ServedAdapter>,
    /// The checkpoint's q/k row order (an adapter's rows are put in it).
    rope_layout: RopeLayout,
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

    /// What a token costs this model, from its matrices as stored (`roofline`).
    pub fn costs(&self) -> crate::roofline::Costs {
        let (mut layer_params, mut layer_bytes) = (0, 0);
        for layer in &self.layers {
            for linear in [
                &layer.attn.qkv,
                &layer.attn.o,
                &layer.mlp.gate_up,
                &layer.mlp.down,
            ] {
                let (params, bytes) = linear.size();
                layer_params += params;
                layer_bytes += bytes;
            }
        }
        let (lm_head_params, lm_head_bytes) = self.lm_head.size();
        let c = &self.config;
        let head_dim = c.hidden_size / c.num_attention_heads.max(1);
        crate::roofline::Costs {
            layer_params,
            layer_bytes,
            lm_head_params,
            lm_head_bytes,
            layers: self.layers.len(),
            hidden: c.hidden_size,
            kv_width: c.num_key_value_heads * head_dim,
            kv_element_bytes: self.dtype.size_in_bytes(),
        }
    }

    pub fn new_cache(&self) -> KvCache {
        KvCache {
            layers: (0..self.layers.len()).map(|_| None).collect(),
            len: 0,
        }
    }

    /// Serves `adapter` unmerged under `name`: its matrices join the model (a few MB at
    /// α-UMi's rank 8, beside gigabytes of base weights), and requests naming it add them.
    pub fn add_adapter(&mut self, name: &str, mut adapter: LoraAdapter) -> Result<()> {
        if self.adapter_index(name).is_some() {
            return Err(EngineError::invalid(
                "adapter",
                format!("{name:?} is served already"),
            ));
        }
        let c = &self.config;
        adapter.match_rope_layout(
            self.rope_layout,
            c.num_attention_heads,
            c.num_key_value_heads,
        )?;
        let (h, kv, ff, v) = (
            c.hidden_size,
            c.num_key_value_heads * c.head_dim(),
            c.intermediate_size,
            c.vocab_size,
        );
        let mut used = Vec::new();
        let mut low_rank = |parts: &[(String, usize)], inputs: usize| {
            adapter.low_rank(parts, inputs, &self.device, &mut used)
        };
        let mut layers = Vec::with_capacity(self.layers.len());
        for i in 0..self.layers.len() {
            let p = format!("model.layers.{i}");
            let part = |name: &str, rows: usize| (format!("{p}.{name}.weight"), rows);
            layers.push(LayerLora {
                qkv: low_rank(
                    &[
                        part("self_attn.q_proj", h),
                        part("self_attn.k_proj", kv),
                        part("self_attn.v_proj", kv),
                    ],
                    h,
                )?,
                o: low_rank(&[part("self_attn.o_proj", h)], h)?,
                gate_up: low_rank(&[part("mlp.gate_proj", ff), part("mlp.up_proj", ff)], h)?,
                down: low_rank(&[part("mlp.down_proj", h)], ff)?,
            });
        }
        let lm_head = low_rank(&[("lm_head.weight".to_string(), v)], h)?;
        adapter.check_all_used(&used)?;
        self.adapters.push(ServedAdapter {
            name: name.to_string(),
            layers,
            lm_head,
        });
        Ok(())
    }

    /// The index requests use for the adapter served as `name`.
    pub fn adapter_index(&self, name: &str) -> Option<usize> {
        self.adapters.iter().position(|a| a.name == name)
    }

    /// The names of the adapters served unmerged.
    pub fn adapter_names(&self) -> Vec<&str> {
        self.adapters.iter().map(|a| a.name.as_str()).collect()
    }

    fn served(&self, adapter: Option<usize>) -> Option<&ServedAdapter> {
        adapter.and_then(|a| self.adapters.get(a))
    }

    /// Runs `tokens` (appended after what `cache` holds) and returns the f32 logits of
    /// the last position, shape (vocab,), with `adapter` (an index of
    /// [`Llama::adapter_index`]) added to every layer it adapts.
    pub fn forward(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        adapter: Option<usize>,
    ) -> Result<Tensor> {
        let mut parts = [self.chunk_part(tokens, cache, adapter)?];
        self.run_layers(&mut parts)?;
        let [part] = parts;
        self.chunk_logits(part)
    }

    /// One decode step for several sequences at once: `tokens[i]` is appended after what
    /// `caches[i]` holds. Returns the f32 logits, shape (batch, vocab).
    ///
    /// The matrix products run once for the whole batch (the weights are read once);
    /// attention runs per sequence, since each has its own length. Row for row the
    /// logits are those `forward` gives each sequence alone.
    ///
    /// `adapters[i]` is sequence `i`'s adapter: each row adds its own low-rank products,
    /// computed for that row alone, so a row's logits do not depend on its batch.
    pub fn forward_batch(
        &self,
        tokens: &[u32],
        caches: &mut [&mut KvCache],
        adapters: &[Option<usize>],
    ) -> Result<Tensor> {
        if let ([token], [cache], [adapter]) = (tokens, &mut *caches, adapters) {
            return Ok(self.forward(&[*token], cache, *adapter)?.unsqueeze(0)?);
        }
        let mut parts = [self.decode_part(tokens, caches, adapters)?];
        self.run_layers(&mut parts)?;
        let [part] = parts;
        self.decode_logits(part)
    }

    /// A mixed step (vLLM's chunked prefill): the next chunk of one sequence's prompt and
    /// one new token for each of `caches` in one pass through the layers. Each matrix
    /// serves the chunk's rows and then, while it is still in cache, the decode rows.
    /// Returns the chunk's last-position logits (vocab,) and the decode rows' (batch,
    /// vocab).
    ///
    /// Every row goes through the kernels it would take alone (the chunk's through the
    /// prefill products, the decode rows' through the decode products), so each row's
    /// logits are bit for bit those of `forward` and `forward_batch`: whether a sequence
    /// decodes beside a prefill never changes its tokens.
    pub fn forward_mixed(
        &self,
        chunk: Chunk<'_>,
        tokens: &[u32],
        caches: &mut [&mut KvCache],
        adapters: &[Option<usize>],
    ) -> Result<(Tensor, Tensor)> {
        let prefill = self.chunk_part(chunk.tokens, chunk.cache, chunk.adapter)?;
        let decode = self.decode_part(tokens, caches, adapters)?;
        let mut parts = [prefill, decode];
        self.run_layers(&mut parts)?;
        let [prefill, decode] = parts;
        Ok((self.chunk_logits(prefill)?, self.decode_logits(decode)?))
    }

    /// The rows of a prompt chunk: (1, chunk, hidden), masked causally.
    fn chunk_part<'m, 'c>(
        &'m self,
        tokens: &[u32],
        cache: &'c mut KvCache,
        adapter: Option<usize>,
    ) -> Result<Part<'m, 'c>> {
        let seq = tokens.len();
        let offset = cache.len;
        if seq == 0 {
            return Err(EngineError::invalid("input", "no tokens to run"));
        }
        self.check_room(offset + seq)?;
        let ids = Tensor::new(tokens, &self.device)?;
        let mask = if seq > 1 {
            Some(causal_mask(seq, offset, &self.device)?)
        } else {
            None
        };
        Ok(Part {
            x: self.embed.index_select(&ids, 0)?.unsqueeze(0)?,
            rows: Rows::One(self.served(adapter)),
            offsets: vec![offset],
            caches: vec![cache],
            mask,
            new_tokens: seq,
        })
    }

    /// The rows of a decode batch: (batch, 1, hidden), one per sequence.
    fn decode_part<'m, 'c>(
        &'m self,
        tokens: &[u32],
        caches: &'c mut [&mut KvCache],
        adapters: &[Option<usize>],
    ) -> Result<Part<'m, 'c>> {
        if tokens.is_empty() || tokens.len() != caches.len() || adapters.len() != caches.len() {
            return Err(EngineError::invalid(
                "batch",
                format!(
                    "{} tokens and {} adapters for {} sequences",
                    tokens.len(),
                    adapters.len(),
                    caches.len()
                ),
            ));
        }
        for cache in caches.iter() {
            self.check_room(cache.len + 1)?;
        }
        let ids = Tensor::new(tokens, &self.device)?;
        Ok(Part {
            x: self.embed.index_select(&ids, 0)?.unsqueeze(1)?,
            rows: Rows::Each(adapters.iter().map(|a| self.served(*a)).collect()),
            offsets: caches.iter().map(|c| c.len).collect(),
            caches: caches.iter_mut().map(|c| &mut **c).collect(),
            mask: None,
            new_tokens: 1,
        })
    }

    /// Every layer over `parts`, each matrix product for all parts at once
    /// (`project_parts`).
    fn run_layers(&self, parts: &mut [Part<'_, '_>]) -> Result<()> {
        let ff = self.config.intermediate_size;
        let rows: Vec<Rows> = parts.iter().map(|p| p.rows.clone()).collect();
        for (i, layer) in self.layers.iter().enumerate() {
            let normed = self.rms_norm_parts(parts, &layer.attn_norm)?;
            let qkv = project_parts(&layer.attn.qkv, &normed, &rows, |a| {
                a.layers[i].qkv.as_ref()
            })?;
            let mut attended = Vec::with_capacity(parts.len());
            for (p, qkv) in parts.iter_mut().zip(qkv) {
                let per_sequence = if p.caches.len() == 1 {
                    vec![qkv]
                } else {
                    (0..p.caches.len())
                        .map(|s| qkv.narrow(0, s, 1))
                        .collect::<candle_core::Result<Vec<_>>>()?
                };
                let mut slots: Vec<&mut Option<LayerKv>> =
                    p.caches.iter_mut().map(|c| &mut c.layers[i]).collect();
                let mut ys = self.attend(&per_sequence, &p.offsets, &mut slots, p.mask.as_ref())?;
                attended.push(if ys.len() == 1 {
                    ys.remove(0)
                } else {
                    Tensor::cat(&ys, 0)?
                });
            }
            let o = project_parts(&layer.attn.o, &attended, &rows, |a| a.layers[i].o.as_ref())?;
            for (p, o) in parts.iter_mut().zip(o) {
                p.x = (o + &p.x)?;
            }
            let normed = self.rms_norm_parts(parts, &layer.ffn_norm)?;
            let gate_up = project_parts(&layer.mlp.gate_up, &normed, &rows, |a| {
                a.layers[i].gate_up.as_ref()
            })?;
            let act = gate_up
                .iter()
                .map(|g| crate::pointwise::silu_mul(g, ff))
                .collect::<Result<Vec<_>>>()?;
            let down = project_parts(&layer.mlp.down, &act, &rows, |a| a.layers[i].down.as_ref())?;
            for (p, down) in parts.iter_mut().zip(down) {
                p.x = (down + &p.x)?;
            }
        }
        for p in parts.iter_mut() {
            for cache in p.caches.iter_mut() {
                cache.len += p.new_tokens;
            }
        }
        Ok(())
    }

    /// A chunk's logits: its last position's, (vocab,) in f32.
    fn chunk_logits(&self, part: Part<'_, '_>) -> Result<Tensor> {
        let last = part.x.narrow(1, part.new_tokens - 1, 1)?;
        let normed = self.rms_norm(&last, &self.norm)?;
        let logits = project(&self.lm_head, &normed, &part.rows, |a| a.lm_head.as_ref())?;
        Ok(logits.flatten_all()?.to_dtype(DType::F32)?)
    }

    /// A decode batch's logits, (batch, vocab) in f32.
    fn decode_logits(&self, part: Part<'_, '_>) -> Result<Tensor> {
        let normed = self.rms_norm(&part.x, &self.norm)?;
        let logits = project(&self.lm_head, &normed, &part.rows, |a| a.lm_head.as_ref())?;
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

    /// Each part's hidden rows normed.
    fn rms_norm_parts(&self, parts: &[Part<'_, '_>], weight: &Tensor) -> Result<Vec<Tensor>> {
        parts.iter().map(|p| self.rms_norm(&p.x, weight)).collect()
    }

    fn rms_norm(&self, x: &Tensor, weight: &Tensor) -> Result<Tensor> {
        crate::pointwise::rms_norm(x, weight, self.config.rms_norm_eps as f32)
    }
}

/// `linear(x)` plus each row's adapter product for this layer (`share` picks the layer's
/// low-rank pair out of an adapter). Rows of a batch (dim 0) each compute their own, so a
/// row's result does not depend on which rows share its batch.
fn project(
    linear: &Linear,
    x: &Tensor,
    rows: &Rows,
    share: impl Fn(&ServedAdapter) -> Option<&LowRank>,
) -> Result<Tensor> {
    add_adapters(linear.forward(x)?, x, rows, share)
}

/// `project` for every part of a step, the base products in one `forward_rows` (one pass
/// over the weights for a prompt chunk and the decode rows beside it, where the layer
/// supports it).
fn project_parts(
    linear: &Linear,
    xs: &[Tensor],
    rows: &[Rows],
    share: impl Fn(&ServedAdapter) -> Option<&LowRank>,
) -> Result<Vec<Tensor>> {
    let inputs: Vec<&Tensor> = xs.iter().collect();
    linear
        .forward_rows(&inputs)?
        .into_iter()
        .zip(xs)
        .zip(rows)
        .map(|((y, x), rows)| add_adapters(y, x, rows, &share))
        .collect()
}

/// `y = linear(x)` plus each row's adapter product (see `project`).
fn add_adapters(
    y: Tensor,
    x: &Tensor,
    rows: &Rows,
    share: impl Fn(&ServedAdapter) -> Option<&LowRank>,
) -> Result<Tensor> {
    match rows {
        Rows::One(None) => Ok(y),
        Rows::One(Some(adapter)) => match share(adapter) {
            Some(low_rank) => Ok(low_rank.add_to(&y, x)?),
            None => Ok(y),
        },
        Rows::Each(adapters) => {
            let pairs: Vec<Option<&LowRank>> =
                adapters.iter().map(|a| a.and_then(&share)).collect();
            if pairs.iter().all(Option::is_none) {
                return Ok(y);
            }
            let rows = pairs
                .iter()
                .enumerate()
                .map(|(row, pair)| {
                    let y_row = y.narrow(0, row, 1)?;
                    match pair {
                        Some(low_rank) => low_rank.add_to(&y_row, &x.narrow(0, row, 1)?),
                        None => Ok(y_row),
                    }
                })
                .collect::<candle_core::Result<Vec<_>>>()?;
            Ok(Tensor::cat(&rows, 0)?)
        }
    }
}
