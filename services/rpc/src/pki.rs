//! A throwaway certificate authority and tokens, so a cluster on one machine (`umi
//! cluster up`) and the whole-system tests run with TLS and tokens on. It signs one
//! certificate for loopback (`localhost`, `127.0.0.1`, `::1`) that the coordinator and
//! etcd present and clients may use for mutual TLS, and one per worker role that also
//! names the role ([`worker_tls_name`]). Keys are written unencrypted next to the
//! certificates: for loopback and tests only; a real deployment brings its own CA (see
//! deploy/).

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

use umi_core::agent::RoleKind;

use crate::security::{worker_tls_name, SecurityError};

/// Where [`write_loopback_pki`] put its files.
#[derive(Debug, Clone)]
pub struct LoopbackPki {
    /// The CA certificate clients trust (`--tls-ca`, `--tls-client-ca`).
    pub ca: PathBuf,
    /// The loopback certificate and key (`--tls-cert`/`--tls-key`, and
    /// `--tls-client-cert`/`--tls-client-key`).
    pub cert: PathBuf,
    pub key: PathBuf,
    /// A token file holding one fresh token, held by `default`: what clients present to
    /// the coordinator.
    pub token: PathBuf,
    /// A second token: what the coordinator presents to the workers (`umi cluster up`
    /// gives clients only [`LoopbackPki::token`], so they cannot call a worker).
    pub worker_token: PathBuf,
    /// Each role's worker certificate: the loopback names and the role's name
    /// ([`worker_tls_name`]), so a worker can serve only its own role.
    pub workers: Vec<WorkerIdentity>,
    /// A worker certificate naming every role, for one worker serving several
    /// (`umi worker --role planner --role caller --role summarizer`).
    pub every_role: (PathBuf, PathBuf),
}

/// A worker's certificate and key for one role.
#[derive(Debug, Clone)]
pub struct WorkerIdentity {
    pub role: RoleKind,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl LoopbackPki {
    /// The certificate and key of `role`'s workers.
    pub fn worker(&self, role: RoleKind) -> &WorkerIdentity {
        self.workers
            .iter()
            .find(|w| w.role == role)
            .expect("write_loopback_pki writes every role's identity")
    }
}

fn pki_error(e: rcgen::Error) -> SecurityError {
    SecurityError::Config(format!("making the throwaway certificates: {e}"))
}

/// A fresh random token: 32 bytes from the OS, hex.
pub fn random_token() -> Result<String, SecurityError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| SecurityError::Config(format!("no randomness for a token: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes a new CA, a loopback certificate it signed, one certificate per worker role and
/// two token files into `dir` (made if missing; files readable by the owner only).
pub fn write_loopback_pki(dir: &Path) -> Result<LoopbackPki, SecurityError> {
    let io = |path: &Path, source: std::io::Error| SecurityError::Read {
        what: "throwaway PKI file",
        path: path.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| io(dir, e))?;
    }

    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(pki_error)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "umi throwaway loopback CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().map_err(pki_error)?)
        .map_err(pki_error)?;

    let leaf = |extra_names: Vec<String>, common_name: &str| {
        let mut names = vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
        ];
        names.extend(extra_names);
        let mut params = CertificateParams::new(names).map_err(pki_error)?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().map_err(pki_error)?;
        let cert = params.signed_by(&key, &ca).map_err(pki_error)?;
        Ok::<_, SecurityError>((cert.pem(), key.serialize_pem()))
    };

    let pki = LoopbackPki {
        ca: dir.join("ca.pem"),
        cert: dir.join("loopback.pem"),
        key: dir.join("loopback-key.pem"),
        token: dir.join("token"),
        worker_token: dir.join("worker-token"),
        workers: RoleKind::ALL
            .iter()
            .map(|role| WorkerIdentity {
                role: *role,
                cert: dir.join(format!("worker-{}.pem", role.as_str())),
                key: dir.join(format!("worker-{}-key.pem", role.as_str())),
            })
            .collect(),
        every_role: (dir.join("worker-all.pem"), dir.join("worker-all-key.pem")),
    };
    let (cert, key) = leaf(vec![], "umi loopback")?;
    let mut files = vec![
        (pki.ca.clone(), ca.pem()),
        (pki.cert.clone(), cert),
        (pki.key.clone(), key),
        (pki.token.clone(), format!("{}\n", random_token()?)),
        (pki.worker_token.clone(), format!("{}\n", random_token()?)),
    ];
    for worker in &pki.workers {
        let role = worker.role.as_str();
        let (cert, key) = leaf(vec![worker_tls_name(role)], &format!("umi {role} worker"))?;
        files.push((worker.cert.clone(), cert));
        files.push((worker.key.clone(), key));
    }
    let every: Vec<String> = RoleKind::ALL
        .iter()
        .map(|r| worker_tls_name(r.as_str()))
        .collect();
    let (cert, key) = leaf(every, "umi worker of every role")?;
    files.push((pki.every_role.0.clone(), cert));
    files.push((pki.every_role.1.clone(), key));
    for (path, text) in files {
        write_private(&path, text.as_bytes()).map_err(|e| io(&path, e))?;
    }
    Ok(pki)
}

/// Writes `bytes` to a new file at `path` (an old one, or a link put there, is removed
/// first), readable and writable by the owner only: a key, token or password.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::{ClientSecurity, ClientTls, ServerSecurity, ServerTls, Tokens};

