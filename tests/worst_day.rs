//! A plant's worst day, one test (issue #13): the release-shaped binary with every
//! kind of source and every database upstream, real services, and everything that goes
//! wrong on a bad day, then every record counted at the far end.
//!
//! Sources:
//! - `vib1`, `vib2`: Modbus TCP vibration transmitters (`edgegw simulate modbus`, the
//!   VT-420 profile) replaying the committed CWRU drive-end slices: both healthy; later
//!   `vib1`'s simulator is replaced by one replaying the inner-race fault (T_fault).
//! - `motor7`: a Modbus RTU temperature transmitter on a socat pty pair; `motor8` (unit
//!   2 on the same bus) arrives with a SIGHUP.
//! - `nab1`: an MQTT sensor replaying the NAB machine temperature slice faster than
//!   real time (QoS 1, its own timestamps); `flood1`: an MQTT sensor that fills the
//!   outbox to its bound.
//!
//! Upstreams: TimescaleDB (PostgreSQL through a TCP proxy that can cut it), Redis (a
//! key prefix of its own), MQTT (a private Mosquitto with persistence, which is also
//! the sources' broker and gets restarted).
//!
//! The day: SIGKILLs while the Modbus devices learn; the database unreachable while NAB
//! publishes, with more SIGKILLs and the broker restarted in the middle; a SIGHUP with
//! a broken profile (its device left out with a located error, the rest keeps running)
//! and one with a new device; then the outbox's filesystem (a tmpfs) filled to its
//! bound with the database cut again, and the bearing fault starting in the middle of
//! that.
//!
//! Checked at the far end:
//! - every NAB reading in `sensor_readings` exactly once (count and checksum);
//! - before the disk phase, with nothing evicted yet: the records the database holds
//!   are exactly the reading and window records the gateway appended (the record keys
//!   the MQTT upstream carried, each with every row it maps to);
//! - the NAB hourly summaries equal the aggregates of the readings they summarise;
//! - alerts for `vib1` in `anomaly_alerts` and the Redis stream, all after T_fault,
//!   none for the healthy machines, no alert ever evicted, no Redis duplicate;
//! - `/metrics` balances for every upstream: appended = delivered + pending +
//!   dead-lettered + evicted unsent, and so does the outbox file after the stop.
//!
//! Short by default (CI). `scripts/e2e` runs the long form through these variables:
//! `EDGEGW_E2E_KILLS` (SIGKILL cycles, default 10), `EDGEGW_E2E_RATE` (NAB messages
//! per second, default 300), `EDGEGW_E2E_OUTAGE_SECS` (how long NAB publishes while
//! the database is cut, default: one pass over the 1,500-reading slice),
//! `EDGEGW_E2E_TMPFS_MB` (the outbox filesystem, default 48), `EDGEGW_E2E_OUTBOX_MB`
//! (`outbox.max_size_mb`, default 512) and
//! `EDGEGW_E2E_REPORT` (a file the figures are written to as JSON).
//!
//! Needs root (it mounts a tmpfs), PostgreSQL and Redis as `scripts/test` starts them,
//! `mosquitto` and `socat`.

mod upstream_common;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use upstream_common::{unique, Proxy, TestDb};

const NAB_SPACING_MAX_US: i64 = 30_000_000;

fn exe() -> &'static str {
    env!("CARGO_BIN_EXE_edgegw")
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

fn env_num(name: &str, default: f64) -> f64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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

/// A child process, SIGKILLed on drop.
struct Proc(Child);

impl Proc {
    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.0.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} {} failed", self.0.id());
    }

    /// SIGTERM, then the exit status (SIGKILL after 20 s).
    fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = self.0.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = self.0.kill();
                return self.0.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A tmpfs for the gateway's state directory, unmounted on drop.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: PathBuf, mb: u64) -> Tmpfs {
        std::fs::create_dir_all(&dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mb}m"), "edgegw-e2e"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "cannot mount a tmpfs on {} (the disk phase needs root)",
            dir.display()
        );
        Tmpfs { dir }
    }

    fn free_bytes(&self) -> u64 {
        let out = Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(&self.dir)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .expect("df")
    }

    /// Writes a ballast file until `leave` bytes are free.
    fn fill_leaving(&self, leave: u64) -> PathBuf {
        use std::io::Write;
        let path = self.dir.join("ballast");
        let mut f = std::fs::File::create(&path).unwrap();
        let mut left = self.free_bytes().saturating_sub(leave);
        let chunk = vec![0u8; 256 * 1024];
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            if f.write_all(&chunk[..n]).is_err() {
                break;
            }
            left -= n as u64;
        }
        let _ = f.sync_all();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

/// A private Mosquitto with persistence and no queue limit, restartable on its port.
struct Broker {
    port: u16,
    dir: PathBuf,
    proc: Option<Proc>,
}

impl Broker {
    fn start(dir: &Path) -> Broker {
        let dir = dir.join("mosquitto");
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        std::fs::write(
            dir.join("mosquitto.conf"),
            format!(
                "user root\nlistener {port} 127.0.0.1\nallow_anonymous true\n\
                 persistence true\npersistence_location {}/\nautosave_interval 1\n\
                 max_queued_messages 0\nmax_inflight_messages 20\n\
                 log_dest file {}/mosquitto.log\n",
                dir.display(),
                dir.display()
            ),
        )
        .unwrap();
        let mut b = Broker {
            port,
            dir,
            proc: None,
        };
        b.run();
        b
    }

