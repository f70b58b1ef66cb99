//! `edgegw demo`: the main job on embedded defaults, with no services.
//!
//! An in-process simulated Modbus TCP vibration transmitter (the shipped Acme VT-420
//! profile) replays a real bearing recording — the held-back part of the healthy CWRU
//! recording, then the inner-race, outer-race and ball faults — while the real
//! pipeline polls it: the same config loading, Modbus source, processor, model and
//! SQLite outbox as `edgegw run`, in a temporary directory. The channel first learns
//! its own healthy baseline (2 s here, a day on a real machine), then scores every
//! window against it; the device config names its bearing (6205) and shaft speed, so
//! alerts name the likely component. Alerts are printed as they happen; a report at
//! the end says what was read, scored and stored.
//!
//! Everything it needs is compiled in (profile, recordings, models), so it works from
//! a fresh clone and from an installed binary alike.

use crate::app::Gateway;
use crate::record::{now_us, AlertState};
use crate::sources::modbus::Simulator;
use anyhow::Context;
use std::io::Write;
use std::time::Duration;

const PROFILE: &str = include_str!("../hardware-profiles/acme-vt420.toml");
/// CWRU 12 kHz, healthy bearing: the last 30 % of the recording, which the shipped
/// model never saw in training.
const HEALTHY: &[u8] = include_bytes!("../testdata/cwru/normal_12k_holdout.f32");
/// CWRU 12 kHz, 0.007 in faults: inner race, outer race, ball (2 s each).
const FAULTS: [(&str, &[u8]); 3] = [
    (
        "inner-race fault (CWRU IR007)",
        include_bytes!("../testdata/cwru/IR007_12k.f32"),
    ),
    (
        "outer-race fault (CWRU OR007)",
        include_bytes!("../testdata/cwru/OR007_12k.f32"),
    ),
    (
        "ball fault (CWRU B007)",
        include_bytes!("../testdata/cwru/B007_12k.f32"),
    ),
];

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// What the demo saw, for its report and for tests.
#[derive(Debug, Clone, Default)]
pub struct DemoReport {
    pub readings: u64,
    pub windows: u64,
    pub alerts_while_healthy: u64,
    pub alerts_while_faulty: u64,
    pub outbox_records: u64,
}

/// Runs the demo for `seconds` and prints to stdout.
pub async fn run(seconds: u64) -> anyhow::Result<()> {
    let report = run_with(seconds, &mut std::io::stdout()).await?;
    if report.alerts_while_faulty == 0 || report.alerts_while_healthy > 0 {
        // Not an error of the program, but the demo did not show what it promises:
        // say so plainly rather than pretend.
        println!("\nNote: the detector did not behave as expected in this run.");
    }
    Ok(())
}

