pub mod bench;
pub mod eval;
pub mod generate;
pub mod model;
pub mod model_args;
pub mod output;
pub mod progress;
pub mod roles;
