//! MQTT over TLS, as source and as upstream, against a Mosquitto of its own per test
//! with TLS listeners and certificates made in the test (plus a plain listener for
//! the test's own clients): a device read through a `[mqtt_brokers.X.tls]` broker
//! and the upstream publishing over TLS, both also with a client certificate on a
//! listener that requires one; a certificate for another host name, a broker whose CA
//! is not trusted and a missing client certificate refused, with the reason in the
//! log or the error.

#[path = "support/tls.rs"]
mod tls_support;
mod upstream_common;

use edgegw::config::{DeviceConfig, MqttBrokerConfig, MqttUpstream};
use edgegw::profiles::load_profile;
use edgegw::sources::mqtt::run_mqtt;
use edgegw::sources::{DeviceSpec, DeviceStats, Reading, SourceBatch, Value};
use edgegw::upstream::mqtt::MqttSink;
use edgegw::upstream::Sink;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tls_support::*;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use upstream_common::*;

const PROFILE: &str = r#"
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

/// `[mqtt_brokers.X]` with a `tls` section: the CA, and a client certificate when
/// `client` is set.
fn broker(port: u16, pki: &Pki, client: bool, ca: &Path) -> MqttBrokerConfig {
    let mut text = format!(
        "host = \"127.0.0.1\"\nport = {port}\nclient_id = \"edgegw-tls-{:08x}\"\nkeep_alive_secs = 5\n[tls]\nca_file = {:?}\n",
        fastrand::u32(..),
        ca.display().to_string()
    );
    if client {
        text.push_str(&format!(
            "cert_file = {:?}\nkey_file = {{ file = {:?} }}\n",
            pki.client.cert.display().to_string(),
            pki.client.key.display().to_string()
        ));
    }
    toml::from_str(&text).expect("broker config")
}

