//! The real binary under operations: systemd notify (READY, WATCHDOG, RELOADING,
//! STOPPING) to a notify socket written here, SIGHUP reloads (a device added; an
//! invalid config refused while the old devices keep polling; nothing in the outbox
//! lost), `/metrics` parsed strictly as Prometheus text with counters that move,
//! `/healthz`, `/readyz` and the bearer token.
//!
//! Peers: `edgegw simulate modbus` processes on free ports; every process is killed
//! on drop.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn exe() -> &'static str {
    env!("CARGO_BIN_EXE_edgegw")
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
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

/// `edgegw simulate modbus` serving the VT-420 profile.
fn simulator() -> (Proc, u16) {
    let port = free_port();
    let p = Proc(
        Command::new(exe())
            .args([
                "simulate",
                "modbus",
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .arg("--profile")
            .arg(repo().join("hardware-profiles/acme-vt420.toml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until("the simulator", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    (p, port)
}

fn device(id: &str, port: u16) -> String {
    format!(
        "[[devices]]\nid = \"{id}\"\nprofile = \"acme-vt420\"\npoll_interval_ms = 100\n\
         [devices.modbus_tcp]\nhost = \"127.0.0.1\"\nport = {port}\n\n"
    )
}

fn config(dir: &Path, http: &str, devices: &str) -> String {
    format!(
        "[gateway]\nid = \"gw-opstest\"\nstate_dir = \"{}\"\nprofile_dir = \"{}\"\n\n{http}\n\n{devices}",
        dir.display(),
        repo().join("hardware-profiles").display()
    )
}

/// The daemon with its stderr collected in the background.
struct Gateway {
    proc: Proc,
    log: Arc<Mutex<String>>,
}

impl Gateway {
    fn start(config: &Path, env: &[(&str, &str)]) -> Gateway {
        let mut cmd = Command::new(exe());
        cmd.args(["--log-format", "human", "run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
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
        Gateway {
            proc: Proc(child),
            log,
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.proc.0.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Waits until the status listener accepts connections; fails with the log when
    /// the daemon exits or does not listen.
    fn wait_http(&mut self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            self.assert_running();
            assert!(
                Instant::now() < deadline,
                "no listener on {port}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn assert_running(&mut self) {
        assert!(
            self.proc.0.try_wait().unwrap().is_none(),
            "edgegw exited; log:\n{}",
            self.log()
        );
    }

    fn stop(mut self) -> String {
        self.signal("TERM");
        let status = wait_until("edgegw to exit", Duration::from_secs(10), || {
            self.proc.0.try_wait().unwrap()
        });
        // Let the reader thread take the last lines.
        std::thread::sleep(Duration::from_millis(100));
        let log = self.log();
        assert_eq!(status.code(), Some(0), "exit {status:?}; log:\n{log}");
        log
    }
}

/// One HTTP/1.1 GET; returns (status, body).
fn get(port: u16, path: &str, token: Option<&str>) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp
        .split_once("\r\n\r\n")
        .expect("no blank line after head");
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("no status code");
    let len: Option<usize> = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|v| v.trim().parse().ok());
    match len {
        Some(len) => assert_eq!(len, body.len(), "Content-Length does not match the body"),
        // A scrape is streamed: its body ends where the connection closes.
        None => assert!(
            code == 200 && path.starts_with("/metrics") && body.ends_with('\n'),
            "no Content-Length for {path} ({code})"
        ),
    }
    (code, body.to_string())
}

/// A strict parser of the Prometheus text format (0.0.4): every sample belongs to the
/// family declared by the `# TYPE` before it, no family appears twice, label values
/// are quoted with valid escapes, values are floats, histogram buckets are cumulative
/// and end in `+Inf` equal to `_count`. Returns `series text -> value`.
fn parse_prometheus(text: &str) -> BTreeMap<String, f64> {
    fn valid_name(n: &str) -> bool {
        let mut c = n.chars();
        matches!(c.next(), Some(x) if x.is_ascii_alphabetic() || x == '_' || x == ':')
            && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
    }
    let mut out = BTreeMap::new();
    let mut families: BTreeMap<String, String> = BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    // Histogram checks: series (labels without le) -> (last bucket value, +Inf value).
    let mut buckets: BTreeMap<String, (f64, Option<f64>)> = BTreeMap::new();
    let mut counts: BTreeMap<String, f64> = BTreeMap::new();
    assert!(text.ends_with('\n'), "exposition must end with a newline");
    for (i, line) in text.lines().enumerate() {
        let at = format!("line {}: {line:?}", i + 1);
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap();
            assert!(valid_name(name), "{at}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect(&at);
            assert!(valid_name(name), "{at}");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{at}"
            );
            assert!(
                families.insert(name.into(), kind.into()).is_none(),
                "family declared twice: {at}"
            );
            current = Some((name.into(), kind.into()));
            continue;
        }
        assert!(!line.starts_with('#') || line.starts_with("# "), "{at}");
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect(&at);
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse().unwrap_or_else(|_| panic!("bad value: {at}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.strip_suffix('}').expect(&at)),
            None => (series, ""),
        };
        assert!(valid_name(name), "{at}");
        // Labels: name="value" separated by commas, escapes \\ \" \n only.
        let mut pairs = Vec::new();
        let mut chars = labels.chars().peekable();
        while chars.peek().is_some() {
            let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
            assert!(valid_name(&key), "bad label name {key:?}: {at}");
            assert_eq!(chars.next(), Some('"'), "{at}");
            let mut v = String::new();
            loop {
                match chars.next().expect(&at) {
                    '\\' => match chars.next().expect(&at) {
                        '\\' => v.push('\\'),
                        '"' => v.push('"'),
                        'n' => v.push('\n'),
                        c => panic!("bad escape \\{c}: {at}"),
                    },
                    '"' => break,
                    c => v.push(c),
                }
            }
            pairs.push((key, v));
            match chars.next() {
                Some(',') | None => {}
                Some(c) => panic!("unexpected {c:?} after a label: {at}"),
            }
        }
        let (family, kind) = current.clone().expect("sample before any # TYPE");
        if kind == "histogram" {
            let base_labels: Vec<String> = pairs
                .iter()
                .filter(|(k, _)| k != "le")
                .map(|(k, v)| format!("{k}={v:?}"))
                .collect();
            let key = format!("{family}{{{}}}", base_labels.join(","));
            if name == format!("{family}_bucket") {
                let le = pairs
                    .iter()
                    .find(|(k, _)| k == "le")
                    .expect("bucket without le");
                let e = buckets.entry(key).or_insert((0.0, None));
                assert!(value >= e.0, "buckets not cumulative: {at}");
                e.0 = value;
                if le.1 == "+Inf" {
                    e.1 = Some(value);
                }
            } else if name == format!("{family}_count") {
                counts.insert(key, value);
            } else {
                assert_eq!(
                    name,
                    format!("{family}_sum"),
                    "sample outside its family: {at}"
                );
            }
        } else {
            assert_eq!(name, family, "sample outside its family: {at}");
        }
        assert!(
            out.insert(series.to_string(), value).is_none(),
            "duplicate series: {at}"
        );
    }
    for (key, (_, inf)) in &buckets {
        assert_eq!(
            Some(*inf.as_ref().expect("histogram without +Inf bucket")),
            counts.get(key).copied(),
            "{key}: +Inf bucket differs from _count"
        );
    }
    out
}

fn metric(m: &BTreeMap<String, f64>, series: &str) -> f64 {
    *m.get(series).unwrap_or_else(|| {
        panic!(
            "no series {series}; have: {:?}",
            m.keys().collect::<Vec<_>>()
        )
    })
}

fn scrape(port: u16) -> BTreeMap<String, f64> {
    let (code, body) = get(port, "/metrics", None);
    assert_eq!(code, 200, "{body}");
    parse_prometheus(&body)
}

/// Records in the outbox: (count, highest id). Equal when nothing was ever deleted.
fn outbox_ids(dir: &Path) -> (i64, i64) {
    let c = rusqlite::Connection::open_with_flags(
        dir.join("outbox.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    c.query_row(
        "SELECT count(*), coalesce(max(id), 0) FROM records",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .unwrap()
}

#[test]
fn notify_socket_gets_ready_watchdog_reloading_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let (_sim, sim_port) = simulator();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let cfg = dir.path().join("edgegw.toml");
    std::fs::write(
        &cfg,
        config(
            dir.path(),
            "[http]\nenabled = false",
            &device("pump1", sim_port),
        ),
    )
    .unwrap();
    let mut gw = Gateway::start(
        &cfg,
        &[
            ("NOTIFY_SOCKET", sock_path.to_str().unwrap()),
            // 1 s: pings every 0.5 s, probes every 0.25 s.
            ("WATCHDOG_USEC", "1000000"),
        ],
    );
    let mut got: Vec<String> = Vec::new();
    let recv_until = |got: &mut Vec<String>, what: &str, pred: &dyn Fn(&[String]) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut buf = [0u8; 4096];
        while !pred(got) {
            assert!(Instant::now() < deadline, "no {what}; got {got:?}");
            if let Ok(n) = sock.recv(&mut buf) {
                got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
    };
    recv_until(&mut got, "READY=1", &|g| {
        g.iter().any(|m| m.starts_with("READY=1"))
    });
    let ready = got.iter().find(|m| m.starts_with("READY=1")).unwrap();
    assert!(ready.contains("\nSTATUS=Reading 1 devices"), "{ready}");
    recv_until(&mut got, "three WATCHDOG=1", &|g| {
        g.iter().filter(|m| *m == "WATCHDOG=1").count() >= 3
    });
    gw.assert_running();

    // A reload is announced and followed by READY=1 again.
    let readies = got.iter().filter(|m| m.starts_with("READY=1")).count();
    gw.signal("HUP");
    recv_until(&mut got, "RELOADING=1 then READY=1", &|g| {
        g.iter().any(|m| m.starts_with("RELOADING=1"))
            && g.iter().filter(|m| m.starts_with("READY=1")).count() > readies
    });

    // Pings keep coming after the reload.
    let pings = got.iter().filter(|m| *m == "WATCHDOG=1").count();
    recv_until(&mut got, "more pings", &|g| {
        g.iter().filter(|m| *m == "WATCHDOG=1").count() >= pings + 2
    });
    gw.signal("TERM");
    recv_until(&mut got, "STOPPING=1", &|g| {
        g.iter().any(|m| m.starts_with("STOPPING=1"))
    });
    let log = gw.stop();
    assert!(log.contains("Pipeline drained into the outbox"), "{log}");
}

#[test]
fn sighup_adds_a_device_refuses_an_invalid_config_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_sim1, port1) = simulator();
    let (_sim2, port2) = simulator();
    let http_port = free_port();
    let http = format!("[http]\nlisten = \"127.0.0.1:{http_port}\"");
    let cfg = dir.path().join("edgegw.toml");
    std::fs::write(&cfg, config(dir.path(), &http, &device("pump1", port1))).unwrap();
    let mut gw = Gateway::start(&cfg, &[]);
    gw.wait_http(http_port);

    // pump1 polls; the counters move between two scrapes.
    let first = wait_until("pump1 polls", Duration::from_secs(20), || {
        let m = get(http_port, "/metrics", None);
        (m.0 == 200).then(|| parse_prometheus(&m.1)).filter(|m| {
            m.get("edgegw_device_polls_total{device=\"pump1\"}")
                .is_some_and(|v| *v > 0.0)
        })
    });
    assert!(!first.contains_key("edgegw_device_polls_total{device=\"pump2\"}"));
    let later = wait_until("counters to move", Duration::from_secs(20), || {
        let m = scrape(http_port);
        (metric(&m, "edgegw_pipeline_readings_total")
            > metric(&first, "edgegw_pipeline_readings_total")
            && metric(&m, "edgegw_device_polls_total{device=\"pump1\"}")
                > metric(&first, "edgegw_device_polls_total{device=\"pump1\"}"))
        .then_some(m)
    });
    assert!(
        metric(
            &later,
            "edgegw_device_poll_duration_seconds_count{device=\"pump1\"}"
        ) > 0.0
    );
    assert!(metric(&later, "process_resident_memory_bytes") > 1e6);
    assert_eq!(metric(&later, "edgegw_ready"), 1.0);
    assert!(later
        .keys()
        .any(|k| k.starts_with("edgegw_model_info{name=\"vibration-relative\"")));
    assert_eq!(
        metric(&later, "edgegw_source_up{source=\"modbus_tcp:pump1\"}"),
        1.0
    );
    assert_eq!(metric(&later, "edgegw_reloads_total{result=\"ok\"}"), 0.0);
    let (count_before, max_before) = outbox_ids(dir.path());
    assert!(count_before > 0);

    // Valid change: pump2 added. Its readings start arriving; pump1 is not restarted.
    std::fs::write(
        &cfg,
        config(
            dir.path(),
            &http,
            &(device("pump1", port1) + &device("pump2", port2)),
        ),
    )
    .unwrap();
    gw.signal("HUP");
    // The reload counts as done once it has started every new source: pump2 may
    // read before the counter moves, so wait for both.
    let after_add = wait_until("pump2 readings", Duration::from_secs(20), || {
        let m = scrape(http_port);
        (m.get("edgegw_device_readings_total{device=\"pump2\"}")
            .is_some_and(|v| *v > 0.0)
            && m.get("edgegw_reloads_total{result=\"ok\"}")
                .is_some_and(|v| *v > 0.0))
        .then_some(m)
    });
    assert_eq!(
        metric(&after_add, "edgegw_reloads_total{result=\"ok\"}"),
        1.0
    );
    assert_eq!(metric(&after_add, "edgegw_reload_last_success"), 1.0);
    // pump1 kept its counters (not restarted, nothing reset).
    assert!(
        metric(&after_add, "edgegw_device_polls_total{device=\"pump1\"}")
            >= metric(&later, "edgegw_device_polls_total{device=\"pump1\"}")
    );
    let log = gw.log();
    assert!(
        !log.contains("stopped=modbus_tcp:pump1"),
        "pump1 must not be stopped by adding pump2; log:\n{log}"
    );
    assert!(log.contains("started=modbus_tcp:pump2"), "{log}");

    // Invalid config: refused with every problem logged, old devices keep polling.
    std::fs::write(
        &cfg,
        config(dir.path(), &http, &device("pump1", port1)) + "[bogus]\nx = 1\n" +
            "[[devices]]\nid = \"pump3\"\nprofile = \"no-such-profile\"\n[devices.modbus_tcp]\nhost = \"h\"\n",
    )
    .unwrap();
    gw.signal("HUP");
    let refused = wait_until("the refusal", Duration::from_secs(20), || {
        let m = scrape(http_port);
        (metric(&m, "edgegw_reloads_total{result=\"invalid\"}") == 1.0).then_some(m)
    });
    assert_eq!(metric(&refused, "edgegw_reload_last_success"), 0.0);
    gw.assert_running();
    let log = gw.log();
    assert!(log.contains("Reload refused"), "{log}");
    assert!(
        log.contains("bogus"),
        "the unknown section is named; log:\n{log}"
    );
    wait_until(
        "both devices to keep polling",
        Duration::from_secs(20),
        || {
            let m = scrape(http_port);
            (metric(&m, "edgegw_device_polls_total{device=\"pump1\"}")
                > metric(&refused, "edgegw_device_polls_total{device=\"pump1\"}")
                && metric(&m, "edgegw_device_polls_total{device=\"pump2\"}")
                    > metric(&refused, "edgegw_device_polls_total{device=\"pump2\"}"))
            .then_some(())
        },
    );
    let final_metrics = scrape(http_port);

    let log = gw.stop();
    // Nothing lost: every record ever appended is still there (no gaps in ids), the
    // records from before the reloads among them, and every reading the processor
    // made is in the outbox.
    let (count, max_id) = outbox_ids(dir.path());
    assert_eq!(count, max_id, "records were deleted or lost");
    assert!(max_id > max_before && count > count_before);
    let readings_in_outbox: i64 = rusqlite::Connection::open(dir.path().join("outbox.db"))
        .unwrap()
        .query_row("SELECT count(*) FROM records WHERE kind = 1", [], |r| {
            r.get(0)
        })
        .unwrap();
    let stopped = log
        .lines()
        .find(|l| l.contains("Stopped"))
        .unwrap_or_else(|| panic!("no Stopped line; log:\n{log}"));
    let processed: i64 = stopped
        .split_whitespace()
        .find_map(|w| w.strip_prefix("readings="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no readings= in {stopped}"));
    assert!(processed >= metric(&final_metrics, "edgegw_pipeline_readings_total") as i64);
    assert_eq!(readings_in_outbox, processed, "{stopped}");
}

#[test]
fn health_ready_and_bearer_token() {
    let dir = tempfile::tempdir().unwrap();
    let (_sim, sim_port) = simulator();
    let http_port = free_port();
    let http = format!(
        "[http]\nlisten = \"127.0.0.1:{http_port}\"\ntoken = {{ env = \"OPS_TEST_STATUS_TOKEN\" }}"
    );
    let cfg = dir.path().join("edgegw.toml");
    std::fs::write(&cfg, config(dir.path(), &http, &device("pump1", sim_port))).unwrap();
    let mut gw = Gateway::start(&cfg, &[("OPS_TEST_STATUS_TOKEN", "s3cret-token")]);
    let token = Some("s3cret-token");
    gw.wait_http(http_port);
    let (code, body) = get(http_port, "/readyz", token);
    assert_eq!((code, body.as_str()), (200, "ready\n"));
    assert_eq!(get(http_port, "/healthz", token), (200, "ok\n".into()));
    for path in ["/metrics", "/healthz", "/readyz"] {
        assert_eq!(get(http_port, path, None).0, 401, "{path} without a token");
        assert_eq!(
            get(http_port, path, Some("s3cret-tokeN")).0,
            401,
            "{path} wrong token"
        );
    }
    let (code, body) = get(http_port, "/metrics", token);
    assert_eq!(code, 200);
    let m = parse_prometheus(&body);
    assert!(
        m.contains_key("edgegw_outbox_records{kind=\"reading\"}"),
        "{body}"
    );
    assert!(m.contains_key("edgegw_outbox_used_bytes"));
    assert_eq!(get(http_port, "/nope", token).0, 404);
    let log = gw.stop();
    assert!(
        !log.contains("s3cret-token"),
        "the token must never be logged"
    );
}

#[test]
fn the_strict_parser_rejects_malformed_text() {
    let bad = [
        "x 1\n",                                     // no TYPE
        "# TYPE x counter\nx{a=\"1} 2\n",            // unterminated label
        "# TYPE x counter\ny 1\n",                   // outside its family
        "# TYPE x counter\n# TYPE x counter\nx 1\n", // declared twice
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\nh_sum 0\n",
        "# TYPE x gauge\nx one\n",
    ];
    for text in bad {
        let r = std::panic::catch_unwind(|| parse_prometheus(text));
        assert!(r.is_err(), "accepted: {text:?}");
    }
    let ok = parse_prometheus("# HELP x a\n# TYPE x gauge\nx{a=\"q\\\"\\n\"} +Inf\n");
    assert_eq!(ok.len(), 1);
}

/// With an upstream configured (the real Redis, under a key prefix of this test), the
/// forwarder's own counters are in `/metrics` and move as readings flow, and the
/// outbox cursor follows.
#[test]
fn upstream_forwarder_counters_move_in_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let (_sim, sim_port) = simulator();
    let http_port = free_port();
    let prefix = format!("edgegw-opstest-{}:", std::process::id());
    let http = format!(
        "[http]\nlisten = \"127.0.0.1:{http_port}\"\n\n\
         [upstreams.redis]\nenabled = true\nurl = \"redis://127.0.0.1:6379/0\"\n\
         key_prefix = \"{prefix}\"\n[upstreams.redis.delivery]\ntimeout_ms = 2000\n"
    );
    let cfg = dir.path().join("edgegw.toml");
    std::fs::write(&cfg, config(dir.path(), &http, &device("pump1", sim_port))).unwrap();
    let mut gw = Gateway::start(&cfg, &[]);
    gw.wait_http(http_port);
    let first = wait_until("the first acks", Duration::from_secs(30), || {
        let m = scrape(http_port);
        (metric(&m, "edgegw_upstream_acked_total{upstream=\"redis\"}") > 0.0).then_some(m)
    });
    assert!(
        metric(&first, "edgegw_upstream_sent_total{upstream=\"redis\"}") > 0.0,
        "sent counts what was handed to Redis"
    );
    assert_eq!(
        metric(&first, "edgegw_upstream_breaker_open{upstream=\"redis\"}"),
        0.0
    );
    wait_until("the counters to move on", Duration::from_secs(30), || {
        let m = scrape(http_port);
        (metric(&m, "edgegw_upstream_acked_total{upstream=\"redis\"}")
            > metric(&first, "edgegw_upstream_acked_total{upstream=\"redis\"}")
            && metric(&m, "edgegw_upstream_acked_id{upstream=\"redis\"}")
                > metric(&first, "edgegw_upstream_acked_id{upstream=\"redis\"}"))
        .then_some(())
    });
    gw.stop();

    // What the gateway wrote to Redis (the latest-value hashes) goes with the test.
    let mut redis = redis::Client::open("redis://127.0.0.1:6379/0")
        .unwrap()
        .get_connection()
        .expect("Redis on 127.0.0.1:6379");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query(&mut redis)
        .unwrap();
    assert!(
        !keys.is_empty(),
        "the latest values are in Redis under {prefix}"
    );
    let _: () = redis::cmd("DEL").arg(&keys).query(&mut redis).unwrap();
}

/// `edgegw run` must fail fast, with a line that says why, when its status listener
/// cannot start (before: it hung for good, with no error, ignoring SIGTERM).
#[test]
fn a_status_listener_that_cannot_start_stops_the_start_with_an_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            format!("[http]\nlisten = \"127.0.0.1:{port}\""),
            vec!["http.listen", "127.0.0.1", "free the port"],
        ),
        (
            format!(
                "[http]\nlisten = \"127.0.0.1:{}\"\ntoken = {{ file = \"{}\" }}",
                free_port(),
                dir.path().join("no-such-token").display()
            ),
            vec!["http.token", "no-such-token"],
        ),
    ];
    for (i, (http, words)) in cases.iter().enumerate() {
        let state = dir.path().join(format!("s{i}"));
        std::fs::create_dir(&state).unwrap();
        let cfg = state.join("edgegw.toml");
        std::fs::write(&cfg, config(&state, http, "")).unwrap();
        let started = Instant::now();
        let mut child = Command::new(exe())
            .args(["run", "--config"])
            .arg(&cfg)
            .env_remove("NOTIFY_SOCKET")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let status = wait_until("edgegw run to give up", Duration::from_secs(20), || {
            child.try_wait().unwrap()
        });
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert!(!status.success(), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10), "{err}");
        for w in words {
            assert!(err.contains(w), "{w:?} missing from: {err}");
        }
    }
    drop(taken);
}

/// Slow clients (one header byte a second, reconnecting) cannot lock the health
/// checker out: before, 16 such connections took every slot and /healthz got 0 of 28
/// answers.
#[test]
fn slow_clients_do_not_lock_out_the_health_checker() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = dir.path().join("edgegw.toml");
    std::fs::write(
        &cfg,
        config(
            dir.path(),
            &format!("[http]\nlisten = \"127.0.0.1:{port}\""),
            "",
        ),
    )
    .unwrap();
    let _gw = Gateway::start(&cfg, &[]);
    wait_until("/healthz", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut attackers = Vec::new();
    for _ in 0..24 {
        let stop = stop.clone();
        attackers.push(std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
                    continue;
                };
                for b in b"GET /healthz HTTP/1.1\r\nX-Slow: 1" {
                    if stop.load(std::sync::atomic::Ordering::Relaxed)
                        || s.write_all(&[*b]).is_err()
                    {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }));
    }
    std::thread::sleep(Duration::from_secs(2));
    let mut ok = 0;
    for _ in 0..28 {
        let answered = std::panic::catch_unwind(|| get(port, "/healthz", None));
        if matches!(answered, Ok((200, _))) {
            ok += 1;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for a in attackers {
        let _ = a.join();
    }
    assert!(
        ok >= 26,
        "/healthz answered {ok} of 28 times under slow clients"
    );
}

/// docs/ARCHITECTURE.md, "Bad input never stops the gateway": one technician's typo
/// in one profile gives the same outcome on all three paths — the unit's
/// `ExecStartPre=edgegw check --startup` passes (and names the device left out), `run`
/// starts every other device, and a SIGHUP reload into the same config is applied
/// with the same devices running. Only an error in the config file itself refuses
/// a start or a reload.
#[test]
fn one_bad_profile_gives_the_same_outcome_at_check_run_and_reload() {
    let dir = tempfile::tempdir().unwrap();
    let profiles = dir.path().join("profiles");
    std::fs::create_dir(&profiles).unwrap();
    let good = std::fs::read_to_string(repo().join("hardware-profiles/acme-vt420.toml")).unwrap();
    std::fs::write(profiles.join("acme-vt420.toml"), &good).unwrap();
    let broken = good.replacen("type = \"f32\"", "type = \"f33\"", 1);
    assert_ne!(broken, good);
    std::fs::write(profiles.join("broken-vt.toml"), broken).unwrap();
    let (_sim1, port1) = simulator();
    let (_sim2, port2) = simulator();
    let http_port = free_port();
    let cfg_text = |devices: &str| {
        format!(
            "[gateway]\nid = \"gw-badprofile\"\nstate_dir = \"{}\"\nprofile_dir = \"{}\"\n\n\
             [http]\nlisten = \"127.0.0.1:{http_port}\"\n\n{devices}",
            dir.path().display(),
            profiles.display()
        )
    };
    let both = device("good1", port1) + &device("bad1", port2).replace("acme-vt420", "broken-vt");
    let cfg = dir.path().join("edgegw.toml");
    std::fs::write(&cfg, cfg_text(&both)).unwrap();

    // 1. The unit's ExecStartPre passes; plain `check` says devices are left out (1).
    let check = |extra: &[&str]| {
        let out = Command::new(exe())
            .arg("check")
            .args(extra)
            .arg("--config")
            .arg(&cfg)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = check(&["--startup"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("broken-vt.toml:"), "located error: {err}");
    assert!(err.contains("would start without 1 device: bad1"), "{err}");
    let (code, _) = check(&[]);
    assert_eq!(code, Some(1));
    // The unit really runs `check --startup` before `run`.
    let unit = std::fs::read_to_string(repo().join("systemd/edgegw.service")).unwrap();
    assert!(
        unit.lines()
            .any(|l| l.starts_with("ExecStartPre=") && l.contains(" check --startup ")),
        "{unit}"
    );

    // 2. `run` on the same config: good1 polls, bad1 never does.
    let devices_polling = |m: &BTreeMap<String, f64>| {
        ["good1", "bad1"]
            .map(|d| m.contains_key(&format!("edgegw_device_polls_total{{device=\"{d}\"}}")))
    };
    let mut gw = Gateway::start(&cfg, &[]);
    gw.wait_http(http_port);
    let at_start = wait_until("good1 polls", Duration::from_secs(20), || {
        let m = scrape(http_port);
        (metric(&m, "edgegw_device_polls_total{device=\"good1\"}") > 0.0).then_some(m)
    });
    assert_eq!(devices_polling(&at_start), [true, false]);
    assert!(gw.log().contains("broken-vt.toml:"), "{}", gw.log());
    gw.stop();

    // 3. A daemon running good1 alone, reloaded into the same config: applied, not
    // refused, with the same devices running.
    std::fs::write(&cfg, cfg_text(&device("good1", port1))).unwrap();
    let mut gw = Gateway::start(&cfg, &[]);
    gw.wait_http(http_port);
    wait_until("good1 polls", Duration::from_secs(20), || {
        (metric(
            &scrape(http_port),
            "edgegw_device_polls_total{device=\"good1\"}",
        ) > 0.0)
            .then_some(())
    });
    std::fs::write(&cfg, cfg_text(&both)).unwrap();
    gw.signal("HUP");
    let reloaded = wait_until("the reload", Duration::from_secs(20), || {
        let m = scrape(http_port);
        (metric(&m, "edgegw_reloads_total{result=\"ok\"}") == 1.0).then_some(m)
    });
    assert_eq!(
        metric(&reloaded, "edgegw_reloads_total{result=\"invalid\"}"),
        0.0
    );
    let after = wait_until("good1 to keep polling", Duration::from_secs(20), || {
        let m = scrape(http_port);
        (metric(&m, "edgegw_device_polls_total{device=\"good1\"}")
            > metric(&reloaded, "edgegw_device_polls_total{device=\"good1\"}"))
        .then_some(m)
    });
    assert_eq!(devices_polling(&after), [true, false]);
    gw.assert_running();
    let log = gw.stop();
    assert!(log.contains("broken-vt.toml:"), "{log}");
    assert!(!log.contains("Reload refused"), "{log}");
}

/// Per-topic MQTT payload errors reach /metrics (they were counted by the source
/// and thrown away by the daemon), on the machine's broker with a unique prefix.
#[test]
fn mqtt_payload_errors_are_on_metrics_per_topic() {
    let dir = tempfile::tempdir().unwrap();
    let http_port = free_port();
    let prefix = format!("edgegw-ops-{}-{}", std::process::id(), free_port());
    let cfg = dir.path().join("edgegw.toml");
    std::fs::write(
        &cfg,
        config(
            dir.path(),
            &format!("[http]\nlisten = \"127.0.0.1:{http_port}\""),
            &format!(
                "[mqtt_brokers.plant]\nhost = \"127.0.0.1\"\nport = 1883\n\
                 client_id = \"{prefix}\"\n\n\
                 [[devices]]\nid = \"conveyor\"\nprofile = \"wisense-vb3\"\n\
                 [devices.mqtt]\nbroker = \"plant\"\ntopic = \"{prefix}/wisense/+/+/data\"\n"
            ),
        ),
    )
    .unwrap();
    let mut gw = Gateway::start(&cfg, &[]);
    gw.wait_http(http_port);
    let topic = format!("{prefix}/wisense/base1/node7/data");
    let series = format!(
        "edgegw_mqtt_topic_errors_total{{broker=\"plant\",topic=\"{topic}\",kind=\"json\"}}"
    );
    // Published until counted: the first ones may come before the subscription.
    let m = wait_until("the per-topic error", Duration::from_secs(20), || {
        let ok = Command::new("mosquitto_pub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                "1883",
                "-q",
                "1",
                "-t",
                &topic,
                "-m",
                "{\"vrms\": 2.3",
            ])
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "mosquitto_pub (Debian package mosquitto-clients) failed"
        );
        std::thread::sleep(Duration::from_millis(200));
        let m = scrape(http_port);
        // Absent until the first error is counted: keep publishing.
        m.get(&series).is_some_and(|v| *v >= 1.0).then_some(m)
    });
    assert!(
        metric(
            &m,
            "edgegw_device_errors_total{device=\"conveyor\",kind=\"json\"}"
        ) >= 1.0
    );
    gw.stop();
}
