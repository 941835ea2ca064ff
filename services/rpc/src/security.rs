//! Who may talk to umi's gRPC servers, and how clients prove who they are.
//!
//! Servers: TLS with rustls on the listener (a certificate and key; with a client CA,
//! mutual TLS: clients without a certificate that CA signed are refused in the
//! handshake), and bearer tokens checked by an interceptor before any work, answering
//! UNAUTHENTICATED otherwise. A token file names each token's holder; the holder's name is
//! the caller's identity ([`Caller`]), which the coordinator records as a task's owner.
//! `grpc.health.v1.Health` stays open (it tells only SERVING or not), so load balancers
//! and Kubernetes probes need no token.
//!
//! Clients: the CA that signed the servers' certificates (for `https://` addresses), an
//! optional client certificate, and the token they present on every call.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{
    Certificate, Channel, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig,
};
use tonic::{Request, Status};
use umi_core::log_limit::{LogLimiter, REFUSAL_LOG_INTERVAL};

use crate::secret_file::read_private;

/// Tokens shorter than this are refused: they are guessable, not secrets.
pub const MIN_TOKEN_LEN: usize = 16;

/// The DNS name suffix of worker identities: see [`worker_tls_name`].
pub const WORKER_NAME_SUFFIX: &str = "umi-worker";

/// The name a worker's TLS certificate must carry (as a DNS SAN) to serve `role`, e.g.
/// `planner.umi-worker`: clients check a worker against its role's name, not against
/// the address it registered, so the role is bound to the certificate.
pub fn worker_tls_name(role: &str) -> String {
    format!("{role}.{WORKER_NAME_SUFFIX}")
}

/// The name of a token given without one (a file with a single bare token).
pub const DEFAULT_HOLDER: &str = "default";

#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("{what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} {path}: {problem}")]
    Invalid {
        what: &'static str,
        path: PathBuf,
        problem: String,
    },
    #[error(
        "{what} {path} is mode {mode:04o}: others can read it or its group can change it; run `chmod 600 {path}` (0640 if a group must read it)"
    )]
    Exposed {
        what: &'static str,
        path: PathBuf,
        mode: u32,
    },
    #[error("token file {path}, line {line}: {problem}")]
    TokenFile {
        path: PathBuf,
        line: usize,
        problem: String,
    },
    #[error("{0}")]
    Config(String),
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, SecurityError> {
    std::fs::read(path).map_err(|source| SecurityError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a PEM file, refusing one without the block it must hold (a key given as the
/// certificate, a DER file) with a clear message, before any handshake fails obscurely.
fn read_pem(what: &'static str, path: &Path, block: &str) -> Result<Vec<u8>, SecurityError> {
    check_pem(what, path, read(what, path)?, block)
}

/// As [`read_pem`], for a private key: refused if others can read it
/// ([`crate::secret_file::check_private`]).
fn read_private_pem(
    what: &'static str,
    path: &Path,
    block: &str,
) -> Result<Vec<u8>, SecurityError> {
    check_pem(what, path, read_private(what, path)?, block)
}

fn check_pem(
    what: &'static str,
    path: &Path,
    pem: Vec<u8>,
    block: &str,
) -> Result<Vec<u8>, SecurityError> {
    let text = String::from_utf8_lossy(&pem);
    let found = text
        .lines()
        .any(|l| l.starts_with("-----BEGIN ") && l.ends_with(&format!("{block}-----")));
    if !found {
        return Err(SecurityError::Invalid {
            what,
            path: path.to_path_buf(),
            problem: format!("no PEM block ending in {block:?} (PEM expected)"),
        });
    }
    Ok(pem)
}

/// The bearer tokens a server accepts, each with its holder's name.
///
/// The file holds one token per line, `NAME:TOKEN`, or a single bare `TOKEN` (held by
/// `default`); blank lines and `#` comments are skipped. Tokens are at least
/// [`MIN_TOKEN_LEN`] visible ASCII characters without `:`.
#[derive(Clone)]
pub struct Tokens {
    holders: Vec<(String, String)>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.holders.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Tokens").field("holders", &names).finish()
    }
}

impl Tokens {
    pub fn load(path: &Path) -> Result<Self, SecurityError> {
        let text = read_private("token file", path)?;
        let text = String::from_utf8(text).map_err(|_| SecurityError::Invalid {
            what: "token file",
            path: path.to_path_buf(),
            problem: "not UTF-8 text".into(),
        })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, SecurityError> {
        let bad = |line: usize, problem: String| SecurityError::TokenFile {
            path: path.to_path_buf(),
            line,
            problem,
        };
        let mut holders: Vec<(String, String)> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, token) = match line.split_once(':') {
                Some((name, token)) => (name.trim(), token.trim()),
                None => (DEFAULT_HOLDER, line),
            };
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
            {
                return Err(bad(
                    i + 1,
                    format!("holder name {name:?} must be letters, digits, '-', '_', '.' or '@'"),
                ));
            }
            if token.len() < MIN_TOKEN_LEN {
                return Err(bad(
                    i + 1,
                    format!("the token is shorter than {MIN_TOKEN_LEN} characters"),
                ));
            }
            if !token.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
                return Err(bad(
                    i + 1,
                    "a token is visible ASCII without spaces or ':'".into(),
                ));
            }
            if holders.iter().any(|(n, _)| n == name) {
                return Err(bad(
                    i + 1,
                    format!("holder {name:?} appears twice (name each token: NAME:TOKEN)"),
                ));
            }
            if holders.iter().any(|(_, t)| t == token) {
                return Err(bad(i + 1, "the same token appears twice".into()));
            }
            holders.push((name.to_string(), token.to_string()));
        }
        if holders.is_empty() {
            return Err(SecurityError::Invalid {
                what: "token file",
                path: path.to_path_buf(),
                problem: "holds no token".into(),
            });
        }
        Ok(Tokens { holders })
    }

    /// The holder of `token`, if it is one of these. Every token is compared in full, in
    /// time independent of where the first difference lies.
    pub fn holder(&self, token: &str) -> Option<&str> {
        let mut found = None;
        for (name, known) in &self.holders {
            if constant_time_eq(known.as_bytes(), token.as_bytes()) {
                found = Some(name.as_str());
            }
        }
        found
    }

    /// The one token a client presents: the file's only entry.
    pub fn single(&self, path: &Path) -> Result<&str, SecurityError> {
        match self.holders.as_slice() {
            [(_, token)] => Ok(token),
            _ => Err(SecurityError::Invalid {
                what: "token file",
                path: path.to_path_buf(),
                problem: format!(
                    "holds {} tokens; a client presents one (give it a file with its own)",
                    self.holders.len()
                ),
            }),
        }
    }
}

