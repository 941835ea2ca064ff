//! The task table: every submitted task, its state, and its answer once ended. Each
//! task runs under a supervisor, so it always ends in a terminal state with an answer
//! or a reason, even if its search task panics or is cancelled.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{broadcast, Semaphore};
use tokio::task::AbortHandle;
use tracing::Instrument;
use umi_core::agent::{BoxFuture, Generated, RoleKind, RoleModels, RoleRequest};
use umi_core::dfs::{Outcome, SearchConfig};
use umi_core::env::ToolBackend;
use umi_core::task::{solve, Query};

use crate::pb::{TaskEvent, TaskState};

pub struct Entry {
    pub event: TaskEvent,
    pub answer: Option<String>,
    abort: Option<AbortHandle>,
}

pub fn is_terminal(state: i32) -> bool {
    !matches!(
        TaskState::try_from(state),
        Ok(TaskState::Queued | TaskState::Running)
    )
}

pub struct Tasks {
    pub roles: Arc<dyn RoleModels>,
    pub backend: Arc<dyn ToolBackend>,
    pub config: SearchConfig,
    pub method: String,
    permits: Arc<Semaphore>,
    table: Mutex<HashMap<String, Entry>>,
    events: broadcast::Sender<TaskEvent>,
}

impl Tasks {
    pub fn new(
        roles: Arc<dyn RoleModels>,
        backend: Arc<dyn ToolBackend>,
        config: SearchConfig,
        method: String,
        concurrency: usize,
    ) -> Arc<Self> {
        Arc::new(Tasks {
            roles,
            backend,
            config,
            method,
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            table: Mutex::default(),
            events: broadcast::channel(4096).0,
        })
    }

    pub fn subscribe(&self) -> broadcast::Receiver<TaskEvent> {
        self.events.subscribe()
    }

    /// Reads the table; a poisoned lock (a panic elsewhere while holding it) still
    /// holds consistent entries, since every update is a single assignment.
    pub fn with_table<T>(&self, f: impl FnOnce(&mut HashMap<String, Entry>) -> T) -> T {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut table)
    }

    fn update(&self, event: TaskEvent, answer: Option<String>) {
        self.with_table(|t| {
            if let Some(entry) = t.get_mut(&event.task_id) {
                if is_terminal(entry.event.state) {
                    return;
                }
                entry.event = event.clone();
                if answer.is_some() {
                    entry.answer = answer;
                }
            }
        });
        let _ = self.events.send(event);
    }

    /// Queues `query` unless a task with its id exists; returns whether it was queued.
    pub fn submit(self: &Arc<Self>, query: Query) -> bool {
        let id = query.id.clone();
        let queued = self.with_table(|t| {
            if t.contains_key(&id) {
                return false;
            }
            t.insert(
                id.clone(),
                Entry {
                    event: event(&id, TaskState::Queued),
                    answer: None,
                    abort: None,
                },
            );
            true
        });
        if !queued {
            return false;
        }
        let _ = self.events.send(event(&id, TaskState::Queued));
        let run = tokio::spawn(self.clone().run(query));
        self.with_table(|t| {
            if let Some(e) = t.get_mut(&id) {
                e.abort = Some(run.abort_handle());
            }
        });
        let tasks = self.clone();
        tokio::spawn(async move {
            match run.await {
                Ok(()) => {}
                Err(e) if e.is_cancelled() => {}
                Err(e) => {
                    let mut failed = event(&id, TaskState::Failed);
                    failed.failure = format!("internal error in the task: {e}");
                    tasks.update(failed, None);
                }
            }
        });
        true
    }

    async fn run(self: Arc<Self>, query: Query) {
        let Ok(_permit) = self.permits.clone().acquire_owned().await else {
            return;
        };
        let id = query.id.clone();
        self.update(event(&id, TaskState::Running), None);
        let counted = CountedRoles {
            inner: self.roles.as_ref(),
            tasks: &self,
            task_id: &id,
            steps: AtomicU32::new(0),
            tokens: AtomicU64::new(0),
        };
        let span = tracing::info_span!("task", task_id = %id, steps = tracing::field::Empty, outcome = tracing::field::Empty);
        let solved = solve(
            &query,
            &counted,
            self.backend.as_ref(),
            self.config.clone(),
            &self.method,
        )
        .instrument(span.clone())
        .await;
        span.record("steps", solved.steps);
        span.record("outcome", tracing::field::debug(solved.outcome));
        let state = match (&solved.failure, solved.outcome) {
            (Some(_), _) => TaskState::Failed,
            (None, Outcome::Answered) => TaskState::Answered,
            (None, Outcome::GaveUp) => TaskState::GaveUp,
            (None, Outcome::Exhausted) => TaskState::Exhausted,
        };
        let done = TaskEvent {
            task_id: id,
            state: state as i32,
            steps: solved.steps as u32,
            tokens: solved.tokens as u64,
            failure: solved.failure.clone().unwrap_or_default(),
        };
        self.update(done, Some(solved.answer.to_string()));
    }

    /// Stops a task that has not ended; returns whether it did.
    pub fn cancel(&self, id: &str) -> bool {
        let abort = self.with_table(|t| match t.get_mut(id) {
            Some(e) if !is_terminal(e.event.state) => e.abort.take(),
            _ => None,
        });
        match abort {
            Some(handle) => {
                handle.abort();
                let mut cancelled = event(id, TaskState::Cancelled);
                cancelled.failure = "cancelled".into();
                self.update(cancelled, None);
                true
            }
            None => false,
        }
    }
}

fn event(id: &str, state: TaskState) -> TaskEvent {
    TaskEvent {
        task_id: id.to_string(),
        state: state as i32,
        ..TaskEvent::default()
    }
}

/// Passes role calls through, sending a RUNNING event with the step count after each
/// planner call, so watchers see progress inside a task.
struct CountedRoles<'a> {
    inner: &'a dyn RoleModels,
    tasks: &'a Tasks,
    task_id: &'a str,
    steps: AtomicU32,
    tokens: AtomicU64,
}

impl RoleModels for CountedRoles<'_> {
    fn generate<'a>(&'a self, request: RoleRequest) -> BoxFuture<'a, Result<Generated, String>> {
        Box::pin(async move {
            let role = request.role;
            let reply = self.inner.generate(request).await?;
            let tokens = self.tokens.fetch_add(
                (reply.prompt_tokens + reply.generated_tokens) as u64,
                Ordering::Relaxed,
            ) + (reply.prompt_tokens + reply.generated_tokens) as u64;
            if role == RoleKind::Planner {
                let steps = self.steps.fetch_add(1, Ordering::Relaxed) + 1;
                let mut progress = event(self.task_id, TaskState::Running);
                progress.steps = steps;
                progress.tokens = tokens;
                self.tasks.update(progress, None);
            }
            Ok(reply)
        })
    }
}
