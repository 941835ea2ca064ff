//! The inference thread's loop, the one both engines run: continuous batching, as vLLM
//! and TGI do. Before each decode step it admits waiting requests (prefilling each) up to
//! `max_batch`, then advances every running sequence by one token in a single step, and
//! retires the ones that finished, so a request never waits for another to end.
//!
//! Admission, batching, cancellation, per-request tracing, metrics and the delivery of
//! results live here once; a `StepBackend` supplies what differs: how a sequence is
//! prefilled and a batch decoded (the model's forward pass, or the simulated engine's
//! wait), how the next token is taken, and what a finished sequence leaves in its prefix
//! cache.

use crate::error::{EngineError, Result};
use crate::generate::{FinishReason, GenerateOutput, Step};
use crate::queue::{Job, Queue};

/// What runs the steps of the scheduling loop: the model engine or the simulated one.
pub(crate) trait StepBackend: Send {
    /// What a queued request carries.
    type Request: Send;
    /// One admitted sequence's state between steps.
    type Seq: Send;
    /// What a step gives each sequence to take its next token from (the model: its
    /// logits; the simulated engine: nothing, its tokens are scripted).
    type Logits;

    /// The model name requests' spans carry.
    fn name(&self) -> &str;

    /// Runs one iteration of the loop (its admissions and its decode step). The model
    /// engine runs it inside rayon's pool; the default runs it on the calling thread.
    fn run_step(&mut self, step: impl FnOnce(&mut Self) + Send)
    where
        Self: Sized,
    {
        step(self)
    }

    /// Prefills `request`: the sequence and what its first token is taken from.
    /// `abandoned` says whether the caller went away (a long prefill may stop early and
    /// return `EngineError::Abandoned`).
    fn prefill(
        &mut self,
        request: &Self::Request,
        abandoned: impl Fn() -> bool,
    ) -> Result<(Self::Seq, Self::Logits)>;

    /// The sequence's prompt length in tokens.
    fn prompt_tokens(seq: &Self::Seq) -> usize;

    /// One decode step: `tokens[i]` fed to `seqs[i]`. An error fails the whole batch;
    /// otherwise one result per sequence, in order.
    fn decode(
        &mut self,
        seqs: &mut [&mut Self::Seq],
        tokens: &[u32],
    ) -> Result<Vec<Result<Self::Logits>>>;

    /// Takes the next token from `logits` and applies the stop conditions; `emit` gets
    /// each new piece of text and returns `false` once nobody listens.
    fn advance(
        &mut self,
        seq: &mut Self::Seq,
        logits: &Self::Logits,
        emit: impl FnMut(u32, &str) -> bool,
    ) -> Result<Step>;

    /// Ends a sequence: its state goes to the prefix cache, text held back goes to
    /// `emit`, and its output comes back (`peak_batch` is the scheduler's to set).
    fn finish(
        &mut self,
        seq: Self::Seq,
        reason: FinishReason,
        emit: impl FnMut(u32, &str) -> bool,
    ) -> GenerateOutput;

    /// Bytes the prefix cache holds now.
    fn cache_bytes(&self) -> usize;
}

/// The loop; returns once every submitting handle is gone and the last running sequence
/// has finished.
pub(crate) fn run<B: StepBackend>(
    backend: &mut B,
    max_batch: usize,
    queue: &mut Queue<Job<B::Request>>,
) {
    let mut running: Vec<Running<B>> = Vec::new();
    loop {
        let Some(arrived) = queue.admit(running.len(), max_batch) else {
            return;
        };
        crate::metrics::queue(running.len() + arrived.len(), queue.len());
        backend.run_step(|backend| {
            // A newcomer's whole prefill runs before the next decode step, holding the
            // running sequences back by its length (its chunks are not interleaved with
            // decode steps yet).
            for job in arrived {
                running.extend(Running::admit(backend, job));
            }
            decode_step(backend, &mut running);
        });
        crate::metrics::queue(running.len(), queue.len());
    }
}

