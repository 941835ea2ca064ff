//! `umi.v1.Coordinator` over the task table.

use std::collections::HashSet;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;
use tokio_stream::Stream;
use tonic::server::NamedService;
use tonic::{Request, Response, Status};
use umi_core::task::Query;
use umi_discovery::membership::Membership;
use umi_rpc::pb;
use umi_rpc::pb::coordinator_server::{Coordinator, CoordinatorServer};
use umi_rpc::security::{Caller, ServerSecurity};
use umi_rpc::serve::Shutdown;
use umi_rpc::wire::status_from;

use crate::journal::{CrashCause, JournalError, TaskJournal};
use crate::state::{TaskState, TaskStatus};
use crate::tasks::{self, SubmitError, TaskSettings, Tasks};

/// What the coordinator needs to run tasks.
pub struct Settings {
    pub tasks: TaskSettings,
    /// The live workers, reported by Status.
    pub membership: Membership,
    /// Where tasks are journaled, so a restart keeps answers and reruns unfinished
    /// tasks; without one the task table lives in memory only.
    pub journal: Option<PathBuf>,
}

pub struct CoordinatorService {
    tasks: Arc<Tasks>,
    /// What the journal held at start.
    recovered: RecoveredCounts,
    membership: Membership,
    /// Set when the server stops, so open Watch streams end instead of holding the
    /// shutdown until their tasks finish.
    stopping: watch::Receiver<bool>,
    stop: Arc<watch::Sender<bool>>,
}

/// What a coordinator took back from its task journal at start.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RecoveredCounts {
    /// Ended tasks whose results are served again (including `failed_for_crashes`).
    pub kept: usize,
    /// Queued or running tasks, run again from their first step.
    pub rerun: usize,
    /// Tasks failed now: the coordinator crashed each time they ran.
    pub failed_for_crashes: usize,
}

impl CoordinatorService {
    /// Must be called inside the tokio runtime (the task table starts its janitor, and
    /// tasks recovered from the journal start running).
    pub fn new(s: Settings) -> Result<Self, JournalError> {
        let (journal, recovered) = match &s.journal {
            Some(path) => {
                let (journal, recovered) = TaskJournal::open(path, s.tasks.retention)?;
                (Some(journal), Some(recovered))
            }
            None => (None, None),
        };
        match recovered.as_ref().and_then(|r| r.previous_run.as_ref()) {
            Some(CrashCause::Panicked(message)) => tracing::warn!(
                %message,
                "the previous run panicked while tasks ran: the tasks the panic named count a crash"
            ),
            Some(CrashCause::NoTrace) => tracing::warn!(
                "the previous run ended without a trace while tasks ran (SIGKILL, OOM or an abort): no task is blamed"
            ),
            None => {}
        }
        let tasks = Tasks::new(s.tasks, journal);
        let counts = recovered
            .as_ref()
            .map_or(RecoveredCounts::default(), |r| RecoveredCounts {
                kept: r.ended.len(),
                rerun: r.unfinished.len(),
                failed_for_crashes: r.failed_for_crashes,
            });
        if let Some(recovered) = recovered {
            tasks.recover(recovered);
        }
        let (stop, stopping) = watch::channel(false);
        Ok(CoordinatorService {
            tasks,
            recovered: counts,
            membership: s.membership,
            stopping,
            stop: Arc::new(stop),
        })
    }

    /// What the journal held at start.
    pub fn recovered(&self) -> RecoveredCounts {
        self.recovered
    }

    /// `caller`'s tasks in the table by state: (queued, running, ended).
    fn counts(&self, caller: &Caller) -> (u32, u32, u32) {
        let (mut queued, mut running, mut ended) = (0, 0, 0);
        self.tasks.with_table(|t| {
            for (_, e) in t.iter().filter(|(key, _)| owned_id(caller, key).is_some()) {
                match e.status.state {
                    TaskState::Queued => queued += 1,
                    TaskState::Running => running += 1,
                    _ => ended += 1,
                }
            }
        });
        (queued, running, ended)
    }
}

