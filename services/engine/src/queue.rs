//! Admission control, shared by the model engine and the simulated one: jobs wait in a
//! channel for the inference thread, and past `max_queue` waiting jobs a new one is
//! refused at once (`EngineError::Overloaded`) instead of queueing without bound. A
//! request is submitted here (`Submit::generate`, `Submit::stream`) whichever engine
//! runs it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use umi_core::log_limit::{LogLimiter, REFUSAL_LOG_INTERVAL};

use crate::engine::StreamEvent;
use crate::error::{EngineError, Result};
use crate::generate::GenerateOutput;
use crate::liveness::{Heartbeat, Liveness};

/// A queued request (`R`: what the engine runs) and where its results go.
pub(crate) struct Job<R> {
    pub(crate) request: R,
    pub(crate) span: tracing::Span,
    /// When it was queued (queue wait and time to first token count from here).
    pub(crate) arrived: Instant,
    /// Streaming requests get their text here; `None` for plain requests.
    pub(crate) events: Option<mpsc::UnboundedSender<StreamEvent>>,
    pub(crate) done: oneshot::Sender<Result<GenerateOutput>>,
}

impl<R> Job<R> {
    /// A job queued now, in the caller's span.
    fn new(
        request: R,
        events: Option<mpsc::UnboundedSender<StreamEvent>>,
        done: oneshot::Sender<Result<GenerateOutput>>,
    ) -> Self {
        Job {
            request,
            span: tracing::Span::current(),
            arrived: Instant::now(),
            events,
            done,
        }
    }

    /// The caller went away (timed out, retried elsewhere): its work can stop.
    pub(crate) fn is_abandoned(&self) -> bool {
        self.done.is_closed() || self.events.as_ref().is_some_and(|e| e.is_closed())
    }

    /// Hands a piece of text to a streaming caller; says whether anyone still listens.
    pub(crate) fn emit(&self, token_id: u32, text: &str) -> bool {
        match &self.events {
            Some(tx) => tx
                .send(StreamEvent::Text {
                    token_id,
                    text: text.to_string(),
                })
                .is_ok(),
            None => !self.done.is_closed(),
        }
    }
}

/// One ordered stream of a streaming job's text events and then its final result.
fn merge_stream(
    mut events: mpsc::UnboundedReceiver<StreamEvent>,
    done: oneshot::Receiver<Result<GenerateOutput>>,
) -> mpsc::UnboundedReceiver<Result<StreamEvent>> {
    let (out_tx, out_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            if out_tx.send(Ok(event)).is_err() {
                return;
            }
        }
        let last = match done.await {
            Ok(Ok(output)) => Ok(StreamEvent::Done(output)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(EngineError::Shutdown),
        };
        let _ = out_tx.send(last);
    });
    out_rx
}

/// Overloaded refusals are logged at most once per interval; the refused-requests
/// counter counts each.
static OVERLOADED_LOG: LogLimiter = LogLimiter::new(REFUSAL_LOG_INTERVAL);

/// The submitting end (cheap to clone; the inference thread stops once every one is gone).
pub(crate) struct Submit<J> {
    jobs: mpsc::UnboundedSender<J>,
    waiting: Arc<AtomicUsize>,
    max_queue: usize,
    heartbeat: Arc<Heartbeat>,
}

impl<J> Clone for Submit<J> {
    fn clone(&self) -> Self {
        Submit {
            jobs: self.jobs.clone(),
            waiting: self.waiting.clone(),
            max_queue: self.max_queue,
            heartbeat: self.heartbeat.clone(),
        }
    }
}

/// The inference thread's end, counting jobs out as it takes them and beating the
/// thread's heartbeat; dropped when the thread ends (also by a panic), it marks it
/// exited.
pub(crate) struct Queue<J> {
    jobs: mpsc::UnboundedReceiver<J>,
    waiting: Arc<AtomicUsize>,
    heartbeat: Arc<Heartbeat>,
}

impl<J> Drop for Queue<J> {
    fn drop(&mut self) {
        self.heartbeat.exited();
    }
}

/// A bounded job queue: at most `max_queue` jobs wait at once.
pub(crate) fn bounded<J>(max_queue: usize) -> (Submit<J>, Queue<J>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let waiting = Arc::new(AtomicUsize::new(0));
    let heartbeat = Arc::new(Heartbeat::default());
    (
        Submit {
            jobs: tx,
            waiting: waiting.clone(),
            max_queue,
            heartbeat: heartbeat.clone(),
        },
        Queue {
            jobs: rx,
            waiting,
            heartbeat,
        },
    )
}

