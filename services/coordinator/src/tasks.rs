//! The task table: every submitted task, its state, and its answer once ended. Each
//! task runs under a supervisor, so it always ends in a terminal state with an answer
//! or a reason, even if its search task panics or is cancelled.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, Semaphore};
use tokio::task::AbortHandle;
use umi_core::agent::{BoxFuture, Generated, RoleKind, RoleModels, RoleRequest};
use umi_core::dfs::SearchConfig;
use umi_core::env::ToolBackend;
use umi_core::task::{method_name, solve, Query};
use umi_core::CoreError;

use crate::journal::{Recovered, TaskJournal};
use crate::state::{TaskState, TaskStatus};

/// A task's key in the table: its id within its owner's namespace (`owner/id`), so each
/// token holder sees only its own tasks and may reuse ids other holders use; without an
/// owner (a server without tokens, loopback only) the key is the id. Ids hold no '/'
/// (refused at submission), owner names none either.
pub fn task_key(owner: &str, id: &str) -> String {
    if owner.is_empty() {
        id.to_string()
    } else {
        format!("{owner}/{id}")
    }
}

/// The id `owner` gave the task under `key`, if the task is theirs.
pub fn owned_id<'k>(owner: &str, key: &'k str) -> Option<&'k str> {
    if owner.is_empty() {
        return Some(key);
    }
    key.strip_prefix(owner)?.strip_prefix('/')
}

/// Who owns the task under `key` (empty: no owner, a server without tokens).
fn owner_of(key: &str) -> &str {
    key.split_once('/').map_or("", |(owner, _)| owner)
}

/// The id the task under `key` was given, whoever owns it.
fn given_id(key: &str) -> &str {
    key.split_once('/').map_or(key, |(_, id)| id)
}

/// What makes a task the task it is: its query text and its tools, so a resubmission
/// with the same text but other tools is a different task, not the same one again.
fn identity(query: &Query) -> String {
    let apis = serde_json::to_string(&query.apis).unwrap_or_default();
    format!("{}\u{0}{apis}", query.text)
}

pub struct Entry {
    pub status: TaskStatus,
    /// The whole query (text and tools, [`identity`]), to tell a resubmission from a
    /// different task under the same id.
    query: String,
    pub answer: Option<String>,
    /// Its answer was fetched since it ended: such tasks are forgotten first when the
    /// table holds too many ended tasks.
    pub fetched: bool,
    abort: Option<AbortHandle>,
    ended_at: Option<Instant>,
    /// Which run of the task this entry is (a resubmitted task runs again): updates
    /// from an earlier run are ignored.
    run: u64,
}

/// How tasks are run: the roles and tools they use, how they are searched, how many run
/// at once, and how long an ended task's answer is kept.
pub struct TaskSettings {
    pub roles: Arc<dyn RoleModels>,
    pub backend: Arc<dyn ToolBackend>,
    pub search: SearchConfig,
    /// Tasks solved at once; the rest wait in the queue.
    pub concurrency: usize,
    /// Ended tasks are forgotten this long after they end (their answers must be
    /// fetched by then), so a long-running coordinator does not grow without bound.
    pub retention: Duration,
    /// Unfinished (queued or running) tasks at most; a submission past it is refused
    /// whole (`SubmitError::Full`), so clients wait instead of queueing without bound.
    pub max_pending: usize,
    /// Unfinished tasks one caller (one token holder) may have at most, so no holder
    /// takes all of `max_pending`; refused as `SubmitError::CallerFull`.
    pub max_pending_per_caller: usize,
    /// Ended tasks kept at most (retention aside): past it the oldest are forgotten,
    /// those whose answers were fetched first, so the table's memory is bounded.
    pub max_ended: usize,
}

pub struct Tasks {
    roles: Arc<dyn RoleModels>,
    backend: Arc<dyn ToolBackend>,
    search: SearchConfig,
    /// How ToolBench names the search (answer files are named after it).
    pub method: String,
    permits: Arc<Semaphore>,
    max_pending: usize,
    max_pending_per_caller: usize,
    max_ended: usize,
    table: Mutex<HashMap<String, Entry>>,
    /// Ended tasks in the table; changed only under the table's lock.
    ended: AtomicUsize,
    events: broadcast::Sender<TaskStatus>,
    /// Where queued and ended tasks are recorded, when the coordinator has one.
    journal: Option<Arc<TaskJournal>>,
}

