//! The coordinator: runs submitted ToolBench tasks concurrently (bounded), each a DFSDT
//! search over remote role workers, and serves `umi.v1.Coordinator`
//! (`proto/umi/v1/coordinator.proto`; generated code in `umi_rpc::pb`).

pub mod journal;
pub mod service;
pub mod state;
pub mod tasks;