/// `localhost`, 127.0.0.0/8 or ::1 (bracketed or not): a host on this machine.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Who made a call: the holder of the token it presented; anonymous (an empty name) on a
/// server without tokens.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Caller(pub String);

impl Caller {
    /// The caller of a request the [`CheckToken`] interceptor let through.
    pub fn of<T>(request: &Request<T>) -> Caller {
        request
            .extensions()
            .get::<Caller>()
            .cloned()
            .unwrap_or_default()
    }

    pub fn name(&self) -> &str {
        &self.0
    }
}

/// Refusals of unauthenticated calls are logged at most once per interval (a caller
/// without a token may call in a loop); `umi_rpc_unauthenticated_total` counts each.
static UNAUTHENTICATED_LOG: LogLimiter = LogLimiter::new(REFUSAL_LOG_INTERVAL);

/// Refuses calls without one of the server's tokens (UNAUTHENTICATED, before the
/// service sees them) and tags the others with their [`Caller`].
#[derive(Clone)]
pub struct CheckToken {
    tokens: Option<Arc<Tokens>>,
}

impl tonic::service::Interceptor for CheckToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let caller = match &self.tokens {
            None => Caller::default(),
            Some(tokens) => {
                let presented = request
                    .metadata()
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "));
                let holder = presented.and_then(|t| tokens.holder(t.trim()));
                match holder {
                    Some(name) => Caller(name.to_string()),
                    None => {
                        let peer = request
                            .remote_addr()
                            .map_or_else(|| "an unknown peer".to_string(), |a| a.to_string());
                        let why = if presented.is_some() {
                            "a bearer token this server does not accept"
                        } else {
                            "no bearer token"
                        };
                        if let Some(held_back) = UNAUTHENTICATED_LOG.admit() {
                            tracing::warn!(
                                %peer,
                                held_back,
                                "refused a call with {why} (held_back: refusals not logged since the last warning)"
                            );
                        }
                        metrics::counter!("umi_rpc_unauthenticated_total").increment(1);
                        return Err(Status::unauthenticated(format!(
                            "{why}: this server requires `authorization: Bearer <token>` (umi clients: --worker-token-file for workers, --auth-token-file for a coordinator)"
                        )));
                    }
                }
            }
        };
        request.extensions_mut().insert(caller);
        Ok(request)
    }
}

