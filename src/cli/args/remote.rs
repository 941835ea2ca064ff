//! Where remote role workers are found: fixed endpoints given as flags, or etcd.

use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use umi_core::presets::Sampling;
use umi_discovery::membership::Membership;
use umi_discovery::WorkerInfo;
use umi_rpc::cluster::{ClusterRoles, RetryPolicy};
use umi_rpc::routing::Routing;

use super::etcd::EtcdArgs;

#[derive(Args, Debug, Clone)]
pub struct RemoteArgs {
    /// Planner workers (`umi worker`) at fixed addresses, e.g. http://127.0.0.1:50051;
    /// give all three --*-endpoint flags or none (repeat a flag for more replicas).
    #[arg(long)]
    pub planner_endpoint: Vec<String>,
    /// Caller workers at fixed addresses (with --planner-endpoint).
    #[arg(long)]
    pub caller_endpoint: Vec<String>,
    /// Summarizer workers at fixed addresses (with --planner-endpoint).
    #[arg(long)]
    pub summarizer_endpoint: Vec<String>,
    /// Or find role workers in etcd.
    #[command(flatten)]
    pub etcd: EtcdArgs,
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

    /// The live workers per role, if any remote source was given.
    pub async fn membership(&self) -> anyhow::Result<Option<Membership>> {
        let fixed = [
            ("planner", &self.planner_endpoint),
            ("caller", &self.caller_endpoint),
            ("summarizer", &self.summarizer_endpoint),
        ];
        let given = fixed.iter().filter(|(_, e)| !e.is_empty()).count();
        let etcd = self.etcd.endpoints();
        match (etcd.is_empty(), given) {
            (true, 0) => Ok(None),
            (true, 3) => Ok(Some(Membership::fixed(fixed.iter().flat_map(
                |(role, addresses)| addresses.iter().map(|a| WorkerInfo::at(role, a)),
            )))),
            (true, _) => bail!(
                "give all three of --planner-endpoint, --caller-endpoint and --summarizer-endpoint, or none"
            ),
            (false, 0) => Ok(Some(
                Membership::etcd(&etcd, &self.etcd.etcd_prefix)
                    .await
                    .context("discovering role workers")?,
            )),
            (false, _) => bail!("give --etcd or the --*-endpoint flags, not both"),
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

    /// The roles on remote workers, sampling as `sampling` says, if any remote source
    /// was given.
    pub async fn roles(&self, sampling: Sampling) -> anyhow::Result<Option<ClusterRoles>> {
        let policy = self.policy()?;
        Ok(self
            .membership()
            .await?
            .map(|m| ClusterRoles::new(m, sampling, policy).with_routing(self.routing.into())))
    }
}
