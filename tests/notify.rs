//! Local notifications against real receivers, with the uplink cut (the only cloud
//! upstream points at a closed port): an HTTP server (a webhook), Mosquitto (a local
//! topic), aiosmtpd insisting on STARTTLS and AUTH (email), and pymodbus (a stack
//! light's coil, read back over Modbus TCP by the test's own client). A simulated
//! VT-420 replays the CWRU inner-race fault between healthy stretches, so its
//! episode opens and closes; each receiver must see one opening and one closing
//! per episode, and the coil must go on and back off. Then a gateway killed while
//! its webhook receiver was down delivers the queued notification once after the
//! restart.
//!
//! Peers: `edgegw simulate modbus`, python3 (aiosmtpd, pymodbus), Mosquitto on
//! 127.0.0.1:1883 (topics under a prefix of this test's own); all killed on drop.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "support/procs.rs"]
mod procs;
use procs::{exe, free_port, repo, wait_until, Proc};

#[path = "support/vt420.rs"]
mod vt420;
use vt420::{device, gateway, simulator};

#[path = "support/tls.rs"]
mod tls;

const HEALTHY: &str = "testdata/cwru/normal_12k.f32";
const FAULT: &str = "testdata/cwru/IR007_12k.f32";

/// A gateway config whose only cloud upstream is unreachable, plus `rest`.
fn config(dir: &Path, rest: &str) -> PathBuf {
    let dead = free_port();
    let http = free_port();
    let text = format!(
        "[gateway]\nid = \"gw-notify\"\nstate_dir = \"{}\"\nprofile_dir = \"{}\"\n\n\
         [http]\nlisten = \"127.0.0.1:{http}\"\n\n\
         [upstreams.timescale]\nenabled = true\nurl = \"postgres://edgegw@127.0.0.1:{dead}/cut\"\n\n{rest}",
        dir.display(),
        repo().join("hardware-profiles").display()
    );
    let path = dir.join("edgegw.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn http_port(config: &Path) -> u16 {
    let text = std::fs::read_to_string(config).unwrap();
    let re = regex::Regex::new(r#"listen = "127\.0\.0\.1:(\d+)""#).unwrap();
    re.captures(&text).unwrap()[1].parse().unwrap()
}

/// What the webhook receiver saw: one entry per request.
#[derive(Debug, Clone)]
struct Post {
    status: u16,
    headers: BTreeMap<String, String>,
    body: serde_json::Value,
}

/// A small HTTP/1.1 receiver: answers `status` (changeable while it runs) and keeps
/// every request.
struct Receiver {
    port: u16,
    status: Arc<AtomicU16>,
    posts: Arc<Mutex<Vec<Post>>>,
}

impl Receiver {
    fn start(status: u16) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let status = Arc::new(AtomicU16::new(status));
        let posts = Arc::new(Mutex::new(Vec::new()));
        let (st, ps) = (status.clone(), posts.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let (st, ps) = (st.clone(), ps.clone());
                std::thread::spawn(move || serve(conn, &st, &ps));
            }
        });
        Receiver {
            port,
            status,
            posts,
        }
    }

    fn posts(&self) -> Vec<Post> {
        self.posts.lock().unwrap().clone()
    }
}

fn serve(conn: std::net::TcpStream, status: &AtomicU16, posts: &Mutex<Vec<Post>>) {
    conn.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut conn = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut headers = BTreeMap::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let len: usize = headers
            .get("content-length")
            .and_then(|l| l.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let code = status.load(Ordering::SeqCst);
        posts.lock().unwrap().push(Post {
            status: code,
            headers,
            body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        });
        let reason = if code == 200 { "OK" } else { "Unavailable" };
        if write!(
            conn,
            "HTTP/1.1 {code} {reason}\r\nContent-Length: 0\r\n\r\n"
        )
        .is_err()
        {
            return;
        }
    }
}

/// A python3 helper that prints "PORT <n>" once it listens.
fn python(script: &str, args: &[&str]) -> (Proc, u16) {
    let mut child = Command::new("python3")
        .arg(repo().join("tests/support").join(script))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let proc = Proc(child);
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let port = line
        .trim()
        .strip_prefix("PORT ")
        .unwrap_or_else(|| panic!("{script} did not start: {line:?}"))
        .parse()
        .unwrap();
    (proc, port)
}

