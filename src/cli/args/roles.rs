//! Which model plays each α-UMi role in process, what answers the roles (`--roles`), and
//! the flags over a mode's sampling preset (`umi_core::presets`). The roles are built by
//! `umi_roles` from the spec these flags fill.

use std::path::PathBuf;

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::Args;
use umi_core::agent::RoleKind;
use umi_core::presets::{Sampling, DEFAULT_SEED};
use umi_roles::{ByRole, Checkpoint, InProcess};
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
    pub adapters: RoleAdapters,
    /// How adapters are applied: `merged` into each role's own copy of the weights at
    /// load (no cost per token), or `unmerged`: roles on the same base model share one
    /// engine and one copy of its weights, each call adding its role's low-rank product
    /// (three roles at the memory of one model).
    #[arg(long, value_enum, default_value_t = AdapterMode::Merged)]
    pub adapter_mode: AdapterMode,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Decode a role's output under a grammar (structured output). `caller`: `Action:`
    /// one of the offered tools, then an `Action Input:` JSON object of that tool's
    /// parameters. Off by default: the reference decodes freely. Served by umi's
    /// engines and workers, and by OpenAI-compatible servers that take vLLM's
    /// `guided_grammar` in llguidance's Lark (vLLM with its `guidance` backend); `umi
    /// run` only, roles called from this process (not replayed, not simulated).
    #[arg(long, value_enum, value_name = "ROLE")]
    pub constrain: Option<ConstrainRole>,
}

/// The roles `--constrain` can hold to a grammar.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConstrainRole {
    Caller,
}

/// Each role's PEFT LoRA adapter: for `umi run`/`umi eval` merged into its checkpoint or
/// served unmerged as `--adapter-mode` says (default: `--adapter`); on a worker of several
/// roles, served unmerged on its one model.
#[derive(Args, Debug, Clone, Default)]
pub struct RoleAdapters {
    /// The planner's LoRA adapter directory.
    #[arg(long, value_name = "DIR")]
    pub planner_adapter: Option<PathBuf>,
    /// The caller's LoRA adapter directory.
    #[arg(long, value_name = "DIR")]
    pub caller_adapter: Option<PathBuf>,
    /// The summarizer's LoRA adapter directory.
    #[arg(long, value_name = "DIR")]
    pub summarizer_adapter: Option<PathBuf>,
}

impl RoleAdapters {
    pub fn of(&self, role: RoleKind) -> Option<&PathBuf> {
        match role {
            RoleKind::Planner => self.planner_adapter.as_ref(),
            RoleKind::Caller => self.caller_adapter.as_ref(),
            RoleKind::Summarizer => self.summarizer_adapter.as_ref(),
        }
    }
}

/// How LoRA adapters are applied (`--adapter-mode`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdapterMode {
    Merged,
    Unmerged,
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
    /// The engines of the roles played in this process: each role's checkpoint (its own
    /// flag, else --model, else the bundled model), or with the simulated engine one per
    /// role.
    pub fn in_process(&self, engine: &EngineArgs) -> anyhow::Result<InProcess> {
        let m = &self.model;
        if engine.is_sim() {
            anyhow::ensure!(
                m.model.is_none(),
                "--model and --engine sim exclude each other: the simulated engine loads no weights"
            );
            return Ok(InProcess::Sim {
                profile: engine.profile()?,
                config: m.engine_config()?,
            });
        }
        let base = m.model_path()?;
        let config = m.engine_config()?;
        let checkpoints = ByRole::from_fn(|role| {
            let model = match role {
                RoleKind::Planner => &self.planner_model,
                RoleKind::Caller => &self.caller_model,
                RoleKind::Summarizer => &self.summarizer_model,
            };
            Checkpoint {
                model: model.clone().unwrap_or_else(|| base.clone()),
                adapter: self.adapters.of(role).or(m.adapter.as_ref()).cloned(),
            }
        });
        Ok(InProcess::Model {
            checkpoints,
            unmerged_adapters: self.adapter_mode == AdapterMode::Unmerged,
            tokenizer: m.tokenizer.clone(),
            dtype: m.dtype,
            device: m.device.clone(),
            config,
        })
    }

    /// The three roles on in-process model engines (no simulated engine), sampling with
    /// `preset` under the flags.
    pub fn start(&self, preset: Sampling) -> anyhow::Result<EngineRoles> {
        let engines = self.in_process(&EngineArgs::default())?;
        Ok(umi_roles::start_in_process(
            &engines,
            self.sampling.over(preset),
        )?)
    }
}

/// What answers the roles of `umi run` and `umi eval static` (`--roles`): models (as the
/// other flags say: in process, workers, OpenAI-compatible servers), or recorded outputs
/// replayed. The two commands name the values as they always have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answerers {
    Models,
    Replay,
}

impl Answerers {
    /// `umi run --roles`: `models` or `replay`.
    pub fn run_values() -> impl TypedValueParser<Value = Answerers> {
        Self::parser([
            PossibleValue::new("models").help("Models: the bundled one, --model checkpoints, remote workers or the simulated engine"),
            PossibleValue::new("replay").help("Recorded trajectories (the --record answer files) replayed as α-UMi role outputs: the real search, tools and answer writer, no model. For checking the pipeline end to end on solved queries"),
        ])
    }

    /// `umi eval static --roles`: `model` or `oracle` (each role replays the reference's
    /// output for its step).
    pub fn eval_values() -> impl TypedValueParser<Value = Answerers> {
        Self::parser([
            PossibleValue::new("model").help("The models given by --model / --planner-model / ..."),
            PossibleValue::new("oracle").help(
                "Each role replays the reference's output for its step (checks the pipeline)",
            ),
        ])
    }

    /// The first value is `Models`, the second `Replay`.
    fn parser(values: [PossibleValue; 2]) -> impl TypedValueParser<Value = Answerers> {
        let models = values[0].get_name().to_string();
        PossibleValuesParser::new(values).map(move |v| {
            if v == models {
                Answerers::Models
            } else {
                Answerers::Replay
            }
        })
    }
}

/// `--role planner|caller|summarizer`, parsed to the core's `RoleKind` (its names).
pub fn role_kind() -> impl TypedValueParser<Value = RoleKind> {
    PossibleValuesParser::new(RoleKind::ALL.map(|r| PossibleValue::new(r.as_str())))
        .try_map(|name| RoleKind::parse(&name).ok_or("not a role"))
}
