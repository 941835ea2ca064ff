//! A role worker: one α-UMi role (planner, caller or summarizer) served over gRPC from an
//! in-process engine (`server`), and `EngineRoles` (`roles`), the one place a role call
//! is made on an engine: render → left-truncate → sample → generate, used by the worker
//! and by `umi run` / `umi eval` in process; the same model over OpenAI-compatible HTTP
//! (`openai_server`, its function calling in `chat_tools`).

pub mod chat_tools;
pub mod openai_server;
pub mod roles;
pub mod server;
pub mod sim_policy;