/// Coil `addr` of unit 1 at `port`, asked with a Modbus TCP request of our own
/// (function 1), not through edgegw's code.
fn read_coil(port: u16, addr: u16) -> Option<bool> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let a = addr.to_be_bytes();
    s.write_all(&[0, 7, 0, 0, 0, 6, 1, 1, a[0], a[1], 0, 1])
        .ok()?;
    let mut resp = [0u8; 10];
    s.read_exact(&mut resp).ok()?;
    (resp[7] == 1).then_some(resp[9] & 1 == 1)
}

/// (sensor, anomaly type, episode) -> events in order, as a receiver saw them.
type Episodes = BTreeMap<(String, String, String), Vec<String>>;

fn episodes<'a>(notes: impl Iterator<Item = &'a serde_json::Value>) -> Episodes {
    let mut out = Episodes::new();
    for n in notes {
        let key = (
            n["sensor_id"].as_str().unwrap_or_default().to_string(),
            n["anomaly_type"].as_str().unwrap_or_default().to_string(),
            n["episode"].as_str().unwrap_or_default().to_string(),
        );
        out.entry(key)
            .or_default()
            .push(n["event"].as_str().unwrap_or_default().to_string());
    }
    out
}

/// Every episode starts with one opening, has escalations only in between and at
/// most one close, at the end.
fn well_formed(who: &str, eps: &Episodes) {
    for (k, events) in eps {
        assert_eq!(events[0], "open", "{who}: {k:?} {events:?}");
        assert_eq!(
            events.iter().filter(|e| *e == "open").count(),
            1,
            "{who}: {k:?} {events:?}"
        );
        let closes = events.iter().filter(|e| *e == "close").count();
        assert!(closes <= 1, "{who}: {k:?} {events:?}");
        if closes == 1 {
            assert_eq!(events.last().unwrap(), "close", "{who}: {k:?} {events:?}");
        }
        assert!(
            events
                .iter()
                .all(|e| ["open", "escalate", "close"].contains(&e.as_str())),
            "{who}: {k:?} {events:?}"
        );
    }
}

