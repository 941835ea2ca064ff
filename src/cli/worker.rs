//! `umi worker`: serve an α-UMi role over gRPC (`proto/umi/v1/roles.proto`), or several
//! roles on one copy of the model (each with its own LoRA adapter, served unmerged), and,
//! with `--etcd`, register in etcd under each role so coordinators find it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use umi_core::agent::RoleKind;
use umi_discovery::registry::Registration;
use umi_discovery::WorkerInfo;
use umi_engine::Engine;
use umi_rpc::serve::Shutdown;
use umi_worker::openai_server;
use umi_worker::roles::{Backend, RoleEngine};
use umi_worker::server::{serve, RoleService};

use super::args::engine::EngineArgs;
use super::args::etcd::EtcdArgs;
use super::args::metrics::MetricsArgs;
use super::args::model::ModelArgs;
use super::args::roles::{role_kind, RoleAdapters};
use super::args::security::{describe, ServerSecurityArgs};

#[derive(Args, Debug)]
pub struct WorkerArgs {
    /// The role this worker serves; repeat it to serve several on one copy of the model
    /// (its certificate must then name each role's `<role>.umi-worker`).
    #[arg(long, value_parser = role_kind(), required = true)]
    pub role: Vec<RoleKind>,
    /// Each role's adapter, served unmerged on the model (one copy of the base weights
    /// for all the roles served; each call adds its role's adapter).
    #[command(flatten)]
    pub adapters: RoleAdapters,
    /// Address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// The address clients should use, registered in etcd (default: http://<listen>, or
    /// https:// with TLS; set it when listening on 0.0.0.0, e.g. to the pod IP).
    #[arg(long, env = "UMI_ADVERTISE")]
    pub advertise: Option<String>,
    /// Register in etcd, so coordinators find this worker.
    #[command(flatten)]
    pub etcd: EtcdArgs,
    /// Who may call this worker: TLS and bearer tokens (required off loopback).
    #[command(flatten)]
    pub security: ServerSecurityArgs,
    /// Seconds the registration outlives a worker that stops renewing it (a crash).
    #[arg(long, default_value_t = 10)]
    pub lease_ttl: u64,
    /// Also serve the model over OpenAI-compatible HTTP (`/v1/completions`,
    /// `/v1/chat/completions`, `/v1/models`) on this address, for other clients.
    #[arg(long)]
    pub openai_listen: Option<SocketAddr>,
    /// The API key those endpoints require as a bearer token (needed when
    /// --openai-listen is not a loopback address).
    #[arg(long, env = "UMI_OPENAI_API_KEY", hide_env_values = true)]
    pub openai_api_key: Option<String>,
    /// The most new tokens one request to those endpoints generates; a request asking
    /// for more gets this many (a small local simulator or judge then ends in bounded
    /// time).
    #[arg(long, value_name = "N")]
    pub openai_max_tokens: Option<std::num::NonZeroUsize>,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub engine: EngineArgs,
    #[command(flatten)]
    pub metrics: MetricsArgs,
}

impl WorkerArgs {
    /// The roles served, each with its adapter's path, once each.
    fn roles(&self) -> anyhow::Result<Vec<(RoleKind, Option<PathBuf>)>> {
        let mut roles: Vec<(RoleKind, Option<PathBuf>)> = Vec::new();
        for role in &self.role {
            if roles.iter().any(|(r, _)| r == role) {
                anyhow::bail!("--role {} is given twice", role.as_str());
            }
            roles.push((*role, self.adapters.of(*role).cloned()));
        }
        if self.openai_listen.is_some() && roles.iter().any(|(_, a)| a.is_some()) {
            anyhow::bail!("--openai-listen serves the model as loaded, without the roles' adapters: drop it, or serve each adapted role from its own worker with --adapter (merged)");
        }
        for role in RoleKind::ALL {
            if self.adapters.of(role).is_some() && !self.role.contains(&role) {
                anyhow::bail!(
                    "--{}-adapter is given but this worker does not serve the {0} role (add --role {0})",
                    role.as_str()
                );
            }
        }
        Ok(roles)
    }

    /// The engine: the model with each role's adapter served unmerged under the role's
    /// name, or as `EngineArgs::start` starts it when no role has one.
    fn start(&self, roles: &[(RoleKind, Option<PathBuf>)]) -> anyhow::Result<Backend> {
        if roles.iter().all(|(_, a)| a.is_none()) {
            return self.engine.start(&self.model);
        }
        anyhow::ensure!(
            !self.engine.is_sim(),
            "--<role>-adapter needs a model: the simulated engine loads no weights"
        );
        anyhow::ensure!(
            self.model.adapter.is_none(),
            "--adapter merges one adapter into the weights; with --<role>-adapter each role's is served unmerged: give one or the other"
        );
        let mut model = self.model.load()?;
        for (role, adapter) in roles {
            if let Some(dir) = adapter {
                model
                    .serve_adapter(role.as_str(), dir)
                    .with_context(|| format!("--{}-adapter {}", role.as_str(), dir.display()))?;
            }
        }
        Ok(Engine::start_with(model, self.model.engine_config()?).into())
    }
}

