//! How α-UMi's pipelines sample, named: every default of a role call (temperature,
//! top-p, the prompt-token budget, new tokens, `force_generate`) and the search budgets
//! live here, and the CLI's flags only override them.

use serde::{Deserialize, Serialize};

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

/// Agent steps per task: the demo's budget for the bundled model, else the reference's.
pub fn max_steps(demo: bool) -> usize {
    if demo {
        DEMO_MAX_STEPS
    } else {
        REFERENCE_MAX_STEPS
    }
}
