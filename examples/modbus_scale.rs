//! Many Modbus TCP devices in one process: N `run_tcp` tasks (default 500), each
//! reading 30 registers as 3 blocks of 10 every second, spread over the given server
//! ports, into one channel that is drained and counted. `scripts/bench-modbus`
//! measures this process's CPU and RSS from /proc while it runs.
//!
//! Usage: modbus_scale SECONDS DEVICES PORT[,PORT...] [INTERVAL_MS]

use edgegw::config::{DeviceConfig, ModbusTcpTransport};
use edgegw::profiles::{LoadedProfile, Profile};
use edgegw::sources::modbus::run_tcp;
use edgegw::sources::{DeviceSpec, DeviceStats, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

fn profile() -> anyhow::Result<Profile> {
    let mut s = String::from("vendor = \"Bench\"\nmodel = \"30x3\"\n");
    let mut regs = String::from("[modbus]\nmax_gap = 8\n");
    for b in 0..3u16 {
        for i in 0..10u16 {
            s.push_str(&format!(
                "[channels.r{b}_{i}]\nsensor_type = \"general\"\nunit = \"1\"\n"
            ));
            regs.push_str(&format!(
                "[[modbus.registers]]\nchannel = \"r{b}_{i}\"\ntable = \"holding\"\naddress = {}\ntype = \"u16\"\n",
                b * 100 + i
            ));
        }
    }
    Ok(toml::from_str(&format!("{s}\n{regs}"))?)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        anyhow::bail!("usage: modbus_scale SECONDS DEVICES PORT[,PORT...] [INTERVAL_MS]");
    }
    let seconds: u64 = args[1].parse()?;
    let devices: usize = args[2].parse()?;
    let ports: Vec<u16> = args[3]
        .split(',')
        .map(|p| p.parse())
        .collect::<Result<_, _>>()?;
    let interval_ms: u64 = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(1000);
    let profile = Arc::new(LoadedProfile {
        name: "bench-30x3".into(),
        path: "bench-30x3.toml".into(),
        profile: profile()?,
    });
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
        let cancel = CancellationToken::new();
        let mut stats = Vec::new();
        let mut tasks = Vec::new();
        for d in 0..devices {
            let st = Arc::new(DeviceStats::default());
            stats.push(st.clone());
            let spec = DeviceSpec {
                config: DeviceConfig {
                    id: format!("dev{d}"),
                    profile: "bench-30x3".into(),
                    enabled: true,
                    poll_interval_ms: interval_ms,
                    location: String::new(),
                    group: None,
                    model: None,
                    machine: None,
                    detection: None,
                    modbus_tcp: Some(ModbusTcpTransport {
                        host: "127.0.0.1".into(),
                        port: ports[d % ports.len()],
                        unit_id: 1,
                        timeout_ms: 1000,
                        max_gap: None,
                    }),
                    modbus_rtu: None,
                    serial: None,
                    mqtt: None,
                },
                profile: profile.clone(),
                stats: st,
            };
            tasks.push(tokio::spawn(run_tcp(spec, tx.clone(), cancel.clone())));
        }
        drop(tx);
        let started = Instant::now();
        let mut values: u64 = 0;
        let mut bad: u64 = 0;
        let mut last_report = Instant::now();
        let mut last_values = 0;
        let end = tokio::time::Instant::now() + Duration::from_secs(seconds);
        loop {
            tokio::select! {
                b = rx.recv() => match b {
                    Some(b) => for r in b.readings {
                        if matches!(r.value, Value::Scalar(_)) && r.quality > 0.0 { values += 1 } else { bad += 1 }
                    },
                    None => break,
                },
                _ = tokio::time::sleep_until(end) => break,
            }
            if last_report.elapsed() >= Duration::from_secs(5) {
                let s = last_report.elapsed().as_secs_f64();
                eprintln!("{:.0} values/s", (values - last_values) as f64 / s);
                last_values = values;
                last_report = Instant::now();
            }
        }
        cancel.cancel();
        for t in tasks {
            let _ = t.await;
        }
        let s = started.elapsed().as_secs_f64();
        let connected = stats.iter().filter(|s| s.polls.load(Ordering::Relaxed) > 0).count();
        let errors: u64 = stats
            .iter()
            .map(|s| s.errors.lock().map(|m| m.values().sum::<u64>()).unwrap_or(0))
            .sum();
        println!(
            "{devices} devices, {} ports, {s:.1} s: {values} values ({:.0}/s), {bad} failed readings, {errors} errors, {connected} devices polled",
            ports.len(),
            values as f64 / s
        );
    });
    Ok(())
}