    #[test]
    fn the_loopback_pki_loads_as_server_and_client_settings() {
        let dir = std::env::temp_dir().join(format!("umi-pki-{}", std::process::id()));
        let pki = write_loopback_pki(&dir).unwrap();
        let tokens = Tokens::load(&pki.token).unwrap();
        assert_eq!(tokens.single(&pki.token).unwrap().len(), 64);
        let server = ServerSecurity::new(
            Some(&ServerTls {
                cert: pki.cert.clone(),
                key: pki.key.clone(),
                client_ca: Some(pki.ca.clone()),
            }),
            Some(tokens),
        )
        .unwrap();
        assert_eq!(server.scheme(), "https");
        let client = ClientSecurity::new(
            &ClientTls {
                ca: Some(pki.ca.clone()),
                cert: Some(pki.cert.clone()),
                key: Some(pki.key.clone()),
                domain: None,
            },
            Some(&pki.token),
        )
        .unwrap();
        assert!(client.endpoint("https://127.0.0.1:1").is_ok());
        // A key given as the certificate is named, not a handshake failure later.
        let wrong = ServerSecurity::new(
            Some(&ServerTls {
                cert: pki.key.clone(),
                key: pki.key.clone(),
                client_ca: None,
            }),
            None,
        );
        let e = wrong.err().unwrap().to_string();
        assert!(
            e.contains("loopback-key.pem") && e.contains("CERTIFICATE"),
            "{e}"
        );
        assert_ne!(random_token().unwrap(), random_token().unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Every reader of a private key or token refuses one others can read.
    #[cfg(unix)]
    #[test]
    fn keys_and_tokens_others_can_read_are_refused_by_every_reader() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("umi-pki-open-{}", std::process::id()));
        let pki = write_loopback_pki(&dir).unwrap();
        for path in [&pki.key, &pki.token] {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        let exposed = |e: SecurityError| matches!(e, SecurityError::Exposed { mode: 0o644, .. });
        assert!(exposed(Tokens::load(&pki.token).unwrap_err()));
        let server = ServerSecurity::new(
            Some(&ServerTls {
                cert: pki.cert.clone(),
                key: pki.key.clone(),
                client_ca: None,
            }),
            None,
        );
        assert!(exposed(server.err().unwrap()));
        let tls = ClientTls {
            ca: Some(pki.ca.clone()),
            cert: Some(pki.cert.clone()),
            key: Some(pki.key.clone()),
            domain: None,
        };
        assert!(exposed(ClientSecurity::new(&tls, None).err().unwrap()));
        let ca_only = ClientTls {
            ca: Some(pki.ca.clone()),
            ..ClientTls::default()
        };
        assert!(exposed(
            ClientSecurity::new(&ca_only, Some(&pki.token))
                .err()
                .unwrap()
        ));
        // Certificates are public: a readable one is fine.
        assert!(ClientSecurity::new(&ca_only, None).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
