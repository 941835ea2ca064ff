//! The coordinator's task journal: each queued task, each start and how each task ended,
//! one JSON line per record (queued and ended ones fsync'd). A coordinator restarted on
//! the same file serves the answers it had and runs again the tasks that were queued or
//! running when it stopped, so clients that resubmit or keep watching lose nothing.
//!
//! The file is compacted (rewritten with one record per fact still true) when it is
//! opened and, while the coordinator serves, whenever it grows past twice its live
//! content (and past `COMPACT_FLOOR`): [`TaskJournal::compact`].
//!
//! A task that takes the coordinator down with it (a poison task) must not do so at every
//! restart, and a task that was merely running when an operator killed the coordinator
//! must not pay for it. So the cause of a crash is recorded where it can be known: a
//! panic hook ([`record_panics`]) appends a `panicked` record naming the tasks being
//! stepped on the panicking thread ([`Stepping`]). After a stop that was not a clean
//! shutdown, a task still running counts a crash only if a panic named it, and after
//! `MAX_CRASHES` such crashes it ends FAILED instead of running again. A crash with no
//! trace (SIGKILL, the OOM killer, an abort or a stack overflow) blames no task, but
//! counts for the tasks it interrupted against the much larger `MAX_UNTRACED_CRASHES`,
//! so a task that kills the process without a trace still cannot restart it forever.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::io::{BufRead, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use umi_core::task::Query;
use umi_core::tool::ApiSpec;

use crate::state::{TaskState, TaskStatus};

/// Panics a task may be named in (being stepped on the panicking thread) before it is
/// failed.
pub const MAX_CRASHES: u32 = 3;

/// Crashes without a trace a task may be running through before it is failed: far more
/// than an operator's restarts (the all-faults run kills the coordinator a dozen times
/// spread over hundreds of tasks), few enough that a task crashing the process at every
/// run (a stack overflow, an abort in native code) ends.
pub const MAX_UNTRACED_CRASHES: u32 = 10;

/// The longest panic message a `panicked` record keeps.
const PANIC_MESSAGE_LIMIT: usize = 2000;

/// The journal is compacted while serving only once it is past this size (and past
/// twice its live content): below it a rewrite would cost more than the bytes it saves.
pub const COMPACT_FLOOR: u64 = 8 << 20;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("task journal {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "task journal {path}: another coordinator has it open ({lock} is locked); give each coordinator its own --task-journal"
    )]
    Locked { path: PathBuf, lock: PathBuf },
    #[error("task journal {path}, line {line}: {message} (not a journal this version wrote?)")]
    Corrupt {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "snake_case")]
enum Record {
    /// Queued (again, for a resubmitted task): anything it ended with before is void.
    Queued {
        id: String,
        query: String,
        apis: Vec<ApiSpec>,
        /// Coordinator panics it was named in (kept across compactions).
        #[serde(default, skip_serializing_if = "is_zero")]
        crashes: u32,
        /// Crashes without a trace it was running through (kept across compactions).
        #[serde(default, skip_serializing_if = "is_zero")]
        untraced: u32,
    },
    /// Began running.
    Started { id: String },
    /// Forgotten before its retention ran out (the coordinator keeps only so many ended
    /// tasks): nothing about it is served again.
    Forgotten { id: String },
    /// The coordinator shut down cleanly: the tasks running then were interrupted, not
    /// the cause of a crash.
    Stopped,
    /// A thread panicked while stepping these tasks (none: outside any task). If the
    /// process died next, this is why.
    Panicked { tasks: Vec<String>, message: String },
    Ended {
        id: String,
        /// By name (`"answered"`); journals written before names held the protobuf
        /// number, which is still read.
        #[serde(deserialize_with = "crate::state::state_by_name_or_number")]
        state: TaskState,
        steps: u32,
        tokens: u64,
        failure: String,
        answer: Option<String>,
        /// Seconds since the Unix epoch, so retention carries across restarts.
        ended_at: u64,
    },
}

/// A task that had ended when the journal was read.
#[derive(Debug)]
pub struct EndedTask {
    pub query: Query,
    pub status: TaskStatus,
    pub answer: Option<String>,
    /// How long ago it ended.
    pub age: Duration,
}

/// What a journal held when it was opened.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Queued or running when the coordinator stopped, in the order they were queued.
    pub unfinished: Vec<Query>,
    /// Ended tasks, including those failed now for crashing the coordinator too often.
    pub ended: Vec<EndedTask>,
    /// How many of `ended` were failed for that.
    pub failed_for_crashes: usize,
    /// How the previous run ended, if tasks were running when it did.
    pub previous_run: Option<CrashCause>,
}

/// Why the previous run ended while tasks were running.
#[derive(Debug, Clone, PartialEq)]
pub enum CrashCause {
    /// A panic, with its message: the tasks it named count a crash, the others none.
    Panicked(String),
    /// Nothing recorded (SIGKILL, OOM, abort): the running tasks count an untraced crash.
    NoTrace,
}

