//! Where a server exposes its Prometheus metrics.

use std::net::SocketAddr;

use anyhow::Context;
use clap::Args;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use umi_rpc::http_listener::{serve_http, HttpLimits, TextPage};

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
    /// Off by default; the endpoint has neither TLS nor authentication, so it stays on
    /// loopback (a node agent or sidecar scrapes it) unless --insecure-network says a
    /// mesh or network policy guards it.
    #[arg(long, env = "UMI_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
}

impl MetricsArgs {
    /// Installs the Prometheus recorder and its HTTP listener, if asked; call inside the
    /// tokio runtime.
    pub fn install(&self, insecure_network: bool) -> anyhow::Result<()> {
        let Some(addr) = self.metrics_listen else {
            return Ok(());
        };
        check_listen(addr, insecure_network)?;
        // Histograms with buckets (not client-side summaries): they add up across
        // replicas and cover the whole run, not a sliding window.
        let handle = PrometheusBuilder::new()
            .set_buckets(SECONDS_BUCKETS)?
            .set_buckets_for_metric(
                Matcher::Full(umi_engine::metrics::BATCH_SIZE.to_string()),
                BATCH_BUCKETS,
            )?
            .install_recorder()
            .context("installing the Prometheus recorder")?;
        // Served by umi's own HTTP listener (header timeout, connection cap), not the
        // exporter's, which bounds neither.
        let listener = std::net::TcpListener::bind(addr)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .and_then(tokio::net::TcpListener::from_std)
            .with_context(|| format!("serving metrics on {addr}"))?;
        let upkeep = handle.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                upkeep.run_upkeep();
            }
        });
        let page = TextPage::new("/metrics", "text/plain; version=0.0.4", move || {
            handle.render()
        });
        tokio::spawn(serve_http(
            listener,
            page,
            HttpLimits::default(),
            std::future::pending(),
        ));
        eprintln!("umi: Prometheus metrics on http://{addr}/metrics");
        Ok(())
    }
}

/// The metrics endpoint is plain, unauthenticated HTTP: loopback only, unless the
/// operator says the network guards it.
fn check_listen(addr: SocketAddr, insecure_network: bool) -> anyhow::Result<()> {
    if !addr.ip().is_loopback() && !insecure_network {
        anyhow::bail!(
            "--metrics-listen {addr} faces the network over plain HTTP without authentication: serve it on loopback (127.0.0.1:PORT, scraped by a node agent or sidecar), or give --insecure-network where a mesh or network policy guards it"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_beyond_loopback_need_an_explicit_insecure_network() {
        let public: SocketAddr = "0.0.0.0:9090".parse().unwrap();
        let err = check_listen(public, false).unwrap_err().to_string();
        assert!(err.contains("--metrics-listen 0.0.0.0:9090"), "{err}");
        assert!(check_listen(public, true).is_ok());
        assert!(check_listen("127.0.0.1:9090".parse().unwrap(), false).is_ok());
        assert!(check_listen("[::1]:9090".parse().unwrap(), false).is_ok());
    }
}
