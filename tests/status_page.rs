//! The local status page in a real browser: headless Chromium (Debian's `chromium`)
//! opens the page of a running gateway whose uplink is cut (its TimescaleDB upstream
//! points at a closed port) with two simulated VT-420 transmitters, one healthy and one
//! replaying the CWRU inner-race fault. The page must show the live values the
//! gateway stored (checked against the outbox), the fault's open alert with its
//! evidence, the commissioning and outbox sections; a screenshot is saved as a test
//! artefact (`target/tmp/status-page.png`). A second gateway bound beyond loopback
//! with a token refuses the page, its data and its event stream without the token,
//! and lets a browser sign in with a session cookie.
//!
//! Peers: `edgegw simulate modbus` processes and Chromium, all killed on drop.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "support/procs.rs"]
mod procs;
use procs::{exe, free_port, repo, wait_until, Proc};

#[path = "support/vt420.rs"]
mod vt420;
use vt420::{device, gateway, simulator};

/// A gateway config whose only upstream is unreachable: the uplink is cut.
fn config(dir: &Path, http: &str, devices: &str) -> PathBuf {
    let dead = free_port();
    let text = format!(
        "[gateway]\nid = \"gw-pagetest\"\nstate_dir = \"{}\"\nprofile_dir = \"{}\"\n\n{http}\n\n\
         [upstreams.timescale]\nenabled = true\nurl = \"postgres://edgegw@127.0.0.1:{dead}/cut\"\n\n{devices}",
        dir.display(),
        repo().join("hardware-profiles").display()
    );
    let path = dir.join("edgegw.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// One HTTP/1.1 request; returns (status, head, body).
fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> (u16, String, String) {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new(), String::new());
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, head.to_string(), body.to_string())
}

fn status(port: u16, headers: &str) -> Option<serde_json::Value> {
    let (code, _, body) = request(port, "GET", "/api/status", headers, "");
    (code == 200).then(|| serde_json::from_str(&body).expect("/api/status is JSON"))
}

fn chromium() -> PathBuf {
    ["chromium", "chromium-browser"]
        .iter()
        .find_map(|b| {
            Command::new("sh")
                .args(["-c", &format!("command -v {b}")])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        })
        .expect("headless Chromium is needed (Debian package `chromium`; scripts/test installs it)")
}

/// Headless Chromium on `url`: the DOM after the page's scripts ran, or a screenshot.
fn browse(url: &str, extra: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            // The page asks for its first snapshot at once and opens the event stream
            // 2 s later: the DOM (or screenshot) is taken in between, when the
            // virtual clock reaches the budget (an open stream would hold it).
            "--virtual-time-budget=1500",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let mut p = Proc(child);
    let deadline = Instant::now() + Duration::from_secs(90);
    while p.0.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "chromium did not finish on {url}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(p);
    reader.join().unwrap()
}

/// The text of the value cell of `sensor`'s row in the rendered page.
fn shown_value(dom: &str, sensor: &str) -> Option<String> {
    let re = regex::Regex::new(&format!(
        r#"<tr data-sensor="{}"><td>.*?</td><td class="num value">([^<]*)</td>"#,
        regex::escape(sensor)
    ))
    .unwrap();
    re.captures(dom).map(|c| c[1].to_string())
}

/// Every value the gateway stored for `sensor` (`edgegw outbox dump`: the uplink is
/// cut, so every reading is still there).
fn stored_values(config: &Path, sensor: &str) -> Vec<f64> {
    let out = Command::new(exe())
        .args(["outbox", "--config"])
        .arg(config)
        .args(["dump", "--kind", "reading", "--limit", "1000000"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            let p = &v["payload"];
            (p["sensor_id"] == sensor)
                .then(|| p["value"].as_f64())
                .flatten()
        })
        .collect()
}

