//! The serving wiring every umi server shares: `grpc.health.v1.Health` beside the
//! service, SERVING while it runs, and one phased [`Shutdown`]. TLS and the token check
//! come from [`ServerSecurity`]; health checks stay open. Every server runs within
//! [`Limits`], the one place its connection limits are set.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tonic::service::Routes;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::connections;
use crate::health::BoundedHealth;
use crate::security::ServerSecurity;

/// What one gRPC server admits, so that no client can hold its resources without bound
/// (the values are generous: the cluster tests and `umi bench cluster` run far below
/// them). Each value with its reason:
#[derive(Clone, Debug)]
pub struct Limits {
    /// A TLS handshake not finished by then is dropped: a client that opens TCP and
    /// stalls must not hold a handshake task (on a LAN a handshake takes milliseconds).
    pub tls_handshake: Duration,
    /// A connection whose peer sends nothing for this long is closed: a socket opened
    /// and left silent. Longer than `http2_keepalive_interval` + its timeout, so a live
    /// idle client (which acknowledges the server's pings) is never closed.
    pub idle_timeout: Duration,
    /// Connections open at once; one more is closed as soon as it is accepted. umi's
    /// clients hold one per server (a channel multiplexes its calls).
    pub max_connections: usize,
    /// HTTP/2 streams (calls) one connection may have open at once; a client past it
    /// waits for a stream to end. Far above a worker's `--max-batch` + `--max-queue`.
    pub max_streams_per_connection: u32,
    /// The server pings each connection this often (also while idle) ...
    pub http2_keepalive_interval: Duration,
    /// ... and closes one whose peer does not answer a ping within this: a peer gone
    /// without a FIN (a crashed host, a cut network) does not hold its streams forever.
    pub http2_keepalive_timeout: Duration,
    /// TCP keepalive on accepted sockets, below HTTP/2 (also while a handshake runs).
    pub tcp_keepalive: Duration,
    /// `grpc.health.v1` Watch streams open at once (each stays open as long as its
    /// client likes); past it a Watch is refused with RESOURCE_EXHAUSTED.
    pub max_health_watches: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            tls_handshake: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            max_connections: 1024,
            max_streams_per_connection: 1024,
            http2_keepalive_interval: Duration::from_secs(30),
            http2_keepalive_timeout: Duration::from_secs(20),
            tcp_keepalive: Duration::from_secs(60),
            max_health_watches: 64,
        }
    }
}

/// What a server says of its own health beyond "it runs": `Ok` while it can serve,
/// `Err(why)` while it cannot (a worker's engine thread dead or stuck). Asked every
/// [`PROBE_INTERVAL`]; health follows it (NOT_SERVING while `Err`).
pub type HealthProbe = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// How often a [`HealthProbe`] is asked.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// How a server runs besides its routes: its [`Limits`] and its health probe.
#[derive(Clone, Default)]
pub struct ServeOptions {
    pub limits: Limits,
    pub probe: Option<HealthProbe>,
}

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
/// `security` has it, within the default [`Limits`], until `shutdown`'s signal, then
/// stops in its phases.
pub async fn serve(
    listener: tokio::net::TcpListener,
    name: &'static str,
    routes: Routes,
    security: &ServerSecurity,
    shutdown: Shutdown,
) -> Result<(), tonic::transport::Error> {
    serve_with(
        listener,
        name,
        routes,
        security,
        shutdown,
        ServeOptions::default(),
    )
    .await
}

/// As [`serve`], within `options`' limits and with its health probe.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    name: &'static str,
    routes: Routes,
    security: &ServerSecurity,
    shutdown: Shutdown,
    options: ServeOptions,
) -> Result<(), tonic::transport::Error> {
    let Shutdown {
        signal,
        leave,
        stop,
    } = shutdown;
    let served = serve_until(listener, name, routes, security, &options, async {
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
    options: &ServeOptions,
    leave: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let limits = &options.limits;
    let health = HealthReporter::new();
    health
        .set_service_status(name, ServingStatus::Serving)
        .await;
    let health_service = BoundedHealth::server(
        tonic_health::server::HealthService::from_health_reporter(health.clone()),
        limits.max_health_watches,
    );
    let probing = options
        .probe
        .clone()
        .map(|probe| tokio::spawn(follow_probe(probe, health.clone(), name)));
    let mut server = tonic::transport::Server::builder()
        .max_concurrent_streams(limits.max_streams_per_connection)
        .http2_keepalive_interval(Some(limits.http2_keepalive_interval))
        .http2_keepalive_timeout(Some(limits.http2_keepalive_timeout));
    if let Some(tls) = security.tls_config() {
        server = server.tls_config(tls.timeout(limits.tls_handshake))?;
    }
    server
        .add_routes(routes.add_service(health_service))
        .serve_with_incoming_shutdown(connections::admitted(listener, limits), async {
            leave.await;
            if let Some(probing) = probing {
                probing.abort();
            }
            for service in [name, ""] {
                health
                    .set_service_status(service, ServingStatus::NotServing)
                    .await;
            }
        })
        .await
}

/// Keeps `name`'s (and the server's overall) health as `probe` says, logging each turn.
async fn follow_probe(probe: HealthProbe, health: HealthReporter, name: &'static str) {
    let mut serving = true;
    let mut every = tokio::time::interval(PROBE_INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let verdict = probe();
        if verdict.is_ok() == serving {
            continue;
        }
        serving = verdict.is_ok();
        let status = match verdict {
            Ok(()) => {
                tracing::info!(service = name, "serving again");
                ServingStatus::Serving
            }
            Err(why) => {
                tracing::error!(service = name, %why, "health turns NOT_SERVING");
                ServingStatus::NotServing
            }
        };
        for service in [name, ""] {
            health.set_service_status(service, status).await;
        }
    }
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
