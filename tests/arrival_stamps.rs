//! Readings the gateway stamps itself (no timestamp from the device) are never lost to
//! the outbox's redelivery check: a JSON batch without timestamps, a burst of QoS 1
//! `number` messages and serial frames that arrive together all reach the outbox, one
//! record each, with strictly increasing stamps per sensor. (Before: readings received
//! in the same microsecond collided on the outbox's `(sensor, ts)` key and all but one
//! were dropped after the broker had been told they were stored.)
//!
//! The real binary, the real Mosquitto broker (127.0.0.1:1883, own topic prefix) and a
//! socat pty pair; every process is killed on drop.

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn unique() -> String {
    format!(
        "edgegw-arrival-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

struct Proc(Child, Arc<Mutex<String>>);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    fn log(&self) -> String {
        self.1.lock().unwrap().clone()
    }

    fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.0.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "did not stop:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        self.log()
    }
}

fn run(config: &Path, wait_for: &str) -> Proc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_edgegw"))
        .args(["--log-format", "human", "run", "--config"])
        .arg(config)
        .env("RUST_LOG", "info,edgegw::sources=debug")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let sink = log.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let p = Proc(child, log);
    wait_until(wait_for, Duration::from_secs(30), || {
        p.log().contains(wait_for).then_some(())
    });
    p
}

fn wait_until<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Stamps of the stored readings, per sensor, in outbox order.
fn stored(outbox: &Path) -> BTreeMap<String, Vec<i64>> {
    let mut out: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let Ok(o) = edgegw::outbox::Outbox::open_read_only(outbox) else {
        return out;
    };
    for l in o
        .dump(Some(edgegw::record::RecordKind::Reading), 1_000_000)
        .unwrap_or_default()
    {
        out.entry(l.payload["sensor_id"].as_str().unwrap().to_string())
            .or_default()
            .push(l.payload["ts_us"].as_i64().unwrap());
    }
    out
}

fn count(outbox: &Path) -> usize {
    stored(outbox).values().map(Vec::len).sum()
}

#[track_caller]
fn strictly_increasing(stamps: &BTreeMap<String, Vec<i64>>) {
    for (sensor, ts) in stamps {
        assert!(
            ts.windows(2).all(|w| w[1] > w[0]),
            "{sensor}: stamps not strictly increasing"
        );
    }
}