/// The body of `GET path` on the status listener.
fn get(port: u16, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

fn metric(port: u16, name_and_labels: &str) -> Option<f64> {
    let text = get(port, "/metrics")?;
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn every_receiver_hears_each_episode_open_and_close_with_the_uplink_cut() {
    let dir = tempfile::tempdir().unwrap();
    // Healthy (the baseline is learned in the first 2 s), the fault for 4 s, then
    // healthy for good: the episode opens, then closes.
    let (_pump_sim, pump_port) = simulator(&[HEALTHY]);
    let (_fan_sim, fan_port) = simulator(&[HEALTHY, FAULT, FAULT, HEALTHY]);

    let hook = Receiver::start(200);

    let pki = tls::Pki::new();
    let mail_dir = dir.path().join("mail");
    std::fs::create_dir(&mail_dir).unwrap();
    let (_smtp, smtp_port) = python(
        "smtp_server.py",
        &[
            "--cert",
            pki.server.cert.to_str().unwrap(),
            "--key",
            pki.server.key.to_str().unwrap(),
            "--user",
            "gw-notify",
            "--password",
            "s3cret-mail",
            "--outdir",
            mail_dir.to_str().unwrap(),
        ],
    );
    let (_plc, plc_port) = python("pymodbus_server.py", &[]);
    // Coil 1 of pymodbus_server.py starts off; coil 0 and 2 are on and must stay so.
    assert_eq!(read_coil(plc_port, 1), Some(false));

    // The local broker: a topic prefix of this test's own.
    let prefix = format!(
        "edgegw-notify-test-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    );
    let mut opts = rumqttc::MqttOptions::new(format!("{prefix}-sub"), "127.0.0.1", 1883);
    opts.set_keep_alive(Duration::from_secs(10));
    let (client, mut connection) = rumqttc::Client::new(opts, 64);
    client
        .subscribe(format!("{prefix}/#"), rumqttc::QoS::AtLeastOnce)
        .unwrap();
    let mqtt_msgs: Arc<Mutex<Vec<(String, serde_json::Value)>>> = Arc::default();
    let sink = mqtt_msgs.clone();
    std::thread::spawn(move || {
        for ev in connection.iter() {
            match ev {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    let v = serde_json::from_slice(&p.payload).unwrap_or_default();
                    sink.lock().unwrap().push((p.topic.clone(), v));
                }
                Ok(_) => {}
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    });

    let notify = format!(
        r#"
[mqtt_brokers.local]
host = "127.0.0.1"
port = 1883

[notify.sinks.hook]
kind = "webhook"
url = "http://127.0.0.1:{hook}/alarm"
token = {{ env = "NOTIFY_TEST_HOOK_TOKEN" }}

[notify.sinks.panel]
kind = "mqtt"
broker = "local"
topic = "{prefix}/{{{{device}}}}/{{{{event}}}}"

[notify.sinks.mail]
kind = "smtp"
host = "127.0.0.1"
port = {smtp_port}
ca_file = "{ca}"
username = "gw-notify"
password = {{ env = "NOTIFY_TEST_SMTP_PASSWORD" }}
from = "gateway@plant.example"
to = ["maintenance@plant.example"]

[notify.sinks.light]
kind = "modbus"
address = "127.0.0.1:{plc_port}"
allow = ["coil:1"]
writes = [{{ target = "coil:1", on = 1, off = 0 }}]

[[notify.routes]]
sinks = ["hook", "panel", "mail"]

[[notify.routes]]
sinks = ["light"]
groups = ["line-1"]
"#,
        hook = hook.port,
        ca = pki.ca.display(),
    );
    let devices = device("pump", pump_port, "") + &device("fan", fan_port, "group = \"line-1\"\n");
    let cfg = config(dir.path(), &(notify + &devices));
    let check = Command::new(exe())
        .args(["check", "--config"])
        .arg(&cfg)
        .env("NOTIFY_TEST_HOOK_TOKEN", "hook-token")
        .env("NOTIFY_TEST_SMTP_PASSWORD", "s3cret-mail")
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let _gw = gateway(
        &cfg,
        &[
            ("NOTIFY_TEST_HOOK_TOKEN", "hook-token"),
            ("NOTIFY_TEST_SMTP_PASSWORD", "s3cret-mail"),
        ],
    );

    // The fan's episode opens: the light goes on while it is open.
    let opened = wait_until(
        "the webhook's first notification",
        Duration::from_secs(90),
        || hook.posts().into_iter().find(|p| p.body["event"] == "open"),
    );
    assert_eq!(opened.status, 200);
    assert_eq!(opened.body["device"], "fan", "{:#}", opened.body);
    assert_eq!(opened.body["gateway"], "gw-notify");
    assert_eq!(opened.body["group"], "line-1");
    assert_eq!(
        opened.headers.get("authorization").map(String::as_str),
        Some("Bearer hook-token")
    );
    assert_eq!(
        opened.headers.get("idempotency-key").map(String::as_str),
        opened.body["key"].as_str()
    );
    wait_until("the stack light on", Duration::from_secs(30), || {
        (read_coil(plc_port, 1) == Some(true)).then_some(())
    });

    // The fault ends: every open episode closes, the light goes off.
    wait_until("every episode closed", Duration::from_secs(120), || {
        let eps = episodes(hook.posts().iter().map(|p| &p.body));
        (!eps.is_empty() && eps.values().all(|e| e.last().unwrap() == "close")).then_some(())
    });
    wait_until("the stack light off", Duration::from_secs(30), || {
        (read_coil(plc_port, 1) == Some(false)).then_some(())
    });
    // Nothing else was written: coils 0 and 2 as pymodbus_server.py set them.
    assert_eq!(read_coil(plc_port, 0), Some(true));
    assert_eq!(read_coil(plc_port, 2), Some(true));

    // The same episodes reach the broker and the mailbox.
    let hook_eps = episodes(hook.posts().iter().map(|p| &p.body));
    eprintln!("episodes the webhook heard: {hook_eps:#?}");
    well_formed("webhook", &hook_eps);
    assert!(
        hook_eps
            .keys()
            .all(|(sensor, _, _)| sensor.starts_with("fan.")),
        "the healthy pump raised nothing: {hook_eps:?}"
    );
    let http = http_port(&cfg);
    wait_until(
        "the broker and the mailbox",
        Duration::from_secs(60),
        || {
            let msgs = mqtt_msgs.lock().unwrap().clone();
            let mqtt_eps = episodes(msgs.iter().map(|(_, v)| v));
            let mails = std::fs::read_dir(&mail_dir)
                .unwrap()
                .filter(|e| {
                    e.as_ref()
                        .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "eml"))
                })
                .count();
            let events: usize = hook_eps.values().map(Vec::len).sum();
            (mqtt_eps == hook_eps && mails == events).then_some(())
        },
    );
    for (topic, v) in mqtt_msgs.lock().unwrap().iter() {
        assert_eq!(
            topic,
            &format!("{prefix}/fan/{}", v["event"].as_str().unwrap()),
            "{v:#}"
        );
    }
    let mut mails: Vec<PathBuf> = std::fs::read_dir(&mail_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .collect();
    mails.sort();
    let first = std::fs::read_to_string(&mails[0]).unwrap();
    assert!(first.contains("X-Was-TLS: True"), "{first}");
    assert!(first.contains("Subject: [gw-notify] open: "), "{first}");
    assert!(first.contains("To: maintenance@plant.example"), "{first}");
    assert!(first.contains("Message-ID: <gw-notify."), "{first}");

    // Each attempt is counted.
    let events: usize = hook_eps.values().map(Vec::len).sum();
    for sink in ["hook", "panel", "mail"] {
        let delivered = metric(
            http,
            &format!("edgegw_notify_attempts_total{{sink=\"{sink}\",outcome=\"delivered\"}}"),
        );
        assert_eq!(delivered, Some(events as f64), "{sink}");
    }
    let light = metric(
        http,
        "edgegw_notify_attempts_total{sink=\"light\",outcome=\"delivered\"}",
    )
    .unwrap();
    assert!(light >= 2.0, "the light was switched on and off: {light}");
    // The status page lists the sinks with the upstreams.
    let status: serde_json::Value =
        serde_json::from_str(&get(http, "/api/status").unwrap()).unwrap();
    let names: Vec<&str> = status["outbox"]["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|u| u["name"].as_str())
        .collect();
    for sink in ["notify:hook", "notify:panel", "notify:mail", "notify:light"] {
        assert!(names.contains(&sink), "{names:?}");
    }
}

#[test]
fn a_gateway_killed_before_delivery_delivers_the_notification_once_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (fan_sim, fan_port) = simulator(&[HEALTHY, FAULT]);
    // The receiver is down (503) when the alert is raised.
    let hook = Receiver::start(503);
    let rest = format!(
        "[notify.sinks.hook]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:{}/alarm\"\n\
         delivery = {{ backoff_initial_ms = 200, backoff_max_ms = 500 }}\n\
         [[notify.routes]]\nsinks = [\"hook\"]\n\n{}",
        hook.port,
        device("fan", fan_port, "")
    );
    let cfg = config(dir.path(), &rest);
    let mut gw = gateway(&cfg, &[]);
    let refused = wait_until(
        "a notification attempt while the receiver is down",
        Duration::from_secs(90),
        || hook.posts().into_iter().find(|p| p.body["event"] == "open"),
    );
    // No new readings from here on: whatever is delivered later was queued before.
    drop(fan_sim);
    let key = refused.body["key"].as_str().unwrap().to_string();
    std::thread::sleep(Duration::from_millis(500));
    gw.0.kill().unwrap();
    gw.0.wait().unwrap();
    drop(gw);
    let before = hook.posts().len();
    assert!(hook.posts().iter().all(|p| p.status == 503));

    hook.status.store(200, Ordering::SeqCst);
    let _gw = gateway(&cfg, &[]);
    let delivered = wait_until("the queued notification", Duration::from_secs(60), || {
        hook.posts()
            .into_iter()
            .skip(before)
            .find(|p| p.status == 200 && p.body["key"] == key.as_str())
    });
    assert_eq!(delivered.body["event"], "open");
    // Give a duplicate every chance to show up.
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(200));
    }
    let accepted: Vec<Post> = hook
        .posts()
        .into_iter()
        .filter(|p| p.status == 200)
        .collect();
    let opens_of_key = accepted
        .iter()
        .filter(|p| p.body["key"] == key.as_str())
        .count();
    assert_eq!(opens_of_key, 1, "{accepted:#?}");
    // Every accepted notification is about an episode that opened before the kill,
    // each event once.
    let mut seen = std::collections::BTreeSet::new();
    for p in &accepted {
        assert!(
            seen.insert(p.headers.get("idempotency-key").cloned()),
            "delivered twice: {p:#?}"
        );
    }
}