    fn run(&mut self) {
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(self.dir.join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start mosquitto: apt-get install mosquitto (scripts/test does)");
        self.proc = Some(Proc(child));
        let port = self.port;
        wait_until("mosquitto to listen", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
    }

    /// A clean restart: SIGTERM (Mosquitto saves its sessions and queues), then start.
    fn restart(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.terminate();
        }
        self.run();
    }
}

/// socat linking two ptys: the gateway's bus end and the simulator's slave end.
fn pty_pair(dir: &Path) -> (Proc, PathBuf, PathBuf) {
    let (a, b) = (dir.join("bus"), dir.join("slave"));
    let child = Command::new("socat")
        .arg(format!("pty,raw,echo=0,link={}", a.display()))
        .arg(format!("pty,raw,echo=0,link={}", b.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start socat: apt-get install socat (scripts/test does)");
    let guard = Proc(child);
    wait_until("socat's ptys", Duration::from_secs(5), || {
        (a.exists() && b.exists()).then_some(())
    });
    (guard, a, b)
}

/// `edgegw simulate modbus` serving `profile` steadily, with `data` for its waveform.
fn simulator(profile: &str, listen: &str, data: &[PathBuf], rtu: Option<&Path>) -> Proc {
    let mut cmd = Command::new(exe());
    cmd.args(["simulate", "modbus", "--steady", "--profile"])
        .arg(repo().join("hardware-profiles").join(profile));
    match rtu {
        Some(dev) => {
            cmd.arg("--rtu").arg(dev).args(["--rtu-baud", "115200"]);
        }
        None => {
            cmd.args(["--listen", listen]);
        }
    }
    for d in data {
        cmd.arg("--data").arg(d);
    }
    let mut child = cmd
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The first line says where it serves: it is ready.
    let mut out = child.stdout.take().unwrap();
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while out.read(&mut byte).unwrap_or(0) == 1 && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    assert!(
        !line.is_empty(),
        "the simulator for {profile} did not start"
    );
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    Proc(child)
}

/// The daemon; stderr of every start appended to one log file.
struct Gateway {
    config: PathBuf,
    log: PathBuf,
    status: u16,
    proc: Option<Proc>,
}

impl Gateway {
    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(exe())
            .args(["--log-format", "human", "run", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.proc = Some(Proc(child));
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.status)).is_err() {
            self.assert_running();
            assert!(
                Instant::now() < deadline,
                "no status listener; log:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill9(&mut self) {
        let mut p = self.proc.take().expect("running");
        p.0.kill().unwrap();
        p.0.wait().unwrap();
    }

    fn signal(&self, sig: &str) {
        self.proc.as_ref().expect("running").signal(sig);
    }

    fn stop(&mut self) {
        let mut p = self.proc.take().expect("running");
        let status = p.terminate();
        assert_eq!(
            status.code(),
            Some(0),
            "SIGTERM: {status:?}; log:\n{}",
            self.log_tail()
        );
    }

    fn assert_running(&mut self) {
        let p = self.proc.as_mut().expect("started");
        if let Some(s) = p.0.try_wait().unwrap() {
            panic!("edgegw exited ({s:?}); log:\n{}", self.log_tail());
        }
    }

    /// Peak resident memory of the running process (VmHWM), MB.
    fn peak_rss_mb(&self) -> f64 {
        let pid = self.proc.as_ref().expect("running").0.id();
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| (kb / 1024.0 * 10.0).round() / 10.0)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(80)..].join("\n")
    }

    fn get(&self, path: &str) -> (u16, String) {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.status)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        let (head, body) = resp.split_once("\r\n\r\n").expect("HTTP head");
        let code = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .expect("status code");
        (code, body.to_string())
    }

    /// `/metrics` as `name{labels}` -> value.
    fn metrics(&self) -> BTreeMap<String, f64> {
        let (code, body) = self.get("/metrics");
        assert_eq!(code, 200, "{body}");
        body.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                Some((k.to_string(), v.parse().ok()?))
            })
            .collect()
    }
}

fn metric(m: &BTreeMap<String, f64>, key: &str) -> f64 {
    m.get(key).copied().unwrap_or(0.0)
}

/// Sum of a family over all its label sets matching every `filter` substring.
fn metric_sum(m: &BTreeMap<String, f64>, name: &str, filter: &[&str]) -> f64 {
    m.iter()
        .filter(|(k, _)| k.starts_with(&format!("{name}{{")) || k.as_str() == name)
        .filter(|(k, _)| filter.iter().all(|f| k.contains(f)))
        .map(|(_, v)| v)
        .sum()
}

/// What the MQTT upstream carried: per record key, the record's kind, sensor, and
/// how many `sensor_readings` rows it maps to (readings 1, windows features + score).
#[derive(Default)]
struct Carried {
    records: HashMap<String, (String, String, usize)>,
    messages: u64,
}

/// Subscribes to the MQTT upstream's topics with a persistent session (QoS 1), so
/// that nothing is missed across the broker's restart.
fn watch_upstream(port: u16, topic: String, id: String) -> Arc<Mutex<Carried>> {
    let carried = Arc::new(Mutex::new(Carried::default()));
    let c = carried.clone();
    tokio::spawn(async move {
        let mut o = MqttOptions::new(id, "127.0.0.1", port);
        o.set_clean_session(false);
        o.set_keep_alive(Duration::from_secs(5));
        o.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut events) = AsyncClient::new(o, 1000);
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = client.subscribe(&topic, QoS::AtLeastOnce).await;
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let v: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
                    let kind = p.topic.rsplit('/').nth(1).unwrap_or("").to_string();
                    let key = v["record_key"]
                        .as_str()
                        .or_else(|| v["metadata"]["record_key"].as_str())
                        .unwrap_or_default()
                        .to_string();
                    let rows = match kind.as_str() {
                        "reading" => 1,
                        "window" => {
                            v["features"].as_object().map_or(0, |f| f.len())
                                + usize::from(!v["score"].is_null())
                        }
                        _ => 0,
                    };
                    let sensor = v["sensor_id"].as_str().unwrap_or_default().to_string();
                    let mut c = c.lock().unwrap();
                    c.messages += 1;
                    c.records.insert(key, (kind, sensor, rows));
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    });
    carried
}

