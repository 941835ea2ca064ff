//! A LLaMA decoder on candle whose weights are either GGUF-quantized or dense.
//!
//! The key/value cache lives outside the model (`kv_cache::KvCache`), so one set of
//! weights serves any number of sequences.

use candle_core::quantized::{GgmlDType, QMatMul, QStorage, QTensor};
use candle_core::{DType, Device, Tensor};

use crate::config::LlamaConfig;
use crate::device::WeightDType;
use crate::error::{EngineError, Result};
pub use crate::kv_cache::KvCache;
use crate::kv_cache::LayerKv;
use crate::linear::Linear;
use crate::weights::{RawTensor, RopeLayout, TensorSource};

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

/// Precomputed rotary tables for every position of the context.
struct Rope {
    cos: Tensor,
    sin: Tensor,
    layout: RopeLayout,
}

impl Rope {
    fn new(
        config: &LlamaConfig,
        context: usize,
        layout: RopeLayout,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let head_dim = config.head_dim();
        let inv_freq: Vec<f32> = (0..head_dim)
            .step_by(2)
            .map(|i| 1.0 / (config.rope_theta.powf(i as f64 / head_dim as f64) as f32))
            .collect();
        let inv_freq = Tensor::from_vec(inv_freq, (1, head_dim / 2), device)?;
        // Linear rope scaling: position p is rotated as p / factor.
        let positions = (Tensor::arange(0u32, context as u32, device)?
            .to_dtype(DType::F32)?
            .reshape((context, 1))?
            / config.rope_scaling_factor)?;
        let freqs = positions.matmul(&inv_freq)?;
        Ok(Rope {
            cos: freqs.cos()?.to_dtype(dtype)?,
            sin: freqs.sin()?.to_dtype(dtype)?,
            layout,
        })
    }

