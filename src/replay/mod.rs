//! `edgegw replay`: feeds a recording through the real pipeline offline, at full speed,
//! and reports what detection made of it.
//!
//! This is how a reliability engineer tunes a device before it goes live, and how
//! docs/DETECTION.md is produced from the Rust code: the same [`Processor`] the daemon
//! runs, built from the same gateway config (the device's profile, `[pipeline]`,
//! `[devices.detection]`, `[devices.machine]`), fed readings made from files
//! ([`input`]) instead of a source. Nothing is written to the outbox or sent upstream;
//! baselines start empty (a replay commissions the channel from the recording itself)
//! and are kept in memory.
//!
//! Output: the alert timeline (stdout), an optional CSV of every window or reading
//! with its features and score, and an optional JSON report (per input: units scored,
//! flagged, first flagged; the alerts; the channel's baseline).

pub mod input;

use crate::config::{DeviceConfig, Loaded};
use crate::inference::{shared, ModelBundle, ModelRegistry};
use crate::pipeline::{MemoryStateStore, Processor};
use crate::record::{format_rfc3339, AlertRecord, AlertState, Record, TimestampUs};
use crate::sources::{ChannelId, Reading, Value};
use input::{InputFormat, InputOptions, Recording, ReplayItem, Snapshot};
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What to replay and how (the CLI's arguments).
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// Gateway config whose device, profile and detection settings are used.
    #[arg(long, env = "EDGEGW_CONFIG", default_value = crate::config::DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
    /// The channel the recording feeds: DEVICE.CHANNEL (a device of the config, a
    /// channel of its profile).
    #[arg(long)]
    pub sensor: String,
    /// Recording files, played one after the other on the same channel with
    /// continuous time (e.g. a healthy recording to commission on, then a fault).
    /// Formats by extension: .f32 .i16 (raw little-endian, need --rate), .wav, .csv
    /// (timestamp,value[,channel]), .jsonl (one reading or block per line).
    #[arg(long = "input", required = true, num_args = 1)]
    pub inputs: Vec<PathBuf>,
    /// Format, when the extension does not say it: f32, i16, wav, csv, jsonl.
    #[arg(long)]
    pub format: Option<String>,
    /// Sample rate of raw waveform files, Hz.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Raw and WAV samples: value = raw × scale + offset (e.g. 0.001 for counts of mg).
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    #[arg(long, default_value_t = 0.0)]
    pub offset: f64,
    /// Samples per waveform block handed to the pipeline (a source's poll size).
    #[arg(long, default_value_t = 2048)]
    pub block: usize,
    /// The waveform file is a series of snapshots of this many samples...
    #[arg(long, requires = "period")]
    pub snapshot: Option<usize>,
    /// ...taken every this many seconds.
    #[arg(long, requires = "snapshot")]
    pub period: Option<f64>,
    /// WAV: which channel (0-based).
    #[arg(long, default_value_t = 0)]
    pub wav_channel: usize,
    /// Time of the first sample of a waveform recording (RFC 3339).
    #[arg(long, default_value = "2026-01-01T00:00:00Z")]
    pub start: String,
    /// Scalars: replace the readings by their mean per this many seconds (e.g. 3600
    /// to replay 5-minute data at an hourly cadence).
    #[arg(long)]
    pub resample: Option<u64>,
    /// Score with this bundle directory instead of the built-in ones (it is pinned
    /// for the device).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Write every window or reading (features, detector, score) as CSV to this file.
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Print only the summary, not every alert.
    #[arg(long)]
    pub quiet: bool,
}

/// Statistics of one input file.
#[derive(Debug, Clone, Default, Serialize)]
pub struct InputReport {
    pub path: String,
    pub first_us: Option<TimestampUs>,
    pub last_us: Option<TimestampUs>,
    /// Windows (waveforms) or readings (scalars) the pipeline produced.
    pub units: u64,
    /// Of those, scored against a learned baseline or by a model.
    pub scored: u64,
    /// Used to learn the baseline.
    pub commissioning: u64,
    /// Scored above the threshold.
    pub flagged: u64,
    pub first_flagged_us: Option<TimestampUs>,
    pub score_min: Option<f64>,
    pub score_median: Option<f64>,
    pub score_max: Option<f64>,
    /// Fault alert episodes opened while this input played.
    pub episodes_opened: u64,
}

