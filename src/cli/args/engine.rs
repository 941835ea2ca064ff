//! Which engine serves role calls: the model, or the simulated engine (a test double for
//! load and fault runs; `umi_engine::sim`).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};
use umi_engine::{SimEngine, SimProfile};
use umi_worker::roles::Backend;

use super::model::ModelArgs;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum EngineKind {
    /// The checkpoint (--model), run by candle.
    #[default]
    Model,
    /// The simulated engine, a test double: no weights; it schedules and batches as the
    /// model engine does but waits the time a latency profile gives, and writes role
    /// outputs from a seeded policy. Answer files and metrics say `engine: sim`.
    Sim,
}

#[derive(Args, Debug, Clone, Default)]
pub struct EngineArgs {
    /// What serves role calls: `model` or `sim` (the simulated engine: a test double for
    /// load and fault runs, never a model).
    #[arg(long, value_enum, default_value = "model")]
    pub engine: EngineKind,
    /// The simulated engine's latency profile, a JSON file of `umi_engine::SimProfile`'s
    /// fields (default: LLaMA-2-7B bf16 on one H100, from the roofline).
    #[arg(long)]
    pub sim_profile: Option<PathBuf>,
}

impl EngineArgs {
    pub fn is_sim(&self) -> bool {
        self.engine == EngineKind::Sim
    }

    /// The profile the simulated engine runs with.
    pub fn profile(&self) -> anyhow::Result<SimProfile> {
        match &self.sim_profile {
            Some(path) => SimProfile::from_file(path).with_context(|| {
                format!("reading the simulated engine's profile {}", path.display())
            }),
            None => Ok(SimProfile::default()),
        }
    }

    /// Starts what serves one role: the model `model` names, or a simulated engine with
    /// `model`'s batch, queue and prefix-cache settings.
    pub fn start(&self, model: &ModelArgs) -> anyhow::Result<Backend> {
        match self.engine {
            EngineKind::Model => Ok(model.start()?.into()),
            EngineKind::Sim => {
                anyhow::ensure!(
                    model.model.is_none(),
                    "--model and --engine sim exclude each other: the simulated engine loads no weights"
                );
                Ok(SimEngine::start(self.profile()?, model.engine_config()?)?.into())
            }
        }
    }
}
