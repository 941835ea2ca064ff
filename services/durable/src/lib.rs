//! Files that survive a crash, written one way for all of umi:
//!
//! - [`atomic`]: replacing a file whole or not at all (answer files, summaries, converted
//!   models, the coordinator's compacted journal, the tool response cache).
//! - [`jsonl`]: reading an append-only JSON-lines journal whose last line a crash may
//!   have torn (the coordinator's task journal, the evaluation journal, the verdict file).

pub mod atomic;
pub mod jsonl;

pub use atomic::{replace_with, write, write_with, Replacement, WriteError};
pub use jsonl::{JsonLines, ReadError, Torn};
