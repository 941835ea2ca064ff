//! Flag groups shared by several subcommands.

pub mod engine;
pub mod etcd;
pub mod judge;
pub mod metrics;
pub mod model;
pub mod remote;
pub mod roles;
pub mod security;
pub mod tools;
