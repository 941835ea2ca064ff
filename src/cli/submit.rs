//! `umi run --coordinator`: submit the queries to a coordinator, follow their events,
//! and fetch each answer as its task ends. A coordinator that goes away (killed and
//! restarted on its journal, a network cut) is reconnected to, and the open tasks
//! resubmitted (the ones it knows are not run again) and followed again.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use anyhow::Context;
use futures::stream::{FuturesUnordered, StreamExt};
use serde_json::Value;
use umi_coordinator::service::MAX_MESSAGE;
use umi_core::dfs::Outcome;
use umi_core::task::Query;
use umi_rpc::pb::coordinator_client::CoordinatorClient;
use umi_rpc::pb::{FetchRequest, StatusRequest, SubmitRequest, Task, TaskState, WatchRequest};
use umi_rpc::security::{AuthedChannel, ClientSecurity};

use super::run::Finished;

/// A coordinator and what this client presents to it (TLS settings, token).
pub struct CoordinatorAt {
    pub address: String,
    pub security: ClientSecurity,
}

async fn connect(c: &CoordinatorAt) -> anyhow::Result<CoordinatorClient<AuthedChannel>> {
    let channel = c
        .security
        .connect(&c.address)
        .await
        .with_context(|| format!("connecting to the coordinator at {}", c.address))?;
    Ok(CoordinatorClient::new(channel)
        // Answers with long trajectories exceed tonic's 4 MB default.
        .max_decoding_message_size(MAX_MESSAGE))
}

