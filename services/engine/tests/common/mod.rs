//! Shared helpers of the engine's integration tests.

#![allow(dead_code)]

use std::path::PathBuf;

use umi_engine::{LoadOptions, LoadedModel, WeightDType};

/// The repository root: models and fixtures live there. `UMI_REPO` names it for a test
/// binary run from another checkout than the one it was built in (the CUDA test, built
/// here and run on a GPU machine by scripts/bench_cuda.sh).
pub fn repo() -> PathBuf {
    match std::env::var_os("UMI_REPO") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.."),
    }
}

/// The bundled SmolLM2 GGUF that `scripts/setup.sh` fetches.
pub fn smollm2_gguf() -> PathBuf {
    let path = repo().join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup.sh first (it fetches the test model)",
        path.display()
    );
    path
}

/// A temporary directory beside the build rather than in `/tmp`: the conversion tests write
/// about 1 GB of f32 weights, more than a small `/tmp` holds (CI ran out of space there).
pub fn scratch_dir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("creating a scratch directory")
}

pub fn load(model: PathBuf, dtype: WeightDType) -> umi_engine::Result<LoadedModel> {
    umi_engine::load(&LoadOptions {
        model,
        tokenizer: None,
        dtype,
        device: candle_core::Device::Cpu,
        adapter: None,
    })
}

pub fn chatml(user: &str) -> String {
    format!(
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
    )
}