/// The demo, writing its output to `out`.
pub async fn run_with(seconds: u64, out: &mut (impl Write + Send)) -> anyhow::Result<DemoReport> {
    let seconds = seconds.max(4);
    let dir = tempfile::Builder::new()
        .prefix("edgegw-demo-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let profiles = dir.path().join("hardware-profiles");
    std::fs::create_dir(&profiles)?;
    std::fs::write(profiles.join("acme-vt420.toml"), PROFILE)?;

    // The simulated sensor, on a port of its own.
    let mut diags = Vec::new();
    let profile = crate::profiles::load_profile(&profiles.join("acme-vt420.toml"), &mut diags)
        .context("the embedded demo profile is invalid")?;
    let sim = Simulator::new(&profile.profile, Some(1)).context("cannot build the simulator")?;
    sim.set_waveform(f32s(HEALTHY));
    let (addr, server) = sim
        .bind("127.0.0.1:0".parse()?)
        .await
        .context("cannot start the simulated sensor")?;

    // A gateway config like a technician would write, read the normal way.
    let config = format!(
        r#"[gateway]
id = "demo-gateway"
site = "edgegw demo"
state_dir = "{state}"
profile_dir = "hardware-profiles"

[[devices]]
id = "pump7-de"
profile = "acme-vt420"
location = "Pump 7, drive-end bearing (simulated)"
[devices.modbus_tcp]
host = "127.0.0.1"
port = {port}
unit_id = 1
timeout_ms = 1000
[devices.machine]
shaft_rpm = 1797
bearing = "6205"
[devices.detection]
# Learn for 2 s of the healthy recording (a day on a real machine). The waveform
# gives about 12 windows a second; the transmitter's scalar registers (one reading a
# second) need 20 samples and keep learning through a short demo.
learn = "2s"
learn_samples = 24
learn_min_samples = 20

[http]
enabled = false
"#,
        state = dir.path().display(),
        port = addr.port()
    );
    let config_path = dir.path().join("edgegw.toml");
    std::fs::write(&config_path, config)?;
    let loaded = crate::config::load(&config_path).map_err(|diags| {
        let lines: Vec<String> = diags.iter().map(|d| d.to_string()).collect();
        anyhow::anyhow!("the demo config is invalid:\n{}", lines.join("\n"))
    })?;

    writeln!(
        out,
        "edgegw demo: a simulated Acme VT-420 vibration transmitter on {addr} replays real\n\
         bearing vibration (CWRU, 12 kHz); the gateway polls its 2048-sample waveform\n\
         registers, computes vibration features per window, learns the channel's healthy\n\
         baseline for 2 s and then scores every window against it with the shipped\n\
         relative model `vibration-relative`. Outbox: {}\n",
        dir.path().join("outbox.db").display()
    )?;
    let gateway = Gateway::start(&loaded).await?;
    let mut alerts = gateway.subscribe_alerts();

    let start = tokio::time::Instant::now();
    let t0_us = now_us();
    let healthy_for = Duration::from_secs_f64(seconds as f64 * 0.4);
    let end = start + Duration::from_secs(seconds);
    let mut switch_us: Option<i64> = None;
    let mut report = DemoReport::default();
    writeln!(
        out,
        "[  0.0 s] playing the healthy bearing; the channel learns its baseline for 2 s"
    )?;
    let switch = tokio::time::sleep_until(start + healthy_for);
    tokio::pin!(switch);
    let done = tokio::time::sleep_until(end);
    tokio::pin!(done);
    loop {
        tokio::select! {
            _ = &mut switch, if switch_us.is_none() => {
                sim.set_recordings(FAULTS.iter().map(|(_, b)| f32s(b)).collect());
                switch_us = Some(now_us());
                writeln!(out, "[{:5.1} s] the recording turns faulty: {}, then {}, then {}",
                    start.elapsed().as_secs_f64(), FAULTS[0].0, FAULTS[1].0, FAULTS[2].0)?;
            }
            a = alerts.recv() => {
                let Ok(a) = a else { continue };
                let faulty = switch_us.is_some_and(|s| a.ts_us >= s);
                if a.state == AlertState::Open {
                    if faulty {
                        report.alerts_while_faulty += 1;
                    } else {
                        report.alerts_while_healthy += 1;
                    }
                }
                let t = (a.ts_us - t0_us) as f64 / 1e6;
                let what = match a.state {
                    AlertState::Open => "ALERT",
                    AlertState::Update if a.evidence.get("escalated_from_severity").is_some() => "escalated",
                    AlertState::Update => "update",
                    AlertState::Resolved => "resolved",
                };
                let score = a.evidence.get("score").and_then(|v| v.as_f64());
                let threshold = a.evidence.get("threshold").and_then(|v| v.as_f64());
                let component = a
                    .evidence
                    .pointer("/bearing/likely_component")
                    .and_then(|c| c.as_str())
                    .map(|c| format!(", likely component: {}", c.replace('_', " ")))
                    .unwrap_or_default();
                writeln!(
                    out,
                    "[{t:5.1} s] {what}: {} on {} — severity {}, confidence {:.2}{}{component}",
                    a.anomaly_type,
                    a.sensor_id,
                    a.severity,
                    a.confidence,
                    match (score, threshold) {
                        (Some(s), Some(th)) => format!(", score {s:.1} (threshold {th:.1})"),
                        _ => String::new(),
                    }
                )?;
            }
            _ = &mut done => break,
        }
    }

    let result = gateway.shutdown().await?;
    server.abort();
    let stats = crate::outbox::Outbox::open_read_only(&dir.path().join("outbox.db"))
        .and_then(|o| o.stats())
        .context("cannot read the outbox")?;
    report.readings = result.processor.readings;
    report.windows = result.processor.windows;
    report.outbox_records = stats.total_records;
    let depth: Vec<String> = stats
        .depth
        .iter()
        .map(|(k, v)| {
            format!(
                "{v} {}",
                if k == "summary" {
                    "summaries".to_string()
                } else {
                    format!("{k}s")
                }
            )
        })
        .collect();
    writeln!(out, "\nReport after {seconds} s")?;
    writeln!(out, "  waveform blocks polled: {}", result.processor.blocks)?;
    writeln!(
        out,
        "  scalar readings:        {}",
        result.processor.readings
    )?;
    writeln!(
        out,
        "  windows:                {}",
        result.processor.windows
    )?;
    writeln!(
        out,
        "  learning a baseline:    {} windows and readings ({} baselines learned)",
        result.processor.commissioning, result.processor.baselines_learned
    )?;
    writeln!(
        out,
        "  scored:                 {} by a model bundle, {} by the built-in rule",
        result.processor.scored_by_model, result.processor.scored_by_fallback
    )?;
    writeln!(
        out,
        "  alerts while healthy:   {}",
        report.alerts_while_healthy
    )?;
    writeln!(
        out,
        "  alerts while faulty:    {}",
        report.alerts_while_faulty
    )?;
    writeln!(
        out,
        "  outbox:                 {} records ({}), {} bytes",
        stats.total_records,
        depth.join(", "),
        stats.used_bytes
    )?;
    writeln!(
        out,
        "  (no upstream is configured in the demo, so the records stay in the outbox)"
    )?;
    Ok(report)
}
