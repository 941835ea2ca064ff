//! The command line: one module per subcommand here; the flag groups several
//! subcommands share in `args`; small helpers (atomic output, progress, signals, a
//! local cluster's child processes and their command lines) in `support`. Library logic
//! lives in the crates: the coordinator client in `umi-rpc`, the static evaluation's
//! runner in `umi-eval`, the phased server shutdown in `umi_rpc::serve`.

/// The commit this binary was built from (`build.rs`), "unknown" outside a git checkout.
pub const COMMIT: &str = match option_env!("UMI_GIT_COMMIT") {
    Some(commit) => commit,
    None => "unknown",
};

pub mod args;
pub mod support;

pub mod bench;
pub mod bench_cluster;
pub mod bench_role;
pub mod bench_roofline;
pub mod cluster;
pub mod config;
pub mod coordinator;
pub mod data;
pub mod eval;
pub mod generate;
pub mod man;
pub mod model;
pub mod pass_rate;
pub mod report;
pub mod run;
pub mod run_report;
pub mod submit;
pub mod tools;
pub mod win_rate;
pub mod worker;
