//! What the role client reports to a metrics recorder (Prometheus, when the binary
//! installs one): role-call latency, retries and failures by class.

use std::time::Duration;

use metrics::{counter, histogram};
use umi_core::agent::RoleKind;
use umi_core::ErrorClass;

/// A role call's whole duration (waiting for a replica and retries included).
pub const ROLE_CALL_DURATION: &str = "umi_role_call_duration_seconds";
/// Attempts that failed with a retryable class (another attempt follows unless the
/// call's budget is spent), by role and class.
pub const ROLE_CALL_ATTEMPT_FAILURES: &str = "umi_role_call_attempt_failures_total";
/// Calls that failed for good, by role and class.
pub const ROLE_CALL_FAILURES: &str = "umi_role_call_failures_total";

pub(crate) fn answered(role: RoleKind, took: Duration) {
    histogram!(ROLE_CALL_DURATION, "role" => role.as_str()).record(took.as_secs_f64());
}

pub(crate) fn retried(role: RoleKind, class: ErrorClass) {
    counter!(ROLE_CALL_ATTEMPT_FAILURES, "role" => role.as_str(), "class" => class.label())
        .increment(1);
}

pub(crate) fn failed(role: RoleKind, class: ErrorClass, took: Duration) {
    histogram!(ROLE_CALL_DURATION, "role" => role.as_str()).record(took.as_secs_f64());
    counter!(ROLE_CALL_FAILURES, "role" => role.as_str(), "class" => class.label()).increment(1);
}