/// A server's certificate and key, and the CA whose client certificates it requires
/// (mutual TLS), as PEM files.
#[derive(Clone, Debug)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

/// How a server admits callers: TLS or plaintext, tokens or none.
#[derive(Clone, Default)]
pub struct ServerSecurity {
    tls: Option<ServerTlsConfig>,
    tokens: Option<Arc<Tokens>>,
}

impl ServerSecurity {
    /// Plaintext, no tokens: for loopback only (the CLI refuses it elsewhere).
    pub fn open() -> Self {
        Self::default()
    }

    pub fn new(tls: Option<&ServerTls>, tokens: Option<Tokens>) -> Result<Self, SecurityError> {
        let tls = match tls {
            None => None,
            Some(t) => {
                let cert = read_pem("TLS certificate", &t.cert, "CERTIFICATE")?;
                let key = read_private_pem("TLS key", &t.key, "PRIVATE KEY")?;
                let mut config = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
                if let Some(ca) = &t.client_ca {
                    let ca = read_pem("client CA", ca, "CERTIFICATE")?;
                    config = config.client_ca_root(Certificate::from_pem(ca));
                }
                Some(config)
            }
        };
        Ok(ServerSecurity {
            tls,
            tokens: tokens.map(Arc::new),
        })
    }

    pub fn has_tls(&self) -> bool {
        self.tls.is_some()
    }

    pub fn has_tokens(&self) -> bool {
        self.tokens.is_some()
    }

    /// The scheme clients reach this server with.
    pub fn scheme(&self) -> &'static str {
        if self.has_tls() {
            "https"
        } else {
            "http"
        }
    }

    /// `service` behind the token check.
    pub fn guard<S>(&self, service: S) -> InterceptedService<S, CheckToken> {
        InterceptedService::new(service, self.check_token())
    }

    /// The token check this server applies to each call.
    pub fn check_token(&self) -> CheckToken {
        CheckToken {
            tokens: self.tokens.clone(),
        }
    }

    pub(crate) fn tls_config(&self) -> Option<ServerTlsConfig> {
        self.tls.clone()
    }
}

/// Puts the client's bearer token on every call.
#[derive(Clone, Default)]
pub struct AddToken(Option<AsciiMetadataValue>);

impl tonic::service::Interceptor for AddToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        self.authorize(request.metadata_mut());
        Ok(request)
    }
}

impl AddToken {
    pub fn authorize(&self, metadata: &mut MetadataMap) {
        if let Some(token) = &self.0 {
            metadata.insert("authorization", token.clone());
        }
    }
}

/// A channel whose calls carry the client's token.
pub type AuthedChannel = InterceptedService<Channel, AddToken>;

/// What a client of umi's servers presents: the CA it trusts for `https://` servers, its
/// own certificate (for servers requiring mutual TLS) and its token.
#[derive(Clone, Default)]
pub struct ClientSecurity {
    tls: Option<ClientTlsConfig>,
    token: AddToken,
}

/// A client's PEM files: the CA that signed the servers' certificates, and its own
/// certificate and key for mutual TLS.
#[derive(Clone, Debug, Default)]
pub struct ClientTls {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// The name the servers' certificates are checked against, when not the address's
    /// host (e.g. a certificate for a Service name reached by pod IP).
    pub domain: Option<String>,
}

impl ClientSecurity {
    /// Plaintext, no token.
    pub fn open() -> Self {
        Self::default()
    }

    pub fn new(tls: &ClientTls, token_file: Option<&Path>) -> Result<Self, SecurityError> {
        let token = match token_file {
            None => None,
            Some(path) => {
                let tokens = Tokens::load(path)?;
                let value = format!("Bearer {}", tokens.single(path)?);
                let mut value: AsciiMetadataValue =
                    value.parse().map_err(|_| SecurityError::Invalid {
                        what: "token file",
                        path: path.to_path_buf(),
                        problem: "the token is not a valid header value".into(),
                    })?;
                // Never printed by Debug, never put in HTTP/2's header compression table.
                value.set_sensitive(true);
                Some(value)
            }
        };
        Self::with_token(tls, token)
    }

