//! The inference thread's loop, the one both engines run: continuous batching with
//! mixed steps, as vLLM's chunked prefill and TGI do. Each step admits waiting requests
//! (up to `max_batch`), then runs the next prompt chunk of the oldest sequence still
//! prefilling together with one token of every decoding sequence, and retires the ones
//! that finished: a request never waits for another to end, and decoding sequences
//! never wait for a whole prompt (only for a chunk).
//!
//! Admission, batching, cancellation, per-request tracing, metrics and the delivery of
//! results live here once; a `StepBackend` supplies what differs: how a sequence starts
//! and a step runs (the model's forward pass, or the simulated engine's wait), how the
//! next token is taken, and what a finished sequence leaves in its prefix cache.

use std::collections::VecDeque;

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

    /// Runs one iteration of the loop (its admissions and its step). The model engine
    /// runs it inside rayon's pool; the default runs it on the calling thread.
    fn run_step(&mut self, step: impl FnOnce(&mut Self) + Send)
    where
        Self: Sized,
    {
        step(self)
    }

    /// Admits `request`: checks it and finds its cached prefix, running nothing yet.
    fn start(&mut self, request: &Self::Request) -> Result<Self::Seq>;

    /// The sequence's prompt length in tokens.
    fn prompt_tokens(seq: &Self::Seq) -> usize;

    /// One step: the next chunk of `prefill`'s prompt, if given, and `tokens[i]` fed to
    /// `decode[i]`. An error fails the whole step; otherwise the prefill's logits once
    /// its last chunk ran (`None` while chunks remain) and one result per decode row, in
    /// order.
    fn step(
        &mut self,
        prefill: Option<&mut Self::Seq>,
        decode: &mut [&mut Self::Seq],
        tokens: &[u32],
    ) -> Result<Stepped<Self::Logits>>;

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

/// What one step gives back (`StepBackend::step`).
pub(crate) struct Stepped<L> {
    /// The prefilling sequence's first-token logits, once its prompt is done.
    pub prefill: Option<L>,
    /// One per decode row.
    pub decode: Vec<Result<L>>,
}

/// The loop; returns once every submitting handle is gone and the last running sequence
/// has finished.
pub(crate) fn run<B: StepBackend>(
    backend: &mut B,
    max_batch: usize,
    queue: &mut Queue<Job<B::Request>>,
) {
    // Decoding sequences, and admitted ones whose prompts still run (oldest first: the
    // head runs a chunk each step).
    let mut running: Vec<Running<B>> = Vec::new();
    let mut prefilling: VecDeque<Running<B>> = VecDeque::new();
    loop {
        let Some(arrived) = queue.admit(running.len() + prefilling.len(), max_batch) else {
            return;
        };
        let active = running.len() + prefilling.len() + arrived.len();
        crate::metrics::queue(active, queue.len());
        backend.run_step(|backend| {
            for job in arrived {
                prefilling.extend(Running::start(backend, job));
            }
            step(backend, &mut prefilling, &mut running);
        });
        crate::metrics::queue(running.len() + prefilling.len(), queue.len());
    }
}

/// One step: a chunk of the oldest prefilling sequence beside one token of every
/// decoding one. Sequences whose callers went away end first; a sequence whose prompt
/// is done takes its first token and decodes from the next step.
fn step<B: StepBackend>(
    backend: &mut B,
    prefilling: &mut VecDeque<Running<B>>,
    running: &mut Vec<Running<B>>,
) {
    let mut head = None;
    while let Some(r) = prefilling.pop_front() {
        if r.job.is_abandoned() {
            r.cancel_prefill();
        } else {
            head = Some(r);
            break;
        }
    }
    let (mut live, gone): (Vec<_>, Vec<_>) = std::mem::take(running)
        .into_iter()
        .partition(|r| !r.job.is_abandoned());
    for r in gone {
        r.finish(FinishReason::Cancelled, backend);
    }
    if head.is_none() && live.is_empty() {
        return;
    }
    let batch = live.len();
    if batch > 0 {
        crate::metrics::decode_step(batch);
        if head.is_some() {
            crate::metrics::mixed_step();
        }
    }
    let tokens: Vec<u32> = live.iter().map(|r| r.next).collect();
    let stepped = {
        let mut seqs: Vec<&mut B::Seq> = live.iter_mut().map(|r| &mut r.seq).collect();
        backend.step(head.as_mut().map(|r| &mut r.seq), &mut seqs, &tokens)
    };
    let Stepped { prefill, decode } = match stepped {
        Ok(stepped) => stepped,
        Err(e) => {
            tracing::error!(error = ?e, batch, prefill = head.is_some(), "step failed");
            let message = e.to_string();
            for r in live.into_iter().chain(head) {
                r.fail(EngineError::Step(message.clone()));
            }
            return;
        }
    };
    for (mut r, row) in live.into_iter().zip(decode) {
        r.peak_batch = r.peak_batch.max(batch);
        match row {
            Ok(logits) => running.extend(r.advance(&logits, backend)),
            Err(e) => r.fail(e),
        }
    }
    if let Some(r) = head {
        match prefill {
            Some(logits) => {
                crate::metrics::first_token(r.job.arrived.elapsed());
                running.extend(r.advance(&logits, backend));
            }
            None => prefilling.push_front(r),
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
    /// Admits `job` (its checks and cached prefix; nothing runs yet); `None` if it ended
    /// already (refused, or nobody waiting for it).
    fn start(backend: &mut B, job: Job<B::Request>) -> Option<Self> {
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
        let started = span.in_scope(|| backend.start(&job.request));
        match started {
            Ok(seq) => {
                span.record("prompt_tokens", B::prompt_tokens(&seq));
                Some(Running {
                    seq,
                    job,
                    span,
                    next: 0,
                    peak_batch: 1,
                })
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

    /// Ends a sequence whose caller went away before its prompt was done.
    fn cancel_prefill(self) {
        self.span.record("finish_reason", "cancelled");
        crate::metrics::cancelled_in_prefill();
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
