//! MQTT ingest benchmark driver, run by `scripts/bench-mqtt` (not a criterion bench:
//! it needs a broker, a publisher and a rival subscriber running at the same time).
//!
//! Modes:
//! - `ingest PORT TOPIC EXPECT [SINK_DELAY_US] [MAX_SECS]`: the real MQTT source
//!   (`run_mqtt`) into a channel drained by a task that fires each ack after
//!   SINK_DELAY_US (0 = at once). Prints the reading rate from the first to the last
//!   reading, and its own RSS once a second.
//! - `publish PORT TOPIC COUNT`: floods COUNT small JSON readings, QoS 1.
//! - `count EXPECT`: reads lines on stdin (from `mosquitto_sub`) and prints the rate.
//! - `outbox PORT TOPIC COUNT`: the MQTT source into the real writer
//!   (`outbox::run_writer`, default `[outbox]` settings) and a real `Outbox` in a temp
//!   dir; each reading becomes a reading record (no processor), and an ack reaches the
//!   broker only after the commit, as in the daemon. Runs twice in one process, the
//!   writer lingering also for acked groups (its behaviour before it committed them
//!   at once; the bench-only `linger_with_acks` switch), then as shipped. An
//!   in-process publisher stays at most 800 messages ahead of what the source has
//!   received, so a broker's default queue (`max_queued_messages` 1000) drops
//!   nothing. TOPIC must match the profile's `bench/+`. Prints readings/s from the
//!   first reading received to the last commit.

use edgegw::config::{DeviceConfig, MqttBrokerConfig};
use edgegw::profiles::load_profile;
use edgegw::sources::mqtt::run_mqtt;
use edgegw::sources::{DeviceSpec, DeviceStats, SourceBatch};
use std::io::BufRead;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const PROFILE: &str = r#"
vendor = "Bench"
model = "JSON-1"
[channels.v]
sensor_type = "vibration"
unit = "mm/s"
[mqtt]
topic = "bench/+"
payload = "json"
timestamp = { path = "t", format = "unix_us" }
[[mqtt.fields]]
channel = "v"
path = "v"
"#;

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, default: Option<T>) -> T {
    args.get(i)
        .and_then(|a| a.parse().ok())
        .or(default)
        .unwrap_or_else(|| {
            eprintln!("usage: see the top of benches/mqtt_ingest.rs");
            std::process::exit(2)
        })
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    // Logs of the source go to stderr; RUST_LOG=edgegw=debug shows reconnects.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match args.first().map(String::as_str) {
        Some("ingest") => rt.block_on(ingest(
            arg(&args, 1, None),
            arg(&args, 2, None),
            arg(&args, 3, None),
            arg(&args, 4, Some(0)),
            arg(&args, 5, Some(120)),
        )),
        Some("publish") => rt.block_on(publish(
            arg(&args, 1, None),
            arg(&args, 2, None),
            arg(&args, 3, None),
        )),
        Some("count") => count(arg(&args, 1, None)),
        Some("outbox") => {
            let (port, topic, n): (u16, String, u64) = (
                arg(&args, 1, None),
                arg(&args, 2, None),
                arg(&args, 3, None),
            );
            for linger_with_acks in [true, false] {
                rt.block_on(into_outbox(
                    port,
                    format!("{topic}-{linger_with_acks}"),
                    n,
                    linger_with_acks,
                ));
            }
        }
        // `cargo bench` without arguments: nothing to do without a broker.
        _ => eprintln!("mqtt_ingest: run it through scripts/bench-mqtt"),
    }
}

