//! A worker's entry in etcd: `<prefix>/workers/<role>/<address>` → [`WorkerInfo`] as
//! JSON, attached to a lease that a background task keeps alive. If etcd goes away
//! and the lease expires, the task registers again when etcd is back. Dropping the
//! handle (or [`Registration::deregister`]) ends the keep-alive; `deregister` also
//! revokes the lease so clients stop routing to the worker at once.

use std::time::Duration;

use etcd_client::PutOptions;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::{connect, role_prefix, within, DiscoveryError, WorkerInfo};

pub struct Registration {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Option<Lease>>>,
    endpoints: Vec<String>,
    key: String,
}

struct Lease {
    client: etcd_client::Client,
    id: i64,
}

impl Registration {
    /// Registers `info` with a lease of `ttl`. Fails, naming etcd, when it cannot be
    /// reached now; later outages are ridden out in the background.
    pub async fn register(
        endpoints: &[String],
        prefix: &str,
        info: WorkerInfo,
        ttl: Duration,
    ) -> Result<Self, DiscoveryError> {
        let key = format!("{}{}", role_prefix(prefix, &info.role), info.address);
        let value = serde_json::to_string(&info).expect("WorkerInfo serializes");
        let ttl_s = ttl.as_secs().max(2) as i64;
        let lease = grant_and_put(endpoints, &key, &value, ttl_s).await?;
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(keep_alive(
            endpoints.to_vec(),
            key.clone(),
            value,
            ttl_s,
            lease,
            stopped,
        ));
        Ok(Registration {
            stop: Some(stop),
            task: Some(task),
            endpoints: endpoints.to_vec(),
            key,
        })
    }

    pub fn key(&self) -> &str {
        &self.key
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
    endpoints: &[String],
    key: &str,
    value: &str,
    ttl_s: i64,
) -> Result<Lease, DiscoveryError> {
    let mut client = connect(endpoints).await?;
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
/// (if any) so the caller can revoke it.
async fn keep_alive(
    endpoints: Vec<String>,
    key: String,
    value: String,
    ttl_s: i64,
    lease: Lease,
    mut stopped: oneshot::Receiver<()>,
) -> Option<Lease> {
    let period = Duration::from_millis((ttl_s as u64 * 1000) / 3);
    let mut lease = Some(lease);
    loop {
        tokio::select! {
            _ = &mut stopped => return lease,
            _ = tokio::time::sleep(period) => {}
        }
        lease = match lease.take() {
            Some(l) => match renew(&endpoints, l).await {
                Ok(l) => Some(l),
                Err(e) => {
                    tracing::warn!(%key, error = %e, "etcd lease renewal failed; will register again");
                    None
                }
            },
            None => match grant_and_put(&endpoints, &key, &value, ttl_s).await {
                Ok(l) => {
                    tracing::info!(%key, "registered again in etcd");
                    Some(l)
                }
                Err(e) => {
                    tracing::debug!(%key, error = %e, "etcd still unreachable");
                    None
                }
            },
        };
    }
}

/// One keep-alive round trip. A TTL of 0 in the answer means the lease already expired
/// (etcd was away longer than the TTL): the entry is gone and must be put again.
async fn renew(endpoints: &[String], mut lease: Lease) -> Result<Lease, String> {
    let (mut keeper, mut stream) = within(endpoints, lease.client.lease_keep_alive(lease.id))
        .await
        .map_err(|e| e.to_string())?;
    keeper.keep_alive().await.map_err(|e| e.to_string())?;
    let reply = within(endpoints, stream.message())
        .await
        .map_err(|e| e.to_string())?;
    match reply {
        Some(r) if r.ttl() > 0 => Ok(lease),
        _ => Err("lease expired".into()),
    }
}
