//! A worker's entry in etcd: `<prefix>/workers/<role>/<address>` → [`WorkerInfo`] as
//! JSON, attached to a lease that a background task keeps alive. If etcd goes away
//! and the lease expires, the task registers again when etcd is back. Dropping the
//! handle (or [`Registration::deregister`]) ends the keep-alive; `deregister` also
//! revokes the lease so clients stop routing to the worker at once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{LeaseKeepAliveStream, LeaseKeeper, PutOptions};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::{connect, role_prefix, within, DiscoveryError, EtcdTarget, WorkerInfo};

pub struct Registration {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Option<Lease>>>,
    endpoints: Vec<String>,
    key: String,
    health: Arc<LeaseHealth>,
}

/// What the keep-alive went through: an operator alerts on either growing while
/// nothing fails.
#[derive(Debug, Default)]
pub struct LeaseHealth {
    /// Renewals that failed (and were retried on the same lease).
    pub failed_renewals: AtomicU64,
    /// Leases lost (expired or given up on) and registered again.
    pub lost: AtomicU64,
}

struct Lease {
    client: etcd_client::Client,
    id: i64,
}

impl Registration {
    /// Registers `info` with a lease of `ttl`. Fails, naming etcd, when it cannot be
    /// reached now; later outages are ridden out in the background.
    pub async fn register(
        target: &EtcdTarget,
        prefix: &str,
        info: WorkerInfo,
        ttl: Duration,
    ) -> Result<Self, DiscoveryError> {
        let key = format!("{}{}", role_prefix(prefix, &info.role), info.address);
        let value = serde_json::to_string(&info).expect("WorkerInfo serializes");
        let ttl_s = ttl.as_secs().max(2) as i64;
        let lease = grant_and_put(target, &key, &value, ttl_s).await?;
        let (stop, stopped) = oneshot::channel();
        let health = Arc::new(LeaseHealth::default());
        let task = tokio::spawn(keep_alive(
            KeepAlive {
                target: target.clone(),
                key: key.clone(),
                value,
                ttl_s,
                health: health.clone(),
            },
            lease,
            stopped,
        ));
        Ok(Registration {
            stop: Some(stop),
            task: Some(task),
            endpoints: target.endpoints.clone(),
            key,
            health,
        })
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// Failed renewals and lost leases so far.
    pub fn health(&self) -> &LeaseHealth {
        &self.health
    }

    /// Stops the keep-alive and revokes the lease, deleting the entry now rather than
    /// when the lease runs out.
    pub async fn deregister(mut self) -> Result<(), DiscoveryError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let lease = match self.task.take() {
            Some(task) => task.await.ok().flatten(),
            None => None,
        };
        if let Some(mut lease) = lease {
            within(&self.endpoints, lease.client.lease_revoke(lease.id)).await?;
        }
        Ok(())
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

async fn grant_and_put(
    target: &EtcdTarget,
    key: &str,
    value: &str,
    ttl_s: i64,
) -> Result<Lease, DiscoveryError> {
    let endpoints = &target.endpoints;
    let mut client = connect(target).await?;
    let id = within(endpoints, client.lease_grant(ttl_s, None))
        .await?
        .id();
    within(
        endpoints,
        client.put(key, value, Some(PutOptions::new().with_lease(id))),
    )
    .await?;
    Ok(Lease { client, id })
}

/// Renews the lease every third of its TTL until told to stop; returns the live lease
/// (if any) so the caller can revoke it. A failed renewal is retried on the same lease;
/// once the lease has expired (etcd away longer than the TTL), the entry is put again
/// under a new one.
async fn keep_alive(
    entry: KeepAlive,
    lease: Lease,
    mut stopped: oneshot::Receiver<()>,
) -> Option<Lease> {
    let KeepAlive {
        target,
        key,
        value,
        ttl_s,
        health,
    } = entry;
    let ttl = Duration::from_secs(ttl_s as u64);
    let period = ttl / 3;
    let mut lease = Some(lease);
    let mut renewed = Instant::now();
    let mut keeper: Option<(LeaseKeeper, LeaseKeepAliveStream)> = None;
    loop {
        let wait = if renewed.elapsed() < period {
            period
        } else {
            RETRY
        };
        tokio::select! {
            _ = &mut stopped => return lease,
            _ = tokio::time::sleep(wait) => {}
        }
        let Some(current) = lease.as_mut() else {
            match grant_and_put(&target, &key, &value, ttl_s).await {
                Ok(l) => {
                    tracing::info!(%key, "registered again in etcd");
                    lease = Some(l);
                    renewed = Instant::now();
                }
                Err(e) => tracing::debug!(%key, error = %e, "etcd still unreachable"),
            }
            continue;
        };
        match renew(&target.endpoints, current, &mut keeper).await {
            Ok(true) => renewed = Instant::now(),
            Ok(false) => {
                tracing::warn!(%key, "etcd lease expired; registering again");
                health.lost.fetch_add(1, Ordering::Relaxed);
                lease = None;
                keeper = None;
            }
            Err(e) => {
                keeper = None;
                health.failed_renewals.fetch_add(1, Ordering::Relaxed);
                if renewed.elapsed() >= ttl {
                    tracing::warn!(%key, error = %e, "etcd lease lost; will register again");
                    health.lost.fetch_add(1, Ordering::Relaxed);
                    lease = None;
                } else {
                    tracing::debug!(%key, error = %e, "etcd lease renewal failed; retrying");
                }
            }
        }
    }
}

/// The entry a keep-alive task maintains.
struct KeepAlive {
    target: EtcdTarget,
    key: String,
    value: String,
    ttl_s: i64,
    health: Arc<LeaseHealth>,
}

/// Pause between attempts while etcd is failing.
const RETRY: Duration = Duration::from_millis(500);

/// One keep-alive round trip on a long-lived stream. Ok(false): the lease is gone.
async fn renew(
    endpoints: &[String],
    lease: &mut Lease,
    keeper: &mut Option<(LeaseKeeper, LeaseKeepAliveStream)>,
) -> Result<bool, DiscoveryError> {
    let Some((k, stream)) = keeper else {
        // Opening the stream is itself a renewal: etcd-client sends the first keep-alive
        // and reads its answer (so there is no answer left to wait for here), refusing
        // a lease etcd no longer has.
        return match within(endpoints, lease.client.lease_keep_alive(lease.id)).await {
            Ok(opened) => {
                *keeper = Some(opened);
                Ok(true)
            }
            Err(DiscoveryError::Etcd {
                source: etcd_client::Error::LeaseKeepAliveError(message),
                ..
            }) if message.contains("lease not found") => Ok(false),
            Err(e) => Err(e),
        };
    };
    let reply = within(endpoints, async {
        k.keep_alive().await?;
        stream.message().await
    })
    .await?;
    match reply {
        Some(r) => Ok(r.ttl() > 0),
        // The stream closed (a reset connection, a restarted etcd): not the lease's end;
        // the caller reopens the stream on the same lease.
        None => Err(DiscoveryError::Etcd {
            endpoints: endpoints.join(","),
            source: etcd_client::Error::LeaseKeepAliveError("the keep-alive stream closed".into()),
        }),
    }
}
