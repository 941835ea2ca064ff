//! `ClusterRoles`: the three roles served by remote workers, behind the same trait as
//! the in-process engines. Each call goes to the live replica of its role with the
//! fewest calls outstanding from this client; a replica that fails (connection lost,
//! worker killed, its host silent past the HTTP/2 keep-alive) is set aside for a moment
//! and the call is retried
//! on another one, within the call's deadline and attempt budget. With no live replica
//! the call waits for one to register until the deadline, then fails with that reason.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tonic::transport::{Channel, Endpoint};
use tonic::Code;
use tracing::Instrument;
use umi_core::agent::{BoxFuture, Generated, RoleKind, RoleModels, RoleRequest};
use umi_discovery::membership::Membership;

use crate::convert::request_to_pb;
use crate::pb;
use crate::pb::role_worker_client::RoleWorkerClient;

/// How hard a call tries before it is a failure.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// For the whole call: waiting for a worker, every attempt, every retry.
    pub deadline: Duration,
    /// Workers tried per call.
    pub max_attempts: usize,
    /// How long a replica that failed is skipped by new calls.
    pub cooldown: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            deadline: Duration::from_secs(600),
            max_attempts: 3,
            cooldown: Duration::from_secs(2),
        }
    }
}

struct Replica {
    client: RoleWorkerClient<Channel>,
    outstanding: AtomicUsize,
    failed_at: Mutex<Option<Instant>>,
}

/// Counts a call as outstanding on a replica until dropped.
struct Outstanding(Arc<Replica>);

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Clone)]
pub struct ClusterRoles {
    membership: Membership,
    replicas: Arc<Mutex<HashMap<String, Arc<Replica>>>>,
    sampling: pb::Sampling,
    policy: RetryPolicy,
    /// Calls made so far: each call's seed is the base seed plus this, as in process, so
    /// sampled calls with equal prompts still differ.
    calls: Arc<AtomicU64>,
}

impl ClusterRoles {
    pub fn new(membership: Membership, sampling: pb::Sampling, policy: RetryPolicy) -> Self {
        ClusterRoles {
            membership,
            replicas: Arc::default(),
            sampling,
            policy,
            calls: Arc::default(),
        }
    }

    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// The live replica of `role` with the fewest outstanding calls, skipping those
    /// already tried by this call and, while others exist, those that failed recently.
    fn pick(
        &self,
        role: RoleKind,
        tried: &HashSet<String>,
    ) -> Result<Option<(String, Arc<Replica>)>, String> {
        let live = self.membership.workers(role.as_str());
        let mut replicas = self.replicas.lock().map_err(|_| "replica table poisoned")?;
        // Forget replicas that left, so their connections close.
        let all = self.membership.all();
        let addresses: HashSet<&str> = all.values().map(|w| w.address.as_str()).collect();
        replicas.retain(|a, _| addresses.contains(a.as_str()));
        let mut best: Option<(bool, usize, String, Arc<Replica>)> = None;
        for worker in live {
            if tried.contains(&worker.address) {
                continue;
            }
            let replica = match replicas.get(&worker.address) {
                Some(r) => r.clone(),
                None => {
                    let endpoint = match Endpoint::from_shared(worker.address.clone()) {
                        Ok(e) => e,
                        Err(e) => {
                            // One bad registry entry must not stop the healthy replicas.
                            tracing::warn!(address = %worker.address, error = %e, "skipping a worker with an invalid address");
                            continue;
                        }
                    };
                    let endpoint = endpoint
                        .connect_timeout(Duration::from_secs(3))
                        .tcp_nodelay(true)
                        // A worker whose host vanished (no RST) fails its calls within
                        // seconds instead of holding them until the deadline.
                        .http2_keep_alive_interval(Duration::from_secs(5))
                        .keep_alive_timeout(Duration::from_secs(10))
                        .keep_alive_while_idle(true);
                    let r = Arc::new(Replica {
                        client: RoleWorkerClient::new(endpoint.connect_lazy()),
                        outstanding: AtomicUsize::new(0),
                        failed_at: Mutex::new(None),
                    });
                    replicas.insert(worker.address.clone(), r.clone());
                    r
                }
            };
            let cooling = replica
                .failed_at
                .lock()
                .ok()
                .and_then(|t| *t)
                .is_some_and(|t| t.elapsed() < self.policy.cooldown);
            let load = replica.outstanding.load(Ordering::Relaxed);
            let better = match &best {
                None => true,
                Some((c, l, _, _)) => (cooling, load) < (*c, *l),
            };
            if better {
                best = Some((cooling, load, worker.address, replica));
            }
        }
        Ok(best.map(|(_, _, address, replica)| {
            replica.outstanding.fetch_add(1, Ordering::Relaxed);
            (address, replica)
        }))
    }

