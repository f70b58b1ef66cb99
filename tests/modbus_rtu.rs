//! Modbus RTU over a socat pty pair: the simulator serves one end as an RTU slave
//! (unit 1), the bus task polls the other end for two units, one of which (unit 2)
//! never answers. The live unit keeps its rate while the dead one is backed off.
//! Needs `socat` (Debian package).

#[path = "support/modbus.rs"]
mod support;

use edgegw::config::{FlowControl, Parity, SerialPortConfig};
use edgegw::sources::modbus::{run_rtu_bus, Simulator};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;
use support::*;
use tokio::sync::mpsc;
use tokio_serial::SerialPortBuilderExt;
use tokio_util::sync::CancellationToken;

/// Two linked ptys, `dir/bus` and `dir/slave`; socat dies with the guard.
fn pty_pair(dir: &Path) -> (KillOnDrop, PathBuf, PathBuf) {
    let (a, b) = (dir.join("bus"), dir.join("slave"));
    let child = Command::new("socat")
        .arg("-d")
        .arg(format!("pty,raw,echo=0,link={}", a.display()))
        .arg(format!("pty,raw,echo=0,link={}", b.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start socat: install it (apt-get install socat); scripts/test does");
    let guard = KillOnDrop(child);
    for _ in 0..100 {
        if a.exists() && b.exists() {
            return (guard, a, b);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("socat did not create {} and {}", a.display(), b.display());
}

fn port(path: PathBuf) -> SerialPortConfig {
    SerialPortConfig {
        path,
        baud: 19200,
        data_bits: 8,
        parity: Parity::None,
        stop_bits: 1,
        flow_control: FlowControl::None,
        inter_frame_delay_ms: None,
        min_request_pause_ms: None,
    }
}

#[tokio::test]
async fn a_dead_unit_is_backed_off_while_the_live_one_keeps_its_rate() {
    let dir = tempfile::tempdir().unwrap();
    let (_socat, bus, slave) = pty_pair(dir.path());
    let profile = example_profile("tempco-rtt20.toml");
    let sim = Simulator::new(&profile.profile, Some(1)).unwrap();
    let serial = tokio_serial::new(slave.to_string_lossy(), 19200)
        .open_native_async()
        .unwrap();
    let server = {
        let sim = sim.clone();
        tokio::spawn(async move { sim.serve_rtu(serial).await })
    };

    let live = rtu_device("motor1", profile.clone(), "rs485", 1, 100, 200);
    let dead = rtu_device("motor2", profile.clone(), "rs485", 2, 100, 200);
    let (live_stats, dead_stats) = (live.stats.clone(), dead.stats.clone());
    let (tx, mut rx) = mpsc::channel(1024);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run_rtu_bus(
        "rs485".into(),
        port(bus),
        vec![live, dead],
        tx,
        cancel.clone(),
    ));
    let run = Duration::from_secs(5);
    let all = collect_until(&mut rx, run, |_| false).await;
    let live_connected = live_stats.connected.load(Ordering::Relaxed);
    let dead_connected = dead_stats.connected.load(Ordering::Relaxed);
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("bus task did not stop")
        .unwrap()
        .unwrap();
    server.abort();

    // Live unit: every channel read, values in range, about every 100 ms. Nominal is
    // 50 polls in 5 s; the dead unit's few timeouts (200 ms each) cost some of them.
    for ch in ["winding_temp", "bearing_temp", "sensor_fault"] {
        let r = all
            .iter()
            .rev()
            .find(|r| &*r.device == "motor1" && &*r.channel == ch)
            .unwrap_or_else(|| panic!("no reading of motor1.{ch}"));
        assert_eq!(r.quality, 1.0, "{ch}: {:?}", r.flags);
        let v = scalar(r).unwrap();
        assert!((-50.0..=250.0).contains(&v), "{ch} = {v}");
    }
    let live_polls = live_stats.polls.load(Ordering::Relaxed);
    assert!(
        live_polls >= 25,
        "live unit polled only {live_polls} times in 5 s"
    );
    assert!(live_connected);
    assert_eq!(live_stats.error_count("timeout"), 0);

    // Dead unit: 3 failures, then skipped for 1 s, 2 s, ...: a handful of attempts,
    // not one every 100 ms.
    let dead_requests = sim.requests_for_unit(2);
    assert!(
        (3..=8).contains(&dead_requests),
        "dead unit was asked {dead_requests} times in 5 s"
    );
    assert_eq!(dead_stats.error_count("timeout"), dead_requests);
    assert!(!dead_connected);
    assert_eq!(dead_stats.polls.load(Ordering::Relaxed), 0);
    assert!(all
        .iter()
        .filter(|r| &*r.device == "motor2")
        .all(|r| r.quality == 0.0 && r.flags == ["timeout"]));
    // Every request to the live unit got its answer (none lost to a stale frame).
    assert_eq!(sim.requests_for_unit(1), live_polls * 2);
}

#[tokio::test]
async fn read_tool_over_rtu() {
    let dir = tempfile::tempdir().unwrap();
    let (_socat, bus, slave) = pty_pair(dir.path());
    let profile = example_profile("tempco-rtt20.toml");
    let sim = Simulator::new(&profile.profile, Some(1)).unwrap();
    let serial = tokio_serial::new(slave.to_string_lossy(), 19200)
        .open_native_async()
        .unwrap();
    let server = {
        let sim = sim.clone();
        tokio::spawn(async move { sim.serve_rtu(serial).await })
    };
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        read: edgegw::sources::modbus::ReadArgs,
    }
    use clap::Parser;
    let cli = Cli::try_parse_from([
        "x",
        "--rtu",
        bus.to_str().unwrap(),
        "--baud",
        "19200",
        "--parity",
        "N",
        "--unit",
        "1",
        "--table",
        "input",
        "--address",
        "0",
        "--count",
        "2",
        "--type",
        "i16",
    ])
    .unwrap();
    let mut out = Vec::new();
    edgegw::sources::modbus::read_command(cli.read, &mut out)
        .await
        .unwrap();
    let out = String::from_utf8(out).unwrap();
    assert!(out.starts_with("rtu "), "{out}");
    assert!(out.contains("input 0..1 (2 registers)"), "{out}");
    // The forbidden register 3 (wire) answers with an exception.
    let cli = Cli::try_parse_from([
        "x",
        "--rtu",
        bus.to_str().unwrap(),
        "--baud",
        "19200",
        "--table",
        "input",
        "--address",
        "2",
    ])
    .unwrap();
    let err = edgegw::sources::modbus::read_command(cli.read, &mut Vec::new())
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("exception 2"), "{err:#}");
    server.abort();
}
