//! Where the role workers are. A worker registers itself in etcd under a per-role
//! prefix, bound to a lease it keeps alive ([`registry`]); a client follows those
//! prefixes and keeps a live set of workers per role ([`membership`]). On one machine
//! the same set can be given statically, with no etcd at all.

pub mod access;
pub mod membership;
pub mod registry;

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// etcd's TLS settings, for [`EtcdTarget::tls`].
pub use etcd_client::{Certificate, Identity, TlsOptions};

/// What a worker says about itself in the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// planner, caller or summarizer.
    pub role: String,
    /// How clients reach it, e.g. `http://10.0.0.7:50051`.
    pub address: String,
    pub model: String,
    pub device: String,
    /// Requests it serves at once (the engine queues the rest).
    pub capacity: u32,
}

impl WorkerInfo {
    /// A worker known only by its address (static discovery: nothing else was given).
    pub fn at(role: &str, address: &str) -> Self {
        WorkerInfo {
            role: role.to_string(),
            address: address.to_string(),
            model: String::new(),
            device: String::new(),
            capacity: 1,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("etcd at {endpoints}: {source}")]
    Etcd {
        endpoints: String,
        #[source]
        source: etcd_client::Error,
    },
    #[error("etcd at {endpoints} did not answer within {timeout:?}")]
    Timeout {
        endpoints: String,
        timeout: Duration,
    },
}

/// The key prefix of one role's workers.
pub fn role_prefix(prefix: &str, role: &str) -> String {
    format!("{}/workers/{role}/", prefix.trim_end_matches('/'))
}

/// The prefix under which all roles' workers live.
pub fn workers_prefix(prefix: &str) -> String {
    format!("{}/workers/", prefix.trim_end_matches('/'))
}

/// How long to wait for etcd on a single request before calling it unreachable.
pub(crate) const ETCD_TIMEOUT: Duration = Duration::from_secs(3);

/// HTTP/2 pings to etcd: how often, and how long an answer may take. etcd refuses pings
/// more frequent than its `--grpc-keepalive-min-time` (5 s by default) and closes the
/// connection of a client that sends them, so the interval stays above it; a silent
/// etcd host is noticed within interval + timeout (9 s).
pub(crate) const PING_INTERVAL: Duration = Duration::from_secs(6);
pub(crate) const PING_TIMEOUT: Duration = Duration::from_secs(3);

/// How to reach etcd: its endpoints (`https://` ones with TLS), and the TLS settings
/// and user it requires when its client port is secured (`--client-cert-auth`,
/// `etcdctl auth enable`).
#[derive(Clone, Default)]
pub struct EtcdTarget {
    pub endpoints: Vec<String>,
    pub tls: Option<etcd_client::TlsOptions>,
    /// User name and password.
    pub user: Option<(String, String)>,
}

impl EtcdTarget {
    /// Plain endpoints, no TLS, no user.
    pub fn new(endpoints: Vec<String>) -> Self {
        EtcdTarget {
            endpoints,
            ..EtcdTarget::default()
        }
    }
}

impl std::fmt::Debug for EtcdTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdTarget")
            .field("endpoints", &self.endpoints)
            .field("tls", &self.tls.is_some())
            .field("user", &self.user.as_ref().map(|(u, _)| u))
            .finish()
    }
}

pub(crate) async fn connect(target: &EtcdTarget) -> Result<etcd_client::Client, DiscoveryError> {
    let endpoints = &target.endpoints;
    // No client-wide request timeout: it would also bound the long-lived watch and lease
    // keep-alive streams, which etcd then cancels every few seconds. Each unary call and
    // each keep-alive round trip is bounded by `within` instead.
    let mut options = etcd_client::ConnectOptions::new()
        .with_connect_timeout(ETCD_TIMEOUT)
        .with_keep_alive(PING_INTERVAL, PING_TIMEOUT)
        // A member cut off from its cluster's quorum refuses (and ends our watch)
        // rather than serving a stale worker set.
        .with_require_leader(true);
    if let Some(tls) = &target.tls {
        options = options.with_tls(tls.clone());
    }
    if let Some((user, password)) = &target.user {
        options = options.with_user(user.clone(), password.clone());
    }
    within(
        endpoints,
        etcd_client::Client::connect(endpoints, Some(options)),
    )
    .await
}

/// Runs one etcd operation with [`ETCD_TIMEOUT`], naming the endpoints on failure.
pub(crate) async fn within<T>(
    endpoints: &[String],
    op: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, DiscoveryError> {
    match tokio::time::timeout(ETCD_TIMEOUT, op).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(DiscoveryError::Etcd {
            endpoints: endpoints.join(","),
            source,
        }),
        Err(_) => Err(DiscoveryError::Timeout {
            endpoints: endpoints.join(","),
            timeout: ETCD_TIMEOUT,
        }),
    }
}
