//! What the engine reports to a metrics recorder (Prometheus, when the binary installs
//! one; nothing otherwise), named in the spirit of vLLM's and Dynamo's metrics.

use std::time::Duration;

use metrics::{counter, gauge, histogram};

/// Requests being decoded now.
pub const REQUESTS_RUNNING: &str = "umi_engine_requests_running";
/// Requests queued, not yet admitted.
pub const REQUESTS_WAITING: &str = "umi_engine_requests_waiting";
/// Sequences per decode step.
pub const BATCH_SIZE: &str = "umi_engine_batch_size";
/// From a request's arrival to its first token: queueing and prefill.
pub const TIME_TO_FIRST_TOKEN: &str = "umi_engine_time_to_first_token_seconds";
/// A request's mean time per token after the first.
pub const INTER_TOKEN_LATENCY: &str = "umi_engine_inter_token_latency_seconds";
pub const PROMPT_TOKENS: &str = "umi_engine_prompt_tokens_total";
pub const GENERATION_TOKENS: &str = "umi_engine_generation_tokens_total";
/// Prompt tokens looked up in the prefix cache, and those it served.
pub const PREFIX_CACHE_QUERIES: &str = "umi_engine_prefix_cache_query_tokens_total";
pub const PREFIX_CACHE_HITS: &str = "umi_engine_prefix_cache_hit_tokens_total";
/// Bytes of key/value state the prefix cache holds.
pub const PREFIX_CACHE_BYTES: &str = "umi_engine_prefix_cache_bytes";
/// Requests that ended, by how (`stop`, `length`, `cancelled`, `error`, ...).
pub const REQUESTS_FINISHED: &str = "umi_engine_requests_finished_total";

pub(crate) fn queue(running: usize, waiting: usize) {
    gauge!(REQUESTS_RUNNING).set(running as f64);
    gauge!(REQUESTS_WAITING).set(waiting as f64);
}

pub(crate) fn decode_step(batch: usize) {
    histogram!(BATCH_SIZE).record(batch as f64);
}

/// Steps whose decode rows rode along a prompt chunk (mixed steps).
pub const MIXED_STEPS: &str = "umi_engine_mixed_steps_total";

pub(crate) fn mixed_step() {
    counter!(MIXED_STEPS).increment(1);
}

/// From a request's arrival to its admission into the running batch.
pub const QUEUE_WAIT: &str = "umi_engine_queue_wait_seconds";
/// 1, labelled with what serves requests: `engine="model"` (a real forward pass) or
/// `engine="sim"` (the simulated engine, a test double), and the model's name.
pub const ENGINE_INFO: &str = "umi_engine_info";

pub(crate) fn queue_wait(since_arrival: Duration) {
    histogram!(QUEUE_WAIT).record(since_arrival.as_secs_f64());
}

pub(crate) fn engine_kind(kind: umi_core::agent::EngineKind, model: &str) {
    gauge!(ENGINE_INFO, "engine" => kind.label(), "model" => model.to_string()).set(1.0);
}

pub(crate) fn first_token(since_arrival: Duration) {
    histogram!(TIME_TO_FIRST_TOKEN).record(since_arrival.as_secs_f64());
}

/// A finished request's tokens and pace.
pub(crate) fn finished(
    reason: &'static str,
    prompt: usize,
    cached: usize,
    generated: usize,
    decode_time: Duration,
    prefix_cache_bytes: usize,
) {
    counter!(REQUESTS_FINISHED, "reason" => reason).increment(1);
    counter!(PROMPT_TOKENS).increment(prompt as u64);
    counter!(GENERATION_TOKENS).increment(generated as u64);
    counter!(PREFIX_CACHE_QUERIES).increment(prompt as u64);
    counter!(PREFIX_CACHE_HITS).increment(cached as u64);
    gauge!(PREFIX_CACHE_BYTES).set(prefix_cache_bytes as f64);
    if generated > 1 {
        histogram!(INTER_TOKEN_LATENCY).record(decode_time.as_secs_f64() / (generated - 1) as f64);
    }
}

/// Requests refused because the queue was full.
pub const REQUESTS_REFUSED: &str = "umi_engine_requests_refused_total";

pub(crate) fn refused() {
    counter!(REQUESTS_REFUSED).increment(1);
}

/// A request whose caller went away during its prefill.
pub(crate) fn cancelled_in_prefill() {
    counter!(REQUESTS_FINISHED, "reason" => "cancelled").increment(1);
}

pub(crate) fn failed() {
    counter!(REQUESTS_FINISHED, "reason" => "error").increment(1);
}
