//! One sequence's generation: prefill, then decode token by token until a stop
//! condition, with sampling and incremental detokenization. The engine's scheduler
//! advances many `Sequence`s at once.

use std::time::{Duration, Instant};

use candle_core::Tensor;
use candle_transformers::generation::{LogitsProcessor, Sampling};
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};
use crate::model::{Chunk, KvCache, Llama};
use crate::prefix_cache::PrefixCache;
use crate::structured::{Constrained, Constraint};
use crate::tokenizer::Tokenizer;

/// What to generate from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Prompt {
    /// Tokenized with the model's tokenizer (special-token strings become their ids,
    /// and the tokenizer's BOS, if any, is prepended).
    Text(String),
    /// Used as is.
    Tokens(Vec<u32>),
}

/// Sampling settings. `temperature == 0` (the default) is greedy decoding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    pub temperature: f64,
    pub top_p: Option<f64>,
    pub top_k: Option<usize>,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_p: None,
            top_k: None,
            seed: 299_792_458,
        }
    }
}

/// Stop strings a request may carry, and their length in bytes (vLLM and OpenAI bound
/// them too): each is searched for as text is generated, on the engine's thread.
pub const MAX_STOP_STRINGS: usize = 16;
pub const MAX_STOP_STRING_BYTES: usize = 256;

/// Checks a request's stop strings against the bounds (and refuses empty ones).
pub fn check_stop_strings(stops: &[String]) -> std::result::Result<(), String> {
    if stops.len() > MAX_STOP_STRINGS {
        return Err(format!(
            "stop: {} strings, more than {MAX_STOP_STRINGS}",
            stops.len()
        ));
    }
    if let Some(s) = stops
        .iter()
        .find(|s| s.is_empty() || s.len() > MAX_STOP_STRING_BYTES)
    {
        return Err(format!(
            "stop: a string of {} bytes (each must have 1 to {MAX_STOP_STRING_BYTES})",
            s.len()
        ));
    }
    Ok(())
}

/// The smallest positive temperature taken: dividing logits by less overflows them
/// (1e-300 makes every logit infinite); 0 asks for greedy decoding.
pub const MIN_TEMPERATURE: f64 = 1e-3;