/// Publishes one QoS 1 message through the broker's plain listener (mosquitto_pub, a
/// foreign client).
fn publish(port: u16, topic: &str, payload: &str) {
    let mut child = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1", "-t"])
        .arg(topic)
        .arg("-s")
        .stdin(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run mosquitto_pub ({e}); apt-get install mosquitto-clients")
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(payload.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "mosquitto_pub failed");
}

fn device(dir: &Path, topic: &str) -> DeviceSpec {
    let profile = dir.join("n.toml");
    std::fs::write(&profile, PROFILE).unwrap();
    let mut diags = Vec::new();
    let loaded = load_profile(&profile, &mut diags).expect("profile");
    let config: DeviceConfig = toml::from_str(&format!(
        "id = \"d\"\nprofile = \"n\"\n[mqtt]\nbroker = \"b\"\ntopic = \"{topic}\"\n"
    ))
    .unwrap();
    DeviceSpec {
        config,
        profile: Arc::new(loaded),
        stats: Arc::new(DeviceStats::default()),
    }
}

/// The MQTT source on `broker`, its readings collected (and acknowledged).
struct Source {
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    got: Arc<Mutex<Vec<Reading>>>,
    stats: Arc<DeviceStats>,
}

impl Source {
    fn start(broker: MqttBrokerConfig, dev: DeviceSpec) -> Source {
        let (tx, mut rx) = mpsc::channel::<SourceBatch>(8);
        let cancel = CancellationToken::new();
        let stats = dev.stats.clone();
        let task = tokio::spawn(run_mqtt(
            "b".into(),
            broker,
            "gw-test".into(),
            vec![dev],
            tx,
            cancel.clone(),
        ));
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        tokio::spawn(async move {
            while let Some(batch) = rx.recv().await {
                g.lock().unwrap().extend(batch.readings);
                if let Some(a) = batch.ack {
                    a.committed();
                }
            }
        });
        Source {
            cancel,
            task,
            got,
            stats,
        }
    }

    fn values(&self) -> Vec<f64> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .map(|r| match r.value {
                Value::Scalar(v) => v,
                ref other => panic!("not a scalar: {other:?}"),
            })
            .collect()
    }

    async fn stop(self) {
        self.cancel.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_source_reads_a_device_through_a_tls_broker_and_with_a_client_certificate() {
    let pki = Pki::new();
    let mosquitto = MosquittoTls::start(&pki);
    let dir = tempfile::tempdir().unwrap();
    for (port, client_cert) in [(mosquitto.tls, false), (mosquitto.mutual, true)] {
        let topic = unique("edgegw_tls/dev");
        let src = Source::start(
            broker(port, &pki, client_cert, &pki.ca),
            device(dir.path(), &topic),
        );
        // Published until the (persistent-session) subscription is in place.
        let mut sent = 0;
        wait_until_async("a reading over TLS", Duration::from_secs(20), || {
            sent += 1;
            publish(mosquitto.plain, &topic, &format!("{sent}.5"));
            !src.got.lock().unwrap().is_empty()
        })
        .await;
        assert!(src.stats.connected.load(Relaxed));
        let v = src.values()[0];
        assert!(v.fract() == 0.5 && v >= 1.0, "{v}");
        src.stop().await;
    }
}

/// Calls `step` every 200 ms until it returns true.
async fn wait_until_async(what: &str, limit: Duration, mut step: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !step() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// A current-thread runtime so that the captured log sees the source's task.
#[tokio::test]
async fn the_source_refuses_a_wrong_host_an_untrusted_ca_and_a_missing_client_certificate() {
    let (logs, _guard) = Logs::capture();
    let pki = Pki::new();
    let mosquitto = MosquittoTls::start(&pki);
    let dir = tempfile::tempdir().unwrap();
    for (port, why) in [
        (mosquitto.wrong_host, "not valid for name"),
        (mosquitto.untrusted, "UnknownIssuer"),
        // The TLS 1.3 server refuses after the handshake: the alert names it.
        (mosquitto.mutual, "CertificateRequired"),
    ] {
        let topic = unique("edgegw_tls/dev");
        let src = Source::start(
            broker(port, &pki, false, &pki.ca),
            device(dir.path(), &topic),
        );
        wait_until("a refused connection", Duration::from_secs(20), || {
            src.stats.error_count("connect") >= 1
        })
        .await;
        publish(mosquitto.plain, &topic, "1");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(src.got.lock().unwrap().is_empty());
        assert!(!src.stats.connected.load(Relaxed));
        let text = logs.text();
        assert!(
            text.contains("MQTT connection failed") && text.contains(why),
            "port {port}: {why} not in the log:\n{text}"
        );
        src.stop().await;
    }
}

fn upstream_cfg(prefix: &str) -> MqttUpstream {
    toml::from_str(&format!(
        "broker = \"cloud\"\ntopic = \"{prefix}/{{kind}}/{{sensor_id}}\"\nclient_id = \"{prefix}-up\"\n[delivery]\ntimeout_ms = 3000\n"
    ))
    .unwrap()
}

/// Subscribes to `<prefix>/#` on the plain listener; collects the payloads.
async fn subscriber(port: u16, prefix: &str) -> Arc<Mutex<Vec<serde_json::Value>>> {
    let (client, mut el) = AsyncClient::new(
        MqttOptions::new(format!("{prefix}-sub"), "127.0.0.1", port),
        100,
    );
    client
        .subscribe(format!("{prefix}/#"), QoS::AtLeastOnce)
        .await
        .unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let mut ready = Some(ready_tx);
    tokio::spawn(async move {
        let _client = client;
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    g.lock()
                        .unwrap()
                        .push(serde_json::from_slice(&p.payload).unwrap_or_default());
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), ready_rx)
        .await
        .expect("SUBACK")
        .unwrap();
    got
}

fn stored(records: Vec<edgegw::record::Record>) -> Vec<edgegw::record::StoredRecord> {
    records
        .into_iter()
        .enumerate()
        .map(|(i, record)| edgegw::record::StoredRecord {
            id: i as i64 + 1,
            key: format!("{GATEWAY}:tls:{i}"),
            created_us: edgegw::record::now_us(),
            record,
        })
        .collect()
}

#[tokio::test]
async fn the_upstream_publishes_over_tls_and_with_a_client_certificate() {
    let pki = Pki::new();
    let mosquitto = MosquittoTls::start(&pki);
    for (port, client_cert) in [(mosquitto.tls, false), (mosquitto.mutual, true)] {
        let prefix = unique("edgegw_tls_up");
        let got = subscriber(mosquitto.plain, &prefix).await;
        let mut sink = MqttSink::new(
            upstream_cfg(&prefix),
            "cloud",
            broker(port, &pki, client_cert, &pki.ca),
            GATEWAY,
        );
        let batch = stored((0..5).map(|i| reading("press.rms", i, i as f64)).collect());
        let out = sink.deliver(&batch).await;
        assert!(out.error.is_none(), "{:?}", out.error);
        assert_eq!(out.done, 5);
        wait_until("5 messages", Duration::from_secs(10), || {
            got.lock().unwrap().len() >= 5
        })
        .await;
        assert_eq!(got.lock().unwrap()[4]["value"], 4.0);
    }
}

#[tokio::test]
async fn the_upstream_refuses_a_wrong_host_an_untrusted_ca_and_a_missing_client_certificate() {
    let pki = Pki::new();
    let mosquitto = MosquittoTls::start(&pki);
    for (port, why) in [
        (mosquitto.wrong_host, "not valid for name"),
        (mosquitto.untrusted, "UnknownIssuer"),
        (mosquitto.mutual, "CertificateRequired"),
    ] {
        let prefix = unique("edgegw_tls_up");
        let mut sink = MqttSink::new(
            upstream_cfg(&prefix),
            "cloud",
            broker(port, &pki, false, &pki.ca),
            GATEWAY,
        );
        let out = sink
            .deliver(&stored(vec![reading("press.rms", 1, 1.0)]))
            .await;
        assert_eq!(out.done, 0);
        let e = out.error.expect("refused").to_string();
        eprintln!("refused as expected: {e}");
        assert!(e.contains(why), "port {port}: {why} not in {e}");
    }
}
