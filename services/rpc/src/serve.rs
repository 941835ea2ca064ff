//! The serving wiring every umi server shares: `grpc.health.v1.Health` beside the
//! service, SERVING while it runs, and one phased [`Shutdown`]. TLS and the token check
//! come from [`ServerSecurity`]; health checks stay open.

use std::future::Future;
use std::pin::Pin;

use tonic::service::Routes;
use tonic_health::ServingStatus;

use crate::security::ServerSecurity;

type Step = Pin<Box<dyn Future<Output = ()> + Send>>;

/// How a umi server stops, in phases (`umi worker` and `umi coordinator` alike):
///
/// 1. **leave**, once the signal fires: the leave steps run in order (a worker stops its
///    side listener and deregisters from etcd, so no new calls are routed to it; the
///    coordinator stops admitting tasks), then health turns NOT_SERVING (so load
///    balancers stop routing) and no new connection is accepted;
/// 2. **drain**: the calls in flight finish;
/// 3. **stop**: the stop steps run in order (the coordinator shuts its task supervisor
///    down), and [`serve`] returns.
pub struct Shutdown {
    signal: Step,
    leave: Vec<Step>,
    stop: Vec<Box<dyn FnOnce() + Send>>,
}

impl Shutdown {
    /// A shutdown that begins when `signal` completes (SIGTERM, Ctrl-C, a test's trigger).
    pub fn on(signal: impl Future<Output = ()> + Send + 'static) -> Self {
        Shutdown {
            signal: Box::pin(signal),
            leave: Vec::new(),
            stop: Vec::new(),
        }
    }

    /// Adds a step to the leave phase, after those added before: it runs once the signal
    /// fired, while the server still serves (health SERVING, calls admitted).
    pub fn leave(mut self, step: impl Future<Output = ()> + Send + 'static) -> Self {
        self.leave.push(Box::pin(step));
        self
    }

    /// Adds a step to the stop phase, after those added before: it runs once the calls
    /// in flight have finished (or serving failed).
    pub fn stop(mut self, step: impl FnOnce() + Send + 'static) -> Self {
        self.stop.push(Box::new(step));
        self
    }

    /// The signal, then the leave steps in order.
    async fn leave_phase(signal: Step, leave: Vec<Step>) {
        signal.await;
        for step in leave {
            step.await;
        }
    }
}

/// Serves `routes` (one service, named `name` in health checks, guarded by
/// `security`'s token check: see [`ServerSecurity::guard`]) on `listener`, over TLS when
/// `security` has it, until `shutdown`'s signal, then stops in its phases.
pub async fn serve(
    listener: tokio::net::TcpListener,
    name: &'static str,
    routes: Routes,
    security: &ServerSecurity,
    shutdown: Shutdown,
) -> Result<(), tonic::transport::Error> {
    let Shutdown {
        signal,
        leave,
        stop,
    } = shutdown;
    let served = serve_until(listener, name, routes, security, async {
        Shutdown::leave_phase(signal, leave).await;
    })
    .await;
    for step in stop {
        step();
    }
    served
}

/// Serves until `leave` completes, then turns health NOT_SERVING, refuses new
/// connections and returns once the calls in flight have finished.
async fn serve_until(
    listener: tokio::net::TcpListener,
    name: &'static str,
    routes: Routes,
    security: &ServerSecurity,
    leave: impl Future<Output = ()>,
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
                leave.await;
                for service in [name, ""] {
                    health
                        .set_service_status(service, ServingStatus::NotServing)
                        .await;
                }
            },
        )
        .await
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[tokio::test]
    async fn the_phases_run_in_order_leave_while_serving_stop_after_the_drain() {
        let log = Arc::new(Mutex::new(Vec::<String>::new()));
        let note = |what: &'static str| {
            let log = log.clone();
            move || log.lock().unwrap().push(what.to_string())
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        // The last leave step asks the server's health: still SERVING then.
        let health = {
            let log = log.clone();
            async move {
                let channel = tonic::transport::Endpoint::from_shared(url)
                    .unwrap()
                    .connect()
                    .await
                    .unwrap();
                let status = tonic_health::pb::health_client::HealthClient::new(channel)
                    .check(tonic_health::pb::HealthCheckRequest {
                        service: "test.Service".into(),
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .status();
                log.lock().unwrap().push(format!("leave 2: {status:?}"));
            }
        };
        let (fire, fired) = tokio::sync::oneshot::channel::<()>();
        let (first, stopped) = (note("leave 1"), note("stop"));
        let shutdown = Shutdown::on(async {
            let _ = fired.await;
        })
        .leave(async move { first() })
        .leave(health)
        .stop(stopped);
        let served = tokio::spawn(async move {
            serve(
                listener,
                "test.Service",
                Routes::default(),
                &ServerSecurity::default(),
                shutdown,
            )
            .await
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(
            log.lock().unwrap().is_empty(),
            "nothing runs before the signal"
        );
        fire.send(()).unwrap();
        served.await.unwrap().unwrap();
        assert_eq!(
            *log.lock().unwrap(),
            ["leave 1", "leave 2: Serving", "stop"]
        );
    }
}