impl<J> Submit<J> {
    /// Hands a job to the inference thread, unless `max_queue` jobs already wait.
    pub(crate) fn send(&self, job: J) -> Result<()> {
        let before = self.waiting.fetch_add(1, Ordering::AcqRel);
        if before >= self.max_queue {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            crate::metrics::refused();
            if let Some(held_back) = OVERLOADED_LOG.admit() {
                tracing::warn!(
                    waiting = before,
                    limit = self.max_queue,
                    held_back,
                    "refused a request: the queue is full (held_back: refusals not logged since the last warning)"
                );
            }
            return Err(EngineError::Overloaded {
                waiting: before,
                limit: self.max_queue,
            });
        }
        self.jobs.send(job).map_err(|_| {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            EngineError::Shutdown
        })
    }
}

impl<J> Submit<J> {
    /// Whether the inference thread still works: see [`Liveness`].
    pub(crate) fn liveness(&self, stall_after: std::time::Duration) -> Liveness {
        self.heartbeat
            .liveness(self.waiting.load(Ordering::Acquire), stall_after)
    }
}

impl<R> Submit<Job<R>> {
    /// Queues `request` and waits for its output.
    pub(crate) async fn generate(&self, request: R) -> Result<GenerateOutput> {
        let (done, rx) = oneshot::channel();
        self.send(Job::new(request, None, done))?;
        rx.await.map_err(|_| EngineError::Shutdown)?
    }

    /// Queues `request`, streaming its text as it is produced; the last event is
    /// `Done`. Dropping the receiver cancels the request.
    pub(crate) fn stream(
        &self,
        request: R,
    ) -> Result<mpsc::UnboundedReceiver<Result<StreamEvent>>> {
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (done, done_rx) = oneshot::channel();
        self.send(Job::new(request, Some(events_tx), done))?;
        Ok(merge_stream(events_rx, done_rx))
    }
}

impl<J> Queue<J> {
    fn taken(&self, job: J) -> J {
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        job
    }

    /// Waits for a job; `None` once every `Submit` is gone.
    pub(crate) fn wait(&mut self) -> Option<J> {
        self.heartbeat.idle();
        let job = self.jobs.blocking_recv()?;
        self.heartbeat.beat();
        Some(self.taken(job))
    }

    pub(crate) fn try_take(&mut self) -> Option<J> {
        let job = self.jobs.try_recv().ok()?;
        Some(self.taken(job))
    }

    /// Jobs waiting now.
    pub(crate) fn len(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    /// Takes what the next step admits: waits for one job when nothing runs, then takes
    /// the waiting ones until `running` + taken reaches `max_batch`. `None` once every
    /// `Submit` is gone and nothing runs.
    pub(crate) fn admit(&mut self, running: usize, max_batch: usize) -> Option<Vec<J>> {
        self.heartbeat.beat();
        let mut arrived = Vec::new();
        if running == 0 {
            arrived.push(self.wait()?);
        }
        while running + arrived.len() < max_batch {
            match self.try_take() {
                Some(job) => arrived.push(job),
                None => break,
            }
        }
        Some(arrived)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_bound_a_job_is_refused_and_taking_one_makes_room() {
        let (submit, mut queue) = bounded::<u32>(2);
        submit.send(1).unwrap();
        submit.send(2).unwrap();
        let err = submit.send(3).unwrap_err();
        assert!(
            matches!(
                err,
                EngineError::Overloaded {
                    waiting: 2,
                    limit: 2
                }
            ),
            "{err}"
        );
        assert_eq!(queue.len(), 2);
        assert_eq!(queue.admit(0, 1), Some(vec![1]));
        submit.send(3).unwrap();
        assert_eq!(queue.admit(1, 8), Some(vec![2, 3]));
        drop(submit);
        assert_eq!(queue.admit(0, 8), None);
    }

    #[test]
    fn a_dropped_queue_marks_the_thread_exited() {
        let (submit, queue) = bounded::<u32>(2);
        let bound = std::time::Duration::from_secs(60);
        assert_eq!(submit.liveness(bound), Liveness::Alive);
        // The inference thread panics: its queue is dropped as it unwinds.
        let thread = std::thread::spawn(move || {
            let _queue = queue;
            panic!("a step failed");
        });
        assert!(thread.join().is_err());
        assert_eq!(submit.liveness(bound), Liveness::Exited);
    }
}
