//! How α-UMi's pipelines sample, named: every default of a role call (temperature,
//! top-p, the prompt-token budget, new tokens, `force_generate`) and the search budgets
//! live here, and the CLI's flags only override them.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::agents::AgentKind;

/// How one role call samples, and how much of its prompt it keeps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sampling {
    /// 0 is greedy.
    pub temperature: f64,
    pub top_p: Option<f64>,
    pub top_k: Option<usize>,
    /// The base seed; each call adds its own offset.
    pub seed: u64,
    /// Prompt tokens kept, the last ones (the reference truncates from the left); 0
    /// keeps all.
    pub max_input_tokens: usize,
    pub max_new_tokens: usize,
    /// A stop token sampled before this many new tokens does not stop generation (1 is
    /// ToolBench's `force_generate`: an EOS at the first step is ignored).
    pub min_new_tokens: usize,
}

/// A role source's sampling with the one rule for a call's seed, shared by every way of
/// playing a role (in process, umi workers, an OpenAI-compatible server): the base seed
/// plus the call's offset, wrapping. A call inside a task carries its offset
/// (`RoleRequest::seed_offset`, set by `task::solve`; the static pipeline's step index);
/// a call outside a task takes the number of such calls this source made before it, so
/// sampled calls with equal prompts still differ.
#[derive(Debug)]
pub struct CallSampling {
    base: Sampling,
    untasked: AtomicU64,
}

impl CallSampling {
    pub fn new(base: Sampling) -> Self {
        CallSampling {
            base,
            untasked: AtomicU64::new(0),
        }
    }

    /// The sampling every call starts from (its seed the base seed).
    pub fn base(&self) -> &Sampling {
        &self.base
    }

    /// The sampling of one call: `seed_offset` its offset, `None` for a call outside a
    /// task (which counts it).
    pub fn for_call(&self, seed_offset: Option<u64>) -> Sampling {
        let offset = seed_offset.unwrap_or_else(|| self.untasked.fetch_add(1, Ordering::Relaxed));
        Sampling {
            seed: self.base.seed.wrapping_add(offset),
            ..self.base
        }
    }
}

/// The seed of every preset (and of the CLI's `--seed`).
pub const DEFAULT_SEED: u64 = 42;

/// The real-time (DFSDT) pipeline: temperature 0.5, no top-p, 512 new tokens, the last
/// 3576 prompt tokens, EOS ignored at the first step.
pub const REALTIME: Sampling = Sampling {
    temperature: 0.5,
    top_p: None,
    top_k: None,
    seed: DEFAULT_SEED,
    max_input_tokens: 3576,
    max_new_tokens: 512,
    min_new_tokens: 1,
};

/// The static (step-level) evaluation: the checkpoint's generation config (LLaMA-2's
/// defaults, temperature 0.6 and top-p 0.9) and the last 3750 prompt tokens.
pub const STATIC: Sampling = Sampling {
    temperature: 0.6,
    top_p: Some(0.9),
    top_k: None,
    seed: DEFAULT_SEED,
    max_input_tokens: 3750,
    max_new_tokens: 512,
    min_new_tokens: 0,
};

/// Agent steps per task before the search aborts (the reference's `max_query_count`).
pub const REFERENCE_MAX_STEPS: usize = 200;

/// Budgets for the bundled 135M demo model, which rarely emits EOS: with the reference's
/// (512 tokens, 200 steps) a demo run would take hours.
pub const DEMO_MAX_NEW_TOKENS: usize = 128;
pub const DEMO_MAX_STEPS: usize = 12;

/// The real-time sampling, with the demo's token budget for the bundled model.
pub fn realtime(demo: bool) -> Sampling {
    Sampling {
        max_new_tokens: if demo {
            DEMO_MAX_NEW_TOKENS
        } else {
            REALTIME.max_new_tokens
        },
        ..REALTIME
    }
}

/// ToolLLaMA's prompt budget: `generate_stream`'s `context_len - max_new_tokens - 8`
/// with ToolLLaMA's 8192-token context.
pub const TOOLLLAMA_MAX_INPUT_TOKENS: usize = 8192 - 512 - 8;

/// `chatgpt_function`'s `max_tokens`.
pub const CHAT_FUNCTIONS_MAX_TOKENS: usize = 1024;

/// The real-time sampling of `agent`: ToolLLaMA's keeps its longer prompt (its other
/// settings are α-UMi's: temperature 0.5, 512 new tokens, `force_generate`); an
/// OpenAI-style chat sends its new tokens (`max_tokens`, 1024) and the seed, leaving the
/// rest to the server as `chatgpt_function` does.
pub fn realtime_for(agent: AgentKind, demo: bool) -> Sampling {
    let sampling = realtime(demo);
    match agent {
        AgentKind::ToolLlama => Sampling {
            max_input_tokens: TOOLLLAMA_MAX_INPUT_TOKENS,
            ..sampling
        },
        AgentKind::OpenAiFunctions if !demo => Sampling {
            max_new_tokens: CHAT_FUNCTIONS_MAX_TOKENS,
            ..sampling
        },
        AgentKind::AlphaUmi | AgentKind::OpenAiFunctions => sampling,
    }
}

/// Agent steps per task: the demo's budget for the bundled model, else the reference's.
pub fn max_steps(demo: bool) -> usize {
    if demo {
        DEMO_MAX_STEPS
    } else {
        REFERENCE_MAX_STEPS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_is_seeded_by_its_offset_or_by_the_untasked_calls_before_it() {
        let s = CallSampling::new(Sampling {
            seed: u64::MAX,
            ..REALTIME
        });
        assert_eq!(s.for_call(Some(3)).seed, 2, "base + offset, wrapping");
        assert_eq!(s.for_call(None).seed, u64::MAX);
        assert_eq!(s.for_call(Some(7)).seed, 6, "a task's call does not count");
        assert_eq!(s.for_call(None).seed, 0);
        assert_eq!(s.for_call(None).max_new_tokens, REALTIME.max_new_tokens);
    }
}
