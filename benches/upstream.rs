//! Drain rate of the TimescaleDB upstream into the local PostgreSQL: COPY vs
//! row-by-row INSERT, and the time to drain a large backlog, end to end (outbox
//! peek -> sink -> database commit -> outbox ack); and the drain of the Redis upstream
//! (latest value per sensor), with the CPU time it took.
//!
//! Needs PostgreSQL on 127.0.0.1:5432 (trust auth, user root, database `test`) and
//! Redis on 127.0.0.1:6379; each run creates and drops its own database, and deletes
//! its own Redis keys. Run with `scripts/bench-upstream`, or:
//! `cargo bench --bench upstream -- [backlog readings] [insert-compare readings]`.

use edgegw::config::{Delivery, RedisUpstream};
use edgegw::outbox::{Outbox, OutboxHandle, OutboxSettings};
use edgegw::record::{now_us, ReadingRecord, Record, SensorType};
use edgegw::upstream::redis::RedisSink;
use edgegw::upstream::timescale::{InsertMode, TimescaleSink};
use edgegw::upstream::{run_forwarder, schema, UpstreamMetrics};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

const ADMIN: &str = "host=127.0.0.1 port=5432 user=root dbname=test";

async fn pg(conninfo: &str) -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(conninfo, tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL on 127.0.0.1:5432");
    tokio::spawn(conn);
    c
}

fn reading(i: i64, base: i64) -> Record {
    let s = i % 16;
    Record::Reading(ReadingRecord {
        sensor_id: format!("bench-{:02}.vib_rms", s).into(),
        device: format!("bench-{s:02}").into(),
        channel: "vib_rms".into(),
        sensor_type: SensorType::Vibration,
        unit: "mm/s".into(),
        ts_us: base + i * 10,
        value: (i % 1000) as f64 / 10.0,
        quality: 1.0,
        flags: Vec::new(),
        detection: None,
    })
}

async fn fill(dir: &std::path::Path, n: i64, upstream: &str) -> (OutboxHandle, f64) {
    let settings = OutboxSettings {
        max_size_mb: 4096,
        ..OutboxSettings::default()
    };
    let o = Outbox::open(&dir.join("outbox.db"), &settings, "bench", &[upstream]).unwrap();
    let h = OutboxHandle::new(o);
    let base = now_us() - 86_400_000_000;
    let t = Instant::now();
    let mut i = 0;
    while i < n {
        let chunk: Vec<Record> = (i..(i + 10_000).min(n)).map(|k| reading(k, base)).collect();
        i += chunk.len() as i64;
        let (_, r) = h.append(chunk).await;
        r.unwrap();
    }
    (h, n as f64 / t.elapsed().as_secs_f64())
}

/// Drains the whole outbox into a fresh database; returns (seconds, rows in table).
async fn drain(n: i64, mode: InsertMode, batch: usize) -> (f64, i64, f64) {
    let db = format!("edgegw_bench_{:08x}", fastrand::u32(..));
    let admin = pg(ADMIN).await;
    admin
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .await
        .unwrap();
    let client = pg(&format!("host=127.0.0.1 port=5432 user=root dbname={db}")).await;
    schema::init_schema(&client).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (outbox, append_rate) = fill(dir.path(), n, "timescale").await;
    let cfg = toml::from_str(&format!("url = \"postgres://root@127.0.0.1:5432/{db}\"")).unwrap();
    let sink = TimescaleSink::new(cfg, "bench", Default::default()).with_mode(mode);
    let delivery = delivery(batch);
    let cancel = CancellationToken::new();
    let t = Instant::now();
    let task = tokio::spawn(run_forwarder(
        sink,
        outbox.clone(),
        delivery,
        Arc::new(Notify::new()),
        Arc::new(UpstreamMetrics::default()),
        cancel.clone(),
    ));
    wait_drained(&outbox, "timescale").await;
    let secs = t.elapsed().as_secs_f64();
    cancel.cancel();
    task.await.unwrap();
    let rows: i64 = client
        .query_one("SELECT count(*) FROM sensor_readings", &[])
        .await
        .unwrap()
        .get(0);
    drop(client);
    admin
        .batch_execute(&format!("DROP DATABASE {db} WITH (FORCE)"))
        .await
        .unwrap();
    (secs, rows, append_rate)
}