/// Publishes `payloads` on `topic` at `rate` per second with QoS 1, each until its
/// PUBACK: a message not acknowledged (the broker restarting) is sent again, as a
/// base station would. Returns the number of re-sends.
async fn publish_qos1(
    port: u16,
    id: String,
    topic: String,
    payloads: Vec<Vec<u8>>,
    rate: f64,
    progress: Arc<AtomicU64>,
) -> u64 {
    let connect = || {
        let mut o = MqttOptions::new(id.clone(), "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(5));
        AsyncClient::new(o, 10)
    };
    let (mut client, mut events) = connect();
    let start = Instant::now();
    let mut resent = 0;
    for (i, payload) in payloads.into_iter().enumerate() {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        loop {
            let sent = async {
                client
                    .publish(&topic, QoS::AtLeastOnce, false, payload.clone())
                    .await
                    .ok()?;
                loop {
                    match events.poll().await {
                        Ok(Event::Incoming(Packet::PubAck(_))) => return Some(()),
                        Ok(_) => {}
                        Err(_) => return None,
                    }
                }
            };
            match tokio::time::timeout(Duration::from_secs(5), sent).await {
                Ok(Some(())) => break,
                _ => {
                    resent += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    (client, events) = connect();
                }
            }
        }
        progress.fetch_add(1, Ordering::Relaxed);
    }
    let _ = client.disconnect().await;
    resent
}

/// QoS 0 as fast as the broker takes it (the flood that fills the outbox).
async fn publish_fast(port: u16, id: String, topic: String, payloads: Vec<Vec<u8>>) {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(5));
    let (client, mut events) = AsyncClient::new(o, 1000);
    let driver = tokio::spawn(async move { while events.poll().await.is_ok() {} });
    for p in payloads {
        client
            .publish(&topic, QoS::AtMostOnce, false, p)
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), driver).await;
}

const FLOOD_PROFILE: &str = r#"vendor = "Test"
model = "Flood"
[channels.level]
sensor_type = "general"
unit = "1"
[mqtt]
topic = "unused/flood"
payload = "json"
timestamp = { path = "ts", format = "unix_us" }
[[mqtt.fields]]
channel = "level"
path = "v"
"#;

/// A VT-420 copy with an invalid register type on line 9.
const BROKEN_PROFILE: &str = r#"vendor = "Acme Sensortechnik"
model = "VT-420 (edited on site)"
[channels.velocity_rms]
sensor_type = "vibration"
unit = "mm/s"
[[modbus.registers]]
channel = "velocity_rms"
table = "input"
type = "f33"
address = 0
"#;

struct Ports {
    vib1: u16,
    vib2: u16,
    broker: u16,
    proxy: u16,
    status: u16,
    outbox_mb: u64,
}

fn device_vib(id: &str, port: u16) -> String {
    format!(
        "[[devices]]\nid = \"{id}\"\nprofile = \"acme-vt420\"\npoll_interval_ms = 100\n\
         [devices.modbus_tcp]\nhost = \"127.0.0.1\"\nport = {port}\n\
         [devices.machine]\nshaft_rpm = 1797\nbearing = \"6205\"\n\
         [devices.detection]\nlearn = \"3s\"\nlearn_samples = 30\nlearn_min_samples = 20\n\n"
    )
}

fn device_rtu(id: &str, unit: u8) -> String {
    format!(
        "[[devices]]\nid = \"{id}\"\nprofile = \"tempco-rtt20\"\npoll_interval_ms = 200\n\
         [devices.modbus_rtu]\nport = \"bus\"\nunit_id = {unit}\ntimeout_ms = 300\n\n"
    )
}

#[allow(clippy::too_many_arguments)]
fn config(
    gw: &str,
    state: &Path,
    profiles: &Path,
    bus: &Path,
    ports: &Ports,
    db: &str,
    redis_prefix: &str,
    topic_prefix: &str,
    extra_devices: &str,
) -> String {
    let knobs = "batch_max_records = 500\nbackoff_initial_ms = 50\nbackoff_max_ms = 500\n\
                 breaker_failures = 3\nbreaker_open_secs = 1\nrecovery_jitter_ms = 100\n\
                 timeout_ms = 3000\nidle_poll_ms = 100\n";
    format!(
        "[gateway]\nid = \"{gw}\"\nstate_dir = \"{state}\"\nprofile_dir = \"{profiles}\"\n\n\
         [serial_ports.bus]\npath = \"{bus}\"\nbaud = 115200\n\n\
         [mqtt_brokers.plant]\nhost = \"127.0.0.1\"\nport = {broker}\nclient_id = \"edgegw-{gw}\"\n\n\
         {vib1}{vib2}{motor7}\
         [[devices]]\nid = \"nab1\"\nprofile = \"nab-machine-temperature\"\n\
         [devices.mqtt]\nbroker = \"plant\"\ntopic = \"{topic_prefix}/nab\"\n\n\
         [[devices]]\nid = \"flood1\"\nprofile = \"flood\"\n\
         [devices.mqtt]\nbroker = \"plant\"\ntopic = \"{topic_prefix}/flood\"\n\n\
         {extra_devices}\
         [upstreams.timescale]\nurl = \"postgres://root@127.0.0.1:{proxy}/{db}\"\n\
         [upstreams.timescale.delivery]\n{knobs}\n\
         [upstreams.redis]\nurl = \"redis://127.0.0.1:6379/0\"\nkey_prefix = \"{redis_prefix}\"\n\
         [upstreams.redis.delivery]\n{knobs}drain_rate_per_s = 0.0\n\n\
         [upstreams.mqtt]\nbroker = \"plant\"\ntopic = \"{topic_prefix}/up/{{kind}}/{{sensor_id}}\"\n\
         [upstreams.mqtt.delivery]\n{knobs}drain_rate_per_s = 0.0\n\n\
         [outbox]\nmax_size_mb = {outbox_mb}\n\n\
         [http]\nlisten = \"127.0.0.1:{status}\"\n",
        state = state.display(),
        profiles = profiles.display(),
        bus = bus.display(),
        broker = ports.broker,
        vib1 = device_vib("vib1", ports.vib1),
        vib2 = device_vib("vib2", ports.vib2),
        motor7 = device_rtu("motor7", 1),
        proxy = ports.proxy,
        status = ports.status,
        outbox_mb = ports.outbox_mb,
    )
}

