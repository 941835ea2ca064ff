//! The request-level, async face of a model: submit a request, then await its output or
//! stream its text. Requests queue to a dedicated inference thread, so callers never
//! block the async runtime. That thread runs the shared scheduling loop (`scheduler`:
//! continuous batching) with the model's forward pass as its step (`ModelStep`).

use std::sync::Arc;
use std::thread;

use tokio::sync::mpsc;

use candle_core::{Device, Tensor};

use umi_core::agent::EngineKind;

use crate::error::{EngineError, Result};
use crate::generate::{
    FinishReason, GenerateOutput, GenerateRequest, Sequence, Step, DEFAULT_PREFILL_CHUNK,
};
use crate::load::LoadedModel;
use crate::model::{Chunk, KvCache};
use crate::prefix_cache::PrefixCache;
use crate::queue::{self, Job, Submit};
use crate::scheduler::{self, StepBackend, Stepped};
use crate::structured::Grammars;
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
    /// Prompt tokens a step runs (the step's token budget for prompt work; each decoding
    /// sequence adds its one row beside them). Prompts are cut at fixed offsets of this
    /// size from their cached prefix, so answers do not depend on what runs beside them;
    /// they may differ in the last bits between two settings.
    pub prefill_chunk: usize,
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
            prefill_chunk: DEFAULT_PREFILL_CHUNK,
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
        crate::metrics::engine_kind(EngineKind::Model, &info.name);
        let spawned = thread::Builder::new().name(thread_name).spawn(move || {
            let mut step = ModelStep {
                loaded: &loaded,
                prefix_cache: PrefixCache::new(config.prefix_cache_bytes),
                grammars: None,
                prefill_chunk: config.prefill_chunk.max(1),
            };
            scheduler::run(&mut step, max_batch, &mut queue);
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

    /// Whether the inference thread still works: see [`Liveness`].
    pub fn liveness(&self, stall_after: std::time::Duration) -> crate::liveness::Liveness {
        self.jobs.liveness(stall_after)
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Generates to completion; a request with settings no engine takes
    /// (`GenerateRequest::validate`) is refused before it is queued.
    pub async fn generate(&self, request: GenerateRequest) -> Result<GenerateOutput> {
        request.validate()?;
        self.jobs.generate(request).await
    }

    /// Generates, streaming text as it is produced; the last event is `Done`. Dropping
    /// the receiver cancels the request. Settings are checked before it is queued.
    pub fn stream(
        &self,
        request: GenerateRequest,
    ) -> Result<mpsc::UnboundedReceiver<Result<StreamEvent>>> {
        request.validate()?;
        self.jobs.stream(request)
    }
}

/// The model's side of the scheduling loop: prefill and a batched decode step are
/// forward passes; the next token is sampled from the logits.
struct ModelStep<'t> {
    loaded: &'t LoadedModel,
    prefix_cache: PrefixCache,
    /// Built at the first request with a grammar (it reads the whole vocabulary); a
    /// vocabulary that cannot be read is remembered, not read again for each request.
    grammars: Option<std::result::Result<Grammars, String>>,
    /// Prompt tokens per step (`EngineConfig::prefill_chunk`).
    prefill_chunk: usize,
}

impl<'t> StepBackend for ModelStep<'t> {
    type Request = GenerateRequest;
    type Seq = Sequence<'t>;
    type Logits = Tensor;

    fn name(&self) -> &str {
        &self.loaded.name
    }

    /// Running inside the pool makes this thread's own work a pool task, so the
    /// parallel kernels split it with the other workers instead of waking them all and
    /// sleeping until they finish (one context switch less per kernel).
    fn run_step(&mut self, step: impl FnOnce(&mut Self) + Send) {
        rayon::scope(|_| step(self));
    }

    fn start(&mut self, request: &GenerateRequest) -> Result<Sequence<'t>> {
        let loaded = self.loaded;
        // A grammar is compiled before the prefill, so a bad one is refused at once.
        let grammar = match &request.constraint {
            None => None,
            Some(constraint) => {
                let grammars = self.grammars.get_or_insert_with(|| {
                    Grammars::new(&loaded.tokenizer, loaded.model.config().vocab_size).map_err(
                        |e| match e {
                            EngineError::Tokenizer(message) => message,
                            other => other.to_string(),
                        },
                    )
                });
                match grammars {
                    Ok(grammars) => Some(grammars.constrain(constraint)?),
                    Err(e) => return Err(EngineError::Tokenizer(e.clone())),
                }
            }
        };
        let mut seq = Sequence::begin(
            &loaded.model,
            &loaded.tokenizer,
            request,
            &mut self.prefix_cache,
        )?;
        if let Some(grammar) = grammar {
            seq.constrain(grammar);
        }
        Ok(seq)
    }

    fn prompt_tokens(seq: &Sequence<'t>) -> usize {
        seq.prompt_tokens()
    }

    /// A decode step, a prompt chunk, or both in one pass (`Llama::forward_mixed`).
    fn step(
        &mut self,
        prefill: Option<&mut Sequence<'t>>,
        decode: &mut [&mut Sequence<'t>],
        tokens: &[u32],
    ) -> Result<Stepped<Tensor>> {
        let model = &self.loaded.model;
        let rows = decode.len();
        let _span =
            tracing::debug_span!("step", batch = rows, prefill = prefill.is_some()).entered();
        let adapters: Vec<Option<usize>> = decode.iter().map(|s| s.adapter()).collect();
        let mut caches: Vec<&mut KvCache> = decode.iter_mut().map(|s| s.cache_mut()).collect();
        let (first, decoded) = match prefill {
            None => (
                None,
                Some(model.forward_batch(tokens, &mut caches, &adapters)?),
            ),
            Some(seq) => {
                let chunk = seq.next_chunk(self.prefill_chunk);
                let (logits, decoded) = if caches.is_empty() {
                    let Chunk {
                        tokens,
                        cache,
                        adapter,
                    } = chunk;
                    (model.forward(tokens, cache, adapter)?, None)
                } else {
                    let (logits, decoded) =
                        model.forward_mixed(chunk, tokens, &mut caches, &adapters)?;
                    (logits, Some(decoded))
                };
                let done = seq.unprefilled() == 0;
                if done {
                    seq.prompt_done();
                }
                (done.then_some(logits), decoded)
            }
        };
        let decode = match decoded {
            None => Vec::new(),
            Some(logits) => {
                // Sampling reads every row on the host: one copy for the batch, not one
                // per row.
                let logits = logits.to_device(&Device::Cpu)?;
                (0..rows).map(|i| Ok(logits.get(i)?)).collect()
            }
        };
        Ok(Stepped {
            prefill: first,
            decode,
        })
    }

    fn advance(
        &mut self,
        seq: &mut Sequence<'t>,
        logits: &Tensor,
        emit: impl FnMut(u32, &str) -> bool,
    ) -> Result<Step> {
        seq.advance(logits, emit)
    }

    fn finish(
        &mut self,
        seq: Sequence<'t>,
        reason: FinishReason,
        emit: impl FnMut(u32, &str) -> bool,
    ) -> GenerateOutput {
        seq.finish(reason, &mut self.prefix_cache, emit)
    }

    fn cache_bytes(&self) -> usize {
        self.prefix_cache.bytes()
    }
}
