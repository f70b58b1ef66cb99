//! The MQTT source against real Mosquitto brokers: the machine's broker on
//! 127.0.0.1:1883 (unique topic prefix and client ids per test), and a second one the
//! test starts and restarts on a free port. Messages are published with
//! `mosquitto_pub` (a foreign client), QoS 1.
//!
//! Needs the Debian packages mosquitto and mosquitto-clients; fails with a clear
//! message without them.

use edgegw::config::{DeviceConfig, MqttBrokerConfig};
use edgegw::profiles::load_profile;
use edgegw::sources::mqtt::{run_mqtt, run_mqtt_with_topic_errors, TopicErrors};
use edgegw::sources::{DeviceSpec, DeviceStats, Reading, SourceBatch, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const SYSTEM_BROKER: u16 = 1883;

fn unique() -> String {
    format!("{:016x}", fastrand::u64(..))
}

fn broker_up(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

fn require_system_broker() {
    assert!(
        broker_up(SYSTEM_BROKER),
        "no MQTT broker on 127.0.0.1:1883: install and start Mosquitto (apt-get install mosquitto mosquitto-clients)"
    );
}

/// Publishes one QoS 1 message with mosquitto_pub (returns after the PUBACK).
fn publish(port: u16, topic: &str, payload: &[u8], retain: bool) {
    let mut cmd = Command::new("mosquitto_pub");
    cmd.args([
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-q",
        "1",
        "-t",
        topic,
    ]);
    // -s reads the payload from stdin; -n sends an empty one.
    cmd.arg(if payload.is_empty() { "-n" } else { "-s" });
    if retain {
        cmd.arg("-r");
    }
    let mut child = cmd.stdin(Stdio::piped()).spawn().unwrap_or_else(|e| {
        panic!("cannot run mosquitto_pub ({e}); apt-get install mosquitto-clients")
    });
    child.stdin.take().unwrap().write_all(payload).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "mosquitto_pub failed for {topic}");
}

/// The gateway's clock `secs_ago` seconds ago, in whole seconds, as µs.
fn recent_us(secs_ago: i64) -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp() - secs_ago) * 1_000_000
}

fn rfc3339(us: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

fn write_profile(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, text).unwrap();
    p
}

fn repo_profile(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("hardware-profiles")
        .join(format!("{name}.toml"))
}

fn device(id: &str, profile: &Path, topic: &str) -> DeviceSpec {
    let mut diags = Vec::new();
    let loaded = load_profile(profile, &mut diags)
        .unwrap_or_else(|| panic!("profile {} does not load: {diags:?}", profile.display()));
    let config: DeviceConfig = toml::from_str(&format!(
        "id = \"{id}\"\nprofile = \"x\"\n[mqtt]\nbroker = \"b\"\ntopic = \"{topic}\"\n"
    ))
    .unwrap();
    DeviceSpec {
        config,
        profile: Arc::new(loaded),
        stats: Arc::new(DeviceStats::default()),
    }
}

fn broker(port: u16, client_id: &str) -> MqttBrokerConfig {
    toml::from_str(&format!(
        "host = \"127.0.0.1\"\nport = {port}\nclient_id = \"{client_id}\"\nkeep_alive_secs = 5\n"
    ))
    .unwrap()
}

/// What the sink does with each batch's ack.
#[derive(Clone, Copy, PartialEq)]
enum Policy {
    /// Fire it: "committed to the outbox".
    Store,
    /// Drop it: "not stored".
    Drop,
}

/// A stand-in for the outbox: records readings, fires or drops acks.
struct Sink {
    got: Arc<Mutex<Vec<Reading>>>,
    /// Policy for the next batches, one per batch; `Store` when empty.
    script: Arc<Mutex<Vec<Policy>>>,
}

impl Sink {
    fn start(mut rx: mpsc::Receiver<SourceBatch>) -> Sink {
        let got = Arc::new(Mutex::new(Vec::new()));
        let script: Arc<Mutex<Vec<Policy>>> = Arc::new(Mutex::new(Vec::new()));
        let (g, s) = (got.clone(), script.clone());
        tokio::spawn(async move {
            while let Some(batch) = rx.recv().await {
                let policy = {
                    let mut s = s.lock().unwrap();
                    if s.is_empty() {
                        Policy::Store
                    } else {
                        s.remove(0)
                    }
                };
                if policy == Policy::Store {
                    g.lock().unwrap().extend(batch.readings);
                    if let Some(a) = batch.ack {
                        a.committed();
                    }
                }
            }
        });
        Sink { got, script }
    }

