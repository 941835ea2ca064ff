//! Which model plays each α-UMi role, and the flags over a mode's sampling preset
//! (`umi_core::presets`). The role calls themselves are `umi_worker::roles::EngineRoles`.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use umi_core::presets::{Sampling, DEFAULT_SEED};
use umi_engine::Engine;
use umi_worker::roles::EngineRoles;

use super::engine::EngineArgs;
use super::model::ModelArgs;

#[derive(Args, Debug, Clone)]
pub struct RoleArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Planner checkpoint (default: --model, the single-backbone case).
    #[arg(long)]
    pub planner_model: Option<PathBuf>,
    /// Caller checkpoint (default: --model).
    #[arg(long)]
    pub caller_model: Option<PathBuf>,
    /// Summarizer checkpoint (default: --model).
    #[arg(long)]
    pub summarizer_model: Option<PathBuf>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

/// How every role call samples: each flag overrides the mode's preset.
#[derive(Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Prompt tokens kept (the last ones) per call; the reference uses 3750 (static) or
    /// 3576 (real time).
    #[arg(long)]
    pub max_input_tokens: Option<usize>,
    /// New tokens per call (the reference: 512).
    #[arg(long)]
    pub max_new_tokens: Option<usize>,
    /// Sampling temperature (0 = greedy). Default: the reference's for the mode (0.5 in
    /// real time, 0.6 static).
    #[arg(long)]
    pub temperature: Option<f64>,
    /// Nucleus sampling's top-p. Default: the reference's for the mode (none in real
    /// time, 0.9 static).
    #[arg(long)]
    pub top_p: Option<f64>,
    /// Base seed; each call adds its own offset.
    #[arg(long, default_value_t = DEFAULT_SEED)]
    pub seed: u64,
}

impl SamplingArgs {
    /// The preset with the flags given over it.
    pub fn over(&self, preset: Sampling) -> Sampling {
        Sampling {
            temperature: self.temperature.unwrap_or(preset.temperature),
            top_p: self.top_p.or(preset.top_p),
            seed: self.seed,
            max_input_tokens: self.max_input_tokens.unwrap_or(preset.max_input_tokens),
            max_new_tokens: self.max_new_tokens.unwrap_or(preset.max_new_tokens),
            ..preset
        }
    }
}

impl RoleArgs {
    /// Loads each distinct checkpoint once and starts the three roles on them, sampling
    /// with `preset` under the flags.
    pub fn start(&self, preset: Sampling) -> anyhow::Result<EngineRoles> {
        self.start_on(&EngineArgs::default(), preset)
    }

    /// The same on `engine`: with the simulated engine, one per role (as α-UMi's three
    /// checkpoints would each have theirs).
    pub fn start_on(&self, engine: &EngineArgs, preset: Sampling) -> anyhow::Result<EngineRoles> {
        if engine.is_sim() {
            let start = || engine.start(&self.model);
            return Ok(EngineRoles::new(
                start()?,
                start()?,
                start()?,
                self.sampling.over(preset),
            ));
        }
        let mut engines: HashMap<PathBuf, Engine> = HashMap::new();
        let base = self.model.model_path()?;
        let mut engine_for = |path: Option<&PathBuf>| -> anyhow::Result<Engine> {
            let path = path.cloned().unwrap_or_else(|| base.clone());
            if let Some(e) = engines.get(&path) {
                return Ok(e.clone());
            }
            let args = ModelArgs {
                model: Some(path.clone()),
                ..self.model.clone()
            };
            let engine = args.start()?;
            engines.insert(path, engine.clone());
            Ok(engine)
        };
        let planner = engine_for(self.planner_model.as_ref()).context("planner model")?;
        let caller = engine_for(self.caller_model.as_ref()).context("caller model")?;
        let summarizer = engine_for(self.summarizer_model.as_ref()).context("summarizer model")?;
        Ok(EngineRoles::new(
            planner,
            caller,
            summarizer,
            self.sampling.over(preset),
        ))
    }
}