/// Why a submission queued nothing.
#[derive(Debug, PartialEq)]
pub enum SubmitError {
    /// The id is taken by another query.
    Conflict(String),
    /// The tasks could not be recorded in the journal, so they were not queued.
    Journal(String),
    /// Queueing them would pass the bound of unfinished tasks; nothing was queued.
    Full { pending: usize, limit: usize },
    /// Queueing them would pass the caller's own bound of unfinished tasks
    /// (`TaskSettings::max_pending_per_caller`); nothing was queued.
    CallerFull { pending: usize, limit: usize },
}

impl Tasks {
    /// Starts the table's janitor, which forgets ended tasks after the retention: call
    /// inside the tokio runtime.
    pub fn new(settings: TaskSettings, journal: Option<TaskJournal>) -> Arc<Self> {
        let retention = settings.retention;
        let tasks = Arc::new(Tasks {
            roles: settings.roles,
            backend: settings.backend,
            method: method_name(settings.search.tree_beam_size),
            search: settings.search,
            permits: Arc::new(Semaphore::new(settings.concurrency.max(1))),
            max_pending: settings.max_pending.max(1),
            max_pending_per_caller: settings.max_pending_per_caller.max(1),
            max_ended: settings.max_ended,
            table: Mutex::default(),
            ended: AtomicUsize::new(0),
            events: broadcast::channel(4096).0,
            journal: journal.map(Arc::new),
        });
        let weak = Arc::downgrade(&tasks);
        tokio::spawn(async move {
            let period = (retention / 4).clamp(Duration::from_millis(10), Duration::from_secs(60));
            loop {
                tokio::time::sleep(period).await;
                let Some(tasks) = weak.upgrade() else { return };
                tasks.with_table(|t| {
                    let before = t.len();
                    t.retain(|_, e| e.ended_at.is_none_or(|at| at.elapsed() < retention));
                    tasks.ended.fetch_sub(before - t.len(), Ordering::Relaxed);
                });
            }
        });
        tasks
    }

    pub fn subscribe(&self) -> broadcast::Receiver<TaskStatus> {
        self.events.subscribe()
    }

