//! A decode batch's attention as one padded computation, for accelerators.

use candle_core::{DType, Tensor};

use crate::error::Result;

/// Attention of a decode batch as one computation: `queries[s]` (1, heads, 1, hd) is
/// sequence s's new row, `kvs[s]` its keys and values so far, (1, kv_heads, len_s, hd).
/// Keys and values are padded to the longest sequence and the padding masked out, then
/// one batched product, softmax and product serve every sequence (grouped-query heads as
/// extra rows, as in `attend_one`). Returns each sequence's (1, 1, heads * hd) in `dtype`.
pub(super) fn padded_attention(
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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

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
}
