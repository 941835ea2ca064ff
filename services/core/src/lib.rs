//! The α-UMi agent, without I/O: tool docs, prompts, output parsing, the static
//! evaluation metrics, and the DFSDT search over abstract roles and tools.

pub mod agent;
pub mod agents;
pub mod answer;
pub mod constraint;
pub mod dfs;
pub mod env;
pub mod error;
pub mod log_limit;
pub mod manifest;
pub mod parse;
pub mod pass_rate;
pub mod preference;
pub mod presets;
pub mod prompt;
pub mod pyjson;
pub mod replay;
pub mod rouge;
pub mod scores;
pub mod static_backbone;
pub mod static_eval;
pub mod task;
#[cfg(test)]
mod testing;
pub mod tool;
pub mod toolbench;
pub mod trace;

pub use error::{CoreError, ErrorClass, Result};