pub struct TaskJournal {
    path: PathBuf,
    /// The open file, appended to; also the lock that keeps a compaction's swap from
    /// losing a record appended meanwhile.
    file: Mutex<File>,
    /// Ended tasks older than this are dropped at each compaction.
    retention: Duration,
    /// The size past which the next compaction is due: twice the live content at the
    /// last one, at least `floor`.
    compact_at: AtomicU64,
    floor: u64,
    /// Set when an append passes `compact_at`, cleared when a compaction starts.
    due: AtomicBool,
    /// A compaction is under way (at most one at a time).
    compacting: AtomicBool,
    /// Held (an advisory lock) while this journal is open: a second coordinator on the
    /// same file would interleave its records with ours and rerun our tasks.
    _lock: File,
}

impl TaskJournal {
    /// Reads the journal at `path` (a missing file is an empty journal), drops the tasks
    /// that ended more than `retention` ago, and rewrites it with one record per fact
    /// still true, so the file does not grow across restarts. A torn last line (the
    /// process died while writing it) is dropped; any other unreadable line is an error.
    /// Fails if another process (or another `TaskJournal`) has the journal open.
    pub fn open(
        path: &Path,
        retention: Duration,
    ) -> Result<(TaskJournal, Recovered), JournalError> {
        let io = |source| JournalError::Io {
            path: path.to_path_buf(),
            source,
        };
        let lock = lock(path)?;
        let records = read_records(path)?;
        let live = replay(records, retention, Replay::AfterStop);

        // Replaced whole (its directory synced too: until then a power loss could bring
        // back the old file and lose everything appended to the new one).
        umi_durable::write_with(path, |compacted| write_live(compacted, &live))
            .map_err(|e| io(e.source))?;
        let file = OpenOptions::new().append(true).open(path).map_err(io)?;
        let size = file.metadata().map_err(io)?.len();
        let journal = TaskJournal {
            path: path.to_path_buf(),
            file: Mutex::new(file),
            retention,
            compact_at: AtomicU64::new(COMPACT_FLOOR.max(2 * size)),
            floor: COMPACT_FLOOR,
            due: AtomicBool::new(false),
            compacting: AtomicBool::new(false),
            _lock: lock,
        };
        Ok((journal, live.recovered))
    }

    /// Compacts while serving only past `floor` bytes (and twice the live content)
    /// instead of `COMPACT_FLOOR`: for tests and measurements of small journals.
    pub fn with_compaction_floor(self, floor: u64) -> Self {
        let size = self.size().unwrap_or(0);
        self.compact_at
            .store(floor.max(2 * size), Ordering::Relaxed);
        TaskJournal { floor, ..self }
    }

    /// The journal's size now, in bytes.
    pub fn size(&self) -> Result<u64, JournalError> {
        let file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        file.metadata()
            .map(|m| m.len())
            .map_err(|source| JournalError::Io {
                path: self.path.clone(),
                source,
            })
    }

    /// Whether the journal has grown past twice its live content (and the floor) since
    /// the last compaction; reading it claims the compaction, so one caller runs it.
    pub fn compaction_due(&self) -> bool {
        self.due.swap(false, Ordering::AcqRel)
    }

    /// Rewrites the journal with one record per fact still true, while records go on
    /// being appended: the records up to now are read and compacted into a new file
    /// without holding the append lock; then, under it, the records appended meanwhile
    /// are copied after them, the new file replaces the old one (`umi_durable`), and
    /// appends go to it. Submissions wait only for that copy and swap. Blocking: run it
    /// off the async runtime.
    pub fn compact(&self) -> Result<(), JournalError> {
        if self.compacting.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let result = self.compact_now();
        self.compacting.store(false, Ordering::Release);
        result
    }

    fn compact_now(&self) -> Result<(), JournalError> {
        let io = |source| JournalError::Io {
            path: self.path.clone(),
            source,
        };
        // Every record below this offset is whole: appends write whole records under
        // the lock, and cut off what they could not finish.
        let start = self.size()?;
        let records = read_prefix(&self.path, start)?;
        let live = replay(records, self.retention, Replay::WhileServing);
        let mut held = None;
        umi_durable::write_with(&self.path, |compacted| {
            write_live(compacted, &live)?;
            let file = self.file.lock().unwrap_or_else(|p| p.into_inner());
            let mut old = File::open(&self.path)?;
            old.seek(SeekFrom::Start(start))?;
            std::io::copy(&mut old, compacted)?;
            held = Some(file);
            Ok(())
        })
        .map_err(|e| io(e.source))?;
        let mut file = held.expect("write_with ran the fill");
        *file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(io)?;
        let size = file.metadata().map_err(io)?.len();
        self.compact_at
            .store(self.floor.max(2 * size), Ordering::Relaxed);
        tracing::debug!(path = %self.path.display(), bytes = size, "task journal compacted");
        Ok(())
    }

