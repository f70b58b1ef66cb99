//! `edgegw replay` and `edgegw run` give the same alert timeline for the same config
//! and data, and a commissioning baseline lives in the outbox database: it resumes
//! after a restart and `edgegw baseline reset` starts it over while the daemon runs.
//!
//! The documented CWRU config (`config/replay/cwru.toml`) is used as it is, with its
//! state directory, MQTT topic and client id made unique to the test. `run` reads the
//! recording from the real Mosquitto broker (127.0.0.1:1883), published as JSON blocks
//! with the samples' own timestamps, exactly as `replay` cuts them. Every process the
//! test starts is killed on drop.

use edgegw::replay::input::{InputOptions, Recording, ReplayItem};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BROKER_PORT: u16 = 1883;
const START: &str = "2026-01-01T00:00:00Z";
const START_US: i64 = 1_767_225_600_000_000;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn exe() -> &'static str {
    env!("CARGO_BIN_EXE_edgegw")
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
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

    /// SIGTERM, then waits for a clean exit.
    fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "edgegw run exited with {status}:\n{}",
                    self.log()
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "edgegw run did not stop:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.log()
    }
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

/// The documented CWRU replay config in a temporary directory, with its own state
/// directory, topic and MQTT client id.
struct Setup {
    dir: tempfile::TempDir,
    topic: String,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let unique = format!("edgegw-test-{}-{n}", std::process::id());
        let topic = format!("{unique}/cwru/de");
        std::fs::create_dir(dir.path().join("profiles")).unwrap();
        std::fs::copy(
            repo().join("config/replay/profiles/cwru-drive-end.toml"),
            dir.path().join("profiles/cwru-drive-end.toml"),
        )
        .unwrap();
        let text = std::fs::read_to_string(repo().join("config/replay/cwru.toml")).unwrap();
        let text = text
            .replace("id = \"replay-cwru\"", &format!("id = \"{unique}\""))
            .replace(
                "state_dir = \"/var/lib/edgegw\"",
                &format!("state_dir = \"{}\"", dir.path().display()),
            )
            .replace(
                "[devices.mqtt]\nbroker = \"local\"",
                &format!("[devices.mqtt]\nbroker = \"local\"\ntopic = \"{topic}\""),
            );
        assert!(text.contains(&topic), "the documented config changed shape");
        std::fs::write(
            dir.path().join("edgegw.toml"),
            format!("{text}\n[http]\nenabled = false\n"),
        )
        .unwrap();
        Setup { dir, topic }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("edgegw.toml")
    }

    fn outbox(&self) -> PathBuf {
        self.dir.path().join("outbox.db")
    }

    fn run(&self) -> Proc {
        let mut child = Command::new(exe())
            .args(["--log-format", "human", "run", "--config"])
            .arg(self.config())
            .env("RUST_LOG", "info,edgegw::sources::mqtt=debug")
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
        wait_until("the MQTT subscription", Duration::from_secs(30), || {
            p.log().contains("Subscribed").then_some(())
        });
        p
    }

    fn baseline(&self, args: &[&str]) -> String {
        let out = Command::new(exe())
            .arg("baseline")
            .args(args)
            .arg("--config")
            .arg(self.config())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// The blocks `edgegw replay` cuts from these files (same reader, same options).
fn blocks(files: &[&str]) -> Vec<(i64, Vec<f32>)> {
    let mut out = Vec::new();
    let mut start = START_US;
    for f in files {
        let opts = InputOptions {
            sample_rate_hz: Some(12_000.0),
            block_samples: 2048,
            start_us: start,
            ..InputOptions::default()
        };
        let mut rec = Recording::open(&repo().join(f), &opts).unwrap();
        for item in &mut rec {
            match item.unwrap() {
                ReplayItem::Block { ts_us, samples, .. } => out.push((ts_us, samples)),
                other => panic!("not a block: {other:?}"),
            }
        }
        start = rec.next_start_us().unwrap();
    }
    out
}

fn replay(setup: &Setup, files: &[&str]) -> serde_json::Value {
    let json = setup.dir.path().join("replay.json");
    let mut cmd = Command::new(exe());
    cmd.args(["replay", "--config"])
        .arg(setup.config())
        .args([
            "--sensor", "cwru.de", "--rate", "12000", "--start", START, "--quiet",
        ])
        .arg("--json")
        .arg(&json);
    for f in files {
        cmd.arg("--input").arg(repo().join(f));
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&std::fs::read(json).unwrap()).unwrap()
}

/// Publishes blocks as the profile's JSON (QoS 1, waits for every PUBACK).
async fn publish(topic: &str, blocks: &[(i64, Vec<f32>)]) {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let mut opts = MqttOptions::new(
        format!("edgegw-test-pub-{}-{n}", std::process::id()),
        "127.0.0.1",
        BROKER_PORT,
    );
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut events) = AsyncClient::new(opts, 64);
    let total = blocks.len();
    let sender = {
        let client = client.clone();
        let topic = topic.to_string();
        let payloads: Vec<Vec<u8>> = blocks
            .iter()
            .map(|(ts, s)| {
                serde_json::to_vec(&serde_json::json!({"ts": ts, "samples": s})).unwrap()
            })
            .collect();
        tokio::spawn(async move {
            for p in payloads {
                client
                    .publish(&topic, QoS::AtLeastOnce, false, p)
                    .await
                    .unwrap();
            }
        })
    };
    let mut acked = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while acked < total {
        let ev = tokio::time::timeout_at(deadline, events.poll())
            .await
            .expect("the broker acknowledges every block")
            .expect("broker connection");
        if let Event::Incoming(Packet::PubAck(_)) = ev {
            acked += 1;
        }
    }
    sender.await.unwrap();
    let _ = client.disconnect().await;
}

