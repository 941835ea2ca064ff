//! The request-level, async face of a model: submit a request, then await its output or
//! stream its text. Requests queue to a dedicated inference thread, so callers never
//! block the async runtime, and a scheduler that batches requests can replace the loop
//! without changing them.

use std::sync::Arc;
use std::thread;

use tokio::sync::{mpsc, oneshot};

use crate::error::{EngineError, Result};
use crate::generate::{generate, GenerateOutput, GenerateRequest};
use crate::load::LoadedModel;
use crate::prefix_cache::PrefixCache;
use crate::tokenizer::Tokenizer;

/// A piece of streamed output.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    Text { token_id: u32, text: String },
    Done(GenerateOutput),
}

struct Job {
    request: GenerateRequest,
    span: tracing::Span,
    /// Streaming requests get their text here; `None` for plain requests.
    events: Option<mpsc::UnboundedSender<StreamEvent>>,
    done: oneshot::Sender<Result<GenerateOutput>>,
}

/// Static facts about the served model.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub name: String,
    pub dtype: String,
    pub device: String,
    pub context_len: usize,
    pub vocab_size: usize,
}

/// How the engine runs requests.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Sequences whose key/value state is kept for prefix reuse (0 disables it).
    pub prefix_cache_entries: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            prefix_cache_entries: 8,
        }
    }
}

/// A handle to a model running on its own thread. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    jobs: mpsc::UnboundedSender<Job>,
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
        };
        let tokenizer = Arc::new(loaded.tokenizer.clone());
        let (jobs, mut queue) = mpsc::unbounded_channel::<Job>();
        let thread_name = format!("umi-engine-{}", info.name);
        let spawned = thread::Builder::new().name(thread_name).spawn(move || {
            let mut prefix_cache = PrefixCache::new(config.prefix_cache_entries);
            while let Some(job) = queue.blocking_recv() {
                // Running inside the pool makes this thread's own work a pool task, so the
                // parallel kernels split it with the other workers instead of waking them
                // all and sleeping until they finish (one context switch less per kernel).
                rayon::scope(|_| run_job(&loaded, &mut prefix_cache, job));
            }
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
        let (events_tx, mut events_rx) = mpsc::unbounded_channel();
        let (done, done_rx) = oneshot::channel();
        self.enqueue(Job {
            request,
            span: tracing::Span::current(),
            events: Some(events_tx),
            done,
        })?;
        // Merge the text events and the final result into one ordered stream.
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(event) = events_rx.recv().await {
                if out_tx.send(Ok(event)).is_err() {
                    return;
                }
            }
            let last = match done_rx.await {
                Ok(Ok(output)) => Ok(StreamEvent::Done(output)),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(EngineError::Shutdown),
            };
            let _ = out_tx.send(last);
        });
        Ok(out_rx)
    }

    fn enqueue(&self, job: Job) -> Result<()> {
        self.jobs.send(job).map_err(|_| EngineError::Shutdown)
    }
}

fn run_job(loaded: &LoadedModel, prefix_cache: &mut PrefixCache, job: Job) {
    let span = tracing::info_span!(
        parent: &job.span,
        "generate",
        model = %loaded.name,
        prompt_tokens = tracing::field::Empty,
        cached_tokens = tracing::field::Empty,
        generated_tokens = tracing::field::Empty,
        finish_reason = tracing::field::Empty,
    );
    let _enter = span.enter();
    if job.done.is_closed() {
        return;
    }
    let events = job.events;
    let done = &job.done;
    let result = generate(
        &loaded.model,
        &loaded.tokenizer,
        &job.request,
        prefix_cache,
        |token_id, text| match &events {
            Some(tx) => tx
                .send(StreamEvent::Text {
                    token_id,
                    text: text.to_string(),
                })
                .is_ok(),
            // A caller that went away (timed out, retried elsewhere) stops the work.
            None => !done.is_closed(),
        },
    );
    drop(events);
    match &result {
        Ok(out) => {
            span.record("prompt_tokens", out.prompt_tokens);
            span.record("cached_tokens", out.cached_tokens);
            span.record("generated_tokens", out.generated_tokens());
            span.record("finish_reason", tracing::field::debug(out.finish_reason));
            tracing::debug!(
                prompt = out.prompt_tokens,
                cached = out.cached_tokens,
                generated = out.generated_tokens(),
                prefill_ms = out.prefill_time.as_millis() as u64,
                decode_ms = out.decode_time.as_millis() as u64,
                "request done"
            );
        }
        Err(e) => tracing::warn!(error = %e, "generation failed"),
    }
    let _ = job.done.send(result);
}