    /// Records tasks as queued, durably, in one write.
    pub fn queued(&self, queries: &[&Query]) -> Result<(), JournalError> {
        let records: Vec<Record> = queries.iter().map(|q| queued(q)).collect();
        self.append(&records)
    }

    /// Records that a task began running. Not synced: what it guards against is the
    /// process dying, and the kernel keeps what a dead process wrote.
    pub fn started(&self, id: &str) -> Result<(), JournalError> {
        self.write(&[Record::Started { id: id.to_string() }], false)
    }

    /// Records a clean shutdown, durably: the tasks running now did not crash anything.
    pub fn stopped(&self) -> Result<(), JournalError> {
        self.append(&[Record::Stopped])
    }

    /// Records that ended tasks were forgotten early (evicted from the table), so
    /// neither a restart nor a compaction brings them back. Not synced: a forgotten
    /// task that comes back after a power loss is only kept a little longer.
    pub fn forgotten(&self, ids: &[String]) -> Result<(), JournalError> {
        let records: Vec<Record> = ids
            .iter()
            .map(|id| Record::Forgotten { id: id.clone() })
            .collect();
        self.write(&records, false)
    }

    /// Records how a task ended, with its answer, without waiting for the disk, so the
    /// caller can write under its lock (keeping the journal in table order) and `sync`
    /// after letting go of it.
    pub fn ended(&self, event: &TaskStatus, answer: Option<String>) -> Result<(), JournalError> {
        self.write(&[ended(event, answer, now_unix())], false)
    }

    /// Waits until everything written so far is on disk.
    pub fn sync(&self) -> Result<(), JournalError> {
        let file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        file.sync_data().map_err(|source| JournalError::Io {
            path: self.path.clone(),
            source,
        })
    }

    fn append(&self, records: &[Record]) -> Result<(), JournalError> {
        self.write(records, true)
    }

    fn write(&self, records: &[Record], sync: bool) -> Result<(), JournalError> {
        let io = |source| JournalError::Io {
            path: self.path.clone(),
            source,
        };
        let mut bytes = Vec::new();
        for record in records {
            write_record(&mut bytes, record).map_err(io)?;
        }
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let len = file.metadata().map_err(io)?.len();
        let written = file
            .write_all(&bytes)
            .and_then(|()| if sync { file.sync_data() } else { Ok(()) });
        if let Err(e) = written {
            // A partly written record would sit mid-file under the next one and make
            // the journal unreadable at the next start: cut it off.
            let _ = file.set_len(len);
            return Err(io(e));
        }
        if len + bytes.len() as u64 > self.compact_at.load(Ordering::Relaxed)
            && !self.compacting.load(Ordering::Acquire)
        {
            self.due.store(true, Ordering::Release);
        }
        Ok(())
    }
}