#[test]
fn a_technician_sees_live_values_and_the_fault_alert_with_the_uplink_cut() {
    let dir = tempfile::tempdir().unwrap();
    const HEALTHY: &str = "testdata/cwru/normal_12k.f32";
    let (_healthy, healthy_port) = simulator(&[HEALTHY]);
    // Healthy for ~6 s (the baseline is learned in the first 2 s), then the
    // inner-race fault, looping.
    let (_faulty, faulty_port) = simulator(&[HEALTHY, "testdata/cwru/IR007_12k.f32"]);
    let http_port = free_port();
    let cfg = config(
        dir.path(),
        &format!("[http]\nlisten = \"127.0.0.1:{http_port}\""),
        &(device("pump", healthy_port, "") + &device("fan", faulty_port, "")),
    );
    let _gw = gateway(&cfg, &[]);
    let headers = "";
    // The first request starts the live values; wait for both devices' readings and
    // the fault's alert.
    let snap = wait_until(
        "live values and the fault alert",
        Duration::from_secs(90),
        || {
            let s = status(http_port, headers)?;
            let channels = s["channels"].as_array()?;
            let has = |id: &str| channels.iter().any(|c| c["sensor_id"] == id);
            let alert = s["alerts"]["open"]
                .as_array()?
                .iter()
                .any(|a| a["latest"]["sensor_id"] == "fan.accel");
            (has("pump.housing_temp") && has("fan.housing_temp") && has("pump.accel") && alert)
                .then_some(s)
        },
    );
    // The uplink is cut: the outbox holds what the page shows.
    let up = &snap["outbox"]["upstreams"][0];
    assert_eq!(up["name"], "timescale");
    assert!(up["pending"].as_u64().unwrap() > 0, "{snap:#}");

    let dom = browse(&format!("http://127.0.0.1:{http_port}/"), &["--dump-dom"]);
    assert!(
        dom.contains("data-rendered="),
        "the page did not render:\n{dom}"
    );
    // Values shown are readings the gateway stored.
    for sensor in ["pump.housing_temp", "fan.housing_temp", "pump.velocity_rms"] {
        let shown =
            shown_value(&dom, sensor).unwrap_or_else(|| panic!("no row for {sensor}:\n{dom}"));
        let (number, unit) = shown.split_once(' ').expect("value and unit");
        let number: f64 = number
            .parse()
            .unwrap_or_else(|_| panic!("{sensor}: {shown}"));
        let stored = stored_values(&cfg, sensor);
        assert!(
            stored
                .iter()
                .any(|v| (v - number).abs() <= 0.005 + 1e-6 * v.abs()),
            "{sensor}: the page shows {shown}, the outbox has {:?}",
            &stored[stored.len().saturating_sub(20)..]
        );
        let want_unit = if sensor.ends_with("temp") {
            "°C"
        } else {
            "mm/s"
        };
        assert_eq!(unit, want_unit, "{sensor}");
    }
    // The fault's alert, with its evidence and history.
    let alert = regex::Regex::new(
        r#"<div class="alert" data-sensor="fan\.accel" data-type="([a-z_]+)">(.*?)<details>"#,
    )
    .unwrap()
    .captures(&dom)
    .unwrap_or_else(|| panic!("no open alert for fan.accel on the page:\n{dom}"));
    assert!(alert[1].contains("anomaly"), "{}", &alert[1]);
    assert!(dom.contains("<pre>"), "the alert's evidence is shown");
    // ... and the plot that triggered it: the window, its spectrum and the envelope
    // spectrum with the bearing's defect frequencies (6205 at 1,797 rpm) marked.
    assert_eq!(
        alert[2].matches(r#"<svg class="plot""#).count(),
        3,
        "{}",
        &alert[2]
    );
    let fan_alert = snap["alerts"]["open"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["latest"]["sensor_id"] == "fan.accel")
        .unwrap();
    let plot = &fan_alert["plot"];
    assert_eq!(plot["samples"], 2048, "{plot}");
    let bpfi = plot["marks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m[0] == "BPFI")
        .and_then(|m| m[1].as_f64())
        .expect("BPFI marked");
    assert!((bpfi - 162.2).abs() < 0.5, "BPFI {bpfi} Hz");
    assert!(alert[2].contains(">BPFI</text>"), "{}", &alert[2]);
    // Commissioning status, outbox and models sections are filled.
    assert!(dom.contains("timescale"), "outbox per upstream");
    let model = &snap["models"][0];
    let model = format!(
        "{}@{}",
        model["name"].as_str().unwrap(),
        model["version"].as_str().unwrap()
    );
    assert!(dom.contains(&model), "model bundles: {model}");

    // Without a token the page is read-only: no acknowledging, no baseline reset.
    let form = "Content-Type: application/x-www-form-urlencoded\r\n";
    let episode = fan_alert["latest"]["episode_us"].as_i64().unwrap();
    let (code, _, body) = request(
        http_port,
        "POST",
        "/api/ack",
        form,
        &format!("sensor=fan.accel&type={}&episode={episode}", &alert[1]),
    );
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("http.token"), "{body}");

    // A screenshot for people (and docs/).
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    browse(
        &format!("http://127.0.0.1:{http_port}/"),
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1280,1400",
        ],
    );
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "{} bytes",
        png.len()
    );
    eprintln!("screenshot: {}", shot.display());
}

