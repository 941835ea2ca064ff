//! The simulated engine: a **test double** for load and fault runs, never a model.
//!
//! It runs the model engine's scheduling loop (`scheduler`: the same bounded admission
//! queue, continuous batching up to `max_batch` in mixed steps, each a prompt chunk of
//! `prefill_chunk` tokens beside one token of every decoding sequence, the same prefix
//! cache and its memory accounting, the same metrics) but, instead of running a forward
//! pass, its step (`SimStep`) waits the time a latency profile (`SimProfile`) gives for
//! it, and "generates" the text its caller scripted (`GenerateRequest::script`), token by
//! token. It refuses the requests the model engine refuses (`GenerateRequest::validate`),
//! when they are submitted.
//! So a cluster of simulated workers behaves like GPU workers in time and batching without
//! weights, and the text is whatever the caller's policy decided (the worker's simulated
//! roles write valid α-UMi outputs). Everything it serves is labelled `engine="sim"`.

use std::path::Path;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use umi_core::agent::EngineKind;

use crate::engine::{EngineConfig, ModelInfo, StreamEvent};
use crate::error::{EngineError, Result};
use crate::generate::{FinishReason, GenerateOutput, GenerateRequest, Prompt, Step};
use crate::prefix_cache::{CachedState, PrefixCache};
use crate::queue::{self, Job, Submit};
use crate::scheduler::{self, StepBackend, Stepped};

/// How long the simulated engine takes, per request and per decode step.
///
/// The default is LLaMA-2-7B in bf16 on one H100 SXM (80 GB HBM3, 3.35 TB/s, 989 dense
/// bf16 TFLOP/s), from the roofline: a decode step reads the 13.5 GB of weights (4.0 ms)
/// plus every running sequence's key/value state (2 × 32 layers × 4096 × 2 bytes = 512 KiB
/// per token, 0.16 µs per token at 3.35 TB/s), plus 2 ms of launch and sampling overhead
/// per step; prefill does 2 × 6.7 GFLOP per token at 40% of peak (0.034 ms per token)
/// plus 3 ms per request. That gives 6-7 ms per token at small batches, in line with
/// published vLLM inter-token latencies for 7B models on an H100.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimProfile {
    /// What it stands for, reported as the model name (`sim:<name>`).
    pub name: String,
    /// Context length in tokens; longer prompts are refused as a model would refuse them.
    pub context_len: usize,
    /// Text bytes per token: the simulated tokenizer cuts text into pieces of this many
    /// bytes (at character boundaries). LLaMA's tokenizer averages about 4 on English.
    pub bytes_per_token: usize,
    /// Fixed cost of admitting one request (scheduling, the first kernel launches).
    pub prefill_overhead_ms: f64,
    /// Per prompt token computed (prefix-cache hits cost nothing).
    pub prefill_ms_per_token: f64,
    /// Per decode step, whatever the batch (reading the weights, launch overhead).
    pub decode_step_ms: f64,
    /// Per decode step, per token of context of every running sequence (reading their
    /// key/value state).
    pub decode_ms_per_context_token: f64,
    /// Key/value bytes per token, charged to the prefix cache's memory budget.
    pub kv_bytes_per_token: usize,
}

impl Default for SimProfile {
    fn default() -> Self {
        SimProfile {
            name: "llama-2-7b-bf16-h100".to_string(),
            context_len: 4096,
            bytes_per_token: 4,
            prefill_overhead_ms: 3.0,
            prefill_ms_per_token: 0.034,
            decode_step_ms: 6.0,
            decode_ms_per_context_token: 0.000_16,
            kv_bytes_per_token: 2 * 32 * 4096 * 2,
        }
    }
}

