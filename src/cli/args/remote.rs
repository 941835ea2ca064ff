//! Where remote role workers are found: fixed endpoints given as flags, or etcd.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use clap::{Args, ValueEnum};
use umi_core::agent::RoleKind;
use umi_core::presets::Sampling;
use umi_discovery::WorkerInfo;
use umi_roles::openai_role;
use umi_roles::{Discovery, OpenAiSettings, RoleSource, RolesSpec, Workers};
use umi_rpc::cluster::{ClusterRoles, RetryPolicy};
use umi_rpc::routing::Routing;
use umi_rpc::security::ClientSecurity;

use super::etcd::EtcdArgs;
use super::security::ClientTlsArgs;

#[derive(Args, Debug, Clone)]
pub struct RemoteArgs {
    /// Planner workers (`umi worker`) at fixed addresses, e.g. http://127.0.0.1:50051;
    /// give all three --*-endpoint flags or none (repeat a flag for more replicas). An
    /// OpenAI-compatible server plays the role when given as
    /// `openai+http://host:port/v1` (vLLM, TGI, a worker's --openai-listen; one per
    /// role; `umi run` only).
    #[arg(long)]
    pub planner_endpoint: Vec<String>,
    /// Caller workers at fixed addresses (with --planner-endpoint).
    #[arg(long)]
    pub caller_endpoint: Vec<String>,
    /// Summarizer workers at fixed addresses (with --planner-endpoint).
    #[arg(long)]
    pub summarizer_endpoint: Vec<String>,
    /// The model name sent to OpenAI-compatible role endpoints (default: each server's
    /// first model).
    #[arg(long, env = "UMI_OPENAI_MODEL")]
    pub openai_model: Option<String>,
    /// The API key sent to OpenAI-compatible role endpoints.
    #[arg(long, env = "OPENAI_API_KEY", hide_env_values = true)]
    pub openai_api_key: Option<String>,
    /// Or find role workers in etcd.
    #[command(flatten)]
    pub etcd: EtcdArgs,
    /// How to reach https:// workers (and coordinators).
    #[command(flatten)]
    pub tls: ClientTlsArgs,
    /// The bearer token presented to role workers (a file holding one token; workers
    /// started with --auth-token-file require it).
    #[arg(long, env = "UMI_WORKER_TOKEN_FILE")]
    pub worker_token_file: Option<PathBuf>,
    /// Seconds a role call may take, retries and waiting for a worker included.
    #[arg(long, default_value_t = 600.0)]
    pub role_deadline: f64,
    /// Workers tried per role call.
    #[arg(long, default_value_t = 3)]
    pub role_attempts: usize,
    /// How a role call picks a replica: `affinity` keeps a task's calls of a role on the
    /// replica that served the last one (its prefix cache holds most of the prompt)
    /// unless that replica carries 1.25x the mean load; `least-outstanding` takes the
    /// least loaded replica every time.
    #[arg(long, value_enum, default_value = "affinity")]
    pub routing: RoutingArg,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RoutingArg {
    Affinity,
    LeastOutstanding,
}

impl From<RoutingArg> for Routing {
    fn from(r: RoutingArg) -> Self {
        match r {
            RoutingArg::Affinity => Routing::Affinity,
            RoutingArg::LeastOutstanding => Routing::LeastOutstanding,
        }
    }
}

impl RemoteArgs {
    pub fn has_endpoints(&self) -> bool {
        !self.planner_endpoint.is_empty()
            || !self.caller_endpoint.is_empty()
            || !self.summarizer_endpoint.is_empty()
    }

    pub fn is_set(&self) -> bool {
        self.etcd.is_set()
            || !self.planner_endpoint.is_empty()
            || !self.caller_endpoint.is_empty()
            || !self.summarizer_endpoint.is_empty()
    }

    /// Each role's fixed endpoints (empty: none given).
    pub fn endpoints(&self) -> [(RoleKind, &Vec<String>); 3] {
        [
            (RoleKind::Planner, &self.planner_endpoint),
            (RoleKind::Caller, &self.caller_endpoint),
            (RoleKind::Summarizer, &self.summarizer_endpoint),
        ]
    }

    /// The OpenAI-compatible base URL a role is given, if any (one per role, not mixed
    /// with umi workers).
    fn openai_base(&self, role: RoleKind) -> anyhow::Result<Option<&str>> {
        let endpoints = self.endpoints();
        let list = endpoints
            .iter()
            .find(|(r, _)| *r == role)
            .map_or(&[][..], |(_, l)| l.as_slice());
        let bases: Vec<&str> = list
            .iter()
            .filter_map(|e| openai_role::base_url(e))
            .collect();
        match bases.len() {
            0 => Ok(None),
            1 if list.len() == 1 => Ok(bases.first().copied()),
            _ => bail!(
                "--{}-endpoint: one OpenAI-compatible endpoint (openai+http://…) per role, not mixed with workers",
                role.as_str()
            ),
        }
    }

    fn has_openai(&self) -> bool {
        self.endpoints().iter().any(|(_, list)| {
            list.iter()
                .any(|e| e.starts_with(openai_role::SCHEME_PREFIX))
        })
    }