    /// `x` is (batch, heads, seq, head_dim), starting at absolute position `offset`.
    fn apply(&self, x: &Tensor, offset: usize) -> Result<Tensor> {
        let seq = x.dim(2)?;
        let cos = self.cos.narrow(0, offset, seq)?;
        let sin = self.sin.narrow(0, offset, seq)?;
        let x = x.contiguous()?;
        Ok(match self.layout {
            RopeLayout::Interleaved => candle_nn::rotary_emb::rope_i(&x, &cos, &sin)?,
            RopeLayout::Halves => candle_nn::rotary_emb::rope(&x, &cos, &sin)?,
        })
    }
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
    /// Builds the model from `source`; `dtype` picks quantized or dense weights.
    pub fn load(
        config: LlamaConfig,
        source: &mut dyn TensorSource,
        dtype: WeightDType,
        device: &Device,
    ) -> Result<Self> {
        let act_dtype = dtype.dense().unwrap_or(DType::F32);
        let path = source.path().to_path_buf();
        if dtype == WeightDType::Quantized && source.rope_layout() == RopeLayout::Halves {
            return Err(EngineError::load(
                &path,
                "quantized weights need a GGUF file; pick --dtype f32, f16 or bf16 for a HuggingFace directory",
            ));
        }
        let check = |name: &str, t: &RawTensor, expected: &[usize]| -> Result<()> {
            if t.dims() != expected {
                return Err(EngineError::load(
                    &path,
                    format!(
                        "tensor {name} has shape {:?}, config expects {expected:?}",
                        t.dims()
                    ),
                ));
            }
            Ok(())
        };
        let dense = |source: &mut dyn TensorSource,
                     name: &str,
                     shape: &[usize],
                     dt: DType|
         -> Result<Tensor> {
            let raw = source.take(name, device)?;
            check(name, &raw, shape)?;
            Ok(raw.dequantize(device)?.to_dtype(dt)?)
        };
        let linear =
            |source: &mut dyn TensorSource, name: &str, shape: &[usize]| -> Result<Linear> {
                let raw = source.take(name, device)?;
                check(name, &raw, shape)?;
                Ok(Linear::new(matmul_weight(raw, dtype, device)?))
            };
        let stacked =
            |source: &mut dyn TensorSource, parts: &[(String, [usize; 2])]| -> Result<Linear> {
                if let Some(whole) = source.take_stacked(parts, device)? {
                    return Ok(Linear::new(matmul_weight(
                        RawTensor::Dense(whole),
                        dtype,
                        device,
                    )?));
                }
                let mut raws = Vec::with_capacity(parts.len());
                for (name, shape) in parts {
                    let raw = source.take(name, device)?;
                    check(name, &raw, shape)?;
                    raws.push(raw);
                }
                Ok(Linear::new(stack_rows(raws, dtype, device)?))
            };

        let c = &config;
        let (h, kv, ff, v) = (
            c.hidden_size,
            c.num_key_value_heads * c.head_dim(),
            c.intermediate_size,
            c.vocab_size,
        );
        let embed_raw = source.take("model.embed_tokens.weight", device)?;
        check("model.embed_tokens.weight", &embed_raw, &[v, h])?;
        let embed = embed_raw.dequantize_ref(device)?.to_dtype(act_dtype)?;
        // Tied embeddings: the output layer is the embedding table, in the weights' format.
        let tied_head = if source.contains("lm_head.weight") {
            None
        } else {
            Some(Linear::new(matmul_weight(embed_raw, dtype, device)?))
        };
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let p = format!("model.layers.{i}");
            layers.push(Layer {
                attn_norm: dense(
                    source,
                    &format!("{p}.input_layernorm.weight"),
                    &[h],
                    act_dtype,
                )?,
                attn: Attention {
                    qkv: stacked(
                        source,
                        &[
                            (format!("{p}.self_attn.q_proj.weight"), [h, h]),
                            (format!("{p}.self_attn.k_proj.weight"), [kv, h]),
                            (format!("{p}.self_attn.v_proj.weight"), [kv, h]),
                        ],
                    )?,
                    o: linear(source, &format!("{p}.self_attn.o_proj.weight"), &[h, h])?,
                },
                ffn_norm: dense(
                    source,
                    &format!("{p}.post_attention_layernorm.weight"),
                    &[h],
                    act_dtype,
                )?,
                mlp: Mlp {
                    gate_up: stacked(
                        source,
                        &[
                            (format!("{p}.mlp.gate_proj.weight"), [ff, h]),
                            (format!("{p}.mlp.up_proj.weight"), [ff, h]),
                        ],
                    )?,
                    down: linear(source, &format!("{p}.mlp.down_proj.weight"), &[h, ff])?,
                },
            });
        }
        let norm = dense(source, "model.norm.weight", &[h], act_dtype)?;
        let lm_head = match tied_head {
            Some(head) => head,
            None => linear(source, "lm_head.weight", &[v, h])?,
        };
        let context = c.max_position_embeddings;
        let rope = Rope::new(c, context, source.rope_layout(), act_dtype, device)?;
        Ok(Llama {
            embed,
            layers,
            norm,
            lm_head,
            rope,
            dtype: act_dtype,
            device: device.clone(),
            context,
            weight_dtype: dtype,
            config,
        })
    }

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

    /// Attention of several sequences at one layer: `qkvs[s]` is sequence s's stacked
    /// Q/K/V projection, (1, seq, q+2kv), for positions from `offsets[s]` on; `slots[s]`
    /// its keys and values so far at this layer (`mask` only with a single sequence of
    /// several rows). Returns each sequence's heads' outputs, (1, seq, hidden), before
    /// the output projection.
    ///
    /// On a CPU with AVX-512 all sequences go through one parallel pass of
    /// `cpu_attention`; on an accelerator a decode batch is one padded computation
    /// (`padded_attention`); elsewhere each sequence goes through candle's operations in
    /// turn.
    fn attend(
        &self,
        qkvs: &[Tensor],
        offsets: &[usize],
        slots: &mut [&mut Option<LayerKv>],
        mask: Option<&Tensor>,
    ) -> Result<Vec<Tensor>> {
        let mut queries = Vec::with_capacity(qkvs.len());
        let mut kvs = Vec::with_capacity(qkvs.len());
        for ((qkv, &offset), slot) in qkvs.iter().zip(offsets).zip(slots.iter_mut()) {
            let (q, k, v) = self.project(qkv, offset, slot)?;
            queries.push(q);
            kvs.push((k, v));
        }
        if let Some(ys) = self.attend_cpu(&queries, offsets, slots)? {
            return Ok(ys);
        }
        // On an accelerator, a decode batch (one new row per sequence) is one attention
        // computation; the CPU keeps per-sequence arithmetic (bit-for-bit batching).
        let decode = queries.iter().all(|q| q.dim(2).is_ok_and(|rows| rows == 1));
        if !self.device.is_cpu() && queries.len() > 1 && decode && mask.is_none() {
            let c = &self.config;
            return padded_attention(
                &queries,
                &kvs,
                c.num_attention_heads,
                c.num_key_value_heads,
                self.dtype,
            );
        }
        queries
            .iter()
            .zip(kvs)
            .map(|(q, (k, v))| self.attend_one(q, &k, &v, mask))
            .collect()
    }

    /// Splits a sequence's stacked projection, applies the rotary embedding and writes
    /// the new keys and values into its buffers. Returns the queries (1, heads, seq, hd)
    /// and views of every key and value so far, (1, kv_heads, offset + seq, hd).
    fn project(
        &self,
        qkv: &Tensor,
        offset: usize,
        cache: &mut Option<LayerKv>,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let c = &self.config;
        let (b, seq, _) = qkv.dims3()?;
        let hd = c.head_dim();
        let (qd, kvd) = (c.num_attention_heads * hd, c.num_key_value_heads * hd);
        let q = qkv
            .narrow(2, 0, qd)?
            .reshape((b, seq, c.num_attention_heads, hd))?
            .transpose(1, 2)?;
        let k = qkv
            .narrow(2, qd, kvd)?
            .reshape((b, seq, c.num_key_value_heads, hd))?
            .transpose(1, 2)?;
        let v = qkv
            .narrow(2, qd + kvd, kvd)?
            .reshape((b, seq, c.num_key_value_heads, hd))?
            .transpose(1, 2)?;
        let q = self.rope.apply(&q, offset)?;
        let k = self.rope.apply(&k, offset)?;
        let v = v.contiguous()?;
        let (k, v) = LayerKv::append(cache, offset, &k, &v, self.context)?;
        Ok((q, k, v))
    }

    /// The AVX-512 path over the buffers as stored; None where it does not apply (not a
    /// CPU, no AVX-512, a shape or dtype it does not take).
    #[cfg(target_arch = "x86_64")]
    fn attend_cpu(
        &self,
        queries: &[Tensor],
        offsets: &[usize],
        slots: &[&mut Option<LayerKv>],
    ) -> Result<Option<Vec<Tensor>>> {
        use crate::cpu_attention::{self, Job, Kv, Shape};
        use candle_core::{CpuStorage, Storage};
        if !self.device.is_cpu() || crate::gemm::kernel() == crate::gemm::Kernel::None {
            return Ok(None);
        }
        let c = &self.config;
        let hd = c.head_dim();
        // (1, heads, seq, hd) -> (seq, heads, hd), f32.
        let qs: Vec<Vec<f32>> = queries
            .iter()
            .map(|q| {
                q.transpose(1, 2)?
                    .to_dtype(DType::F32)?
                    .flatten_all()?
                    .to_vec1()
            })
            .collect::<candle_core::Result<_>>()?;
        let mut guards = Vec::with_capacity(slots.len());
        for slot in slots {
            let Some(layer) = slot.as_ref() else {
                return Ok(None);
            };
            let (k, v) = layer.buffers();
            guards.push((k.storage_and_layout(), v.storage_and_layout(), k.dim(2)?));
        }
        fn view<'a>(storage: &'a Storage, layout: &candle_core::Layout) -> Option<Kv<'a>> {
            let Storage::Cpu(cpu) = storage else {
                return None;
            };
            if !layout.is_contiguous() {
                return None;
            }
            let span = layout.start_offset()..layout.start_offset() + layout.shape().elem_count();
            Some(match cpu {
                CpuStorage::F32(data) => Kv::F32(data.get(span)?),
                CpuStorage::BF16(data) => Kv::Bf16(data.get(span)?),
                CpuStorage::F16(data) => Kv::F16(data.get(span)?),
                _ => return None,
            })
        }
        let mut jobs = Vec::with_capacity(guards.len());
        for ((k, v, capacity), (q, &offset)) in guards.iter().zip(qs.iter().zip(offsets)) {
            let (Some(k), Some(v)) = (view(&k.0, k.1), view(&v.0, v.1)) else {
                return Ok(None);
            };
            let rows = q.len() / (c.num_attention_heads * hd).max(1);
            jobs.push(Job {
                q,
                rows,
                k,
                v,
                capacity: *capacity,
                offset,
            });
        }
        let shape = Shape {
            heads: c.num_attention_heads,
            kv_heads: c.num_key_value_heads,
            head_dim: hd,
        };
        let Some(outs) = cpu_attention::attend(shape, &jobs) else {
            return Ok(None);
        };
        outs.into_iter()
            .zip(&jobs)
            .map(|(y, job)| {
                Ok(
                    Tensor::from_vec(y, (1, job.rows, c.hidden_size), &self.device)?
                        .to_dtype(self.dtype)?,
                )
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn attend_cpu(
        &self,
        _queries: &[Tensor],
        _offsets: &[usize],
        _slots: &[&mut Option<LayerKv>],
    ) -> Result<Option<Vec<Tensor>>> {
        Ok(None)
    }

    /// candle's path for one sequence: `q` (1, heads, seq, hd), `k` and `v` every
    /// position so far. Returns (1, seq, hidden).
    fn attend_one(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let c = &self.config;
        let (b, _, seq, hd) = q.dims4()?;
        // Grouped-query attention without copying K/V per query head: the query heads that
        // share a K/V head (adjacent in HF order) are stacked as extra rows.
        let (kv_heads, groups) = (
            c.num_key_value_heads,
            c.num_attention_heads / c.num_key_value_heads,
        );
        let total = k.dim(2)?;
        let q = q
            .to_dtype(DType::F32)?
            .reshape((b, kv_heads, groups * seq, hd))?;
        let k = k.to_dtype(DType::F32)?;
        let v = v.to_dtype(DType::F32)?;
        let scores = (q.matmul(&k.t()?)? / (hd as f64).sqrt())?;
        let scores = match mask {
            Some(m) => scores
                .reshape((b, kv_heads, groups, seq, total))?
                .broadcast_add(m)?
                .reshape((b, kv_heads, groups * seq, total))?,
            None => scores,
        };
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let y = probs
            .matmul(&v)?
            .reshape((b, c.num_attention_heads, seq, hd))?
            .to_dtype(self.dtype)?;
        Ok(y.transpose(1, 2)?.reshape((b, seq, c.hidden_size))?)
    }
}

/// Attention of a decode batch as one computation: `queries[s]` (1, heads, 1, hd) is
/// sequence s's new row, `kvs[s]` its keys and values so far, (1, kv_heads, len_s, hd).
/// Keys and values are padded to the longest sequence and the padding masked out, then
/// one batched product, softmax and product serve every sequence (grouped-query heads as
/// extra rows, as in `attend_one`). Returns each sequence's (1, 1, heads * hd) in `dtype`.
fn padded_attention(
    queries: &[Tensor],
    kvs: &[(Tensor, Tensor)],
    heads: usize,
    kv_heads: usize,
    dtype: DType,
) -> Result<Vec<Tensor>> {
    let batch = queries.len();
    let Some(first) = queries.first() else {
        return Ok(Vec::new());
    };
    let device = first.device();
    let hd = first.dim(3)?;
    let groups = heads / kv_heads;
    let lens = kvs
        .iter()
        .map(|(k, _)| k.dim(2))
        .collect::<candle_core::Result<Vec<_>>>()?;
    let longest = lens.iter().copied().max().unwrap_or(0);
    let padded = |t: &Tensor, len: usize| -> candle_core::Result<Tensor> {
        let t = t.to_dtype(DType::F32)?;
        if len == longest {
            Ok(t)
        } else {
            t.pad_with_zeros(2, 0, longest - len)
        }
    };
    let mut ks = Vec::with_capacity(batch);
    let mut vs = Vec::with_capacity(batch);
    for ((k, v), &len) in kvs.iter().zip(&lens) {
        ks.push(padded(k, len)?);
        vs.push(padded(v, len)?);
    }
    let k = Tensor::cat(&ks, 0)?; // (batch, kv_heads, longest, hd)
    let v = Tensor::cat(&vs, 0)?;
    let q = Tensor::cat(queries, 0)?
        .to_dtype(DType::F32)?
        .reshape((batch, kv_heads, groups, hd))?;
    let scores = (q.matmul(&k.t()?)? / (hd as f64).sqrt())?; // (batch, kv_heads, groups, longest)
    let mask: Vec<f32> = lens
        .iter()
        .flat_map(|&len| (0..longest).map(move |j| if j < len { 0.0 } else { f32::NEG_INFINITY }))
        .collect();
    let mask = Tensor::from_vec(mask, (batch, 1, 1, longest), device)?;
    let probs = candle_nn::ops::softmax_last_dim(&scores.broadcast_add(&mask)?)?;
    let y = probs
        .matmul(&v)?
        .reshape((batch, 1, heads * hd))?
        .to_dtype(dtype)?;
    (0..batch).map(|s| Ok(y.narrow(0, s, 1)?)).collect()
}

/// A linear layer's weight in the requested format: kept quantized, re-quantized to Q8_0,
/// or dense.
fn matmul_weight(raw: RawTensor, dtype: WeightDType, device: &Device) -> Result<QMatMul> {
    Ok(match (raw, dtype) {
        (RawTensor::Quantized(q), WeightDType::Quantized) => QMatMul::from_qtensor(q)?,
        (RawTensor::Quantized(q), WeightDType::Q8_0) if q.dtype() == GgmlDType::Q8_0 => {
            QMatMul::from_qtensor(q)?
        }
        (raw, WeightDType::Q8_0) => {
            let dense = raw.dequantize(device)?.to_dtype(DType::F32)?;
            QMatMul::from_qtensor(QTensor::quantize(&dense, GgmlDType::Q8_0)?)?
        }
        (raw, dt) => QMatMul::Tensor(
            raw.dequantize(device)?
                .to_dtype(dt.dense().unwrap_or(DType::F32))?,
        ),
    })
}

/// Stacks matrices that share their input into one (rows of the first, then the next...).
/// Quantized blocks are concatenated as stored, since each row is whole blocks.
fn stack_rows(parts: Vec<RawTensor>, dtype: WeightDType, device: &Device) -> Result<QMatMul> {
    let qtypes: Vec<Option<GgmlDType>> = parts
        .iter()
        .map(|p| match p {
            RawTensor::Quantized(q) => Some(q.dtype()),
            RawTensor::Dense(_) => None,
        })
        .collect();
    let common = qtypes
        .first()
        .copied()
        .flatten()
        .filter(|t| qtypes.iter().all(|q| *q == Some(*t)));
    match (dtype, common) {
        (WeightDType::Quantized, Some(qtype))
        | (WeightDType::Q8_0, Some(qtype @ GgmlDType::Q8_0)) => {
            let mut bytes = Vec::new();
            let (mut rows, mut cols) = (0, 0);
            for part in &parts {
                if let RawTensor::Quantized(q) = part {
                    let (r, c) = q.shape().dims2()?;
                    rows += r;
                    cols = c;
                    bytes.extend_from_slice(&q.data()?);
                }
            }
            let storage = QStorage::from_data(std::borrow::Cow::Owned(bytes), device, qtype)?;
            Ok(QMatMul::from_qtensor(QTensor::new(storage, (rows, cols))?)?)
        }
        _ => {
            let dense: Vec<Tensor> = parts
                .into_iter()
                .map(|p| p.dequantize(device))
                .collect::<candle_core::Result<_>>()?;
            matmul_weight(RawTensor::Dense(Tensor::cat(&dense, 0)?), dtype, device)
        }
    }
}

/// Additive mask for `seq` new positions after `offset` cached ones: 0 where a query may
/// attend, -inf on future keys. Shape (seq, offset + seq).
fn causal_mask(seq: usize, offset: usize, device: &Device) -> Result<Tensor> {
    let total = offset + seq;
    let mask: Vec<f32> = (0..seq)
        .flat_map(|i| {
            (0..total).map(move |j| {
                if j > offset + i {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    Ok(Tensor::from_vec(mask, (seq, total), device)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exact attention of one query row over `len` keys, per head (f64).
    fn exact(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        heads: usize,
        kv_heads: usize,
        hd: usize,
        len: usize,
    ) -> Vec<f64> {
        let mut out = vec![0f64; heads * hd];
        for h in 0..heads {
            let g = h / (heads / kv_heads);
            let scores: Vec<f64> = (0..len)
                .map(|j| {
                    (0..hd)
                        .map(|d| q[h * hd + d] as f64 * k[(g * len + j) * hd + d] as f64)
                        .sum::<f64>()
                        / (hd as f64).sqrt()
                })
                .collect();
            let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = scores.iter().map(|s| (s - max).exp()).sum();
            for j in 0..len {
                let p = (scores[j] - max).exp() / sum;
                for d in 0..hd {
                    out[h * hd + d] += p * v[(g * len + j) * hd + d] as f64;
                }
            }
        }
        out
    }

    #[test]
    fn padded_batch_attention_equals_each_sequence_alone() {
        let (heads, kv_heads, hd) = (4, 2, 8);
        let dev = Device::Cpu;
        let mut queries = Vec::new();
        let mut kvs = Vec::new();
        let lens = [3usize, 9, 1, 6];
        for (s, &len) in lens.iter().enumerate() {
            let fill = |n: usize, salt: usize| -> Vec<f32> {
                (0..n)
                    .map(|i| (((i * 37 + salt * 101 + s * 13) % 29) as f32 - 14.0) / 9.0)
                    .collect()
            };
            queries.push(Tensor::from_vec(fill(heads * hd, 1), (1, heads, 1, hd), &dev).unwrap());
            let k = Tensor::from_vec(fill(kv_heads * len * hd, 2), (1, kv_heads, len, hd), &dev)
                .unwrap();
            let v = Tensor::from_vec(fill(kv_heads * len * hd, 3), (1, kv_heads, len, hd), &dev)
                .unwrap();
            kvs.push((k, v));
        }
        let batched = padded_attention(&queries, &kvs, heads, kv_heads, DType::F32).unwrap();
        for (s, &len) in lens.iter().enumerate() {
            let got = batched[s].flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let want = exact(
                &flat(&queries[s]),
                &flat(&kvs[s].0),
                &flat(&kvs[s].1),
                heads,
                kv_heads,
                hd,
                len,
            );
            for (g, w) in got.iter().zip(&want) {
                assert!((*g as f64 - w).abs() < 1e-5, "sequence {s}: {g} vs {w}");
            }
            let alone = padded_attention(&queries[s..=s], &kvs[s..=s], heads, kv_heads, DType::F32)
                .unwrap();
            let alone = alone[0].flatten_all().unwrap().to_vec1::<f32>().unwrap();
            for (g, a) in got.iter().zip(&alone) {
                assert!(
                    (g - a).abs() < 1e-6,
                    "sequence {s}: batched {g} vs alone {a}"
                );
            }
        }
    }

    #[test]
    fn causal_mask_respects_offset() {
        let m = causal_mask(2, 1, &Device::Cpu)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(m[0], vec![0., 0., f32::NEG_INFINITY]);
        assert_eq!(m[1], vec![0., 0., 0.]);
    }

    #[test]
    fn linear_rope_scaling_rotates_position_p_as_p_over_the_factor() {
        let config = |factor: f64| LlamaConfig {
            hidden_size: 64,
            intermediate_size: 128,
            num_hidden_layers: 1,
            num_attention_heads: 4,
            num_key_value_heads: 4,
            vocab_size: 10,
            rms_norm_eps: 1e-5,
            rope_theta: 10_000.0,
            max_position_embeddings: 64,
            tie_word_embeddings: false,
            bos_token_id: None,
            eos_token_ids: vec![],
            rope_scaling_factor: factor,
        };
        let table = |factor: f64| {
            let rope = Rope::new(
                &config(factor),
                64,
                RopeLayout::Halves,
                DType::F32,
                &Device::Cpu,
            )
            .unwrap();
            rope.cos.to_vec2::<f32>().unwrap()
        };
        let (plain, scaled) = (table(1.0), table(4.0));
        assert_eq!(scaled[8], plain[2]);
        assert_eq!(scaled[0], plain[0]);
        assert_ne!(scaled[2], plain[2]);
    }
}
