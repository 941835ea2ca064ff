//! umi's gRPC contract without the engine: the code generated from `proto/umi/v1`
//! (one `pb` module for the role workers' and the coordinator's services), conversions
//! between the core's types and the wire's, W3C trace context in gRPC metadata,
//! `ClusterRoles` (the role client: replica choice, `routing`, and retry, behind a
//! transport trait), and the health + graceful-shutdown wiring every umi server uses.

pub mod cluster;
pub mod convert;
pub mod metrics;
pub mod openai;
pub mod routing;
pub mod serve;
pub mod trace_context;
pub mod transport;

/// Generated from `proto/umi/v1/*.proto`.
pub mod pb {
    tonic::include_proto!("umi.v1");
}
