//! The client side of `umi.v1.Coordinator` for programs that hand their queries to a
//! coordinator (`umi run --coordinator`, the load benchmark): submit them, follow their
//! events, and fetch each answer as its task ends. A coordinator that goes away (killed
//! and restarted on its journal, a network cut) is reconnected to, and the open tasks
//! resubmitted (the ones it knows are not run again) and followed again, for up to the
//! client's patience ([`DEFAULT_PATIENCE`] unless told otherwise).
//!
//! What the client does meanwhile (waiting, reconnecting, a full coordinator) is told to
//! the caller as [`Notice`]s, for it to show as it likes.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use serde_json::Value;
use umi_core::dfs::Outcome;
use umi_core::task::Query;

use crate::pb::coordinator_client::CoordinatorClient;
use crate::pb::{FetchRequest, StatusRequest, SubmitRequest, Task, TaskState, WatchRequest};
use crate::security::{AuthedChannel, ClientSecurity, SecurityError};

/// The largest message a coordinator takes (a submission: this client sends batches of
/// about 1 MB, each task at most `MAX_QUERY_BYTES`) or its clients accept (an answer
/// with a long trajectory exceeds tonic's 4 MB default).
pub const MAX_MESSAGE: usize = 64 << 20;

/// How long the coordinator may stay unreachable (killed and restarted, a network cut)
/// before the client gives up, unless told otherwise (`CoordinatorAt::patience`);
/// meanwhile it reconnects and resubmits its open tasks.
pub const DEFAULT_PATIENCE: Duration = Duration::from_secs(300);

/// A submission is cut into batches of about this many bytes of queries and tools: a
/// whole query file can exceed any message limit.
const BATCH_BYTES: usize = 1 << 20;

/// An error that a caller's answer handler returned.
pub type FinishError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connecting to the coordinator at {address}")]
    Connect {
        address: String,
        #[source]
        source: SecurityError,
    },
    #[error("{address} is not a coordinator (it does not serve umi.v1.Coordinator; a role worker?): give --coordinator the address `umi coordinator` listens on")]
    NotACoordinator { address: String },
    /// A call the coordinator answered with an error status (`doing`: what was asked).
    #[error("{doing}: {message}")]
    Call {
        doing: String,
        code: tonic::Code,
        message: String,
    },
    #[error("the coordinator at {address} was not reachable for {waited_s} s")]
    NeverReachable {
        address: String,
        waited_s: u64,
        #[source]
        last: Box<ClientError>,
    },
    #[error(
        "the coordinator at {address} stayed unreachable for {waited_s} s with {open} tasks open"
    )]
    StayedUnreachable {
        address: String,
        waited_s: u64,
        open: usize,
        #[source]
        last: Box<ClientError>,
    },
    #[error("the coordinator ended the event stream with {open} tasks open")]
    StreamEnded { open: usize },
    #[error("the answer of task {task} is not JSON")]
    Answer {
        task: String,
        #[source]
        source: serde_json::Error,
    },
    /// A query's tools that do not serialise.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// The caller's answer handler failed: nothing more is fetched.
    #[error(transparent)]
    Finish(FinishError),
}

