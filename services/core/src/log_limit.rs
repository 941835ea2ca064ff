//! Warnings at a bounded rate: a server refusing calls (an unauthenticated caller, a
//! full queue, one connection too many) logs the first refusal of an interval and counts
//! the rest into the next one, so a flood of refusals cannot flood the log too. The
//! Prometheus counters beside each refusal still count every one.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often one kind of refusal may be logged.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// One kind of warning, logged at most once per `interval`.
pub struct LogLimiter {
    interval: Duration,
    /// When the last warning was logged, and how many were held back since.
    state: Mutex<(Option<Instant>, u64)>,
}

impl LogLimiter {
    pub const fn new(interval: Duration) -> Self {
        LogLimiter {
            interval,
            state: Mutex::new((None, 0)),
        }
    }

    /// Whether to log this occurrence (`Some(n)`: `n` were held back since the last one
    /// logged) or hold it back (`None`).
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(Instant::now())
    }

    fn admit_at(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (last, held) = &mut *state;
        match last {
            Some(at) if now.saturating_duration_since(*at) < self.interval => {
                *held += 1;
                None
            }
            _ => {
                *last = Some(now);
                Some(std::mem::take(held))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_warning_per_interval_with_the_count_held_back() {
        let limiter = LogLimiter::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(limiter.admit_at(t0), Some(0));
        for i in 1..=5 {
            assert_eq!(limiter.admit_at(t0 + Duration::from_secs(i)), None);
        }
        assert_eq!(limiter.admit_at(t0 + Duration::from_secs(10)), Some(5));
        assert_eq!(limiter.admit_at(t0 + Duration::from_secs(11)), None);
        assert_eq!(limiter.admit_at(t0 + Duration::from_secs(25)), Some(1));
    }
}