impl SimProfile {
    /// Reads a profile from a JSON file; fields left out keep their defaults.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| EngineError::io(path, e))?;
        let profile: SimProfile =
            serde_json::from_str(&text).map_err(|e| EngineError::load(path, e))?;
        profile.validate().map_err(|e| EngineError::load(path, e))?;
        Ok(profile)
    }

    /// Checks that every figure is usable (finite, not negative; sizes at least 1).
    pub fn validate(&self) -> std::result::Result<(), String> {
        for (field, v) in [
            ("prefill_overhead_ms", self.prefill_overhead_ms),
            ("prefill_ms_per_token", self.prefill_ms_per_token),
            ("decode_step_ms", self.decode_step_ms),
            (
                "decode_ms_per_context_token",
                self.decode_ms_per_context_token,
            ),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(format!("{field} is {v}; it must be a finite number >= 0"));
            }
        }
        if self.context_len < 16 || self.bytes_per_token == 0 {
            return Err("context_len must be at least 16 and bytes_per_token at least 1".into());
        }
        Ok(())
    }

    /// The simulated tokenizer: `text` in pieces of `bytes_per_token` bytes, each named
    /// by a hash of its bytes, so equal text prefixes give equal token prefixes.
    pub fn tokens(&self, text: &str) -> Vec<u32> {
        self.pieces(text).map(piece_id).collect()
    }

    fn pieces<'t>(&self, text: &'t str) -> impl Iterator<Item = &'t str> {
        let size = self.bytes_per_token;
        let mut rest = text;
        std::iter::from_fn(move || {
            if rest.is_empty() {
                return None;
            }
            let mut end = size.min(rest.len());
            while !rest.is_char_boundary(end) {
                end += 1;
            }
            let (piece, after) = rest.split_at(end);
            rest = after;
            Some(piece)
        })
    }

    /// One chunk of a prefill (a mixed step's share): its tokens, plus the request's
    /// overhead with its `first` chunk.
    pub fn prefill_chunk_time(&self, tokens: usize, first: bool) -> Duration {
        let overhead = if first { self.prefill_overhead_ms } else { 0.0 };
        ms(overhead + self.prefill_ms_per_token * tokens as f64)
    }

    /// One decode step over sequences holding `context` tokens in all.
    pub fn decode_step_time(&self, context: usize) -> Duration {
        ms(self.decode_step_ms + self.decode_ms_per_context_token * context as f64)
    }
}

fn ms(v: f64) -> Duration {
    Duration::from_secs_f64(v.max(0.0) / 1000.0)
}

fn piece_id(piece: &str) -> u32 {
    let h = piece.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    (h ^ (h >> 32)) as u32
}

/// What the queue carries: the request in simulated tokens.
#[derive(Clone)]
struct Work {
    prompt: Vec<u32>,
    output: Vec<(u32, String)>,
    max_new_tokens: usize,
}

/// What the prefix cache keeps for a simulated sequence: how many tokens, and the bytes
/// their key/value state would hold.
#[derive(Debug, Clone, Copy)]
struct SimState {
    tokens: usize,
    bytes_per_token: usize,
}

impl CachedState for SimState {
    fn bytes(&self) -> usize {
        self.tokens * self.bytes_per_token
    }

    fn prefix(&self, n: usize) -> Result<Self> {
        Ok(SimState {
            tokens: n.min(self.tokens),
            ..*self
        })
    }
}

/// A handle to a simulated engine running on its own thread. Cheap to clone.
#[derive(Clone)]
pub struct SimEngine {
    jobs: Submit<Job<Work>>,
    profile: Arc<SimProfile>,
    info: Arc<ModelInfo>,
}

impl SimEngine {
    /// Starts the scheduling thread; it stops once every handle is dropped.
    pub fn start(profile: SimProfile, config: EngineConfig) -> Result<SimEngine> {
        profile
            .validate()
            .map_err(|e| EngineError::invalid("simulated engine profile", e))?;
        let info = ModelInfo {
            name: format!("sim:{}", profile.name),
            dtype: EngineKind::Sim.label().to_string(),
            device: EngineKind::Sim.label().to_string(),
            context_len: profile.context_len,
            vocab_size: u32::MAX as usize,
            max_batch: config.max_batch.max(1),
        };
        crate::metrics::engine_kind(EngineKind::Sim, &info.name);
        let (jobs, mut queue) = queue::bounded(config.max_queue);
        let profile = Arc::new(profile);
        let mut step = SimStep {
            name: info.name.clone(),
            profile: profile.clone(),
            cache: PrefixCache::new(config.prefix_cache_bytes),
            prefill_chunk: config.prefill_chunk.max(1),
        };
        let max_batch = info.max_batch;
        thread::Builder::new()
            .name(format!("umi-{}", info.name))
            .spawn(move || scheduler::run(&mut step, max_batch, &mut queue))
            .map_err(|e| EngineError::invalid("simulated engine", e))?;
        Ok(SimEngine {
            jobs,
            profile,
            info: Arc::new(info),
        })
    }