/// The longest digest after a task id's `#`.
const MAX_DIGEST_CHARS: usize = 64;

/// Checks a submitted task id: a query id ([`umi_core::task::check_id`]), optionally
/// followed by `#` and a digest of at most 64 ASCII letters and digits.
pub fn check_task_id(id: &str) -> Result<(), Status> {
    let (query_id, digest) = match id.split_once('#') {
        Some((query_id, digest)) => (query_id, Some(digest)),
        None => (id, None),
    };
    umi_core::task::check_id(query_id)
        .map_err(|e| Status::invalid_argument(format!("task id {id:?}: {e}")))?;
    if let Some(digest) = digest {
        if digest.is_empty()
            || digest.len() > MAX_DIGEST_CHARS
            || !digest.chars().all(|c| c.is_ascii_alphanumeric())
        {
            return Err(Status::invalid_argument(format!(
                "task id {id:?}: after '#' comes a digest of at most {MAX_DIGEST_CHARS} letters and digits"
            )));
        }
    }
    Ok(())
}

/// Validates a submitted task at the edge: the error names the task and what is wrong.
/// Its id is a query id (`umi_core::task::check_id`: a file name, so no '/', which
/// separates a task's owner from its id in the table, and no control characters to forge
/// log lines), optionally followed by `#` and a digest of letters and digits, as
/// `umi run --coordinator` names its tasks; its tool list is measured before it is
/// parsed, so a small message cannot become a large tree of JSON values.
fn query_from_pb(task: &pb::Task) -> Result<Query, Status> {
    check_task_id(&task.id)?;
    if task.api_list_json.len() > MAX_API_LIST_BYTES {
        return Err(Status::invalid_argument(format!(
            "task {}: api_list_json is {} bytes; the limit is {MAX_API_LIST_BYTES} (a query's text and tools together are at most that)",
            task.id,
            task.api_list_json.len()
        )));
    }
    let list: Vec<Value> = serde_json::from_str(&task.api_list_json).map_err(|e| {
        Status::invalid_argument(format!(
            "task {}: api_list_json is not a JSON array: {e}",
            task.id
        ))
    })?;
    let apis = Query::apis(&task.id, &list).map_err(|e| status_from(&e))?;
    let query = Query {
        id: task.id.clone(),
        text: task.query.clone(),
        apis,
    };
    // A task whose prompts could never reach a worker is refused now, not after queueing.
    query.check_size().map_err(|e| status_from(&e))?;
    Ok(query)
}

/// The table key of `caller`'s task `id`.
fn task_key(caller: &Caller, id: &str) -> String {
    tasks::task_key(caller.name(), id)
}

/// The id `caller` knows the task under `key` by, if the task is theirs.
fn owned_id<'k>(caller: &Caller, key: &'k str) -> Option<&'k str> {
    tasks::owned_id(caller.name(), key)
}

/// The largest tool list (`api_list_json`) a task may bring, in bytes: a whole query is at
/// most this (`umi_core::task::MAX_QUERY_BYTES`, 1 MiB; real ToolBench tool lists are
/// under 10 KB).
pub const MAX_API_LIST_BYTES: usize = umi_core::task::MAX_QUERY_BYTES;

