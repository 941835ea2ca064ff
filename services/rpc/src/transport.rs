//! How `ClusterRoles` reaches a replica: a trait, so the replica choice and retry logic
//! can be tested with a scripted transport, and gRPC (`GrpcTransport`) in production.

use std::time::Duration;

use tonic::transport::Channel;
use umi_core::agent::BoxFuture;
use umi_core::CoreError;

use crate::pb;
use crate::pb::role_worker_client::RoleWorkerClient;
use crate::security::ClientSecurity;

/// Connections to role workers.
pub trait RoleTransport: Send + Sync + 'static {
    /// A connection to one replica, kept by the client while the replica is live.
    type Connection: Clone + Send + Sync + 'static;

    /// Opens (lazily: no I/O yet) a connection to the `role` worker at `address`; an
    /// address it cannot use is refused with the reason, and the client skips that
    /// replica.
    fn connect(&self, address: &str, role: &str) -> Result<Self::Connection, CoreError>;

    /// One attempt of a role call, answered within `timeout`.
    fn generate<'a>(
        &'a self,
        connection: &'a Self::Connection,
        request: pb::GenerateRequest,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<pb::GenerateResponse, tonic::Status>>;
}

/// Role calls over gRPC (HTTP/2), with the caller's trace context and token in the
/// metadata; TLS for `https://` workers, each checked against its role's name
/// ([`crate::security::worker_tls_name`]).
#[derive(Clone, Default)]
pub struct GrpcTransport {
    security: ClientSecurity,
}

impl GrpcTransport {
    pub fn new(security: ClientSecurity) -> Self {
        GrpcTransport { security }
    }
}

impl RoleTransport for GrpcTransport {
    type Connection = RoleWorkerClient<Channel>;

    fn connect(&self, address: &str, role: &str) -> Result<Self::Connection, CoreError> {
        let endpoint = self
            .security
            .worker_endpoint(address, role)
            .map_err(|e| CoreError::invalid(format!("worker address {address:?}"), e))?;
        let endpoint = endpoint
            // A worker whose host vanished (no RST) fails its calls within seconds
            // instead of holding them until the deadline.
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        Ok(RoleWorkerClient::new(endpoint.connect_lazy()))
    }

    fn generate<'a>(
        &'a self,
        connection: &'a Self::Connection,
        request: pb::GenerateRequest,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<pb::GenerateResponse, tonic::Status>> {
        Box::pin(async move {
            let mut client = connection.clone();
            let mut grpc = tonic::Request::new(request);
            grpc.set_timeout(timeout);
            crate::trace_context::inject(grpc.metadata_mut());
            self.security.token().authorize(grpc.metadata_mut());
            match tokio::time::timeout(timeout, client.generate(grpc)).await {
                Ok(reply) => reply.map(tonic::Response::into_inner),
                Err(_) => Err(tonic::Status::deadline_exceeded(
                    "no answer before the deadline",
                )),
            }
        })
    }
}
