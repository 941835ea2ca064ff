//! Where α-UMi's three roles (planner, caller, summarizer) are answered, decided in one
//! place. A [`RolesSpec`] says, per role, what plays it ([`RoleSource`]: an engine in this
//! process, umi workers over gRPC, an OpenAI-compatible server, or recorded outputs
//! replayed) with the settings of each; [`build`] turns it into the `RoleModels` the agent
//! calls. The CLI only parses its flags into a spec.
//!
//! Every source that samples seeds a call by one rule, `umi_core::presets::CallSampling`.
//! This crate links the engine (for roles in process); the coordinator, which only calls
//! workers, does not depend on it.

pub mod build;
pub mod openai_role;
pub mod spec;

pub use build::{build, start_in_process, workers, BuildError, Roles};
pub use spec::{
    ByRole, Checkpoint, Discovery, InProcess, OpenAiSettings, RoleSource, RolesSpec, Workers,
};
