//! `umi model convert`: GGUF ⇄ HuggingFace safetensors directory.

use std::path::PathBuf;

use anyhow::{bail, Context};
use candle_core::quantized::GgmlDType;
use candle_core::DType;
use clap::{Args, Subcommand};

#[derive(Subcommand, Debug)]
pub enum ModelCommand {
    /// Convert a GGUF file to a HuggingFace directory, or a HuggingFace directory to GGUF.
    Convert(ConvertArgs),
}

#[derive(Args, Debug)]
pub struct ConvertArgs {
    /// A .gguf file or a HuggingFace directory.
    #[arg(long)]
    pub from: PathBuf,
    /// A directory (from GGUF) or a .gguf file (from a directory).
    #[arg(long)]
    pub to: PathBuf,
    /// Tensor precision of the output: f32, f16 (or bf16 for safetensors).
    #[arg(long, default_value = "f32")]
    pub dtype: String,
}

pub fn run(cmd: ModelCommand) -> anyhow::Result<()> {
    match cmd {
        ModelCommand::Convert(a) => convert(a),
    }
}

fn convert(a: ConvertArgs) -> anyhow::Result<()> {
    let from_dir = a.from.is_dir();
    if !a.from.exists() {
        bail!("{}: no such file or directory", a.from.display());
    }
    if from_dir {
        let dtype = match a.dtype.as_str() {
            "f32" => GgmlDType::F32,
            "f16" => GgmlDType::F16,
            other => bail!("--dtype {other:?}: GGUF output supports f32 or f16"),
        };
        umi_engine::convert::hf_to_gguf(&a.from, &a.to, dtype)
            .with_context(|| format!("converting {} to {}", a.from.display(), a.to.display()))?;
    } else {
        let dtype = match a.dtype.as_str() {
            "f32" => DType::F32,
            "f16" => DType::F16,
            "bf16" => DType::BF16,
            other => bail!("--dtype {other:?}: expected f32, f16 or bf16"),
        };
        umi_engine::convert::gguf_to_hf(&a.from, &a.to, dtype)
            .with_context(|| format!("converting {} to {}", a.from.display(), a.to.display()))?;
    }
    eprintln!("wrote {}", a.to.display());
    Ok(())
}