    /// Reads the table; a poisoned lock (a panic elsewhere while holding it) still
    /// holds consistent entries, since every update is a single assignment.
    pub fn with_table<T>(&self, f: impl FnOnce(&mut HashMap<String, Entry>) -> T) -> T {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut table)
    }

    /// Applies an event to a task that has not ended, and broadcasts it: under the
    /// table's lock, so watchers see events in table order; a task's end only once its
    /// journal record is on disk, so no client learns of an end a restart would undo (and
    /// run the task again). Nothing follows an end: a task that ended takes no event.
    /// Returns whether the event applied (the task's run had not ended).
    fn update(&self, run: u64, event: TaskStatus, answer: Option<String>) -> bool {
        let task_id = event.task_id.clone();
        let applied = self.with_table(|t| {
            let entry = t.get_mut(&event.task_id)?;
            if entry.run != run || entry.status.state.is_terminal() {
                return None;
            }
            let mut journaled = None;
            crate::state::count_transition(entry.status.state, event.state);
            if event.state == TaskState::Running {
                if let Some(Err(e)) = self.journal.as_ref().map(|j| j.started(&task_id)) {
                    // Only the crash count of a poison task depends on it.
                    tracing::error!(task_id = %task_id, "{e}");
                }
            }
            if event.state.is_terminal() {
                entry.ended_at = Some(Instant::now());
                entry.abort = None;
                journaled = self
                    .journal
                    .as_ref()
                    .map(|journal| journal.ended(&event, answer.clone()));
            } else {
                let _ = self.events.send(event.clone());
            }
            entry.status = event.clone();
            if answer.is_some() {
                entry.answer = answer;
            }
            if event.state.is_terminal() {
                self.ended.fetch_add(1, Ordering::Relaxed);
                self.evict_ended(t);
            }
            Some(journaled)
        });
        let Some(journaled) = applied else {
            return false;
        };
        if event.state.is_terminal() {
            // Synced outside the table's lock: an fsync per ended task must not stall
            // every other task's progress, Watch, Fetch and Submit.
            if let (Some(written), Some(journal)) = (journaled, &self.journal) {
                if let Err(e) = written.and_then(|()| journal.sync()) {
                    tracing::error!(task_id = %task_id, "{e}");
                }
            }
            tracing::info!(task_id = %task_id, state = %event.state.as_str(), steps = event.steps, "task ended");
            let _ = self.events.send(event);
            self.compact_if_due();
        }
        true
    }

    /// Forgets ended tasks while more than `max_ended` are kept: those whose answers
    /// were fetched first, oldest first; down to 1/16 under the bound at once, so the
    /// scan is paid once per that many ended tasks, not at each. The journal records
    /// it, so a restart does not bring them back.
    fn evict_ended(&self, t: &mut HashMap<String, Entry>) {
        let ended = self.ended.load(Ordering::Relaxed);
        if ended <= self.max_ended {
            return;
        }
        let keep = self.max_ended - self.max_ended / 16;
        let mut candidates: Vec<(bool, Instant, &String)> = t
            .iter()
            .filter_map(|(key, e)| Some((!e.fetched, e.ended_at?, key)))
            .collect();
        candidates.sort_unstable();
        let evicted: Vec<String> = candidates
            .into_iter()
            .take(ended.saturating_sub(keep))
            .map(|(_, _, key)| key.clone())
            .collect();
        for key in &evicted {
            t.remove(key);
        }
        self.ended.fetch_sub(evicted.len(), Ordering::Relaxed);
        tracing::debug!(
            evicted = evicted.len(),
            "ended tasks forgotten past --max-ended"
        );
        if let Some(Err(e)) = self.journal.as_ref().map(|j| j.forgotten(&evicted)) {
            tracing::error!("{e}");
        }
    }

    /// Compacts the journal off the runtime when it has grown past its bound.
    fn compact_if_due(&self) {
        let Some(journal) = self.journal.as_ref().filter(|j| j.compaction_due()) else {
            return;
        };
        let journal = journal.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = journal.compact() {
                tracing::error!("compacting: {e}");
            }
        });
    }

    /// A clean shutdown: no queued task starts from now on, and the journal records that
    /// the tasks still running were stopped, so they count no crash at the next start.
    pub fn shut_down(&self) {
        self.permits.close();
        if let Some(Err(e)) = self.journal.as_ref().map(|j| j.stopped()) {
            tracing::error!("{e}");
        }
    }

    /// Queues `query` unless a task with its id is queued, running or ended with a
    /// result; returns whether it was queued.
    #[cfg(test)]
    pub fn submit(self: &Arc<Self>, query: Query) -> Result<bool, SubmitError> {
        self.submit_all(vec![query]).map(|queued| queued == 1)
    }

    /// Queues each query unless a task with its id is queued, running or ended with a
    /// result (a task that failed or was cancelled runs again), recording the queued
    /// ones in the journal first, in one write; returns how many were queued. The same
    /// id with another query text refuses the whole batch.
    pub fn submit_all(self: &Arc<Self>, queries: Vec<Query>) -> Result<usize, SubmitError> {
        let owner = queries.first().map_or("", |q| owner_of(&q.id)).to_string();
        let submitted = self.with_table(|t| {
            let mut to_queue: Vec<(Query, u64)> = Vec::new();
            let mut in_batch: HashMap<String, usize> = HashMap::new();
            for query in queries {
                let id = &query.id;
                let generation = match t.get(id) {
                    Some(e) if e.query != identity(&query) => {
                        return Err(SubmitError::Conflict(format!(
                            "task {id:?} already exists with another query"
                        )))
                    }
                    Some(e) if !e.status.state.is_retryable() => continue,
                    Some(e) => e.run + 1,
                    None => 0,
                };
                match in_batch.get(id) {
                    Some(&i) if identity(&to_queue[i].0) != identity(&query) => {
                        return Err(SubmitError::Conflict(format!(
                            "task {id:?} is submitted twice with different queries"
                        )))
                    }
                    Some(_) => {}
                    None => {
                        in_batch.insert(id.clone(), to_queue.len());
                        to_queue.push((query, generation));
                    }
                }
            }
            let (mut pending, mut callers) = (0, 0);
            for (key, e) in t.iter() {
                if !e.status.state.is_terminal() {
                    pending += 1;
                    callers += usize::from(owner_of(key) == owner);
                }
            }
            if !to_queue.is_empty() && pending + to_queue.len() > self.max_pending {
                return Err(SubmitError::Full {
                    pending,
                    limit: self.max_pending,
                });
            }
            if !to_queue.is_empty() && callers + to_queue.len() > self.max_pending_per_caller {
                return Err(SubmitError::CallerFull {
                    pending: callers,
                    limit: self.max_pending_per_caller,
                });
            }
            if let Some(journal) = &self.journal {
                let queries: Vec<&Query> = to_queue.iter().map(|(q, _)| q).collect();
                journal
                    .queued(&queries)
                    .map_err(|e| SubmitError::Journal(e.to_string()))?;
            }
            let queued = to_queue.len();
            for (query, generation) in to_queue {
                self.queue(t, query, generation);
            }
            Ok(queued)
        });
        self.compact_if_due();
        submitted
    }

    /// Takes back what a journal held: ended tasks are served again (and forgotten
    /// `retention` after they first ended); unfinished ones run again from the start.
    pub fn recover(self: &Arc<Self>, recovered: Recovered) {
        self.with_table(|t| {
            for task in recovered.ended {
                let ended_at = Instant::now()
                    .checked_sub(task.age)
                    .unwrap_or_else(Instant::now);
                t.insert(
                    task.query.id.clone(),
                    Entry {
                        status: task.status,
                        query: identity(&task.query),
                        answer: task.answer,
                        fetched: false,
                        abort: None,
                        ended_at: Some(ended_at),
                        run: 0,
                    },
                );
                self.ended.fetch_add(1, Ordering::Relaxed);
            }
            for query in recovered.unfinished {
                self.queue(t, query, 0);
            }
            self.evict_ended(t);
        });
    }

    /// Starts a task's run under its supervisor and enters it in the table as QUEUED.
    fn queue(self: &Arc<Self>, t: &mut HashMap<String, Entry>, query: Query, generation: u64) {
        let id = query.id.clone();
        // Spawned under the lock, so `cancel` always finds the abort handle; the task's
        // own updates wait for the lock and so come after QUEUED.
        let run = tokio::spawn(crate::journal::Stepping::new(
            &id,
            self.clone().run(query.clone(), generation),
        ));
        let replaced = t.insert(
            id.clone(),
            Entry {
                status: TaskStatus::new(&id, TaskState::Queued),
                query: identity(&query),
                answer: None,
                fetched: false,
                abort: Some(run.abort_handle()),
                ended_at: None,
                run: generation,
            },
        );
        if replaced.is_some_and(|e| e.status.state.is_terminal()) {
            self.ended.fetch_sub(1, Ordering::Relaxed);
        }
        let _ = self.events.send(TaskStatus::new(&id, TaskState::Queued));
        crate::state::count_queued();
        let tasks = self.clone();
        tokio::spawn(async move {
            match run.await {
                Ok(()) => {}
                Err(e) if e.is_cancelled() => {}
                Err(e) => {
                    let mut failed = TaskStatus::new(&id, TaskState::Failed);
                    failed.failure = format!("internal error in the task: {e}");
                    let _ = tasks.update(generation, failed, None);
                }
            }
        });
    }

    async fn run(self: Arc<Self>, query: Query, generation: u64) {
        let Ok(_permit) = self.permits.clone().acquire_owned().await else {
            return;
        };
        let id = query.id.clone();
        let _ = self.update(generation, TaskStatus::new(&id, TaskState::Running), None);
        let counted = CountedRoles {
            generation,
            inner: self.roles.as_ref(),
            tasks: &self,
            task_id: &id,
            steps: AtomicU32::new(0),
            tokens: AtomicU64::new(0),
        };
        // Workers, traces and seeds see the id its owner gave, not the table key.
        let as_given = Query {
            id: given_id(&id).to_string(),
            ..query
        };
        let solved = solve(
            &as_given,
            &counted,
            self.backend.as_ref(),
            self.search.clone(),
        )
        .await;
        let done = TaskStatus::ended(&id, &solved);
        let _ = self.update(generation, done, Some(solved.answer.to_string()));
    }

    /// Stops a task that has not ended; returns whether it did.
    pub fn cancel(&self, id: &str) -> bool {
        let abort = self.with_table(|t| match t.get(id) {
            Some(e) if !e.status.state.is_terminal() => e.abort.clone().map(|a| (a, e.run)),
            _ => None,
        });
        let Some((handle, generation)) = abort else {
            return false;
        };
        // Ended first, so nothing the task still sends before it stops gets through.
        let mut cancelled = TaskStatus::new(id, TaskState::Cancelled);
        cancelled.failure = "cancelled".into();
        // The task may have ended since the check above: then it stays as it ended.
        let ended_here = self.update(generation, cancelled, None);
        handle.abort();
        ended_here
    }
}

