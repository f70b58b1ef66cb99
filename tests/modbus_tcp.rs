//! Modbus TCP source against the in-process simulator (tokio-modbus's server) on
//! 127.0.0.1 port 0: example profiles, request counts, exceptions, reconnects,
//! timeouts, cancellation and waveform replay.

#[path = "support/modbus.rs"]
mod support;

use edgegw::sources::modbus::{plan_device, run_tcp, Simulator};
use edgegw::sources::{SourceBatch, Value};
use std::sync::atomic::Ordering;
use std::time::Duration;
use support::*;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

fn localhost0() -> std::net::SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

#[tokio::test]
async fn example_profiles_read_from_the_simulator() {
    for file in ["acme-vt420.toml", "tempco-rtt20.toml"] {
        let profile = example_profile(file);
        let sim = Simulator::new(&profile.profile, None).unwrap();
        let (addr, server) = sim.bind(localhost0()).await.unwrap();
        let dev = tcp_device("dev1", profile.clone(), addr, 1, 200, 1000);
        let stats = dev.stats.clone();
        let (tx, mut rx) = mpsc::channel::<SourceBatch>(64);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run_tcp(dev, tx, cancel.clone()));

        let channels: Vec<String> = profile.profile.channels.keys().cloned().collect();
        let all = collect_until(&mut rx, Duration::from_secs(10), |all| {
            channels.iter().all(|c| has(all, c))
        })
        .await;
        cancel.cancel();
        task.await.unwrap().unwrap();
        server.abort();

        for (name, ch) in &profile.profile.channels {
            let r = last(&all, name).unwrap_or_else(|| panic!("{file}: no reading of {name}"));
            assert_eq!(&*r.sensor_id, format!("dev1.{name}"));
            assert_eq!(r.quality, 1.0, "{file} {name}: {:?}", r.flags);
            match &r.value {
                Value::Scalar(v) => {
                    let lo = ch.min.unwrap_or(f64::NEG_INFINITY);
                    let hi = ch.max.unwrap_or(f64::INFINITY);
                    assert!(
                        *v >= lo && *v <= hi,
                        "{file} {name}: {v} outside {lo}..{hi}"
                    );
                }
                Value::Block {
                    sample_rate_hz,
                    samples,
                } => {
                    assert_eq!(*sample_rate_hz, 12_000.0);
                    assert_eq!(samples.len(), 1024, "{file} {name}");
                    // The generated signal is in g, well inside the +-10 g range.
                    assert!(samples.iter().all(|s| s.abs() < 10.0));
                    assert!(samples.iter().any(|s| *s != 0.0));
                }
                v => panic!("{file} {name}: unexpected {v:?}"),
            }
        }
        // No reading failed.
        assert!(
            all.iter().all(|r| r.quality == 1.0),
            "{file}: failed readings"
        );
        assert!(stats.polls.load(Ordering::Relaxed) > 0);
        assert_eq!(stats.error_count("exception"), 0);
        assert!(stats.last_success_us.load(Ordering::Relaxed) > 0);
    }
}

