//! umi's gRPC contract without the engine: the code generated from `proto/umi/v1`
//! (one `pb` module for the role workers' and the coordinator's services), conversions
//! between the core's types and the wire's, W3C trace context in gRPC metadata,
//! `ClusterRoles` (the role client: replica choice, `routing`, and retry, behind a
//! transport trait), the coordinator's client (`coordinator_client`: submission,
//! resubmission after a coordinator restart, answers as tasks end), TLS and bearer tokens (`security`), and the health +
//! graceful-shutdown wiring every umi server uses.

pub mod cluster;
pub mod connect_error;
mod connections;
pub mod coordinator_client;
mod health;
pub mod http_listener;
pub mod metrics;
pub mod pki;
pub mod routing;
pub mod secret_file;
pub mod security;
pub mod serve;
pub mod trace_context;
pub mod transport;
pub mod wire;

/// The largest role request a worker decodes: a task's query and tools (at most
/// `MAX_QUERY_BYTES`, checked where tasks enter) plus its history, whose observations are
/// cut to 1,024 characters each.
pub const MAX_ROLE_REQUEST: usize = 8 << 20;
const _: () = assert!(umi_core::task::MAX_QUERY_BYTES * 4 <= MAX_ROLE_REQUEST);

/// Generated from `proto/umi/v1/*.proto`.
pub mod pb {
    tonic::include_proto!("umi.v1");
}
