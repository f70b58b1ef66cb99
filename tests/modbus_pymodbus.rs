//! The Modbus TCP source and the `modbus read` tool against a foreign implementation:
//! pymodbus (tests/support/pymodbus_server.py) with a known map, so that we do not
//! only test our reading of the spec against itself. Needs `pip install -r
//! tests/support/requirements.txt` (scripts/test does it); fails, never skips,
//! without it.

#[path = "support/modbus.rs"]
mod support;

use clap::Parser;
use edgegw::sources::modbus::{read_command, run_tcp, ReadArgs};
use edgegw::sources::Value;
use std::sync::atomic::Ordering;
use std::time::Duration;
use support::*;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The map pymodbus_server.py serves, described as a profile.
const PROFILE: &str = r#"
vendor = "pymodbus"
model = "test map"
[channels.flow]
sensor_type = "general"
unit = "m3/h"
[channels.count]
sensor_type = "general"
unit = "1"
[channels.total]
sensor_type = "general"
unit = "1"
[channels.pressure]
sensor_type = "pressure"
unit = "bar"
[channels.temp]
sensor_type = "temperature"
unit = "°C"
[channels.ident]
sensor_type = "general"
unit = "1"
[channels.missing]
sensor_type = "general"
unit = "1"
[channels.energy]
sensor_type = "general"
unit = "kWh"
[channels.coil0]
sensor_type = "general"
unit = "1"
[channels.coil1]
sensor_type = "general"
unit = "1"
[channels.coil7]
sensor_type = "general"
unit = "1"
[channels.di1]
sensor_type = "general"
unit = "1"

[modbus]
max_gap = 8

[[modbus.registers]]
channel = "flow"
table = "holding"
address = 0
type = "f32"
order = "CDAB"

[[modbus.registers]]
channel = "count"
table = "holding"
address = 2
type = "i32"

[[modbus.registers]]
channel = "total"
table = "holding"
address = 4
type = "u32"
order = "CDAB"

[[modbus.registers]]
channel = "pressure"
table = "holding"
address = 6
type = "u16"
scale = 0.01

[[modbus.registers]]
channel = "temp"
table = "holding"
address = 7
type = "i16"
scale = 0.1

[[modbus.registers]]
channel = "ident"
table = "holding"
address = 10
type = "string"
count = 6

[[modbus.registers]]
channel = "missing"
table = "holding"
address = 100
type = "u16"

[[modbus.registers]]
channel = "energy"
table = "input"
address = 0
type = "f64"

[[modbus.registers]]
channel = "coil0"
table = "coil"
address = 0
type = "bool"

[[modbus.registers]]
channel = "coil1"
table = "coil"
address = 1
type = "bool"

[[modbus.registers]]
channel = "coil7"
table = "coil"
address = 7
type = "bool"

[[modbus.registers]]
channel = "di1"
table = "discrete"
address = 1
type = "bool"
"#;

fn addr(port: u16) -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], port))
}

#[tokio::test]
async fn values_from_pymodbus_decode_exactly() {
    let (_server, port) = start_pymodbus(0);
    let dir = tempfile::tempdir().unwrap();
    let profile = profile_from_toml(dir.path(), "pymodbus-map", PROFILE);
    let dev = tcp_device("py", profile.clone(), addr(port), 1, 100, 1000);
    let stats = dev.stats.clone();
    let (tx, mut rx) = mpsc::channel(64);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run_tcp(dev, tx, cancel.clone()));
    let all = collect_until(&mut rx, Duration::from_secs(15), |a| {
        a.iter().filter(|r| &*r.channel == "missing").count() >= 2
            && profile
                .profile
                .channels
                .keys()
                .filter(|c| *c != "missing")
                .all(|c| has(a, c))
    })
    .await;
    cancel.cancel();
    task.await.unwrap().unwrap();

    let v = |c: &str| scalar(last(&all, c).unwrap_or_else(|| panic!("no reading of {c}"))).unwrap();
    assert_eq!(v("flow") as f32, 123.456_f32, "word-swapped f32");
    assert_eq!(v("count"), -123_456_789.0);
    assert_eq!(v("total"), 3_000_000_000.0, "word-swapped u32");
    assert!((v("pressure") - 25.34).abs() < 1e-9, "{}", v("pressure"));
    assert!((v("temp") + 123.4).abs() < 1e-9, "{}", v("temp"));
    assert_eq!(v("energy"), 1234.5678);
    assert_eq!(
        [v("coil0"), v("coil1"), v("coil7"), v("di1")],
        [1.0, 0.0, 1.0, 1.0]
    );
    assert_eq!(
        last(&all, "ident").unwrap().value,
        Value::Text("PYMODBUS-3".into())
    );
    let missing: Vec<_> = all.iter().filter(|r| &*r.channel == "missing").collect();
    assert!(missing
        .iter()
        .all(|r| r.quality == 0.0 && r.flags == ["modbus_exception:2"]));
    assert!(stats.error_count("exception") >= 2);
    assert_eq!(stats.error_count("timeout"), 0);
}