    /// As [`ClientSecurity::new`], with the token given (`None`: none).
    pub fn with_token(
        tls: &ClientTls,
        token: Option<AsciiMetadataValue>,
    ) -> Result<Self, SecurityError> {
        let config = match (&tls.ca, &tls.cert, &tls.key) {
            (None, None, None) => None,
            (ca, cert, key) => {
                let mut config = ClientTlsConfig::new();
                if let Some(ca) = ca {
                    config = config.ca_certificate(Certificate::from_pem(read_pem(
                        "CA certificate",
                        ca,
                        "CERTIFICATE",
                    )?));
                }
                match (cert, key) {
                    (Some(cert), Some(key)) => {
                        config = config.identity(Identity::from_pem(
                            read_pem("client certificate", cert, "CERTIFICATE")?,
                            read_private_pem("client key", key, "PRIVATE KEY")?,
                        ));
                    }
                    (None, None) => {}
                    _ => {
                        return Err(SecurityError::Config(
                            "a client certificate needs its key, and a key its certificate".into(),
                        ))
                    }
                }
                if ca.is_none() {
                    return Err(SecurityError::Config(
                        "a client certificate needs the CA of the servers it talks to (--tls-ca)"
                            .into(),
                    ));
                }
                Some(config)
            }
        };
        let config = match (config, &tls.domain) {
            (Some(c), Some(d)) => Some(c.domain_name(d.clone())),
            (c, _) => c,
        };
        Ok(ClientSecurity {
            tls: config,
            token: AddToken(token),
        })
    }

    pub fn has_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// An endpoint for `address` (3 s to connect, no Nagle delay): TLS for `https://`
    /// (which needs the CA), plaintext for `http://`. A client with a token or TLS
    /// settings never talks plaintext beyond loopback: its token (and the prompts) would
    /// cross the network in clear, e.g. to a rogue `http://` entry in etcd.
    pub fn endpoint(&self, address: &str) -> Result<Endpoint, SecurityError> {
        let endpoint = Endpoint::from_shared(address.to_string())
            .map_err(|e| SecurityError::Config(format!("address {address:?}: {e}")))?
            .connect_timeout(std::time::Duration::from_secs(3))
            .tcp_nodelay(true);
        match endpoint.uri().scheme_str() {
            Some("https") => match &self.tls {
                Some(tls) => endpoint.tls_config(tls.clone()).map_err(|e| {
                    SecurityError::Config(format!("TLS settings for {address}: {e}"))
                }),
                None => Err(SecurityError::Config(format!(
                    "{address} is served over TLS: give the CA that signed its certificate (--tls-ca)"
                ))),
            },
            // A client that can authenticate servers talks to none it cannot: a
            // plaintext entry in etcd, even on loopback, may be anyone's (any local
            // user can listen on a port).
            Some("http") if self.tls.is_some() => Err(SecurityError::Config(format!(
                "{address} is plaintext: this client has TLS settings and sends its calls only to servers whose certificate its CA (--tls-ca) signed (https://)"
            ))),
            Some("http") if self.token.0.is_some() => {
                if is_loopback_host(endpoint.uri().host().unwrap_or_default()) {
                    Ok(endpoint)
                } else {
                    Err(SecurityError::Config(format!(
                        "{address} is plaintext and not on this machine: this client's token and TLS settings are only sent over https://"
                    )))
                }
            }
            Some("http") => Ok(endpoint),
            _ => Err(SecurityError::Config(format!(
                "address {address:?}: http:// or https:// expected"
            ))),
        }
    }

    /// As [`ClientSecurity::endpoint`], for a worker serving `role`: over TLS its
    /// certificate must name [`worker_tls_name`]`(role)`, whatever address it registered,
    /// so a worker holding another role's certificate (or none from this CA) gets no
    /// call of this role.
    pub fn worker_endpoint(&self, address: &str, role: &str) -> Result<Endpoint, SecurityError> {
        let endpoint = self.endpoint(address)?;
        match (&self.tls, endpoint.uri().scheme_str()) {
            (Some(tls), Some("https")) => endpoint
                .tls_config(tls.clone().domain_name(worker_tls_name(role)))
                .map_err(|e| SecurityError::Config(format!("TLS settings for {address}: {e}"))),
            _ => Ok(endpoint),
        }
    }

    /// The interceptor that puts this client's token on each call.
    pub fn token(&self) -> AddToken {
        self.token.clone()
    }

    /// A lazily connected channel to `address` whose calls carry the token.
    pub fn channel(&self, address: &str) -> Result<AuthedChannel, SecurityError> {
        let channel = self.endpoint(address)?.connect_lazy();
        Ok(InterceptedService::new(channel, self.token()))
    }

