//! Rotary position embeddings, precomputed for the whole context, with linear scaling.

use candle_core::{DType, Device, Tensor};

use crate::config::LlamaConfig;
use crate::error::Result;
use crate::weights::RopeLayout;

/// Precomputed rotary tables for every position of the context.
pub(super) struct Rope {
    cos: Tensor,
    sin: Tensor,
    layout: RopeLayout,
}

impl Rope {
    pub(super) fn new(
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
    pub(super) fn apply(&self, x: &Tensor, offset: usize) -> Result<Tensor> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