/// Locks `<path>.lock`, a file beside the journal: the journal itself is replaced at
/// each compaction, which a lock on it would not survive. The kernel releases the lock
/// when the process ends, however it ends.
fn lock(path: &Path) -> Result<File, JournalError> {
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    let io = |source| JournalError::Io {
        path: lock_path.clone(),
        source,
    };
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(JournalError::Locked {
            path: path.to_path_buf(),
            lock: lock_path,
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(io(e)),
    }
}

fn queued(query: &Query) -> Record {
    Record::Queued {
        id: query.id.clone(),
        query: query.text.clone(),
        apis: query.apis.clone(),
        crashes: 0,
        untraced: 0,
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn ended(event: &TaskStatus, answer: Option<String>, ended_at: u64) -> Record {
    Record::Ended {
        id: event.task_id.clone(),
        state: event.state,
        steps: event.steps,
        tokens: event.tokens,
        failure: event.failure.clone(),
        answer,
        ended_at,
    }
}

fn write_record(out: &mut impl Write, record: &Record) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, record)?;
    out.write_all(b"\n")
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The journal's records; a missing file has none. A torn last line is dropped.
fn read_records(path: &Path) -> Result<Vec<Record>, JournalError> {
    let mut lines = umi_durable::JsonLines::open(path).map_err(|e| corrupt_or_io(path, e))?;
    let mut records = Vec::new();
    while let Some(record) = lines.next_record().map_err(|e| corrupt_or_io(path, e))? {
        records.push(record);
    }
    Ok(records)
}

/// The records in the first `len` bytes of the journal (all of them whole).
fn read_prefix(path: &Path, len: u64) -> Result<Vec<Record>, JournalError> {
    let io = |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut reader = std::io::BufReader::new(File::open(path).map_err(io)?.take(len));
    let mut records = Vec::new();
    let mut line = Vec::new();
    for number in 1.. {
        line.clear();
        if reader.read_until(b'\n', &mut line).map_err(io)? == 0 {
            break;
        }
        let record = serde_json::from_slice(&line).map_err(|e| JournalError::Corrupt {
            path: path.to_path_buf(),
            line: number,
            message: e.to_string(),
        })?;
        records.push(record);
    }
    Ok(records)
}

/// Writes one record per fact still true: each unfinished task queued (with its crash
/// count, and started if it is running now), each kept ended task queued and ended.
fn write_live(out: &mut File, live: &Live) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(out);
    for query in &live.recovered.unfinished {
        let mut record = queued(query);
        if let Record::Queued {
            crashes, untraced, ..
        } = &mut record
        {
            (*crashes, *untraced) = live.crashes.get(&query.id).copied().unwrap_or((0, 0));
        }
        write_record(&mut out, &record)?;
        if live.running.contains(&query.id) {
            write_record(
                &mut out,
                &Record::Started {
                    id: query.id.clone(),
                },
            )?;
        }
    }
    for task in &live.recovered.ended {
        write_record(&mut out, &queued(&task.query))?;
        let ended_at = now_unix().saturating_sub(task.age.as_secs());
        write_record(
            &mut out,
            &ended(&task.status, task.answer.clone(), ended_at),
        )?;
    }
    out.flush()
}

fn corrupt_or_io(path: &Path, e: umi_durable::ReadError) -> JournalError {
    match e {
        umi_durable::ReadError::Io { source, .. } => JournalError::Io {
            path: path.to_path_buf(),
            source,
        },
        umi_durable::ReadError::Malformed { line, message, .. } => JournalError::Corrupt {
            path: path.to_path_buf(),
            line,
            message,
        },
    }
}

thread_local! {
    /// The tasks being stepped on this thread now (innermost last), for the panic hook.
    static STEPPING: std::cell::RefCell<Vec<std::sync::Arc<str>>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// A task's run, marked as "being stepped" on whichever thread polls it, so a panic
/// there can name it ([`record_panics`]).
pub struct Stepping<F> {
    id: std::sync::Arc<str>,
    inner: std::pin::Pin<Box<F>>,
}

impl<F: std::future::Future> Stepping<F> {
    pub fn new(id: &str, inner: F) -> Self {
        Stepping {
            id: id.into(),
            inner: Box::pin(inner),
        }
    }
}

impl<F: std::future::Future> std::future::Future for Stepping<F> {
    type Output = F::Output;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        /// Unmarks the task when the poll returns or unwinds.
        struct Unmark;
        impl Drop for Unmark {
            fn drop(&mut self) {
                let _ = STEPPING.try_with(|s| s.borrow_mut().pop());
            }
        }
        let this = self.get_mut();
        STEPPING.with(|s| s.borrow_mut().push(this.id.clone()));
        let _unmark = Unmark;
        this.inner.as_mut().poll(cx)
    }
}

/// The tasks being stepped on this thread now.
fn stepping_here() -> Vec<String> {
    STEPPING
        .try_with(|s| {
            s.try_borrow()
                .map(|v| v.iter().map(|id| id.to_string()).collect())
                .unwrap_or_default()
        })
        .unwrap_or_default()
}

/// Installs a panic hook (after the one in place, which still runs) that appends a
/// `panicked` record to the journal at `path`, naming the tasks being stepped on the
/// panicking thread, and syncs it: if the panic takes the process down, the next start
/// knows why and which tasks to blame. Best effort: a record that cannot be written
/// leaves the crash untraced. A panic inside a task's run is caught by its supervisor
/// (the task ends FAILED); its record is then moot, as the task has ended.
pub fn record_panics(path: PathBuf) {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let _ = append_panic(&path, stepping_here(), &info.to_string());
        previous(info);
    }));
}

/// Appends one `panicked` record (through its own handle, so a panic while the
/// journal's lock is held cannot deadlock; appends are whole lines).
fn append_panic(path: &Path, tasks: Vec<String>, message: &str) -> std::io::Result<()> {
    let mut message = message.to_string();
    if message.len() > PANIC_MESSAGE_LIMIT {
        let mut end = PANIC_MESSAGE_LIMIT;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
    }
    let mut line = serde_json::to_vec(&Record::Panicked { tasks, message })?;
    line.push(b'\n');
    let mut file = OpenOptions::new().append(true).open(path)?;
    file.write_all(&line)?;
    file.sync_data()
}

/// When the records are replayed.
#[derive(Clone, Copy, PartialEq)]
enum Replay {
    /// At start, after the coordinator stopped: a task still running at the end of the
    /// file counts a crash.
    AfterStop,
    /// While the coordinator serves (an online compaction): a task running is running.
    WhileServing,
}

/// What the records say now.
struct Live {
    recovered: Recovered,
    /// Each unfinished task's crash counts: (panics naming it, untraced crashes).
    crashes: HashMap<String, (u32, u32)>,
    /// Unfinished tasks running now (`Replay::WhileServing` only).
    running: std::collections::HashSet<String>,
}