/// 30 scattered values over four tables, gaps, a forbidden range: the server sees
/// exactly the requests the plan predicts (14, counted by hand in the comments).
#[tokio::test]
async fn thirty_scattered_registers_take_exactly_the_planned_requests() {
    let dir = tempfile::tempdir().unwrap();
    let mut toml = String::from(
        "[modbus]\nmax_gap = 4\n\
         forbidden = [{ table = \"holding\", start = 101, end = 105 }]\n",
    );
    // holding: 0..6 | 20..24 | 30..31 | 40..44 | 60..64 | 100 | 110 | 120  -> 8
    // input:   0..9                                                         -> 1
    // coil:    0..2 | 10 | 100                                              -> 3
    // discrete: 0..2 | 50                                                   -> 2
    let values: &[(&str, u16, &str)] = &[
        ("holding", 0, "u16"),
        ("holding", 1, "u16"),
        ("holding", 2, "u16"),
        ("holding", 5, "f32"),
        ("holding", 20, "u16"),
        ("holding", 22, "u16"),
        ("holding", 24, "u16"),
        ("holding", 30, "i32"),
        ("holding", 40, "u16"),
        ("holding", 41, "u16"),
        ("holding", 42, "u16"),
        ("holding", 43, "u16"),
        ("holding", 44, "u16"),
        ("holding", 60, "f64"),
        ("holding", 64, "u16"),
        ("holding", 100, "u16"),
        ("holding", 110, "u16"),
        ("holding", 120, "u16"),
        ("input", 0, "u16"),
        ("input", 3, "u16"),
        ("input", 6, "u16"),
        ("input", 9, "u16"),
        ("coil", 0, "bool"),
        ("coil", 1, "bool"),
        ("coil", 2, "bool"),
        ("coil", 10, "bool"),
        ("coil", 100, "bool"),
        ("discrete", 0, "bool"),
        ("discrete", 2, "bool"),
        ("discrete", 50, "bool"),
    ];
    assert_eq!(values.len(), 30);
    let mut channels = String::new();
    for (i, (table, addr, ty)) in values.iter().enumerate() {
        channels.push_str(&format!(
            "[channels.v{i}]\nsensor_type = \"general\"\nunit = \"1\"\nmin = 0.0\nmax = 1000.0\n"
        ));
        toml.push_str(&format!(
            "\n[[modbus.registers]]\nchannel = \"v{i}\"\ntable = \"{table}\"\naddress = {addr}\ntype = \"{ty}\"\n"
        ));
    }
    let toml = format!("vendor = \"Test\"\nmodel = \"Scatter-30\"\n{channels}\n{toml}");
    let profile = profile_from_toml(dir.path(), "scatter30", &toml);
    let sim = Simulator::new(&profile.profile, None).unwrap();
    let (addr, server) = sim.bind(localhost0()).await.unwrap();
    // One cycle only: the next one is a minute away.
    let dev = tcp_device("scatter", profile.clone(), addr, 1, 60_000, 1000);
    let plan = plan_device(&dev.config, &profile.profile).unwrap();
    assert_eq!(
        plan.request_count(),
        14,
        "{}",
        edgegw::sources::modbus::explain(&plan)
    );

    let (tx, mut rx) = mpsc::channel(8);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run_tcp(dev, tx, cancel.clone()));
    let batch = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    cancel.cancel();
    task.await.unwrap().unwrap();
    server.abort();
    // One batch per poll group, with every value, all clean.
    assert_eq!(batch.readings.len(), 30);
    assert!(batch.readings.iter().all(|r| r.quality == 1.0));
    assert_eq!(sim.requests(), 14);
}

#[tokio::test]
async fn an_exception_is_data_and_polling_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let base = r#"
vendor = "Test"
model = "Exc"
[channels.good]
sensor_type = "temperature"
unit = "°C"
[channels.missing]
sensor_type = "temperature"
unit = "°C"
[modbus]
max_gap = 0
[[modbus.registers]]
channel = "good"
table = "holding"
address = 0
type = "i16"
scale = 0.1
"#;
    // The device's profile reads a register the (simulated) device does not have.
    let with_missing = format!(
        "{base}\n[[modbus.registers]]\nchannel = \"missing\"\ntable = \"holding\"\naddress = 50\ntype = \"u16\"\n"
    );
    let served = profile_from_toml(dir.path(), "served", base);
    let read = profile_from_toml(dir.path(), "read", &with_missing);
    let sim = Simulator::new(&served.profile, None).unwrap();
    let (addr, server) = sim.bind(localhost0()).await.unwrap();
    let dev = tcp_device("exc", read, addr, 1, 50, 1000);
    let stats = dev.stats.clone();
    let (tx, mut rx) = mpsc::channel(64);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run_tcp(dev, tx, cancel.clone()));
    let all = collect_until(&mut rx, Duration::from_secs(10), |all| {
        all.iter().filter(|r| &*r.channel == "missing").count() >= 5
    })
    .await;
    cancel.cancel();
    task.await.unwrap().unwrap();
    server.abort();

    let missing: Vec<_> = all.iter().filter(|r| &*r.channel == "missing").collect();
    assert!(missing.len() >= 5);
    for r in &missing {
        assert_eq!(r.quality, 0.0);
        assert_eq!(r.value, Value::Missing);
        assert_eq!(r.flags, vec!["modbus_exception:2".to_string()]);
    }
    // The good register kept being read on the same connection.
    let good: Vec<_> = all.iter().filter(|r| &*r.channel == "good").collect();
    assert!(good.len() >= 5);
    assert!(good.iter().all(|r| r.quality == 1.0));
    assert!(stats.error_count("exception") >= 5);
    assert_eq!(
        stats.error_count("timeout") + stats.error_count("transport"),
        0
    );
    assert_eq!(
        sim.connections_total(),
        1,
        "an exception must not cause a reconnect"
    );
}

