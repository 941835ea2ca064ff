//! Tool backends: where an agent's API calls go.

pub mod cache;
pub mod http;
pub mod judge;
pub mod local;
pub mod miss_simulator;
pub mod preferences;
pub mod rapidapi;
pub mod real_api;
pub mod router;
pub mod simulator;
pub mod tools_folder;
pub mod verdicts;
