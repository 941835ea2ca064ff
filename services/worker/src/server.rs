//! The gRPC service of one role worker.

use std::net::SocketAddr;
use std::time::Instant;

use tonic::{Request, Response, Status};
use umi_core::agent::RoleKind;
use umi_core::prompt::RolePrompts;
use umi_engine::{Engine, GenerateRequest, Prompt, SamplingParams};

use crate::convert::{request_from_pb, role_to_pb};
use crate::pb;
use crate::pb::role_worker_server::{RoleWorker, RoleWorkerServer};

pub struct RoleService {
    role: RoleKind,
    engine: Engine,
    prompts: RolePrompts,
}

impl RoleService {
    pub fn new(role: RoleKind, engine: Engine) -> Self {
        RoleService {
            role,
            engine,
            prompts: RolePrompts::toolbench(),
        }
    }

    pub fn into_server(self) -> RoleWorkerServer<RoleService> {
        RoleWorkerServer::new(self)
    }
}

#[tonic::async_trait]
impl RoleWorker for RoleService {
    async fn generate(
        &self,
        request: Request<pb::GenerateRequest>,
    ) -> Result<Response<pb::GenerateResponse>, Status> {
        let started = Instant::now();
        let wire = request.into_inner();
        let role_request = request_from_pb(&wire).map_err(Status::invalid_argument)?;
        if role_request.role != self.role {
            return Err(Status::invalid_argument(format!(
                "this worker serves the {} role, not {}",
                self.role.as_str(),
                role_request.role.as_str()
            )));
        }
        let span = tracing::info_span!("worker_generate", role = self.role.as_str(), task_id = %wire.task_id);
        let _enter = span.enter();
        let sampling = wire.sampling.unwrap_or_default();
        let prompt = role_request.render(&self.prompts);
        let request = GenerateRequest {
            max_new_tokens: sampling.max_new_tokens.max(1) as usize,
            min_new_tokens: sampling.min_new_tokens as usize,
            sampling: SamplingParams {
                temperature: sampling.temperature,
                top_p: sampling.top_p,
                top_k: sampling.top_k.map(|k| k as usize),
                seed: sampling.seed,
            },
            ..GenerateRequest::new(Prompt::Tokens(vec![]))
        };
        drop(_enter);
        let out = self
            .engine
            .generate_truncated(&prompt, sampling.max_input_tokens as usize, request)
            .await
            .map_err(|e| match e {
                umi_engine::EngineError::InvalidArgument { .. }
                | umi_engine::EngineError::PromptTooLong { .. } => {
                    Status::invalid_argument(e.to_string())
                }
                other => Status::internal(other.to_string()),
            })?;
        tracing::info!(
            parent: &span,
            prompt_tokens = out.prompt_tokens,
            cached_tokens = out.cached_tokens,
            generated_tokens = out.generated_tokens(),
            latency_ms = started.elapsed().as_millis() as u64,
            "role call served"
        );
        Ok(Response::new(pb::GenerateResponse {
            prompt_tokens: out.prompt_tokens as u32,
            cached_tokens: out.cached_tokens as u32,
            generated_tokens: out.generated_tokens() as u32,
            finish_reason: format!("{:?}", out.finish_reason),
            text: out.text,
        }))
    }

    async fn info(
        &self,
        _request: Request<pb::InfoRequest>,
    ) -> Result<Response<pb::InfoResponse>, Status> {
        let info = self.engine.info();
        Ok(Response::new(pb::InfoResponse {
            role: role_to_pb(self.role) as i32,
            model: info.name.clone(),
            dtype: info.dtype.clone(),
            device: info.device.clone(),
            context_len: info.context_len as u32,
        }))
    }
}

/// Serves until `shutdown` completes, then stops accepting and finishes in-flight calls.
pub async fn serve(
    addr: SocketAddr,
    service: RoleService,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(service.into_server())
        .serve_with_shutdown(addr, shutdown)
        .await
}
