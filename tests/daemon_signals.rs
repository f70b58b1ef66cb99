//! The real binary: `edgegw run` stops cleanly on SIGTERM and SIGINT (exit 0 within
//! 5 seconds, everything it read committed to the outbox), and refuses to start on an
//! invalid config (exit 2).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} failed");
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "edgegw did not exit within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A config with one simulated Modbus device, served by `edgegw simulate modbus`.
fn setup(dir: &std::path::Path, sim_port: u16) -> std::path::PathBuf {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = format!(
        "[gateway]\nid = \"gw-sigtest\"\nstate_dir = \"{}\"\nprofile_dir = \"{}\"\n\n\
         [[devices]]\nid = \"pump1\"\nprofile = \"acme-vt420\"\npoll_interval_ms = 100\n\
         [devices.modbus_tcp]\nhost = \"127.0.0.1\"\nport = {sim_port}\n\n[http]\nenabled = false\n",
        dir.display(),
        repo.join("hardware-profiles").display()
    );
    let path = dir.join("edgegw.toml");
    std::fs::write(&path, config).unwrap();
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "simulator did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn outbox_records(dir: &std::path::Path) -> u64 {
    let o = edgegw::outbox::Outbox::open_read_only(&dir.join("outbox.db")).unwrap();
    o.stats().unwrap().total_records
}

fn stops_cleanly_on(sig: &str) {
    let exe = env!("CARGO_BIN_EXE_edgegw");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let _sim = Daemon(
        Command::new(exe)
            .args([
                "simulate",
                "modbus",
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .arg("--profile")
            .arg(repo.join("hardware-profiles/acme-vt420.toml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_port(port);
    let config = setup(dir.path(), port);
    let mut gw = Daemon(
        Command::new(exe)
            .args(["run", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // Let it poll for a while, then stop it.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        gw.0.try_wait().unwrap().is_none(),
        "edgegw exited on its own"
    );
    signal(&gw.0, sig);
    let status = wait_exit(&mut gw.0, Duration::from_secs(5));
    let mut log = String::new();
    use std::io::Read;
    gw.0.stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "exit status {status:?}; log:\n{log}"
    );
    assert!(log.contains("Pipeline drained into the outbox"), "{log}");
    // What it read is in the outbox: readings and waveform windows.
    assert!(
        outbox_records(dir.path()) > 0,
        "nothing reached the outbox; log:\n{log}"
    );
}

#[test]
fn sigterm_exits_0_within_5_seconds_with_data_committed() {
    stops_cleanly_on("TERM");
}

#[test]
fn sigint_exits_0_within_5_seconds() {
    stops_cleanly_on("INT");
}

#[test]
fn invalid_config_refuses_to_start_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edgegw.toml");
    std::fs::write(&path, "[gateway]\nid = \"x\"\nbogus = 1\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_edgegw"))
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("edgegw.toml:3:1: gateway.bogus: unknown field"),
        "{err}"
    );
}

#[test]
fn check_exit_codes() {
    let exe = env!("CARGO_BIN_EXE_edgegw");
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let ok = Command::new(exe)
        .args(["check", "--config"])
        .arg(repo.join("config/edgegw.toml"))
        .output()
        .unwrap();
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "vendor = \"A\"\nmodel = \"B\"\n[channels.x]\nsensor_type = \"vibration\"\n[modbus]\n[[modbus.registers]]\nchannel = \"x\"\ntable = \"input\"\naddress = 0\ntype = \"f33\"\n").unwrap();
    let out = Command::new(exe)
        .args(["profile", "check"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:3:1: channels.x.unit: missing field `unit`"),
        "{err}"
    );
    assert!(
        err.contains("bad.toml:10:8: modbus.registers[0].type: unknown variant `f33`"),
        "{err}"
    );
}