/// What the records say now.
fn replay(records: Vec<Record>, retention: Duration, when: Replay) -> Live {
    struct State {
        query: Query,
        ended: Option<(TaskStatus, Option<String>, u64)>,
        /// Started since the last clean shutdown, and not ended.
        running: bool,
        crashes: u32,
        untraced: u32,
    }
    // The tasks named by panics since the last clean shutdown, and the last message.
    let mut panicked: Option<(std::collections::HashSet<String>, String)> = None;
    let mut order: Vec<String> = Vec::new();
    let mut tasks: HashMap<String, State> = HashMap::new();
    for record in records {
        match record {
            Record::Queued {
                id,
                query,
                apis,
                crashes,
                untraced,
            } => {
                if !tasks.contains_key(&id) {
                    order.push(id.clone());
                }
                let query = Query {
                    id: id.clone(),
                    text: query,
                    apis,
                };
                let state = State {
                    query,
                    ended: None,
                    running: false,
                    crashes,
                    untraced,
                };
                tasks.insert(id, state);
            }
            Record::Started { id } => {
                if let Some(task) = tasks.get_mut(&id) {
                    task.running = task.ended.is_none();
                }
            }
            Record::Forgotten { id } => {
                if tasks.get(&id).is_some_and(|t| t.ended.is_some()) {
                    tasks.remove(&id);
                }
            }
            Record::Stopped => {
                tasks.values_mut().for_each(|t| t.running = false);
                panicked = None;
            }
            Record::Panicked {
                tasks: named,
                message,
            } => {
                let (all, last) = panicked.get_or_insert_with(Default::default);
                all.extend(named);
                *last = message;
            }
            Record::Ended {
                id,
                state,
                steps,
                tokens,
                failure,
                answer,
                ended_at,
            } => {
                // An end without its queueing (compacted away) says nothing to serve, and
                // an "end" in a state that is not one (a damaged line) is ignored: the task
                // stays unfinished and runs again.
                if !state.is_terminal() {
                    tracing::warn!(task_id = %id, ?state, "ignoring an end record in a non-final state");
                    continue;
                }
                if let Some(task) = tasks.get_mut(&id) {
                    let event = TaskStatus {
                        task_id: id,
                        state,
                        steps,
                        tokens,
                        failure,
                    };
                    task.ended = Some((event, answer, ended_at));
                    task.running = false;
                }
            }
        }
    }
    let now = now_unix();
    let mut recovered = Recovered::default();
    let mut crashes = HashMap::new();
    let mut running = std::collections::HashSet::new();
    for id in order {
        let Some(mut task) = tasks.remove(&id) else {
            continue;
        };
        if task.running && when == Replay::WhileServing {
            running.insert(id.clone());
        } else if task.running {
            // Still running at the end of the file: the process died under it.
            match &panicked {
                Some((named, message)) => {
                    if named.contains(&id) {
                        task.crashes = task.crashes.saturating_add(1);
                    }
                    recovered.previous_run = Some(CrashCause::Panicked(message.clone()));
                }
                None => {
                    task.untraced = task.untraced.saturating_add(1);
                    recovered.previous_run = Some(CrashCause::NoTrace);
                }
            }
        }
        let failure = if task.crashes >= MAX_CRASHES {
            Some(format!(
                "the coordinator panicked {} times while stepping this task; it is not run again (submit it again to retry)",
                task.crashes
            ))
        } else if task.untraced >= MAX_UNTRACED_CRASHES {
            Some(format!(
                "the coordinator went down without a trace {} times while this task ran; it is not run again (submit it again to retry)",
                task.untraced
            ))
        } else {
            None
        };
        if let (None, Some(failure)) = (&task.ended, failure) {
            tracing::warn!(task_id = %id, panics = task.crashes, untraced = task.untraced, "task failed: {failure}");
            let failed = TaskStatus {
                task_id: id.clone(),
                state: TaskState::Failed,
                steps: 0,
                tokens: 0,
                failure,
            };
            task.ended = Some((failed, None, now));
            recovered.failed_for_crashes += 1;
        }
        match task.ended {
            None => {
                crashes.insert(id, (task.crashes, task.untraced));
                recovered.unfinished.push(task.query);
            }
            Some((event, answer, ended_at)) => {
                let age = Duration::from_secs(now.saturating_sub(ended_at));
                if age < retention {
                    recovered.ended.push(EndedTask {
                        query: task.query,
                        status: event,
                        answer,
                        age,
                    });
                }
            }
        }
    }
    Live {
        recovered,
        crashes,
        running,
    }
}

#[cfg(test)]
mod tests {
    use umi_core::tool::ApiSpec;

    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn query(id: &str) -> Query {
        Query {
            id: id.into(),
            text: format!("question {id}"),
            apis: vec![ApiSpec {
                category_name: "Data".into(),
                tool_name: "Numbers — ünïcode".into(),
                api_name: "get_fact".into(),
                api_description: Some("A fact about a number.".into()),
                required_parameters: vec![],
                optional_parameters: vec![],
                method: Some("GET".into()),
                shown_description: None,
            }],
        }
    }

