//! The live set of workers per role, as a `tokio::sync::watch` value: fixed (static
//! discovery, the one-machine default) or following etcd. When etcd becomes
//! unreachable the last known set stays in force, and the follower lists again and
//! resumes watching once etcd is back.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{EventType, GetOptions, WatchOptions};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::{connect, within, workers_prefix, DiscoveryError, EtcdTarget, WorkerInfo};

/// Registry key → worker.
pub type Workers = BTreeMap<String, WorkerInfo>;

#[derive(Clone)]
pub struct Membership {
    rx: watch::Receiver<Arc<Workers>>,
    /// Times the etcd watch broke and was started over (0 for a fixed set): an operator
    /// alerts on it growing while nothing fails.
    watch_losses: Arc<AtomicU64>,
    _source: Source,
}

/// What keeps the set alive: the sender of a fixed set, or the etcd follower task.
#[derive(Clone)]
enum Source {
    Fixed(#[allow(dead_code)] Arc<watch::Sender<Arc<Workers>>>),
    Etcd(#[allow(dead_code)] Arc<AbortOnDrop>),
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Membership {
    /// A set that never changes.
    pub fn fixed(workers: impl IntoIterator<Item = WorkerInfo>) -> Self {
        let map = workers
            .into_iter()
            .map(|w| (format!("static/{}/{}", w.role, w.address), w))
            .collect();
        let (tx, rx) = watch::channel(Arc::new(map));
        Membership {
            rx,
            watch_losses: Arc::default(),
            _source: Source::Fixed(Arc::new(tx)),
        }
    }

    /// Follows `<prefix>/workers/` in etcd. Fails, naming etcd, if the first listing
    /// cannot be made.
    pub async fn etcd(target: &EtcdTarget, prefix: &str) -> Result<Self, DiscoveryError> {
        let prefix = workers_prefix(prefix);
        let mut client = connect(target).await?;
        let (workers, revision) = list(&target.endpoints, &mut client, &prefix).await?;
        let (tx, rx) = watch::channel(Arc::new(workers));
        let watch_losses = Arc::new(AtomicU64::new(0));
        let follower = tokio::spawn(follow(
            target.clone(),
            prefix,
            Some((client, revision)),
            tx,
            watch_losses.clone(),
        ));
        Ok(Membership {
            rx,
            watch_losses,
            _source: Source::Etcd(Arc::new(AbortOnDrop(follower))),
        })
    }

    /// The live workers of `role`.
    pub fn workers(&self, role: &str) -> Vec<WorkerInfo> {
        self.rx
            .borrow()
            .values()
            .filter(|w| w.role == role)
            .cloned()
            .collect()
    }

    /// How many times the etcd watch was lost and started over.
    pub fn watch_losses(&self) -> u64 {
        self.watch_losses.load(Ordering::Relaxed)
    }

    /// Every live worker.
    pub fn all(&self) -> Arc<Workers> {
        self.rx.borrow().clone()
    }

    /// Waits until the set changes (forever for a fixed set).
    pub async fn changed(&mut self) {
        // The sender lives as long as `self`, so this only returns on a change.
        let _ = self.rx.changed().await;
    }
}

async fn list(
    endpoints: &[String],
    client: &mut etcd_client::Client,
    prefix: &str,
) -> Result<(Workers, i64), DiscoveryError> {
    let reply = within(
        endpoints,
        client.get(prefix, Some(GetOptions::new().with_prefix())),
    )
    .await?;
    let revision = reply.header().map_or(0, |h| h.revision());
    let workers = reply
        .kvs()
        .iter()
        .filter_map(|kv| parse(prefix, kv.key(), kv.value()))
        .collect();
    Ok((workers, revision))
}

/// A registry entry under `workers_prefix` (`<prefix>/workers/`): its key and worker, if
/// it is one. The role is the key's: an entry whose value claims another role than the
/// prefix it was written under is refused, so etcd's per-prefix permissions (a user per
/// role, see deploy/) decide which roles a worker may serve.
fn parse(workers_prefix: &str, key: &[u8], value: &[u8]) -> Option<(String, WorkerInfo)> {
    let key = String::from_utf8_lossy(key).into_owned();
    let info = match serde_json::from_slice::<WorkerInfo>(value) {
        Ok(info) => info,
        Err(e) => {
            tracing::warn!(%key, error = %e, "ignoring a registry entry that is not a worker");
            return None;
        }
    };
    let key_role = key
        .strip_prefix(workers_prefix)
        .and_then(|rest| rest.split_once('/'))
        .map(|(role, _)| role);
    if key_role != Some(info.role.as_str()) {
        tracing::warn!(%key, claimed = %info.role, "ignoring a registry entry whose role is not its key's");
        return None;
    }
    Some((key, info))
}

/// Lists, then watches from the listing's revision; on any error keeps the last set,
/// waits (backing off up to 2 s), and starts over.
async fn follow(
    target: EtcdTarget,
    prefix: String,
    mut start: Option<(etcd_client::Client, i64)>,
    tx: watch::Sender<Arc<Workers>>,
    losses: Arc<AtomicU64>,
) {
    let endpoints = &target.endpoints;
    let mut backoff = Duration::from_millis(100);
    loop {
        // Set once the watch is open: only the end of an open watch counts as a loss
        // (failed reconnects while etcd is away do not).
        let mut established = false;
        let result = async {
            let (mut client, revision) = match start.take() {
                Some(s) => s,
                None => {
                    let mut client = connect(&target).await?;
                    let (workers, revision) = list(endpoints, &mut client, &prefix).await?;
                    tx.send_replace(Arc::new(workers));
                    tracing::info!("etcd listing refreshed");
                    (client, revision)
                }
            };
            let options = WatchOptions::new()
                .with_prefix()
                .with_start_revision(revision + 1);
            let mut stream =
                within(endpoints, client.watch(prefix.as_str(), Some(options))).await?;
            established = true;
            backoff = Duration::from_millis(100);
            while let Some(reply) =
                stream
                    .message()
                    .await
                    .map_err(|source| DiscoveryError::Etcd {
                        endpoints: endpoints.join(","),
                        source,
                    })?
            {
                if reply.canceled() {
                    break;
                }
                if reply.events().is_empty() {
                    continue;
                }
                tx.send_modify(|workers| {
                    let workers = Arc::make_mut(workers);
                    for event in reply.events() {
                        let Some(kv) = event.kv() else { continue };
                        match event.event_type() {
                            EventType::Put => match parse(&prefix, kv.key(), kv.value()) {
                                Some((key, info)) => {
                                    workers.insert(key, info);
                                }
                                // An entry overwritten with something refused is gone.
                                None => {
                                    workers.remove(&*String::from_utf8_lossy(kv.key()));
                                }
                            },
                            EventType::Delete => {
                                workers.remove(&*String::from_utf8_lossy(kv.key()));
                            }
                        }
                    }
                });
            }
            Ok::<(), DiscoveryError>(())
        }
        .await;
        if established {
            losses.fetch_add(1, Ordering::Relaxed);
        }
        match result {
            Err(e) => {
                tracing::warn!(error = %e, "etcd watch lost; keeping the last known workers")
            }
            Ok(()) => tracing::warn!("etcd ended the watch; keeping the last known workers"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_counts_only_for_the_role_its_key_names() {
        let value = |role: &str| {
            serde_json::to_vec(&WorkerInfo::at(role, "https://10.0.0.7:50051")).unwrap()
        };
        let prefix = workers_prefix("/umi");
        let key = b"/umi/workers/planner/https://10.0.0.7:50051";
        let (_, info) = parse(&prefix, key, &value("planner")).unwrap();
        assert_eq!(info.role, "planner");
        // Written under the caller prefix (by the caller's etcd user), claiming planner.
        let forged = b"/umi/workers/caller/https://10.0.0.7:50051";
        assert!(parse(&prefix, forged, &value("planner")).is_none());
        // Keys outside the workers prefix, or without a role segment, are no workers.
        assert!(parse(&prefix, b"/umi/workers/planner", &value("planner")).is_none());
        assert!(parse(&prefix, b"/other/workers/planner/x", &value("planner")).is_none());
        assert!(parse(&prefix, key, b"not json").is_none());
    }

    #[test]
    fn a_fixed_set_answers_per_role() {
        let m = Membership::fixed([
            WorkerInfo::at("planner", "http://a"),
            WorkerInfo::at("planner", "http://b"),
            WorkerInfo::at("caller", "http://c"),
        ]);
        let planners: Vec<String> = m
            .workers("planner")
            .into_iter()
            .map(|w| w.address)
            .collect();
        assert_eq!(planners, ["http://a", "http://b"]);
        assert_eq!(m.workers("summarizer"), []);
    }

    #[test]
    fn role_prefixes_do_not_overlap() {
        assert_eq!(
            crate::role_prefix("/umi/", "planner"),
            "/umi/workers/planner/"
        );
        assert!(
            !crate::role_prefix("/umi", "planner").starts_with(&crate::role_prefix("/umi", "plan"))
        );
    }
}