/// Advances every running sequence by one token, retiring those that finish.
fn decode_step<B: StepBackend>(backend: &mut B, running: &mut Vec<Running<B>>) {
    let (mut live, gone): (Vec<_>, Vec<_>) = std::mem::take(running)
        .into_iter()
        .partition(|r| !r.job.is_abandoned());
    for r in gone {
        r.finish(FinishReason::Cancelled, backend);
    }
    if live.is_empty() {
        return;
    }
    let batch = live.len();
    crate::metrics::decode_step(batch);
    let tokens: Vec<u32> = live.iter().map(|r| r.next).collect();
    let stepped = {
        let mut seqs: Vec<&mut B::Seq> = live.iter_mut().map(|r| &mut r.seq).collect();
        backend.decode(&mut seqs, &tokens)
    };
    let rows = match stepped {
        Ok(rows) => rows,
        Err(e) => {
            tracing::error!(error = ?e, batch, "decode step failed");
            let message = e.to_string();
            for r in live {
                r.fail(EngineError::Step(message.clone()));
            }
            return;
        }
    };
    for (mut r, row) in live.into_iter().zip(rows) {
        r.peak_batch = r.peak_batch.max(batch);
        match row {
            Ok(logits) => running.extend(r.advance(&logits, backend)),
            Err(e) => r.fail(e),
        }
    }
}

/// A sequence being decoded, with the request it answers.
struct Running<B: StepBackend> {
    seq: B::Seq,
    job: Job<B::Request>,
    span: tracing::Span,
    /// The token the next step feeds.
    next: u32,
    /// The most sequences it was decoded with at once.
    peak_batch: usize,
}

impl<B: StepBackend> Running<B> {
    /// Prefills `job` and takes its first token; `None` if it already ended (an error, a
    /// stop at the first token, or nobody waiting for it).
    fn admit(backend: &mut B, job: Job<B::Request>) -> Option<Self> {
        let span = tracing::info_span!(
            parent: &job.span,
            "generate",
            model = %backend.name(),
            prompt_tokens = tracing::field::Empty,
            cached_tokens = tracing::field::Empty,
            generated_tokens = tracing::field::Empty,
            finish_reason = tracing::field::Empty,
            peak_batch = tracing::field::Empty,
        );
        if job.is_abandoned() {
            return None;
        }
        crate::metrics::queue_wait(job.arrived.elapsed());
        let started = span.in_scope(|| backend.prefill(&job.request, || job.is_abandoned()));
        match started {
            Ok((seq, logits)) => {
                span.record("prompt_tokens", B::prompt_tokens(&seq));
                crate::metrics::first_token(job.arrived.elapsed());
                let running = Running {
                    seq,
                    job,
                    span,
                    next: 0,
                    peak_batch: 1,
                };
                running.advance(&logits, backend)
            }
            Err(EngineError::Abandoned) => {
                span.record("finish_reason", "cancelled");
                crate::metrics::cancelled_in_prefill();
                None
            }
            Err(e) => {
                crate::metrics::failed();
                let _enter = span.enter();
                tracing::warn!(error = %e, "generation failed");
                let _ = job.done.send(Err(e));
                None
            }
        }
    }

    /// Takes the next token from this step's logits; `None` once the sequence finished.
    fn advance(mut self, logits: &B::Logits, backend: &mut B) -> Option<Self> {
        let step = {
            let _enter = self.span.enter();
            let job = &self.job;
            backend.advance(&mut self.seq, logits, |id, text| job.emit(id, text))
        };
        match step {
            Ok(Step::Feed(token)) => {
                self.next = token;
                Some(self)
            }
            Ok(Step::Done(reason)) => {
                self.finish(reason, backend);
                None
            }
            Err(e) => {
                self.fail(e);
                None
            }
        }
    }

    fn finish(self, reason: FinishReason, backend: &mut B) {
        let Running {
            seq,
            job,
            span,
            peak_batch,
            ..
        } = self;
        let _enter = span.enter();
        let mut out = backend.finish(seq, reason, |id, text| job.emit(id, text));
        out.peak_batch = peak_batch;
        span.record("cached_tokens", out.cached_tokens);
        span.record("generated_tokens", out.generated_tokens());
        span.record("finish_reason", tracing::field::debug(out.finish_reason));
        span.record("peak_batch", peak_batch);
        crate::metrics::finished(
            out.finish_reason.as_str(),
            out.prompt_tokens,
            out.cached_tokens,
            out.generated_tokens(),
            out.decode_time,
            backend.cache_bytes(),
        );
        tracing::debug!(
            prompt = out.prompt_tokens,
            cached = out.cached_tokens,
            generated = out.generated_tokens(),
            prefill_ms = out.prefill_time.as_millis() as u64,
            decode_ms = out.decode_time.as_millis() as u64,
            peak_batch,
            "request done"
        );
        // The stream's text events end before its final result is sent.
        let Job { events, done, .. } = job;
        drop(events);
        let _ = done.send(Ok(out));
    }

    fn fail(self, e: EngineError) {
        crate::metrics::failed();
        let _enter = self.span.enter();
        tracing::warn!(error = %e, "generation failed");
        let _ = self.job.done.send(Err(e));
    }
}
