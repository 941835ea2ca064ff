//! Whether an engine's inference thread still works: it beats a heartbeat each time its
//! loop takes work (each step), says when it waits idle for work, and marks when it has
//! exited (also by a panic). A worker's health turns NOT_SERVING when the thread has
//! exited, or has not beaten for longer than a bound while requests wait for it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What the inference thread is doing, as seen from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Working (beating), or idle without work.
    Alive,
    /// Requests wait, and the loop has not beaten for `silent` (a step that never ends).
    Stuck { silent: Duration },
    /// The thread has ended (it panicked, or could not start).
    Exited,
}

/// The inference thread's heartbeat, shared with the engine's handles.
#[derive(Debug)]
pub(crate) struct Heartbeat {
    started: Instant,
    /// Milliseconds after `started` of the last beat.
    last_beat_ms: AtomicU64,
    /// Blocked waiting for work (nothing runs, nothing waits).
    idle: AtomicBool,
    exited: AtomicBool,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat {
            started: Instant::now(),
            last_beat_ms: AtomicU64::new(0),
            idle: AtomicBool::new(false),
            exited: AtomicBool::new(false),
        }
    }
}

impl Heartbeat {
    /// The loop goes on (took work, or finished a step).
    pub(crate) fn beat(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        self.last_beat_ms.store(now, Ordering::Release);
        self.idle.store(false, Ordering::Release);
    }

    /// The loop waits for work, nothing running.
    pub(crate) fn idle(&self) {
        self.beat();
        self.idle.store(true, Ordering::Release);
    }

    /// The thread has ended.
    pub(crate) fn exited(&self) {
        self.exited.store(true, Ordering::Release);
    }

    /// The thread's state, `waiting` requests queued for it: stuck once it has been
    /// silent for longer than `stall_after` while some wait.
    pub(crate) fn liveness(&self, waiting: usize, stall_after: Duration) -> Liveness {
        if self.exited.load(Ordering::Acquire) {
            return Liveness::Exited;
        }
        if self.idle.load(Ordering::Acquire) || waiting == 0 {
            return Liveness::Alive;
        }
        let last = Duration::from_millis(self.last_beat_ms.load(Ordering::Acquire));
        let silent = self.started.elapsed().saturating_sub(last);
        if silent > stall_after {
            Liveness::Stuck { silent }
        } else {
            Liveness::Alive
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silent_with_work_waiting_is_stuck_idle_or_without_work_is_not() {
        let heart = Heartbeat::default();
        heart.beat();
        std::thread::sleep(Duration::from_millis(30));
        let bound = Duration::from_millis(10);
        assert!(matches!(heart.liveness(1, bound), Liveness::Stuck { .. }));
        assert_eq!(heart.liveness(0, bound), Liveness::Alive);
        assert_eq!(heart.liveness(1, Duration::from_secs(60)), Liveness::Alive);
        heart.idle();
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(heart.liveness(1, bound), Liveness::Alive);
        heart.beat();
        assert_eq!(heart.liveness(1, bound), Liveness::Alive);
        heart.exited();
        assert_eq!(heart.liveness(0, bound), Liveness::Exited);
    }
}