/// The bench's MQTT device (JSON profile written into `dir`) subscribed to `topic`,
/// and its stats.
fn bench_device(dir: &std::path::Path, topic: &str) -> (DeviceSpec, Arc<DeviceStats>) {
    let path = dir.join("bench-json.toml");
    std::fs::write(&path, PROFILE).expect("write profile");
    let mut diags = Vec::new();
    let profile = load_profile(&path, &mut diags).expect("bench profile loads");
    let config: DeviceConfig = toml::from_str(&format!(
        "id = \"bench\"\nprofile = \"x\"\n[mqtt]\nbroker = \"b\"\ntopic = \"{topic}\"\n"
    ))
    .expect("device config");
    let stats = Arc::new(DeviceStats::default());
    let device = DeviceSpec {
        config,
        profile: Arc::new(profile),
        stats: stats.clone(),
    };
    (device, stats)
}

async fn ingest(port: u16, topic: String, expect: u64, sink_delay_us: u64, max_secs: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (device, stats) = bench_device(dir.path(), &topic);
    let broker: MqttBrokerConfig = toml::from_str(&format!(
        "host = \"127.0.0.1\"\nport = {port}\nclient_id = \"edgegw-bench-{}\"\n",
        fastrand::u32(..)
    ))
    .expect("broker config");
    let (tx, mut rx) = mpsc::channel::<SourceBatch>(256);
    let cancel = CancellationToken::new();
    let source = tokio::spawn(run_mqtt(
        "bench".into(),
        broker,
        "bench".into(),
        vec![device],
        tx,
        cancel.clone(),
    ));
    // The sink: count readings, fire acks (after a delay, for the slow-sink run).
    let (done_tx, mut done_rx) = mpsc::channel::<(u64, Option<(Instant, Instant)>)>(1);
    tokio::spawn(async move {
        let mut n = 0u64;
        let mut span: Option<(Instant, Instant)> = None;
        while let Some(batch) = rx.recv().await {
            if sink_delay_us > 0 {
                tokio::time::sleep(Duration::from_micros(sink_delay_us)).await;
            }
            n += batch.readings.len() as u64;
            let now = Instant::now();
            span = Some((span.map(|s| s.0).unwrap_or(now), now));
            if let Some(a) = batch.ack {
                a.committed();
            }
            if n >= expect {
                break;
            }
        }
        let _ = done_tx.send((n, span)).await;
    });
    while !stats.connected.load(Relaxed) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    println!("ready");
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let result = loop {
        tokio::select! {
            r = done_rx.recv() => break r,
            _ = tick.tick() => {
                println!(
                    "rss t={:>3}s rss_kb={} readings={}",
                    started.elapsed().as_secs(),
                    rss_kb(),
                    stats.readings.load(Relaxed)
                );
                if started.elapsed() > Duration::from_secs(max_secs) {
                    break None;
                }
            }
        }
    };
    cancel.cancel();
    let _ = source.await;
    match result {
        Some((n, Some((first, last)))) => {
            let secs = last.duration_since(first).as_secs_f64();
            println!(
                "edgegw readings={n} secs={secs:.3} rate_per_s={:.0} rss_kb={}",
                (n.saturating_sub(1)) as f64 / secs.max(1e-9),
                rss_kb()
            );
        }
        _ => println!(
            "edgegw stopped after {max_secs}s with readings={}",
            stats.readings.load(Relaxed)
        ),
    }
}

