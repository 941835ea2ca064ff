//! Helpers of the subcommands.

pub mod eval_journal;
pub mod output;
pub mod progress;
pub mod shutdown;
