//! A [`RolesSpec`] turned into the `RoleModels` the agent calls.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use candle_core::Device;
use umi_core::agent::{PerRole, RoleKind, RoleModels};
use umi_core::presets::Sampling;
use umi_core::CoreError;
use umi_discovery::membership::Membership;
use umi_discovery::DiscoveryError;
use umi_engine::{
    Engine, EngineConfig, EngineError, LoadOptions, LoadedModel, SimEngine, WeightDType,
};
use umi_rpc::cluster::ClusterRoles;
use umi_worker::roles::EngineRoles;

use crate::openai_role::OpenAiRole;
use crate::spec::{ByRole, Checkpoint, Discovery, InProcess, RoleSource, RolesSpec, Workers};

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A role names a source whose settings the spec does not give.
    #[error("the {role} role has no {source_kind}")]
    Unset {
        role: &'static str,
        source_kind: &'static str,
    },
    #[error("{role} model: loading model {path}")]
    Load {
        role: &'static str,
        path: PathBuf,
        #[source]
        source: EngineError,
    },
    /// The engine could not start (a bad device or engine setting).
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("discovering role workers")]
    Discovery(#[source] DiscoveryError),
    #[error("the {role} role's endpoint")]
    OpenAi {
        role: &'static str,
        #[source]
        source: CoreError,
    },
}

/// The roles built from a spec.
pub struct Roles {
    /// What the agent calls.
    pub models: Arc<dyn RoleModels>,
    /// The in-process engines when they play every role, so their token usage is every
    /// call's.
    pub engines: Option<Arc<EngineRoles>>,
    /// Each role played by an OpenAI-compatible server: its model and base URL.
    pub openai: Vec<(RoleKind, String, String)>,
}

/// Builds what `spec` declares: the workers' client once for every role given to
/// workers, each OpenAI-compatible server (asked for its model unless named), and the
/// in-process engines (each distinct checkpoint loaded once). Roles of one kind share one
/// instance, so calls outside a task are counted per source, as without a spec.
pub async fn build(spec: RolesSpec) -> Result<Roles, BuildError> {
    let unset = |role: RoleKind, source_kind| BuildError::Unset {
        role: role.as_str(),
        source_kind,
    };
    let first = |kind: fn(&RoleSource) -> bool| {
        spec.sources
            .iter()
            .find(|(_, s)| kind(s))
            .map(|(role, _)| role)
    };
    let cluster: Option<Arc<dyn RoleModels>> = match first(|s| *s == RoleSource::Workers) {
        None => None,
        Some(role) => {
            let w = spec.workers.as_ref().ok_or(unset(role, "workers"))?;
            Some(Arc::new(workers(w, spec.sampling).await?))
        }
    };
    let mut openai = Vec::new();
    let mut servers: HashMap<RoleKind, Arc<dyn RoleModels>> = HashMap::new();
    for (role, source) in spec.sources.iter() {
        let RoleSource::OpenAi(base) = source else {
            continue;
        };
        let settings = spec
            .openai
            .as_ref()
            .ok_or(unset(role, "OpenAI-compatible settings"))?;
        let server = OpenAiRole::connect(
            base,
            settings.model.clone(),
            settings.api_key.clone(),
            spec.sampling,
            settings.deadline,
        )
        .await
        .map_err(|source| BuildError::OpenAi {
            role: role.as_str(),
            source,
        })?;
        openai.push((role, server.model().to_string(), base.clone()));
        servers.insert(role, Arc::new(server));
    }
    let engines = match first(|s| *s == RoleSource::InProcess) {
        None => None,
        Some(role) => {
            let settings = spec
                .in_process
                .as_ref()
                .ok_or(unset(role, "in-process engine"))?;
            Some(Arc::new(start_in_process(settings, spec.sampling)?))
        }
    };
    let replay: Option<Arc<dyn RoleModels>> = match first(|s| *s == RoleSource::Replay) {
        None => None,
        Some(role) => Some(spec.replay.clone().ok_or(unset(role, "recordings"))?),
    };
    let played = ByRole::from_fn(|role| -> Arc<dyn RoleModels> {
        match spec.sources.get(role) {
            RoleSource::InProcess => engines.clone().expect("started above"),
            RoleSource::Workers => cluster.clone().expect("built above"),
            RoleSource::OpenAi(_) => servers[&role].clone(),
            RoleSource::Replay => replay.clone().expect("given above"),
        }
    });
    let one_source = spec
        .sources
        .iter()
        .all(|(_, s)| s == spec.sources.get(RoleKind::Planner))
        && !matches!(spec.sources.planner, RoleSource::OpenAi(_));
    let models: Arc<dyn RoleModels> = if one_source {
        played.planner
    } else {
        Arc::new(PerRole {
            planner: played.planner,
            caller: played.caller,
            summarizer: played.summarizer,
        })
    };
    let every_in_process = spec.every(|s| *s == RoleSource::InProcess);
    Ok(Roles {
        models,
        engines: engines.filter(|_| every_in_process),
        openai,
    })
}

/// The three roles on in-process engines sampling with `sampling`: each distinct
/// checkpoint loaded once, or one simulated engine per role.
pub fn start_in_process(spec: &InProcess, sampling: Sampling) -> Result<EngineRoles, BuildError> {
    match spec {
        InProcess::Sim { profile, config } => {
            let start = || SimEngine::start(profile.clone(), config.clone());
            Ok(EngineRoles::new(start()?, start()?, start()?, sampling))
        }
        InProcess::Model {
            checkpoints,
            unmerged_adapters,
            tokenizer,
            dtype,
            device,
            config,
        } => {
            let device = umi_engine::parse_device(device)?;
            if *unmerged_adapters {
                start_unmerged(checkpoints, tokenizer, *dtype, &device, config, sampling)
            } else {
                start_merged(checkpoints, tokenizer, *dtype, &device, config, sampling)
            }
        }
    }
}

