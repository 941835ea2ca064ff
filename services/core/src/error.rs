//! The core's one error type. Every error carries a class from a closed set, decided
//! once where the error arises (an input check, the role client reading a gRPC status,
//! the engine wrapper reading an engine error) and carried unchanged through the agent
//! step, the search and the task, so the coordinator can map it to a task's end without
//! parsing text.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What kind of failure an error is: what a caller may do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// Nobody could serve it now (no live replica, a connection lost, an engine shut
    /// down): another replica or a later try may succeed.
    Unavailable,
    /// It took longer than its deadline.
    DeadlineExceeded,
    /// The server is out of capacity (a full queue, memory): try later or elsewhere.
    ResourceExhausted,
    /// The input is wrong and would be refused anywhere: never retried.
    InvalidRequest,
    /// A bug or an unexpected failure on the serving side.
    Internal,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Unavailable => "unavailable",
            ErrorClass::DeadlineExceeded => "deadline exceeded",
            ErrorClass::ResourceExhausted => "resource exhausted",
            ErrorClass::InvalidRequest => "invalid request",
            ErrorClass::Internal => "internal",
        }
    }

    /// The class as a metric label (its serialized name).
    pub fn label(self) -> &'static str {
        match self {
            ErrorClass::Unavailable => "unavailable",
            ErrorClass::DeadlineExceeded => "deadline_exceeded",
            ErrorClass::ResourceExhausted => "resource_exhausted",
            ErrorClass::InvalidRequest => "invalid_request",
            ErrorClass::Internal => "internal",
        }
    }

    /// Whether another replica (or a later attempt) may not fail the same way. A request
    /// refused as invalid would be refused everywhere.
    pub fn is_retryable(self) -> bool {
        !matches!(self, ErrorClass::InvalidRequest)
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error of the agent core: its class and a message that names what was wrong
/// (the input and the problem, or the role, the class and the attempts).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CoreError {
    class: ErrorClass,
    message: String,
}

impl CoreError {
    pub fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        CoreError {
            class,
            message: message.into(),
        }
    }

    /// Bad input data: `what` names the input, `message` the problem.
    pub fn invalid(what: impl fmt::Display, message: impl fmt::Display) -> Self {
        Self::new(
            ErrorClass::InvalidRequest,
            format!("invalid {what}: {message}"),
        )
    }

    /// Bad input data, with a message that already names the input.
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::new(ErrorClass::InvalidRequest, message)
    }

    /// A role call that failed: `planner: unavailable after 3 attempts: …`.
    pub fn role(
        role: crate::agent::RoleKind,
        class: ErrorClass,
        attempts: usize,
        detail: impl fmt::Display,
    ) -> Self {
        let tries = if attempts > 1 {
            format!(" after {attempts} attempts")
        } else {
            String::new()
        };
        Self::new(
            class,
            format!("{}: {class}{tries}: {detail}", role.as_str()),
        )
    }

    pub fn class(&self) -> ErrorClass {
        self.class
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// The same error, its message prefixed with where it happened.
    pub fn context(self, context: impl fmt::Display) -> Self {
        CoreError {
            class: self.class,
            message: format!("{context}: {}", self.message),
        }
    }
}

pub type Result<T, E = CoreError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::RoleKind;

    #[test]
    fn a_role_error_names_the_role_the_class_and_the_attempts() {
        let e = CoreError::role(
            RoleKind::Planner,
            ErrorClass::Unavailable,
            3,
            "w1: connection refused",
        );
        assert_eq!(
            e.to_string(),
            "planner: unavailable after 3 attempts: w1: connection refused"
        );
        assert_eq!(e.class(), ErrorClass::Unavailable);
        let once = CoreError::role(RoleKind::Caller, ErrorClass::InvalidRequest, 1, "bad");
        assert_eq!(once.to_string(), "caller: invalid request: bad");
        assert!(!once.class().is_retryable());
        assert!(ErrorClass::DeadlineExceeded.is_retryable());
        assert_eq!(
            serde_json::to_string(&ErrorClass::DeadlineExceeded).unwrap(),
            format!("\"{}\"", ErrorClass::DeadlineExceeded.label())
        );
    }
}