fn stored_windows(outbox: &Path) -> u64 {
    edgegw::outbox::Outbox::open_read_only(outbox)
        .and_then(|o| o.stats())
        .ok()
        .and_then(|s| s.depth.get("window").copied())
        .unwrap_or(0)
}

/// (state, anomaly type, severity, ts, likely component) of every alert in the outbox.
fn outbox_alerts(outbox: &Path) -> Vec<(String, String, u64, i64, Option<String>)> {
    let o = edgegw::outbox::Outbox::open_read_only(outbox).unwrap();
    o.dump(Some(edgegw::record::RecordKind::Alert), 10_000)
        .unwrap()
        .into_iter()
        .map(|l| {
            let p = l.payload;
            (
                p["state"].as_str().unwrap().to_string(),
                p["anomaly_type"].as_str().unwrap().to_string(),
                p["severity"].as_u64().unwrap(),
                p["ts_us"].as_i64().unwrap(),
                p.pointer("/evidence/bearing/likely_component")
                    .and_then(|c| c.as_str())
                    .map(str::to_string),
            )
        })
        .collect()
}

fn replay_alerts(r: &serde_json::Value) -> Vec<(String, String, u64, i64, Option<String>)> {
    r["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["state"].as_str().unwrap().to_string(),
                a["anomaly_type"].as_str().unwrap().to_string(),
                a["severity"].as_u64().unwrap(),
                a["ts_us"].as_i64().unwrap(),
                a["likely_component"].as_str().map(str::to_string),
            )
        })
        .collect()
}

const HEALTHY: &str = "testdata/cwru/normal_12k.f32";
const INNER_RACE: &str = "testdata/cwru/IR007_12k.f32";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_over_mqtt_gives_the_same_alert_timeline_as_replay() {
    let setup = Setup::new();
    let files = [HEALTHY, INNER_RACE];
    let r = replay(&setup, &files);
    let want = replay_alerts(&r);
    // The documented outcome on the committed slices: learned on the healthy half,
    // silent on the other half, an inner-race alert on the fault.
    assert_eq!(r["inputs"][0]["flagged"], 0, "{r:#}");
    assert!(
        want.iter()
            .any(|a| a.0 == "open" && a.1 == "vibration_anomaly"),
        "{want:?}"
    );
    assert!(
        want.iter().any(|a| a.4.as_deref() == Some("inner_race")),
        "the evidence names the inner race: {want:?}"
    );
    let windows: u64 = r["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["units"].as_u64().unwrap())
        .sum();

    let gw = setup.run();
    publish(&setup.topic, &blocks(&files)).await;
    let outbox = setup.outbox();
    wait_until(
        "every window in the outbox",
        Duration::from_secs(60),
        || (stored_windows(&outbox) >= windows).then_some(()),
    );
    let log = gw.stop();
    assert_eq!(
        stored_windows(&outbox),
        windows,
        "no window lost or doubled"
    );
    let got = outbox_alerts(&outbox);
    assert_eq!(got, want, "run and replay disagree\n{log}");
    // Operators see the events in the log.
    assert!(log.contains("Baseline learning started"), "{log}");
    assert!(log.contains("Baseline learned"), "{log}");
    assert!(log.contains("Alert opened"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learning_resumes_after_a_restart_and_a_reset_starts_it_over() {
    let setup = Setup::new();
    let all = blocks(&[HEALTHY, INNER_RACE]);
    // The healthy recording is 30 blocks of 2048 samples; the first 10 (1.7 s) are
    // not enough to learn (2.54 s).
    let (first, rest) = all.split_at(10);
    let gw = setup.run();
    publish(&setup.topic, first).await;
    let outbox = setup.outbox();
    wait_until("the first windows", Duration::from_secs(30), || {
        (stored_windows(&outbox) >= 19).then_some(())
    });
    gw.stop();
    let status = setup.baseline(&["status"]);
    assert!(status.contains("cwru.de (window): LEARNING"), "{status}");
    let samples: usize = status
        .split("LEARNING since ")
        .nth(1)
        .and_then(|s| s.split(", ").nth(1))
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{status}"));
    assert!(samples >= 15, "the learning samples were saved: {status}");

    // Restart: learning goes on from there (not from zero), then the fault alerts.
    let gw = setup.run();
    publish(&setup.topic, rest).await;
    wait_until("an alert", Duration::from_secs(60), || {
        outbox_alerts(&outbox)
            .iter()
            .any(|a| a.0 == "open")
            .then_some(())
    });
    let status = setup.baseline(&["status"]);
    assert!(status.contains("cwru.de (window): learned"), "{status}");
    let log = gw.log();
    assert!(log.contains("Baseline learned"), "{log}");
    assert!(
        !log.contains("Baseline learning started"),
        "the restart resumed the learning period instead of starting a new one:\n{log}"
    );

    // Reset while running: the stored baseline is cleared at once and the daemon
    // drops its own within a few seconds.
    let out = setup.baseline(&["reset", "cwru"]);
    assert!(out.contains("reset cwru.de (window)"), "{out}");
    wait_until(
        "the daemon to apply the reset",
        Duration::from_secs(30),
        || gw.log().contains("Baseline reset").then_some(()),
    );
    let log = gw.stop();
    assert!(log.contains("Baseline reset"), "{log}");
    let status = setup.baseline(&["status"]);
    assert!(status.contains("cwru.de (window): reset"), "{status}");
}
