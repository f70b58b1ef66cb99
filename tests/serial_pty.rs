//! The serial source against a real pty pair made by socat: the test plays the
//! sensor on one end, the source reads the other. Covers the VM-10 (free-running,
//! NMEA checksum, delimited) with noise and broken lines, unplug/replug, and the
//! HT-2 (query/response, regex).
//!
//! Needs `socat` (Debian package socat); fails with a clear message without it.

use edgegw::config::{DeviceConfig, SerialPortConfig};
use edgegw::profiles::load_profile;
use edgegw::sources::serial::{nmea_xor, run_serial};
use edgegw::sources::{DeviceSpec, DeviceStats, SourceBatch, Value};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A socat pty pair; killed on drop.
struct Socat {
    child: Child,
    a: PathBuf,
    b: PathBuf,
}

impl Socat {
    fn start(dir: &Path) -> Socat {
        let a = dir.join("a");
        let b = dir.join("b");
        let child = Command::new("socat")
            .arg("-d")
            .arg("-d")
            .arg(format!("pty,raw,echo=0,link={}", a.display()))
            .arg(format!("pty,raw,echo=0,link={}", b.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start socat ({e}); install it: apt-get install socat")
            });
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(a.exists() && b.exists()) {
            assert!(
                Instant::now() < deadline,
                "socat did not create the pty links"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Socat { child, a, b }
    }

    /// The sensor's end of the line.
    fn sensor_end(&self) -> std::fs::File {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.b)
            .expect("open the sensor end of the pty pair")
    }
}

impl Drop for Socat {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn profile_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("hardware-profiles")
        .join(format!("{name}.toml"))
}

fn device(id: &str, profile: &str, poll_interval_ms: u64) -> DeviceSpec {
    let mut diags = Vec::new();
    let loaded = load_profile(&profile_path(profile), &mut diags)
        .unwrap_or_else(|| panic!("profile {profile} does not load: {diags:?}"));
    let config: DeviceConfig = toml::from_str(&format!(
        "id = \"{id}\"\nprofile = \"{profile}\"\npoll_interval_ms = {poll_interval_ms}\n[serial]\nport = \"p\"\n"
    ))
    .unwrap();
    DeviceSpec {
        config,
        profile: Arc::new(loaded),
        stats: Arc::new(DeviceStats::default()),
    }
}

fn port(path: &Path, extra: &str) -> SerialPortConfig {
    toml::from_str(&format!("path = \"{}\"\n{extra}", path.display())).unwrap()
}

fn nmea(data: &str) -> String {
    format!("${data}*{:02X}\r\n", nmea_xor(data.as_bytes()))
}

async fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Receives `n` readings as (sensor id, value).
async fn readings(rx: &mut mpsc::Receiver<SourceBatch>, n: usize) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    while out.len() < n {
        let batch = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out after {} of {n} readings: {out:?}", out.len()))
            .expect("source ended");
        assert!(batch.ack.is_none(), "serial batches carry no ack");
        for r in batch.readings {
            assert_eq!(r.quality, 1.0);
            match r.value {
                Value::Scalar(v) => out.push((r.sensor_id.to_string(), v)),
                other => panic!("unexpected value {other:?}"),
            }
        }
    }
    out
}