impl SamplingParams {
    fn validate(&self) -> Result<()> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(EngineError::invalid(
                "temperature",
                format!("{} (must be >= 0)", self.temperature),
            ));
        }
        if self.temperature > 0.0 && self.temperature < MIN_TEMPERATURE {
            return Err(EngineError::invalid(
                "temperature",
                format!(
                    "{} (0 is greedy; a positive temperature must be at least {MIN_TEMPERATURE})",
                    self.temperature
                ),
            ));
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return Err(EngineError::invalid(
                    "top_p",
                    format!("{p} (must be in (0, 1])"),
                ));
            }
        }
        if self.top_k == Some(0) {
            return Err(EngineError::invalid("top_k", "0 (must be >= 1)"));
        }
        Ok(())
    }

    fn sampling(&self) -> Sampling {
        if self.temperature == 0.0 {
            return Sampling::ArgMax;
        }
        let temperature = self.temperature;
        match (self.top_k, self.top_p) {
            (None, None) => Sampling::All { temperature },
            (Some(k), None) => Sampling::TopK { k, temperature },
            (None, Some(p)) => Sampling::TopP { p, temperature },
            (Some(k), Some(p)) => Sampling::TopKThenTopP { k, p, temperature },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerateRequest {
    pub prompt: Prompt,
    pub max_new_tokens: usize,
    pub sampling: SamplingParams,
    /// Generation stops when the text ends with one of these; the stop string is not
    /// part of the returned text.
    pub stop_strings: Vec<String>,
    /// The LoRA adapter served unmerged by this name ([`crate::Llama::add_adapter`])
    /// that the request runs with; None: the base weights. A simulated engine ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter: Option<String>,
    /// Token ids that stop generation, in addition to the model's EOS ids.
    pub stop_token_ids: Vec<u32>,
    /// Keep generating past EOS (benchmarks want a fixed length).
    #[serde(default)]
    pub ignore_eos: bool,
    /// Stop tokens sampled before this many tokens are kept and generation goes on
    /// (ToolBench's `force_generate` is 1: an EOS at the first step does not stop).
    #[serde(default)]
    pub min_new_tokens: usize,
    /// The text a simulated engine writes for this request (its test-double script, which
    /// the worker's role policy decides), cut at `max_new_tokens`; without one it writes
    /// nothing. A model ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
    /// A grammar the text must match (structured output, [`crate::structured`]); a
    /// simulated engine ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraint: Option<Constraint>,
}

impl GenerateRequest {
    pub fn new(prompt: Prompt) -> Self {
        GenerateRequest {
            prompt,
            max_new_tokens: 256,
            sampling: SamplingParams::default(),
            stop_strings: vec![],
            adapter: None,
            stop_token_ids: vec![],
            ignore_eos: false,
            min_new_tokens: 0,
            script: None,
            constraint: None,
        }
    }

    /// Checks the settings every engine refuses (sampling values, stop strings), so a
    /// request is refused when submitted, before it takes a queue slot, by the model
    /// engine and the simulated one alike. The prompt is checked where it is tokenized.
    pub fn validate(&self) -> Result<()> {
        self.sampling.validate()?;
        check_stop_strings(&self.stop_strings).map_err(|m| EngineError::invalid("stop_strings", m))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// An EOS or requested stop token was sampled.
    StopToken,
    /// The text reached a stop string.
    StopString,
    /// `max_new_tokens` were generated.
    Length,
    /// The model's context is full.
    ContextFull,
    /// The caller went away.
    Cancelled,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::StopToken => "stop_token",
            FinishReason::StopString => "stop_string",
            FinishReason::Length => "length",
            FinishReason::ContextFull => "context_full",
            FinishReason::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerateOutput {
    pub text: String,
    pub token_ids: Vec<u32>,
    pub prompt_tokens: usize,
    /// Prompt tokens whose state came from the prefix cache instead of being computed.
    #[serde(default)]
    pub cached_tokens: usize,
    pub finish_reason: FinishReason,
    pub prefill_time: Duration,
    pub decode_time: Duration,
    /// The most requests it was decoded with at once (1: alone).
    #[serde(default)]
    pub peak_batch: usize,
    /// Time spent on its grammar (structured output): masks and matching.
    #[serde(default)]
    pub constraint_time: Duration,
}

impl GenerateOutput {
    pub fn generated_tokens(&self) -> usize {
        self.token_ids.len()
    }

    /// Computed prompt tokens (cache hits excluded) per second.
    pub fn prefill_tokens_per_second(&self) -> f64 {
        (self.prompt_tokens - self.cached_tokens) as f64 / self.prefill_time.as_secs_f64().max(1e-9)
    }

    /// Tokens after the first (which prefill produced) over the decode time.
    pub fn decode_tokens_per_second(&self) -> f64 {
        self.token_ids.len().saturating_sub(1) as f64 / self.decode_time.as_secs_f64().max(1e-9)
    }
}

/// Prompt tokens run per forward pass unless the engine is told otherwise
/// (`EngineConfig::prefill_chunk`). A whole 3-4k-token α-UMi prompt in one pass makes
/// attention scores of tens of megabytes per layer; in chunks they stay in cache and each
/// chunk attends only to the keys before it. 256 was chosen by measurement
/// (BENCHMARKS.md, "The token budget of a step").
pub const DEFAULT_PREFILL_CHUNK: usize = 256;

/// What a sequence needs after a token is sampled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Run this token through the model and sample again.
    Feed(u32),
    /// Generation is over.
    Done(FinishReason),
}

/// One request in flight: its key/value state, sampler and text between decode steps,
/// so that a scheduler can advance many of them with one forward pass per step.
///
/// `start` validates and prefills (or `begin`, then the prompt chunk by chunk); then
/// `advance` samples from each step's logits until
/// it returns `Step::Done`; `finish` hands back the output.
pub struct Sequence<'t> {
    prompt: Vec<u32>,
    /// The unmerged adapter it runs with (an index of the model's).
    adapter: Option<usize>,
    cache: KvCache,
    sampler: LogitsProcessor,
    /// The grammar its text must match, if any.
    constraint: Option<Constrained>,
    stop_ids: Vec<u32>,
    max_new_tokens: usize,
    min_new_tokens: usize,
    stream: TextStream<'t>,
    generated: Vec<u32>,
    cached_tokens: usize,
    context: usize,
    prefill_time: Duration,
    /// When `begin` took it.
    began: Instant,
    decode_start: Instant,
}

impl<'t> Sequence<'t> {
    /// Checks `request`, starts from the longest cached prefix of its prompt and runs the
    /// rest in chunks of `DEFAULT_PREFILL_CHUNK`. Returns the sequence and the logits its
    /// first token is sampled from.
    pub fn start(
        model: &Llama,
        tokenizer: &'t Tokenizer,
        request: &GenerateRequest,
        prefix_cache: &mut PrefixCache,
        abandoned: impl Fn() -> bool,
    ) -> Result<(Self, Tensor)> {
        let mut sequence = Self::begin(model, tokenizer, request, prefix_cache)?;
        loop {
            // A caller that went away stops the prefill at the next chunk, not after the
            // whole prompt.
            if abandoned() {
                return Err(EngineError::Abandoned);
            }
            let Chunk {
                tokens,
                cache,
                adapter,
            } = sequence.next_chunk(DEFAULT_PREFILL_CHUNK);
            let logits = model.forward(tokens, cache, adapter)?;
            if sequence.unprefilled() == 0 {
                sequence.prompt_done();
                return Ok((sequence, logits));
            }
        }
    }

    /// Checks `request` and starts from the longest cached prefix of its prompt, running
    /// nothing yet: the rest of the prompt runs chunk by chunk (`next_chunk`, until
    /// `unprefilled` is 0, then `prompt_done`), by `start` or in a scheduler's mixed
    /// steps beside other sequences' decoding.
    pub fn begin(
        model: &Llama,
        tokenizer: &'t Tokenizer,
        request: &GenerateRequest,
        prefix_cache: &mut PrefixCache,
    ) -> Result<Self> {
        // The engines check at submission; callers driving a sequence directly get the
        // same check here.
        request.validate()?;
        let prompt = match &request.prompt {
            Prompt::Text(text) => tokenizer.encode(text)?,
            Prompt::Tokens(ids) => ids.clone(),
        };
        if prompt.is_empty() {
            return Err(EngineError::invalid("prompt", "empty"));
        }
        let vocab = model.config().vocab_size as u32;
        if let Some(bad) = prompt.iter().find(|&&id| id >= vocab) {
            return Err(EngineError::invalid(
                "prompt",
                format!("token id {bad} is outside the vocabulary ({vocab})"),
            ));
        }
        let context = model.context_len();
        if prompt.len() >= context {
            return Err(EngineError::PromptTooLong {
                prompt: prompt.len(),
                context,
            });
        }
        let mut stop_ids: Vec<u32> = if request.ignore_eos {
            vec![]
        } else {
            tokenizer.eos_ids().to_vec()
        };
        stop_ids.extend(&request.stop_token_ids);
        let adapter = match &request.adapter {
            None => None,
            Some(name) => Some(model.adapter_index(name).ok_or_else(|| {
                EngineError::invalid(
                    "adapter",
                    format!(
                        "{name:?} is not served here (served: {})",
                        match model.adapter_names().join(", ") {
                            names if names.is_empty() => "none".to_string(),
                            names => names,
                        }
                    ),
                )
            })?),
        };
        let cache = prefix_cache
            .lookup_with(adapter, &prompt)
            .unwrap_or_else(|| model.new_cache());
        let cached_tokens = cache.len();
        if cached_tokens >= prompt.len() {
            return Err(EngineError::invalid("prompt", "nothing to run"));
        }
        let sequence = Sequence {
            prompt,
            adapter,
            cache,
            sampler: LogitsProcessor::from_sampling(
                request.sampling.seed,
                request.sampling.sampling(),
            ),
            constraint: None,
            stop_ids,
            max_new_tokens: request.max_new_tokens,
            min_new_tokens: request.min_new_tokens,
            stream: TextStream::new(tokenizer, request.stop_strings.clone()),
            generated: Vec::new(),
            cached_tokens,
            context,
            prefill_time: Duration::ZERO,
            began: Instant::now(),
            decode_start: Instant::now(),
        };
        Ok(sequence)
    }

    /// Prompt tokens not run yet.
    pub fn unprefilled(&self) -> usize {
        self.prompt.len().saturating_sub(self.cache.len())
    }

    /// The next chunk of the prompt to run, at most `size` tokens. Chunks are cut every
    /// `size` tokens from the cached prefix, whatever runs beside them, so a prompt is
    /// computed the same way in any batch (for one engine's `size`).
    pub fn next_chunk(&mut self, size: usize) -> Chunk<'_> {
        let from = self.cache.len().min(self.prompt.len());
        let to = (from + size.max(1)).min(self.prompt.len());
        Chunk {
            tokens: &self.prompt[from..to],
            cache: &mut self.cache,
            adapter: self.adapter,
        }
    }

    /// Marks the prompt as run (its last chunk's logits give the first token): the
    /// prefill's time ends and the decode's begins.
    pub fn prompt_done(&mut self) {
        self.prefill_time = self.began.elapsed();
        self.decode_start = Instant::now();
    }

    /// Samples the next token from `logits` (shape (vocab,)) and applies the stop
    /// conditions. `on_text` receives each new piece of text as soon as it is stable
    /// (complete UTF-8, not possibly the start of a stop string) and returns `false` to
    /// cancel.
    pub fn advance(
        &mut self,
        logits: &Tensor,
        mut on_text: impl FnMut(u32, &str) -> bool,
    ) -> Result<Step> {
        if self.generated.len() >= self.max_new_tokens {
            return Ok(Step::Done(FinishReason::Length));
        }
        let next = match &mut self.constraint {
            None => self.sampler.sample(logits)?,
            Some(grammar) => self.sampler.sample(&grammar.mask(logits)?)?,
        };
        if self.stop_ids.contains(&next) && self.generated.len() >= self.min_new_tokens {
            return Ok(Step::Done(FinishReason::StopToken));
        }
        let complete = match &mut self.constraint {
            None => false,
            Some(grammar) => grammar.consume(next)?,
        };
        self.generated.push(next);
        let (piece, hit_stop) = self.stream.push(next)?;
        if !piece.is_empty() && !on_text(next, &piece) {
            return Ok(Step::Done(FinishReason::Cancelled));
        }
        if hit_stop {
            return Ok(Step::Done(FinishReason::StopString));
        }
        if complete {
            return Ok(Step::Done(FinishReason::StopToken));
        }
        if self.cache.len() + 1 >= self.context {
            return Ok(Step::Done(FinishReason::ContextFull));
        }
        if self.generated.len() >= self.max_new_tokens {
            return Ok(Step::Done(FinishReason::Length));
        }
        Ok(Step::Feed(next))
    }

    /// From now on, tokens are sampled only where `grammar` allows them (call it before
    /// the first `advance`).
    pub fn constrain(&mut self, grammar: Constrained) {
        self.constraint = Some(grammar);
    }

    /// The unmerged adapter the sequence runs with.
    pub fn adapter(&self) -> Option<usize> {
        self.adapter
    }

    /// The state the next `Feed` token runs against.
    pub fn cache_mut(&mut self) -> &mut KvCache {
        &mut self.cache
    }

    pub fn prompt_tokens(&self) -> usize {
        self.prompt.len()
    }

    /// Ends the sequence: its state goes to `prefix_cache` for later prompts that share
    /// it, and text held back for a stop string that never came goes to `on_text`.
    pub fn finish(
        mut self,
        finish_reason: FinishReason,
        prefix_cache: &mut PrefixCache,
        mut on_text: impl FnMut(u32, &str) -> bool,
    ) -> GenerateOutput {
        let decode_time = self.decode_start.elapsed();
        // The cache holds the prompt and every generated token but the last (or, for a
        // sequence ended during its prefill, the prompt's first chunks).
        let tokens: Vec<u32> = self
            .prompt
            .iter()
            .chain(&self.generated)
            .take(self.cache.len())
            .copied()
            .collect();
        prefix_cache.insert_with(self.adapter, tokens, self.cache);
        let tail = self.stream.finish();
        if !tail.is_empty() && finish_reason != FinishReason::Cancelled {
            on_text(self.generated.last().copied().unwrap_or(0), &tail);
        }
        GenerateOutput {
            text: self.stream.decoded,
            token_ids: self.generated,
            prompt_tokens: self.prompt.len(),
            cached_tokens: self.cached_tokens,
            finish_reason,
            prefill_time: self.prefill_time,
            decode_time,
            peak_batch: 1,
            constraint_time: self
                .constraint
                .as_ref()
                .map_or(Duration::ZERO, Constrained::spent),
        }
    }
}

/// Incremental detokenization with stop-string detection.
///
/// Decoding the whole sequence each step would be quadratic; decoding token by token
/// breaks multi-byte characters and SentencePiece spacing. So, as TGI does, it decodes a
/// short window of recent tokens and emits what the window added.
struct TextStream<'a> {
    tokenizer: &'a Tokenizer,
    stops: Vec<String>,
    ids: Vec<u32>,
    prefix_offset: usize,
    read_offset: usize,
    /// Text decoded so far (stop string removed once found).
    decoded: String,
    /// Length of `decoded` already handed out.
    emitted: usize,
    /// Length of `decoded` already searched for stop strings.
    searched: usize,
}

