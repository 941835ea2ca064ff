//! A task's state and status as the coordinator keeps them (in the table and the
//! journal); the protobuf `TaskState`/`TaskEvent` exist only at the service's edge.

use serde::{Deserialize, Deserializer, Serialize};
use umi_core::dfs::Outcome;
use umi_core::task::Solved;
use umi_core::ErrorClass;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    Queued,
    Running,
    /// Ended with a final answer.
    Answered,
    /// Every branch gave up.
    GaveUp,
    /// The step budget ran out, or every chain dead-ended.
    Exhausted,
    /// A role or tool could not be served; the status's `failure` says which and why.
    Failed,
    Cancelled,
}

impl TaskState {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Queued => "queued",
            TaskState::Running => "running",
            TaskState::Answered => "answered",
            TaskState::GaveUp => "gave_up",
            TaskState::Exhausted => "exhausted",
            TaskState::Failed => "failed",
            TaskState::Cancelled => "cancelled",
        }
    }

    pub fn is_terminal(self) -> bool {
        !matches!(self, TaskState::Queued | TaskState::Running)
    }

    /// Ended without an answer worth keeping: submitting the task again runs it again.
    pub fn is_retryable(self) -> bool {
        matches!(self, TaskState::Failed | TaskState::Cancelled)
    }

    /// The state of a journal written before states were named: the protobuf numbers.
    fn from_proto_number(n: i64) -> Option<TaskState> {
        Some(match n {
            1 => TaskState::Queued,
            2 => TaskState::Running,
            3 => TaskState::Answered,
            4 => TaskState::GaveUp,
            5 => TaskState::Exhausted,
            6 => TaskState::Failed,
            7 => TaskState::Cancelled,
            _ => return None,
        })
    }
}

/// Reads a journaled state: by name (`"answered"`), or by number as journals written
/// before names had it (`Record::Ended`'s `deserialize_with`).
pub fn state_by_name_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<TaskState, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OnDisk {
        Named(TaskState),
        Number(i64),
    }
    match OnDisk::deserialize(d)? {
        OnDisk::Named(state) => Ok(state),
        OnDisk::Number(n) => TaskState::from_proto_number(n)
            .ok_or_else(|| serde::de::Error::custom(format!("{n} is not a task state"))),
    }
}

/// Tasks queued or running now, by state (a gauge).
pub const TASKS_METRIC: &str = "umi_tasks";
/// Tasks that ended, by state.
pub const TASKS_ENDED_METRIC: &str = "umi_tasks_ended_total";

/// A task entered the queue.
pub(crate) fn count_queued() {
    metrics::gauge!(TASKS_METRIC, "state" => "queued").increment(1.0);
}

/// A task went from `from` to `to` (a RUNNING progress update is no transition).
pub(crate) fn count_transition(from: TaskState, to: TaskState) {
    if from == to {
        return;
    }
    if !from.is_terminal() {
        metrics::gauge!(TASKS_METRIC, "state" => from.as_str()).decrement(1.0);
    }
    if to.is_terminal() {
        metrics::counter!(TASKS_ENDED_METRIC, "state" => to.as_str()).increment(1);
    } else {
        metrics::gauge!(TASKS_METRIC, "state" => to.as_str()).increment(1.0);
    }
}

/// Where a task stands: what watchers are told and the journal keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskStatus {
    pub task_id: String,
    pub state: TaskState,
    /// Planner calls so far.
    pub steps: u32,
    pub tokens: u64,
    /// Why it failed or was cancelled; empty otherwise.
    pub failure: String,
}

impl TaskStatus {
    pub fn new(task_id: &str, state: TaskState) -> Self {
        TaskStatus {
            task_id: task_id.to_string(),
            state,
            steps: 0,
            tokens: 0,
            failure: String::new(),
        }
    }

    /// How a solved task ended. A role failure of any class ends the task FAILED with
    /// the error as its reason, which names the role and the class (`planner:
    /// unavailable after 3 attempts: …`); a FAILED task runs again when resubmitted.
    pub fn ended(task_id: &str, solved: &Solved) -> Self {
        let (state, failure) = match (&solved.failure, solved.outcome) {
            (Some(error), _) => match error.class() {
                ErrorClass::Unavailable
                | ErrorClass::DeadlineExceeded
                | ErrorClass::ResourceExhausted
                | ErrorClass::InvalidRequest
                | ErrorClass::Internal => (TaskState::Failed, error.to_string()),
            },
            (None, Outcome::Answered) => (TaskState::Answered, String::new()),
            (None, Outcome::GaveUp) => (TaskState::GaveUp, String::new()),
            (None, Outcome::Exhausted) => (TaskState::Exhausted, String::new()),
        };
        TaskStatus {
            task_id: task_id.to_string(),
            state,
            steps: solved.steps as u32,
            tokens: solved.tokens as u64,
            failure,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_are_written_by_name_and_read_by_name_or_old_number() {
        assert_eq!(
            serde_json::to_string(&TaskState::GaveUp).unwrap(),
            r#""gave_up""#
        );
        let read =
            |text: &str| state_by_name_or_number(&mut serde_json::Deserializer::from_str(text));
        assert_eq!(read(r#""answered""#).unwrap(), TaskState::Answered);
        assert_eq!(read("6").unwrap(), TaskState::Failed);
        assert!(read("0").is_err());
        assert!(read(r#""done""#).is_err());
    }
}
