//! The gRPC service of a role worker: one role, or several on one engine (each with its
//! own LoRA adapter, served unmerged on one copy of the base weights).

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_stream::Stream;
use tonic::server::NamedService;
use tonic::{Request, Response, Status};
use tracing::Instrument;
use umi_core::agent::RoleKind;
use umi_engine::{FinishReason, GenerateOutput, GenerateRequest, Liveness, StreamEvent};
use umi_rpc::pb;
use umi_rpc::pb::role_worker_server::{RoleWorker, RoleWorkerServer};
use umi_rpc::security::ServerSecurity;
use umi_rpc::serve::{HealthProbe, ServeOptions, Shutdown};
use umi_rpc::wire::{request_from_pb, role_to_pb, sampling_from_pb, status_from};

use crate::roles::{classify, Backend, RoleEngine};

pub struct RoleService {
    /// The roles served, each by its engine handle (the same engine, its own adapter).
    roles: Vec<(RoleKind, RoleEngine)>,
    load: Arc<Load>,
}

#[derive(Default)]
struct Load {
    served: AtomicU64,
    in_flight: AtomicUsize,
}

/// Counts a call as in flight until dropped (also when the client goes away).
struct InFlight(Arc<Load>);

impl InFlight {
    fn new(load: &Arc<Load>) -> Self {
        load.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(load.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.served.fetch_add(1, Ordering::Relaxed);
    }
}

impl RoleService {
    pub fn new(role: RoleKind, engine: impl Into<Backend>) -> Self {
        RoleService::serving(vec![(role, None)], engine)
    }

    /// Serves each of `roles` on `engine`, a role's calls adding its adapter (a name the
    /// engine serves) when it has one. `roles` is not empty.
    pub fn serving(roles: Vec<(RoleKind, Option<String>)>, engine: impl Into<Backend>) -> Self {
        let engine = RoleEngine::new(engine);
        RoleService {
            roles: roles
                .into_iter()
                .map(|(role, adapter)| (role, engine.clone().with_adapter(adapter)))
                .collect(),
            load: Arc::default(),
        }
    }

    /// The engine of the first role (they share one).
    fn engine(&self) -> &RoleEngine {
        &self.roles[0].1
    }

    fn role_names(&self) -> String {
        let names: Vec<&str> = self.roles.iter().map(|(r, _)| r.as_str()).collect();
        names.join("+")
    }

    pub fn into_server(self) -> RoleWorkerServer<RoleService> {
        RoleWorkerServer::new(self).max_decoding_message_size(umi_rpc::MAX_ROLE_REQUEST)
    }