#[tokio::test]
async fn reconnects_after_the_server_restarts_without_leaking_tasks() {
    let profile = example_profile("tempco-rtt20.toml");
    let sim = Simulator::new(&profile.profile, None).unwrap();
    let (addr, mut server) = sim.bind(localhost0()).await.unwrap();
    let dev = tcp_device("re", profile, addr, 1, 50, 500);
    let stats = dev.stats.clone();
    let (tx, mut rx) = mpsc::channel(256);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run_tcp(dev, tx, cancel.clone()));
    let first = collect_until(&mut rx, Duration::from_secs(10), |a| a.len() >= 9).await;
    assert!(first.len() >= 9);
    let tasks_before = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();

    let rounds = 3;
    for round in 0..rounds {
        server.abort();
        let _ = (&mut server).await;
        // The source notices (the open connection is closed by the server).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while stats.connected.load(Ordering::Relaxed) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            !stats.connected.load(Ordering::Relaxed),
            "round {round}: still connected"
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
        // Restart on the same port.
        let mut bound = None;
        for _ in 0..50 {
            match sim.bind(addr).await {
                Ok(b) => {
                    bound = Some(b);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        let (again, handle) = bound.expect("cannot rebind the simulator's port");
        assert_eq!(again, addr);
        server = handle;
        // Drain what was sent while down, then see fresh clean readings.
        while rx.try_recv().is_ok() {}
        let fresh = collect_until(&mut rx, Duration::from_secs(15), |a| {
            a.iter().filter(|r| r.quality == 1.0).count() >= 3
        })
        .await;
        assert!(
            fresh.iter().filter(|r| r.quality == 1.0).count() >= 3,
            "round {round}: polling did not resume"
        );
        assert!(stats.connected.load(Ordering::Relaxed));
    }
    // One connection per server life, none left open besides the current one.
    assert_eq!(sim.connections_total(), rounds + 1);
    assert_eq!(sim.connections_open(), 1);
    let tasks_after = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    assert!(
        tasks_after <= tasks_before,
        "tasks grew from {tasks_before} to {tasks_after} over {rounds} reconnects"
    );
    assert!(stats.error_count("transport") + stats.error_count("timeout") >= rounds);
    assert!(stats.error_count("connect") >= 1);
    cancel.cancel();
    task.await.unwrap().unwrap();
    server.abort();
}

#[tokio::test]
async fn a_hung_device_times_out_and_the_source_reconnects() {
    let profile = example_profile("tempco-rtt20.toml");
    let sim = Simulator::new(&profile.profile, None).unwrap();
    let (addr, server) = sim.bind(localhost0()).await.unwrap();
    let dev = tcp_device("hung", profile, addr, 1, 50, 200);
    let stats = dev.stats.clone();
    let (tx, mut rx) = mpsc::channel(256);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run_tcp(dev, tx, cancel.clone()));
    collect_until(&mut rx, Duration::from_secs(10), |a| a.len() >= 3).await;

    sim.set_silent(true);
    let timeouts = collect_until(&mut rx, Duration::from_secs(10), |a| {
        a.iter()
            .filter(|r| r.flags.iter().any(|f| f == "timeout"))
            .count()
            >= 2
    })
    .await;
    assert!(timeouts
        .iter()
        .any(|r| r.quality == 0.0 && r.flags == ["timeout"]));
    assert!(stats.error_count("timeout") >= 1);
    // Each timeout drops the connection; the next attempt opens a new one.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while sim.connections_total() < 3 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        sim.connections_total() >= 3,
        "a timeout must drop the connection and open a new one"
    );
    assert!(stats.error_count("timeout") >= 2);

    sim.set_silent(false);
    let back = collect_until(&mut rx, Duration::from_secs(15), |a| {
        a.iter().filter(|r| r.quality == 1.0).count() >= 3
    })
    .await;
    assert!(back.iter().filter(|r| r.quality == 1.0).count() >= 3);
    // Connections of timed-out sessions were closed by the client, not left open.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(sim.connections_open(), 1);
    cancel.cancel();
    task.await.unwrap().unwrap();
    server.abort();
}