pub async fn run(a: WorkerArgs) -> anyhow::Result<()> {
    let roles = a.roles()?;
    let names: Vec<&str> = roles.iter().map(|(r, _)| r.as_str()).collect();
    let names = names.join("+");
    a.metrics.install(a.security.insecure_network)?;
    let security = a.security.security(a.listen)?;
    let engine = a.start(&roles)?;
    let listener = tokio::net::TcpListener::bind(a.listen)
        .await
        .with_context(|| format!("listening on {}", a.listen))?;
    let addr = listener.local_addr()?;
    let info = engine.info().clone();
    let etcd = a.etcd.endpoints();
    let advertise = a.advertise.clone().filter(|a| !a.is_empty());
    if !etcd.is_empty() && advertise.is_none() && addr.ip().is_unspecified() {
        anyhow::bail!(
            "--listen {} is reachable at no single address: give --advertise (e.g. {}://<this host's IP>:{}) so clients can find this worker in etcd",
            a.listen,
            security.scheme(),
            addr.port()
        );
    }
    // One registration per role served, each under its role's key.
    let mut registrations: Vec<Registration> = Vec::new();
    if !etcd.is_empty() {
        let address = advertise.unwrap_or_else(|| format!("{}://{addr}", security.scheme()));
        for (role, _) in &roles {
            let worker = WorkerInfo {
                role: role.as_str().to_string(),
                address: address.clone(),
                model: info.name.clone(),
                device: info.device.clone(),
                capacity: info.max_batch as u32,
            };
            let registered = Registration::register(
                &a.etcd.target()?,
                &a.etcd.etcd_prefix,
                worker,
                Duration::from_secs(a.lease_ttl),
            )
            .await;
            let r = match registered {
                Ok(r) => r,
                Err(e) => {
                    // Leave no role half-registered.
                    for r in registrations {
                        let _ = r.deregister().await;
                    }
                    // The role is named only where there are several.
                    let what = match roles.len() {
                        1 => "registering in etcd".to_string(),
                        _ => format!("registering in etcd as the {} role", role.as_str()),
                    };
                    return Err(e).context(what);
                }
            };
            eprintln!("umi worker: registered as {}", r.key());
            registrations.push(r);
        }
    }
    eprintln!(
        "umi worker: {names} role on {}://{addr} ({}; {})",
        security.scheme(),
        info.name,
        describe(&security)
    );
    let (stop_http, http_stopped) = tokio::sync::watch::channel(false);
    let http = match a.openai_listen {
        Some(listen) => {
            if !listen.ip().is_loopback() && a.openai_api_key.is_none() {
                anyhow::bail!("--openai-listen {listen} faces the network: give --openai-api-key (or $UMI_OPENAI_API_KEY)");
            }
            // Plain HTTP: beyond loopback only behind a proxy that terminates TLS.
            if !listen.ip().is_loopback() && !a.security.insecure_network {
                anyhow::bail!("--openai-listen {listen} faces the network over plain HTTP: serve it on loopback behind a TLS-terminating proxy, or give --insecure-network if one fronts it");
            }
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("listening on {listen}"))?;
            eprintln!(
                "umi worker: OpenAI-compatible endpoints on http://{}/v1",
                listener.local_addr()?
            );
            let router = openai_server::router(
                RoleEngine::new(engine.clone()),
                openai_server::Settings {
                    model: info.name.clone(),
                    api_key: a.openai_api_key.clone(),
                    max_tokens: a.openai_max_tokens.map(std::num::NonZeroUsize::get),
                },
            );
            let mut stopped = http_stopped;
            Some(tokio::spawn(openai_server::serve(
                listener,
                router,
                async move {
                    let _ = stopped.wait_for(|s| *s).await;
                },
            )))
        }
        None => None,
    };
    // Leave first (the OpenAI endpoints stop, the registry entry goes, so no new calls
    // are routed here), then drain the calls in flight.
    let shutdown = Shutdown::on(super::support::shutdown::signal())
        .leave(async move {
            let _ = stop_http.send(true);
        })
        .leave(async move {
            for r in registrations {
                match r.deregister().await {
                    Ok(()) => eprintln!("umi worker: deregistered"),
                    Err(e) => {
                        eprintln!("umi worker: could not deregister ({e}); the lease will expire")
                    }
                }
            }
        })
        .leave(async { eprintln!("umi worker: draining in-flight calls") });
    serve(
        listener,
        RoleService::serving(
            roles
                .iter()
                .map(|(role, adapter)| (*role, adapter.as_ref().map(|_| role.as_str().to_string())))
                .collect(),
            engine,
        ),
        &security,
        shutdown,
    )
    .await
    .with_context(|| format!("serving on {addr}"))?;
    if let Some(http) = http {
        http.await
            .context("the OpenAI-compatible server stopped abnormally")?
            .context("serving the OpenAI-compatible endpoints")?;
    }
    eprintln!("umi worker: drained, exiting");
    Ok(())
}