/// One alert of the timeline.
#[derive(Debug, Clone, Serialize)]
pub struct TimelineEntry {
    pub ts: String,
    pub ts_us: TimestampUs,
    pub input: usize,
    pub state: &'static str,
    pub escalated: bool,
    pub anomaly_type: String,
    pub severity: u8,
    pub confidence: f64,
    pub detector: Option<String>,
    pub likely_component: Option<String>,
    pub description: String,
}

/// The whole replay report.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayReport {
    pub sensor: String,
    pub inputs: Vec<InputReport>,
    pub alerts: Vec<TimelineEntry>,
    pub status: Vec<crate::pipeline::processor::ChannelStatus>,
    pub counters: crate::pipeline::ProcessorCounters,
}

/// Runs a replay; writes the timeline and summary to `out`.
pub fn run(
    args: &ReplayArgs,
    loaded: &Loaded,
    out: &mut dyn Write,
) -> anyhow::Result<ReplayReport> {
    let (device, channel) = args.sensor.split_once('.').ok_or_else(|| {
        anyhow::anyhow!(
            "--sensor {:?}: write DEVICE.CHANNEL, e.g. pump7.accel",
            args.sensor
        )
    })?;
    let dev = find_device(loaded, device)?;
    let profile = crate::config::profile_name(&dev.profile);
    let profile = loaded.profiles.get(&profile).ok_or_else(|| {
        anyhow::anyhow!(
            "device {device}: its profile {:?} did not load (edgegw check says why)",
            dev.profile
        )
    })?;
    let ch = profile.profile.channels.get(channel).ok_or_else(|| {
        anyhow::anyhow!(
            "device {device} (profile {}) has no channel {channel:?}; its channels: {}",
            profile.name,
            profile
                .profile
                .channels
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        )
    })?;
    let id = ChannelId::new(device, channel, ch.sensor_type, &ch.unit);

    let mut registry = ModelRegistry::with_defaults()?;
    if let Some(dir) = &args.model {
        let b = Arc::new(ModelBundle::load_dir(dir).map_err(|e| anyhow::anyhow!("{e}"))?);
        let mut pins = std::collections::HashMap::new();
        pins.insert(device.to_string(), b);
        registry = registry.with_assignments(Default::default(), pins);
    }
    let mut p = Processor::new(
        &loaded.config.pipeline,
        shared(registry),
        Box::new(MemoryStateStore::new()),
    );
    for (name, c) in &profile.profile.channels {
        p.register_channel(&format!("{device}.{name}"), c.limits());
    }
    p.configure_device(device, dev.detection_settings(&loaded.config.pipeline));

    let start_us = parse_start(&args.start)?;
    let format =
        match &args.format {
            None => None,
            Some(f) => Some(InputFormat::parse(f).ok_or_else(|| {
                anyhow::anyhow!("--format {f:?}: use f32, i16, wav, csv or jsonl")
            })?),
        };
    let mut csv = match &args.csv {
        Some(path) => Some(std::io::BufWriter::new(
            std::fs::File::create(path)
                .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))?,
        )),
        None => None,
    };
    let mut csv_header_done = false;
    let mut reports = Vec::new();
    let mut timeline = Vec::new();
    let mut next_start = start_us;
    let mut records = Vec::new();
    for (index, path) in args.inputs.iter().enumerate() {
        let opts = InputOptions {
            format,
            sample_rate_hz: args.rate,
            scale: args.scale,
            offset: args.offset,
            block_samples: args.block.max(1),
            snapshot: args
                .snapshot
                .zip(args.period)
                .map(|(samples, period_secs)| Snapshot {
                    samples,
                    period_secs,
                }),
            wav_channel: args.wav_channel,
            start_us: next_start,
        };
        let mut recording = Recording::open(path, &opts).map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut report = InputReport {
            path: path.display().to_string(),
            ..InputReport::default()
        };
        let mut scores = Vec::new();
        let mut batch: Vec<Reading> = Vec::with_capacity(64);
        let items: Box<dyn Iterator<Item = Result<ReplayItem, input::ReplayInputError>>> =
            match args.resample {
                Some(secs) => Box::new(input::resample_mean(&mut recording, secs)),
                None => Box::new(&mut recording),
            };
        for item in items {
            let item = item.map_err(|e| anyhow::anyhow!("{e}"))?;
            batch.push(reading_of(&id, device, profile, item));
            if batch.len() == 64 {
                feed(&mut p, &mut batch, &mut records);
                account(
                    &records,
                    index,
                    &mut report,
                    &mut scores,
                    &mut timeline,
                    csv.as_mut(),
                    &mut csv_header_done,
                )?;
                records.clear();
            }
        }
        feed(&mut p, &mut batch, &mut records);
        account(
            &records,
            index,
            &mut report,
            &mut scores,
            &mut timeline,
            csv.as_mut(),
            &mut csv_header_done,
        )?;
        records.clear();
        scores.sort_by(f64::total_cmp);
        report.score_min = scores.first().copied();
        report.score_max = scores.last().copied();
        report.score_median = scores.get(scores.len() / 2).copied();
        if let Some(n) = recording.next_start_us() {
            next_start = n;
        }
        reports.push(report);
    }
    // The partial summary buckets (not alerts) are dropped: a replay has no upstream.
    let _ = p.flush();
    if let Some(w) = csv.as_mut() {
        w.flush()?;
    }
    let last = reports
        .iter()
        .filter_map(|r| r.last_us)
        .max()
        .unwrap_or(start_us);
    let report = ReplayReport {
        sensor: args.sensor.clone(),
        inputs: reports,
        alerts: timeline,
        status: p.channel_status(last),
        counters: *p.counters(),
    };
    print_report(&report, args.quiet, out)?;
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    }
    Ok(report)
}

