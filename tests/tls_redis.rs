//! The Redis upstream over TLS (`rediss://`) against a `redis-server` of its own per
//! test with a TLS port only and certificates made in the test: alerts and latest
//! values delivered with the configured CA (by IP address and by host name); a
//! certificate for another host name and a server whose CA is not trusted refused,
//! with the reason; mutual TLS (`tls-auth-clients yes`) with a client certificate.

#[path = "support/tls.rs"]
mod tls_support;
mod upstream_common;

use edgegw::config::RedisUpstream;
use edgegw::record::AlertState;
use edgegw::upstream::redis::{self as redis_up, RedisSink};
use edgegw::upstream::{run_forwarder, UpstreamMetrics};
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tls_support::*;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use upstream_common::*;

fn cfg(url: &str, extra: &str) -> RedisUpstream {
    toml::from_str(&format!(
        "url = {url:?}\nkey_prefix = \"tls:\"\n{extra}\n[delivery]\ntimeout_ms = 3000\n"
    ))
    .expect("redis config")
}

fn ca(p: &Path) -> String {
    format!("ca_file = {:?}\n", p.display().to_string())
}

async fn refused(cfg: &RedisUpstream) -> String {
    match redis_up::connect(cfg).await {
        Ok(_) => panic!("connected to {} although it must be refused", cfg.url),
        Err(e) => {
            eprintln!("refused as expected: {e}");
            e.to_string()
        }
    }
}

async fn ping(cfg: &RedisUpstream) {
    let mut c = redis_up::connect(cfg)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let pong: String = redis::cmd("PING").query_async(&mut c).await.unwrap();
    assert_eq!(pong, "PONG");
}

async fn drain(cfg: RedisUpstream, outbox: &edgegw::outbox::OutboxHandle) {
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run_forwarder(
        RedisSink::new(cfg, GATEWAY),
        outbox.clone(),
        fast_delivery(100),
        Arc::new(Notify::new()),
        Arc::new(UpstreamMetrics::default()),
        cancel.clone(),
    ));
    wait_drained(outbox, "redis", Duration::from_secs(30)).await;
    cancel.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn rediss_with_the_ca_file_delivers_alerts_and_latest_values() {
    let pki = Pki::new();
    let server = RedisServer::start(&pki, &pki.server, "no");
    let cfg = cfg(
        &format!("rediss://127.0.0.1:{}/0", server.port),
        &ca(&pki.ca),
    );
    // By host name too (the certificate has both).
    ping(&self::cfg(
        &format!("rediss://localhost:{}/0", server.port),
        &ca(&pki.ca),
    ))
    .await;

    let dir = tempfile::tempdir().unwrap();
    let outbox = outbox(dir.path(), &["redis"]);
    let t0 = edgegw::record::now_us() - 60_000_000;
    append(
        &outbox,
        vec![
            reading("press.rms", 1, 4.2),
            reading("press.rms", 2, 4.5),
            alert("press.rms", t0, t0, AlertState::Open, 0.9),
        ],
    )
    .await;
    drain(cfg.clone(), &outbox).await;

    let mut c = redis_up::connect(&cfg).await.expect("connect");
    let len: u64 = redis::cmd("XLEN")
        .arg("tls:alerts")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(len, 1);
    let value: String = redis::cmd("HGET")
        .arg("tls:latest:press.rms")
        .arg("value")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(value, "4.5");
    assert!(server.log().contains("Ready to accept connections"));
}

#[tokio::test]
async fn a_certificate_for_another_host_is_refused_and_the_error_says_why() {
    let pki = Pki::new();
    let server = RedisServer::start(&pki, &pki.wrong_host, "no");
    let cfg = cfg(
        &format!("rediss://127.0.0.1:{}/0", server.port),
        &ca(&pki.ca),
    );
    let e = refused(&cfg).await;
    assert!(
        e.contains("not valid for name") && e.contains("127.0.0.1"),
        "{e}"
    );

    // The forwarder keeps the alert and retries.
    let dir = tempfile::tempdir().unwrap();
    let outbox = outbox(dir.path(), &["redis"]);
    let t0 = edgegw::record::now_us();
    append(
        &outbox,
        vec![alert("press.rms", t0, t0, AlertState::Open, 0.9)],
    )
    .await;
    let cancel = CancellationToken::new();
    let metrics = Arc::new(UpstreamMetrics::default());
    let task = tokio::spawn(run_forwarder(
        RedisSink::new(cfg, GATEWAY),
        outbox.clone(),
        fast_delivery(100),
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
    assert_eq!(outbox.peek("redis", 10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_server_whose_ca_is_not_trusted_is_refused() {
    let pki = Pki::new();
    let server = RedisServer::start(&pki, &pki.untrusted, "no");
    let url = format!("rediss://127.0.0.1:{}/0", server.port);
    let e = refused(&cfg(&url, &ca(&pki.ca))).await;
    assert!(e.contains("UnknownIssuer"), "{e}");
    // The system roots do not hold it either.
    let e = refused(&cfg(&url, "")).await;
    assert!(
        e.contains("UnknownIssuer") || e.contains("no trusted root certificates"),
        "{e}"
    );
}

#[tokio::test]
async fn mutual_tls_with_a_client_certificate() {
    let pki = Pki::new();
    let server = RedisServer::start(&pki, &pki.server, "yes");
    let url = format!("rediss://127.0.0.1:{}/0", server.port);
    // Without a client certificate the server drops the connection.
    refused(&cfg(&url, &ca(&pki.ca))).await;
    let with_cert = format!(
        "{}cert_file = {:?}\nkey_file = {{ file = {:?} }}\n",
        ca(&pki.ca),
        pki.client.cert.display().to_string(),
        pki.client.key.display().to_string()
    );
    ping(&cfg(&url, &with_cert)).await;
}
