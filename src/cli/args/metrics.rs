//! Where a server exposes its Prometheus metrics.

use std::net::SocketAddr;

use anyhow::Context;
use clap::Args;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

/// Latency buckets (seconds): 1 ms to 10 minutes.
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 60.0,
    150.0, 600.0,
];
/// Sequences per decode step.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

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
        // Histograms with buckets (not client-side summaries): they add up across
        // replicas and cover the whole run, not a sliding window.
        PrometheusBuilder::new()
            .with_http_listener(addr)
            .set_buckets(SECONDS_BUCKETS)?
            .set_buckets_for_metric(
                Matcher::Full(umi_engine::metrics::BATCH_SIZE.to_string()),
                BATCH_BUCKETS,
            )?
            .install()
            .with_context(|| format!("serving metrics on {addr}"))?;
        eprintln!("umi: Prometheus metrics on http://{addr}/metrics");
        Ok(())
    }
}