fn find_device<'a>(loaded: &'a Loaded, id: &str) -> anyhow::Result<&'a DeviceConfig> {
    loaded
        .config
        .devices
        .iter()
        .find(|d| d.id == id)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{}: no device {id:?}; its devices: {}",
                loaded.config_path.display(),
                loaded
                    .config
                    .devices
                    .iter()
                    .map(|d| d.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

fn parse_start(s: &str) -> anyhow::Result<TimestampUs> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|e| {
            anyhow::anyhow!(
                "--start {s:?} is not an RFC 3339 time ({e}), e.g. 2026-01-01T00:00:00Z"
            )
        })?;
    Ok((t.unix_timestamp_nanos() / 1000) as TimestampUs)
}

fn reading_of(
    id: &ChannelId,
    device: &str,
    profile: &crate::profiles::LoadedProfile,
    item: ReplayItem,
) -> Reading {
    match item {
        ReplayItem::Block {
            ts_us,
            sample_rate_hz,
            samples,
        } => id.reading(
            ts_us,
            Value::Block {
                sample_rate_hz,
                samples: Arc::from(samples),
            },
        ),
        ReplayItem::Scalar {
            ts_us,
            value,
            channel,
        } => {
            // A line may name another channel of the same device.
            match channel
                .as_deref()
                .and_then(|c| profile.profile.channels.get(c).map(|p| (c, p)))
            {
                Some((c, p)) if c != &*id.channel => {
                    ChannelId::new(device, c, p.sensor_type, &p.unit)
                        .reading(ts_us, Value::Scalar(value))
                }
                _ => id.reading(ts_us, Value::Scalar(value)),
            }
        }
    }
}

fn feed(p: &mut Processor, batch: &mut Vec<Reading>, out: &mut Vec<Record>) {
    if !batch.is_empty() {
        p.process_into(batch, out);
        batch.clear();
    }
}

/// One window or reading as the report sees it: time, score, threshold, detector and
/// the features for the CSV.
type Unit = (
    TimestampUs,
    Option<f64>,
    Option<f64>,
    Option<String>,
    Vec<(String, f64)>,
);

/// Counts the records of one batch into the input's report, the timeline and the CSV.
fn account(
    records: &[Record],
    index: usize,
    report: &mut InputReport,
    scores: &mut Vec<f64>,
    timeline: &mut Vec<TimelineEntry>,
    csv: Option<&mut std::io::BufWriter<std::fs::File>>,
    header_done: &mut bool,
) -> anyhow::Result<()> {
    let mut csv = csv;
    for r in records {
        let (ts, score, threshold, detector, features): Unit = match r {
            Record::Window(w) => (
                w.ts_us,
                w.score,
                w.threshold,
                w.detector.as_ref().map(|d| d.to_string()),
                w.features.clone(),
            ),
            Record::Reading(x) => {
                let d = x.detection.as_ref();
                (
                    x.ts_us,
                    d.and_then(|d| d.score),
                    d.and_then(|d| d.threshold),
                    d.map(|d| d.detector.to_string()),
                    vec![("value".to_string(), x.value)],
                )
            }
            Record::Alert(a) => {
                timeline.push(entry(a, index));
                if a.state == AlertState::Open && is_fault(a) {
                    report.episodes_opened += 1;
                }
                continue;
            }
            Record::Summary(_) => continue,
        };
        report.units += 1;
        report.first_us.get_or_insert(ts);
        report.last_us = Some(ts);
        let commissioning = detector
            .as_deref()
            .is_some_and(|d| d.starts_with("commissioning"));
        if commissioning {
            report.commissioning += 1;
        }
        if let (Some(s), Some(t)) = (score, threshold) {
            report.scored += 1;
            scores.push(s);
            if s > t {
                report.flagged += 1;
                report.first_flagged_us.get_or_insert(ts);
            }
        }
        if let Some(w) = csv.as_deref_mut() {
            if !*header_done {
                let names: Vec<&str> = features.iter().map(|(n, _)| n.as_str()).collect();
                writeln!(
                    w,
                    "input,ts,detector,score,threshold,anomalous,{}",
                    names.join(",")
                )?;
                *header_done = true;
            }
            let vals: Vec<String> = features.iter().map(|(_, v)| format!("{v}")).collect();
            writeln!(
                w,
                "{},{},{},{},{},{},{}",
                index,
                format_rfc3339(ts),
                detector.unwrap_or_default(),
                score.map(|s| s.to_string()).unwrap_or_default(),
                threshold.map(|s| s.to_string()).unwrap_or_default(),
                matches!((score, threshold), (Some(s), Some(t)) if s > t),
                vals.join(",")
            )?;
        }
    }
    Ok(())
}

