//! Helpers of the subcommands.

pub mod call_log;
pub mod children;
pub mod local_cluster;
pub mod output;
pub mod progress;
pub mod prometheus;
pub mod run_manifest;
pub mod shutdown;
pub mod trace_file;
