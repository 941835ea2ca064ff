//! TLS and bearer tokens on the command line: what a server admits
//! (`ServerSecurityArgs`) and what a client presents (`ClientTlsArgs` and a token file).
//! A server listening beyond loopback needs both TLS and tokens.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;
use umi_rpc::security::{ClientSecurity, ClientTls, ServerSecurity, ServerTls, Tokens};

#[derive(Args, Debug, Clone, Default)]
pub struct ServerSecurityArgs {
    /// TLS certificate (PEM, the chain) this server presents; with --tls-key it speaks
    /// TLS only, and clients reach it at https://.
    #[arg(long, env = "UMI_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, env = "UMI_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM): mutual TLS.
    #[arg(long, env = "UMI_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// The bearer tokens this server accepts: one `NAME:TOKEN` per line (or a single
    /// bare token); calls without one are refused as UNAUTHENTICATED. On a coordinator
    /// each name owns its tasks.
    #[arg(long, env = "UMI_AUTH_TOKEN_FILE")]
    pub auth_token_file: Option<PathBuf>,
    /// Listen beyond loopback without TLS or tokens: only behind a service mesh that
    /// encrypts and authenticates every connection.
    #[arg(long)]
    pub insecure_network: bool,
}

impl ServerSecurityArgs {
    /// What a server listening on `listen` admits. Plaintext without tokens only on a
    /// loopback address (or with --insecure-network).
    pub fn security(&self, listen: SocketAddr) -> anyhow::Result<ServerSecurity> {
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(ServerTls {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.tls_client_ca.clone(),
            }),
            (None, None) if self.tls_client_ca.is_some() => {
                bail!("--tls-client-ca needs the server's own --tls-cert and --tls-key")
            }
            (None, None) => None,
            _ => bail!("--tls-cert and --tls-key go together"),
        };
        let tokens = self
            .auth_token_file
            .as_deref()
            .map(Tokens::load)
            .transpose()?;
        if !listen.ip().is_loopback() && !self.insecure_network {
            let missing: Vec<&str> = [
                (tls.is_none(), "--tls-cert and --tls-key"),
                (tokens.is_none(), "--auth-token-file"),
            ]
            .into_iter()
            .filter_map(|(m, flag)| m.then_some(flag))
            .collect();
            if !missing.is_empty() {
                bail!(
                    "--listen {listen} faces the network: give {} (or listen on a loopback address)",
                    missing.join(" and ")
                );
            }
        }
        ServerSecurity::new(tls.as_ref(), tokens).context("setting up TLS and tokens")
    }
}

/// How a server admits callers, for its startup line.
pub fn describe(security: &ServerSecurity) -> &'static str {
    match (security.has_tls(), security.has_tokens()) {
        (true, true) => "TLS, tokens required",
        (true, false) => "TLS, no tokens",
        (false, true) => "plaintext, tokens required",
        (false, false) => "plaintext, no tokens",
    }
}

/// How this client reaches https:// servers.
#[derive(Args, Debug, Clone, Default)]
pub struct ClientTlsArgs {
    /// The CA certificate (PEM) that signed the servers' certificates: needed to reach
    /// workers or a coordinator at https:// addresses.
    #[arg(long, env = "UMI_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// This client's certificate (PEM), for servers that require mutual TLS.
    #[arg(long, env = "UMI_TLS_CLIENT_CERT")]
    pub tls_client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, env = "UMI_TLS_CLIENT_KEY")]
    pub tls_client_key: Option<PathBuf>,
    /// The name servers' certificates are checked against, instead of the host of
    /// their address.
    #[arg(long)]
    pub tls_domain: Option<String>,
}

impl ClientTlsArgs {
    /// What this client presents: these TLS settings and the token in `token_file`.
    pub fn security(&self, token_file: Option<&Path>) -> anyhow::Result<ClientSecurity> {
        let tls = ClientTls {
            ca: self.tls_ca.clone(),
            cert: self.tls_client_cert.clone(),
            key: self.tls_client_key.clone(),
            domain: self.tls_domain.clone(),
        };
        ClientSecurity::new(&tls, token_file).context("setting up the client's TLS and token")
    }
}