fn vm10(dev: &str, vrms: f64, peak: f64, temp: f64) -> Vec<(String, f64)> {
    vec![
        (format!("{dev}.velocity_rms"), vrms),
        (format!("{dev}.accel_peak"), peak),
        (format!("{dev}.temperature"), temp),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm10_noise_faults_and_replug() {
    let dir = tempfile::tempdir().unwrap();
    let socat = Socat::start(dir.path());
    let dev = device("fan3", "sensotec-vm10", 1000);
    let stats = dev.stats.clone();
    let (tx, mut rx) = mpsc::channel(16);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run_serial(
        dev,
        "vm10".into(),
        port(&socat.a, "baud = 9600"),
        tx,
        cancel.clone(),
    ));
    wait_for("the port to open", Duration::from_secs(10), || {
        stats.connected.load(Relaxed)
    })
    .await;

    let mut sensor = socat.sensor_end();
    let mut play = |bytes: &[u8]| {
        sensor.write_all(bytes).unwrap();
        sensor.flush().unwrap();
    };
    play(nmea("PVIB,000001,2.31,0.84,41.7").as_bytes());
    // Line noise with a line end: no '$', so it fails the checksum check.
    play(b"\x00\xfe\x13 @@\xff\r\n");
    // A line broken off mid-sentence (sensor reset).
    play(b"$PVIB,000002,2.3\r\n");
    // A flipped bit: wrong checksum.
    play(b"$PVIB,000003,2.40,0.90,41.8*00\r\n");
    // An over-long line (max_length = 96).
    play(nmea(&format!("PVIB,000004,{},0.9,41.8", "9".repeat(200))).as_bytes());
    // A good line written in two pieces.
    let split = nmea("PVIB,000005,2.45,0.91,41.9");
    play(&split.as_bytes()[..10]);
    std::thread::sleep(Duration::from_millis(50));
    play(&split.as_bytes()[10..]);
    // Valid checksum, unparsable field.
    play(nmea("PVIB,000006,n/a,0.91,41.9").as_bytes());
    play(nmea("PVIB,000007,2.50,0.95,-3.5").as_bytes());

    let mut want = vm10("fan3", 2.31, 0.84, 41.7);
    want.extend(vm10("fan3", 2.45, 0.91, 41.9));
    want.extend(vm10("fan3", 2.50, 0.95, -3.5));
    assert_eq!(readings(&mut rx, 9).await, want);
    assert_eq!(stats.error_count("checksum"), 3);
    assert_eq!(stats.error_count("overlong"), 1);
    assert_eq!(stats.error_count("parse"), 1);
    assert_eq!(stats.polls.load(Relaxed), 3);
    assert_eq!(stats.readings.load(Relaxed), 9);

    // Unplug: socat goes away with both ptys; the source notices and retries.
    drop(sensor);
    drop(socat);
    wait_for("the loss to be noticed", Duration::from_secs(10), || {
        stats.error_count("disconnected") == 1 && !stats.connected.load(Relaxed)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Replug: the same link names come back.
    let socat = Socat::start(dir.path());
    wait_for("the port to be reopened", Duration::from_secs(20), || {
        stats.connected.load(Relaxed)
    })
    .await;
    let mut sensor = socat.sensor_end();
    sensor
        .write_all(nmea("PVIB,000008,3.10,1.20,44.0").as_bytes())
        .unwrap();
    assert_eq!(readings(&mut rx, 3).await, vm10("fan3", 3.10, 1.20, 44.0));
    assert_eq!(stats.error_count("disconnected"), 1);

    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the source stops on cancel")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ht2_query_response() {
    let dir = tempfile::tempdir().unwrap();
    let socat = Socat::start(dir.path());
    let dev = device("cabinet1", "humitec-ht2", 200);
    let stats = dev.stats.clone();
    let (tx, mut rx) = mpsc::channel(16);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run_serial(
        dev,
        "ht2".into(),
        port(
            &socat.a,
            "baud = 4800\ndata_bits = 7\nparity = \"even\"\nstop_bits = 1",
        ),
        tx,
        cancel.clone(),
    ));

    // The probe: answer each SEND with the next scripted line; stay silent once.
    let sensor = socat.sensor_end();
    let answers: Vec<Option<&'static [u8]>> = vec![
        Some(b"T= 23.4 'C RH= 45.2 %RH\r\n"),
        Some(b"T= -5 'C RH= 99.9 %RH\r\n"),
        Some(b"ERR 3\r\n"),
        None,
        Some(b"T=  0.0 'C RH= 0 %RH\r\n"),
    ];
    let probe = std::thread::spawn(move || {
        let mut sensor = sensor;
        let mut commands = Vec::new();
        let mut pending = Vec::new();
        let mut buf = [0u8; 64];
        for answer in answers {
            while !pending.ends_with(b"\r") {
                let n = sensor.read(&mut buf).expect("read the poll command");
                assert!(n > 0, "line closed");
                pending.extend_from_slice(&buf[..n]);
            }
            commands.push(std::mem::take(&mut pending));
            if let Some(a) = answer {
                sensor.write_all(a).unwrap();
                sensor.flush().unwrap();
            }
        }
        commands
    });

    let got = readings(&mut rx, 6).await;
    assert_eq!(
        got,
        vec![
            ("cabinet1.temperature".to_string(), 23.4),
            ("cabinet1.humidity".to_string(), 45.2),
            ("cabinet1.temperature".to_string(), -5.0),
            ("cabinet1.humidity".to_string(), 99.9),
            ("cabinet1.temperature".to_string(), 0.0),
            ("cabinet1.humidity".to_string(), 0.0),
        ]
    );
    let commands = probe.join().unwrap();
    assert_eq!(commands.len(), 5);
    assert!(commands.iter().all(|c| c == b"SEND\r"), "{commands:?}");
    assert_eq!(stats.error_count("parse"), 1);
    assert_eq!(stats.error_count("timeout"), 1, "the unanswered SEND");
    assert_eq!(stats.polls.load(Relaxed), 3);

    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the source stops on cancel")
        .unwrap();
}