/// The largest message the coordinator takes or its clients accept, defined beside the
/// client (`umi_rpc::coordinator_client`).
pub use umi_rpc::coordinator_client::MAX_MESSAGE;

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::TaskEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Coordinator for CoordinatorService {
    async fn submit(
        &self,
        request: Request<pb::SubmitRequest>,
    ) -> Result<Response<pb::SubmitResponse>, Status> {
        let caller = Caller::of(&request);
        // An invalid task rejects the batch before any is queued.
        let queries = request
            .into_inner()
            .tasks
            .iter()
            .map(|task| {
                let mut query = query_from_pb(task)?;
                query.id = task_key(&caller, &query.id);
                Ok(query)
            })
            .collect::<Result<Vec<_>, Status>>()?;
        let queued = self.tasks.submit_all(queries).map_err(|e| match e {
            SubmitError::Conflict(m) => Status::already_exists(m),
            SubmitError::Journal(m) => Status::unavailable(m),
            SubmitError::Full { pending, limit } => Status::resource_exhausted(format!(
                "{pending} tasks are unfinished and the limit is {limit}; submit again when some have ended"
            )),
            SubmitError::CallerFull { pending, limit } => Status::resource_exhausted(format!(
                "{pending} of your tasks are unfinished and the limit per caller is {limit} (--max-pending-per-caller); submit again when some have ended"
            )),
        })?;
        Ok(Response::new(pb::SubmitResponse {
            queued: queued as u32,
        }))
    }

    type WatchStream = EventStream;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let caller = Caller::of(&request);
        let ids: HashSet<String> = request
            .into_inner()
            .task_ids
            .iter()
            .map(|id| task_key(&caller, id))
            .collect();
        // No ids: all of the caller's tasks.
        let all = ids.is_empty();
        // Subscribe before the snapshot so no event falls between the two.
        let mut events = self.tasks.subscribe();
        let snapshot = |ids: &HashSet<String>| -> Result<Vec<TaskStatus>, Status> {
            self.tasks.with_table(|t| {
                if all {
                    return Ok(t
                        .values()
                        .filter(|e| owned_id(&caller, &e.status.task_id).is_some())
                        .map(|e| e.status.clone())
                        .collect());
                }
                ids.iter()
                    .map(|key| {
                        t.get(key).map(|e| e.status.clone()).ok_or_else(|| {
                            let id = owned_id(&caller, key).unwrap_or(key);
                            Status::not_found(format!("no task {id:?}"))
                        })
                    })
                    .collect()
            })
        };
        let first = snapshot(&ids)?;
        let tasks = self.tasks.clone();
        let mut stopping = self.stopping.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        tokio::spawn(async move {
            let mut open: HashSet<String> = first
                .iter()
                .filter(|e| !e.state.is_terminal())
                .map(|e| e.task_id.clone())
                .collect();
            for e in first {
                if tx.send(Ok(event_to_pb(&e, &caller))).await.is_err() {
                    return;
                }
            }
            while all || !open.is_empty() {
                let received = tokio::select! {
                    r = events.recv() => r,
                    _ = stopping.wait_for(|s| *s) => return,
                };
                let batch = match received {
                    Ok(e) => vec![e],
                    // Fell behind: resend the current state of every watched task.
                    Err(RecvError::Lagged(_)) => tasks.with_table(|t| {
                        if all {
                            t.values()
                                .filter(|e| owned_id(&caller, &e.status.task_id).is_some())
                                .map(|e| e.status.clone())
                                .collect()
                        } else {
                            open.iter()
                                .filter_map(|id| t.get(id).map(|e| e.status.clone()))
                                .collect()
                        }
                    }),
                    Err(RecvError::Closed) => return,
                };
                for e in batch {
                    let watched = if all {
                        owned_id(&caller, &e.task_id).is_some()
                    } else {
                        ids.contains(&e.task_id)
                    };
                    if !watched {
                        continue;
                    }
                    if e.state.is_terminal() {
                        open.remove(&e.task_id);
                    }
                    if tx.send(Ok(event_to_pb(&e, &caller))).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn fetch(
        &self,
        request: Request<pb::FetchRequest>,
    ) -> Result<Response<pb::FetchResponse>, Status> {
        let caller = Caller::of(&request);
        let id = request.into_inner().task_id;
        self.tasks
            .with_table(|t| {
                t.get_mut(&task_key(&caller, &id)).map(|e| {
                    // Fetched answers are the first forgotten past `--max-ended`.
                    e.fetched |= e.status.state.is_terminal();
                    pb::FetchResponse {
                        task: Some(event_to_pb(&e.status, &caller)),
                        answer_json: e.answer.clone().unwrap_or_default(),
                    }
                })
            })
            .map(Response::new)
            .ok_or_else(|| Status::not_found(format!("no task {id:?}")))
    }

    async fn cancel(
        &self,
        request: Request<pb::CancelRequest>,
    ) -> Result<Response<pb::CancelResponse>, Status> {
        let caller = Caller::of(&request);
        let id = request.into_inner().task_id;
        Ok(Response::new(pb::CancelResponse {
            cancelled: self.tasks.cancel(&task_key(&caller, &id)),
        }))
    }

    /// Worker membership is the cluster's; the task counts are the caller's own.
    async fn status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let caller = Caller::of(&request);
        let roles = ["planner", "caller", "summarizer"]
            .into_iter()
            .map(|role| pb::RoleWorkers {
                role: role.to_string(),
                addresses: self
                    .membership
                    .workers(role)
                    .into_iter()
                    .map(|w| w.address)
                    .collect(),
            })
            .collect();
        let (queued, running, ended) = self.counts(&caller);
        Ok(Response::new(pb::StatusResponse {
            roles,
            queued,
            running,
            ended,
            method: self.tasks.method.clone(),
        }))
    }
}

/// Serves on `listener` until `shutdown`'s signal; then, in its phases, stops admitting
/// tasks, ends open Watch streams, stops accepting and lets open calls finish, and shuts
/// the task supervisor down. Callers are admitted as `security` says
/// (TLS, tokens; each token holder sees only its own tasks). `grpc.health.v1.Health`
/// reports SERVING meanwhile.
pub async fn serve(
    listener: tokio::net::TcpListener,
    service: CoordinatorService,
    security: &ServerSecurity,
    shutdown: Shutdown,
) -> Result<(), tonic::transport::Error> {
    let stop = service.stop.clone();
    let tasks = service.tasks.clone();
    // Query files with large tool lists make large submissions.
    let server = CoordinatorServer::new(service).max_decoding_message_size(MAX_MESSAGE);
    let name = <CoordinatorServer<CoordinatorService> as NamedService>::NAME;
    // Leaving: no new tasks admitted; stopping, once the calls in flight are done: the
    // task supervisor shuts down.
    let shutdown = shutdown
        .leave(async move {
            let _ = stop.send(true);
        })
        .stop(move || tasks.shut_down());
    umi_rpc::serve::serve(
        listener,
        name,
        tonic::service::Routes::new(security.guard(server)),
        security,
        shutdown,
    )
    .await
}

/// A task's status as the wire has it, under the id its owner `caller` gave it.
fn event_to_pb(s: &TaskStatus, caller: &Caller) -> pb::TaskEvent {
    let state = match s.state {
        TaskState::Queued => pb::TaskState::Queued,
        TaskState::Running => pb::TaskState::Running,
        TaskState::Answered => pb::TaskState::Answered,
        TaskState::GaveUp => pb::TaskState::GaveUp,
        TaskState::Exhausted => pb::TaskState::Exhausted,
        TaskState::Failed => pb::TaskState::Failed,
        TaskState::Cancelled => pb::TaskState::Cancelled,
    };
    pb::TaskEvent {
        task_id: owned_id(caller, &s.task_id)
            .unwrap_or(&s.task_id)
            .to_string(),
        state: state as i32,
        steps: s.steps,
        tokens: s.tokens,
        failure: s.failure.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_too_large_for_any_worker_is_refused_at_submission() {
        let task = |query: String| pb::Task {
            id: "t".into(),
            query,
            api_list_json: "[]".into(),
        };
        let refused =
            query_from_pb(&task("x".repeat(umi_core::task::MAX_QUERY_BYTES + 1))).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        assert!(refused.message().contains("limit"), "{}", refused.message());
        assert!(query_from_pb(&task("What is 6 x 7?".into())).is_ok());
        let mut slash = task("q".into());
        slash.id = "bob/1".into();
        assert_eq!(
            query_from_pb(&slash).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }

    #[test]
    fn task_ids_follow_the_query_id_rule_and_tool_lists_are_measured_before_parsing() {
        let task = |id: &str, api_list_json: String| pb::Task {
            id: id.into(),
            query: "q".into(),
            api_list_json,
        };
        for id in [
            "",
            "a\nforged log line",
            "a\u{1b}[31m",
            "../up",
            "bob/1",
            &"1".repeat(129),
            "1#",
            "1#a4ec\nforged",
            "a\n#a4ec",
            "1#a4ec#ff",
            &format!("1#{}", "f".repeat(65)),
        ] {
            let refused = query_from_pb(&task(id, "[]".into())).unwrap_err();
            assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{id:?}");
            assert!(
                refused.message().contains(&format!("{id:?}")),
                "{}",
                refused.message()
            );
            assert!(!refused.message().contains('\n'), "{}", refused.message());
        }
        assert!(query_from_pb(&task("G1_q-7.json", "[]".into())).is_ok());
        // As `umi run --coordinator` names its tasks: the query id, '#', a digest.
        assert!(query_from_pb(&task("1#a4ecf2316dc07e63", "[]".into())).is_ok());
        // Many small values: refused by its size, not after parsing them all.
        let many = format!("[{}0]", "0,".repeat(MAX_API_LIST_BYTES / 2));
        let refused = query_from_pb(&task("big", many)).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        let message = refused.message();
        assert!(
            message.contains("big") && message.contains(&MAX_API_LIST_BYTES.to_string()),
            "{message}"
        );
    }

    /// Test double for the roles: no call ever returns, so tasks stay running.
    struct Hangs;

    impl umi_core::agent::RoleModels for Hangs {
        fn generate<'a>(
            &'a self,
            _: umi_core::agent::RoleRequest,
        ) -> umi_core::agent::BoxFuture<'a, Result<umi_core::agent::Generated, umi_core::CoreError>>
        {
            Box::pin(std::future::pending())
        }
    }

    /// Test double for the tools: never called.
    struct NoTools;

    impl umi_core::env::ToolBackend for NoTools {
        fn call<'a>(
            &'a self,
            _: &'a umi_core::env::ApiCall,
        ) -> umi_core::agent::BoxFuture<
            'a,
            Result<umi_core::env::ApiReply, umi_core::env::BackendFailure>,
        > {
            Box::pin(async { unreachable!("no tool calls here") })
        }
    }

    fn as_caller<T>(message: T, caller: &str) -> Request<T> {
        let mut request = Request::new(message);
        request.extensions_mut().insert(Caller(caller.into()));
        request
    }

    #[tokio::test]
    async fn status_counts_only_the_callers_own_tasks() {
        let service = CoordinatorService::new(Settings {
            tasks: TaskSettings {
                roles: Arc::new(Hangs),
                backend: Arc::new(NoTools),
                search: umi_core::dfs::SearchConfig::default(),
                concurrency: 1,
                retention: std::time::Duration::from_secs(60),
                max_pending: 10,
                max_pending_per_caller: 10,
                max_ended: 10,
            },
            membership: Membership::fixed([]),
            journal: None,
        })
        .unwrap();
        let tasks = ["a", "b"].map(|id| pb::Task {
            id: id.into(),
            query: "q".into(),
            api_list_json: "[]".into(),
        });
        let submit = pb::SubmitRequest {
            tasks: tasks.to_vec(),
        };
        service.submit(as_caller(submit, "alice")).await.unwrap();
        let counts = |r: pb::StatusResponse| (r.queued + r.running, r.ended);
        let alice = service
            .status(as_caller(pb::StatusRequest {}, "alice"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(counts(alice), (2, 0));
        let bob = service
            .status(as_caller(pb::StatusRequest {}, "bob"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(counts(bob), (0, 0), "bob sees alice's tasks");
    }

    #[test]
    fn each_holder_has_its_own_task_ids() {
        let (alice, anonymous) = (Caller("alice".into()), Caller::default());
        assert_eq!(task_key(&alice, "1"), "alice/1");
        assert_eq!(owned_id(&alice, "alice/1"), Some("1"));
        assert_eq!(owned_id(&alice, "alicex/1"), None);
        assert_eq!(owned_id(&alice, "bob/1"), None);
        assert_eq!(task_key(&anonymous, "a/1"), "a/1");
        assert_eq!(owned_id(&anonymous, "a/1"), Some("a/1"));
    }
}
