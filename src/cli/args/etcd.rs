//! Where etcd is, for every subcommand that registers in it or discovers through it.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use umi_discovery::EtcdTarget;

#[derive(Args, Debug, Clone, Default)]
pub struct EtcdArgs {
    /// etcd endpoints, e.g. http://127.0.0.1:2379 (comma-separated for a cluster).
    #[arg(long, value_delimiter = ',', env = "UMI_ETCD")]
    pub etcd: Vec<String>,
    /// Key prefix of umi's entries in etcd.
    #[arg(long, default_value = "/umi", env = "UMI_ETCD_PREFIX")]
    pub etcd_prefix: String,
    /// The CA (PEM) that signed etcd's server certificate, for https:// endpoints.
    #[arg(long, env = "UMI_ETCD_CA")]
    pub etcd_ca: Option<PathBuf>,
    /// A client certificate and key (PEM) for an etcd started with --client-cert-auth.
    #[arg(long, env = "UMI_ETCD_CERT")]
    pub etcd_cert: Option<PathBuf>,
    #[arg(long, env = "UMI_ETCD_KEY")]
    pub etcd_key: Option<PathBuf>,
    /// The etcd user (with auth enabled); its password comes from $UMI_ETCD_PASSWORD or
    /// --etcd-password-file.
    #[arg(long, env = "UMI_ETCD_USER")]
    pub etcd_user: Option<String>,
    #[arg(long, env = "UMI_ETCD_PASSWORD_FILE")]
    pub etcd_password_file: Option<PathBuf>,
}

impl EtcdArgs {
    /// The endpoints given (an empty value, as an unset env var gives, is none).
    pub fn endpoints(&self) -> Vec<String> {
        self.etcd
            .iter()
            .filter(|e| !e.is_empty())
            .cloned()
            .collect()
    }

    pub fn is_set(&self) -> bool {
        !self.endpoints().is_empty()
    }

    /// The endpoints with the TLS settings and user given.
    pub fn target(&self) -> anyhow::Result<EtcdTarget> {
        let read = |path: &PathBuf, what: &str| {
            std::fs::read(path).with_context(|| format!("reading {what} {}", path.display()))
        };
        // Secrets: refused if others can read them (umi_rpc::secret_file).
        let read_secret = |path: &PathBuf, what: &'static str| {
            umi_rpc::secret_file::read_private(what, path).context("reading an etcd secret")
        };
        let tls = match (&self.etcd_ca, &self.etcd_cert, &self.etcd_key) {
            (None, None, None) => None,
            (ca, cert, key) => {
                let mut tls = umi_discovery::TlsOptions::new();
                if let Some(ca) = ca {
                    tls = tls.ca_certificate(umi_discovery::Certificate::from_pem(read(
                        ca,
                        "--etcd-ca",
                    )?));
                }
                match (cert, key) {
                    (Some(cert), Some(key)) => {
                        tls = tls.identity(umi_discovery::Identity::from_pem(
                            read(cert, "--etcd-cert")?,
                            read_secret(key, "--etcd-key")?,
                        ))
                    }
                    (None, None) => {}
                    _ => bail!("--etcd-cert and --etcd-key go together"),
                }
                Some(tls)
            }
        };
        let user = match &self.etcd_user {
            None => None,
            Some(user) => {
                let password = match (&self.etcd_password_file, std::env::var("UMI_ETCD_PASSWORD")) {
                    (Some(path), _) => String::from_utf8(read_secret(path, "--etcd-password-file")?)
                        .context("--etcd-password-file is not UTF-8")?
                        .trim_end_matches(['\n', '\r'])
                        .to_string(),
                    (None, Ok(p)) => p,
                    (None, Err(_)) => bail!(
                        "--etcd-user {user} needs a password: $UMI_ETCD_PASSWORD or --etcd-password-file"
                    ),
                };
                Some((user.clone(), password))
            }
        };
        let endpoints = self.endpoints();
        if tls.is_some() && endpoints.iter().any(|e| !e.starts_with("https://")) {
            bail!("with --etcd-ca/--etcd-cert the etcd endpoints are https:// ones");
        }
        if user.is_some() {
            if let Some(clear) = endpoints.iter().find(|e| !secure_or_local(e)) {
                bail!("--etcd-user would send its password in clear to {clear}: reach etcd at an https:// endpoint (--etcd-ca)");
            }
        }
        Ok(EtcdTarget {
            endpoints,
            tls,
            user,
        })
    }
}

/// Whether credentials may go to `endpoint`: over TLS, or to this machine.
fn secure_or_local(endpoint: &str) -> bool {
    if endpoint.starts_with("https://") {
        return true;
    }
    endpoint
        .parse::<tonic::codegen::http::Uri>()
        .ok()
        .and_then(|uri| uri.host().map(umi_rpc::security::is_loopback_host))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_etcd_password_goes_only_over_tls_or_to_this_machine() {
        for ok in [
            "https://10.0.0.2:2379",
            "http://127.0.0.1:2379",
            "http://localhost:2379",
            "http://[::1]:2379",
        ] {
            assert!(secure_or_local(ok), "{ok}");
        }
        for clear in [
            "http://10.0.0.2:2379",
            "http://umi-etcd:2379",
            "10.0.0.2:2379",
        ] {
            assert!(!secure_or_local(clear), "{clear}");
        }
    }
}