    /// Whether the inference thread still works: see [`Liveness`].
    pub fn liveness(&self, stall_after: std::time::Duration) -> crate::liveness::Liveness {
        self.jobs.liveness(stall_after)
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    pub fn profile(&self) -> &SimProfile {
        &self.profile
    }

    /// Generates to completion.
    pub async fn generate(&self, request: GenerateRequest) -> Result<GenerateOutput> {
        let work = self.work(request)?;
        self.jobs.generate(work).await
    }

    /// Generates, streaming text token by token; the last event is `Done`. Dropping the
    /// receiver cancels the request.
    pub fn stream(
        &self,
        request: GenerateRequest,
    ) -> Result<mpsc::UnboundedReceiver<Result<StreamEvent>>> {
        let work = self.work(request)?;
        self.jobs.stream(work)
    }

    /// Checks `request` as the model engine would and puts it in simulated tokens.
    fn work(&self, request: GenerateRequest) -> Result<Work> {
        request.validate()?;
        let prompt = match request.prompt {
            Prompt::Text(text) => self.profile.tokens(&text),
            Prompt::Tokens(ids) => ids,
        };
        if prompt.is_empty() {
            return Err(EngineError::invalid("prompt", "empty"));
        }
        let context = self.profile.context_len;
        if prompt.len() >= context {
            return Err(EngineError::PromptTooLong {
                prompt: prompt.len(),
                context,
            });
        }
        let output = self
            .profile
            .pieces(request.script.as_deref().unwrap_or_default())
            .map(|p| (piece_id(p), p.to_string()))
            .collect();
        Ok(Work {
            prompt,
            output,
            max_new_tokens: request.max_new_tokens,
        })
    }
}

/// The simulated engine's side of the scheduling loop: prefill and a decode step wait
/// the time the profile gives; the next token is the script's next piece.
struct SimStep {
    name: String,
    profile: Arc<SimProfile>,
    cache: PrefixCache<SimState>,
    /// Prompt tokens per step, as the model engine cuts them.
    prefill_chunk: usize,
}

/// A simulated sequence, prefilling or being decoded.
struct SimSeq {
    work: Work,
    cached: usize,
    /// Prompt tokens run so far (the cached ones included).
    prefilled: usize,
    /// Output tokens emitted so far.
    emitted: usize,
    began: Instant,
    prefill_time: Duration,
    decode_start: Instant,
}

impl StepBackend for SimStep {
    type Request = Work;
    type Seq = SimSeq;
    type Logits = ();

    fn name(&self) -> &str {
        &self.name
    }

    fn start(&mut self, work: &Work) -> Result<SimSeq> {
        let cached = self.cache.lookup(&work.prompt).map_or(0, |s| s.tokens);
        Ok(SimSeq {
            work: work.clone(),
            cached,
            prefilled: cached,
            emitted: 0,
            began: Instant::now(),
            prefill_time: Duration::ZERO,
            decode_start: Instant::now(),
        })
    }

    fn prompt_tokens(seq: &SimSeq) -> usize {
        seq.work.prompt.len()
    }

    /// Waits what the profile gives the step: the prompt chunk's share of its prefill
    /// (the per-request overhead with the first chunk) plus a decode step over the
    /// decoding sequences' context, chunked as the model engine chunks.
    fn step(
        &mut self,
        prefill: Option<&mut SimSeq>,
        decode: &mut [&mut SimSeq],
        _tokens: &[u32],
    ) -> Result<Stepped<()>> {
        let batch = decode.len();
        let _span = tracing::debug_span!("sim_step", batch, prefill = prefill.is_some()).entered();
        let mut wait = Duration::ZERO;
        if batch > 0 {
            let context: usize = decode.iter().map(|s| s.work.prompt.len() + s.emitted).sum();
            wait += self.profile.decode_step_time(context);
        }
        let chunk = prefill.as_ref().map(|seq| {
            self.prefill_chunk
                .min(seq.work.prompt.len() - seq.prefilled)
        });
        if let (Some(seq), Some(chunk)) = (&prefill, chunk) {
            wait += self
                .profile
                .prefill_chunk_time(chunk, seq.prefilled == seq.cached);
        }
        thread::sleep(wait);
        let mut first = None;
        if let (Some(seq), Some(chunk)) = (prefill, chunk) {
            seq.prefilled += chunk;
            if seq.prefilled == seq.work.prompt.len() {
                seq.prefill_time = seq.began.elapsed();
                seq.decode_start = Instant::now();
                first = Some(());
            }
        }
        Ok(Stepped {
            prefill: first,
            decode: (0..batch).map(|_| Ok(())).collect(),
        })
    }