    async fn wait_len(&self, n: usize) -> Vec<Reading> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            {
                let g = self.got.lock().unwrap();
                if g.len() >= n {
                    return g.clone();
                }
                assert!(
                    Instant::now() < deadline,
                    "timed out waiting for {n} readings; have {}: {:?}",
                    g.len(),
                    g.iter()
                        .map(|r| r.sensor_id.to_string())
                        .collect::<Vec<_>>()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn len(&self) -> usize {
        self.got.lock().unwrap().len()
    }
}

fn scalar(r: &Reading) -> (String, f64) {
    match r.value {
        Value::Scalar(v) => (r.sensor_id.to_string(), v),
        ref other => panic!("not a scalar: {other:?}"),
    }
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct Running {
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn stop(self) {
        self.cancel.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the MQTT source stops on cancel")
            .unwrap();
    }
}

fn start(port: u16, client_id: &str, devices: Vec<DeviceSpec>) -> (Running, Sink) {
    let (tx, rx) = mpsc::channel(8);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run_mqtt(
        "b".into(),
        broker(port, client_id),
        "gw-test".into(),
        devices,
        tx,
        cancel.clone(),
    ));
    (Running { cancel, task }, Sink::start(rx))
}

/// Publishes probes until one arrives: the subscription is in place.
async fn until_subscribed(port: u16, topic: &str, sink: &Sink, payload: &[u8]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(20);
    let before = sink.len();
    loop {
        publish(port, topic, payload, false);
        tokio::time::sleep(Duration::from_millis(200)).await;
        if sink.len() > before {
            return sink.len();
        }
        assert!(
            Instant::now() < deadline,
            "the source never subscribed to {topic}"
        );
    }
}

const CSV_PROFILE: &str = r#"
vendor = "Test"
model = "CSV-1"
[channels.a]
sensor_type = "temperature"
unit = "°C"
[channels.b]
sensor_type = "pressure"
unit = "bar"
[mqtt]
topic = "x/+/csv"
payload = "csv"
delimiter = ";"
[[mqtt.fields]]
channel = "a"
column = 0
[[mqtt.fields]]
channel = "b"
column = 2
scale = 0.001
"#;

const NUMBER_PROFILE: &str = r#"
vendor = "Test"
model = "NUM-1"
[channels.temperature]
sensor_type = "temperature"
unit = "°C"
[channels.humidity]
sensor_type = "humidity"
unit = "%RH"
[mqtt]
topic = "x/+/num/+"
payload = "number"
device_level = 1
channel_level = 3
[[mqtt.fields]]
channel = "temperature"
topic_value = "temp"
[[mqtt.fields]]
channel = "humidity"
"#;

const RAW_PROFILE: &str = r#"
vendor = "Test"
model = "RAW-1"
[channels.accel]
sensor_type = "vibration"
unit = "g"
[mqtt]
topic = "x/raw"
payload = "i16le"
sample_rate_hz = 25600.0
scale = 0.5
max_payload_bytes = 64
[[mqtt.fields]]
channel = "accel"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_formats_give_exact_readings_and_malformed_ones_are_counted() {
    require_system_broker();
    let dir = tempfile::tempdir().unwrap();
    let pre = format!("edgegw-test-{}", unique());
    let wisense = device(
        "conveyor",
        &repo_profile("wisense-vb3"),
        &format!("{pre}/wisense/+/+/data"),
    );
    let csv = device(
        "press",
        &write_profile(dir.path(), "csv", CSV_PROFILE),
        &format!("{pre}/+/csv"),
    );
    let num = device(
        "cab",
        &write_profile(dir.path(), "num", NUMBER_PROFILE),
        &format!("{pre}/+/num/+"),
    );
    let raw = device(
        "pump",
        &write_profile(dir.path(), "raw", RAW_PROFILE),
        &format!("{pre}/raw"),
    );
    let stats: Vec<Arc<DeviceStats>> = [&wisense, &csv, &num, &raw]
        .iter()
        .map(|d| d.stats.clone())
        .collect();
    let topic_errors = Arc::new(TopicErrors::default());
    let (tx, rx) = mpsc::channel(8);
    let cancel = CancellationToken::new();
    let client_id = format!("edgegw-test-{}", unique());
    let task = tokio::spawn(run_mqtt_with_topic_errors(
        "b".into(),
        broker(SYSTEM_BROKER, &client_id),
        "gw-test".into(),
        vec![wisense, csv, num, raw],
        tx,
        cancel.clone(),
        topic_errors.clone(),
    ));
    let sink = Sink::start(rx);
    let probe = format!("{pre}/probe/num/temp");
    let n0 = until_subscribed(SYSTEM_BROKER, &probe, &sink, b"1").await;

    let p = |t: &str, payload: &[u8]| publish(SYSTEM_BROKER, &format!("{pre}/{t}"), payload, false);
    let node7 = "wisense/base1/node7/data";
    // Stamped a minute ago: inside the profile's timestamp bounds.
    let ts0 = recent_us(60);
    p(
        node7,
        format!(
            r#"{{"ts":"{}","vrms":2.31,"apeak":0.84,"temp":41.7,"battery":3.61}}"#,
            rfc3339(ts0)
        )
        .as_bytes(),
    );
    // Malformed, each on the same topic as good data.
    p(node7, b"{\"vrms\": 2.3");
    p(node7, b"");
    p(
        node7,
        format!(
            r#"{{"ts":"{}","vrms":"high","apeak":null,"temp":41.8}}"#,
            rfc3339(ts0 + 1_000_000)
        )
        .as_bytes(),
    );
    p(
        node7,
        format!(r#"{{"ts":"{}","vrms":NaN}}"#, rfc3339(ts0 + 2_000_000)).as_bytes(),
    );
    p("line2/csv", b"20.5;x;1013250\n");
    p("line2/csv", b"oops");
    p("m7/num/temp", b"21.25");
    p("m7/num/humidity", b"inf");
    p("m8/num/humidity", b"40");
    p("m8/num/pressure", b"1");
    let mut samples = Vec::new();
    for s in [2i16, -2, 32767] {
        samples.extend(s.to_le_bytes());
    }
    p("raw", &samples);
    p("raw", &[0u8; 100]);
    p("raw", &[1, 2, 3]);
    p(
        node7,
        format!(
            r#"{{"ts":"{}","vrms":2.5,"apeak":0.9,"temp":42.0,"battery":3.6}}"#,
            rfc3339(ts0 + 3_000_000)
        )
        .as_bytes(),
    );

    let got = sink.wait_len(n0 + 4 + 1 + 2 + 1 + 1 + 1 + 4).await;
    let got = &got[n0..];
    let want_scalars: Vec<(String, f64)> = vec![
        ("conveyor.velocity_rms".into(), 2.31),
        ("conveyor.accel_peak".into(), 0.84),
        ("conveyor.temperature".into(), 41.7),
        ("conveyor.battery".into(), 3.61),
        ("conveyor.temperature".into(), 41.8),
        ("press.a".into(), 20.5),
        ("press.b".into(), 1013.25),
        ("cab-m7.temperature".into(), 21.25),
        ("cab-m8.humidity".into(), 40.0),
    ];
    let scalars: Vec<(String, f64)> = got
        .iter()
        .filter(|r| matches!(r.value, Value::Scalar(_)))
        .map(scalar)
        .collect();
    assert_eq!(&scalars[..9], &want_scalars[..]);
    assert_eq!(got[0].ts_us, ts0);
    assert_eq!(got[0].device.as_ref(), "conveyor");
    assert_eq!(got[0].unit.as_ref(), "mm/s");
    assert_eq!(
        got[7].device.as_ref(),
        "cab-m7",
        "device named by a topic level"
    );
    let block = got
        .iter()
        .find(|r| r.sensor_id.as_ref() == "pump.accel")
        .expect("the raw block");
    assert_eq!(
        block.value,
        Value::Block {
            sample_rate_hz: 25600.0,
            samples: vec![1.0f32, -1.0, 16383.5].into()
        }
    );
    let last: Vec<(String, f64)> = got[got.len() - 4..].iter().map(scalar).collect();
    assert_eq!(last[0], ("conveyor.velocity_rms".into(), 2.5));
    assert_eq!(got[got.len() - 1].ts_us, ts0 + 3_000_000);

    // Per-device counters.
    let (ws, cs, ns, rs) = (&stats[0], &stats[1], &stats[2], &stats[3]);
    assert_eq!(ws.error_count("json"), 2, "truncated JSON and NaN");
    assert_eq!(ws.error_count("empty"), 1);
    assert_eq!(ws.error_count("type"), 1);
    assert_eq!(
        ws.error_count("missing_field"),
        2,
        "apeak null, battery absent"
    );
    assert_eq!(ws.polls.load(Relaxed), 3);
    assert_eq!(cs.error_count("type"), 1, "column 0 of \"oops\"");
    assert_eq!(
        cs.error_count("missing_field"),
        1,
        "no column 2 in \"oops\""
    );
    assert_eq!(ns.error_count("non_finite"), 1);
    assert_eq!(ns.error_count("unknown_channel"), 1);
    assert_eq!(rs.error_count("payload_too_large"), 1);
    assert_eq!(rs.error_count("raw_length"), 1);
    // Per-topic counters.
    let t = |s: &str| format!("{pre}/{s}");
    assert_eq!(topic_errors.get(&t(node7), "json"), 2);
    assert_eq!(topic_errors.get(&t(node7), "empty"), 1);
    assert_eq!(
        topic_errors.get(&t("m8/num/pressure"), "unknown_channel"),
        1
    );
    assert_eq!(topic_errors.get(&t("raw"), "raw_length"), 1);
    assert_eq!(topic_errors.get(&t("m7/num/temp"), "non_finite"), 0);

    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();
    // Every message was acknowledged (malformed ones too): nothing comes back.
    let (again, sink2) = start(
        SYSTEM_BROKER,
        &client_id,
        vec![device(
            "conveyor",
            &repo_profile("wisense-vb3"),
            &format!("{pre}/wisense/+/+/data"),
        )],
    );
    // A barrier instead of a pause: the broker sends a session's queued messages
    // before new ones, so when a fresh message arrives, any redelivery would have
    // arrived before it.
    let barrier = format!(r#"{{"ts":"{}","vrms":9.75}}"#, rfc3339(recent_us(1)));
    until_subscribed(
        SYSTEM_BROKER,
        &format!("{pre}/wisense/base1/barrier/data"),
        &sink2,
        barrier.as_bytes(),
    )
    .await;
    let got = sink2.wait_len(1).await;
    assert!(
        got.iter().all(|r| scalar(r).1 == 9.75),
        "no redelivery after everything was acknowledged: {got:?}"
    );
    again.stop().await;
}

const NUM_SIMPLE: &str = r#"
vendor = "Test"
model = "N"
[channels.v]
sensor_type = "general"
unit = "1"
[mqtt]
topic = "x"
payload = "number"
[[mqtt.fields]]
channel = "v"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_not_stored_is_redelivered_and_a_stored_one_is_not() {
    require_system_broker();
    let dir = tempfile::tempdir().unwrap();
    let pre = format!("edgegw-test-{}", unique());
    let topic = format!("{pre}/v");
    let prof = write_profile(dir.path(), "n", NUM_SIMPLE);
    let client_id = format!("edgegw-test-{}", unique());
    let dev = device("d", &prof, &topic);
    let stats = dev.stats.clone();
    let (run, sink) = start(SYSTEM_BROKER, &client_id, vec![dev]);
    let n0 = until_subscribed(SYSTEM_BROKER, &topic, &sink, b"0").await;

    publish(SYSTEM_BROKER, &topic, b"1", false);
    sink.wait_len(n0 + 1).await;
    // Let the PUBACK of "1" reach the broker before the connection is dropped.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The outbox "fails" to store the next batch.
    sink.script.lock().unwrap().push(Policy::Drop);
    publish(SYSTEM_BROKER, &topic, b"2", false);
    let got = sink.wait_len(n0 + 2).await;
    let values: Vec<f64> = got[n0..].iter().map(|r| scalar(r).1).collect();
    assert_eq!(
        values,
        [1.0, 2.0],
        "2 redelivered after the reconnect, 1 not"
    );
    assert!(stats.error_count("disconnected") == 0, "no broker fault");
    // Barrier: a duplicate of 2 would arrive before 3 (one session, in order).
    publish(SYSTEM_BROKER, &topic, b"3", false);
    let got = sink.wait_len(n0 + 3).await;
    let values: Vec<f64> = got[n0..].iter().map(|r| scalar(r).1).collect();
    assert_eq!(
        values,
        [1.0, 2.0, 3.0],
        "nothing delivered twice once stored"
    );
    run.stop().await;

    // Nothing unacknowledged is left in the session: the first message a new
    // connection gets is a fresh one (queued ones would come first).
    let (run, sink) = start(SYSTEM_BROKER, &client_id, vec![device("d", &prof, &topic)]);
    until_subscribed(SYSTEM_BROKER, &topic, &sink, b"4").await;
    let got = sink.wait_len(1).await;
    assert!(
        got.iter().all(|r| scalar(r).1 == 4.0),
        "left in the session: {got:?}"
    );
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_session_delivers_what_was_published_while_stopped() {
    require_system_broker();
    let dir = tempfile::tempdir().unwrap();
    let pre = format!("edgegw-test-{}", unique());
    let topic = format!("{pre}/v");
    let prof = write_profile(dir.path(), "n", NUM_SIMPLE);
    let client_id = format!("edgegw-test-{}", unique());
    let (run, sink) = start(SYSTEM_BROKER, &client_id, vec![device("d", &prof, &topic)]);
    until_subscribed(SYSTEM_BROKER, &topic, &sink, b"0").await;
    run.stop().await;

    for v in ["10", "11", "12"] {
        publish(SYSTEM_BROKER, &topic, v.as_bytes(), false);
    }
    let (run, sink) = start(SYSTEM_BROKER, &client_id, vec![device("d", &prof, &topic)]);
    let got = sink.wait_len(3).await;
    let values: Vec<f64> = got.iter().map(|r| scalar(r).1).collect();
    assert_eq!(values, [10.0, 11.0, 12.0]);
    run.stop().await;
}

/// A Mosquitto of our own on a free port, killed on drop.
struct Mosquitto {
    child: Child,
    port: u16,
    conf: PathBuf,
}

impl Mosquitto {
    fn start(dir: &Path, port: Option<u16>) -> Mosquitto {
        let port = port.unwrap_or_else(|| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        });
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
        )
        .unwrap();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start mosquitto ({e}); apt-get install mosquitto"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !broker_up(port) {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Mosquitto { child, port, conf }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = &self.conf;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_reconnects_and_resubscribes() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path(), None);
    let port = broker.port;
    let topic = format!("edgegw-test-{}/v", unique());
    let prof = write_profile(dir.path(), "n", NUM_SIMPLE);
    let dev = device("d", &prof, &topic);
    let stats = dev.stats.clone();
    let (run, sink) = start(port, "edgegw-restart", vec![dev]);
    let n0 = until_subscribed(port, &topic, &sink, b"1").await;

    // The broker dies (without persistence: the session is gone) and comes back.
    drop(broker);
    wait_for("the loss to be noticed", || {
        !stats.connected.load(Relaxed) && stats.error_count("disconnected") >= 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let broker = Mosquitto::start(dir.path(), Some(port));
    wait_for("the reconnect", || stats.connected.load(Relaxed)).await;
    // Resubscribed: new messages arrive without restarting the source.
    let n1 = until_subscribed(port, &topic, &sink, b"2").await;
    assert!(n1 > n0);
    publish(port, &topic, b"3", false);
    let got = sink.wait_len(n1 + 1).await;
    assert_eq!(scalar(&got[n1]).1, 3.0);
    run.stop().await;
    drop(broker);
}

/// Starts the source on the system broker with its own topic error counters.
fn start_counted(client_id: &str, devices: Vec<DeviceSpec>) -> (Running, Sink, Arc<TopicErrors>) {
    let topic_errors = Arc::new(TopicErrors::default());
    let (tx, rx) = mpsc::channel(8);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run_mqtt_with_topic_errors(
        "b".into(),
        broker(SYSTEM_BROKER, client_id),
        "gw-test".into(),
        devices,
        tx,
        cancel.clone(),
        topic_errors.clone(),
    ));
    (Running { cancel, task }, Sink::start(rx), topic_errors)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn implausible_payload_timestamps_are_refused_and_counted() {
    require_system_broker();
    let pre = format!("edgegw-test-{}", unique());
    let dev = device(
        "conveyor",
        &repo_profile("wisense-vb3"),
        &format!("{pre}/wisense/+/+/data"),
    );
    let stats = dev.stats.clone();
    let client_id = format!("edgegw-test-{}", unique());
    let (run, sink, topic_errors) = start_counted(&client_id, vec![dev]);
    let msg = |ts: &str, v: f64| {
        format!(r#"{{"ts":"{ts}","vrms":{v},"apeak":0.5,"temp":40.0,"battery":3.6}}"#).into_bytes()
    };
    let probe = format!("{pre}/wisense/base1/probe/data");
    let n0 = until_subscribed(
        SYSTEM_BROKER,
        &probe,
        &sink,
        &msg(&rfc3339(recent_us(1)), 0.0),
    )
    .await;

    let node = format!("{pre}/wisense/base1/node7/data");
    // A base station with a broken clock: year 9999, then a reset to 1970.
    publish(
        SYSTEM_BROKER,
        &node,
        &msg("9999-12-31T23:59:59Z", 9.0),
        false,
    );
    publish(
        SYSTEM_BROKER,
        &node,
        &msg("1970-01-01T00:00:00Z", 8.0),
        false,
    );
    let good = recent_us(30);
    publish(SYSTEM_BROKER, &node, &msg(&rfc3339(good), 2.5), false);
    let got = sink.wait_len(n0 + 4).await;
    // Nothing else arrives: the two refused messages gave no readings.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sink.len(), n0 + 4, "only the good message gives readings");
    assert_eq!(scalar(&got[n0]), ("conveyor.velocity_rms".into(), 2.5));
    assert!(got[n0..].iter().all(|r| r.ts_us == good));
    assert_eq!(stats.error_count("timestamp_out_of_bounds"), 2);
    assert_eq!(topic_errors.get(&node, "timestamp_out_of_bounds"), 2);
    run.stop().await;

    // The refused messages were acknowledged: nothing comes back.
    let dev = device(
        "conveyor",
        &repo_profile("wisense-vb3"),
        &format!("{pre}/wisense/+/+/data"),
    );
    let (run, sink) = start(SYSTEM_BROKER, &client_id, vec![dev]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(sink.len(), 0, "no redelivery");
    run.stop().await;
}

const CAPPED_PROFILE: &str = r#"
vendor = "Test"
model = "FANOUT-1"
[channels.temperature]
sensor_type = "temperature"
unit = "°C"
[mqtt]
topic = "x/+/t"
payload = "number"
device_level = 1
max_devices = 5
[[mqtt.fields]]
channel = "temperature"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_devices_are_capped_per_subscription() {
    require_system_broker();
    let dir = tempfile::tempdir().unwrap();
    let pre = format!("edgegw-test-{}", unique());
    let filter = format!("{pre}/+/t");
    let dev = device(
        "base",
        &write_profile(dir.path(), "capped", CAPPED_PROFILE),
        &filter,
    );
    let stats = dev.stats.clone();
    let client_id = format!("edgegw-test-{}", unique());
    let (run, sink, topic_errors) = start_counted(&client_id, vec![dev]);
    // The probe comes from node n0, the first of the five.
    let n0 = until_subscribed(SYSTEM_BROKER, &format!("{pre}/n0/t"), &sink, b"-1").await;

    for i in 0..20 {
        publish(
            SYSTEM_BROKER,
            &format!("{pre}/n{i}/t"),
            i.to_string().as_bytes(),
            false,
        );
    }
    wait_for("15 refused messages", || {
        topic_errors.get(&filter, "too_many_devices") == 15
    })
    .await;
    let got = sink.wait_len(n0 + 5).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sink.len(), n0 + 5);
    let values: Vec<(String, f64)> = got[n0..].iter().map(scalar).collect();
    let want: Vec<(String, f64)> = (0..5)
        .map(|i| (format!("base-n{i}.temperature"), f64::from(i)))
        .collect();
    assert_eq!(values, want);
    assert_eq!(stats.error_count("too_many_devices"), 15);
    // Counted under the subscription's filter, not once per new topic.
    assert_eq!(
        topic_errors.snapshot(),
        [(filter.clone(), "too_many_devices", 15)]
    );
    // A device already known carries on.
    publish(SYSTEM_BROKER, &format!("{pre}/n3/t"), b"33", false);
    let got = sink.wait_len(n0 + 6).await;
    assert_eq!(scalar(&got[n0 + 5]), ("base-n3.temperature".into(), 33.0));
    run.stop().await;
}