fn delivery(batch: usize) -> Delivery {
    Delivery {
        batch_max_records: batch,
        batch_max_bytes: 64 * 1024 * 1024,
        drain_rate_per_s: 0.0,
        recovery_jitter_ms: 0,
        backoff_initial_ms: 100,
        backoff_max_ms: 1000,
        breaker_failures: 100,
        breaker_open_secs: 1,
        timeout_ms: 600_000,
        idle_poll_ms: 20,
    }
}

async fn wait_drained(outbox: &OutboxHandle, upstream: &str) {
    while !outbox.peek(upstream, 1).await.unwrap().is_empty() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// CPU time of this process so far (user + system), seconds.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// Drains `n` readings (16 sensors) into Redis; returns (seconds, CPU seconds of the
/// drain, sensors whose latest value arrived).
async fn drain_redis(n: i64, batch: usize) -> (f64, f64, usize) {
    let prefix = format!("edgegw-bench-{:08x}:", fastrand::u32(..));
    let cfg: RedisUpstream = toml::from_str(&format!(
        "url = \"redis://127.0.0.1:6379/0\"\nkey_prefix = \"{prefix}\"\n"
    ))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (outbox, _) = fill(dir.path(), n, "redis").await;
    let sink = RedisSink::new(cfg, "bench");
    let cancel = CancellationToken::new();
    let (t, c) = (Instant::now(), cpu_seconds());
    let task = tokio::spawn(run_forwarder(
        sink,
        outbox.clone(),
        delivery(batch),
        Arc::new(Notify::new()),
        Arc::new(UpstreamMetrics::default()),
        cancel.clone(),
    ));
    wait_drained(&outbox, "redis").await;
    let (secs, cpu) = (t.elapsed().as_secs_f64(), cpu_seconds() - c);
    cancel.cancel();
    task.await.unwrap();
    let mut conn = redis::Client::open("redis://127.0.0.1:6379/0")
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("Redis on 127.0.0.1:6379");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let latest = keys.iter().filter(|k| k.contains("latest:")).count();
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL")
            .arg(&keys)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    (secs, cpu, latest)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary
    // without it, and then a small smoke run checks that the bench still works.
    let bench = std::env::args().any(|a| a == "--bench");
    let args: Vec<i64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let (default_backlog, default_compare) = if bench {
        (1_000_000, 100_000)
    } else {
        (5_000, 2_000)
    };
    let backlog = args.first().copied().unwrap_or(default_backlog);
    let compare = args.get(1).copied().unwrap_or(default_compare);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        println!("| mode | readings | batch | seconds | readings/s |");
        println!("|---|---:|---:|---:|---:|");
        for (mode, n, batch) in [
            (InsertMode::Rows, compare, 5000),
            (InsertMode::Copy, compare, 5000),
        ] {
            let (secs, rows, _) = drain(n, mode, batch).await;
            assert_eq!(rows, n, "every reading in sensor_readings");
            println!(
                "| {mode:?} | {n} | {batch} | {secs:.2} | {:.0} |",
                n as f64 / secs
            );
        }
        let (secs, rows, append_rate) = drain(backlog, InsertMode::Copy, 5000).await;
        assert_eq!(rows, backlog);
        println!(
            "| Copy (backlog) | {backlog} | 5000 | {secs:.2} | {:.0} |",
            backlog as f64 / secs
        );
        println!("\n(outbox fill rate for the backlog: {append_rate:.0} readings/s, not part of the drain time)");

        println!("\n| Redis upstream | readings | batch | seconds | readings/s | CPU µs a reading |");
        println!("|---|---:|---:|---:|---:|---:|");
        let (secs, cpu, latest) = drain_redis(compare, 500).await;
        assert_eq!(latest, 16, "the latest value of every sensor");
        println!(
            "| latest values | {compare} | 500 | {secs:.2} | {:.0} | {:.2} |",
            compare as f64 / secs,
            cpu * 1e6 / compare as f64
        );
    });
}