    /// Emits the next scripted token, as sampling one would. When the script is spent,
    /// this step "samples" EOS.
    fn advance(
        &mut self,
        seq: &mut SimSeq,
        _logits: &(),
        mut emit: impl FnMut(u32, &str) -> bool,
    ) -> Result<Step> {
        let work = &seq.work;
        if seq.emitted >= work.max_new_tokens {
            return Ok(Step::Done(FinishReason::Length));
        }
        let Some((id, text)) = work.output.get(seq.emitted) else {
            return Ok(Step::Done(FinishReason::StopToken));
        };
        if !emit(*id, text) {
            return Ok(Step::Done(FinishReason::Cancelled));
        }
        seq.emitted += 1;
        if work.prompt.len() + seq.emitted + 1 >= self.profile.context_len {
            return Ok(Step::Done(FinishReason::ContextFull));
        }
        if seq.emitted >= work.max_new_tokens {
            return Ok(Step::Done(FinishReason::Length));
        }
        Ok(Step::Feed(*id))
    }

    fn finish(
        &mut self,
        seq: SimSeq,
        reason: FinishReason,
        _emit: impl FnMut(u32, &str) -> bool,
    ) -> GenerateOutput {
        let SimSeq {
            work,
            cached,
            emitted,
            prefill_time,
            decode_start,
            ..
        } = seq;
        // The state holds the prompt and every emitted token but the last.
        let fed = emitted.saturating_sub(1);
        let mut tokens = work.prompt.clone();
        tokens.extend(work.output[..fed].iter().map(|(id, _)| *id));
        let state = SimState {
            tokens: tokens.len(),
            bytes_per_token: self.profile.kv_bytes_per_token,
        };
        self.cache.insert(tokens, state);
        GenerateOutput {
            text: work.output[..emitted]
                .iter()
                .map(|(_, t)| t.as_str())
                .collect(),
            token_ids: work.output[..emitted].iter().map(|(id, _)| *id).collect(),
            prompt_tokens: work.prompt.len(),
            cached_tokens: cached,
            finish_reason: reason,
            prefill_time,
            decode_time: decode_start.elapsed(),
            peak_batch: 1,
            constraint_time: Duration::ZERO,
        }
    }

