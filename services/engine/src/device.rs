//! Parsing of the `--device` and `--dtype` flags.

use candle_core::{DType, Device};

use crate::error::{EngineError, Result};

/// Parses `cpu` or `cuda:N` (`cuda` alone means `cuda:0`).
pub fn parse_device(spec: &str) -> Result<Device> {
    let spec = spec.trim();
    if spec == "cpu" {
        return Ok(Device::Cpu);
    }
    let ordinal = match spec.strip_prefix("cuda") {
        Some("") => 0,
        Some(rest) => rest
            .strip_prefix(':')
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| {
                EngineError::invalid("device", format!("{spec:?}: expected cpu or cuda:N"))
            })?,
        None => {
            return Err(EngineError::invalid(
                "device",
                format!("{spec:?}: expected cpu or cuda:N"),
            ))
        }
    };
    if !cfg!(feature = "cuda") {
        return Err(EngineError::invalid(
            "device",
            format!("{spec:?}: this build has no CUDA support (rebuild with --features cuda)"),
        ));
    }
    Device::new_cuda(ordinal).map_err(|e| EngineError::invalid("device", format!("{spec}: {e}")))
}

/// Weight precision requested by the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightDType {
    /// Keep GGUF tensors in their quantized form (GGUF only).
    Quantized,
    /// Re-quantize every matrix to 8-bit blocks (GGML Q8_0) at load: close to f32 in
    /// quality, a quarter of its memory traffic. Works for GGUF and HuggingFace weights.
    Q8_0,
    F32,
    F16,
    BF16,
    /// What the checkpoint says: a HuggingFace directory's `torch_dtype` (bf16 for the
    /// α-UMi checkpoints: half the memory of f32), f32 for GGUF files. Resolved at load.
    Auto,
}

impl WeightDType {
    pub fn dense(self) -> Option<DType> {
        match self {
            WeightDType::Quantized | WeightDType::Q8_0 => None,
            WeightDType::F32 => Some(DType::F32),
            WeightDType::F16 => Some(DType::F16),
            WeightDType::BF16 => Some(DType::BF16),
            // Resolved at load (`load::resolve_dtype`); f32 if asked before.
            WeightDType::Auto => Some(DType::F32),
        }
    }
}

impl std::str::FromStr for WeightDType {
    type Err = EngineError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "q" | "quantized" => Ok(WeightDType::Quantized),
            "q8_0" => Ok(WeightDType::Q8_0),
            "f32" => Ok(WeightDType::F32),
            "f16" => Ok(WeightDType::F16),
            "bf16" => Ok(WeightDType::BF16),
            "auto" => Ok(WeightDType::Auto),
            other => Err(EngineError::invalid(
                "dtype",
                format!("{other:?}: expected auto, quantized, q8_0, f32, f16 or bf16"),
            )),
        }
    }
}

impl std::fmt::Display for WeightDType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WeightDType::Quantized => "quantized",
            WeightDType::Q8_0 => "q8_0",
            WeightDType::F32 => "f32",
            WeightDType::F16 => "f16",
            WeightDType::BF16 => "bf16",
            WeightDType::Auto => "auto",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_and_rejects_garbage() {
        assert!(matches!(parse_device("cpu"), Ok(Device::Cpu)));
        let err = parse_device("tpu:0").unwrap_err().to_string();
        assert!(
            err.contains("tpu:0") && err.contains("cpu or cuda:N"),
            "{err}"
        );
        assert!(parse_device("cuda:x").is_err());
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_feature_names_the_feature() {
        let err = parse_device("cuda:0").unwrap_err().to_string();
        assert!(err.contains("--features cuda"), "{err}");
    }

    #[test]
    fn dtype_round_trips() {
        for s in ["quantized", "q8_0", "f32", "f16", "bf16"] {
            assert_eq!(s.parse::<WeightDType>().unwrap().to_string(), s);
        }
        assert!("f8".parse::<WeightDType>().is_err());
    }
}