async fn publish_all(topic_payloads: Vec<(String, Vec<u8>)>) {
    let mut opts = MqttOptions::new(unique(), "127.0.0.1", 1883);
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut events) = AsyncClient::new(opts, 1024);
    let total = topic_payloads.len();
    let c = client.clone();
    let sender = tokio::spawn(async move {
        for (t, p) in topic_payloads {
            c.publish(t, QoS::AtLeastOnce, false, p).await.unwrap();
        }
    });
    let mut acked = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while acked < total {
        let ev = tokio::time::timeout_at(deadline, events.poll())
            .await
            .expect("every message acknowledged")
            .expect("broker connection");
        if let Event::Incoming(Packet::PubAck(_)) = ev {
            acked += 1;
        }
    }
    sender.await.unwrap();
    let _ = client.disconnect().await;
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_batches_and_bursts_without_timestamps_are_stored_whole() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique();
    std::fs::create_dir(dir.path().join("profiles")).unwrap();
    write(
        &dir.path().join("profiles"),
        "batch.toml",
        r#"vendor = "Test"
model = "JSON batch without timestamps"
[channels.temp]
sensor_type = "temperature"
unit = "°C"
[mqtt]
topic = "x"
payload = "json"
batch = "items"
[[mqtt.fields]]
channel = "temp"
path = "v"
"#,
    );
    write(
        &dir.path().join("profiles"),
        "number.toml",
        r#"vendor = "Test"
model = "Plain number"
[channels.p]
sensor_type = "pressure"
unit = "bar"
[mqtt]
topic = "x"
payload = "number"
[[mqtt.fields]]
channel = "p"
"#,
    );
    let config = write(
        dir.path(),
        "edgegw.toml",
        &format!(
            r#"[gateway]
id = "{prefix}"
state_dir = "{state}"
profile_dir = "profiles"
[mqtt_brokers.local]
host = "127.0.0.1"
[[devices]]
id = "batch"
profile = "batch"
[devices.mqtt]
broker = "local"
topic = "{prefix}/batch"
[[devices]]
id = "burst"
profile = "number"
[devices.mqtt]
broker = "local"
topic = "{prefix}/burst"
[http]
enabled = false
"#,
            state = dir.path().display()
        ),
    );
    let gw = run(&config, "Subscribed");
    let outbox = dir.path().join("outbox.db");
    let items: Vec<serde_json::Value> = (0..50).map(|i| serde_json::json!({"v": i})).collect();
    let mut messages = vec![(
        format!("{prefix}/batch"),
        serde_json::to_vec(&serde_json::json!({ "items": items })).unwrap(),
    )];
    // 900: Mosquitto queues at most 1000 QoS 1 messages for a subscriber that has
    // not acknowledged them (`max_queued_messages`) and drops the rest; the gateway
    // acknowledges only after its commit, so a larger burst needs a larger queue.
    for i in 0..900 {
        messages.push((format!("{prefix}/burst"), format!("{}", i % 7).into_bytes()));
    }
    publish_all(messages).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&outbox) < 950 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = gw.stop();
    let s = stored(&outbox);
    assert_eq!(s["batch.temp"].len(), 50, "the whole batch\n{log}");
    assert_eq!(s["burst.p"].len(), 900, "the whole burst\n{log}");
    strictly_increasing(&s);
    assert!(
        !log.contains("already in the outbox"),
        "no distinct reading taken for a redelivery:\n{log}"
    );
}

/// A socat pty pair; killed on drop.
struct Socat(Child, PathBuf, PathBuf);

impl Drop for Socat {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_frames_read_together_are_stored_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let socat = Socat(
        Command::new("socat")
            .args(["-d", "-d"])
            .arg(format!("pty,raw,echo=0,link={}", a.display()))
            .arg(format!("pty,raw,echo=0,link={}", b.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("socat (apt-get install socat)"),
        a.clone(),
        b.clone(),
    );
    wait_until("the pty links", Duration::from_secs(10), || {
        (socat.1.exists() && socat.2.exists()).then_some(())
    });
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = write(
        dir.path(),
        "edgegw.toml",
        &format!(
            r#"[gateway]
id = "{id}"
state_dir = "{state}"
profile_dir = "{profiles}"
[serial_ports.vm10]
path = "{port}"
baud = 9600
[[devices]]
id = "fan3"
profile = "sensotec-vm10"
[devices.serial]
port = "vm10"
[http]
enabled = false
"#,
            id = unique(),
            state = dir.path().display(),
            profiles = repo.join("hardware-profiles").display(),
            port = a.display()
        ),
    );
    let gw = run(&config, "Gateway started");
    std::thread::sleep(Duration::from_millis(500));
    // 100 frames in one write: the source reads them together.
    let mut burst = String::new();
    for i in 0..100 {
        let data = format!("PVIB,{i:06},{}.{:02},0.90,41.8", 2 + i % 3, i % 100);
        burst.push_str(&format!(
            "${data}*{:02X}\r\n",
            edgegw::sources::serial::nmea_xor(data.as_bytes())
        ));
    }
    let mut sensor = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&b)
        .unwrap();
    sensor.write_all(burst.as_bytes()).unwrap();
    sensor.flush().unwrap();
    let outbox = dir.path().join("outbox.db");
    wait_until(
        "300 readings in the outbox",
        Duration::from_secs(60),
        || (count(&outbox) >= 300).then_some(()),
    );
    let log = gw.stop();
    let s = stored(&outbox);
    for ch in ["fan3.velocity_rms", "fan3.accel_peak", "fan3.temperature"] {
        assert_eq!(s[ch].len(), 100, "{ch}: every frame\n{log}");
    }
    strictly_increasing(&s);
}
