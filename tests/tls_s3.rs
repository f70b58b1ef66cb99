//! S3 model sync over HTTPS with a private CA (`[models.s3] ca_file`): a real
//! `s3s-fs` (SigV4-checking) behind a TLS-terminating proxy in the test, with
//! certificates made in the test. A full sync (index, manifest, model) and a PUT go
//! through with the CA; a certificate for another host name and a server whose CA is
//! not trusted are refused, with the reason in the error and the registry unchanged.

#[path = "support/s3.rs"]
mod support;
#[path = "support/tls.rs"]
mod tls_support;

use edgegw::inference::s3::{Fetched, S3Client, S3Error};
use edgegw::inference::sync::ModelSync;
use edgegw::inference::{shared, BundleKind, ModelRegistry, SharedRegistry};
use edgegw::record::SensorType;
use support::*;
use tls_support::*;

fn registry() -> SharedRegistry {
    shared(ModelRegistry::with_defaults().expect("defaults"))
}

fn active(reg: &SharedRegistry) -> String {
    reg.load()
        .select(SensorType::Vibration, BundleKind::Window)
        .map(|b| b.detector().to_string())
        .unwrap_or_default()
}

/// s3s-fs with one bundle and its index published (over plain HTTP, by the test).
async fn published() -> (S3Server, Keys, Bundle) {
    let server = S3Server::start();
    let keys = Keys::good();
    let plain = client(&server.endpoint(), &keys);
    let b = Bundle::vibration("vibration-tls", "1.0.0", 7.0);
    publish(&plain, &b).await;
    publish_index(&plain, &[("vibration", &b)]).await;
    (server, keys, b)
}

fn https_config(
    host: &str,
    port: u16,
    keys: &Keys,
    ca: Option<&std::path::Path>,
) -> edgegw::config::ModelsS3Config {
    let mut c = s3_config(&format!("https://{host}:{port}"), keys);
    c.ca_file = ca.map(|p| p.to_path_buf());
    c
}

#[tokio::test]
async fn a_sync_over_https_with_the_ca_file_installs_the_bundle() {
    let pki = Pki::new();
    let (server, keys, bundle) = published().await;
    let proxy = TlsProxy::start(server.port, server_config(&pki.server, None)).await;

    let state = tempfile::tempdir().unwrap();
    let reg = registry();
    let cfg = https_config("127.0.0.1", proxy.port, &keys, Some(&pki.ca));
    let mut sync = ModelSync::new(
        &gateway_config(state.path(), Some(cfg.clone())),
        reg.clone(),
    )
    .expect("sync");
    let report = sync.sync_once().await.expect("sync over https");
    assert_eq!(report.installed.len(), 1, "{report:?}");
    assert_eq!(active(&reg), bundle.detector());

    // A PUT (what the publish tool does) and a GET by host name.
    let c = S3Client::new(&https_config("localhost", proxy.port, &keys, Some(&pki.ca)))
        .expect("client");
    c.put("edge/over-tls.txt", b"hello".to_vec())
        .await
        .expect("put over https");
    match c.get("edge/over-tls.txt", None, 1024).await.expect("get") {
        Fetched::Object { bytes, .. } => assert_eq!(bytes, b"hello"),
        other => panic!("{other:?}"),
    }
    assert!(proxy.handshake_errors.lock().unwrap().is_empty());
}

async fn refused(cfg: &edgegw::config::ModelsS3Config) -> String {
    let c = S3Client::new(cfg).expect("client");
    match c.get("edge/index.json", None, 1 << 20).await {
        Err(e @ S3Error::Connect { .. }) => {
            let e = e.to_string();
            eprintln!("refused as expected: {e}");
            e
        }
        other => panic!("expected a refused connection, got {other:?}"),
    }
}

#[tokio::test]
async fn a_certificate_for_another_host_or_an_untrusted_ca_is_refused() {
    let pki = Pki::new();
    let (server, keys, _bundle) = published().await;
    let wrong = TlsProxy::start(server.port, server_config(&pki.wrong_host, None)).await;
    let untrusted = TlsProxy::start(server.port, server_config(&pki.untrusted, None)).await;

    let e = refused(&https_config("127.0.0.1", wrong.port, &keys, Some(&pki.ca))).await;
    assert!(
        e.contains("not valid for name") && e.contains("127.0.0.1"),
        "{e}"
    );
    let e = refused(&https_config(
        "127.0.0.1",
        untrusted.port,
        &keys,
        Some(&pki.ca),
    ))
    .await;
    assert!(e.contains("UnknownIssuer"), "{e}");
    // No secret in the message (the signed URL carries the access key id).
    assert!(!e.contains(ACCESS_KEY), "{e}");

    // A whole sync fails and keeps the built-in model.
    let state = tempfile::tempdir().unwrap();
    let reg = registry();
    let before = active(&reg);
    let mut sync = ModelSync::new(
        &gateway_config(
            state.path(),
            Some(https_config("127.0.0.1", wrong.port, &keys, Some(&pki.ca))),
        ),
        reg.clone(),
    )
    .expect("sync");
    let err = sync.sync_once().await.expect_err("refused");
    assert!(err.to_string().contains("not valid for name"), "{err}");
    assert_eq!(active(&reg), before);
}