#[tokio::test]
async fn cancel_stops_the_task_and_closes_the_channel() {
    let profile = example_profile("acme-vt420.toml");
    let sim = Simulator::new(&profile.profile, None).unwrap();
    let (addr, server) = sim.bind(localhost0()).await.unwrap();
    let dev = tcp_device("c", profile, addr, 1, 100, 1000);
    let (tx, mut rx) = mpsc::channel(256);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run_tcp(dev, tx, cancel.clone()));
    collect_until(&mut rx, Duration::from_secs(10), |a| a.len() >= 5).await;
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("run_tcp did not stop after cancel")
        .unwrap()
        .unwrap();
    // Everything sent before the stop is still delivered, then the channel closes.
    let mut batches = 0;
    while let Some(b) = rx.recv().await {
        // A waveform block is either whole or absent: never half a group.
        for r in &b.readings {
            if let Value::Block { samples, .. } = &r.value {
                assert_eq!(samples.len(), 1024);
            }
        }
        batches += 1;
    }
    assert!(batches < 1000);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        sim.connections_open(),
        0,
        "the connection is closed on stop"
    );
    server.abort();
}

#[tokio::test]
async fn replayed_recordings_tile_across_consecutive_blocks() {
    let profile = example_profile("acme-vt420.toml");
    let sim = Simulator::new(&profile.profile, None).unwrap();
    // A ramp in g, within +-10 g; 3000 samples is not a multiple of 1024, so the
    // loop point falls inside a block.
    let ramp: Vec<f32> = (0..3000).map(|i| (i as f32) * 0.002 - 3.0).collect();
    sim.set_waveform(ramp.clone());
    let (addr, server) = sim.bind(localhost0()).await.unwrap();
    let dev = tcp_device("w", profile, addr, 1, 1000, 1000);
    let (tx, mut rx) = mpsc::channel(256);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run_tcp(dev, tx, cancel.clone()));
    let all = collect_until(&mut rx, Duration::from_secs(10), |a| {
        a.iter().filter(|r| &*r.channel == "accel").count() >= 4
    })
    .await;
    cancel.cancel();
    task.await.unwrap().unwrap();
    server.abort();
    let blocks: Vec<&[f32]> = all
        .iter()
        .filter_map(|r| match &r.value {
            Value::Block { samples, .. } => Some(&samples[..]),
            _ => None,
        })
        .collect();
    assert!(blocks.len() >= 4);
    // i16 with scale 0.000305 g per count: compare within half a count.
    let tol = 0.00016;
    for (n, b) in blocks.iter().take(4).enumerate() {
        for (i, s) in b.iter().enumerate() {
            let want = ramp[(n * 1024 + i) % ramp.len()];
            assert!(
                (s - want).abs() < tol,
                "block {n} sample {i}: {s} vs {want}"
            );
        }
    }
    // Timestamps increase block to block.
    let ts: Vec<i64> = all
        .iter()
        .filter(|r| matches!(r.value, Value::Block { .. }))
        .map(|r| r.ts_us)
        .collect();
    assert!(ts.windows(2).all(|w| w[0] < w[1]));
}