    fn answered(id: &str) -> TaskStatus {
        TaskStatus {
            task_id: id.into(),
            state: TaskState::Answered,
            steps: 3,
            tokens: 900,
            failure: String::new(),
        }
    }

    #[test]
    fn queued_tasks_come_back_unfinished_and_ended_ones_with_their_answers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.jsonl");
        {
            let (journal, recovered) = TaskJournal::open(&path, HOUR).unwrap();
            assert!(recovered.unfinished.is_empty() && recovered.ended.is_empty());
            journal
                .queued(&[&query("a"), &query("b"), &query("c")])
                .unwrap();
            journal
                .ended(&answered("b"), Some("{\"answer\": 1}".into()))
                .unwrap();
        }
        let (_, recovered) = TaskJournal::open(&path, HOUR).unwrap();
        let unfinished: Vec<&str> = recovered.unfinished.iter().map(|q| q.id.as_str()).collect();
        assert_eq!(unfinished, ["a", "c"], "queue order is kept");
        assert_eq!(recovered.unfinished[0].apis, query("a").apis);
        assert_eq!(recovered.unfinished[0].text, "question a");
        let [b] = &recovered.ended[..] else {
            panic!("{:?}", recovered.ended)
        };
        assert_eq!(b.status, answered("b"));
        assert_eq!(b.answer.as_deref(), Some("{\"answer\": 1}"));
        assert_eq!(b.query.id, "b");
    }

    #[test]
    fn a_journal_open_elsewhere_is_refused_until_it_is_closed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.jsonl");
        let (first, _) = TaskJournal::open(&path, HOUR).unwrap();
        first.queued(&[&query("a")]).unwrap();
        let Err(err) = TaskJournal::open(&path, HOUR) else {
            panic!("two coordinators opened one journal")
        };
        assert!(matches!(err, JournalError::Locked { .. }), "{err}");
        let message = err.to_string();
        assert!(message.contains("tasks.jsonl") && message.contains("another coordinator"));
        // The refused open changed nothing: the first one's task is still there.
        drop(first);
        let (_, recovered) = TaskJournal::open(&path, HOUR).unwrap();
        assert_eq!(recovered.unfinished.len(), 1);
    }

    /// Opens the journal at `path` as a coordinator would, starts `running` tasks, and
    /// stops cleanly or not; returns what the next open recovers.
    fn lifetime(path: &Path, running: &[&str], clean: bool) -> Recovered {
        lifetime_ending(path, running, if clean { End::Clean } else { End::Killed })
    }

    /// How a run ends.
    enum End<'a> {
        Clean,
        /// SIGKILL: no trace.
        Killed,
        /// A panic naming these tasks took the process down.
        Panicked(&'a [&'a str]),
    }

    fn lifetime_ending(path: &Path, running: &[&str], end: End) -> Recovered {
        let (journal, _) = TaskJournal::open(path, HOUR).unwrap();
        for id in running {
            journal.started(id).unwrap();
        }
        match end {
            End::Clean => journal.stopped().unwrap(),
            End::Killed => {}
            End::Panicked(named) => append_panic(
                path,
                named.iter().map(|s| s.to_string()).collect(),
                "panicked at src/x.rs:1:1:\nboom",
            )
            .unwrap(),
        }
        drop(journal);
        TaskJournal::open(path, HOUR).unwrap().1
    }

    #[test]
    fn a_task_named_in_three_fatal_panics_fails_and_a_bystander_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.jsonl");
        let (journal, _) = TaskJournal::open(&path, HOUR).unwrap();
        journal
            .queued(&[&query("poison"), &query("bystander"), &query("queued")])
            .unwrap();
        drop(journal);
        let running = ["poison", "bystander"];
        for crash in 1..MAX_CRASHES {
            let recovered = lifetime_ending(&path, &running, End::Panicked(&["poison"]));
            assert_eq!(recovered.unfinished.len(), 3, "after crash {crash}");
            assert_eq!(recovered.failed_for_crashes, 0);
            assert!(matches!(
                recovered.previous_run,
                Some(CrashCause::Panicked(ref m)) if m.contains("boom")
            ));
        }
        let recovered = lifetime_ending(&path, &running, End::Panicked(&["poison"]));
        let ids: Vec<&str> = recovered.unfinished.iter().map(|q| q.id.as_str()).collect();
        assert_eq!(
            ids,
            ["bystander", "queued"],
            "only the task the panics named is blamed"
        );
        assert_eq!(recovered.failed_for_crashes, 1);
        let [poison] = &recovered.ended[..] else {
            panic!("{:?}", recovered.ended)
        };
        assert_eq!(poison.status.state, TaskState::Failed);
        assert!(
            poison.status.failure.contains("panicked 3 times"),
            "{}",
            poison.status.failure
        );
        // Kept as failed across the next restart, and a resubmission starts the count over.
        let (journal, again) = TaskJournal::open(&path, HOUR).unwrap();
        assert_eq!(again.ended.len(), 1);
        assert_eq!(again.failed_for_crashes, 0, "reported once");
        journal.queued(&[&query("poison")]).unwrap();
        drop(journal);
        let recovered = lifetime_ending(&path, &["poison"], End::Panicked(&["poison"]));
        assert_eq!(recovered.unfinished.len(), 3);
    }

    /// An operator's SIGKILLs blame no task; only a task running through many crashes
    /// without a trace (one that kills the process each time) is failed.
    #[test]
    fn untraced_crashes_fail_a_task_only_at_the_larger_bound() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.jsonl");
        let (journal, _) = TaskJournal::open(&path, HOUR).unwrap();
        journal.queued(&[&query("a"), &query("queued")]).unwrap();
        drop(journal);
        for crash in 1..MAX_UNTRACED_CRASHES {
            let recovered = lifetime(&path, &["a"], false);
            assert_eq!(recovered.unfinished.len(), 2, "after crash {crash}");
            assert_eq!(recovered.previous_run, Some(CrashCause::NoTrace));
        }
        let recovered = lifetime(&path, &["a"], false);
        assert_eq!(recovered.failed_for_crashes, 1);
        let [a] = &recovered.ended[..] else {
            panic!("{:?}", recovered.ended)
        };
        assert!(
            a.status.failure.contains("without a trace 10 times"),
            "{}",
            a.status.failure
        );
    }

    /// A journal written before crash causes were recorded (no `untraced` field) reads.
    #[test]
    fn journals_without_untraced_counts_still_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.jsonl");
        std::fs::write(
            &path,
            "{\"record\":\"queued\",\"id\":\"old\",\"query\":\"q\",\"apis\":[],\"crashes\":2}\n",
        )
        .unwrap();
        let (_, recovered) = TaskJournal::open(&path, HOUR).unwrap();
        assert_eq!(recovered.unfinished.len(), 1);
    }

    /// The hook names the task being stepped on the panicking thread, and only that one.
    #[test]
    fn the_panic_hook_records_the_tasks_being_stepped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.jsonl");
        let (journal, _) = TaskJournal::open(&path, HOUR).unwrap();
        record_panics(path.clone());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let stepped = Stepping::new("stepped", async {
            panic!("a bug while stepping");
        });
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            runtime.block_on(stepped);
        }));
        assert!(caught.is_err());
        // Outside any task now: nothing is being stepped.
        assert!(stepping_here().is_empty());
        drop(journal);
        let records = read_records(&path).unwrap();
        let named: Vec<&Vec<String>> = records
            .iter()
            .filter_map(|r| match r {
                Record::Panicked { tasks, message } if message.contains("a bug while stepping") => {
                    Some(tasks)
                }
                _ => None,
            })
            .collect();
        assert_eq!(named, [&vec!["stepped".to_string()]]);
    }

    #[test]
    fn clean_shutdowns_and_ended_tasks_count_no_crash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.jsonl");
        let (journal, _) = TaskJournal::open(&path, HOUR).unwrap();
        journal.queued(&[&query("a"), &query("b")]).unwrap();
        drop(journal);
        for _ in 0..MAX_CRASHES + 1 {
            let recovered = lifetime(&path, &["a"], true);
            assert_eq!(recovered.unfinished.len(), 2);
        }
        // A task that ended before a crash is not counted, whatever crashed.
        let (journal, _) = TaskJournal::open(&path, HOUR).unwrap();
        journal.started("b").unwrap();
        journal.ended(&answered("b"), None).unwrap();
        drop(journal);
        let recovered = TaskJournal::open(&path, HOUR).unwrap().1;
        assert_eq!(recovered.failed_for_crashes, 0);
        let ids: Vec<&str> = recovered.unfinished.iter().map(|q| q.id.as_str()).collect();
        assert_eq!(ids, ["a"]);
        assert_eq!(recovered.ended[0].status, answered("b"));
    }

    #[test]
    fn a_task_queued_again_after_it_ended_is_unfinished() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.jsonl");
        {
            let (journal, _) = TaskJournal::open(&path, HOUR).unwrap();
            journal.queued(&[&query("a")]).unwrap();
            let mut cancelled = answered("a");
            cancelled.state = TaskState::Cancelled;
            journal.ended(&cancelled, None).unwrap();
            journal.queued(&[&query("a")]).unwrap();
        }
        let (_, recovered) = TaskJournal::open(&path, HOUR).unwrap();
        assert_eq!(recovered.unfinished.len(), 1);
        assert!(recovered.ended.is_empty());
    }

    #[test]
    fn opening_compacts_and_drops_tasks_past_their_retention() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.jsonl");
        let old = Record::Ended {
            id: "old".into(),
            state: TaskState::Answered,
            steps: 1,
            tokens: 1,
            failure: String::new(),
            answer: Some("{}".into()),
            ended_at: now_unix() - 7200,
        };
        let mut text = Vec::new();
        for r in [queued(&query("old")), old, queued(&query("new"))] {
            write_record(&mut text, &r).unwrap();
        }
        // The same task queued twice before it ended: one record after compaction.
        write_record(&mut text, &queued(&query("new"))).unwrap();
        std::fs::write(&path, text).unwrap();

        let (_, recovered) = TaskJournal::open(&path, HOUR).unwrap();
        assert!(recovered.ended.is_empty(), "a task ended 2 h ago was kept");
        assert_eq!(recovered.unfinished.len(), 1);
        let lines = std::fs::read_to_string(&path).unwrap();
        assert_eq!(lines.lines().count(), 1, "{lines}");
        assert!(lines.contains("\"new\""));
    }

    #[test]
    fn states_are_journaled_by_name_and_old_numbered_journals_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.jsonl");
        {
            let (journal, _) = TaskJournal::open(&path, HOUR).unwrap();
            journal.queued(&[&query("a")]).unwrap();
            journal.ended(&answered("a"), Some("{}".into())).unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(r#""state":"answered""#), "{text}");

        // A journal of an earlier version: the state as its protobuf number (5 = exhausted).
        let old = text.replace(r#""state":"answered""#, r#""state":5"#);
        std::fs::write(&path, old).unwrap();
        let (journal, recovered) = TaskJournal::open(&path, HOUR).unwrap();
        assert_eq!(recovered.ended[0].status.state, TaskState::Exhausted);
        let compacted = std::fs::read_to_string(&path).unwrap();
        assert!(compacted.contains(r#""state":"exhausted""#), "{compacted}");
        drop(journal);

        // An end record in a state that is no end (a damaged line): the task reruns.
        let damaged = compacted.replace(r#""state":"exhausted""#, r#""state":"running""#);
        std::fs::write(&path, damaged).unwrap();
        let (_, recovered) = TaskJournal::open(&path, HOUR).unwrap();
        assert!(recovered.ended.is_empty());
        assert_eq!(recovered.unfinished.len(), 1);
    }

    #[test]
    fn compacting_while_tasks_are_appended_loses_none_of_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.jsonl");
        let (journal, _) = TaskJournal::open(&path, HOUR).unwrap();
        let journal = journal.with_compaction_floor(0);
        // Dead records for the compactions to drop: a task ended and then forgotten.
        journal.queued(&[&query("gone")]).unwrap();
        journal.ended(&answered("gone"), Some("{}".into())).unwrap();
        journal.forgotten(&["gone".to_string()]).unwrap();
        std::thread::scope(|s| {
            s.spawn(|| {
                for i in 0..200 {
                    journal.queued(&[&query(&format!("t{i}"))]).unwrap();
                    journal.started(&format!("t{i}")).unwrap();
                }
            });
            s.spawn(|| {
                for _ in 0..50 {
                    journal.compact().unwrap();
                }
            });
        });
        journal.compact().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains("\"gone\""),
            "a forgotten task was kept: {text}"
        );
        drop(journal);
        let (_, recovered) = TaskJournal::open(&path, HOUR).unwrap();
        let ids: Vec<String> = recovered.unfinished.iter().map(|q| q.id.clone()).collect();
        let want: Vec<String> = (0..200).map(|i| format!("t{i}")).collect();
        assert_eq!(ids, want);
        assert!(recovered.ended.is_empty());
        // Running while compacted, then a crash without a trace: one untraced crash
        // each, not one per compaction.
        let compacted = std::fs::read_to_string(&path).unwrap();
        assert!(compacted.contains(r#""untraced":1"#), "{compacted}");
        assert!(!compacted.contains(r#""untraced":2"#), "{compacted}");
    }

    #[test]
    fn a_torn_last_line_is_dropped_but_a_bad_line_inside_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.jsonl");
        let mut text = Vec::new();
        write_record(&mut text, &queued(&query("a"))).unwrap();
        let whole = text.clone();
        // Torn inside a two-byte character: not even valid UTF-8.
        text.extend_from_slice(b"{\"record\":\"queued\",\"id\":\"b\",\"query\":\"\xc3");
        std::fs::write(&path, &text).unwrap();
        let (_, recovered) = TaskJournal::open(&path, HOUR).unwrap();
        assert_eq!(recovered.unfinished.len(), 1);

        let mut text = b"not json\n".to_vec();
        text.extend_from_slice(&whole);
        std::fs::write(&path, &text).unwrap();
        let err = TaskJournal::open(&path, HOUR).err().unwrap().to_string();
        assert!(err.contains("line 1"), "{err}");
        assert!(err.contains(&path.display().to_string()), "{err}");
    }
}
