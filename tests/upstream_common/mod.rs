//! Shared helpers of the `tests/upstream_*.rs` files: record builders, a fresh
//! PostgreSQL database per test, an outbox in a temp dir, a TCP proxy that can cut
//! connections, and a waiter for "every record acknowledged".
#![allow(dead_code)]

use edgegw::config::Delivery;
use edgegw::outbox::{Outbox, OutboxHandle, OutboxSettings};
use edgegw::record::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub const PG_ADMIN: &str = "host=127.0.0.1 port=5432 user=root dbname=test";
pub const GATEWAY: &str = "gwtest";

/// Quick delivery settings for tests: small backoff, short breaker.
pub fn fast_delivery(batch: usize) -> Delivery {
    Delivery {
        batch_max_records: batch,
        batch_max_bytes: 8 * 1024 * 1024,
        drain_rate_per_s: 0.0,
        recovery_jitter_ms: 200,
        backoff_initial_ms: 50,
        backoff_max_ms: 400,
        breaker_failures: 4,
        breaker_open_secs: 1,
        timeout_ms: 3_000,
        idle_poll_ms: 50,
    }
}

/// A TCP port free a moment ago (for a server the test starts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{}_{:08x}", std::process::id(), fastrand::u32(..))
}

/// A database of its own, dropped by [`TestDb::drop_db`].
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub async fn create() -> TestDb {
        let name = unique("edgegw_test");
        let admin = admin().await;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create test database");
        TestDb {
            url: format!("postgres://root@127.0.0.1:5432/{name}"),
            name,
        }
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        connect(&format!(
            "host=127.0.0.1 port=5432 user=root dbname={}",
            self.name
        ))
        .await
    }

    pub async fn drop_db(self) {
        let admin = admin().await;
        let _ = admin
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await;
    }
}

pub async fn connect(conninfo: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(conninfo, tokio_postgres::NoTls)
        .await
        .expect("connect to PostgreSQL on 127.0.0.1:5432 (scripts/test starts it)");
    tokio::spawn(conn);
    client
}

async fn admin() -> tokio_postgres::Client {
    connect(PG_ADMIN).await
}

/// TOML for a timescale upstream at `url` (parsed the way the gateway parses it).
pub fn timescale_cfg(url: &str) -> edgegw::config::TimescaleUpstream {
    toml::from_str(&format!("url = {url:?}\n[delivery]\ntimeout_ms = 3000\n"))
        .expect("timescale config")
}

/// An outbox in `dir` with cursors for `upstreams`.
pub fn outbox(dir: &std::path::Path, upstreams: &[&str]) -> OutboxHandle {
    let o = Outbox::open(
        &dir.join("outbox.db"),
        &OutboxSettings::default(),
        GATEWAY,
        upstreams,
    )
    .expect("open outbox");
    OutboxHandle::new(o)
}

pub fn reading(sensor: &str, i: i64, value: f64) -> Record {
    let (device, channel) = sensor.split_once('.').unwrap_or((sensor, "ch"));
    Record::Reading(ReadingRecord {
        sensor_id: sensor.into(),
        device: device.into(),
        channel: channel.into(),
        sensor_type: SensorType::Vibration,
        unit: "mm/s".into(),
        ts_us: now_us() - 3_600_000_000 + i * 1000,
        value,
        quality: 1.0,
        flags: Vec::new(),
        detection: None,
    })
}

pub fn window(sensor: &str, i: i64) -> Record {
    let (device, channel) = sensor.split_once('.').unwrap_or((sensor, "ch"));
    Record::Window(WindowRecord {
        sensor_id: sensor.into(),
        device: device.into(),
        channel: channel.into(),
        sensor_type: SensorType::Bearing,
        unit: "g".into(),
        ts_us: now_us() - 3_600_000_000 + i * 1000,
        sample_rate_hz: 25_600.0,
        samples: 2048,
        features: vec![
            ("rms".into(), 0.5 + i as f64),
            ("kurtosis".into(), 3.0),
            ("dominant_freq".into(), 120.0),
        ],
        score: Some(0.3),
        threshold: Some(0.8),
        detector: Some("bearing@1".into()),
        quality: 1.0,
    })
}

pub fn alert(
    sensor: &str,
    episode_us: i64,
    ts_us: i64,
    state: AlertState,
    confidence: f64,
) -> Record {
    let (device, channel) = sensor.split_once('.').unwrap_or((sensor, "ch"));
    Record::Alert(AlertRecord {
        sensor_id: sensor.into(),
        device: device.into(),
        channel: channel.into(),
        sensor_type: SensorType::Vibration,
        anomaly_type: "vibration_anomaly".into(),
        severity: severity_from_confidence(confidence),
        confidence,
        description: format!("test alert at {ts_us}"),
        evidence: serde_json::json!({ "score": confidence }),
        recommended_actions: vec!["Inspect the bearing".into()],
        state,
        episode_us,
        ts_us,
    })
}

pub fn summary(sensor: &str, bucket_start_us: i64, avg: f64, count: u64) -> Record {
    Record::Summary(SummaryRecord {
        sensor_id: sensor.into(),
        sensor_type: SensorType::Vibration,
        unit: "mm/s".into(),
        bucket_start_us,
        interval_secs: 3600,
        min: avg - 1.0,
        max: avg + 1.0,
        avg,
        count,
        last: avg,
        device: sensor.rsplit_once('.').map_or("", |(d, _)| d).into(),
    })
}

pub async fn append(outbox: &OutboxHandle, records: Vec<Record>) -> Vec<i64> {
    let (_, res) = outbox.append(records).await;
    res.expect("append to the outbox")
}

/// Waits until `upstream` has nothing pending (acked or dead-lettered everything),
/// or panics after `limit` (a hang guard, not a performance assertion).
pub async fn wait_drained(outbox: &OutboxHandle, upstream: &str, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let pending = outbox.peek(upstream, 1).await.expect("peek").len();
        if pending == 0 {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            let stats = outbox.stats().await.expect("stats");
            panic!("{upstream} did not drain within {limit:?}: {stats:#?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A TCP proxy to `target` that can cut every connection and refuse new ones.
pub struct Proxy {
    pub port: u16,
    down: Arc<AtomicBool>,
    kill: watch::Sender<u64>,
}

impl Proxy {
    pub async fn start(target: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let down = Arc::new(AtomicBool::new(false));
        let (kill, kill_rx) = watch::channel(0u64);
        let target = target.to_string();
        let d = down.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if d.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let target = target.clone();
                let mut kill_rx = kill_rx.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(&target).await else {
                        return;
                    };
                    kill_rx.borrow_and_update();
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = kill_rx.changed() => {}
                    }
                });
            }
        });
        Proxy { port, down, kill }
    }

    /// Cuts every open connection and refuses new ones until [`Proxy::restore`].
    pub fn cut(&self) {
        self.down.store(true, Ordering::SeqCst);
        self.kill.send_modify(|v| *v += 1);
    }

    pub fn restore(&self) {
        self.down.store(false, Ordering::SeqCst);
    }
}