impl<'a> TextStream<'a> {
    fn new(tokenizer: &'a Tokenizer, stops: Vec<String>) -> Self {
        TextStream {
            tokenizer,
            stops,
            ids: vec![],
            prefix_offset: 0,
            read_offset: 0,
            decoded: String::new(),
            emitted: 0,
            searched: 0,
        }
    }

    /// Adds a token; returns the newly stable text and whether a stop string was hit.
    fn push(&mut self, id: u32) -> Result<(String, bool)> {
        self.ids.push(id);
        let before = self
            .tokenizer
            .decode(&self.ids[self.prefix_offset..self.read_offset])?;
        let after = self.tokenizer.decode(&self.ids[self.prefix_offset..])?;
        if after.len() > before.len() && !after.ends_with('\u{FFFD}') {
            let new_text = after.get(before.len()..).unwrap_or_default();
            self.decoded.push_str(new_text);
            self.prefix_offset = self.read_offset;
            self.read_offset = self.ids.len();
        }
        // Only the new text can complete a stop string (earlier text was searched when it
        // came): search from the longest stop's length before it, not the whole text.
        let longest = self.stops.iter().map(String::len).max().unwrap_or(0);
        let mut from = self.searched.saturating_sub(longest.saturating_sub(1));
        while !self.decoded.is_char_boundary(from) {
            from -= 1;
        }
        self.searched = self.decoded.len();
        let window = &self.decoded[from..];
        if let Some(at) = self
            .stops
            .iter()
            .filter_map(|s| window.find(s.as_str()).map(|i| from + i))
            .min()
        {
            self.decoded.truncate(at);
            let piece = self
                .decoded
                .get(self.emitted..)
                .unwrap_or_default()
                .to_string();
            self.emitted = self.decoded.len();
            return Ok((piece, true));
        }
        // Hold back any suffix that could still grow into a stop string.
        let hold = self
            .stops
            .iter()
            .map(|s| longest_prefix_suffix(&self.decoded, s))
            .max()
            .unwrap_or(0);
        let stable = self.decoded.len() - hold;
        let piece = self
            .decoded
            .get(self.emitted..stable)
            .unwrap_or_default()
            .to_string();
        self.emitted = self.emitted.max(stable);
        Ok((piece, false))
    }

