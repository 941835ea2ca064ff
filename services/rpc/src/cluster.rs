//! `ClusterRoles`: the three roles served by remote workers, behind the same trait as
//! the in-process engines. Each call goes to the live replica of its role with the
//! fewest calls outstanding from this client; a replica that fails (connection lost,
//! worker killed, its host silent past the HTTP/2 keep-alive) is set aside for a moment
//! and the call is retried on another one, within the call's deadline and attempt
//! budget. With no live replica the call waits for one to register until the deadline,
//! then fails with that reason. Failures are classified here, once, from the gRPC status
//! (`convert::classify`), and a request refused as invalid is never retried.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::Instrument;
use umi_core::agent::{BoxFuture, EngineKind, Generated, RoleKind, RoleModels, RoleRequest};
use umi_core::log_limit::{LogLimiter, REFUSAL_LOG_INTERVAL};
use umi_core::presets::{CallSampling, Sampling};
use umi_core::{CoreError, ErrorClass};
use umi_discovery::membership::Membership;

use crate::routing::{self, AffinityTable, Candidate, Routing};
use crate::security::ClientSecurity;
use crate::transport::{GrpcTransport, RoleTransport};
use crate::wire::{classify, request_to_pb};

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

struct Replica<C> {
    connection: C,
    outstanding: AtomicUsize,
    failed_at: Mutex<Option<Instant>>,
}

/// Counts a call as outstanding on a replica until dropped.
struct Outstanding<C>(Arc<Replica<C>>);

impl<C> Drop for Outstanding<C> {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Warnings about registry entries this client refuses (plaintext, a bad address).
static UNUSABLE_LOG: LogLimiter = LogLimiter::new(REFUSAL_LOG_INTERVAL);

/// Connections by (role, address).
type ReplicaTable<C> = HashMap<(String, String), Arc<Replica<C>>>;

/// The first pause before asking full replicas again, and the longest.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

pub struct ClusterRoles<T: RoleTransport = GrpcTransport> {
    membership: Membership,
    transport: T,
    replicas: Mutex<ReplicaTable<T::Connection>>,
    /// Each call's sampling and seed (`CallSampling::for_call`, as in process).
    sampling: CallSampling,
    policy: RetryPolicy,
    routing: Routing,
    affinity: AffinityTable,
}

impl ClusterRoles<GrpcTransport> {
    /// Role calls over gRPC, presenting `security` (TLS settings and token) to workers.
    pub fn new(
        membership: Membership,
        security: ClientSecurity,
        sampling: Sampling,
        policy: RetryPolicy,
    ) -> Self {
        Self::with_transport(membership, GrpcTransport::new(security), sampling, policy)
    }
}

impl<T: RoleTransport> ClusterRoles<T> {
    pub fn with_transport(
        membership: Membership,
        transport: T,
        sampling: Sampling,
        policy: RetryPolicy,
    ) -> Self {
        ClusterRoles {
            membership,
            transport,
            replicas: Mutex::default(),
            sampling: CallSampling::new(sampling),
            policy,
            routing: Routing::default(),
            affinity: AffinityTable::default(),
        }
    }