    /// Validates the request at the edge and makes it ready for the engine, with the
    /// adapter of the role it asks for.
    async fn engine_request(&self, wire: &pb::GenerateRequest) -> Result<GenerateRequest, Status> {
        let role_request = request_from_pb(wire).map_err(|e| status_from(&e))?;
        let Some((_, engine)) = self.roles.iter().find(|(r, _)| *r == role_request.role) else {
            let noun = if self.roles.len() == 1 {
                "role"
            } else {
                "roles"
            };
            return Err(Status::invalid_argument(format!(
                "this worker serves the {} {noun}, not {}",
                self.role_names(),
                role_request.role.as_str()
            )));
        };
        engine
            .prepare(&role_request, &sampling_from_pb(wire.sampling))
            .await
            .map_err(|e| status_from(&e))
    }
}

fn response(out: GenerateOutput, engine: &str) -> pb::GenerateResponse {
    pb::GenerateResponse {
        engine: engine.to_string(),
        prompt_tokens: out.prompt_tokens as u32,
        cached_tokens: out.cached_tokens as u32,
        generated_tokens: out.generated_tokens() as u32,
        finish_reason: finish_reason(out.finish_reason) as i32,
        text: out.text,
    }
}

fn finish_reason(reason: FinishReason) -> pb::FinishReason {
    match reason {
        FinishReason::StopToken => pb::FinishReason::StopToken,
        FinishReason::StopString => pb::FinishReason::StopString,
        FinishReason::Length => pb::FinishReason::Length,
        FinishReason::ContextFull => pb::FinishReason::ContextFull,
        FinishReason::Cancelled => pb::FinishReason::Cancelled,
    }
}

/// The role a request names, for its span (its validation comes after).
fn role_name(request: &pb::GenerateRequest) -> &'static str {
    pb::Role::try_from(request.role)
        .ok()
        .and_then(umi_rpc::wire::role_from_pb)
        .map_or("unknown", RoleKind::as_str)
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<pb::GenerateChunk, Status>> + Send>>;

#[tonic::async_trait]
impl RoleWorker for RoleService {
    async fn generate(
        &self,
        request: Request<pb::GenerateRequest>,
    ) -> Result<Response<pb::GenerateResponse>, Status> {
        let _in_flight = InFlight::new(&self.load);
        let started = Instant::now();
        let span = tracing::info_span!(
            "worker_generate",
            role = role_name(request.get_ref()),
            task_id = request.get_ref().task_id.as_str()
        );
        umi_rpc::trace_context::adopt(&span, request.metadata());
        let wire = request.into_inner();
        let request = self.engine_request(&wire).instrument(span.clone()).await?;
        let out = self
            .engine()
            .generate(request)
            .instrument(span.clone())
            .await
            .map_err(|e| status_from(&e))?;
        tracing::info!(
            parent: &span,
            prompt_tokens = out.prompt_tokens,
            cached_tokens = out.cached_tokens,
            generated_tokens = out.generated_tokens(),
            peak_batch = out.peak_batch,
            latency_ms = started.elapsed().as_millis() as u64,
            "role call served"
        );
        Ok(Response::new(response(
            out,
            self.engine().engine().kind().label(),
        )))
    }

    type GenerateStreamStream = ChunkStream;