/// The outbox's highest record id so far and every upstream's cursor.
fn outbox_marks(path: &Path) -> (i64, BTreeMap<String, i64>) {
    let c = rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap();
    c.busy_timeout(Duration::from_secs(5)).unwrap();
    let top: i64 = c
        .query_row(
            "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'records'), 0)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let mut st = c.prepare("SELECT upstream, acked_id FROM cursors").unwrap();
    let cursors = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    (top, cursors)
}

/// Waits until every upstream has acknowledged every record up to the outbox's
/// current top; returns that top.
/// Waits until every upstream delivered up to the outbox's newest record. Fails when
/// the slowest cursor has not moved for `stall` (not after a fixed total: the long
/// form drains millions of records at the database's pace).
fn wait_delivered(gw: &mut Gateway, outbox: &Path, stall: Duration) -> i64 {
    let (top, _) = outbox_marks(outbox);
    let mut deadline = Instant::now() + stall;
    let mut slowest = i64::MIN;
    loop {
        gw.assert_running();
        let (_, cursors) = outbox_marks(outbox);
        if cursors.values().all(|&c| c >= top) {
            return top;
        }
        let now_slowest = cursors.values().copied().min().unwrap_or(i64::MIN);
        if now_slowest > slowest {
            slowest = now_slowest;
            deadline = Instant::now() + stall;
        }
        assert!(
            Instant::now() < deadline,
            "upstreams stalled before record {top}: cursors {cursors:?}; log:\n{}",
            gw.log_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The figures of the run, written to `EDGEGW_E2E_REPORT` as each one is known, so
/// that a long run that fails late still leaves what it measured.
struct Figures(serde_json::Map<String, serde_json::Value>);

impl Figures {
    fn insert(&mut self, key: String, value: serde_json::Value) {
        self.0.insert(key, value);
        if let Ok(path) = std::env::var("EDGEGW_E2E_REPORT") {
            let report = serde_json::Value::Object(self.0.clone());
            let _ = std::fs::write(path, format!("{report:#}\n"));
        }
    }
}

fn key_id(key: &str) -> i64 {
    key.rsplit(':')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(-1)
}

/// `record_key` -> rows in `sensor_readings`.
async fn pg_rows_by_key(pg: &tokio_postgres::Client) -> HashMap<String, usize> {
    pg.query(
        "SELECT sensor_metadata->>'record_key', count(*) FROM sensor_readings GROUP BY 1",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1) as usize))
    .collect()
}

/// Alerts in `anomaly_alerts`: (sensor id, episode start in µs).
async fn pg_alerts(pg: &tokio_postgres::Client) -> Vec<(String, i64)> {
    pg.query(
        "SELECT sensor_id, (extract(epoch FROM created_at) * 1000000)::int8 FROM anomaly_alerts",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

/// Alert entries of the Redis stream: (record key, sensor id, timestamp µs).
async fn redis_alerts(
    conn: &mut redis::aio::MultiplexedConnection,
    stream: &str,
) -> Vec<(String, String, i64)> {
    let entries: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query_async(conn)
        .await
        .unwrap();
    entries
        .iter()
        .map(|(_, e)| {
            let field = |k: &str| -> String { e.get(k).cloned().unwrap_or_default() };
            let ts = chrono_us(&field("timestamp"));
            (field("record_key"), field("sensor_id"), ts)
        })
        .collect()
}

/// RFC 3339 (UTC, `Z`) to µs since the epoch, via PostgreSQL-free parsing.
fn chrono_us(s: &str) -> i64 {
    let t = s.trim_end_matches('Z');
    let (date, time) = t.split_once('T').expect("RFC 3339");
    let d: Vec<i64> = date.split('-').map(|x| x.parse().unwrap()).collect();
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let h: Vec<i64> = hms.split(':').map(|x| x.parse().unwrap()).collect();
    let frac_us: i64 = format!("{frac:0<6}")[..6].parse().unwrap();
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, m) = if d[1] <= 2 {
        (d[0] - 1, d[1] + 9)
    } else {
        (d[0], d[1] - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d[2] - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    ((days * 86_400 + h[0] * 3600 + h[1] * 60 + h[2]) * 1_000_000) + frac_us
}

/// The balance of every upstream in one `/metrics` scrape; returns the appended count.
fn assert_metrics_balance(m: &BTreeMap<String, f64>, upstreams: &[&str]) -> u64 {
    let appended = metric(m, "edgegw_outbox_appended_total");
    assert!(appended > 0.0);
    for u in upstreams {
        let l = format!("{{upstream=\"{u}\"}}");
        let delivered = metric(m, &format!("edgegw_outbox_delivered_total{l}"));
        let pending = metric(m, &format!("edgegw_upstream_pending_records{l}"));
        let dead = metric(m, &format!("edgegw_outbox_dead_lettered_total{l}"));
        let evicted = metric(m, &format!("edgegw_outbox_evicted_unsent_total{l}"));
        assert_eq!(
            appended,
            delivered + pending + dead + evicted,
            "{u}: appended {appended} != delivered {delivered} + pending {pending} + \
             dead-lettered {dead} + evicted unsent {evicted}"
        );
    }
    appended as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_plant_s_worst_day_loses_nothing_and_duplicates_nothing() {
    let kills = env_num("EDGEGW_E2E_KILLS", 10.0) as usize;
    let rate = env_num("EDGEGW_E2E_RATE", 300.0);
    let tmpfs_mb = env_num("EDGEGW_E2E_TMPFS_MB", 48.0) as u64;
    let nab_values: Vec<f64> =
        std::fs::read_to_string(repo().join("testdata/nab/machine_temperature_slice.csv"))
            .unwrap()
            .lines()
            .skip(1)
            .map(|l| l.split(',').nth(1).unwrap().trim().parse().unwrap())
            .collect();
    let outage_secs = env_num("EDGEGW_E2E_OUTAGE_SECS", nab_values.len() as f64 / rate);
    let nab_total = ((outage_secs * rate).round() as usize).max(1);
    let t_begin = Instant::now();
    let mut figures = Figures(serde_json::Map::new());

    // ---- services and peers
    let dir = tempfile::tempdir().unwrap();
    let tmp = Tmpfs::mount(dir.path().join("state"), tmpfs_mb);
    let outbox = tmp.dir.join("outbox.db");
    let db = TestDb::create().await;
    let _cleanup = Cleanup {
        db: db.name.clone(),
        redis_prefix: String::new(),
    };
    let proxy = Proxy::start("127.0.0.1:5432").await;
    let mut broker = Broker::start(dir.path());
    let (_socat, bus, slave) = pty_pair(dir.path());
    let cwru = repo().join("testdata/cwru");
    let vib1_port = free_port();
    let vib2_port = free_port();
    let mut vib1_sim = Some(simulator(
        "acme-vt420.toml",
        &format!("127.0.0.1:{vib1_port}"),
        &[cwru.join("normal_12k.f32")],
        None,
    ));
    let _vib2_sim = simulator(
        "acme-vt420.toml",
        &format!("127.0.0.1:{vib2_port}"),
        &[cwru.join("normal_12k_holdout.f32")],
        None,
    );
    let _rtu_sim = simulator("tempco-rtt20.toml", "", &[], Some(&slave));

    let run_id = unique("wd");
    let gw_id = run_id.replace('_', "-");
    let topic_prefix = format!("edgegw-e2e/{run_id}");
    let redis_prefix = format!("edgegw-e2e:{run_id}:");
    let _cleanup = Cleanup {
        db: db.name.clone(),
        redis_prefix: redis_prefix.clone(),
    };
    let profiles = dir.path().join("profiles");
    std::fs::create_dir(&profiles).unwrap();
    for (from, to) in [
        ("hardware-profiles/acme-vt420.toml", "acme-vt420.toml"),
        ("hardware-profiles/tempco-rtt20.toml", "tempco-rtt20.toml"),
        (
            "config/replay/profiles/nab-machine-temperature.toml",
            "nab-machine-temperature.toml",
        ),
    ] {
        std::fs::copy(repo().join(from), profiles.join(to)).unwrap();
    }
    std::fs::write(profiles.join("flood.toml"), FLOOD_PROFILE).unwrap();
    let ports = Ports {
        vib1: vib1_port,
        vib2: vib2_port,
        broker: broker.port,
        proxy: proxy.port,
        status: free_port(),
        outbox_mb: env_num("EDGEGW_E2E_OUTBOX_MB", 512.0) as u64,
    };
    // `enabled = false`: every device off (the end of the day's reload).
    let write_config = |extra: &str, enabled: bool| {
        let path = dir.path().join("edgegw.toml");
        let mut text = config(
            &gw_id,
            &tmp.dir,
            &profiles,
            &bus,
            &ports,
            &db.name,
            &redis_prefix,
            &topic_prefix,
            extra,
        );
        if !enabled {
            text = text.replace("[[devices]]\n", "[[devices]]\nenabled = false\n");
        }
        std::fs::write(&path, text).unwrap();
        path
    };
    let config_path = write_config("", true);
    let init = Command::new(exe())
        .args(["upstream", "init-schema", "--config"])
        .arg(&config_path)
        .output()
        .unwrap();
    assert!(init.status.success(), "init-schema: {init:?}");

    let carried = watch_upstream(
        broker.port,
        format!("{topic_prefix}/up/#"),
        format!("{run_id}-watch"),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pg = db.client().await;
    let redis_client = redis::Client::open("redis://127.0.0.1:6379/0").unwrap();
    let mut redis = redis_client
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let stream = format!("{redis_prefix}alerts");

    let mut gw = Gateway {
        config: config_path.clone(),
        log: dir.path().join("edgegw.log"),
        status: ports.status,
        proc: None,
    };
    gw.start();

    // ---- SIGKILLs while the Modbus devices read and learn (a third of them come
    // later, while NAB publishes)
    let nab_kills = kills / 3;
    for _ in 0..kills - nab_kills {
        tokio::time::sleep(Duration::from_millis(fastrand::u64(300..1500))).await;
        gw.kill9();
        gw.start();
    }
    // The healthy machines have learned their baselines (the bearing channels).
    wait_until("vib1 and vib2 to learn", Duration::from_secs(60), || {
        let m = gw.metrics();
        ["vib1.accel", "vib2.accel"]
            .iter()
            .all(|s| {
                metric(
                    &m,
                    &format!("edgegw_baseline_progress{{sensor_id=\"{s}\"}}"),
                ) >= 1.0
            })
            .then_some(())
    });
    figures.insert("kills".into(), kills.into());

    // ---- the database cut while NAB publishes; the broker restarted in the middle
    proxy.cut();
    let spacing = (20 * 86_400_000_000 / nab_total as i64).min(NAB_SPACING_MAX_US);
    let t0 = now_us() - nab_total as i64 * spacing;
    let nab: Vec<(i64, f64)> = (0..nab_total)
        .map(|i| (t0 + i as i64 * spacing, nab_values[i % nab_values.len()]))
        .collect();
    let payloads = nab
        .iter()
        .map(|(ts, v)| format!("{{\"ts\":{ts},\"value\":{v}}}").into_bytes())
        .collect();
    let progress = Arc::new(AtomicU64::new(0));
    let publisher = tokio::spawn(publish_qos1(
        broker.port,
        format!("{run_id}-nab"),
        format!("{topic_prefix}/nab"),
        payloads,
        rate,
        progress.clone(),
    ));
    // SIGKILLs spread over the publishing, and the broker restarted half way.
    let mut chaos: Vec<(u64, bool)> = (1..=nab_kills as u64)
        .map(|i| (nab_total as u64 * i / (nab_kills as u64 + 1), true))
        .collect();
    chaos.push((nab_total as u64 / 2, false));
    chaos.sort();
    for (at, kill) in chaos {
        let p = progress.clone();
        wait_until(
            "NAB publishing to go on",
            Duration::from_secs(3600 * 4),
            || (p.load(Ordering::Relaxed) >= at).then_some(()),
        );
        if kill {
            gw.kill9();
            gw.start();
        } else {
            broker.restart();
        }
    }
    let resent = publisher.await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let m = gw.metrics();
    let pending_pg = metric(
        &m,
        "edgegw_upstream_pending_records{upstream=\"timescale\"}",
    );
    assert!(pending_pg > 0.0, "the cut database acknowledged something");
    let (top_at_restore, _) = outbox_marks(&outbox);
    figures.insert(
        "outbox_file_mb_at_restore".into(),
        (metric(&m, "edgegw_outbox_file_bytes") / 1e6).into(),
    );
    let restored = Instant::now();
    proxy.restore();
    let drain = wait_until(
        "the database to catch up",
        Duration::from_secs(3 * 3600),
        || {
            let (_, cursors) = outbox_marks(&outbox);
            (cursors.get("timescale").copied().unwrap_or(0) >= top_at_restore)
                .then(|| restored.elapsed())
        },
    );
    figures.insert(
        "database_catch_up_seconds".into(),
        drain.as_secs_f64().into(),
    );
    figures.insert(
        "database_catch_up_records_per_s".into(),
        (pending_pg / drain.as_secs_f64()).round().into(),
    );
    figures.insert("nab_readings".into(), nab_total.into());
    figures.insert("nab_resent_after_broker_restart".into(), resent.into());
    figures.insert(
        "pending_for_the_database_at_restore".into(),
        pending_pg.into(),
    );

    // ---- SIGHUP with a broken profile: its device is left out with a located error,
    // the gateway and every other device keep running
    std::fs::write(profiles.join("broken-vt.toml"), BROKEN_PROFILE).unwrap();
    write_config(
        "[[devices]]\nid = \"bad1\"\nprofile = \"broken-vt\"\n\
         [devices.modbus_tcp]\nhost = \"127.0.0.1\"\nport = 1\n\n",
        true,
    );
    let before = metric_sum(&gw.metrics(), "edgegw_device_readings_total", &["motor7"]);
    gw.signal("HUP");
    // The profile's error, located, in the log; the valid devices keep running.
    wait_until(
        "the broken profile in the log",
        Duration::from_secs(20),
        || {
            let log = gw.log();
            (log.contains("broken-vt.toml:9:8") && log.contains("f33")).then_some(())
        },
    );
    wait_until("motor7 to keep reading", Duration::from_secs(20), || {
        (metric_sum(&gw.metrics(), "edgegw_device_readings_total", &["motor7"]) > before)
            .then_some(())
    });
    // ---- SIGHUP with a new device
    write_config(&device_rtu("motor8", 2), true);
    gw.signal("HUP");
    wait_until("motor8 readings", Duration::from_secs(30), || {
        (metric_sum(&gw.metrics(), "edgegw_device_readings_total", &["motor8"]) > 0.0).then_some(())
    });

    // ---- checkpoint: every NAB reading in the database exactly once, every record
    // the gateway appended so far in the database with all its rows
    let nab_sum: f64 = nab.iter().map(|(_, v)| v).sum();
    let (count, sum) = wait_until(
        "every NAB reading upstream",
        Duration::from_secs(120),
        || {
            let row = futures_block(pg.query_one(
            "SELECT count(*), coalesce(sum(value), 0) FROM sensor_readings WHERE sensor_id = 'nab1.temp'",
            &[],
        ))
        .unwrap();
            let (n, s): (i64, f64) = (row.get(0), row.get(1));
            (n as usize >= nab_total).then_some((n, s))
        },
    );
    assert_eq!(count as usize, nab_total, "NAB readings in sensor_readings");
    assert!(
        (sum - nab_sum).abs() <= 1e-9 * nab_sum.abs(),
        "NAB checksum: {sum} in the database, {nab_sum} published"
    );
    let top = wait_delivered(&mut gw, &outbox, Duration::from_secs(120));
    let m = gw.metrics();
    assert_eq!(
        metric_sum(&m, "edgegw_outbox_evicted_unsent_total", &[]),
        0.0,
        "nothing may be evicted before the disk phase"
    );
    assert_eq!(
        metric_sum(&m, "edgegw_outbox_dead_lettered_total", &[]),
        0.0
    );
    let pg_keys = pg_rows_by_key(&pg).await;
    // The MQTT upstream acknowledged everything up to `top`: its copies are there.
    let expected: HashMap<String, (String, String, usize)> = carried
        .lock()
        .unwrap()
        .records
        .iter()
        .filter(|(k, (kind, _, _))| key_id(k) <= top && (kind == "reading" || kind == "window"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut missing = Vec::new();
    let mut wrong_rows = Vec::new();
    for (key, (kind, sensor, rows)) in &expected {
        match pg_keys.get(key) {
            None => missing.push(format!("{key} ({kind} {sensor})")),
            Some(n) if n != rows => {
                wrong_rows.push(format!("{key} ({kind} {sensor}): {n} of {rows}"))
            }
            Some(_) => {}
        }
    }
    let extra: Vec<&String> = pg_keys
        .keys()
        .filter(|k| key_id(k) <= top && !expected.contains_key(*k))
        .collect();
    assert!(
        missing.is_empty() && wrong_rows.is_empty() && extra.is_empty(),
        "records up to {top}: {} missing in the database (e.g. {:?}), {} with wrong rows \
         (e.g. {:?}), {} in the database the gateway never sent elsewhere (e.g. {:?})",
        missing.len(),
        &missing[..missing.len().min(5)],
        wrong_rows.len(),
        &wrong_rows[..wrong_rows.len().min(5)],
        extra.len(),
        &extra[..extra.len().min(5)],
    );
    let sensors: HashSet<&str> = expected.values().map(|(_, s, _)| s.as_str()).collect();
    for s in [
        "vib1.velocity_rms",
        "vib2.accel",
        "motor7.winding_temp",
        "motor8.winding_temp",
        "nab1.temp",
    ] {
        assert!(
            sensors.contains(s),
            "no records of {s} up to {top}: {sensors:?}"
        );
    }
    figures.insert(
        "records_checked_at_checkpoint".into(),
        expected.len().into(),
    );
    figures.insert(
        "rows_checked_at_checkpoint".into(),
        pg_keys.values().sum::<usize>().into(),
    );
    // NAB summaries: every closed hour equals the readings' aggregates.
    let summaries = pg
        .query(
            "SELECT (extract(epoch FROM bucket))::int8, count, min, max, avg FROM sensor_readings_hourly \
             WHERE sensor_id = 'nab1.temp' AND interval_secs = 3600 ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    let aggregates = pg
        .query(
            "SELECT (floor(extract(epoch FROM timestamp) / 3600) * 3600)::int8 AS b, count(*), \
             min(value), max(value), avg(value) FROM sensor_readings WHERE sensor_id = 'nab1.temp' \
             GROUP BY b ORDER BY b",
            &[],
        )
        .await
        .unwrap();
    assert!(aggregates.len() >= 2, "NAB spans at least two hours");
    let closed = &aggregates[..aggregates.len() - 1];
    let by_bucket: HashMap<i64, &tokio_postgres::Row> =
        summaries.iter().map(|r| (r.get::<_, i64>(0), r)).collect();
    for a in closed {
        let b: i64 = a.get(0);
        let s = by_bucket
            .get(&b)
            .unwrap_or_else(|| panic!("no summary for the closed hour {b}"));
        let (sc, sa): (i64, i64) = (s.get(1), a.get(1));
        assert_eq!(sc, sa, "count of hour {b}");
        for (i, what) in [(2, "min"), (3, "max"), (4, "avg")] {
            let (x, y): (f64, f64) = (s.get(i), a.get(i));
            assert!(
                (x - y).abs() <= 1e-9 * y.abs().max(1.0),
                "{what} of hour {b}: {x} vs {y}"
            );
        }
    }
    figures.insert("nab_hours_compared".into(), closed.len().into());

    // ---- the disk: the database cut again, the filesystem filled, a flood of
    // readings; the bearing fault starts while the outbox is at its bound
    proxy.cut();
    let reserve = (tmpfs_mb * 1024 * 1024 / 16).clamp(512 * 1024, 6 * 1024 * 1024);
    let ballast = tmp.fill_leaving(reserve + 1024 * 1024);
    let mut flood_ts = now_us() - 3_600_000_000;
    let mut flood_sent = 0u64;
    let mut flood = |n: usize| {
        let payloads: Vec<Vec<u8>> = (0..n)
            .map(|i| {
                flood_ts += 1000;
                format!("{{\"ts\":{flood_ts},\"v\":{i}}}").into_bytes()
            })
            .collect();
        flood_sent += n as u64;
        publish_fast(
            broker.port,
            format!("{run_id}-flood"),
            format!("{topic_prefix}/flood"),
            payloads,
        )
    };
    // Until the outbox is at its bound. Free pages inside the file count as room:
    // after the long form's hour of outage that is hundreds of MB, which takes the
    // flood far longer than any fixed limit. So the limit is progress: fail only
    // when the records stop growing for a minute without an eviction.
    let mut evicted = 0.0;
    let (mut most, mut progress_at) = (0.0, Instant::now());
    let flood_started = Instant::now();
    // What the last scrapes said, for the message if the outbox stops growing (runs
    // 5 and 6 of the long form stopped at ~4.5 million records; see
    // docs/PERFORMANCE.md).
    let mut seen: Vec<String> = Vec::new();
    while evicted == 0.0 {
        flood(10_000).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let m = gw.metrics();
        evicted = metric_sum(&m, "edgegw_outbox_evicted_total", &[]);
        let records = metric_sum(&m, "edgegw_outbox_records", &[]);
        if records > most {
            (most, progress_at) = (records, Instant::now());
        }
        seen.push(format!(
            "t={:.0}s records={records} used={} limit={} file={} refusing={} appended={} \
             nab_readings={}",
            flood_started.elapsed().as_secs_f64(),
            metric(&m, "edgegw_outbox_used_bytes"),
            metric(&m, "edgegw_outbox_limit_bytes"),
            metric(&m, "edgegw_outbox_file_bytes"),
            metric(&m, "edgegw_outbox_refusing"),
            metric(&m, "edgegw_outbox_appended_total"),
            metric_sum(&m, "edgegw_device_readings_total", &["nab1"]),
        ));
        if seen.len() > 40 {
            seen.remove(0);
        }
        if evicted == 0.0 && progress_at.elapsed() >= Duration::from_secs(60) {
            panic!(
                "the outbox stopped growing at {most} records without reaching its bound\n\
                 last scrapes:\n{}\nlog:\n{}",
                seen.join("\n"),
                gw.log_tail()
            );
        }
    }
    figures.insert(
        "flood_seconds_to_the_bound".into(),
        flood_started.elapsed().as_secs().into(),
    );
    // The fault: vib1's transmitter now sees an inner-race defect.
    drop(vib1_sim.take());
    let t_fault = now_us();
    vib1_sim = Some(simulator(
        "acme-vt420.toml",
        &format!("127.0.0.1:{vib1_port}"),
        &[cwru.join("IR007_12k.f32")],
        None,
    ));
    let fault_alert = wait_until(
        "an alert for vib1 in Redis",
        Duration::from_secs(60),
        || {
            let alerts = futures_block(redis_alerts(&mut redis, &stream));
            alerts.into_iter().find(|(_, s, _)| s.starts_with("vib1."))
        },
    );
    flood(5000).await;
    let m = gw.metrics();
    let (code, _) = gw.get("/healthz");
    assert_eq!(code, 200, "healthz while the outbox is at its bound");
    assert_eq!(
        metric_sum(&m, "edgegw_outbox_evicted_total", &["kind=\"alert\""]),
        0.0,
        "an alert was evicted"
    );
    assert!(metric_sum(&m, "edgegw_outbox_evicted_total", &[]) > 0.0);
    figures.insert("flood_readings".into(), flood_sent.into());
    figures.insert(
        "evicted_at_the_bound".into(),
        metric_sum(&m, "edgegw_outbox_evicted_total", &[]).into(),
    );
    std::fs::remove_file(&ballast).unwrap();
    proxy.restore();

    // ---- the end of the day: sources off by a reload (every device disabled), the
    // outbox drained, then the balance, the alerts and a clean stop
    write_config(&device_rtu("motor8", 2), false);
    gw.signal("HUP");
    tokio::time::sleep(Duration::from_secs(2)).await;
    wait_delivered(&mut gw, &outbox, Duration::from_secs(180));
    let m = gw.metrics();
    let appended = assert_metrics_balance(&m, &["timescale", "redis", "mqtt"]);
    figures.insert("appended".into(), appended.into());
    for u in ["timescale", "redis", "mqtt"] {
        figures.insert(
            format!("evicted_unsent_{u}"),
            metric(
                &m,
                &format!("edgegw_outbox_evicted_unsent_total{{upstream=\"{u}\"}}"),
            )
            .into(),
        );
    }

    let alerts = pg_alerts(&pg).await;
    let vib1: Vec<&(String, i64)> = alerts
        .iter()
        .filter(|(s, _)| s.starts_with("vib1."))
        .collect();
    assert!(
        !vib1.is_empty(),
        "no alert for the fault in anomaly_alerts: {alerts:?}"
    );
    for (s, ts) in &alerts {
        assert!(
            !s.starts_with("vib2.") && !s.starts_with("motor"),
            "an alert for a healthy machine: {s} at {ts}"
        );
        if s.starts_with("vib1.") {
            assert!(
                *ts >= t_fault,
                "{s}: alert at {ts}, before the fault at {t_fault}"
            );
        }
    }
    let stream_alerts = redis_alerts(&mut redis, &stream).await;
    let keys: HashSet<&str> = stream_alerts.iter().map(|(k, _, _)| k.as_str()).collect();
    assert_eq!(
        keys.len(),
        stream_alerts.len(),
        "a duplicate in the Redis stream"
    );
    for (_, s, ts) in &stream_alerts {
        assert!(
            !s.starts_with("vib2.") && !s.starts_with("motor"),
            "{s} alerted"
        );
        if s.starts_with("vib1.") {
            assert!(*ts >= t_fault, "{s}: Redis alert at {ts}, before the fault");
        }
    }
    figures.insert("alerts_in_database".into(), alerts.len().into());
    figures.insert("alerts_in_redis_stream".into(), stream_alerts.len().into());
    figures.insert(
        "first_fault_alert_after_fault_ms".into(),
        ((fault_alert.2 - t_fault) / 1000).into(),
    );
    figures.insert("mqtt_upstream_duplicates".into(), {
        let c = carried.lock().unwrap();
        (c.messages - c.records.len() as u64).into()
    });

    figures.insert("gateway_peak_rss_mb".into(), gw.peak_rss_mb().into());
    gw.stop();
    // The file agrees after the stop (the stop may add the open summary buckets).
    let stats = edgegw::outbox::Outbox::open_read_only(&outbox)
        .unwrap()
        .stats()
        .unwrap();
    for u in &stats.upstreams {
        assert_eq!(
            stats.appended,
            u.delivered + u.pending + u.dead_lettered + u.unsent_evicted,
            "{}: {u:?}",
            u.name
        );
    }
    figures.insert("seconds".into(), t_begin.elapsed().as_secs().into());
    let report = serde_json::Value::Object(figures.0);
    println!("worst day: {report:#}");
    drop(vib1_sim);
    drop(pg);
}

/// Drops the test's database and Redis keys, also when the test fails.
struct Cleanup {
    db: String,
    redis_prefix: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let (db, prefix) = (self.db.clone(), self.redis_prefix.clone());
        // A runtime of its own on a thread of its own: this may run while the
        // test's runtime unwinds.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if !prefix.is_empty() {
                    if let Ok(mut redis) = redis::Client::open("redis://127.0.0.1:6379/0")
                        .unwrap()
                        .get_multiplexed_async_connection()
                        .await
                    {
                        let keys: Vec<String> = redis::cmd("KEYS")
                            .arg(format!("{prefix}*"))
                            .query_async(&mut redis)
                            .await
                            .unwrap_or_default();
                        if !keys.is_empty() {
                            let _: Result<(), _> =
                                redis::cmd("DEL").arg(&keys).query_async(&mut redis).await;
                        }
                    }
                }
                if let Ok((admin, conn)) =
                    tokio_postgres::connect(upstream_common::PG_ADMIN, tokio_postgres::NoTls).await
                {
                    tokio::spawn(conn);
                    let _ = admin
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}

/// Runs a future to completion from inside `wait_until` (a blocking poll loop on a
/// multi-thread runtime).
fn futures_block<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}