/// One engine per distinct checkpoint (base and adapter), each adapter merged into its
/// own copy of the weights.
fn start_merged(
    checkpoints: &ByRole<Checkpoint>,
    tokenizer: &Option<PathBuf>,
    dtype: WeightDType,
    device: &Device,
    config: &EngineConfig,
    sampling: Sampling,
) -> Result<EngineRoles, BuildError> {
    let mut loaded: HashMap<&Checkpoint, Engine> = HashMap::new();
    let mut engines = Vec::with_capacity(3);
    for (role, checkpoint) in checkpoints.iter() {
        if let Some(engine) = loaded.get(checkpoint) {
            engines.push(engine.clone());
            continue;
        }
        let model = load_checkpoint(role, checkpoint, tokenizer, dtype, device)?;
        let engine = Engine::start_with(model, config.clone());
        loaded.insert(checkpoint, engine.clone());
        engines.push(engine);
    }
    let [planner, caller, summarizer]: [Engine; 3] = engines
        .try_into()
        .unwrap_or_else(|_| unreachable!("one engine per role"));
    Ok(EngineRoles::new(planner, caller, summarizer, sampling))
}

/// One engine per base model, each role's LoRA adapter served unmerged on its base: the
/// three roles on one model take one copy of its weights.
fn start_unmerged(
    checkpoints: &ByRole<Checkpoint>,
    tokenizer: &Option<PathBuf>,
    dtype: WeightDType,
    device: &Device,
    config: &EngineConfig,
    sampling: Sampling,
) -> Result<EngineRoles, BuildError> {
    let mut models: Vec<(&PathBuf, LoadedModel)> = Vec::new();
    let mut served = Vec::new();
    // Per role: its model's index in `models` and its adapter's name there.
    let mut placed: Vec<(RoleKind, usize, Option<&'static str>)> = Vec::new();
    for (role, checkpoint) in checkpoints.iter() {
        let base = &checkpoint.model;
        let at = match models.iter().position(|(p, _)| *p == base) {
            Some(at) => at,
            None => {
                let plain = Checkpoint {
                    model: base.clone(),
                    adapter: None,
                };
                models.push((
                    base,
                    load_checkpoint(role, &plain, tokenizer, dtype, device)?,
                ));
                models.len() - 1
            }
        };
        let name = match &checkpoint.adapter {
            Some(dir) => Some(serve_once(&mut models[at].1, &mut served, base, dir, role)?),
            None => None,
        };
        placed.push((role, at, name));
    }
    let engines: Vec<Engine> = models
        .into_iter()
        .map(|(_, model)| Engine::start_with(model, config.clone()))
        .collect();
    let engine_of = |i: usize| engines[placed[i].1].clone();
    let mut roles = EngineRoles::new(engine_of(0), engine_of(1), engine_of(2), sampling);
    for (role, _, name) in &placed {
        if let Some(name) = name {
            roles = roles.with_adapter(*role, name);
        }
    }
    Ok(roles)
}

/// Serves the adapter in `dir` on `model` (the checkpoint `base`) under `role`'s name,
/// unless it is served there already (`served`: base, adapter, name), and returns its
/// name.
fn serve_once<'a>(
    model: &mut LoadedModel,
    served: &mut Vec<(&'a PathBuf, &'a PathBuf, &'static str)>,
    base: &'a PathBuf,
    dir: &'a PathBuf,
    role: RoleKind,
) -> Result<&'static str, BuildError> {
    if let Some((_, _, name)) = served.iter().find(|(b, d, _)| *b == base && *d == dir) {
        return Ok(name);
    }
    model
        .serve_adapter(role.as_str(), dir)
        .map_err(|source| BuildError::Load {
            role: role.as_str(),
            path: dir.clone(),
            source,
        })?;
    served.push((base, dir, role.as_str()));
    Ok(role.as_str())
}

/// Loads `checkpoint` (its adapter, if any, merged) for `role`'s error messages.
fn load_checkpoint(
    role: RoleKind,
    checkpoint: &Checkpoint,
    tokenizer: &Option<PathBuf>,
    dtype: WeightDType,
    device: &Device,
) -> Result<LoadedModel, BuildError> {
    let opts = LoadOptions {
        model: checkpoint.model.clone(),
        tokenizer: tokenizer.clone(),
        dtype,
        device: device.clone(),
        adapter: checkpoint.adapter.clone(),
    };
    umi_engine::load(&opts).map_err(|source| BuildError::Load {
        role: role.as_str(),
        path: checkpoint.model.clone(),
        source,
    })
}

/// The client of umi workers, sampling with `sampling`.
pub async fn workers(spec: &Workers, sampling: Sampling) -> Result<ClusterRoles, BuildError> {
    let membership = match &spec.discovery {
        Discovery::Fixed(workers) => Membership::fixed(workers.iter().cloned()),
        Discovery::Etcd { target, prefix } => Membership::etcd(target, prefix)
            .await
            .map_err(BuildError::Discovery)?,
    };
    Ok(
        ClusterRoles::new(membership, spec.security.clone(), sampling, spec.policy)
            .with_routing(spec.routing),
    )
}