    /// A connected channel to `address` (an unreachable server is an error now).
    pub async fn connect(&self, address: &str) -> Result<AuthedChannel, SecurityError> {
        let channel = self.endpoint(address)?.connect().await.map_err(|e| {
            SecurityError::Config(format!("connecting to {address}: {}", with_sources(&e)))
        })?;
        Ok(InterceptedService::new(channel, self.token()))
    }
}

/// An error's text with its sources' (tonic's transport error alone says only
/// "transport error"; the OS error below says what happened).
fn with_sources(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Tokens, SecurityError> {
        Tokens::parse(text, Path::new("tokens"))
    }

    #[test]
    fn token_files_name_their_holders() {
        let t = parse("# clients\nalice:0123456789abcdef0\n\nbob: fedcba9876543210f\n").unwrap();
        assert_eq!(t.holder("0123456789abcdef0"), Some("alice"));
        assert_eq!(t.holder("fedcba9876543210f"), Some("bob"));
        assert_eq!(t.holder("0123456789abcdef"), None);
        assert_eq!(t.holder(""), None);
        assert!(t.single(Path::new("tokens")).is_err());
        let one = parse("0123456789abcdef0\n").unwrap();
        assert_eq!(one.holder("0123456789abcdef0"), Some(DEFAULT_HOLDER));
        assert_eq!(
            one.single(Path::new("tokens")).unwrap(),
            "0123456789abcdef0"
        );
    }

    #[test]
    fn weak_or_ambiguous_token_files_are_refused_by_line() {
        for (text, line, says) in [
            ("short", 1, "shorter"),
            ("a:0123456789abcdef\na:fedcba9876543210", 2, "twice"),
            ("0123456789abcdef\nfedcba9876543210", 2, "twice"),
            ("a:0123456789abcdef\nb:0123456789abcdef", 2, "same token"),
            ("a b:0123456789abcdef", 1, "holder name"),
            ("a:0123456789 abcdef0", 1, "visible ASCII"),
        ] {
            match parse(text) {
                Err(SecurityError::TokenFile {
                    line: l, problem, ..
                }) => {
                    assert_eq!(l, line, "{text}");
                    assert!(problem.contains(says), "{text}: {problem}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
        assert!(matches!(
            parse("# none\n"),
            Err(SecurityError::Invalid { .. })
        ));
    }

    #[test]
    fn the_interceptor_refuses_missing_and_wrong_tokens_and_names_the_caller() {
        use tonic::service::Interceptor;
        let tokens = parse("alice:0123456789abcdef0").unwrap();
        let mut check = CheckToken {
            tokens: Some(Arc::new(tokens)),
        };
        let err = check.call(Request::new(())).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        let mut wrong = Request::new(());
        wrong
            .metadata_mut()
            .insert("authorization", "Bearer 0123456789abcdef1".parse().unwrap());
        assert_eq!(
            check.call(wrong).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        let mut right = Request::new(());
        AddToken(Some("Bearer 0123456789abcdef0".parse().unwrap())).authorize(right.metadata_mut());
        let passed = check.call(right).unwrap();
        assert_eq!(Caller::of(&passed), Caller("alice".into()));
        let mut open = CheckToken { tokens: None };
        assert_eq!(
            Caller::of(&open.call(Request::new(())).unwrap()),
            Caller::default()
        );
    }

    #[test]
    fn https_needs_a_ca_and_other_schemes_are_refused() {
        let open = ClientSecurity::open();
        assert!(open.endpoint("http://127.0.0.1:1").is_ok());
        let e = open
            .endpoint("https://127.0.0.1:1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("--tls-ca"), "{e}");
        assert!(open.endpoint("ftp://127.0.0.1:1").is_err());
        assert!(open.endpoint("http://10.0.0.7:1").is_ok());
    }

    #[test]
    fn a_token_is_never_sent_in_clear_beyond_loopback() {
        let with_token =
            ClientSecurity::with_token(&ClientTls::default(), Some("Bearer x".parse().unwrap()))
                .unwrap();
        for local in ["http://127.0.0.1:1", "http://localhost:1", "http://[::1]:1"] {
            assert!(with_token.endpoint(local).is_ok(), "{local}");
        }
        let e = with_token
            .endpoint("http://10.0.0.7:50051")
            .unwrap_err()
            .to_string();
        assert!(e.contains("plaintext"), "{e}");
        assert!(with_token.endpoint("http://evil.example:1").is_err());
    }
}
