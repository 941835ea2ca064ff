//! The request-level, async face of a model: submit a request, then await its output or
//! stream its text. Requests queue to a dedicated inference thread, so callers never
//! block the async runtime. That thread batches continuously, as vLLM and TGI do: before
//! each decode step it admits waiting requests (prefilling each) up to `max_batch`, then
//! advances every running sequence by one token in a single forward pass, and retires
//! the ones that finished, so a request never waits for another to end.

use std::sync::Arc;
use std::thread;

use tokio::sync::{mpsc, oneshot};

use candle_core::{Device, Tensor};

use crate::error::{EngineError, Result};
use crate::generate::{FinishReason, GenerateOutput, GenerateRequest, Sequence, Step};
use crate::load::LoadedModel;
use crate::model::{KvCache, Llama};
use crate::prefix_cache::PrefixCache;
use crate::queue::{self, merge_stream, Job, Queue, Submit};
use crate::tokenizer::Tokenizer;

/// A piece of streamed output.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    Text { token_id: u32, text: String },
    Done(GenerateOutput),
}

/// Static facts about the served model.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub name: String,
    pub dtype: String,
    pub device: String,
    pub context_len: usize,
    pub vocab_size: usize,
    /// Requests decoded together; more wait in the queue.
    pub max_batch: usize,
}

/// The prefix cache's default budget: room for about ten 4k-token SmolLM2 states in f32,
/// or one 4k-token LLaMA-2-7B state in bf16.
pub const DEFAULT_PREFIX_CACHE_MB: usize = 2048;

/// How the engine runs requests.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Bytes of finished sequences' key/value state kept for prefix reuse (0 disables
    /// it), shared by all requests.
    pub prefix_cache_bytes: usize,
    /// Sequences decoded together in one forward pass (1 runs requests one at a time).
    pub max_batch: usize,
    /// Requests that may wait for a batch slot; past it a request is refused at once
    /// (`EngineError::Overloaded`) instead of queueing without bound.
    pub max_queue: usize,
}

/// Requests that may wait by default: a few minutes of work for a 7B role at batch 8.
pub const DEFAULT_MAX_QUEUE: usize = 256;

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            prefix_cache_bytes: DEFAULT_PREFIX_CACHE_MB << 20,
            max_batch: 8,
            max_queue: DEFAULT_MAX_QUEUE,
        }
    }
}

/// A handle to a model running on its own thread. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    jobs: Submit<Job<GenerateRequest>>,
    tokenizer: Arc<Tokenizer>,
    info: Arc<ModelInfo>,
}

impl Engine {
    /// Starts the inference thread with the default configuration.
    pub fn start(loaded: LoadedModel) -> Engine {
        Engine::start_with(loaded, EngineConfig::default())
    }

