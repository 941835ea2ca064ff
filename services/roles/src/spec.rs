//! What plays each role, declared: the input of [`crate::build`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use umi_core::agent::RoleKind;
use umi_core::presets::Sampling;
use umi_core::replay::ReplayRoles;
use umi_discovery::{EtcdTarget, WorkerInfo};
use umi_engine::{EngineConfig, SimProfile, WeightDType};
use umi_rpc::cluster::RetryPolicy;
use umi_rpc::routing::Routing;
use umi_rpc::security::ClientSecurity;

/// One value per role.
#[derive(Debug, Clone, PartialEq)]
pub struct ByRole<T> {
    pub planner: T,
    pub caller: T,
    pub summarizer: T,
}

impl<T> ByRole<T> {
    /// The same value for every role.
    pub fn all(value: T) -> Self
    where
        T: Clone,
    {
        ByRole {
            planner: value.clone(),
            caller: value.clone(),
            summarizer: value,
        }
    }

    /// Each role's value from `f`, in the order planner, caller, summarizer.
    pub fn from_fn(mut f: impl FnMut(RoleKind) -> T) -> Self {
        ByRole {
            planner: f(RoleKind::Planner),
            caller: f(RoleKind::Caller),
            summarizer: f(RoleKind::Summarizer),
        }
    }

    pub fn get(&self, role: RoleKind) -> &T {
        match role {
            RoleKind::Planner => &self.planner,
            RoleKind::Caller => &self.caller,
            RoleKind::Summarizer => &self.summarizer,
        }
    }

    /// The roles and their values, in the order planner, caller, summarizer.
    pub fn iter(&self) -> impl Iterator<Item = (RoleKind, &T)> {
        RoleKind::ALL.into_iter().map(move |r| (r, self.get(r)))
    }
}

/// What plays one role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoleSource {
    /// An engine in this process ([`RolesSpec::in_process`]).
    InProcess,
    /// umi workers over gRPC ([`RolesSpec::workers`]; one client serves every role given
    /// to workers).
    Workers,
    /// The OpenAI-compatible server at this base URL (`http(s)://host:port/v1`;
    /// [`RolesSpec::openai`]).
    OpenAi(String),
    /// Recorded outputs replayed ([`RolesSpec::replay`]): the real search, tools and
    /// answer writer, no model.
    Replay,
}

/// What one in-process role loads: a checkpoint, and a LoRA adapter merged into it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Checkpoint {
    pub model: PathBuf,
    pub adapter: Option<PathBuf>,
}

/// The engines of roles played in this process.
#[derive(Debug, Clone)]
pub enum InProcess {
    /// Each role on its checkpoint; roles on the same checkpoint (and adapter) share one
    /// engine.
    Model {
        checkpoints: ByRole<Checkpoint>,
        /// Adapters served unmerged: roles on the same base model share one engine (one
        /// copy of its weights), each role's calls adding its own adapter. Otherwise each
        /// adapter is merged into its own copy of the weights.
        unmerged_adapters: bool,
        /// Overrides the tokenizer found beside the weights.
        tokenizer: Option<PathBuf>,
        dtype: WeightDType,
        /// `cpu` or `cuda:N`.
        device: String,
        config: EngineConfig,
    },
    /// The simulated engine (a test double, no weights): one per role, as α-UMi's three
    /// checkpoints would each have theirs.
    Sim {
        profile: SimProfile,
        config: EngineConfig,
    },
}

/// Where role workers are found.
#[derive(Clone)]
pub enum Discovery {
    /// Fixed addresses, per role.
    Fixed(Vec<WorkerInfo>),
    /// Registered in etcd under `prefix`.
    Etcd {
        target: Box<EtcdTarget>,
        prefix: String,
    },
}

/// umi workers over gRPC: where they are and how they are called.
#[derive(Clone)]
pub struct Workers {
    pub discovery: Discovery,
    /// TLS settings and the token presented to workers.
    pub security: ClientSecurity,
    pub policy: RetryPolicy,
    pub routing: Routing,
}

/// How OpenAI-compatible role servers are called.
#[derive(Debug, Clone)]
pub struct OpenAiSettings {
    /// The model name sent (`None`: each server's first model).
    pub model: Option<String>,
    pub api_key: Option<String>,
    /// Seconds a call may take.
    pub deadline: Duration,
}

/// What plays each role, and the settings of the sources named. A source's settings are
/// needed only when a role names it (`build` says which is missing otherwise).
pub struct RolesSpec {
    pub sources: ByRole<RoleSource>,
    /// How every sampled call samples (each source seeds it by `CallSampling::for_call`).
    pub sampling: Sampling,
    pub in_process: Option<InProcess>,
    pub workers: Option<Workers>,
    pub openai: Option<OpenAiSettings>,
    pub replay: Option<Arc<ReplayRoles>>,
}

impl RolesSpec {
    /// Whether some role is played by `source`'s kind.
    pub fn any(&self, kind: impl Fn(&RoleSource) -> bool) -> bool {
        self.sources.iter().any(|(_, s)| kind(s))
    }

    /// Whether every role is played by `source`'s kind.
    pub fn every(&self, kind: impl Fn(&RoleSource) -> bool) -> bool {
        self.sources.iter().all(|(_, s)| kind(s))
    }
}
