//! umi's inference engine: loads LLaMA-family checkpoints (GGUF, or HuggingFace
//! safetensors / PyTorch directories) with candle and generates text, behind an async,
//! request-level API.

pub mod config;
pub mod convert;
#[cfg(target_arch = "x86_64")]
pub mod cpu_attention;
pub mod device;
pub mod engine;
pub mod error;
#[cfg(target_arch = "x86_64")]
pub mod gemm;
#[cfg(target_arch = "x86_64")]
pub mod gemm_avx2;
pub mod generate;
pub mod kv_cache;
pub mod linear;
pub mod liveness;
pub mod load;
pub mod lora;
pub mod metrics;
pub mod model;
mod pointwise;
pub mod prefix_cache;
pub mod quant_dot;
mod queue;
pub mod roofline;
mod safetensors;
mod scheduler;
pub mod sentencepiece;
pub mod sim;
pub mod structured;
pub mod text_engine;
pub mod tokenizer;
pub mod weights;

pub use config::LlamaConfig;
pub use device::{parse_device, WeightDType};
pub use engine::{Engine, EngineConfig, ModelInfo, StreamEvent};
pub use error::{EngineError, Result};
pub use generate::{FinishReason, GenerateOutput, GenerateRequest, Prompt, SamplingParams};
pub use liveness::Liveness;
pub use load::{load, LoadOptions, LoadedModel};
pub use sim::{SimEngine, SimProfile};
pub use structured::Constraint;
pub use text_engine::TextEngine;
pub use tokenizer::Tokenizer;