    async fn call(&self, request: RoleRequest) -> Result<Generated, String> {
        let role = request.role;
        let started = Instant::now();
        let deadline = started + self.policy.deadline;
        let mut sampling = self.sampling;
        sampling.seed = sampling
            .seed
            .wrapping_add(self.calls.fetch_add(1, Ordering::Relaxed));
        let wire = request_to_pb(&request, sampling);
        let mut tried = HashSet::new();
        let mut errors: Vec<String> = Vec::new();
        let mut membership = self.membership.clone();
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() || errors.len() >= self.policy.max_attempts {
                return Err(self.give_up(role, started, &errors));
            }
            let Some((address, replica)) = self.pick(role, &tried)? else {
                if !tried.is_empty() && errors.len() < self.policy.max_attempts {
                    // Every live replica failed once: give them another go after a pause.
                    tried.clear();
                    tokio::time::sleep(remaining.min(Duration::from_millis(200))).await;
                } else {
                    // None registered: wait for one to appear (or poll, in case a
                    // cooling replica's pause ended) until the deadline.
                    let _ = tokio::time::timeout(
                        remaining.min(Duration::from_millis(500)),
                        membership.changed(),
                    )
                    .await;
                }
                continue;
            };
            let guard = Outstanding(replica.clone());
            let mut client = replica.client.clone();
            let mut grpc = tonic::Request::new(wire.clone());
            grpc.set_timeout(remaining);
            crate::trace_context::inject(grpc.metadata_mut());
            let attempt = tokio::time::timeout(remaining, client.generate(grpc)).await;
            drop(guard);
            let status = match attempt {
                Ok(Ok(reply)) => {
                    let reply = reply.into_inner();
                    let span = tracing::Span::current();
                    span.record("replica", address.as_str());
                    span.record("attempts", errors.len() + 1);
                    span.record("prompt_tokens", reply.prompt_tokens);
                    span.record("generated_tokens", reply.generated_tokens);
                    span.record("latency_ms", started.elapsed().as_millis() as u64);
                    return Ok(Generated {
                        text: reply.text,
                        prompt_tokens: reply.prompt_tokens as usize,
                        generated_tokens: reply.generated_tokens as usize,
                    });
                }
                Ok(Err(status)) => status,
                Err(_) => tonic::Status::deadline_exceeded("no answer before the deadline"),
            };
            if !retryable(status.code()) {
                return Err(format!(
                    "{} worker {address}: {}",
                    role.as_str(),
                    status.message()
                ));
            }
            tracing::warn!(role = role.as_str(), %address, code = ?status.code(), error = status.message(), "role call failed; retrying (another replica first)");
            if let Ok(mut t) = replica.failed_at.lock() {
                *t = Some(Instant::now());
            }
            errors.push(format!("{address}: {}", status.message()));
            tried.insert(address);
        }
    }

    fn give_up(&self, role: RoleKind, started: Instant, errors: &[String]) -> String {
        let waited = started.elapsed().as_secs_f64();
        if errors.is_empty() {
            format!(
                "no live {} worker (waited {waited:.1} s for one to register)",
                role.as_str()
            )
        } else {
            format!(
                "{} worker: {} attempt(s) failed in {waited:.1} s: {}",
                role.as_str(),
                errors.len(),
                errors.join("; ")
            )
        }
    }
}

/// Failures another replica may not repeat. A request the worker rejected as invalid
/// would be rejected everywhere, so it is not retried.
fn retryable(code: Code) -> bool {
    !matches!(
        code,
        Code::InvalidArgument
            | Code::FailedPrecondition
            | Code::OutOfRange
            | Code::Unimplemented
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::NotFound
            | Code::AlreadyExists
    )
}

impl RoleModels for ClusterRoles {
    fn generate<'a>(&'a self, request: RoleRequest) -> BoxFuture<'a, Result<Generated, String>> {
        let span = tracing::info_span!(
            "role_call",
            role = request.role.as_str(),
            replica = tracing::field::Empty,
            attempts = tracing::field::Empty,
            prompt_tokens = tracing::field::Empty,
            generated_tokens = tracing::field::Empty,
            latency_ms = tracing::field::Empty,
        );
        Box::pin(self.call(request).instrument(span))
    }
}
