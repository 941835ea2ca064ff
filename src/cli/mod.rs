pub mod bench;
pub mod generate;
pub mod model;
pub mod model_args;
