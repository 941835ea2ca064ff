//! Building a `Llama` from a tensor source: shape checks, the stacked Q/K/V and gate/up
//! matrices, and each weight in the requested format.

use candle_core::quantized::{GgmlDType, QMatMul, QStorage, QTensor};
use candle_core::{DType, Device, Tensor};

use super::rope::Rope;
use super::{Attention, Layer, Llama, Mlp};
use crate::config::LlamaConfig;
use crate::device::WeightDType;
use crate::error::{EngineError, Result};
use crate::linear::Linear;
use crate::weights::{RawTensor, RopeLayout, TensorSource};

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
            adapters: Vec::new(),
            rope_layout: source.rope_layout(),
        })
    }
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
