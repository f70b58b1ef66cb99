//! The HTTP ingest upstream over HTTPS against a small HTTPS server in the test
//! (tokio-rustls, ring) with certificates made in the test: readings delivered with
//! `ca_file` (by IP address and by host name); a certificate for another host name
//! and a server whose CA is not trusted refused, the records kept for a retry and
//! the error saying why.

#[path = "support/tls.rs"]
mod tls_support;
mod upstream_common;

use edgegw::config::HttpUpstream;
use edgegw::upstream::http::HttpSink;
use edgegw::upstream::{run_forwarder, Sink, UpstreamMetrics};
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tls_support::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use upstream_common::*;

const KEY: &str = "tls-test-key";

/// An HTTPS server answering 200 to every POST and keeping the JSON bodies.
struct Ingest {
    port: u16,
    bodies: Arc<Mutex<Vec<serde_json::Value>>>,
    handshake_errors: Arc<Mutex<Vec<String>>>,
}

async fn serve(config: Arc<rustls::ServerConfig>) -> Ingest {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let (b, errs) = (bodies.clone(), errors.clone());
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, b, errs) = (acceptor.clone(), b.clone(), errs.clone());
            tokio::spawn(async move {
                let tls = match acceptor.accept(tcp).await {
                    Ok(t) => t,
                    Err(e) => {
                        errs.lock().unwrap().push(e.to_string());
                        return;
                    }
                };
                let (r, mut w) = tokio::io::split(tls);
                let mut r = BufReader::new(r);
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let mut len = 0usize;
                    let mut key_ok = false;
                    loop {
                        let mut h = String::new();
                        if r.read_line(&mut h).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let h = h.trim_end();
                        if h.is_empty() {
                            break;
                        }
                        let (name, value) = h.split_once(':').unwrap_or((h, ""));
                        match name.to_ascii_lowercase().as_str() {
                            "content-length" => len = value.trim().parse().unwrap_or(0),
                            "x-api-key" => key_ok = value.trim() == KEY,
                            _ => {}
                        }
                    }
                    let mut body = vec![0u8; len];
                    if r.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    let status = if key_ok {
                        b.lock()
                            .unwrap()
                            .push(serde_json::from_slice(&body).unwrap_or_default());
                        "200 OK"
                    } else {
                        "403 Forbidden"
                    };
                    let answer = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{{}}"
                    );
                    if w.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ingest {
        port,
        bodies,
        handshake_errors: errors,
    }
}

fn cfg(url: &str, ca: Option<&Path>, key_file: &Path) -> HttpUpstream {
    let ca = ca
        .map(|p| format!("ca_file = {:?}\n", p.display().to_string()))
        .unwrap_or_default();
    toml::from_str(&format!(
        "url = {url:?}\napi_key = {{ file = {:?} }}\n{ca}\n[delivery]\ntimeout_ms = 3000\n",
        key_file.display().to_string()
    ))
    .expect("http config")
}

fn key_file(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("api-key");
    std::fs::write(&p, format!("{KEY}\n")).unwrap();
    p
}

