//! Per-sequence attention state, kept outside the model so one copy of the weights
//! serves any number of sequences.

use candle_core::Tensor;

use crate::error::{EngineError, Result};

/// Per-sequence attention state: the keys and values of every position seen so far.
///
/// Each layer's keys and values live in buffers with room to spare and are written in
/// place as tokens arrive. Growing them by concatenation instead copies the whole history
/// at every step, which at α-UMi's 3-4k-token prompts moves more bytes than the weights.
/// The buffers belong to one sequence: `prefix` copies.
pub struct KvCache {
    pub(crate) layers: Vec<Option<LayerKv>>,
    pub(crate) len: usize,
}

/// Keys and values, each (1, kv_heads, capacity, head_dim); the first `KvCache::len`
/// positions hold data.
pub(crate) struct LayerKv {
    k: Tensor,
    v: Tensor,
}

/// Positions a buffer gets beyond what it needs when allocated or grown: a sequence
/// decodes that many tokens before its buffers are copied again.
const HEADROOM: usize = 256;

impl KvCache {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A one-layer state of `len` zero positions (1 head of 4 f32s): 32 bytes a position.
    #[cfg(test)]
    pub(crate) fn zeros(len: usize) -> KvCache {
        let t = Tensor::zeros(
            (1, 1, len, 4),
            candle_core::DType::F32,
            &candle_core::Device::Cpu,
        )
        .expect("a small CPU tensor");
        KvCache {
            layers: vec![Some(LayerKv { k: t.clone(), v: t })],
            len,
        }
    }

    /// Memory its buffers hold (spare positions included).
    pub fn bytes(&self) -> usize {
        self.layers
            .iter()
            .flatten()
            .map(|l| (l.k.elem_count() + l.v.elem_count()) * l.k.dtype().size_in_bytes())
            .sum()
    }

    /// A copy of the state after the first `n` positions, with room to grow.
    pub fn prefix(&self, n: usize) -> Result<KvCache> {
        if n > self.len {
            return Err(EngineError::invalid(
                "cache",
                format!("cannot keep {n} of {} positions", self.len),
            ));
        }
        let layers = self
            .layers
            .iter()
            .map(|l| match l {
                Some(l) => Ok(Some(LayerKv {
                    k: with_capacity(&l.k, n, n + HEADROOM)?,
                    v: with_capacity(&l.v, n, n + HEADROOM)?,
                })),
                None => Ok(None),
            })
            .collect::<candle_core::Result<_>>()?;
        Ok(KvCache { layers, len: n })
    }
}

impl LayerKv {
    /// The key and value buffers, each (1, kv_heads, capacity, head_dim).
    pub(crate) fn buffers(&self) -> (&Tensor, &Tensor) {
        (&self.k, &self.v)
    }

    /// Writes `k` and `v`, (1, kv_heads, seq, head_dim), at position `offset` of `slot`
    /// (growing its buffers up to `max` positions if needed) and returns views of every
    /// position up to them.
    pub(crate) fn append(
        slot: &mut Option<LayerKv>,
        offset: usize,
        k: &Tensor,
        v: &Tensor,
        max: usize,
    ) -> Result<(Tensor, Tensor)> {
        let needed = offset + k.dim(2)?;
        let capacity = (needed + HEADROOM).min(max).max(needed);
        let layer = match slot.take() {
            Some(l) if l.k.dim(2)? >= needed => l,
            Some(l) => LayerKv {
                k: with_capacity(&l.k, offset, capacity)?,
                v: with_capacity(&l.v, offset, capacity)?,
            },
            None => LayerKv {
                k: with_capacity(k, 0, capacity)?,
                v: with_capacity(v, 0, capacity)?,
            },
        };
        layer.k.slice_set(k, 2, offset)?;
        layer.v.slice_set(v, 2, offset)?;
        let all = (layer.k.narrow(2, 0, needed)?, layer.v.narrow(2, 0, needed)?);
        *slot = Some(layer);
        Ok(all)
    }
}

/// A new buffer of `capacity` positions (dim 2) holding the first `len` of `buf`'s.
fn with_capacity(buf: &Tensor, len: usize, capacity: usize) -> candle_core::Result<Tensor> {
    let (b, heads, _, dim) = buf.dims4()?;
    let spare = Tensor::zeros((b, heads, capacity - len, dim), buf.dtype(), buf.device())?;
    if len == 0 {
        return Ok(spare);
    }
    Tensor::cat(&[&buf.narrow(2, 0, len)?, &spare], 2)
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    /// Positions (dim 2) of a (1, 2, n, 4) tensor as a flat list.
    fn positions(t: &Tensor) -> Vec<f32> {
        t.contiguous()
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    fn kv(n: usize, start: f32) -> Tensor {
        Tensor::arange(start, start + (2 * n * 4) as f32, &Device::Cpu)
            .unwrap()
            .reshape((1, 2, n, 4))
            .unwrap()
    }

    /// Written in place, grown past its headroom, and copied for a prefix: the views always
    /// hold what concatenation would, and a sequence continued from a copied prefix never
    /// writes into the buffers it was copied from.
    #[test]
    fn kv_buffers_grow_in_place_and_prefixes_are_copies() {
        let mut slot = None;
        let prompt = kv(5, 0.0);
        let (k, _) = LayerKv::append(&mut slot, 0, &prompt, &prompt, 8192).unwrap();
        assert_eq!(positions(&k), positions(&prompt));
        let mut expected = prompt.clone();
        for step in 0..HEADROOM + 3 {
            let token = kv(1, 1000.0 + step as f32 * 8.0);
            let at = expected.dim(2).unwrap();
            let (k, v) = LayerKv::append(&mut slot, at, &token, &token, 8192).unwrap();
            expected = Tensor::cat(&[&expected, &token], 2).unwrap();
            assert_eq!(positions(&k), positions(&expected), "step {step}");
            assert_eq!(positions(&v), positions(&expected), "step {step}");
        }
        let full = KvCache {
            len: expected.dim(2).unwrap(),
            layers: vec![slot],
        };
        let mut copy = full.prefix(3).unwrap();
        let other = kv(2, -100.0);
        let (k, _) = LayerKv::append(&mut copy.layers[0], 3, &other, &other, 8192).unwrap();
        let continued = Tensor::cat(&[&expected.narrow(2, 0, 3).unwrap(), &other], 2).unwrap();
        assert_eq!(positions(&k), positions(&continued));
        let original = full.layers[0].as_ref().unwrap();
        let len = expected.dim(2).unwrap();
        assert_eq!(
            positions(&original.k.narrow(2, 0, len).unwrap()),
            positions(&expected),
            "the copied-from buffers changed"
        );
        assert!(full.prefix(len + 1).is_err());
    }
}