    fn cache_bytes(&self) -> usize {
        self.cache.bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A profile fast enough for unit tests: 1 ms per decode step, prefill 0.01 ms per
    /// computed token.
    fn fast() -> SimProfile {
        SimProfile {
            name: "test".into(),
            prefill_overhead_ms: 0.0,
            prefill_ms_per_token: 0.01,
            decode_step_ms: 1.0,
            decode_ms_per_context_token: 0.0,
            ..SimProfile::default()
        }
    }

    fn request(prompt: &str, output: &str) -> GenerateRequest {
        GenerateRequest {
            max_new_tokens: 64,
            script: Some(output.into()),
            ..GenerateRequest::new(Prompt::Text(prompt.into()))
        }
    }

    #[test]
    fn tokens_are_byte_pieces_at_character_boundaries_and_prefixes_agree() {
        let p = SimProfile::default();
        assert_eq!(p.tokens("abcdefgh").len(), 2);
        assert_eq!(p.tokens("abcdefghi").len(), 3);
        // "é" is 2 bytes: a piece never splits it.
        let pieces: Vec<_> = p.pieces("aaaé bb").collect();
        assert_eq!(pieces, ["aaaé", " bb"]);
        let a = p.tokens("the same tool docs, then one history");
        let b = p.tokens("the same tool docs, then another history");
        let shared = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
        assert_eq!(shared, "the same tool docs, then ".len() / 4);
    }

    #[test]
    fn default_profile_is_valid_and_bad_figures_are_refused() {
        assert_eq!(SimProfile::default().validate(), Ok(()));
        let bad = SimProfile {
            decode_step_ms: f64::NAN,
            ..SimProfile::default()
        };
        assert!(bad.validate().unwrap_err().contains("decode_step_ms"));
        assert!(SimEngine::start(bad, EngineConfig::default()).is_err());
    }

    #[tokio::test]
    async fn it_emits_the_script_cut_at_max_new_tokens_and_reuses_prefixes() {
        let engine = SimEngine::start(fast(), EngineConfig::default()).unwrap();
        let prompt = "tool docs ".repeat(40);
        let out = engine
            .generate(request(&prompt, "Thought. Next: caller."))
            .await
            .unwrap();
        assert_eq!(out.text, "Thought. Next: caller.");
        assert_eq!(out.finish_reason, FinishReason::StopToken);
        assert_eq!(out.generated_tokens(), 6);
        assert_eq!(out.prompt_tokens, 100);
        assert_eq!(out.cached_tokens, 0);
        // The same task's next call shares the prompt: only the new part is computed.
        let longer = format!("{prompt}Thought. Next: caller. observation");
        let out = engine
            .generate(GenerateRequest {
                max_new_tokens: 3,
                ..request(&longer, "abcdefghijklmnop")
            })
            .await
            .unwrap();
        assert_eq!(out.text, "abcdefghijkl");
        assert_eq!(out.finish_reason, FinishReason::Length);
        assert!(out.cached_tokens >= 100, "{out:?}");
    }

    #[tokio::test]
    async fn requests_are_batched_and_decode_time_follows_the_profile() {
        let engine = SimEngine::start(
            fast(),
            EngineConfig {
                max_batch: 4,
                ..EngineConfig::default()
            },
        )
        .unwrap();
        // Four requests of 20 tokens at 1 ms per step decode together: about 20 ms, not 80.
        let started = Instant::now();
        let outs = futures::future::join_all(
            (0..4).map(|i| engine.generate(request(&format!("prompt {i} "), &"x".repeat(80)))),
        )
        .await;
        let elapsed = started.elapsed();
        for out in outs {
            let out = out.unwrap();
            assert_eq!(out.generated_tokens(), 20);
            assert!(out.peak_batch >= 2, "{out:?}");
        }
        assert!(elapsed >= Duration::from_millis(19), "{elapsed:?}");
        assert!(elapsed < Duration::from_millis(70), "{elapsed:?}");
    }

    #[tokio::test]
    async fn a_full_queue_refuses_and_a_long_prompt_is_refused() {
        let engine = SimEngine::start(
            SimProfile {
                decode_step_ms: 20.0,
                ..fast()
            },
            EngineConfig {
                max_batch: 1,
                max_queue: 1,
                ..EngineConfig::default()
            },
        )
        .unwrap();
        let long = "y".repeat(4 * 4096);
        assert!(matches!(
            engine.generate(request(&long, "a")).await,
            Err(EngineError::PromptTooLong { .. })
        ));
        let calls = (0..4).map(|_| engine.generate(request("p", &"z".repeat(12))));
        let results = futures::future::join_all(calls).await;
        let refused = results
            .iter()
            .filter(|r| matches!(r, Err(EngineError::Overloaded { .. })))
            .count();
        assert!(refused >= 1, "{results:?}");
        assert!(results.iter().any(|r| r.is_ok()));
    }

    #[tokio::test]
    async fn a_step_that_never_ends_with_requests_waiting_reads_as_stuck() {
        // One request's prefill stalls the loop (2 s); a second waits behind it.
        let stalling = SimProfile {
            prefill_overhead_ms: 2_000.0,
            ..fast()
        };
        let engine = SimEngine::start(stalling, EngineConfig::default()).unwrap();
        let bound = std::time::Duration::from_millis(200);
        assert_eq!(engine.liveness(bound), crate::Liveness::Alive, "idle");
        let _first = engine.stream(request("first ", "x")).unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(
            engine.liveness(bound),
            crate::Liveness::Alive,
            "working, nothing waits"
        );
        let _second = engine.stream(request("second ", "x")).unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        assert!(
            matches!(engine.liveness(bound), crate::Liveness::Stuck { .. }),
            "{:?}",
            engine.liveness(bound)
        );
        assert_eq!(
            engine.liveness(std::time::Duration::from_secs(60)),
            crate::Liveness::Alive
        );
    }
}
