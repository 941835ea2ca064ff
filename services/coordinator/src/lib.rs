//! The coordinator: runs submitted ToolBench tasks concurrently (bounded), each a DFSDT
//! search over remote role workers, and serves `umi.v1.Coordinator`
//! (`proto/umi/v1/coordinator.proto`).

pub mod journal;
pub mod service;
mod tasks;

/// Generated from `proto/umi/v1/coordinator.proto`.
pub mod pb {
    tonic::include_proto!("umi.v1");
}
