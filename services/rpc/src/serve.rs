//! The serving wiring every umi server shares: `grpc.health.v1.Health` beside the
//! service, SERVING while it runs; when `shutdown` completes, NOT_SERVING (so load
//! balancers stop routing), no new connections, and open calls finish.

use std::future::Future;

use tonic::service::Routes;
use tonic_health::ServingStatus;

/// Serves `routes` (one service, named `name` in health checks) on `listener` until
/// `shutdown` completes, then drains.
pub async fn serve(
    listener: tokio::net::TcpListener,
    name: &'static str,
    routes: Routes,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status(name, ServingStatus::Serving)
        .await;
    tonic::transport::Server::builder()
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