    /// Starts the inference thread. It stops once every handle is dropped.
    pub fn start_with(loaded: LoadedModel, config: EngineConfig) -> Engine {
        let info = ModelInfo {
            name: loaded.name.clone(),
            dtype: loaded.model.weight_dtype().to_string(),
            device: format!("{:?}", loaded.model.device()),
            context_len: loaded.model.context_len(),
            vocab_size: loaded.model.config().vocab_size,
            max_batch: config.max_batch.max(1),
        };
        let tokenizer = Arc::new(loaded.tokenizer.clone());
        let (jobs, mut queue) = queue::bounded::<Job<GenerateRequest>>(config.max_queue);
        let thread_name = format!("umi-engine-{}", info.name);
        let max_batch = info.max_batch;
        crate::metrics::engine_kind("model", &info.name);
        let spawned = thread::Builder::new().name(thread_name).spawn(move || {
            let mut prefix_cache = PrefixCache::new(config.prefix_cache_bytes);
            schedule(&loaded, &mut prefix_cache, max_batch, &mut queue);
        });
        if let Err(e) = spawned {
            // Without a thread every request fails with Shutdown; say why once.
            tracing::error!(error = %e, "could not start the inference thread");
        }
        Engine {
            jobs,
            tokenizer,
            info: Arc::new(info),
        }
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Generates to completion.
    pub async fn generate(&self, request: GenerateRequest) -> Result<GenerateOutput> {
        let (done, rx) = oneshot::channel();
        self.enqueue(Job {
            request,
            span: tracing::Span::current(),
            arrived: std::time::Instant::now(),
            events: None,
            done,
        })?;
        rx.await.map_err(|_| EngineError::Shutdown)?
    }

    /// Generates from `prompt` tokenized with this model's tokenizer, keeping only its
    /// last `keep_last` tokens (0 keeps all) as α-UMi's pipelines truncate from the left.
    pub async fn generate_truncated(
        &self,
        prompt: &str,
        keep_last: usize,
        mut request: GenerateRequest,
    ) -> Result<GenerateOutput> {
        request.prompt = self.truncated_prompt(prompt, keep_last)?;
        self.generate(request).await
    }

    /// `prompt` as tokens, only the last `keep_last` of them (0 keeps all).
    pub fn truncated_prompt(
        &self,
        prompt: &str,
        keep_last: usize,
    ) -> Result<crate::generate::Prompt> {
        let mut ids = self.tokenizer.encode(prompt)?;
        if keep_last > 0 && ids.len() > keep_last {
            ids.drain(..ids.len() - keep_last);
        }
        Ok(crate::generate::Prompt::Tokens(ids))
    }

    /// Generates, streaming text as it is produced; the last event is `Done`. Dropping
    /// the receiver cancels the request.
    pub fn stream(
        &self,
        request: GenerateRequest,
    ) -> Result<mpsc::UnboundedReceiver<Result<StreamEvent>>> {
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (done, done_rx) = oneshot::channel();
        self.enqueue(Job {
            request,
            span: tracing::Span::current(),
            arrived: std::time::Instant::now(),
            events: Some(events_tx),
            done,
        })?;
        Ok(merge_stream(events_rx, done_rx))
    }

    /// Hands a job to the inference thread, unless `max_queue` jobs already wait.
    fn enqueue(&self, job: Job<GenerateRequest>) -> Result<()> {
        self.jobs.send(job)
    }
}

/// The inference thread's loop; returns once every `Engine` handle is gone and the last
/// running sequence has finished.
fn schedule(
    loaded: &LoadedModel,
    prefix_cache: &mut PrefixCache,
    max_batch: usize,
    queue: &mut Queue<Job<GenerateRequest>>,
) {
    let mut running: Vec<Running> = Vec::new();
    loop {
        let Some(arrived) = queue.admit(running.len(), max_batch) else {
            return;
        };
        // Running inside the pool makes this thread's own work a pool task, so the
        // parallel kernels split it with the other workers instead of waking them all and
        // sleeping until they finish (one context switch less per kernel).
        crate::metrics::queue(running.len() + arrived.len(), queue.len());
        rayon::scope(|_| {
            // A newcomer's whole prefill runs before the next decode step, holding the
            // running sequences back by its length (its chunks are not interleaved with
            // decode steps yet).
            for job in arrived {
                running.extend(Running::admit(loaded, prefix_cache, job));
            }
            decode_step(&loaded.model, prefix_cache, &mut running);
        });
        crate::metrics::queue(running.len(), queue.len());
    }
}

/// Advances every running sequence by one token, retiring those that finish.
fn decode_step(model: &Llama, prefix_cache: &mut PrefixCache, running: &mut Vec<Running>) {
    let (mut live, gone): (Vec<_>, Vec<_>) = std::mem::take(running)
        .into_iter()
        .partition(|r| !r.job.is_abandoned());
    for r in gone {
        r.finish(FinishReason::Cancelled, prefix_cache);
    }
    if live.is_empty() {
        return;
    }
    let batch = live.len();
    crate::metrics::decode_step(batch);
    let tokens: Vec<u32> = live.iter().map(|r| r.next).collect();
    let logits = {
        let _span = tracing::debug_span!("decode_step", batch).entered();
        let mut caches: Vec<&mut KvCache> = live.iter_mut().map(|r| r.seq.cache_mut()).collect();
        // Sampling reads every row on the host: one copy for the batch, not one per row.
        model
            .forward_batch(&tokens, &mut caches)
            .and_then(|l| Ok(l.to_device(&Device::Cpu)?))
    };
    let logits = match logits {
        Ok(logits) => logits,
        Err(e) => {
            tracing::error!(error = ?e, batch, "decode step failed");
            let message = e.to_string();
            for r in live {
                r.fail(EngineError::Step(message.clone()));
            }
            return;
        }
    };
    for (i, mut r) in live.into_iter().enumerate() {
        r.peak_batch = r.peak_batch.max(batch);
        match logits.get(i) {
            Ok(row) => running.extend(r.advance(&row, prefix_cache)),
            Err(e) => r.fail(e.into()),
        }
    }
}

/// A sequence being decoded, with the request it answers.
struct Running<'t> {
    seq: Sequence<'t>,
    job: Job<GenerateRequest>,
    span: tracing::Span,
    /// The token the next step feeds.
    next: u32,
    /// The most sequences it was decoded with at once.
    peak_batch: usize,
}

impl<'t> Running<'t> {
    /// Prefills `job` and samples its first token; `None` if it already ended (an error,
    /// a stop at the first token, or nobody waiting for it).
    fn admit(
        loaded: &'t LoadedModel,
        prefix_cache: &mut PrefixCache,
        job: Job<GenerateRequest>,
    ) -> Option<Self> {
        let span = tracing::info_span!(
            parent: &job.span,
            "generate",
            model = %loaded.name,
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
        let started = span.in_scope(|| {
            Sequence::start(
                &loaded.model,
                &loaded.tokenizer,
                &job.request,
                prefix_cache,
                || job.is_abandoned(),
            )
        });
        match started {
            Ok((seq, logits)) => {
                span.record("prompt_tokens", seq.prompt_tokens());
                crate::metrics::first_token(job.arrived.elapsed());
                let running = Running {
                    seq,
                    job,
                    span,
                    next: 0,
                    peak_batch: 1,
                };
                running.advance(&logits, prefix_cache)
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

    /// Samples from this step's logits; `None` once the sequence has finished.
    fn advance(mut self, logits: &Tensor, prefix_cache: &mut PrefixCache) -> Option<Self> {
        let step = {
            let _enter = self.span.enter();
            let job = &self.job;
            self.seq.advance(logits, |id, text| job.emit(id, text))
        };
        match step {
            Ok(Step::Feed(token)) => {
                self.next = token;
                Some(self)
            }
            Ok(Step::Done(reason)) => {
                self.finish(reason, prefix_cache);
                None
            }
            Err(e) => {
                self.fail(e);
                None
            }
        }
    }

    fn finish(self, reason: FinishReason, prefix_cache: &mut PrefixCache) {
        let Running {
            seq,
            job,
            span,
            peak_batch,
            ..
        } = self;
        let _enter = span.enter();
        let mut out = seq.finish(reason, prefix_cache, |id, text| job.emit(id, text));
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
            prefix_cache.bytes(),
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
