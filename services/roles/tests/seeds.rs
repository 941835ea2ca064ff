//! A call is seeded by one rule (`CallSampling::for_call`) whatever plays its role: the
//! same requests, in the same order, sent to an engine in process, to a umi worker over
//! gRPC and to an OpenAI-compatible server, are seeded alike, inside a task (the
//! request's offset) and outside one (the calls made outside a task before it).
//!
//! The in-process engine and the worker run the simulated engine, whose text is a
//! function of the call's seed (`sim_policy::output`): their replies show the seed each
//! used. The OpenAI-compatible server is a stand-in that records the `seed` of each
//! completion request.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use umi_core::agent::{RoleKind, RoleModels, RoleRequest};
use umi_core::presets::{Sampling, REALTIME};
use umi_core::prompt::HistoryTurn;
use umi_discovery::WorkerInfo;
use umi_engine::{EngineConfig, SimEngine, SimProfile};
use umi_roles::{
    build, ByRole, Discovery, InProcess, OpenAiSettings, RoleSource, RolesSpec, Workers,
};
use umi_rpc::cluster::RetryPolicy;
use umi_rpc::security::{ClientSecurity, ServerSecurity};
use umi_rpc::serve::Shutdown;
use umi_worker::server::{serve, RoleService};
use umi_worker::sim_policy;

const BASE_SEED: u64 = 1000;

fn sampling() -> Sampling {
    Sampling {
        seed: BASE_SEED,
        ..REALTIME
    }
}

fn instant_profile() -> SimProfile {
    SimProfile {
        prefill_overhead_ms: 0.0,
        prefill_ms_per_token: 0.0,
        decode_step_ms: 0.0,
        decode_ms_per_context_token: 0.0,
        ..SimProfile::default()
    }
}

fn request(seed_offset: Option<u64>) -> RoleRequest {
    RoleRequest {
        task_id: "seeds".into(),
        seed_offset,
        ..RoleRequest::alpha_umi(
            RoleKind::Planner,
            vec![],
            vec![HistoryTurn::new("user", "What is the weather in Paris?")],
            None,
        )
    }
}

/// Calls outside a task and inside one, interleaved, and the seed each must get: the
/// base seed plus the task's offset, or plus the number of untasked calls before it.
fn calls() -> Vec<(Option<u64>, u64)> {
    vec![
        (None, BASE_SEED),
        (None, BASE_SEED + 1),
        (Some(7), BASE_SEED + 7),
        (None, BASE_SEED + 2),
        (Some(0), BASE_SEED),
    ]
}

fn spec(source: RoleSource) -> RolesSpec {
    RolesSpec {
        sources: ByRole::all(source),
        sampling: sampling(),
        in_process: None,
        workers: None,
        openai: None,
        replay: None,
    }
}

/// The seed whose simulated output `text` is, among the seeds `calls` may use.
fn seed_of(text: &str, request: &RoleRequest) -> Option<u64> {
    (BASE_SEED..BASE_SEED + 16).find(|&seed| sim_policy::output(request, seed) == text)
}

async fn seeds_from_text(roles: &dyn RoleModels) -> Vec<Option<u64>> {
    let mut seeds = Vec::new();
    for (offset, _) in calls() {
        let request = request(offset);
        let reply = roles.generate(request.clone()).await.expect("role call");
        seeds.push(seed_of(&reply.text, &request));
    }
    seeds
}

fn expected() -> Vec<Option<u64>> {
    calls().into_iter().map(|(_, seed)| Some(seed)).collect()
}

async fn in_process_seeds() -> Vec<Option<u64>> {
    let mut spec = spec(RoleSource::InProcess);
    spec.in_process = Some(InProcess::Sim {
        profile: instant_profile(),
        config: EngineConfig::default(),
    });
    let roles = build(spec).await.expect("in-process roles");
    seeds_from_text(roles.models.as_ref()).await
}

async fn worker_seeds() -> Vec<Option<u64>> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let engine = SimEngine::start(instant_profile(), EngineConfig::default()).unwrap();
    let service = RoleService::new(RoleKind::Planner, engine);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let shutdown = Shutdown::on(async {
            let _ = stopped.await;
        });
        serve(listener, service, &ServerSecurity::open(), shutdown).await
    });
    let mut spec = spec(RoleSource::Workers);
    spec.workers = Some(Workers {
        discovery: Discovery::Fixed(vec![WorkerInfo::at("planner", &address)]),
        security: ClientSecurity::open(),
        policy: RetryPolicy {
            deadline: Duration::from_secs(20),
            ..RetryPolicy::default()
        },
        routing: Default::default(),
    });
    let roles = build(spec).await.expect("worker roles");
    let seeds = seeds_from_text(roles.models.as_ref()).await;
    let _ = stop.send(());
    let _ = server.await;
    seeds
}

/// A stand-in OpenAI-compatible server: answers every completion request with a fixed
/// text and records its `seed`.
async fn fake_openai_server(seeds: Arc<Mutex<Vec<Option<u64>>>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let seeds = seeds.clone();
            tokio::spawn(async move {
                let Some(body) = read_request_body(&mut socket).await else {
                    return;
                };
                let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                seeds.lock().unwrap().push(request["seed"].as_u64());
                let reply = r#"{"choices":[{"text":"ok"}],"usage":{"prompt_tokens":1,"completion_tokens":1}}"#;
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    reply.len()
                );
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(reply.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    base
}

/// The body of one HTTP/1.1 request (its `content-length` bytes after the headers).
async fn read_request_body(socket: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            while data.len() < end + 4 + length {
                let n = socket.read(&mut buf).await.ok()?;
                if n == 0 {
                    return None;
                }
                data.extend_from_slice(&buf[..n]);
            }
            return Some(data[end + 4..end + 4 + length].to_vec());
        }
        let n = socket.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buf[..n]);
    }
}

async fn openai_seeds() -> Vec<Option<u64>> {
    let seeds = Arc::new(Mutex::new(Vec::new()));
    let base = fake_openai_server(seeds.clone()).await;
    let mut spec = spec(RoleSource::OpenAi(base));
    spec.openai = Some(OpenAiSettings {
        model: Some("stand-in".into()),
        api_key: None,
        deadline: Duration::from_secs(20),
    });
    let roles = build(spec).await.expect("OpenAI-compatible roles");
    for (offset, _) in calls() {
        roles
            .models
            .generate(request(offset))
            .await
            .expect("role call");
    }
    let seeds = seeds.lock().unwrap().clone();
    seeds
}

#[tokio::test]
async fn every_role_source_seeds_a_call_alike() {
    let in_process = in_process_seeds().await;
    let worker = worker_seeds().await;
    let openai = openai_seeds().await;
    assert_eq!(in_process, expected(), "in process");
    assert_eq!(worker, expected(), "umi worker over gRPC");
    assert_eq!(
        openai,
        expected(),
        "OpenAI-compatible server (a call outside a task must count like the others)"
    );
}
