//! Helpers for the Modbus integration tests: device specs, profiles from TOML text,
//! child processes killed on drop (pymodbus, socat), draining a source's batches.
#![allow(dead_code)]

use edgegw::config::{DeviceConfig, ModbusRtuTransport, ModbusTcpTransport};
use edgegw::profiles::{load_profile, LoadedProfile};
use edgegw::sources::{DeviceSpec, DeviceStats, Reading, SourceBatch, Value};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Loads (and validates) a profile from `hardware-profiles/`.
pub fn example_profile(file: &str) -> Arc<LoadedProfile> {
    load(&repo().join("hardware-profiles").join(file))
}

pub fn load(path: &Path) -> Arc<LoadedProfile> {
    let mut diags = Vec::new();
    match load_profile(path, &mut diags) {
        Some(p) => Arc::new(p),
        None => panic!(
            "{}: {}",
            path.display(),
            diags
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        ),
    }
}

/// Writes `toml` to a temporary file and loads it as a validated profile.
pub fn profile_from_toml(dir: &Path, name: &str, toml: &str) -> Arc<LoadedProfile> {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, toml).unwrap();
    load(&path)
}

pub fn device(id: &str, profile: Arc<LoadedProfile>, poll_interval_ms: u64) -> DeviceSpec {
    DeviceSpec {
        config: DeviceConfig {
            id: id.into(),
            profile: profile.name.clone(),
            enabled: true,
            poll_interval_ms,
            location: String::new(),
            group: None,
            model: None,
            machine: None,
            detection: None,
            modbus_tcp: None,
            modbus_rtu: None,
            serial: None,
            mqtt: None,
        },
        profile,
        stats: Arc::new(DeviceStats::default()),
    }
}

pub fn tcp_device(
    id: &str,
    profile: Arc<LoadedProfile>,
    addr: std::net::SocketAddr,
    unit_id: u8,
    poll_interval_ms: u64,
    timeout_ms: u64,
) -> DeviceSpec {
    let mut d = device(id, profile, poll_interval_ms);
    d.config.modbus_tcp = Some(ModbusTcpTransport {
        host: addr.ip().to_string(),
        port: addr.port(),
        unit_id,
        timeout_ms,
        max_gap: None,
    });
    d
}

pub fn rtu_device(
    id: &str,
    profile: Arc<LoadedProfile>,
    port: &str,
    unit_id: u8,
    poll_interval_ms: u64,
    timeout_ms: u64,
) -> DeviceSpec {
    let mut d = device(id, profile, poll_interval_ms);
    d.config.modbus_rtu = Some(ModbusRtuTransport {
        port: port.into(),
        unit_id,
        timeout_ms,
        max_gap: None,
    });
    d
}

/// A child process killed (and reaped) when dropped, so no test leaves one behind.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts tests/support/pymodbus_server.py (port 0: it picks one) and returns it with
/// its port. Fails the test with instructions when pymodbus is missing.
pub fn start_pymodbus(port: u16) -> (KillOnDrop, u16) {
    let check = Command::new("python3")
        .args(["-c", "import pymodbus"])
        .output();
    match check {
        Ok(o) if o.status.success() => {}
        _ => panic!(
            "pymodbus is not installed for python3: run scripts/test (it installs \
             tests/support/requirements.txt), or `pip install -r tests/support/requirements.txt`"
        ),
    }
    let mut child = Command::new("python3")
        .arg(repo().join("tests/support/pymodbus_server.py"))
        .args(["--port", &port.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start python3 tests/support/pymodbus_server.py");
    let stdout = child.stdout.take().unwrap();
    let guard = KillOnDrop(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let port = line
        .trim()
        .strip_prefix("PORT ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("pymodbus_server.py printed {line:?}, not PORT <n>"));
    (guard, port)
}

/// Collects batches until `pred` holds for everything received, or `limit` passes.
pub async fn collect_until(
    rx: &mut mpsc::Receiver<SourceBatch>,
    limit: Duration,
    mut pred: impl FnMut(&[Reading]) -> bool,
) -> Vec<Reading> {
    let mut all = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    while !pred(&all) {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(b)) => all.extend(b.readings),
            Ok(None) | Err(_) => break,
        }
    }
    all
}

pub fn scalar(r: &Reading) -> Option<f64> {
    match r.value {
        Value::Scalar(v) => Some(v),
        _ => None,
    }
}

/// The last clean reading of `channel`.
pub fn last<'a>(all: &'a [Reading], channel: &str) -> Option<&'a Reading> {
    all.iter()
        .rev()
        .find(|r| &*r.channel == channel && r.quality > 0.0)
}

pub fn has(all: &[Reading], channel: &str) -> bool {
    last(all, channel).is_some()
}