#[test]
fn beyond_loopback_the_page_needs_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let (_sim, sim_port) = simulator(&["testdata/cwru/normal_12k.f32"]);
    let http_port = free_port();
    let cfg = config(
        dir.path(),
        &format!(
            "[http]\nlisten = \"0.0.0.0:{http_port}\"\ntoken = {{ env = \"PAGE_TEST_TOKEN\" }}"
        ),
        &device("pump", sim_port, ""),
    );
    let _gw = gateway(&cfg, &[("PAGE_TEST_TOKEN", "open sesame")]);
    wait_until("the listener", Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", http_port)).ok()
    });

    // Without the token: the login form, and no data.
    let (code, _, body) = request(http_port, "GET", "/", "", "");
    assert_eq!(code, 401);
    assert!(
        body.contains("<form") && !body.contains("/events"),
        "{body}"
    );
    for path in ["/api/status", "/events"] {
        assert_eq!(request(http_port, "GET", path, "", "").0, 401, "{path}");
    }
    let dom = browse(&format!("http://127.0.0.1:{http_port}/"), &["--dump-dom"]);
    assert!(
        dom.contains("Sign in") && !dom.contains("data-sensor"),
        "{dom}"
    );

    // A wrong token, then the right one: a session cookie that is not the token.
    let form = "application/x-www-form-urlencoded";
    let (code, _, _) = request(
        http_port,
        "POST",
        "/login",
        &format!("Content-Type: {form}\r\n"),
        "token=guess",
    );
    assert_eq!(code, 401);
    let (code, head, _) = request(
        http_port,
        "POST",
        "/login",
        &format!("Content-Type: {form}\r\n"),
        "token=open+sesame",
    );
    assert_eq!(code, 303, "{head}");
    let cookie = head
        .lines()
        .find_map(|l| l.strip_prefix("Set-Cookie: "))
        .and_then(|c| c.split(';').next())
        .expect("a session cookie")
        .to_string();
    assert!(!cookie.contains("sesame"), "{cookie}");
    let with_cookie = format!("Cookie: {cookie}\r\n");
    let s = wait_until(
        "data with the session cookie",
        Duration::from_secs(30),
        || status(http_port, &with_cookie),
    );
    assert_eq!(s["devices"][0]["id"], "pump");
    // The bearer token works too (scripts, `curl`).
    assert!(status(http_port, "Authorization: Bearer open sesame\r\n").is_some());

    // Signed in, a technician can start a new baseline (as `edgegw baseline reset`);
    // acknowledging needs an open episode; neither works without signing in.
    let form_cookie = format!("Content-Type: {form}\r\n{with_cookie}");
    let (code, _, body) = request(
        http_port,
        "POST",
        "/api/baseline-reset",
        &form_cookie,
        "selector=pump",
    );
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("applies the reset"), "{body}");
    let (code, _, _) = request(
        http_port,
        "POST",
        "/api/baseline-reset",
        &format!("Content-Type: {form}\r\n"),
        "selector=pump",
    );
    assert_eq!(code, 401);
    let (code, _, _) = request(
        http_port,
        "POST",
        "/api/ack",
        &form_cookie,
        "sensor=pump.accel&type=vibration_anomaly&episode=1",
    );
    assert_eq!(code, 404);
}