#[tokio::test]
async fn a_unit_that_never_answers_times_out_and_is_retried() {
    let (_server, port) = start_pymodbus(0);
    let dir = tempfile::tempdir().unwrap();
    let profile = profile_from_toml(dir.path(), "pymodbus-map", PROFILE);
    // Unit 7 does not exist on this server: pymodbus stays silent.
    let dead = tcp_device("dead", profile.clone(), addr(port), 7, 100, 200);
    let live = tcp_device("live", profile, addr(port), 1, 100, 1000);
    let (dead_stats, live_stats) = (dead.stats.clone(), live.stats.clone());
    let (tx, mut rx) = mpsc::channel(256);
    let cancel = CancellationToken::new();
    let t1 = tokio::spawn(run_tcp(dead, tx.clone(), cancel.clone()));
    let t2 = tokio::spawn(run_tcp(live, tx, cancel.clone()));
    let all = collect_until(&mut rx, Duration::from_secs(15), |a| {
        dead_stats.error_count("timeout") >= 2
            && a.iter().any(|r| &*r.device == "dead")
            && a.iter()
                .any(|r| &*r.device == "live" && &*r.channel == "flow")
    })
    .await;
    cancel.cancel();
    t1.await.unwrap().unwrap();
    t2.await.unwrap().unwrap();
    let dead: Vec<_> = all.iter().filter(|r| &*r.device == "dead").collect();
    assert!(!dead.is_empty() && dead.iter().all(|r| r.quality == 0.0));
    assert!(
        dead_stats.error_count("timeout") >= 2,
        "retried after the first timeout"
    );
    // (`connected` is about the TCP connection, which the gateway accepts; what
    // shows the dead unit is that no poll ever succeeded.)
    assert_eq!(dead_stats.last_success_us.load(Ordering::Relaxed), 0);
    assert_eq!(dead_stats.polls.load(Ordering::Relaxed), 0);
    // The other device on the same server is unaffected.
    assert!(all
        .iter()
        .any(|r| &*r.device == "live" && &*r.channel == "flow" && r.quality == 1.0));
    assert_eq!(live_stats.error_count("timeout"), 0);
}

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    read: ReadArgs,
}

async fn read_tool(args: &[&str]) -> anyhow::Result<String> {
    let cli =
        Cli::try_parse_from(std::iter::once("edgegw-modbus-read").chain(args.iter().copied()))?;
    let mut out = Vec::new();
    read_command(cli.read, &mut out).await?;
    Ok(String::from_utf8(out)?)
}

#[tokio::test]
async fn order_all_shows_the_word_swapped_float_in_the_cdab_column() {
    let (_server, port) = start_pymodbus(0);
    let target = format!("127.0.0.1:{port}");
    let out = read_tool(&[
        "--tcp",
        &target,
        "--unit",
        "1",
        "--table",
        "holding",
        "--address",
        "0",
        "--count",
        "2",
        "--type",
        "f32",
        "--order",
        "all",
    ])
    .await
    .unwrap();
    // Raw registers in hex: the word-swapped 123.456 (42F6 E979).
    assert!(out.contains("0xE979"), "{out}");
    assert!(out.contains("0x42F6"), "{out}");
    let header = out
        .lines()
        .find(|l| l.contains("ABCD") && l.contains("DCBA"))
        .unwrap_or_else(|| panic!("no column header: {out}"));
    let cols: Vec<&str> = header.split_whitespace().collect();
    assert_eq!(cols, ["address", "ABCD", "BADC", "CDAB", "DCBA"]);
    let row: Vec<&str> = out
        .lines()
        .skip_while(|l| *l != header)
        .nth(1)
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(row.len(), 5, "{out}");
    assert_eq!(row[0], "0");
    assert_eq!(row[3], "123.456", "CDAB column: {out}");
    assert!(row[1] != "123.456" && row[2] != "123.456" && row[4] != "123.456");

    // Bits and a single order.
    let out = read_tool(&[
        "--tcp",
        &target,
        "--table",
        "coil",
        "--address",
        "0",
        "--count",
        "4",
    ])
    .await
    .unwrap();
    let bits: Vec<&str> = out
        .lines()
        .skip(2)
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect();
    assert_eq!(bits, ["1", "0", "1", "1"], "{out}");

    // An exception is an error naming the code.
    let err = read_tool(&["--tcp", &target, "--table", "holding", "--address", "100"])
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("exception 2"), "{err:#}");
    // A silent unit is a timeout, not a hang.
    let err = read_tool(&[
        "--tcp",
        &target,
        "--unit",
        "9",
        "--table",
        "holding",
        "--address",
        "0",
        "--timeout-ms",
        "200",
    ])
    .await
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("no answer within 200 ms"),
        "{err:#}"
    );
}

#[tokio::test]
async fn polling_resumes_after_pymodbus_is_killed_and_restarted() {
    let (server, port) = start_pymodbus(0);
    let dir = tempfile::tempdir().unwrap();
    let profile = profile_from_toml(dir.path(), "pymodbus-map", PROFILE);
    let dev = tcp_device("py", profile, addr(port), 1, 100, 500);
    let stats = dev.stats.clone();
    let (tx, mut rx) = mpsc::channel(1024);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run_tcp(dev, tx, cancel.clone()));
    collect_until(&mut rx, Duration::from_secs(15), |a| has(a, "flow")).await;
    let tasks_before = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();

    drop(server); // kill -9 and reap
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while stats.connected.load(Ordering::Relaxed) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!stats.connected.load(Ordering::Relaxed));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let connects_failed = stats.error_count("connect");
    assert!(
        connects_failed >= 1,
        "reconnect attempts while the server is down"
    );

    let (_server, again) = start_pymodbus(port);
    assert_eq!(again, port);
    while rx.try_recv().is_ok() {}
    let fresh = collect_until(&mut rx, Duration::from_secs(40), |a| {
        a.iter().any(|r| &*r.channel == "flow" && r.quality == 1.0)
    })
    .await;
    assert!(
        fresh
            .iter()
            .any(|r| &*r.channel == "flow" && r.quality == 1.0),
        "polling did not resume after the restart"
    );
    assert!(stats.connected.load(Ordering::Relaxed));
    let tasks_after = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    assert!(
        tasks_after <= tasks_before,
        "{tasks_before} -> {tasks_after}"
    );
    cancel.cancel();
    task.await.unwrap().unwrap();
}
