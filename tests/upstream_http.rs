//! The HTTP ingest upstream against a small server in the test that implements the
//! cloud's contract: `POST /api/v1/data/ingest`, `X-API-Key` (403 on a bad one), 422
//! on a bad body, `Idempotency-Key` dedupe, and scripted 429 / 500 / slow answers.

mod upstream_common;

use edgegw::config::HttpUpstream;
use edgegw::record::{now_us, AlertState, Record};
use edgegw::upstream::http::HttpSink;
use edgegw::upstream::{run_forwarder, UpstreamMetrics};
use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use upstream_common::*;

const KEY: &str = "test-key-123";

#[derive(Default)]
struct Cloud {
    /// Events accepted (after Idempotency-Key dedupe): (sensor_id, value).
    accepted: Vec<(String, f64)>,
    idempotency: HashSet<String>,
    /// Every request's arrival time.
    arrivals: Vec<Instant>,
    /// Scripted answers for the next requests: status (0 = sleep 5 s then 200).
    script: VecDeque<u16>,
    duplicates: u64,
}

async fn serve(cloud: Arc<Mutex<Cloud>>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            let cloud = cloud.clone();
            tokio::spawn(async move {
                let (r, mut w) = sock.into_split();
                let mut r = BufReader::new(r);
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                    let mut len = 0usize;
                    let mut api_key = String::new();
                    let mut idem = String::new();
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
                        let value = value.trim().to_string();
                        match name.to_ascii_lowercase().as_str() {
                            "content-length" => len = value.parse().unwrap_or(0),
                            "x-api-key" => api_key = value,
                            "idempotency-key" => idem = value,
                            _ => {}
                        }
                    }
                    let mut body = vec![0; len];
                    if r.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    let scripted = {
                        let mut c = cloud.lock().unwrap();
                        c.arrivals.push(Instant::now());
                        c.script.pop_front()
                    };
                    let (status, answer) = match scripted {
                        Some(0) => {
                            tokio::time::sleep(Duration::from_secs(5)).await;
                            (200, "{\"status\":\"late\"}".to_string())
                        }
                        Some(s) => (s, format!("{{\"detail\":\"scripted {s}\"}}")),
                        None => handle(&cloud, &path, &api_key, &idem, &body),
                    };
                    let resp = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
                        answer.len()
                    );
                    if w.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// The contract: key, body shape, value rules, dedupe.
fn handle(cloud: &Mutex<Cloud>, path: &str, key: &str, idem: &str, body: &[u8]) -> (u16, String) {
    if path != "/api/v1/data/ingest" {
        return (404, "{\"detail\":\"not found\"}".into());
    }
    if key != KEY {
        return (403, "{\"detail\":\"invalid API key\"}".into());
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return (422, "{\"detail\":\"body is not JSON\"}".into());
    };
    let ts_ok = v["timestamp"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z') && t.contains('T'));
    let (Some(sensor), Some(value), true) = (v["sensor_id"].as_str(), v["value"].as_f64(), ts_ok)
    else {
        return (422, format!("{{\"detail\":\"missing field in {v}\"}}"));
    };
    if value < 0.0 || sensor.ends_with(".reject") {
        return (
            422,
            format!("{{\"detail\":\"value rejected for {sensor}\"}}"),
        );
    }
    for f in [
        "sensor_type",
        "unit",
        "quality",
        "correlation_id",
        "metadata",
    ] {
        if v.get(f).is_none() {
            return (422, format!("{{\"detail\":\"{f} missing\"}}"));
        }
    }
    let mut c = cloud.lock().unwrap();
    if !idem.is_empty() && !c.idempotency.insert(idem.to_string()) {
        c.duplicates += 1;
        return (200, "{\"status\":\"duplicate\",\"event_id\":\"x\"}".into());
    }
    c.accepted.push((sensor.to_string(), value));
    (200, "{\"status\":\"accepted\",\"event_id\":\"e1\"}".into())
}

fn cfg(port: u16, rate: f64, key_env: &str) -> HttpUpstream {
    toml::from_str(&format!(
        "url = \"http://127.0.0.1:{port}\"\napi_key = {{ env = \"{key_env}\" }}\nrate_per_s = {rate:?}\n[delivery]\ntimeout_ms = 1000\n"
    ))
    .unwrap()
}

async fn run(
    sink: HttpSink,
    outbox: &edgegw::outbox::OutboxHandle,
) -> (
    edgegw::upstream::ForwarderReport,
    edgegw::upstream::MetricsSnapshot,
) {
    let cancel = CancellationToken::new();
    let metrics = Arc::new(UpstreamMetrics::default());
    let task = tokio::spawn(run_forwarder(
        sink,
        outbox.clone(),
        fast_delivery(50),
        Arc::new(Notify::new()),
        metrics.clone(),
        cancel.clone(),
    ));
    wait_drained(outbox, "http", Duration::from_secs(60)).await;
    cancel.cancel();
    (task.await.unwrap(), metrics.snapshot())
}

#[tokio::test]
async fn contract_answers_map_to_ack_retry_and_dead_letters() {
    std::env::set_var("EDGEGW_TEST_HTTP_KEY_OK", KEY);
    let cloud = Arc::new(Mutex::new(Cloud::default()));
    // First requests: 500, 429, then one slow answer (past the 1 s timeout).
    cloud.lock().unwrap().script = VecDeque::from([500, 429, 0]);
    let port = serve(cloud.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let outbox = outbox(dir.path(), &["http"]);
    let mut records: Vec<Record> = (0..10).map(|i| reading("press.rms", i, i as f64)).collect();
    records.push(reading("press.rms", 100, -1.0)); // refused by rule: never sent
    let mut old = reading("press.rms", 101, 5.0);
    if let Record::Reading(r) = &mut old {
        r.ts_us = now_us() - 25 * 3_600_000_000;
    }
    records.push(old); // older than 24 h: never sent
    records.push(reading("press.reject", 102, 1.0)); // the cloud answers 422
    records.push(alert("press.vib", 1, 1, AlertState::Open, 0.9)); // not for this API
    records.push(window("press.vib", 5)); // not for this API
    append(&outbox, records).await;

    let (report, metrics) = run(
        HttpSink::new(cfg(port, 200.0, "EDGEGW_TEST_HTTP_KEY_OK"), GATEWAY),
        &outbox,
    )
    .await;
    assert_eq!(report.dead_lettered, 3);
    // The scripted 500, 429 and slow answer were all served (they may fall into one
    // batch, which then counts as one failed attempt) and led to retries.
    assert!(cloud.lock().unwrap().script.is_empty());
    assert!(metrics.retried >= 1, "{metrics:?}");
    assert_eq!(metrics.auth_errors, 0);
    let mut values: Vec<f64> = cloud
        .lock()
        .unwrap()
        .accepted
        .iter()
        .map(|(_, v)| *v)
        .collect();
    values.sort_by(f64::total_cmp);
    assert_eq!(
        values,
        (0..10).map(|i| i as f64).collect::<Vec<_>>(),
        "each reading once"
    );
    let dl = outbox
        .with(|o| o.dead_letters(Some("http"), 10))
        .await
        .unwrap();
    let reasons: Vec<&str> = dl.iter().map(|d| d.reason.as_str()).collect();
    assert!(
        reasons.iter().any(|r| r.contains("negative value")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("older than")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("HTTP 422") && r.contains("value rejected for press.reject")),
        "{reasons:?}"
    );
}

#[tokio::test]
async fn a_bad_api_key_dead_letters_and_counts_auth_errors() {
    std::env::set_var("EDGEGW_TEST_HTTP_KEY_BAD", "wrong");
    let cloud = Arc::new(Mutex::new(Cloud::default()));
    let port = serve(cloud.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let outbox = outbox(dir.path(), &["http"]);
    append(
        &outbox,
        (0..5).map(|i| reading("press.rms", i, 1.0)).collect(),
    )
    .await;
    let (report, metrics) = run(
        HttpSink::new(cfg(port, 200.0, "EDGEGW_TEST_HTTP_KEY_BAD"), GATEWAY),
        &outbox,
    )
    .await;
    assert_eq!(report.dead_lettered, 5);
    assert_eq!(metrics.auth_errors, 5);
    let dl = outbox
        .with(|o| o.dead_letters(Some("http"), 10))
        .await
        .unwrap();
    assert!(
        dl[0].reason.contains("403") && dl[0].reason.contains("invalid API key"),
        "{}",
        dl[0].reason
    );
    assert!(cloud.lock().unwrap().accepted.is_empty());
}

#[tokio::test]
async fn the_rate_limit_holds_and_resends_are_deduplicated_by_the_cloud() {
    std::env::set_var("EDGEGW_TEST_HTTP_KEY_RATE", KEY);
    let cloud = Arc::new(Mutex::new(Cloud::default()));
    let port = serve(cloud.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let outbox = outbox(dir.path(), &["http", "other"]);
    append(
        &outbox,
        (0..60).map(|i| reading("press.rms", i, i as f64)).collect(),
    )
    .await;
    let rate = 20.0;
    run(
        HttpSink::new(cfg(port, rate, "EDGEGW_TEST_HTTP_KEY_RATE"), GATEWAY),
        &outbox,
    )
    .await;
    let (n, span) = {
        let c = cloud.lock().unwrap();
        let first = c.arrivals[0];
        let last = *c.arrivals.last().unwrap();
        (c.arrivals.len(), last.duration_since(first).as_secs_f64())
    };
    assert_eq!(n, 60);
    // A token bucket with a burst of one second's worth: after the burst, 1/rate apart.
    let observed = (n as f64 - rate) / span;
    assert!(
        observed <= rate * 1.2,
        "{observed:.1} requests/s above the {rate}/s limit"
    );

    // Send everything again (the "other" cursor acknowledged nothing): the cloud sees
    // the same Idempotency-Keys and keeps each reading once.
    let again = outbox.with(|o| o.peek("other", 100)).await.unwrap();
    let mut sink = HttpSink::new(cfg(port, 1000.0, "EDGEGW_TEST_HTTP_KEY_RATE"), GATEWAY);
    let out = edgegw::upstream::Sink::deliver(&mut sink, &again).await;
    assert!(out.error.is_none());
    let c = cloud.lock().unwrap();
    assert_eq!(c.accepted.len(), 60);
    assert_eq!(c.duplicates, 60);
}