    async fn generate_stream(
        &self,
        request: Request<pb::GenerateRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        let in_flight = InFlight::new(&self.load);
        let span = tracing::info_span!(
            "worker_generate_stream",
            role = role_name(request.get_ref()),
            task_id = request.get_ref().task_id.as_str()
        );
        umi_rpc::trace_context::adopt(&span, request.metadata());
        let wire = request.into_inner();
        let request = self.engine_request(&wire).instrument(span.clone()).await?;
        let mut events = self.engine().stream(request).map_err(|e| status_from(&e))?;
        let kind = self.engine().engine().kind().label();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            let _in_flight = in_flight;
            while let Some(event) = events.recv().await {
                let chunk = match event {
                    Ok(StreamEvent::Text { text, .. }) => {
                        Ok(pb::GenerateChunk { text, done: None })
                    }
                    Ok(StreamEvent::Done(out)) => Ok(pb::GenerateChunk {
                        text: String::new(),
                        done: Some(response(out, kind)),
                    }),
                    Err(e) => Err(status_from(&classify(e))),
                };
                // A client that hung up cancels the generation (dropping `events`).
                if tx.send(chunk).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn info(
        &self,
        _request: Request<pb::InfoRequest>,
    ) -> Result<Response<pb::InfoResponse>, Status> {
        let info = self.engine().engine().info();
        Ok(Response::new(pb::InfoResponse {
            role: role_to_pb(self.roles[0].0) as i32,
            roles: self
                .roles
                .iter()
                .map(|(r, _)| role_to_pb(*r) as i32)
                .collect(),
            model: info.name.clone(),
            dtype: info.dtype.clone(),
            device: info.device.clone(),
            context_len: info.context_len as u32,
            served: self.load.served.load(Ordering::Relaxed),
            in_flight: self.load.in_flight.load(Ordering::Relaxed) as u32,
        }))
    }
}

/// Serves on `listener` until `shutdown`'s signal, then stops in its phases (leave,
/// drain the in-flight calls, stop); callers are admitted as `security` says (TLS,
/// tokens). `grpc.health.v1.Health` reports SERVING meanwhile.
/// Health turns NOT_SERVING when the engine thread has exited, or when requests wait and
/// its loop has not gone on for [`ENGINE_STALL_BOUND`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    service: RoleService,
    security: &ServerSecurity,
    shutdown: Shutdown,
) -> Result<(), tonic::transport::Error> {
    let name = <RoleWorkerServer<RoleService> as NamedService>::NAME;
    let options = ServeOptions {
        probe: Some(engine_probe(
            service.engine().engine_handle(),
            ENGINE_STALL_BOUND,
        )),
        ..ServeOptions::default()
    };
    let routes = tonic::service::Routes::new(security.guard(service.into_server()));
    umi_rpc::serve::serve_with(listener, name, routes, security, shutdown, options).await
}

/// How long the engine's loop may go without a step while requests wait before the
/// worker reports NOT_SERVING: far longer than any step (a decode step takes
/// milliseconds, a full-context prefill on a CPU seconds), so only a loop that hangs
/// trips it.
pub const ENGINE_STALL_BOUND: Duration = Duration::from_secs(120);

/// The health probe of a worker serving `engine`: failing while its inference thread has
/// exited, or is stuck for `stall_after` (see [`Liveness`]).
pub fn engine_probe(engine: Backend, stall_after: Duration) -> HealthProbe {
    Arc::new(move || match engine.liveness(stall_after) {
        Liveness::Alive => Ok(()),
        Liveness::Exited => Err("the engine's inference thread has exited".into()),
        Liveness::Stuck { silent } => Err(format!(
            "the engine's inference thread has made no progress for {} s while requests wait",
            silent.as_secs()
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wire says why generation stopped as the proto's enum, each reason its own value.
    #[test]
    fn responses_carry_the_finish_reason_as_the_proto_enum() {
        let reasons = [
            (FinishReason::StopToken, pb::FinishReason::StopToken),
            (FinishReason::StopString, pb::FinishReason::StopString),
            (FinishReason::Length, pb::FinishReason::Length),
            (FinishReason::ContextFull, pb::FinishReason::ContextFull),
            (FinishReason::Cancelled, pb::FinishReason::Cancelled),
        ];
        for (reason, wire) in reasons {
            let out = GenerateOutput {
                text: "x".into(),
                token_ids: vec![1],
                prompt_tokens: 3,
                cached_tokens: 0,
                finish_reason: reason,
                prefill_time: Duration::ZERO,
                decode_time: Duration::ZERO,
                peak_batch: 1,
                constraint_time: Duration::ZERO,
            };
            let sent = response(out, "model");
            assert_eq!(sent.finish_reason(), wire, "{reason:?}");
        }
    }

    /// The probe fails while the engine's loop is stuck with requests waiting, and passes
    /// again once it goes on.
    #[tokio::test]
    async fn the_engine_probe_fails_while_the_engine_loop_is_stuck() {
        let stalling = umi_engine::SimProfile {
            prefill_overhead_ms: 1_500.0,
            ..umi_engine::SimProfile::default()
        };
        let engine: Backend =
            umi_engine::SimEngine::start(stalling, umi_engine::EngineConfig::default())
                .unwrap()
                .into();
        let probe = engine_probe(engine.clone(), Duration::from_millis(200));
        assert_eq!(probe(), Ok(()));
        let request = |text: &str| GenerateRequest {
            max_new_tokens: 1,
            script: Some("x".into()),
            ..GenerateRequest::new(umi_engine::Prompt::Text(text.into()))
        };
        // The first's prefill holds the loop; the second, sent after it was admitted, waits.
        let _first = engine.stream(request("first")).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _second = engine.stream(request("second")).unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let why = probe().unwrap_err();
        assert!(why.contains("no progress"), "{why}");
        tokio::time::sleep(Duration::from_millis(3_500)).await;
        assert_eq!(probe(), Ok(()), "the loop went on");
    }
}