async fn publish(port: u16, topic: String, count: u64) {
    let mut o = rumqttc::MqttOptions::new(
        format!("bench-pub-{}", fastrand::u32(..)),
        "127.0.0.1",
        port,
    );
    o.set_inflight(100);
    o.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = rumqttc::AsyncClient::new(o, 1000);
    let acked = tokio::spawn(async move {
        let mut acks = 0u64;
        while acks < count {
            match eventloop.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => acks += 1,
                Ok(_) => {}
                Err(e) => {
                    eprintln!("publisher: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    let start = Instant::now();
    for i in 0..count {
        let payload = format!(
            "{{\"t\":{},\"v\":{}.{:03}}}",
            1_700_000_000_000_000u64 + i,
            i % 100,
            i % 1000
        );
        if client
            .publish(&topic, rumqttc::QoS::AtLeastOnce, false, payload)
            .await
            .is_err()
        {
            eprintln!("publisher: request channel closed");
            return;
        }
    }
    let _ = acked.await;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "publisher messages={count} secs={secs:.3} rate_per_s={:.0}",
        count as f64 / secs
    );
}

fn count(expect: u64) {
    let stdin = std::io::stdin();
    let mut n = 0u64;
    let mut first: Option<Instant> = None;
    let mut last = Instant::now();
    for line in stdin.lock().lines() {
        if line.is_err() {
            break;
        }
        let now = Instant::now();
        first.get_or_insert(now);
        last = now;
        n += 1;
        if n >= expect {
            break;
        }
    }
    let secs = first
        .map(|f| last.duration_since(f).as_secs_f64())
        .unwrap_or(0.0);
    println!(
        "mosquitto_sub messages={n} secs={secs:.3} rate_per_s={:.0}",
        (n.saturating_sub(1)) as f64 / secs.max(1e-9)
    );
}

/// The MQTT source into the real writer and outbox; see `outbox` at the top.
async fn into_outbox(port: u16, topic: String, n: u64, linger_with_acks: bool) {
    use edgegw::outbox::{run_writer, Outbox, OutboxBatch, OutboxHandle, OutboxSettings};
    use edgegw::record::{ReadingRecord, Record};
    use edgegw::sources::{Ack, Value};
    use std::sync::atomic::AtomicU64;

    let dir = tempfile::tempdir().expect("tempdir");
    let (device, stats) = bench_device(dir.path(), &topic);
    let client_id = format!("edgegw-bench-outbox-{}", fastrand::u32(..));
    let broker: MqttBrokerConfig = toml::from_str(&format!(
        "host = \"127.0.0.1\"\nport = {port}\nclient_id = \"{client_id}\"\n"
    ))
    .expect("broker config");
    let settings = OutboxSettings {
        linger_with_acks,
        ..OutboxSettings::default()
    };
    let outbox = OutboxHandle::new(
        Outbox::open(&dir.path().join("outbox.db"), &settings, "bench", &["a"]).expect("outbox"),
    );
    let (source_tx, mut source_rx) = mpsc::channel::<SourceBatch>(1024);
    let (outbox_tx, outbox_rx) = mpsc::channel::<OutboxBatch>(256);
    let writer = tokio::spawn(run_writer(
        outbox.clone(),
        outbox_rx,
        settings.clone(),
        Arc::default(),
    ));
    let cancel = CancellationToken::new();
    let source = tokio::spawn(run_mqtt(
        "bench".into(),
        broker,
        "bench".into(),
        vec![device],
        source_tx,
        cancel.clone(),
    ));
    // Readings to records, with a second ack per batch that counts the commit.
    let committed = Arc::new(AtomicU64::new(0));
    let first = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let (count_tx, mut count_rx) =
        mpsc::unbounded_channel::<(u64, tokio::sync::oneshot::Receiver<()>)>();
    let first_seen = first.clone();
    tokio::spawn(async move {
        while let Some(batch) = source_rx.recv().await {
            first_seen.lock().unwrap().get_or_insert_with(Instant::now);
            let records: Vec<Record> = batch
                .readings
                .iter()
                .filter_map(|r| match r.value {
                    Value::Scalar(v) => Some(Record::Reading(ReadingRecord {
                        sensor_id: (&r.sensor_id).into(),
                        device: (&r.device).into(),
                        channel: (&r.channel).into(),
                        sensor_type: r.sensor_type,
                        unit: (&r.unit).into(),
                        ts_us: r.ts_us,
                        value: v,
                        quality: r.quality,
                        flags: r.flags.clone(),
                        detection: None,
                    })),
                    _ => None,
                })
                .collect();
            let (counted, on_commit) = Ack::new();
            let _ = count_tx.send((records.len() as u64, on_commit));
            let acks = batch.ack.into_iter().chain(Some(counted)).collect();
            if outbox_tx
                .send(OutboxBatch {
                    records,
                    acks,
                    state: Vec::new(),
                })
                .await
                .is_err()
            {
                break;
            }
        }
    });
    let counter = committed.clone();
    let last_commit = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let last_seen = last_commit.clone();
    tokio::spawn(async move {
        while let Some((k, on_commit)) = count_rx.recv().await {
            if on_commit.await.is_err() {
                continue;
            }
            counter.fetch_add(k, Relaxed);
            *last_seen.lock().unwrap() = Some(Instant::now());
        }
    });
    while !stats.connected.load(Relaxed) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The publisher, paced so the broker's queue for the source stays below 800.
    let mut o = rumqttc::MqttOptions::new(format!("{client_id}-pub"), "127.0.0.1", port);
    o.set_inflight(100);
    o.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = rumqttc::AsyncClient::new(o, 1000);
    let publisher_loop = tokio::spawn(async move {
        loop {
            if let Err(e) = eventloop.poll().await {
                eprintln!("publisher: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    let pub_stats = stats.clone();
    let pub_client = client.clone();
    let pub_topic = topic.clone();
    // Device timestamps near now: the source refuses readings older than the
    // profile's max_age_hours.
    let t0 = edgegw::record::now_us() as u64;
    let published = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let published_all = published.clone();
    tokio::spawn(async move {
        for i in 0..n {
            while i.saturating_sub(pub_stats.readings.load(Relaxed)) >= 800 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let payload = format!("{{\"t\":{},\"v\":{}.{:03}}}", t0 + i, i % 100, i % 1000);
            if pub_client
                .publish(&pub_topic, rumqttc::QoS::AtLeastOnce, false, payload)
                .await
                .is_err()
            {
                return;
            }
        }
        published_all.store(true, Relaxed);
    });
    // Done when every reading is committed, or when the publisher is through and
    // nothing was committed for 2 s (a message the broker did not deliver).
    let started = Instant::now();
    let last = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let at = *last_commit.lock().unwrap();
        if committed.load(Relaxed) >= n
            || (published.load(Relaxed) && at.is_some_and(|a| a.elapsed() > Duration::from_secs(2)))
        {
            break at;
        }
        if started.elapsed() > Duration::from_secs(120) {
            break None;
        }
    };
    let label = if linger_with_acks {
        "before (linger also with acks)"
    } else {
        "after (commit at once with acks)"
    };
    cancel.cancel();
    let _ = source.await;
    publisher_loop.abort();
    let _ = client.disconnect().await;
    let report = writer.await.expect("writer");
    let stored = outbox.blocking(|o| o.stats().map(|s| s.total_records).unwrap_or(0));
    match (last, *first.lock().unwrap()) {
        (Some(last), Some(first)) => {
            let secs = last.duration_since(first).as_secs_f64();
            let k = committed.load(Relaxed);
            println!(
                "outbox {label}: published={n} committed={k} stored={stored} secs={secs:.3} rate_per_s={:.0} transactions={} records_per_tx={:.1} (linger {} ms)",
                k as f64 / secs.max(1e-9),
                report.transactions,
                report.records_committed as f64 / report.transactions.max(1) as f64,
                settings.batch_linger_ms,
            );
        }
        _ => println!(
            "outbox {label}: stopped after 120 s with {} readings committed",
            committed.load(Relaxed)
        ),
    }
    // Remove the persistent session this run left on the broker.
    let mut o = rumqttc::MqttOptions::new(client_id, "127.0.0.1", port);
    o.set_clean_session(true);
    let (c, mut el) = rumqttc::AsyncClient::new(o, 10);
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match el.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => break,
                Ok(_) => {}
                Err(_) => return,
            }
        }
        let _ = c.disconnect().await;
        let _ = el.poll().await;
    })
    .await;
}
