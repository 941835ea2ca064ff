//! GLPFT's training data (X-PLUG/Multi-LLM-Agent, `GLPFT/process_data/toolbench/`):
//! ToolBench's answer files to the single-LLM backbone's and each α-UMi role's training
//! file, byte-identical to what the reference's Python scripts write, streamed so the
//! full ToolBench training set runs in the memory of one trajectory.
//!
//! - [`stage1`]: `prepro_raw_stage_1.py`, answer files to trajectories.
//! - [`stage2`]: `prepro_raw_stage_2.py`, messages to conversation turns.
//! - [`roles`]: `prepro_{backbone,planner,caller,summarizer}.py`, turns to records.
//! - [`pipeline`]: the six in one pass, with the reference's defects kept by default and
//!   each fix behind a named option.
//! - [`json_array`]: JSON arrays read and written one element at a time, laid out as
//!   Python's `json.dump(indent=2)`.

pub mod error;
pub mod json_array;
pub mod pipeline;
mod py;
pub mod roles;
pub mod stage1;
pub mod stage2;
pub mod testing;

pub use error::{DataError, Result};
pub use pipeline::{run, Options, Progress, Source, Summary, Unit};
