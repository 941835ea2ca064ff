//! What a task did, call by call: one line of a run's `trace.jsonl` per finished task
//! (its outcome, and each role and tool call with its time, tokens and source), written by
//! `umi run` beside the answer files and read by `umi report`. The answer files keep the
//! reference's format; everything umi measures about a task goes here.

use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::agent::RoleKind;
use crate::dfs::Outcome;
use crate::env::{ReplySource, Status};

/// The file name of a run's trace, in its answer folder.
pub const TRACE_FILE: &str = "trace.jsonl";

/// One line of `trace.jsonl`: how one task ended. A task run again (a failed one is
/// retried) gets a later line; the last line of an id is the one that counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceLine {
    pub id: String,
    /// The search's method (`DFS_woFilter_w2`, `CoT@1`): the answer file's suffix.
    pub method: String,
    pub outcome: Outcome,
    /// Why it failed (a role or tool unreachable, cancelled); the outcome is then the
    /// search's state when it stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    pub steps: usize,
    pub tokens: usize,
    /// The calls, where they were seen (not for tasks a coordinator solved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calls: Option<TaskTrace>,
}

/// A task's calls, timed from its start.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskTrace {
    /// When the task started, seconds since the Unix epoch.
    pub started: f64,
    /// Its wall time.
    pub seconds: f64,
    pub role_calls: Vec<RoleCall>,
    pub tool_calls: Vec<ToolCall>,
}

/// One role call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoleCall {
    pub role: String,
    /// When it started, seconds after the task's start.
    pub at: f64,
    pub seconds: f64,
    pub prompt_tokens: usize,
    /// Prompt tokens whose keys and values came from the prefix cache (0 where the
    /// source does not say).
    pub cached_tokens: usize,
    pub generated_tokens: usize,
    /// False when the call failed (its error ended the task).
    pub ok: bool,
}

/// One call of a task's API (not `Finish`, which is answered locally).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub function: String,
    pub source: ReplySource,
    /// ToolBench's status code's name (`env::status::name`).
    pub status: String,
    pub at: f64,
    pub seconds: f64,
}

/// Collects a task's calls while it runs; shared by its roles and its tool environment.
pub struct Recorder {
    start: Instant,
    started: f64,
    calls: Mutex<(Vec<RoleCall>, Vec<ToolCall>)>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    pub fn new() -> Self {
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        Recorder {
            start: Instant::now(),
            started,
            calls: Mutex::new((Vec::new(), Vec::new())),
        }
    }

    /// Seconds since the task started.
    pub fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    pub fn role_call(&self, role: RoleKind, at: f64, outcome: Option<&crate::agent::Generated>) {
        let call = RoleCall {
            role: role.as_str().to_string(),
            at,
            seconds: self.now() - at,
            prompt_tokens: outcome.map_or(0, |g| g.prompt_tokens),
            cached_tokens: outcome.map_or(0, |g| g.cached_tokens),
            generated_tokens: outcome.map_or(0, |g| g.generated_tokens),
            ok: outcome.is_some(),
        };
        self.lock().0.push(call);
    }

    pub fn tool_call(&self, function: &str, source: ReplySource, status: Status, at: f64) {
        let call = ToolCall {
            function: function.to_string(),
            source,
            status: crate::env::status::name(status).to_string(),
            at,
            seconds: self.now() - at,
        };
        self.lock().1.push(call);
    }

    /// The calls so far, and the time since the start.
    pub fn finish(&self) -> TaskTrace {
        let (role_calls, tool_calls) = self.lock().clone();
        TaskTrace {
            started: self.started,
            seconds: self.now(),
            role_calls,
            tool_calls,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Vec<RoleCall>, Vec<ToolCall>)> {
        // A panic while pushing leaves the vectors whole: keep using them.
        self.calls.lock().unwrap_or_else(|e| e.into_inner())
    }
}