    /// Places calls as `routing` says (default: task affinity).
    pub fn with_routing(mut self, routing: Routing) -> Self {
        self.routing = routing;
        self
    }

    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// The live replica of `role` that takes a call of `task` (`routing`), skipping
    /// those already tried by this call and, while others exist, those that failed
    /// recently.
    fn pick(
        &self,
        role: RoleKind,
        task: &str,
        tried: &HashSet<String>,
    ) -> Option<(String, Arc<Replica<T::Connection>>)> {
        let live = self.membership.workers(role.as_str());
        // Every update of the table is a single insert or removal: a poisoned lock
        // still holds a consistent table.
        let mut replicas = self.replicas.lock().unwrap_or_else(|p| p.into_inner());
        // Forget replicas that left, so their connections close. A connection is the
        // pair (role, address): it checks the worker's certificate for that role.
        let all = self.membership.all();
        let live_pairs: HashSet<(&str, &str)> = all
            .values()
            .map(|w| (w.role.as_str(), w.address.as_str()))
            .collect();
        replicas.retain(|(r, a), _| live_pairs.contains(&(r.as_str(), a.as_str())));
        let mut open: Vec<(String, Arc<Replica<T::Connection>>)> = Vec::new();
        for worker in live {
            if tried.contains(&worker.address) {
                continue;
            }
            let key = (worker.role.clone(), worker.address.clone());
            let replica = match replicas.get(&key) {
                Some(r) => r.clone(),
                None => match self.transport.connect(&worker.address, role.as_str()) {
                    Ok(connection) => {
                        let r = Arc::new(Replica {
                            connection,
                            outstanding: AtomicUsize::new(0),
                            failed_at: Mutex::new(None),
                        });
                        replicas.insert(key, r.clone());
                        r
                    }
                    Err(error) => {
                        // One bad registry entry must not stop the healthy replicas,
                        // nor flood the log: it is met again at every call.
                        if let Some(held_back) = UNUSABLE_LOG.admit() {
                            tracing::warn!(address = %worker.address, role = role.as_str(), %error, held_back, "skipping a worker this client cannot use");
                        }
                        continue;
                    }
                },
            };
            open.push((worker.address, replica));
        }
        let candidates: Vec<Candidate<'_>> = open
            .iter()
            .map(|(address, replica)| Candidate {
                address,
                cooling: replica
                    .failed_at
                    .lock()
                    .ok()
                    .and_then(|t| *t)
                    .is_some_and(|t| t.elapsed() < self.policy.cooldown),
                outstanding: replica.outstanding.load(Ordering::Relaxed),
            })
            .collect();
        let i = routing::choose(self.routing, &self.affinity, role, task, &candidates)?;
        let (address, replica) = open.swap_remove(i);
        replica.outstanding.fetch_add(1, Ordering::Relaxed);
        Some((address, replica))
    }

