//! Where a server exposes its Prometheus metrics.

use std::net::SocketAddr;

use anyhow::Context;
use clap::Args;

#[derive(Args, Debug, Clone, Default)]
pub struct MetricsArgs {
    /// Serve Prometheus metrics (`umi_*`: engine queue, batch, token and latency figures,
    /// role calls, tasks, tool calls) over HTTP at this address, e.g. 127.0.0.1:9090.
    /// Off by default; the endpoint has no authentication, so bind it where only the
    /// scraper reaches.
    #[arg(long, env = "UMI_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
}

impl MetricsArgs {
    /// Installs the Prometheus recorder and its HTTP listener, if asked; call inside the
    /// tokio runtime.
    pub fn install(&self) -> anyhow::Result<()> {
        let Some(addr) = self.metrics_listen else {
            return Ok(());
        };
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .with_http_listener(addr)
            .install()
            .with_context(|| format!("serving metrics on {addr}"))?;
        eprintln!("umi: Prometheus metrics on http://{addr}/metrics");
        Ok(())
    }
}
