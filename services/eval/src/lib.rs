//! α-UMi's static evaluation, the part with I/O and concurrency: a static test file's
//! steps run through the three roles (`runner`), every call journaled so that an
//! interrupted run resumes where it stopped (`journal`). What a step is, how its
//! planner output routes it and how the predictions are scored is `umi_core::static_eval`
//! (no I/O); which models answer is the caller's (`PromptModels`): this crate links no
//! engine.

pub mod journal;
pub mod runner;

pub use journal::{Journal, JournalError};
pub use runner::{EvalError, PromptModels, Shard, StaticRun};
