//! A worker's role is bound to its certificate: a client reaching a worker for a role
//! checks the certificate against that role's name, whatever address the worker
//! registered; and a client with TLS settings sends nothing to a plaintext address, not
//! even on loopback (any local user can listen there).

use tonic::service::Routes;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use umi_core::agent::RoleKind;
use umi_rpc::pki::{write_loopback_pki, LoopbackPki};
use umi_rpc::security::{ClientSecurity, ClientTls, ServerSecurity, ServerTls};
use umi_rpc::serve::{serve_with, ServeOptions, Shutdown};

/// Serves health over TLS with `cert`/`key` on a loopback port, until the test ends.
async fn tls_server(cert: &std::path::Path, key: &std::path::Path) -> String {
    let security = ServerSecurity::new(
        Some(&ServerTls {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            client_ca: None,
        }),
        None,
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        serve_with(
            listener,
            "test.Worker",
            Routes::default(),
            &security,
            Shutdown::on(std::future::pending()),
            ServeOptions::default(),
        )
        .await
    });
    format!("https://{addr}")
}

fn client(pki: &LoopbackPki) -> ClientSecurity {
    ClientSecurity::new(
        &ClientTls {
            ca: Some(pki.ca.clone()),
            ..ClientTls::default()
        },
        Some(&pki.token),
    )
    .unwrap()
}

/// Whether a health call to the `role` worker at `address` gets through the handshake.
async fn reaches(security: &ClientSecurity, address: &str, role: &str) -> Result<(), String> {
    let endpoint = security
        .worker_endpoint(address, role)
        .map_err(|e| e.to_string())?;
    let channel = endpoint.connect().await.map_err(|e| format!("{e:?}"))?;
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn a_worker_serves_only_the_role_its_certificate_names() {
    let dir = tempfile::tempdir().unwrap();
    let pki = write_loopback_pki(dir.path()).unwrap();
    let security = client(&pki);
    let planner = pki.worker(RoleKind::Planner);
    let at = tls_server(&planner.cert, &planner.key).await;
    reaches(&security, &at, "planner").await.unwrap();
    // The same worker registered as a caller (or summarizer) gets no call.
    for role in ["caller", "summarizer"] {
        let refused = reaches(&security, &at, role).await;
        assert!(refused.is_err(), "a planner certificate served {role}");
    }
    // A certificate from the same CA without any role name (the coordinator's) serves
    // no role either.
    let loopback = tls_server(&pki.cert, &pki.key).await;
    assert!(reaches(&security, &loopback, "planner").await.is_err());
    // The address alone is still checked the usual way (coordinators, `bench role`).
    let endpoint = security.endpoint(&loopback).unwrap();
    endpoint.connect().await.unwrap();
}

#[tokio::test]
async fn a_client_with_tls_settings_refuses_plaintext_even_on_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let pki = write_loopback_pki(dir.path()).unwrap();
    let e = client(&pki)
        .worker_endpoint("http://127.0.0.1:50051", "planner")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("http://127.0.0.1:50051") && e.contains("plaintext"),
        "{e}"
    );
    // A token alone (no TLS settings) may still be sent to loopback, not beyond.
    let token_only = ClientSecurity::new(&ClientTls::default(), Some(&pki.token)).unwrap();
    assert!(token_only.endpoint("http://127.0.0.1:50051").is_ok());
    assert!(token_only.endpoint("http://10.0.0.7:50051").is_err());
}
