//! The x86-64 attention path (AVX-512 or AVX2): every sequence of a layer in one parallel
//! pass of `cpu_attention` over the key/value buffers as stored.

#[cfg(target_arch = "x86_64")]
use candle_core::DType;
use candle_core::Tensor;

use super::Llama;
use crate::error::Result;
use crate::kv_cache::LayerKv;

impl Llama {
    /// The x86-64 path over the buffers as stored; None where it does not apply (not a
    /// CPU, neither AVX-512 nor AVX2, a shape or dtype it does not take).
    #[cfg(target_arch = "x86_64")]
    pub(super) fn attend_cpu(
        &self,
        queries: &[Tensor],
        offsets: &[usize],
        slots: &[&mut Option<LayerKv>],
    ) -> Result<Option<Vec<Tensor>>> {
        use crate::cpu_attention::{self, Job, Kv, Shape};
        use candle_core::{CpuStorage, Storage};
        if !self.device.is_cpu() || cpu_attention::Width::detect().is_none() {
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
    pub(super) fn attend_cpu(
        &self,
        _queries: &[Tensor],
        _offsets: &[usize],
        _slots: &[&mut Option<LayerKv>],
    ) -> Result<Option<Vec<Tensor>>> {
        Ok(None)
    }
}
