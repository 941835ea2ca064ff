//! `grpc.health.v1.Health` with its Watch streams bounded: Watch is a server stream that
//! stays open for as long as the client likes, so past `max_watches` open at once a new
//! one is refused (RESOURCE_EXHAUSTED) instead of a client holding thousands. Check is
//! unbounded (it answers at once).

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tokio::sync::Semaphore;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_health::server::HealthService;
use umi_core::log_limit::{LogLimiter, REFUSAL_LOG_INTERVAL};

static REFUSED_LOG: LogLimiter = LogLimiter::new(REFUSAL_LOG_INTERVAL);

/// tonic's health service, at most `max_watches` Watch streams open at once.
pub(crate) struct BoundedHealth {
    inner: HealthService,
    watches: Arc<Semaphore>,
}

impl BoundedHealth {
    pub(crate) fn server(inner: HealthService, max_watches: usize) -> HealthServer<Self> {
        HealthServer::new(BoundedHealth {
            inner,
            watches: Arc::new(Semaphore::new(max_watches)),
        })
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for BoundedHealth {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.inner.check(request).await
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let Ok(slot) = self.watches.clone().try_acquire_owned() else {
            metrics::counter!("umi_rpc_health_watches_refused_total").increment(1);
            if let Some(held_back) = REFUSED_LOG.admit() {
                tracing::warn!(
                    held_back,
                    "refused a health Watch: as many are open as the server keeps (held_back: refusals not logged since the last warning)"
                );
            }
            return Err(Status::resource_exhausted(
                "too many health Watch streams are open on this server; use Check, or watch later",
            ));
        };
        let statuses = self.inner.watch(request).await?.into_inner();
        // The slot is freed when the stream is dropped (the client hung up).
        let statuses = statuses.map(move |status| {
            let _held = &slot;
            status
        });
        Ok(Response::new(Box::pin(statuses)))
    }
}
