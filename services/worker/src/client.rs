//! `RemoteRoles`: the three roles served by remote workers, behind the same trait as the
//! in-process engines.

use tonic::transport::{Channel, Endpoint};
use umi_core::agent::{BoxFuture, Generated, RoleKind, RoleModels, RoleRequest};

use crate::convert::request_to_pb;
use crate::pb;
use crate::pb::role_worker_client::RoleWorkerClient;

#[derive(Clone)]
pub struct RemoteRoles {
    planner: RoleWorkerClient<Channel>,
    caller: RoleWorkerClient<Channel>,
    summarizer: RoleWorkerClient<Channel>,
    sampling: pb::Sampling,
}

impl RemoteRoles {
    /// Connects lazily: an unreachable worker fails its calls, not the construction.
    pub fn new(
        planner: &str,
        caller: &str,
        summarizer: &str,
        sampling: pb::Sampling,
    ) -> Result<Self, String> {
        let channel = |url: &str| {
            Endpoint::from_shared(url.to_string())
                .map(|e| RoleWorkerClient::new(e.connect_lazy()))
                .map_err(|e| format!("invalid worker address {url:?}: {e}"))
        };
        Ok(RemoteRoles {
            planner: channel(planner)?,
            caller: channel(caller)?,
            summarizer: channel(summarizer)?,
            sampling,
        })
    }
}

impl RoleModels for RemoteRoles {
    fn generate<'a>(&'a self, request: RoleRequest) -> BoxFuture<'a, Result<Generated, String>> {
        Box::pin(async move {
            let mut client = match request.role {
                RoleKind::Planner => self.planner.clone(),
                RoleKind::Caller => self.caller.clone(),
                RoleKind::Summarizer => self.summarizer.clone(),
            };
            let wire = request_to_pb(&request, self.sampling, "");
            let reply = client
                .generate(wire)
                .await
                .map_err(|s| format!("{} worker: {}", request.role.as_str(), s.message()))?
                .into_inner();
            Ok(Generated {
                text: reply.text,
                prompt_tokens: reply.prompt_tokens as usize,
                generated_tokens: reply.generated_tokens as usize,
            })
        })
    }
}
