//! The serving wiring every umi server shares: `grpc.health.v1.Health` beside the
//! service, SERVING while it runs; when `shutdown` completes, NOT_SERVING (so load
//! balancers stop routing), no new connections, and open calls finish. TLS and the
//! token check come from [`ServerSecurity`]; health checks stay open.

use std::future::Future;

use tonic::service::Routes;
use tonic_health::ServingStatus;

use crate::security::ServerSecurity;

/// Serves `routes` (one service, named `name` in health checks, guarded by
/// `security`'s token check: see [`ServerSecurity::guard`]) on `listener`, over TLS when
/// `security` has it, until `shutdown` completes, then drains.
pub async fn serve(
    listener: tokio::net::TcpListener,
    name: &'static str,
    routes: Routes,
    security: &ServerSecurity,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status(name, ServingStatus::Serving)
        .await;
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = security.tls_config() {
        server = server.tls_config(tls)?;
    }
    server
        .add_routes(routes.add_service(health_service))
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            async {
                shutdown.await;
                for service in [name, ""] {
                    health
                        .set_service_status(service, ServingStatus::NotServing)
                        .await;
                }
            },
        )
        .await
}
