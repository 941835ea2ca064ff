//! Shared helpers for whole-system tests.

#![allow(dead_code)]

pub mod procs;

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
