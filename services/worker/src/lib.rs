//! A role worker: one α-UMi role (planner, caller or summarizer) served over gRPC from an
//! in-process engine, and `RemoteRoles`, the client side the search uses.

pub mod client;
pub mod convert;
pub mod server;
pub mod trace_context;

/// Generated from `proto/umi/v1/roles.proto`.
pub mod pb {
    tonic::include_proto!("umi.v1");
}