/// The coordinator's search method, which names the answer files. A coordinator not
/// reachable yet (starting, restarting on its journal) is waited for as during a run, up
/// to [`PATIENCE`]; one that answers but is no coordinator is an error at once.
pub async fn method(c: &CoordinatorAt) -> anyhow::Result<String> {
    let address = &c.address;
    let start = std::time::Instant::now();
    let mut said = false;
    loop {
        let asked = match connect(c).await {
            Ok(mut client) => client.status(StatusRequest {}).await.map_err(|s| match s.code() {
                tonic::Code::Unimplemented => Broken::Fatal(anyhow::anyhow!(
                    "{address} is not a coordinator (it does not serve umi.v1.Coordinator; a role worker?): give --coordinator the address `umi coordinator` listens on"
                )),
                tonic::Code::Unavailable => {
                    Broken::Lost(anyhow::anyhow!("asking the coordinator at {address}: {}", s.message()))
                }
                _ => Broken::Fatal(anyhow::anyhow!(
                    "asking the coordinator at {address}: {}",
                    s.message()
                )),
            }),
            // Not listening (yet): wait. A TLS or address mistake: say so at once.
            Err(e) if crate::cli::report::not_listening(&e) => Err(Broken::Lost(e)),
            Err(e) => Err(Broken::Fatal(e)),
        };
        match asked {
            Ok(status) => return Ok(status.into_inner().method),
            Err(Broken::Fatal(e)) => return Err(e),
            Err(Broken::Lost(e)) if start.elapsed() > PATIENCE => {
                return Err(e.context(format!(
                    "the coordinator at {address} was not reachable for {} s",
                    PATIENCE.as_secs()
                )))
            }
            Err(Broken::Lost(e)) => {
                if !said {
                    eprintln!(
                        "waiting for the coordinator at {address} ({}), up to {} s",
                        crate::cli::report::cause(&e),
                        PATIENCE.as_secs()
                    );
                    said = true;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// How long the coordinator may stay unreachable (killed and restarted, a network cut)
/// before the client gives up; meanwhile it reconnects and resubmits its open tasks.
const PATIENCE: Duration = Duration::from_secs(300);

pub async fn solve_all(
    c: &CoordinatorAt,
    todo: &[&Query],
    finish: &mut impl FnMut(&str, Finished) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
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
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut open: HashSet<String> = tasks.iter().map(|t| t.id.clone()).collect();
    let mut outage: Option<std::time::Instant> = None;
    loop {
        let pending: Vec<Task> = tasks
            .iter()
            .filter(|t| open.contains(&t.id))
            .cloned()
            .collect();
        let before = open.len();
        match follow(c, pending, &mut open, &query_of, finish).await {
            Ok(()) => return Ok(()),
            Err(Broken::Fatal(e)) => return Err(e),
            Err(Broken::Lost(e)) => {
                if open.len() < before {
                    outage = None;
                }
                let since = *outage.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() > PATIENCE {
                    return Err(e.context(format!(
                        "the coordinator at {} stayed unreachable for {} s with {} tasks open",
                        c.address,
                        PATIENCE.as_secs(),
                        open.len()
                    )));
                }
                eprintln!(
                    "lost the coordinator ({e:#}); reconnecting and resubmitting the {} open tasks",
                    open.len()
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Why following the tasks stopped: the coordinator went away (try again), or an error
/// trying again would not fix.
enum Broken {
    Lost(anyhow::Error),
    Fatal(anyhow::Error),
}

/// Submits `pending` (tasks the coordinator already knows are not run again), then
/// follows their events, fetching each answer as its task ends and removing it from
/// `open`.
async fn follow(
    c: &CoordinatorAt,
    pending: Vec<Task>,
    open: &mut HashSet<String>,
    query_of: &HashMap<String, String>,
    finish: &mut impl FnMut(&str, Finished) -> anyhow::Result<()>,
) -> Result<(), Broken> {
    let mut client = connect(c).await.map_err(Broken::Lost)?;
    let ids: Vec<String> = pending.iter().map(|t| t.id.clone()).collect();
    // In batches of about 1 MB: a whole query file can exceed any message limit.
    let mut batches: VecDeque<Vec<Task>> = VecDeque::new();
    let mut batch = Vec::new();
    let mut size = 0;
    let count = pending.len();
    for (i, task) in pending.into_iter().enumerate() {
        size += task.query.len() + task.api_list_json.len();
        batch.push(task);
        if size > (1 << 20) || i + 1 == count {
            size = 0;
            batches.push_back(std::mem::take(&mut batch));
        }
    }
    submit_all(&mut client, batches).await?;
    let mut events = client
        .watch(WatchRequest { task_ids: ids })
        .await
        .map_err(|s| broken(s, "watching the tasks"))?
        .into_inner();
    // Answers are fetched as their tasks end, several at once, while events keep
    // coming: one fetch at a time would hold a fast cluster back to the client's pace.
    let mut fetches = FuturesUnordered::new();
    let mut fetching: HashSet<String> = HashSet::new();
    let mut stream_open = true;
    while !open.is_empty() {
        tokio::select! {
            event = events.message(), if stream_open => {
                let event = event.map_err(|s| broken(s, "the coordinator's event stream broke"))?;
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
                    .map_err(|s| broken(s, &format!("fetching task {}", event.task_id)))?
                    .into_inner();
                let answer = if fetched.answer_json.is_empty() {
                    Value::Null
                } else {
                    serde_json::from_str(&fetched.answer_json)
                        .with_context(|| format!("the answer of task {} is not JSON", event.task_id))
                        .map_err(Broken::Fatal)?
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
                    Finished {
                        answer,
                        outcome,
                        failure,
                        steps: event.steps as usize,
                        tokens: event.tokens as usize,
                    },
                )
                .map_err(Broken::Fatal)?;
            }
            else => {
                return Err(Broken::Lost(anyhow::anyhow!(
                    "the coordinator ended the event stream with {} tasks open",
                    open.len()
                )));
            }
        }
    }
    Ok(())
}

/// A gRPC failure: the coordinator unreachable or gone (retried) or a refusal (not).
fn broken(status: tonic::Status, doing: &str) -> Broken {
    let e = anyhow::anyhow!("{doing}: {}", status.message());
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
            Err(s) => return Err(broken(s, "submitting the queries")),
        };
        if !told {
            eprintln!(
                "the coordinator is full ({}); submitting the rest as tasks finish",
                refused.message()
            );
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
