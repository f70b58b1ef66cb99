//! The TimescaleDB upstream over TLS (`sslmode=verify-full`) against a PostgreSQL of
//! its own per test (initdb in a temp dir, `ssl = on`, TLS-only pg_hba.conf) with
//! certificates made in the test: readings, windows and alerts delivered with the
//! configured CA; a certificate for another host name, a server whose CA is not
//! trusted, and the system roots (which do not hold the test CA) all refused, with
//! the reason in the error.

#[path = "support/pg.rs"]
mod pg;
#[path = "support/tls.rs"]
mod tls_support;
mod upstream_common;

use edgegw::config::TimescaleUpstream;
use edgegw::record::AlertState;
use edgegw::upstream::timescale::{self, TimescaleSink};
use edgegw::upstream::{run_forwarder, schema, UpstreamMetrics};
use pg::PgServer;
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tls_support::*;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use upstream_common::*;

const CONNECT: Duration = Duration::from_secs(10);

fn cfg(port: u16, sslmode: &str, ca: Option<&std::path::Path>) -> TimescaleUpstream {
    let ca = ca
        .map(|p| format!("ca_file = {:?}\n", p.display().to_string()))
        .unwrap_or_default();
    toml::from_str(&format!(
        "url = \"postgres://edgegw@127.0.0.1:{port}/postgres?sslmode={sslmode}\"\n{ca}\n[delivery]\ntimeout_ms = 5000\n"
    ))
    .expect("timescale config")
}

async fn refused(cfg: &TimescaleUpstream) -> String {
    match timescale::connect(cfg, CONNECT).await {
        Ok(_) => panic!("connected to {} although it must be refused", cfg.url),
        Err(e) => {
            eprintln!("refused as expected: {e}");
            e.to_string()
        }
    }
}

#[tokio::test]
async fn verify_full_with_the_ca_file_delivers_over_tls() {
    let pki = Pki::new();
    let pg = PgServer::tls_only(&pki.server.cert, &pki.server.key);
    let cfg = cfg(pg.port, "verify-full", Some(&pki.ca));

    let client = timescale::connect(&cfg, CONNECT)
        .await
        .unwrap_or_else(|e| panic!("{e}\nserver log:\n{}", pg.log()));
    // The server says this session is encrypted.
    let ssl: bool = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(ssl);
    schema::init_schema(&client).await.expect("init schema");

    let dir = tempfile::tempdir().unwrap();
    let outbox = outbox(dir.path(), &["timescale"]);
    let t0 = edgegw::record::now_us() - 60_000_000;
    append(
        &outbox,
        vec![
            reading("press.rms", 1, 4.2),
            reading("press.rms", 2, 4.3),
            window("press.vib", 3),
            alert("press.rms", t0, t0, AlertState::Open, 0.9),
        ],
    )
    .await;
    let cancel = CancellationToken::new();
    let metrics = Arc::new(UpstreamMetrics::default());
    let task = tokio::spawn(run_forwarder(
        TimescaleSink::new(cfg.clone(), GATEWAY, HashMap::new()),
        outbox.clone(),
        fast_delivery(100),
        Arc::new(Notify::new()),
        metrics.clone(),
        cancel.clone(),
    ));
    wait_drained(&outbox, "timescale", Duration::from_secs(60)).await;
    cancel.cancel();
    task.await.unwrap();
    let n = |sql: &'static str| {
        let client = &client;
        async move { client.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    assert_eq!(
        n("SELECT count(*) FROM sensor_readings WHERE sensor_id = 'press.rms'").await,
        2
    );
    assert!(
        n("SELECT count(*) FROM sensor_readings WHERE sensor_id LIKE 'press.vib.%'").await >= 3
    );
    assert_eq!(n("SELECT count(*) FROM anomaly_alerts").await, 1);
    assert_eq!(metrics.dead_lettered.load(Relaxed), 0);

    // This server admits TLS only: the plain connection the gateway makes without
    // sslmode=verify-full is refused, so the delivery above went over TLS.
    let plain = refused(&self::cfg(pg.port, "disable", None)).await;
    assert!(plain.contains("no encryption"), "{plain}");
}

#[tokio::test]
async fn a_certificate_for_another_host_is_refused_and_the_error_says_why() {
    let pki = Pki::new();
    // Signed by the trusted CA, but for wrong.example, not 127.0.0.1.
    let pg = PgServer::tls_only(&pki.wrong_host.cert, &pki.wrong_host.key);
    for mode in ["verify-full", "require"] {
        let e = refused(&cfg(pg.port, mode, Some(&pki.ca))).await;
        assert!(
            e.contains("not valid for name") && e.contains("127.0.0.1"),
            "sslmode={mode}: {e}"
        );
    }

    // The forwarder retries and keeps the records; nothing reaches the database.
    let dir = tempfile::tempdir().unwrap();
    let outbox = outbox(dir.path(), &["timescale"]);
    append(&outbox, vec![reading("press.rms", 1, 4.2)]).await;
    let cancel = CancellationToken::new();
    let metrics = Arc::new(UpstreamMetrics::default());
    let task = tokio::spawn(run_forwarder(
        TimescaleSink::new(
            cfg(pg.port, "verify-full", Some(&pki.ca)),
            GATEWAY,
            HashMap::new(),
        ),
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
    assert_eq!(outbox.peek("timescale", 10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_server_whose_ca_is_not_trusted_is_refused() {
    let pki = Pki::new();
    let pg = PgServer::tls_only(&pki.untrusted.cert, &pki.untrusted.key);
    let e = refused(&cfg(pg.port, "verify-full", Some(&pki.ca))).await;
    assert!(e.contains("UnknownIssuer"), "{e}");
    // Without ca_file the system roots are used; they do not hold a private CA.
    let e = refused(&cfg(pg.port, "verify-full", None)).await;
    assert!(
        e.contains("UnknownIssuer") || e.contains("no trusted root certificates"),
        "{e}"
    );
}

#[test]
fn sslmode_values() {
    let u = |q: &str| cfg(5432, q, None).connection_url();
    assert_eq!(
        u("verify-full").unwrap(),
        (
            "postgres://edgegw@127.0.0.1:5432/postgres".to_string(),
            true
        )
    );
    assert!(u("require").unwrap().1);
    assert!(!u("prefer").unwrap().1);
    assert!(!u("disable").unwrap().1);
    assert!(u("verify-ca").unwrap_err().contains("verify-full"));
    let keep: TimescaleUpstream = toml::from_str(
        "url = \"postgres://u@h/db?connect_timeout=3&sslmode=verify-full&application_name=x\"",
    )
    .unwrap();
    assert_eq!(
        keep.connection_url().unwrap(),
        (
            "postgres://u@h/db?connect_timeout=3&application_name=x".to_string(),
            true
        )
    );
}