    /// Where the role workers are, if any were given (OpenAI-compatible endpoints aside):
    /// every role's endpoints, or the planner's alone for a single-model agent.
    fn discovery(&self, planner_only: bool) -> anyhow::Result<Option<Discovery>> {
        let fixed: Vec<(&str, Vec<&String>)> = self
            .endpoints()
            .iter()
            .map(|(role, list)| {
                let workers = list
                    .iter()
                    .filter(|e| !e.starts_with(openai_role::SCHEME_PREFIX))
                    .collect();
                (role.as_str(), workers)
            })
            .collect();
        let given = self
            .endpoints()
            .iter()
            .filter(|(_, e)| !e.is_empty())
            .count();
        let workers = fixed.iter().filter(|(_, e)| !e.is_empty()).count();
        let etcd = || -> anyhow::Result<Option<Discovery>> {
            Ok(Some(Discovery::Etcd {
                target: Box::new(self.etcd.target()?),
                prefix: self.etcd.etcd_prefix.clone(),
            }))
        };
        match (self.etcd.endpoints().is_empty(), given) {
            (true, 0) => Ok(None),
            // Only OpenAI-compatible endpoints (the other roles play in process).
            (true, _) if workers == 0 => Ok(None),
            (true, 1) if planner_only && !fixed[0].1.is_empty() => Ok(Some(Discovery::Fixed(
                fixed[0]
                    .1
                    .iter()
                    .map(|a| WorkerInfo::at(fixed[0].0, a))
                    .collect(),
            ))),
            (true, _) if planner_only => bail!(
                "a single-model agent is played by the planner's model: give --planner-endpoint alone"
            ),
            (true, 3) => Ok(Some(Discovery::Fixed(
                fixed
                    .iter()
                    .flat_map(|(role, addresses)| {
                        addresses.iter().map(|a| WorkerInfo::at(role, a))
                    })
                    .collect(),
            ))),
            (true, _) => bail!(
                "give all three of --planner-endpoint, --caller-endpoint and --summarizer-endpoint, or none"
            ),
            (false, 0) => etcd(),
            (false, _) if workers == 0 => etcd(),
            (false, _) => bail!("give --etcd or the --*-endpoint flags of workers, not both"),
        }
    }

    pub fn policy(&self) -> anyhow::Result<RetryPolicy> {
        if !self.role_deadline.is_finite() || self.role_deadline <= 0.0 || self.role_attempts == 0 {
            bail!("--role-deadline must be positive and --role-attempts at least 1");
        }
        Ok(RetryPolicy {
            deadline: Duration::from_secs_f64(self.role_deadline),
            max_attempts: self.role_attempts,
            ..RetryPolicy::default()
        })
    }

    /// The role workers and how they are called, if any were given.
    fn workers(&self, planner_only: bool) -> anyhow::Result<Option<Workers>> {
        let policy = self.policy()?;
        let security = self.worker_security()?;
        Ok(self.discovery(planner_only)?.map(|discovery| Workers {
            discovery,
            security,
            policy,
            routing: self.routing.into(),
        }))
    }

    /// The roles on remote workers, sampling as `sampling` says, if any remote source
    /// was given (the planner's alone for a single-model agent). (The coordinator's path:
    /// umi workers only.)
    pub async fn roles(
        &self,
        sampling: Sampling,
        planner_only: bool,
    ) -> anyhow::Result<Option<ClusterRoles>> {
        if self.has_openai() {
            bail!("OpenAI-compatible role endpoints (openai+http://…) are taken by umi run, not by the coordinator: serve the role with umi workers");
        }
        match self.workers(planner_only)? {
            Some(w) => Ok(Some(umi_roles::workers(&w, sampling).await?)),
            None => Ok(None),
        }
    }

    /// What this process presents to role workers: TLS settings and the worker token.
    pub fn worker_security(&self) -> anyhow::Result<ClientSecurity> {
        self.tls.security(self.worker_token_file.as_deref())
    }

    /// The roles of `umi run` in `spec`: umi workers, and OpenAI-compatible servers for
    /// the roles given one; roles given neither (without etcd) keep `spec`'s source
    /// (played in process).
    /// `planner_only`: a single-model agent's run, whose planner plays the agent (its
    /// source is then every role's).
    pub fn apply(&self, spec: &mut RolesSpec, planner_only: bool) -> anyhow::Result<()> {
        let workers = self.workers(planner_only)?;
        for role in RoleKind::ALL {
            let source = match self.openai_base(role)? {
                Some(base) => {
                    if self.openai_api_key.is_some() {
                        anyhow::Context::context(
                            umi_tools::http::check_clear_text(base),
                            "--openai-api-key",
                        )?;
                    }
                    RoleSource::OpenAi(base.to_string())
                }
                None if workers.is_some() => RoleSource::Workers,
                None => continue,
            };
            match role {
                RoleKind::Planner => spec.sources.planner = source,
                RoleKind::Caller => spec.sources.caller = source,
                RoleKind::Summarizer => spec.sources.summarizer = source,
            }
        }
        spec.workers = workers;
        spec.openai = Some(OpenAiSettings {
            model: self.openai_model.clone(),
            api_key: self.openai_api_key.clone(),
            deadline: self.policy()?.deadline,
        });
        Ok(())
    }
}