/// Alerts about the machine (not the sensor, not a change of state).
pub fn is_fault(a: &AlertRecord) -> bool {
    !matches!(
        a.anomaly_type.as_str(),
        crate::pipeline::alerts::SENSOR_STUCK
            | crate::pipeline::alerts::SENSOR_OUT_OF_RANGE
            | crate::pipeline::alerts::STATE_CHANGED
    )
}

fn entry(a: &AlertRecord, input: usize) -> TimelineEntry {
    TimelineEntry {
        ts: format_rfc3339(a.ts_us),
        ts_us: a.ts_us,
        input,
        state: match a.state {
            AlertState::Open => "open",
            AlertState::Update => "update",
            AlertState::Resolved => "resolved",
        },
        escalated: a.evidence.get("escalated_from_severity").is_some(),
        anomaly_type: a.anomaly_type.clone(),
        severity: a.severity,
        confidence: a.confidence,
        detector: a
            .evidence
            .get("detector")
            .and_then(|d| d.as_str())
            .map(str::to_string),
        likely_component: a
            .evidence
            .pointer("/bearing/likely_component")
            .and_then(|c| c.as_str())
            .map(str::to_string),
        description: a.description.clone(),
    }
}

fn print_report(r: &ReplayReport, quiet: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    if !quiet {
        for a in &r.alerts {
            let state = if a.escalated { "escalate" } else { a.state };
            writeln!(
                out,
                "{}  {:<9} {:<22} sev {}  {}",
                a.ts, state, a.anomaly_type, a.severity, a.description
            )?;
        }
        if !r.alerts.is_empty() {
            writeln!(out)?;
        }
    }
    writeln!(out, "replay of {}:", r.sensor)?;
    for (i, x) in r.inputs.iter().enumerate() {
        let pct = if x.scored > 0 {
            100.0 * x.flagged as f64 / x.scored as f64
        } else {
            0.0
        };
        writeln!(
            out,
            "  input {i} {}: {} units, {} learning, {} scored, {} flagged ({pct:.1} %), first flagged {}, score min/median/max {}/{}/{}, fault episodes opened {}",
            x.path,
            x.units,
            x.commissioning,
            x.scored,
            x.flagged,
            x.first_flagged_us.map(format_rfc3339).unwrap_or_else(|| "-".into()),
            fmt_opt(x.score_min),
            fmt_opt(x.score_median),
            fmt_opt(x.score_max),
            x.episodes_opened
        )?;
    }
    for s in &r.status {
        writeln!(
            out,
            "  {}: detector {}, baseline {}",
            s.sensor_id,
            s.detector,
            if s.baseline_learned {
                format!(
                    "learned at {} from {} samples",
                    s.baseline_learned_us
                        .map(format_rfc3339)
                        .unwrap_or_default(),
                    s.baseline_samples
                )
            } else {
                format!("{:.0} % learned", 100.0 * s.baseline_progress)
            }
        )?;
        for w in &s.warnings {
            writeln!(out, "  warning: {w}")?;
        }
    }
    Ok(())
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map(crate::pipeline::alerts::fmt_num)
        .unwrap_or_else(|| "-".into())
}

/// The path's display for messages.
pub fn show(p: &Path) -> String {
    p.display().to_string()
}
