//! `umi worker`: serve one α-UMi role over gRPC (`proto/umi/v1/roles.proto`).

use std::net::SocketAddr;

use anyhow::Context;
use clap::{Args, ValueEnum};
use umi_core::agent::RoleKind;
use umi_engine::Engine;
use umi_worker::server::{serve, RoleService};

use super::model_args::ModelArgs;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Role {
    Planner,
    Caller,
    Summarizer,
}

#[derive(Args, Debug)]
pub struct WorkerArgs {
    /// The role this worker serves.
    #[arg(long, value_enum)]
    pub role: Role,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub model: ModelArgs,
}

pub async fn run(a: WorkerArgs) -> anyhow::Result<()> {
    let role = match a.role {
        Role::Planner => RoleKind::Planner,
        Role::Caller => RoleKind::Caller,
        Role::Summarizer => RoleKind::Summarizer,
    };
    let engine = Engine::start(a.model.load()?);
    let listener = tokio::net::TcpListener::bind(a.listen)
        .await
        .with_context(|| format!("listening on {}", a.listen))?;
    let addr = listener.local_addr()?;
    drop(listener);
    eprintln!(
        "umi worker: {} role on {addr} ({})",
        role.as_str(),
        engine.info().name
    );
    serve(addr, RoleService::new(role, engine), shutdown_signal())
        .await
        .with_context(|| format!("serving on {addr}"))?;
    eprintln!("umi worker: drained, exiting");
    Ok(())
}

/// SIGTERM or Ctrl-C: stop accepting, let in-flight calls finish.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
