//! Attention at one layer: the queries, keys and values of each sequence, and which
//! of the three paths computes it (the x86-64 one in `attention_cpu`, the padded batch in
//! `attention_padded`, or candle's operations per sequence, here).

use candle_core::{DType, Device, Tensor};

use super::attention_padded::padded_attention;
use super::Llama;
use crate::error::Result;
use crate::kv_cache::LayerKv;

impl Llama {
    /// Attention of several sequences at one layer: `qkvs[s]` is sequence s's stacked
    /// Q/K/V projection, (1, seq, q+2kv), for positions from `offsets[s]` on; `slots[s]`
    /// its keys and values so far at this layer (`mask` only with a single sequence of
    /// several rows). Returns each sequence's heads' outputs, (1, seq, hidden), before
    /// the output projection.
    ///
    /// On an x86-64 CPU with AVX-512 or AVX2 all sequences go through one parallel pass of
    /// `cpu_attention`; on an accelerator a decode batch is one padded computation
    /// (`padded_attention`); elsewhere each sequence goes through candle's operations in
    /// turn.
    pub(super) fn attend(
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

/// Additive mask for `seq` new positions after `offset` cached ones: 0 where a query may
/// attend, -inf on future keys. Shape (seq, offset + seq).
pub(super) fn causal_mask(seq: usize, offset: usize, device: &Device) -> Result<Tensor> {
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

    #[test]
    fn causal_mask_respects_offset() {
        let m = causal_mask(2, 1, &Device::Cpu)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(m[0], vec![0., 0., f32::NEG_INFINITY]);
        assert_eq!(m[1], vec![0., 0., 0.]);
    }
}
