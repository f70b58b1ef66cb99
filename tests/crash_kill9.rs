//! Crash safety with the real binary: `edgegw run` ingests a steady MQTT QoS 1 stream
//! (persistent session, acknowledged only after the outbox commit) and is killed with
//! SIGKILL at random moments, 20 times, and restarted. Afterwards every message the
//! publisher sent is in the outbox exactly once: nothing lost (unacknowledged messages
//! are redelivered by the broker), nothing duplicated (a redelivered reading that was
//! already committed is not stored again), and record ids and keys are unique; and
//! every hourly summary equals the readings it covers.
//!
//! Needs the Mosquitto broker on 127.0.0.1:1883 (`scripts/test` starts it).

use rumqttc::{AsyncClient, MqttOptions, QoS};
use std::collections::{BTreeMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MESSAGES: u64 = 3000;
const KILLS: usize = 20;
const SPACING_US: i64 = 10_000_000;

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const PROFILE: &str = r#"vendor = "Test"
model = "Counter"
[channels.seq]
sensor_type = "general"
unit = "1"
[mqtt]
topic = "unused/+"
payload = "json"
timestamp = { path = "ts", format = "unix_us" }
[[mqtt.fields]]
channel = "seq"
path = "seq"
"#;

fn start(exe: &str, config: &std::path::Path, log: &std::path::Path) -> Proc {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Proc(
        Command::new(exe)
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

fn broker_up() -> bool {
    std::net::TcpStream::connect(("127.0.0.1", 1883)).is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_20_times_loses_nothing_and_duplicates_nothing() {
    assert!(
        broker_up(),
        "Mosquitto is not running on 127.0.0.1:1883: run scripts/test, which starts it"
    );
    let exe = env!("CARGO_BIN_EXE_edgegw");
    let dir = tempfile::tempdir().unwrap();
    let run_id = format!("{:016x}", fastrand::u64(..));
    let topic = format!("edgegw-test/{run_id}/counter");
    std::fs::create_dir(dir.path().join("profiles")).unwrap();
    std::fs::write(dir.path().join("profiles/counter.toml"), PROFILE).unwrap();
    let config = dir.path().join("edgegw.toml");
    std::fs::write(
        &config,
        format!(
            "[gateway]\nid = \"gw-crash\"\nstate_dir = \"{state}\"\nprofile_dir = \"profiles\"\n\n\
             [mqtt_brokers.local]\nhost = \"127.0.0.1\"\nclient_id = \"edgegw-crash-{run_id}\"\n\n\
             [[devices]]\nid = \"c1\"\nprofile = \"counter\"\n[devices.mqtt]\nbroker = \"local\"\ntopic = \"{topic}\"\n\n\
             [http]\nenabled = false\n",
            state = dir.path().display()
        ),
    )
    .unwrap();
    let log = dir.path().join("edgegw.log");

    // The first start creates the persistent session (and subscribes) before anything
    // is published, so the broker queues for it from then on.
    let mut gw = start(exe, &config, &log);
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Publisher: a steady QoS 1 stream, each message its own sequence number.
    let mut opts = MqttOptions::new(format!("edgegw-crash-pub-{run_id}"), "127.0.0.1", 1883);
    opts.set_keep_alive(Duration::from_secs(10));
    opts.set_inflight(50);
    let (client, mut eventloop) = AsyncClient::new(opts, 100);
    let acked = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let acked2 = acked.clone();
    let events = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => {
                    acked2.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    // Ten seconds apart, ending now (the MQTT source refuses readings older than 30
    // days): about eight hourly summary buckets, most of them open during kills.
    let t0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
        - MESSAGES as i64 * SPACING_US;
    let publisher = {
        let client = client.clone();
        let topic = topic.clone();
        tokio::spawn(async move {
            for seq in 0..MESSAGES {
                let payload = format!(
                    "{{\"ts\": {}, \"seq\": {seq}}}",
                    t0 + seq as i64 * SPACING_US
                );
                client
                    .publish(&topic, QoS::AtLeastOnce, false, payload)
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(4)).await;
            }
        })
    };

    // Kill -9 at random moments while the stream flows, restart each time.
    for _ in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(150 + fastrand::u64(..450))).await;
        gw.0.kill().unwrap();
        gw.0.wait().unwrap();
        tokio::time::sleep(Duration::from_millis(fastrand::u64(..100))).await;
        gw = start(exe, &config, &log);
    }
    publisher.await.unwrap();
    // Every message reached the broker.
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.load(std::sync::atomic::Ordering::Relaxed) < MESSAGES {
        assert!(
            Instant::now() < deadline,
            "the broker did not take every message"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Let the last run take the rest, then stop it cleanly.
    let db = dir.path().join("outbox.db");
    let count = || -> u64 {
        edgegw::outbox::Outbox::open_read_only(&db)
            .and_then(|o| o.stats())
            .map(|s| s.depth.get("reading").copied().unwrap_or(0))
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while count() < MESSAGES && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Command::new("kill")
        .args(["-TERM", &gw.0.id().to_string()])
        .status()
        .unwrap();
    let status = gw.0.wait().unwrap();
    events.abort();
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(
        status.code(),
        Some(0),
        "last run did not stop cleanly:\n{log_text}"
    );

    // Exactly once: every sequence number, no other, no twice.
    let o = edgegw::outbox::Outbox::open_read_only(&db).unwrap();
    let stats = o.stats().unwrap();
    eprintln!(
        "{KILLS} kills; redelivered readings skipped as duplicates: {}",
        stats
            .counters
            .get("duplicate_readings_skipped")
            .unwrap_or(&0)
    );
    let lines = o
        .dump(Some(edgegw::record::RecordKind::Reading), usize::MAX)
        .unwrap();
    let mut seen: BTreeMap<u64, usize> = BTreeMap::new();
    let mut ids = HashSet::new();
    let mut keys = HashSet::new();
    for l in &lines {
        assert!(ids.insert(l.id), "record id {} twice", l.id);
        assert!(keys.insert(l.key.clone()), "record key {} twice", l.key);
        let v = l.payload["value"].as_f64().expect("value") as u64;
        *seen.entry(v).or_default() += 1;
    }
    let dups: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dups.is_empty(), "duplicated: {dups:?}");
    let missing: Vec<u64> = (0..MESSAGES).filter(|s| !seen.contains_key(s)).collect();
    assert!(
        missing.is_empty(),
        "{} of {MESSAGES} lost, first {:?}\nlog:\n{}",
        missing.len(),
        &missing[..missing.len().min(10)],
        &log_text[log_text.len().saturating_sub(4000)..]
    );
    assert_eq!(seen.len() as u64, MESSAGES);

    // Summaries across the kills: each hourly bucket's latest summary covers exactly
    // the readings stored for it. The open bucket is committed with the readings, so
    // a kill loses none of it and a redelivery adds nothing.
    let hour = 3_600_000_000i64;
    let mut readings: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
    for l in &lines {
        let ts = l.payload["ts_us"].as_i64().expect("ts_us");
        let v = l.payload["value"].as_f64().expect("value");
        readings
            .entry(ts.div_euclid(hour) * hour)
            .or_default()
            .push(v);
    }
    let summaries = o
        .dump(Some(edgegw::record::RecordKind::Summary), usize::MAX)
        .unwrap();
    let mut latest: BTreeMap<i64, &serde_json::Value> = BTreeMap::new();
    for l in &summaries {
        let start = l.payload["bucket_start_us"].as_i64().expect("bucket start");
        latest.insert(start, &l.payload); // oldest first: the last one wins
    }
    assert_eq!(
        latest.keys().collect::<Vec<_>>(),
        readings.keys().collect::<Vec<_>>(),
        "a summary for every hour with readings, and no other"
    );
    for (start, values) in &readings {
        let s = latest[start];
        let n = values.len() as f64;
        let sum: f64 = values.iter().sum();
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        assert_eq!(
            s["count"].as_u64(),
            Some(values.len() as u64),
            "hour {start}: {s}"
        );
        assert_eq!(s["min"].as_f64(), Some(min), "hour {start}: {s}");
        assert_eq!(s["max"].as_f64(), Some(max), "hour {start}: {s}");
        let avg = s["avg"].as_f64().expect("avg");
        assert!((avg - sum / n).abs() < 1e-9, "hour {start}: {s}");
    }
}