/// What the client is doing about a coordinator that does not answer (yet).
#[derive(Debug)]
pub enum Notice<'a> {
    /// Not reachable at the start: waited for, up to `patience` (told once).
    Waiting {
        address: &'a str,
        error: &'a ClientError,
        patience: Duration,
    },
    /// Lost while following tasks: reconnecting and resubmitting the `open` ones.
    Lost { error: &'a ClientError, open: usize },
    /// At its bound of pending tasks: the rest is submitted as tasks end (told once per
    /// connection).
    Full { message: &'a str },
}

/// How one task ended, as the coordinator tells it.
pub struct TaskEnd {
    /// The answer file's content (null: nothing to write).
    pub answer: Value,
    pub outcome: Outcome,
    /// Why it failed, if it did (a role or tool unreachable, or cancelled).
    pub failure: Option<String>,
    pub steps: usize,
    pub tokens: usize,
}

/// A coordinator and what this client presents to it (TLS settings, token).
pub struct CoordinatorAt {
    pub address: String,
    pub security: ClientSecurity,
    /// How long the coordinator may stay unreachable before the client gives up
    /// ([`DEFAULT_PATIENCE`] unless told otherwise).
    pub patience: Duration,
}

/// Why following the tasks stopped: the coordinator went away (try again), or an error
/// trying again would not fix.
enum Broken {
    Lost(ClientError),
    Fatal(ClientError),
}

impl CoordinatorAt {
    async fn connect(&self) -> Result<CoordinatorClient<AuthedChannel>, ClientError> {
        let channel = self
            .security
            .connect(&self.address)
            .await
            .map_err(|source| ClientError::Connect {
                address: self.address.clone(),
                source,
            })?;
        Ok(CoordinatorClient::new(channel).max_decoding_message_size(MAX_MESSAGE))
    }

    /// The coordinator's search method, which names the answer files. A coordinator not
    /// reachable yet (starting, restarting on its journal) is waited for as during a run,
    /// up to its patience; one that answers but is no coordinator is an error at once.
    pub async fn method(&self, notice: &mut impl FnMut(Notice<'_>)) -> Result<String, ClientError> {
        let address = &self.address;
        let start = Instant::now();
        let mut said = false;
        loop {
            let asked = match self.connect().await {
                Ok(mut client) => client.status(StatusRequest {}).await.map_err(|s| {
                    let e = call_error(&s, format!("asking the coordinator at {address}"));
                    match s.code() {
                        tonic::Code::Unimplemented => Broken::Fatal(ClientError::NotACoordinator {
                            address: address.clone(),
                        }),
                        tonic::Code::Unavailable => Broken::Lost(e),
                        _ => Broken::Fatal(e),
                    }
                }),
                // Not listening (yet): wait. A TLS or address mistake: say so at once.
                Err(e) if crate::connect_error::not_listening(&e) => Err(Broken::Lost(e)),
                Err(e) => Err(Broken::Fatal(e)),
            };
            match asked {
                Ok(status) => return Ok(status.into_inner().method),
                Err(Broken::Fatal(e)) => return Err(e),
                Err(Broken::Lost(e)) if start.elapsed() > self.patience => {
                    return Err(ClientError::NeverReachable {
                        address: address.clone(),
                        waited_s: self.patience.as_secs(),
                        last: Box::new(e),
                    })
                }
                Err(Broken::Lost(e)) => {
                    if !said {
                        notice(Notice::Waiting {
                            address,
                            error: &e,
                            patience: self.patience,
                        });
                        said = true;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    /// Solves `todo` on the coordinator: `finish` gets each query's id and how its task
    /// ended, as tasks end (in no particular order). Returns once every query has ended,
    /// or on an error reconnecting would not fix, or after its patience without progress
    /// while the coordinator is unreachable.
    pub async fn solve_all(
        &self,
        todo: &[&Query],
        notice: &mut impl FnMut(Notice<'_>),
        finish: &mut impl FnMut(&str, TaskEnd) -> Result<(), FinishError>,
    ) -> Result<(), ClientError> {
        if todo.is_empty() {
            return Ok(());
        }
        // A coordinator serves many clients, whose query files reuse ids (1, 2, 3...): the
        // task id adds a digest of the query, so equal queries share a task and different
        // ones never collide.
        let mut query_of: HashMap<String, String> = HashMap::new();
        let tasks = todo
            .iter()
            .map(|q| {
                let api_list_json = serde_json::to_string(&q.apis)?;
                let id = format!("{}#{:016x}", q.id, digest(&q.text, &api_list_json));
                query_of.insert(id.clone(), q.id.clone());
                Ok(Task {
                    id,
                    query: q.text.clone(),
                    api_list_json,
                })
            })
            .collect::<Result<Vec<_>, ClientError>>()?;
        let mut open: HashSet<String> = tasks.iter().map(|t| t.id.clone()).collect();
        let mut outage: Option<Instant> = None;
        loop {
            let pending: Vec<Task> = tasks
                .iter()
                .filter(|t| open.contains(&t.id))
                .cloned()
                .collect();
            let before = open.len();
            match self
                .follow(pending, &mut open, &query_of, notice, finish)
                .await
            {
                Ok(()) => return Ok(()),
                Err(Broken::Fatal(e)) => return Err(e),
                Err(Broken::Lost(e)) => {
                    if open.len() < before {
                        outage = None;
                    }
                    let since = *outage.get_or_insert_with(Instant::now);
                    if since.elapsed() > self.patience {
                        return Err(ClientError::StayedUnreachable {
                            address: self.address.clone(),
                            waited_s: self.patience.as_secs(),
                            open: open.len(),
                            last: Box::new(e),
                        });
                    }
                    notice(Notice::Lost {
                        error: &e,
                        open: open.len(),
                    });
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// Submits `pending` (tasks the coordinator already knows are not run again), then
    /// follows their events, fetching each answer as its task ends and removing it from
    /// `open`.
    async fn follow(
        &self,
        pending: Vec<Task>,
        open: &mut HashSet<String>,
        query_of: &HashMap<String, String>,
        notice: &mut impl FnMut(Notice<'_>),
        finish: &mut impl FnMut(&str, TaskEnd) -> Result<(), FinishError>,
    ) -> Result<(), Broken> {
        let mut client = self.connect().await.map_err(Broken::Lost)?;
        let ids: Vec<String> = pending.iter().map(|t| t.id.clone()).collect();
        submit_all(&mut client, batches(pending), notice).await?;
        let mut events = client
            .watch(WatchRequest { task_ids: ids })
            .await
            .map_err(|s| broken(&s, "watching the tasks"))?
            .into_inner();
        // Answers are fetched as their tasks end, several at once, while events keep
        // coming: one fetch at a time would hold a fast cluster back to the client's pace.
        let mut fetches = FuturesUnordered::new();
        let mut fetching: HashSet<String> = HashSet::new();
        let mut stream_open = true;
        while !open.is_empty() {
            tokio::select! {
                event = events.message(), if stream_open => {
                    let event = event.map_err(|s| broken(&s, "the coordinator's event stream broke"))?;
                    let Some(event) = event else {
                        stream_open = false;
                        continue;
                    };
                    // A state this client does not know (a newer server) counts as failed, so
                    // the query is tried again on the next run.
                    let state = TaskState::try_from(event.state).unwrap_or(TaskState::Failed);
                    if matches!(state, TaskState::Queued | TaskState::Running)
                        || !open.contains(&event.task_id)
                        || !fetching.insert(event.task_id.clone())
                    {
                        continue;
                    }
                    let mut client = client.clone();
                    fetches.push(async move {
                        let fetched = client
                            .fetch(FetchRequest {
                                task_id: event.task_id.clone(),
                            })
                            .await;
                        (event, state, fetched)
                    });
                }
                Some((event, state, fetched)) = fetches.next() => {
                    let fetched = fetched
                        .map_err(|s| broken(&s, &format!("fetching task {}", event.task_id)))?
                        .into_inner();
                    let answer = if fetched.answer_json.is_empty() {
                        Value::Null
                    } else {
                        serde_json::from_str(&fetched.answer_json).map_err(|source| {
                            Broken::Fatal(ClientError::Answer {
                                task: event.task_id.clone(),
                                source,
                            })
                        })?
                    };
                    let failure = match state {
                        TaskState::Failed | TaskState::Cancelled => Some(if event.failure.is_empty() {
                            format!("{state:?}")
                        } else {
                            event.failure.clone()
                        }),
                        _ => None,
                    };
                    let outcome = match state {
                        TaskState::Answered => Outcome::Answered,
                        TaskState::GaveUp => Outcome::GaveUp,
                        _ => Outcome::Exhausted,
                    };
                    open.remove(&event.task_id);
                    finish(
                        &query_of[&event.task_id],
                        TaskEnd {
                            answer,
                            outcome,
                            failure,
                            steps: event.steps as usize,
                            tokens: event.tokens as usize,
                        },
                    )
                    .map_err(|e| Broken::Fatal(ClientError::Finish(e)))?;
                }
                else => {
                    return Err(Broken::Lost(ClientError::StreamEnded { open: open.len() }));
                }
            }
        }
        Ok(())
    }
}

/// The tasks in batches of about [`BATCH_BYTES`], in order.
fn batches(pending: Vec<Task>) -> VecDeque<Vec<Task>> {
    let mut batches: VecDeque<Vec<Task>> = VecDeque::new();
    let mut batch = Vec::new();
    let mut size = 0;
    let count = pending.len();
    for (i, task) in pending.into_iter().enumerate() {
        size += task.query.len() + task.api_list_json.len();
        batch.push(task);
        if size > BATCH_BYTES || i + 1 == count {
            size = 0;
            batches.push_back(std::mem::take(&mut batch));
        }
    }
    batches
}

fn call_error(status: &tonic::Status, doing: impl Into<String>) -> ClientError {
    ClientError::Call {
        doing: doing.into(),
        code: status.code(),
        message: status.message().to_string(),
    }
}

/// A gRPC failure: the coordinator unreachable or gone (retried) or a refusal (not).
fn broken(status: &tonic::Status, doing: &str) -> Broken {
    let e = call_error(status, doing);
    match status.code() {
        tonic::Code::Unavailable
        | tonic::Code::Unknown
        | tonic::Code::Cancelled
        | tonic::Code::Aborted
        | tonic::Code::DeadlineExceeded
        | tonic::Code::Internal => Broken::Lost(e),
        _ => Broken::Fatal(e),
    }
}

/// Submits every batch. A coordinator at its bound of pending tasks refuses a batch
/// (RESOURCE_EXHAUSTED): the batch is split, down to single tasks, and a refused single
/// task is offered again after a pause (doubling up to 5 s) while earlier tasks finish.
async fn submit_all(
    client: &mut CoordinatorClient<AuthedChannel>,
    mut batches: VecDeque<Vec<Task>>,
    notice: &mut impl FnMut(Notice<'_>),
) -> Result<(), Broken> {
    let mut pause = Duration::from_millis(100);
    let mut told = false;
    while let Some(batch) = batches.pop_front() {
        let refused = match client
            .submit(SubmitRequest {
                tasks: batch.clone(),
            })
            .await
        {
            Ok(_) => {
                pause = Duration::from_millis(100);
                continue;
            }
            Err(s) if s.code() == tonic::Code::ResourceExhausted => s,
            Err(s) => return Err(broken(&s, "submitting the queries")),
        };
        if !told {
            notice(Notice::Full {
                message: refused.message(),
            });
            told = true;
        }
        if batch.len() > 1 {
            let mut first = batch;
            let second = first.split_off(first.len() / 2);
            batches.push_front(second);
            batches.push_front(first);
        } else {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(5));
            batches.push_front(batch);
        }
    }
    Ok(())
}

/// A digest of the query text and its tools (FNV-1a: stable across builds).
fn digest(text: &str, api_list_json: &str) -> u64 {
    umi_core::task::fnv1a(text.bytes().chain([0]).chain(api_list_json.bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str, bytes: usize) -> Task {
        Task {
            id: id.into(),
            query: "q".repeat(bytes),
            api_list_json: String::new(),
        }
    }

    #[test]
    fn submissions_are_cut_after_about_a_megabyte_in_order() {
        let cut = batches(vec![
            task("a", 600_000),
            task("b", 600_000),
            task("c", 10),
            task("d", 10),
        ]);
        let ids: Vec<Vec<&str>> = cut
            .iter()
            .map(|b| b.iter().map(|t| t.id.as_str()).collect())
            .collect();
        assert_eq!(ids, [vec!["a", "b"], vec!["c", "d"]]);
    }

    #[test]
    fn only_a_gone_coordinator_is_retried() {
        let lost = |code| {
            matches!(
                broken(&tonic::Status::new(code, "x"), "doing"),
                Broken::Lost(_)
            )
        };
        assert!(lost(tonic::Code::Unavailable));
        assert!(lost(tonic::Code::Internal));
        assert!(!lost(tonic::Code::PermissionDenied));
        assert!(!lost(tonic::Code::InvalidArgument));
        let Broken::Fatal(e) = broken(
            &tonic::Status::new(tonic::Code::PermissionDenied, "not yours"),
            "fetching task 1",
        ) else {
            unreachable!()
        };
        assert_eq!(e.to_string(), "fetching task 1: not yours");
    }
}
