//! The task table: every submitted task, its state, and its answer once ended. Each
//! task runs under a supervisor, so it always ends in a terminal state with an answer
//! or a reason, even if its search task panics or is cancelled.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, Semaphore};
use tokio::task::AbortHandle;
use umi_core::agent::{BoxFuture, Generated, RoleKind, RoleModels, RoleRequest};
use umi_core::dfs::{Outcome, SearchConfig};
use umi_core::env::ToolBackend;
use umi_core::task::{solve, Query};

use crate::journal::{Recovered, TaskJournal};
use crate::pb::{TaskEvent, TaskState};

pub struct Entry {
    pub event: TaskEvent,
    /// The query text, to tell a resubmission from a different task under the same id.
    query: String,
    pub answer: Option<String>,
    abort: Option<AbortHandle>,
    ended_at: Option<Instant>,
    /// Which run of the task this entry is (a resubmitted task runs again): updates
    /// from an earlier run are ignored.
    run: u64,
}

pub fn is_terminal(state: i32) -> bool {
    !matches!(
        TaskState::try_from(state),
        Ok(TaskState::Queued | TaskState::Running)
    )
}

/// Ended without an answer worth keeping: submitting the task again runs it again.
fn is_retryable(state: i32) -> bool {
    matches!(
        TaskState::try_from(state),
        Ok(TaskState::Failed | TaskState::Cancelled)
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
    /// Where queued and ended tasks are recorded, when the coordinator has one.
    journal: Option<TaskJournal>,
}

/// Why a submission queued nothing.
#[derive(Debug, PartialEq)]
pub enum SubmitError {
    /// The id is taken by another query.
    Conflict(String),
    /// The tasks could not be recorded in the journal, so they were not queued.
    Journal(String),
}

impl Tasks {
    /// Ended tasks are forgotten `retention` after they end (their answers must be
    /// fetched by then), so a long-running coordinator does not grow without bound.
    pub fn new(
        roles: Arc<dyn RoleModels>,
        backend: Arc<dyn ToolBackend>,
        config: SearchConfig,
        method: String,
        concurrency: usize,
        retention: Duration,
        journal: Option<TaskJournal>,
    ) -> Arc<Self> {
        let tasks = Arc::new(Tasks {
            roles,
            backend,
            config,
            method,
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            table: Mutex::default(),
            events: broadcast::channel(4096).0,
            journal,
        });
        let weak = Arc::downgrade(&tasks);
        tokio::spawn(async move {
            let period = (retention / 4).clamp(Duration::from_millis(10), Duration::from_secs(60));
            loop {
                tokio::time::sleep(period).await;
                let Some(tasks) = weak.upgrade() else { return };
                tasks.with_table(|t| {
                    t.retain(|_, e| e.ended_at.is_none_or(|at| at.elapsed() < retention))
                });
            }
        });
        tasks
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

    /// Applies an event to a task that has not ended, and broadcasts it. Both happen
    /// under the table's lock, so watchers see events in table order and never an
    /// event after a task's end.
    fn update(&self, run: u64, event: TaskEvent, answer: Option<String>) {
        let task_id = event.task_id.clone();
        let journaled = self.with_table(|t| {
            let entry = t.get_mut(&event.task_id)?;
            if entry.run != run || is_terminal(entry.event.state) {
                return None;
            }
            let mut journaled = None;
            if event.state == TaskState::Running as i32 {
                if let Some(Err(e)) = self.journal.as_ref().map(|j| j.started(&task_id)) {
                    // Only the crash count of a poison task depends on it.
                    tracing::error!(task_id = %task_id, "{e}");
                }
            }
            if is_terminal(event.state) {
                entry.ended_at = Some(Instant::now());
                entry.abort = None;
                journaled = self
                    .journal
                    .as_ref()
                    .map(|journal| journal.ended(&event, answer.clone()));
            }
            entry.event = event.clone();
            if answer.is_some() {
                entry.answer = answer;
            }
            let _ = self.events.send(event);
            journaled
        });
        // Synced outside the table's lock: an fsync per ended task must not stall every
        // other task's progress, Watch, Fetch and Submit. The answer is served from
        // memory meanwhile; only a restart before the sync would lose it.
        if let (Some(written), Some(journal)) = (journaled, &self.journal) {
            if let Err(e) = written.and_then(|()| journal.sync()) {
                tracing::error!(task_id = %task_id, "{e}");
            }
        }
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
        self.with_table(|t| {
            let mut to_queue: Vec<(Query, u64)> = Vec::new();
            let mut in_batch: HashMap<String, usize> = HashMap::new();
            for query in queries {
                let id = &query.id;
                let generation = match t.get(id) {
                    Some(e) if e.query != query.text => {
                        return Err(SubmitError::Conflict(format!(
                            "task {id:?} already exists with another query"
                        )))
                    }
                    Some(e) if !is_retryable(e.event.state) => continue,
                    Some(e) => e.run + 1,
                    None => 0,
                };
                match in_batch.get(id) {
                    Some(&i) if to_queue[i].0.text != query.text => {
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
        })
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
                        event: task.event,
                        query: task.query.text,
                        answer: task.answer,
                        abort: None,
                        ended_at: Some(ended_at),
                        run: 0,
                    },
                );
            }
            for query in recovered.unfinished {
                self.queue(t, query, 0);
            }
        });
    }

    /// Starts a task's run under its supervisor and enters it in the table as QUEUED.
    fn queue(self: &Arc<Self>, t: &mut HashMap<String, Entry>, query: Query, generation: u64) {
        let id = query.id.clone();
        // Spawned under the lock, so `cancel` always finds the abort handle; the task's
        // own updates wait for the lock and so come after QUEUED.
        let run = tokio::spawn(self.clone().run(query.clone(), generation));
        t.insert(
            id.clone(),
            Entry {
                event: event(&id, TaskState::Queued),
                query: query.text,
                answer: None,
                abort: Some(run.abort_handle()),
                ended_at: None,
                run: generation,
            },
        );
        let _ = self.events.send(event(&id, TaskState::Queued));
        let tasks = self.clone();
        tokio::spawn(async move {
            match run.await {
                Ok(()) => {}
                Err(e) if e.is_cancelled() => {}
                Err(e) => {
                    let mut failed = event(&id, TaskState::Failed);
                    failed.failure = format!("internal error in the task: {e}");
                    tasks.update(generation, failed, None);
                }
            }
        });
    }

    async fn run(self: Arc<Self>, query: Query, generation: u64) {
        let Ok(_permit) = self.permits.clone().acquire_owned().await else {
            return;
        };
        let id = query.id.clone();
        self.update(generation, event(&id, TaskState::Running), None);
        let counted = CountedRoles {
            generation,
            inner: self.roles.as_ref(),
            tasks: &self,
            task_id: &id,
            steps: AtomicU32::new(0),
            tokens: AtomicU64::new(0),
        };
        let solved = solve(
            &query,
            &counted,
            self.backend.as_ref(),
            self.config.clone(),
            &self.method,
        )
        .await;
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
        self.update(generation, done, Some(solved.answer.to_string()));
    }

    /// Stops a task that has not ended; returns whether it did.
    pub fn cancel(&self, id: &str) -> bool {
        let abort = self.with_table(|t| match t.get(id) {
            Some(e) if !is_terminal(e.event.state) => e.abort.clone().map(|a| (a, e.run)),
            _ => None,
        });
        let Some((handle, generation)) = abort else {
            return false;
        };
        // Ended first, so nothing the task still sends before it stops gets through.
        let mut cancelled = event(id, TaskState::Cancelled);
        cancelled.failure = "cancelled".into();
        self.update(generation, cancelled, None);
        handle.abort();
        true
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
    generation: u64,
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
                self.tasks.update(self.generation, progress, None);
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
        fn generate<'a>(&'a self, r: RoleRequest) -> BoxFuture<'a, Result<Generated, String>> {
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
        fn generate<'a>(&'a self, _: RoleRequest) -> BoxFuture<'a, Result<Generated, String>> {
            Box::pin(std::future::pending())
        }
    }

    impl RoleModels for Panics {
        fn generate<'a>(&'a self, _: RoleRequest) -> BoxFuture<'a, Result<Generated, String>> {
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

    fn tasks(roles: impl RoleModels + 'static, concurrency: usize) -> Arc<Tasks> {
        Tasks::new(
            Arc::new(roles),
            Arc::new(NoTools),
            SearchConfig::default(),
            "DFS_woFilter_w2".into(),
            concurrency,
            Duration::from_secs(3600),
            None,
        )
    }

    fn query(id: &str) -> Query {
        Query {
            id: id.into(),
            text: "What is 6 x 7?".into(),
            apis: vec![],
        }
    }

    fn state(tasks: &Tasks, id: &str) -> TaskState {
        tasks.with_table(|t| TaskState::try_from(t[id].event.state).unwrap())
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
            seen.push(TaskState::try_from(e.state).unwrap());
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
            Arc::new(Concludes),
            Arc::new(NoTools),
            SearchConfig::default(),
            "DFS_woFilter_w2".into(),
            1,
            Duration::from_millis(100),
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
        fn generate<'a>(&'a self, r: RoleRequest) -> BoxFuture<'a, Result<Generated, String>> {
            if r.history.iter().any(|turn| turn.value.contains("stuck")) {
                return Box::pin(std::future::pending());
            }
            self.calls.fetch_add(1, Ordering::Relaxed);
            Concludes.generate(r)
        }
    }

    fn journaled(roles: Arc<CountsAndSticks>, journal: TaskJournal) -> Arc<Tasks> {
        Tasks::new(
            roles,
            Arc::new(NoTools),
            SearchConfig::default(),
            "DFS_woFilter_w2".into(),
            4,
            Duration::from_secs(3600),
            Some(journal),
        )
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
        // The stuck task was running when the coordinator died: one crash on its record.
        let compacted = std::fs::read_to_string(&path).unwrap();
        let stuck_record = compacted
            .lines()
            .find(|l| l.contains(r#""id":"stuck""#))
            .unwrap();
        assert!(stuck_record.contains(r#""crashes":1"#), "{stuck_record}");
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

    #[tokio::test]
    async fn a_panicking_task_ends_failed_with_the_reason() {
        let t = tasks(Panics, 1);
        t.submit(query("p")).unwrap();
        wait_for(&t, "p", TaskState::Failed).await;
        let failure = t.with_table(|t| t["p"].event.failure.clone());
        assert!(failure.contains("internal error"), "{failure}");
    }
}