    async fn call(&self, request: RoleRequest) -> Result<Generated, CoreError> {
        let role = request.role;
        let started = Instant::now();
        let deadline = started + self.policy.deadline;
        let sampling = self.sampling.for_call(request.seed_offset);
        let wire = request_to_pb(&request, &sampling)?;
        let mut tried = HashSet::new();
        // (replica, class, message) of each failed attempt.
        let mut errors: Vec<(String, ErrorClass, String)> = Vec::new();
        // The last refusal by a full replica, and the pause before asking the full ones
        // again (doubling up to `MAX_BACKOFF`).
        let mut overloaded: Option<(String, String)> = None;
        // Whether the latest attempt was a refusal (its class then ends the call).
        let mut last_was_refusal = false;
        let mut backoff = FIRST_BACKOFF;
        let mut membership = self.membership.clone();
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() || errors.len() >= self.policy.max_attempts {
                let last_refused = overloaded.as_ref().filter(|_| last_was_refusal);
                let error = self.give_up(role, started, &errors, last_refused);
                crate::metrics::failed(role, error.class(), started.elapsed());
                return Err(error);
            }
            let Some((address, replica)) = self.pick(role, &request.task_id, &tried) else {
                if !tried.is_empty() && errors.len() < self.policy.max_attempts {
                    // Every live replica failed or refused once: give them another go
                    // after a pause, growing while they are full.
                    tried.clear();
                    let pause = if overloaded.is_some() {
                        let pause = backoff;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        pause
                    } else {
                        Duration::from_millis(200)
                    };
                    tokio::time::sleep(remaining.min(pause)).await;
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
            let attempt = self
                .transport
                .generate(&replica.connection, wire.clone(), remaining)
                .await;
            drop(guard);
            let status = match attempt {
                Ok(reply) => {
                    let span = tracing::Span::current();
                    span.record("replica", address.as_str());
                    span.record("attempts", errors.len() + 1);
                    span.record("prompt_tokens", reply.prompt_tokens);
                    span.record("generated_tokens", reply.generated_tokens);
                    span.record("latency_ms", started.elapsed().as_millis() as u64);
                    crate::metrics::answered(role, started.elapsed());
                    self.affinity.served(role, &request.task_id, &address);
                    return Ok(Generated {
                        text: reply.text,
                        prompt_tokens: reply.prompt_tokens as usize,
                        cached_tokens: reply.cached_tokens as usize,
                        generated_tokens: reply.generated_tokens as usize,
                        simulated: reply.engine == EngineKind::Sim.label(),
                        chat: None,
                    });
                }
                Err(status) => status,
            };
            let class = classify(status.code());
            if class == ErrorClass::ResourceExhausted {
                // A full replica refused before doing any work: try the others, then back
                // off. Refusals do not spend the attempt budget, only the deadline.
                crate::metrics::retried(role, class);
                tracing::debug!(role = role.as_str(), %address, "replica full; trying another or backing off");
                overloaded = Some((address.clone(), status.message().to_string()));
                last_was_refusal = true;
                tried.insert(address);
                continue;
            }
            if !class.is_retryable() {
                crate::metrics::failed(role, class, started.elapsed());
                return Err(CoreError::role(
                    role,
                    class,
                    errors.len() + 1,
                    format!("worker {address}: {}", status.message()),
                ));
            }
            tracing::warn!(role = role.as_str(), %address, code = ?status.code(), error = status.message(), "role call failed; retrying (another replica first)");
            crate::metrics::retried(role, class);
            if let Ok(mut t) = replica.failed_at.lock() {
                *t = Some(Instant::now());
            }
            errors.push((address.clone(), class, status.message().to_string()));
            last_was_refusal = false;
            tried.insert(address);
        }
    }

    /// The call's failure: the class of its last attempt (resource exhausted when that
    /// was a refusal by a full replica, `last_refused`; unavailable if no replica ever
    /// registered), and every attempt's reason.
    fn give_up(
        &self,
        role: RoleKind,
        started: Instant,
        errors: &[(String, ErrorClass, String)],
        last_refused: Option<&(String, String)>,
    ) -> CoreError {
        let waited = started.elapsed().as_secs_f64();
        if let Some((address, message)) = last_refused {
            let earlier: Vec<String> = errors
                .iter()
                .map(|(address, _, message)| format!("; earlier {address}: {message}"))
                .collect();
            return CoreError::role(
                role,
                ErrorClass::ResourceExhausted,
                errors.len(),
                format!(
                    "every {} replica stayed full for {waited:.1} s (last: {address}: {message}){}",
                    role.as_str(),
                    earlier.concat()
                ),
            );
        }
        match errors.last() {
            None => CoreError::role(
                role,
                ErrorClass::Unavailable,
                0,
                format!(
                    "no live {} worker (waited {waited:.1} s for one to register)",
                    role.as_str()
                ),
            ),
            Some((_, class, _)) => {
                let reasons: Vec<String> = errors
                    .iter()
                    .map(|(address, _, message)| format!("{address}: {message}"))
                    .collect();
                CoreError::role(
                    role,
                    *class,
                    errors.len(),
                    format!("{} in {waited:.1} s", reasons.join("; ")),
                )
            }
        }
    }
}

impl<T: RoleTransport> RoleModels for ClusterRoles<T> {
    fn generate<'a>(&'a self, request: RoleRequest) -> BoxFuture<'a, Result<Generated, CoreError>> {
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use tonic::Code;
    use umi_core::prompt::HistoryTurn;
    use umi_discovery::WorkerInfo;

    use super::*;
    use crate::pb;

    /// Test double for the network: each replica (by address) answers with its own
    /// address, fails with a scripted code, or holds the call until released; every
    /// attempt is logged.
    struct ScriptedTransport {
        /// Held calls wait for a permit.
        failures: Mutex<HashMap<String, Vec<Code>>>,
        hold: AtomicBool,
        release: tokio::sync::Semaphore,
        log: Mutex<Vec<String>>,
    }

    impl Default for ScriptedTransport {
        fn default() -> Self {
            ScriptedTransport {
                release: tokio::sync::Semaphore::new(0),
                failures: Mutex::default(),
                hold: AtomicBool::new(false),
                log: Mutex::default(),
            }
        }
    }

    impl ScriptedTransport {
        /// `address` fails its next attempts with these codes, in order.
        fn fail(self, address: &str, codes: &[Code]) -> Self {
            self.failures
                .lock()
                .unwrap()
                .insert(address.to_string(), codes.to_vec());
            self
        }

        fn holding(self) -> Self {
            self.hold.store(true, Ordering::SeqCst);
            self
        }

