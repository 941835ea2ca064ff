//! Shared helpers for whole-system tests.

#![allow(dead_code)]

pub mod procs;

use std::path::PathBuf;

use umi_engine::{LoadOptions, LoadedModel, WeightDType};

/// The bundled SmolLM2 GGUF that `scripts/setup.sh` fetches.
pub fn smollm2_gguf() -> PathBuf {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup.sh first (it fetches the test model)",
        path.display()
    );
    path
}

pub fn load(model: PathBuf, dtype: WeightDType) -> umi_engine::Result<LoadedModel> {
    umi_engine::load(&LoadOptions {
        model,
        tokenizer: None,
        dtype,
        device: candle_core::Device::Cpu,
    })
}

pub fn chatml(user: &str) -> String {
    format!(
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
    )
}

/// The `umi` binary, run from the repository root.
pub fn umi() -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_umi"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
    cmd
}

/// Runs a future to completion on a fresh single-thread runtime (gRPC calls from
/// synchronous tests).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}
