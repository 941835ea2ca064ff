//! Structured output: a request may constrain its text to a grammar (a JSON schema, any
//! JSON object, a regular expression or a Lark grammar). Before each token is sampled,
//! the tokens the grammar cannot take next get no probability; the grammar's matcher
//! then takes the sampled token. The grammars are compiled and matched by llguidance,
//! the library vLLM, SGLang and llama.cpp use.
//!
//! A [`Grammars`] is built once per engine from the model's vocabulary (each token's
//! bytes); a [`Constrained`] is one request's matcher. Limits on grammar size and the
//! work per token are llguidance's defaults, meant for grammars from untrusted clients.

use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{ApproximateTokEnv, SimpleVob, TokRxInfo, TokTrie, TokenizerEnv};
use llguidance::{Matcher, ParserFactory};
use serde_json::{json, Value};

use crate::error::{EngineError, Result};
use crate::tokenizer::Tokenizer;

pub use umi_core::constraint::Constraint;

/// llguidance's form of `constraint`.
fn grammar(constraint: &Constraint) -> TopLevelGrammar {
    match constraint {
        Constraint::JsonObject => TopLevelGrammar::from_json_schema(json!({"type": "object"})),
        Constraint::JsonSchema(schema) => TopLevelGrammar::from_json_schema(schema.clone()),
        Constraint::Regex(rx) => TopLevelGrammar::from_regex(rx),
        Constraint::Lark(grammar) => TopLevelGrammar::from_lark(grammar.clone()),
    }
}

/// The grammar compiler for one model's vocabulary.
pub struct Grammars {
    factory: ParserFactory,
}

impl Grammars {
    /// Reads every token's bytes from `tokenizer` for a model whose logits have
    /// `vocab_size` entries (ids the tokenizer lacks can never be sampled under a
    /// grammar); the tokenizer's EOS ids end a grammar's text.
    pub fn new(tokenizer: &Tokenizer, vocab_size: usize) -> Result<Self> {
        let failed = |m: String| EngineError::Tokenizer(format!("structured output: {m}"));
        let hf_json: Value = tokenizer
            .hf()
            .to_string(false)
            .map_err(|e| failed(e.to_string()))
            .and_then(|text| serde_json::from_str(&text).map_err(|e| failed(e.to_string())))?;
        let mut words = llguidance::token_bytes_from_tokenizer_json(&hf_json)
            .map_err(|e| failed(format!("reading the tokens' bytes: {e}")))?;
        words.resize(vocab_size, Vec::new());
        let eos = tokenizer.eos_ids();
        let first_eos = *eos
            .first()
            .ok_or_else(|| failed("the tokenizer has no EOS token to end a grammar".into()))?;
        let info = TokRxInfo::new(vocab_size as u32, first_eos);
        let trie = TokTrie::from(&info, &words).with_eos_tokens(eos);
        // Greedy tokenization of grammar literals is enough: tokens are only ever
        // sampled here, never forced, so llguidance needs no canonical tokenizer.
        let env: Arc<dyn TokenizerEnv + Sync> = Arc::new(ApproximateTokEnv::new(trie));
        let mut factory = ParserFactory::new_simple(&env).map_err(|e| failed(e.to_string()))?;
        factory.quiet();
        Ok(Grammars { factory })
    }

    /// Compiles `constraint` for one request; a grammar llguidance refuses (bad syntax,
    /// an unsupported schema keyword, over the limits) is an invalid request.
    pub fn constrain(&self, constraint: &Constraint) -> Result<Constrained> {
        let parser = self
            .factory
            .create_parser(grammar(constraint))
            .map_err(|e| EngineError::invalid("constraint", e))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(EngineError::invalid("constraint", e));
        }
        Ok(Constrained {
            matcher,
            spent: Duration::ZERO,
        })
    }
}

/// One request's position in its grammar.
pub struct Constrained {
    matcher: Matcher,
    /// Time spent in `mask` and `consume`.
    spent: Duration,
}

impl Constrained {
    /// `logits` (shape (vocab,)) with every token the grammar cannot take next set to
    /// minus infinity, on the host.
    pub fn mask(&mut self, logits: &Tensor) -> Result<Tensor> {
        let start = Instant::now();
        let masked = self.masked(logits);
        self.spent += start.elapsed();
        masked
    }

    fn masked(&mut self, logits: &Tensor) -> Result<Tensor> {
        let allowed = self
            .matcher
            .compute_mask_or_eos()
            .map_err(|e| EngineError::Step(format!("structured output: {e}")))?;
        let mut values: Vec<f32> = logits
            .to_device(&Device::Cpu)?
            .to_dtype(candle_core::DType::F32)?
            .to_vec1()?;
        if !apply(&allowed, &mut values) {
            return Err(EngineError::Step(
                "structured output: the grammar allows no token here".into(),
            ));
        }
        let n = values.len();
        Ok(Tensor::from_vec(values, n, &Device::Cpu)?)
    }

    /// Takes the sampled token; true when the grammar is complete and takes no more.
    pub fn consume(&mut self, token: u32) -> Result<bool> {
        let start = Instant::now();
        let consumed = self
            .matcher
            .consume_token(token)
            .map_err(|e| EngineError::Step(format!("structured output: {e}")));
        let complete = self.matcher.is_stopped();
        self.spent += start.elapsed();
        consumed.map(|()| complete)
    }

    /// The time the grammar has taken so far (masks and matching).
    pub fn spent(&self) -> Duration {
        self.spent
    }
}

/// Masks `logits` in place to the `allowed` tokens; false when none is allowed.
fn apply(allowed: &SimpleVob, logits: &mut [f32]) -> bool {
    let mut any = false;
    for (id, logit) in logits.iter_mut().enumerate() {
        if id < allowed.len() && allowed.is_allowed(id as u32) {
            any = true;
        } else {
            *logit = f32::NEG_INFINITY;
        }
    }
    any
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masking_keeps_only_the_allowed_tokens() {
        let mut allowed = SimpleVob::alloc(4);
        allowed.allow_token(1);
        allowed.allow_token(3);
        let mut logits = vec![1.0, 2.0, 3.0, 4.0];
        assert!(apply(&allowed, &mut logits));
        assert_eq!(logits, [f32::NEG_INFINITY, 2.0, f32::NEG_INFINITY, 4.0]);
        assert!(!apply(&SimpleVob::alloc(4), &mut logits));
    }
}