/// Passes role calls through, sending a RUNNING event with the step count after each
/// planner call, so watchers see progress inside a task.
struct CountedRoles<'a> {
    generation: u64,
    inner: &'a dyn RoleModels,
    tasks: &'a Tasks,
    task_id: &'a str,
    steps: AtomicU32,
    tokens: AtomicU64,
}

impl RoleModels for CountedRoles<'_> {
    fn generate<'a>(&'a self, request: RoleRequest) -> BoxFuture<'a, Result<Generated, CoreError>> {
        Box::pin(async move {
            let role = request.role;
            let reply = self.inner.generate(request).await?;
            let tokens = self.tokens.fetch_add(
                (reply.prompt_tokens + reply.generated_tokens) as u64,
                Ordering::Relaxed,
            ) + (reply.prompt_tokens + reply.generated_tokens) as u64;
            if role == RoleKind::Planner {
                let steps = self.steps.fetch_add(1, Ordering::Relaxed) + 1;
                let mut progress = TaskStatus::new(self.task_id, TaskState::Running);
                progress.steps = steps;
                progress.tokens = tokens;
                let _ = self.tasks.update(self.generation, progress, None);
            }
            Ok(reply)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use umi_core::env::{ApiCall, ApiReply, BackendFailure};

    use super::*;
    use crate::journal::TaskJournal;

    /// Test double for the roles: the planner concludes at once, the summarizer answers.
    struct Concludes;
    /// Test double for the roles: no call ever returns (a stuck worker).
    struct Hangs;
    /// Test double for the roles: the planner call panics.
    struct Panics;

    impl RoleModels for Concludes {
        fn generate<'a>(&'a self, r: RoleRequest) -> BoxFuture<'a, Result<Generated, CoreError>> {
            let text = match r.role {
                RoleKind::Planner => "I know. Next: conclusion.",
                _ => "42 is the answer.",
            };
            Box::pin(async move {
                Ok(Generated {
                    text: text.into(),
                    ..Generated::default()
                })
            })
        }
    }

    impl RoleModels for Hangs {
        fn generate<'a>(&'a self, _: RoleRequest) -> BoxFuture<'a, Result<Generated, CoreError>> {
            Box::pin(std::future::pending())
        }
    }

    impl RoleModels for Panics {
        fn generate<'a>(&'a self, _: RoleRequest) -> BoxFuture<'a, Result<Generated, CoreError>> {
            Box::pin(async { panic!("a bug in a role client") })
        }
    }

    /// Test double for the tools: never called by these scripts.
    struct NoTools;

    impl ToolBackend for NoTools {
        fn call<'a>(&'a self, _: &'a ApiCall) -> BoxFuture<'a, Result<ApiReply, BackendFailure>> {
            Box::pin(async { unreachable!("no tool calls in these tests") })
        }
    }

    fn settings(roles: Arc<dyn RoleModels>, concurrency: usize) -> TaskSettings {
        TaskSettings {
            roles,
            backend: Arc::new(NoTools),
            search: SearchConfig::default(),
            concurrency,
            retention: Duration::from_secs(3600),
            max_pending: 1000,
            max_pending_per_caller: 1000,
            max_ended: 10_000,
        }
    }

    fn tasks(roles: impl RoleModels + 'static, concurrency: usize) -> Arc<Tasks> {
        Tasks::new(settings(Arc::new(roles), concurrency), None)
    }

    fn query(id: &str) -> Query {
        Query {
            id: id.into(),
            text: "What is 6 x 7?".into(),
            apis: vec![],
        }
    }

    fn state(tasks: &Tasks, id: &str) -> TaskState {
        tasks.with_table(|t| t[id].status.state)
    }

    async fn wait_for(tasks: &Tasks, id: &str, want: TaskState) {
        for _ in 0..500 {
            if state(tasks, id) == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("task {id} is {:?}, not {want:?}", state(tasks, id));
    }

    #[tokio::test]
    async fn a_task_ends_answered_with_its_answer_and_is_not_run_twice() {
        let t = tasks(Concludes, 4);
        let mut events = t.subscribe();
        assert_eq!(t.submit(query("a")), Ok(true));
        assert_eq!(
            t.submit(query("a")),
            Ok(false),
            "a known id was queued again"
        );
        let mut other = query("a");
        other.text = "Something else".into();
        assert!(
            matches!(t.submit(other), Err(SubmitError::Conflict(m)) if m.contains("another query"))
        );
        // The same text with other tools is another task too.
        let mut other_tools = query("a");
        other_tools.apis = vec![umi_core::tool::ApiSpec {
            category_name: "Data".into(),
            tool_name: "other".into(),
            api_name: "other".into(),
            api_description: None,
            required_parameters: vec![],
            optional_parameters: vec![],
            method: None,
            shown_description: None,
        }];
        assert!(
            matches!(t.submit(other_tools), Err(SubmitError::Conflict(m)) if m.contains("another query"))
        );
        wait_for(&t, "a", TaskState::Answered).await;
        let answer: serde_json::Value =
            serde_json::from_str(t.with_table(|t| t["a"].answer.clone()).unwrap().as_str())
                .unwrap();
        // ToolBench keeps the Finish call's arguments as the final answer.
        assert_eq!(
            answer["answer_generation"]["final_answer"],
            r#"{"return_type": "give_answer", "final_answer": "42 is the answer."}"#
        );
        let mut seen = vec![];
        while let Ok(e) = events.try_recv() {
            seen.push(e.state);
        }
        assert_eq!(seen.first(), Some(&TaskState::Queued));
        assert!(seen.contains(&TaskState::Running));
        assert_eq!(seen.last(), Some(&TaskState::Answered));
    }

    #[tokio::test]
    async fn concurrency_is_bounded_and_cancel_ends_queued_and_running_tasks() {
        let t = tasks(Hangs, 1);
        t.submit(query("first")).unwrap();
        t.submit(query("second")).unwrap();
        wait_for(&t, "first", TaskState::Running).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(state(&t, "second"), TaskState::Queued);

        assert!(t.cancel("first"));
        assert_eq!(state(&t, "first"), TaskState::Cancelled);
        // The freed slot goes to the queued task.
        wait_for(&t, "second", TaskState::Running).await;
        assert!(t.cancel("second"));
        assert!(!t.cancel("second"), "an ended task was cancelled again");
        assert!(!t.cancel("unknown"));
    }

    #[tokio::test]
    async fn an_id_twice_in_a_batch_is_queued_once_and_refused_with_two_queries() {
        let t = tasks(Hangs, 1);
        assert_eq!(t.submit_all(vec![query("d"), query("d")]), Ok(1));
        let mut other = query("e");
        other.text = "Something else".into();
        assert!(matches!(
            t.submit_all(vec![query("e"), other]),
            Err(SubmitError::Conflict(m)) if m.contains("twice")
        ));
        assert!(
            t.with_table(|t| !t.contains_key("e")),
            "a refused batch queued a task"
        );
    }

    #[tokio::test]
    async fn submissions_past_the_bound_of_unfinished_tasks_are_refused_whole() {
        let t = Tasks::new(
            TaskSettings {
                max_pending: 3,
                ..settings(Arc::new(Hangs), 1)
            },
            None,
        );
        assert_eq!(t.submit_all(vec![query("a"), query("b")]), Ok(2));
        assert_eq!(
            t.submit_all(vec![query("c"), query("d")]),
            Err(SubmitError::Full {
                pending: 2,
                limit: 3
            })
        );
        assert!(
            t.with_table(|t| !t.contains_key("c")),
            "a refused batch queued a task"
        );
        // Known ids add nothing, so they are not refused.
        assert_eq!(t.submit_all(vec![query("a")]), Ok(0));
        assert_eq!(t.submit(query("c")), Ok(true));
        // An ended task frees its place.
        assert!(t.cancel("a"));
        assert_eq!(t.submit(query("d")), Ok(true));
    }

    #[tokio::test]
    async fn one_caller_cannot_take_more_than_its_share_of_unfinished_tasks() {
        let t = Tasks::new(
            TaskSettings {
                max_pending_per_caller: 2,
                ..settings(Arc::new(Hangs), 1)
            },
            None,
        );
        assert_eq!(
            t.submit_all(vec![query("alice/a"), query("alice/b")]),
            Ok(2)
        );
        assert_eq!(
            t.submit_all(vec![query("alice/c")]),
            Err(SubmitError::CallerFull {
                pending: 2,
                limit: 2
            })
        );
        // Another holder has its own quota.
        assert_eq!(t.submit_all(vec![query("bob/a"), query("bob/b")]), Ok(2));
        // An ended task frees its owner's place.
        assert!(t.cancel("alice/a"));
        assert_eq!(t.submit(query("alice/c")), Ok(true));
    }

    #[tokio::test]
    async fn past_the_bound_of_ended_tasks_fetched_ones_go_first_then_the_oldest() {
        let t = Tasks::new(
            TaskSettings {
                max_ended: 3,
                ..settings(Arc::new(Concludes), 1)
            },
            None,
        );
        for id in ["t0", "t1", "t2"] {
            t.submit(query(id)).unwrap();
            wait_for(&t, id, TaskState::Answered).await;
        }
        t.with_table(|t| t.get_mut("t1").unwrap().fetched = true);
        t.submit(query("t3")).unwrap();
        wait_for(&t, "t3", TaskState::Answered).await;
        let kept = |t: &Tasks| {
            let mut ids: Vec<String> = t.with_table(|t| t.keys().cloned().collect());
            ids.sort();
            ids
        };
        assert_eq!(kept(&t), ["t0", "t2", "t3"], "the fetched task goes first");
        t.submit(query("t4")).unwrap();
        wait_for(&t, "t4", TaskState::Answered).await;
        assert_eq!(kept(&t), ["t2", "t3", "t4"], "then the oldest");
        // A forgotten task is unknown: submitting it again runs it again.
        assert_eq!(t.submit(query("t0")), Ok(true));
    }

    #[tokio::test]
    async fn a_cancelled_task_runs_again_when_resubmitted() {
        let t = tasks(Hangs, 1);
        t.submit(query("c")).unwrap();
        wait_for(&t, "c", TaskState::Running).await;
        assert!(t.cancel("c"));
        assert_eq!(t.submit(query("c")), Ok(true));
        wait_for(&t, "c", TaskState::Running).await;
    }

    #[tokio::test]
    async fn ended_tasks_are_forgotten_after_the_retention() {
        let t = Tasks::new(
            TaskSettings {
                retention: Duration::from_millis(100),
                ..settings(Arc::new(Concludes), 1)
            },
            None,
        );
        t.submit(query("old")).unwrap();
        wait_for(&t, "old", TaskState::Answered).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(t.with_table(|t| t.is_empty()));
    }

    /// Test double for the roles: like `Concludes`, counting its calls, but never
    /// answering a task whose query mentions "stuck" (its worker died with it).
    #[derive(Default)]
    struct CountsAndSticks {
        calls: AtomicU32,
    }

    impl RoleModels for CountsAndSticks {
        fn generate<'a>(&'a self, r: RoleRequest) -> BoxFuture<'a, Result<Generated, CoreError>> {
            if r.history.iter().any(|turn| turn.value.contains("stuck")) {
                return Box::pin(std::future::pending());
            }
            self.calls.fetch_add(1, Ordering::Relaxed);
            Concludes.generate(r)
        }
    }

    fn journaled(roles: Arc<CountsAndSticks>, journal: TaskJournal) -> Arc<Tasks> {
        Tasks::new(settings(roles, 4), Some(journal))
    }

    #[tokio::test]
    async fn a_restarted_coordinator_serves_its_answers_and_reruns_unfinished_tasks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.jsonl");
        let hour = Duration::from_secs(3600);
        let mut stuck = query("stuck");
        stuck.text = "a stuck question".into();

        let (journal, _) = TaskJournal::open(&path, hour).unwrap();
        let before = journaled(Arc::default(), journal);
        assert_eq!(before.submit_all(vec![query("done"), stuck.clone()]), Ok(2));
        wait_for(&before, "done", TaskState::Answered).await;
        wait_for(&before, "stuck", TaskState::Running).await;
        let answer = before.with_table(|t| t["done"].answer.clone()).unwrap();

        // The coordinator dies here: its tasks stop where they are, nothing more reaches
        // the journal, and the journal's lock is let go (the kernel's doing for a process).
        let stuck_run = before.with_table(|t| t["stuck"].abort.clone()).unwrap();
        stuck_run.abort();
        let all_stopped = async {
            while Arc::strong_count(&before) > 1 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), all_stopped)
            .await
            .expect("the stuck task did not stop");
        drop(before);
        let (journal, recovered) = TaskJournal::open(&path, hour).unwrap();
        // The stuck task was running when the coordinator died (no trace): one untraced
        // crash on its record.
        let compacted = std::fs::read_to_string(&path).unwrap();
        let stuck_record = compacted
            .lines()
            .find(|l| l.contains(r#""id":"stuck""#))
            .unwrap();
        assert!(stuck_record.contains(r#""untraced":1"#), "{stuck_record}");
        let roles = Arc::new(CountsAndSticks::default());
        let after = journaled(roles.clone(), journal);
        after.recover(recovered);
        assert_eq!(state(&after, "done"), TaskState::Answered);
        assert_eq!(
            after.with_table(|t| t["done"].answer.clone()).as_deref(),
            Some(answer.as_str())
        );
        assert_eq!(
            after.submit(query("done")),
            Ok(false),
            "an answered task ran again"
        );
        wait_for(&after, "stuck", TaskState::Running).await;
        assert_eq!(
            after.submit(stuck),
            Ok(false),
            "the recovered task was queued twice"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            roles.calls.load(Ordering::Relaxed),
            0,
            "the answered task was solved again"
        );
    }

    /// Waits until nothing but the test holds `tasks` (its runs and supervisors ended),
    /// then lets go of it and of its journal.
    async fn stop(tasks: Arc<Tasks>) {
        let all_stopped = async {
            while Arc::strong_count(&tasks) > 1
                || tasks
                    .journal
                    .as_ref()
                    .is_some_and(|j| Arc::strong_count(j) > 1)
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), all_stopped)
            .await
            .expect("the tasks did not stop");
    }

    /// Many tasks through a journal that keeps only a few ended ones: the journal is
    /// compacted while serving, so it stays near its live content (not one record set
    /// per task ever submitted), and a restart on it serves every answer still kept.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_journal_stays_near_its_live_content_and_a_restart_keeps_every_answer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.jsonl");
        let hour = Duration::from_secs(3600);
        let floor = 16 << 10;
        let (journal, _) = TaskJournal::open(&path, hour).unwrap();
        let t = Tasks::new(
            TaskSettings {
                max_ended: 20,
                ..settings(Arc::new(Concludes), 4)
            },
            Some(journal.with_compaction_floor(floor)),
        );
        for batch in 0..30 {
            let ids: Vec<String> = (0..10).map(|i| format!("q{batch}_{i}")).collect();
            t.submit_all(ids.iter().map(|id| query(id)).collect())
                .unwrap();
            for id in &ids {
                wait_for(&t, id, TaskState::Answered).await;
            }
        }
        let served: HashMap<String, String> = t.with_table(|t| {
            t.iter()
                .map(|(id, e)| (id.clone(), e.answer.clone().unwrap()))
                .collect()
        });
        stop(t).await;
        let grown = std::fs::metadata(&path).unwrap().len();
        let (_, recovered) = TaskJournal::open(&path, hour).unwrap();
        let live = std::fs::metadata(&path).unwrap().len();
        assert!(
            grown <= floor.max(3 * live),
            "the journal grew to {grown} bytes for {live} bytes of live content"
        );
        for (id, answer) in &served {
            let task = recovered.ended.iter().find(|e| &e.query.id == id);
            assert_eq!(
                task.and_then(|e| e.answer.as_ref()),
                Some(answer),
                "task {id}'s answer was lost"
            );
        }
        assert!(recovered.ended.len() <= 20, "{}", recovered.ended.len());
    }

    /// Test double for the roles: every planner call fails as the cluster client
    /// reports a planner that stayed unreachable.
    struct Unreachable;

    impl RoleModels for Unreachable {
        fn generate<'a>(&'a self, r: RoleRequest) -> BoxFuture<'a, Result<Generated, CoreError>> {
            let error = CoreError::role(
                r.role,
                umi_core::ErrorClass::Unavailable,
                3,
                "http://w1: connection refused",
            );
            Box::pin(async move { Err(error) })
        }
    }

    #[tokio::test]
    async fn a_role_failure_ends_the_task_failed_naming_the_role_and_class() {
        let t = tasks(Unreachable, 1);
        t.submit(query("u")).unwrap();
        wait_for(&t, "u", TaskState::Failed).await;
        let failure = t.with_table(|t| t["u"].status.failure.clone());
        assert_eq!(
            failure,
            "planner: unavailable after 3 attempts: http://w1: connection refused"
        );
        // A failed task runs again when resubmitted.
        assert_eq!(t.submit(query("u")), Ok(true));
    }

    #[tokio::test]
    async fn a_panicking_task_ends_failed_with_the_reason() {
        let t = tasks(Panics, 1);
        t.submit(query("p")).unwrap();
        wait_for(&t, "p", TaskState::Failed).await;
        let failure = t.with_table(|t| t["p"].status.failure.clone());
        assert!(failure.contains("internal error"), "{failure}");
    }
}
