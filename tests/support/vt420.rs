//! What the tests that run a whole gateway against simulated VT-420 transmitters
//! share (`tests/status_page.rs`, `tests/notify.rs`): the simulator, a device entry
//! that learns its baseline in 2 s, and `edgegw run` as a child process.
#![allow(dead_code)]

use super::procs::{exe, free_port, repo, wait_until, Proc};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A VT-420 simulator replaying `data` (one file after the other, the last one
/// looping) on its waveform channel, steady scalars.
pub fn simulator(data: &[&str]) -> (Proc, u16) {
    let port = free_port();
    let p = Proc(
        Command::new(exe())
            .args(["simulate", "modbus", "--steady", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--profile")
            .arg(repo().join("hardware-profiles/acme-vt420.toml"))
            .args(data.iter().flat_map(|d| ["--data".into(), repo().join(d)]))
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

/// A VT-420 on `port` that learns its baseline for 2 s of reading time (a day on a
/// real machine), as in `edgegw demo`; `extra` lines go into its `[[devices]]` table.
pub fn device(id: &str, port: u16, extra: &str) -> String {
    format!(
        "[[devices]]\nid = \"{id}\"\nprofile = \"acme-vt420\"\npoll_interval_ms = 200\n{extra}\
         [devices.modbus_tcp]\nhost = \"127.0.0.1\"\nport = {port}\n\
         [devices.machine]\nshaft_rpm = 1797\nbearing = \"6205\"\n\
         [devices.detection]\nlearn = \"2s\"\nlearn_samples = 24\nlearn_min_samples = 20\n\n"
    )
}

/// `edgegw run --config <config>` with `env`, output discarded, killed on drop.
pub fn gateway(config: &Path, env: &[(&str, &str)]) -> Proc {
    let mut cmd = Command::new(exe());
    cmd.args(["--log-format", "human", "run", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    Proc(cmd.spawn().unwrap())
}