#[tokio::test]
async fn https_with_the_ca_file_delivers_readings() {
    let pki = Pki::new();
    let ingest = serve(server_config(&pki.server, None)).await;
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path());
    let outbox = outbox(dir.path(), &["http"]);
    append(
        &outbox,
        vec![reading("press.rms", 1, 4.2), reading("press.rms", 2, 4.3)],
    )
    .await;
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run_forwarder(
        HttpSink::new(
            cfg(
                &format!("https://127.0.0.1:{}", ingest.port),
                Some(&pki.ca),
                &key,
            ),
            GATEWAY,
        ),
        outbox.clone(),
        fast_delivery(50),
        Arc::new(Notify::new()),
        Arc::new(UpstreamMetrics::default()),
        cancel.clone(),
    ));
    wait_drained(&outbox, "http", Duration::from_secs(30)).await;
    cancel.cancel();
    task.await.unwrap();
    let bodies = ingest.bodies.lock().unwrap().clone();
    let values: Vec<f64> = bodies.iter().filter_map(|b| b["value"].as_f64()).collect();
    assert_eq!(values, [4.2, 4.3], "{bodies:?}");

    // By host name as well (the certificate names localhost too).
    let mut sink = HttpSink::new(
        cfg(
            &format!("https://localhost:{}", ingest.port),
            Some(&pki.ca),
            &key,
        ),
        GATEWAY,
    );
    let batch = stored(vec![reading("press.rms", 3, 4.4)]);
    let out = sink.deliver(&batch).await;
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!(ingest.bodies.lock().unwrap().len(), 3);
    assert!(ingest.handshake_errors.lock().unwrap().is_empty());
}

/// Records as the outbox hands them to a sink.
fn stored(records: Vec<edgegw::record::Record>) -> Vec<edgegw::record::StoredRecord> {
    records
        .into_iter()
        .enumerate()
        .map(|(i, record)| edgegw::record::StoredRecord {
            id: i as i64 + 1,
            key: format!("{GATEWAY}:test:{i}"),
            created_us: edgegw::record::now_us(),
            record,
        })
        .collect()
}

/// One delivery attempt: nothing delivered, the error returned as text.
async fn refused(cfg: HttpUpstream) -> String {
    let mut sink = HttpSink::new(cfg, GATEWAY);
    let out = sink
        .deliver(&stored(vec![reading("press.rms", 1, 4.2)]))
        .await;
    assert_eq!(out.done, 0, "delivered although it must be refused");
    let e = out.error.expect("an error").to_string();
    eprintln!("refused as expected: {e}");
    e
}

#[tokio::test]
async fn a_certificate_for_another_host_is_refused_and_the_error_says_why() {
    let pki = Pki::new();
    let ingest = serve(server_config(&pki.wrong_host, None)).await;
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path());
    let url = format!("https://127.0.0.1:{}", ingest.port);
    let e = refused(cfg(&url, Some(&pki.ca), &key)).await;
    assert!(e.contains("not valid for name"), "{e}");
    assert!(ingest.bodies.lock().unwrap().is_empty());

    // Through the forwarder: retried, never acknowledged, never dead-lettered.
    let outbox = outbox(dir.path(), &["http"]);
    append(&outbox, vec![reading("press.rms", 1, 4.2)]).await;
    let cancel = CancellationToken::new();
    let metrics = Arc::new(UpstreamMetrics::default());
    let task = tokio::spawn(run_forwarder(
        HttpSink::new(cfg(&url, Some(&pki.ca), &key), GATEWAY),
        outbox.clone(),
        fast_delivery(50),
        Arc::new(Notify::new()),
        metrics.clone(),
        cancel.clone(),
    ));
    wait_until("two failed attempts", Duration::from_secs(30), || {
        metrics.retried.load(Relaxed) >= 2
    })
    .await;
    cancel.cancel();
    task.await.unwrap();
    assert_eq!(metrics.acked.load(Relaxed), 0);
    assert_eq!(metrics.dead_lettered.load(Relaxed), 0);
    assert_eq!(outbox.peek("http", 10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_server_whose_ca_is_not_trusted_is_refused() {
    let pki = Pki::new();
    let ingest = serve(server_config(&pki.untrusted, None)).await;
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path());
    let url = format!("https://127.0.0.1:{}", ingest.port);
    let e = refused(cfg(&url, Some(&pki.ca), &key)).await;
    assert!(e.contains("UnknownIssuer"), "{e}");
    let e = refused(cfg(&url, None, &key)).await;
    assert!(
        e.contains("UnknownIssuer") || e.contains("no trusted root certificates"),
        "{e}"
    );
    assert!(ingest.bodies.lock().unwrap().is_empty());
}