        fn log(&self) -> Vec<String> {
            self.log.lock().unwrap().clone()
        }
    }

    impl RoleTransport for ScriptedTransport {
        type Connection = String;

        fn connect(&self, address: &str, _role: &str) -> Result<String, CoreError> {
            if address.contains(' ') {
                return Err(CoreError::invalid("worker address", "not a URI"));
            }
            Ok(address.to_string())
        }

        fn generate<'a>(
            &'a self,
            address: &'a String,
            _request: pb::GenerateRequest,
            timeout: Duration,
        ) -> BoxFuture<'a, Result<pb::GenerateResponse, tonic::Status>> {
            self.log.lock().unwrap().push(address.clone());
            let failure = {
                let mut failures = self.failures.lock().unwrap();
                failures
                    .get_mut(address)
                    .filter(|codes| !codes.is_empty())
                    .map(|codes| codes.remove(0))
            };
            Box::pin(async move {
                if let Some(code) = failure {
                    return Err(tonic::Status::new(code, format!("{code:?}")));
                }
                if self.hold.load(Ordering::SeqCst)
                    && tokio::time::timeout(timeout, self.release.acquire())
                        .await
                        .is_err()
                {
                    return Err(tonic::Status::deadline_exceeded("held"));
                }
                Ok(pb::GenerateResponse {
                    text: address.clone(),
                    ..Default::default()
                })
            })
        }
    }

    fn roles(
        addresses: &[&str],
        transport: ScriptedTransport,
        policy: RetryPolicy,
    ) -> Arc<ClusterRoles<ScriptedTransport>> {
        let membership = Membership::fixed(addresses.iter().map(|a| WorkerInfo::at("planner", a)));
        Arc::new(ClusterRoles::with_transport(
            membership,
            transport,
            umi_core::presets::REALTIME,
            policy,
        ))
    }

    fn planner_request() -> RoleRequest {
        RoleRequest::alpha_umi(
            RoleKind::Planner,
            vec![],
            vec![HistoryTurn::new("user", "q")],
            None,
        )
    }

    fn quick() -> RetryPolicy {
        RetryPolicy {
            deadline: Duration::from_secs(5),
            max_attempts: 3,
            cooldown: Duration::from_secs(60),
        }
    }

    #[tokio::test]
    async fn calls_go_to_the_replica_with_the_fewest_outstanding() {
        let roles = roles(&["a", "b"], ScriptedTransport::default().holding(), quick());
        let mut calls = Vec::new();
        for _ in 0..4 {
            let call = roles.clone();
            calls.push(tokio::spawn(async move {
                call.generate(planner_request()).await
            }));
            // Each call is outstanding before the next is made.
            while roles.transport.log().len() < calls.len() {
                tokio::task::yield_now().await;
            }
        }
        let mut log = roles.transport.log();
        log.sort();
        assert_eq!(log, ["a", "a", "b", "b"], "calls were not spread by load");
        roles.transport.release.add_permits(4);
        for call in calls {
            call.await.unwrap().unwrap();
        }
    }

    #[tokio::test]
    async fn a_failed_replica_is_retried_elsewhere_and_skipped_while_cooling() {
        let transport = ScriptedTransport::default().fail("a", &[Code::Unavailable]);
        let roles = roles(&["a", "b"], transport, quick());
        let first = roles.generate(planner_request()).await.unwrap();
        assert_eq!(
            first.text, "b",
            "the call was not retried on the other replica"
        );
        // a works again, but is cooling down: the next call goes to b first.
        let second = roles.generate(planner_request()).await.unwrap();
        assert_eq!(second.text, "b", "a replica that just failed was chosen");
        assert_eq!(roles.transport.log(), ["a", "b", "b"]);
    }

    #[tokio::test]
    async fn a_replica_is_chosen_again_once_its_cooldown_ends() {
        let transport = ScriptedTransport::default().fail("a", &[Code::Unavailable]);
        let policy = RetryPolicy {
            cooldown: Duration::from_millis(50),
            ..quick()
        };
        let roles = roles(&["a", "b"], transport, policy);
        roles.generate(planner_request()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let again = roles.generate(planner_request()).await.unwrap();
        assert_eq!(again.text, "a");
    }

    #[tokio::test]
    async fn an_invalid_request_is_not_retried() {
        let transport = ScriptedTransport::default().fail("a", &[Code::InvalidArgument]);
        let roles = roles(&["a", "b"], transport, quick());
        let error = roles.generate(planner_request()).await.unwrap_err();
        assert_eq!(error.class(), ErrorClass::InvalidRequest);
        assert_eq!(
            roles.transport.log(),
            ["a"],
            "an invalid request was retried"
        );
        assert!(
            error
                .to_string()
                .starts_with("planner: invalid request: worker a:"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn the_attempt_budget_ends_a_call_with_its_class_and_every_reason() {
        let transport = ScriptedTransport::default()
            .fail("a", &[Code::Unavailable, Code::Unavailable])
            .fail("b", &[Code::Internal, Code::Unavailable]);
        let roles = roles(&["a", "b"], transport, quick());
        let error = roles.generate(planner_request()).await.unwrap_err();
        assert_eq!(roles.transport.log().len(), 3);
        assert_eq!(error.class(), ErrorClass::Unavailable);
        let text = error.to_string();
        assert!(
            text.starts_with("planner: unavailable after 3 attempts: "),
            "{text}"
        );
        assert!(text.contains("b: Internal"), "{text}");
    }

    #[tokio::test]
    async fn full_replicas_are_waited_for_without_spending_the_attempt_budget() {
        let full = [Code::ResourceExhausted; 4];
        let transport = ScriptedTransport::default()
            .fail("a", &full)
            .fail("b", &full);
        let roles = roles(&["a", "b"], transport, quick());
        let reply = roles.generate(planner_request()).await.unwrap();
        // 8 refusals, more than the 3 attempts a failing replica gets, then an answer.
        assert_eq!(roles.transport.log().len(), 9);
        assert!(reply.text == "a" || reply.text == "b");

        // Full until the deadline: a resource-exhausted failure naming the last refusal.
        let policy = RetryPolicy {
            deadline: Duration::from_millis(300),
            ..quick()
        };
        let transport = ScriptedTransport::default().fail("a", &[Code::ResourceExhausted; 1000]);
        let roles = super::tests::roles(&["a"], transport, policy);
        let error = roles.generate(planner_request()).await.unwrap_err();
        assert_eq!(error.class(), ErrorClass::ResourceExhausted);
        assert!(error.to_string().contains("stayed full"), "{error}");
        let asked = roles.transport.log().len();
        assert!(
            (3..60).contains(&asked),
            "asked a full replica {asked} times in 300 ms"
        );

        // A failure, then refusals until the deadline: the last attempt's class wins,
        // and the earlier failure is still named.
        let policy = RetryPolicy {
            deadline: Duration::from_millis(300),
            ..quick()
        };
        let mut codes = vec![Code::Unavailable];
        codes.extend([Code::ResourceExhausted; 1000]);
        let transport = ScriptedTransport::default().fail("a", &codes);
        let roles = super::tests::roles(&["a"], transport, policy);
        let error = roles.generate(planner_request()).await.unwrap_err();
        assert_eq!(error.class(), ErrorClass::ResourceExhausted);
        assert!(
            error.to_string().contains("earlier a: Unavailable"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_call_ends_at_its_deadline() {
        let policy = RetryPolicy {
            deadline: Duration::from_millis(200),
            ..quick()
        };
        let roles = roles(&["a"], ScriptedTransport::default().holding(), policy);
        let started = Instant::now();
        let error = roles.generate(planner_request()).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(error.class(), ErrorClass::DeadlineExceeded);
    }

    #[tokio::test]
    async fn no_live_replica_is_unavailable_and_a_bad_address_is_skipped() {
        let policy = RetryPolicy {
            deadline: Duration::from_millis(100),
            ..quick()
        };
        let roles = roles(&["not a uri"], ScriptedTransport::default(), policy);
        let error = roles.generate(planner_request()).await.unwrap_err();
        assert_eq!(error.class(), ErrorClass::Unavailable);
        assert!(
            error.to_string().contains("no live planner worker"),
            "{error}"
        );
        assert!(roles.transport.log().is_empty());
    }
}