    /// Text held back at the end (no stop string came).
    fn finish(&mut self) -> String {
        let rest = self
            .decoded
            .get(self.emitted..)
            .unwrap_or_default()
            .to_string();
        self.emitted = self.decoded.len();
        rest
    }
}

/// Length of the longest suffix of `text` that is a proper prefix of `stop`.
fn longest_prefix_suffix(text: &str, stop: &str) -> usize {
    (1..stop.len())
        .rev()
        .find(|&n| stop.is_char_boundary(n) && text.ends_with(&stop[..n]))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_suffix_overlap() {
        assert_eq!(longest_prefix_suffix("abc Ne", "Next:"), 2);
        assert_eq!(longest_prefix_suffix("abc", "Next:"), 0);
        assert_eq!(longest_prefix_suffix("Next", "Next:"), 4);
    }

    #[test]
    fn sampling_params_are_validated() {
        let mut p = SamplingParams::default();
        assert!(matches!(p.sampling(), Sampling::ArgMax));
        p.temperature = -1.0;
        assert!(p
            .validate()
            .unwrap_err()
            .to_string()
            .contains("temperature"));
        p.temperature = 1e-300;
        assert!(p
            .validate()
            .unwrap_err()
            .to_string()
            .contains("at least 0.001"));
        p.temperature = 0.6;
        p.top_p = Some(1.5);
        assert!(p.validate().unwrap_err().to_string().contains("top_p"));
        p.top_p = Some(0.9);
        assert!(p.validate().is_ok());
        assert!(matches!(p.sampling(), Sampling::TopP { .. }));
    }
}
