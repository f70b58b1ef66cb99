//! The pipeline stage as one synchronous object: readings in, records out.
//!
//! [`Processor::process`] validates each reading, turns scalars into
//! [`ReadingRecord`]s and waveform blocks into [`WindowRecord`]s, scores them, runs the
//! alert episodes and the summaries, and returns the records for the outbox. It is
//! deterministic in reading time: nothing reads the wall clock, so replaying the same
//! readings gives the same records (`edgegw replay` relies on it).
//!
//! How a channel is scored:
//! - **Relative to its own baseline** (the default, any machine, any rate): the
//!   channel first learns its healthy state ([`super::relative`], commissioning); then
//!   each window's (or reading's) health features become robust z values, scored by a
//!   relative model bundle (`vibration-relative`, `scalar-relative`) or the built-in
//!   rule, with a trend (CUSUM) for slow onsets. Vibration is one-sided: a large drop
//!   in energy is a "machine or sensor state changed" event, not a fault.
//! - **With an absolute bundle** (one known machine), when one is pinned or assigned
//!   and fits the channel (its sample rate, for waveforms).
//! - **Physics that needs no training**, beside either: ISO 20816-3 zones from the
//!   velocity RMS when the device gives its machine group and foundation, and the
//!   bearing defect frequencies in the envelope spectrum when it gives shaft speed and
//!   bearing (the alert names the likely component).
//!
//! What it does with each kind of [`Value`]:
//! - `Scalar`: a `ReadingRecord` (validation lowers its quality; never dropped) that
//!   says which detector scored it and how, rolling detection, summary.
//! - `Block`: no reading record (raw waveforms never go upstream); windows, each a
//!   `WindowRecord` with its features and score, alerts; the summary of a waveform
//!   channel is over its windows' RMS.
//! - `Missing`: nothing is emitted, because a `ReadingRecord` needs a value; the
//!   channel's error counter goes up and its flags are kept ([`Processor::channel_errors`]).
//! - `Text`: ignored (device identification, not a measurement); counted.
//!
//! Operator events are logged at info: a baseline starts and ends learning, an alert
//! opens, escalates and resolves (with its description).
//!
//! It does not own tasks, channels or SQLite: `app.rs` (and `replay`) run it.
//!
//! Layout: this file holds the channel state and its persistence; `scoring.rs`
//! commissioning and scoring ([`Processor::relative_step`]); `scalar.rs` the
//! readings path, `window.rs` the waveform path (windows, envelope, bearing
//! diagnosis), `episodes.rs` the alert episodes and their words, `status.rs` the
//! counters, channel status and baseline resets.

mod episodes;
use episodes::sensor_fault_alerts;
mod scalar;
mod scoring;
mod status;
mod window;

pub use status::{selects, ChannelErrors, ChannelStatus, ProcessorCounters, RESET_REQUESTS_KEY};

use super::alerts::{
    self, fmt_num, make_alert, AlertContent, EpisodeRules, EpisodeTracker, Transition,
};
use super::baseline::LearnedBaseline;
use super::bearing::{self, FamilyLevels};
use super::detect::{
    commissioning, score_with_model, Detection, StateStore, BUILTIN_RULE, BUILTIN_RULE_ID,
    NOT_SCORED,
};
use super::features::{FeatureExtractor, WindowMeta, Windower, ROLLING_FEATURES, WINDOW_FEATURES};
use super::iso;
use super::physical::{accel_unit_to_ms2, PhysicalParams};
use super::relative::{
    load_state, trend_alarm, BaselineState, RelativeDetector, StateWrite, Step, SCALAR_SPECS,
    WINDOW_SCORED, WINDOW_SPECS,
};
use super::rolling::{RollingWindow, TimeWindow};
use super::settings::{DeviceDetection, PipelineSettings};
use super::summary::{Bucket, SummaryAggregator};
use super::validate::{ChannelLimits, Validator, Verdict};
use crate::inference::{BundleKind, ModelBundle, Reference, SharedRegistry};
use crate::record::{
    format_rfc3339, AlertRecord, AlertState, Id, NameMap, NameSet, ReadingRecord, Record,
    ScoreInfo, SummaryRecord, TimestampUs, WindowRecord,
};
use crate::sources::{ChannelId, Reading, Value};
use serde::Serialize;
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Everything the processor knows about one channel.
struct ChannelState {
    id: ChannelId,
    validator: Validator,
    /// Boxed, as the rolling window and the envelope below: only a waveform channel
    /// (or an absolute rolling bundle's) has one, and a plant gateway holds tens of
    /// thousands of scalar channels (168 bytes less each).
    windower: Option<Box<Windower>>,
    /// Count-based rolling window, for absolute rolling bundles.
    rolling: Option<Box<RollingWindow>>,
    /// Time-based rolling window, for relative scalar detection.
    time_window: Option<TimeWindow>,
    relative: Option<RelativeDetector>,
    /// Exponential average of the envelope spectrum (bearing diagnosis).
    envelope: Option<Box<EnvelopeAverage>>,
    /// Fault episode (model or relative score), state-change episode (vibration
    /// energy dropped), ISO 20816-3 zone episode, and the sensor-fault episodes.
    model_episode: EpisodeTracker,
    state_episode: EpisodeTracker,
    iso_episode: EpisodeTracker,
    stuck_episode: EpisodeTracker,
    range_episode: EpisodeTracker,
    summary: SummaryAggregator,
    errors: ChannelErrors,
    /// Reading time of the last scored scalar (trend weight).
    last_scored_us: Option<TimestampUs>,
    /// The detector of the last window or reading.
    detector: Id,
    is_waveform: bool,
    /// Smoothed reading interval (scalars), µs, and how many intervals it saw.
    cadence_us: f64,
    cadence_n: u32,
    prev_ts_us: Option<TimestampUs>,
    warnings: Vec<String>,
    /// The bearing component the open fault episode last named.
    reported_component: Option<bearing::Component>,
    /// The last arrival stamp given to a reading of this channel.
    last_arrival_us: Option<TimestampUs>,
}

/// The running average of one channel's envelope spectrum.
#[derive(Debug, Clone)]
struct EnvelopeAverage {
    spectrum: Vec<f64>,
    df: f64,
    n: u32,
}

/// Windows over which the envelope spectrum is averaged: a defect line must stand out
/// of the noise floor for the naming, and one window of 2048 samples is too short for
/// a cage-rate (FTF) line to do so (docs/models.md).
const ENVELOPE_AVERAGE: u32 = 8;

impl EnvelopeAverage {
    fn push(&mut self, x: &[f64], df: f64) {
        if self.spectrum.len() != x.len() || (self.df - df).abs() > 1e-9 * df.abs() {
            self.spectrum.clear();
            self.spectrum.extend_from_slice(x);
            self.df = df;
            self.n = 1;
            return;
        }
        self.n = (self.n + 1).min(ENVELOPE_AVERAGE);
        let a = 1.0 / f64::from(self.n);
        for (s, v) in self.spectrum.iter_mut().zip(x) {
            *s += a * (v - *s);
        }
    }
}

/// A computed window waiting to be scored (the windower's buffer moves on).
struct PendingWindow {
    features: [f64; 11],
    physical: Option<super::physical::PhysicalFeatures>,
    envelope: Vec<f64>,
    envelope_df: f64,
    meta: WindowMeta,
    samples: u32,
}

/// The pipeline stage. See the module docs.
pub struct Processor {
    settings: PipelineSettings,
    rules: EpisodeRules,
    registry: SharedRegistry,
    state: Box<dyn StateStore>,
    limits: NameMap<String, ChannelLimits>,
    devices: NameMap<String, DeviceDetection>,
    default_device: DeviceDetection,
    /// Latest shaft speed per device, Hz, from its speed channel.
    speeds: HashMap<String, f64>,
    /// Boxed: the map's slots stay small (a resize moves pointers, not states; with
    /// tens of thousands of channels the old and new tables of a resize of inline
    /// states once took 70 MB), and a state never moves.
    channels: NameMap<Arc<str>, Box<ChannelState>>,
    /// One extractor (FFT plan and buffers) per window length in use.
    extractors: HashMap<usize, FeatureExtractor>,
    pending: Vec<PendingWindow>,
    model_input: Vec<f32>,
    /// Scalar readings between their two halves (see [`Processor::finish_scalars`]),
    /// in reading order; empty between batches.
    tails: Vec<scalar::ScalarTail>,
    /// Their z values for a batched run, one group of rows per relative bundle.
    score_groups: Vec<scalar::ScoreGroup>,
    counters: ProcessorCounters,
    /// Devices that got readings since the last [`Processor::take_state`].
    touched: NameSet<Arc<str>>,
    /// Each device's channels, in the order they were first seen.
    device_channels: NameMap<Arc<str>, Vec<Arc<str>>>,
    /// Summary buckets stored per device (see [`Processor::take_state`]), read once
    /// per device and handed to its channels as they appear; `None` when the device
    /// has no such entry (then a channel's own entry of an older version is read).
    stored_summaries: HashMap<Arc<str>, Option<HashMap<String, RestoredBucket>>>,
    /// See [`Processor::set_redelivering`].
    redelivering: bool,
    /// Channels whose windower took waveform samples since then.
    touched_windows: NameSet<Arc<str>>,
    /// Channels whose alert episodes moved (an alert was made) since then.
    touched_episodes: HashSet<String>,
    /// Alerts made outside a batch (a baseline reset closing an open episode), sent
    /// with the next batch's records.
    pending_alerts: Vec<AlertRecord>,
}

/// The five episode trackers of a channel as the state table keeps them
/// (`episodes/<sensor_id>`, MessagePack), written in the transaction of the alert
/// that moved them: an episode open when the gateway stopped is still open after
/// the restart, and closes with a `resolved` alert like any other.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredEpisodes {
    model: EpisodeTracker,
    state: EpisodeTracker,
    iso: EpisodeTracker,
    stuck: EpisodeTracker,
    range: EpisodeTracker,
}

impl std::fmt::Debug for Processor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Processor")
            .field("channels", &self.channels.len())
            .field("counters", &self.counters)
            .finish()
    }
}

impl Processor {
    /// A processor with `settings` (assumed validated; out-of-range values are clamped),
    /// scoring with the bundles in `registry` and keeping baselines and summary
    /// buckets in `state`.
    pub fn new(
        settings: &PipelineSettings,
        registry: SharedRegistry,
        state: Box<dyn StateStore>,
    ) -> Processor {
        Processor {
            rules: settings.episode_rules(),
            settings: settings.clone(),
            default_device: DeviceDetection::from_pipeline(settings),
            registry,
            state,
            limits: NameMap::default(),
            devices: NameMap::default(),
            speeds: HashMap::new(),
            channels: NameMap::default(),
            extractors: HashMap::new(),
            pending: Vec::new(),
            model_input: Vec::new(),
            tails: Vec::new(),
            score_groups: Vec::new(),
            counters: ProcessorCounters::default(),
            touched: NameSet::default(),
            device_channels: NameMap::default(),
            stored_summaries: HashMap::new(),
            redelivering: false,
            touched_windows: NameSet::default(),
            touched_episodes: HashSet::new(),
            pending_alerts: Vec::new(),
        }
    }

    /// The open summary buckets of every device that got readings since the last
    /// call, as state table entries, to be committed in the same transaction as the
    /// records these readings produced (`OutboxBatch::state`). After a crash a bucket
    /// then resumes from exactly the readings that were stored: none lost from it,
    /// none counted twice when a source redelivers (see `summary.rs`).
    ///
    /// One entry per device (`summaries/<interval>/<device>`: the open bucket of each
    /// of its channels), not one per channel: a poll of a 30-register device is one
    /// upsert, not 30 (at 15,000 readings/s the per-channel entries were a third of
    /// the outbox writer's time). Entries of the older per-channel form
    /// (`summary/<interval>/<sensor>`) are still read for a device that has none.
    ///
    /// `with_windows`: also the samples each waveform channel fed since the last call
    /// still holds short of a full window (for a batch its source will be told is
    /// stored: an MQTT message is acknowledged after this commit, and must not be
    /// lost while its samples wait in the windower). Sources that are not told
    /// (polled Modbus blocks) skip this write.
    pub fn take_state(&mut self, with_windows: bool) -> Vec<(String, Vec<u8>)> {
        let interval = self.settings.summary_interval_secs;
        let mut out = Vec::with_capacity(self.touched.len());
        for device in std::mem::take(&mut self.touched) {
            match self.device_summaries(&device) {
                Ok(bytes) => out.push((device_summary_key(&device, interval), bytes)),
                Err(_) => self.counters.state_errors += 1,
            }
        }
        for id in self.touched_windows.drain() {
            let Some(w) = self.channels.get(&id).and_then(|ch| ch.windower.as_ref()) else {
                continue;
            };
            if !with_windows {
                continue;
            }
            match rmp_serde::to_vec(&w.state()) {
                Ok(bytes) => out.push((window_key(&id), bytes)),
                Err(_) => self.counters.state_errors += 1,
            }
        }
        for id in std::mem::take(&mut self.touched_episodes) {
            let Some(ch) = self.channels.get(id.as_str()) else {
                continue;
            };
            let stored = StoredEpisodes {
                model: ch.model_episode.clone(),
                state: ch.state_episode.clone(),
                iso: ch.iso_episode.clone(),
                stuck: ch.stuck_episode.clone(),
                range: ch.range_episode.clone(),
            };
            match rmp_serde::to_vec(&stored) {
                Ok(bytes) => out.push((episodes_key(&id), bytes)),
                Err(_) => self.counters.state_errors += 1,
            }
        }
        out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// The open buckets of `device`'s channels, serialised (MessagePack of
    /// `[(sensor_id, bucket, [counted ts])]`; the timestamps are empty for channels
    /// that do not remember them, and absent in entries of earlier versions).
    fn device_summaries(&self, device: &str) -> Result<Vec<u8>, rmp_serde::encode::Error> {
        let buckets: Vec<StoredBucket<&str>> = self
            .device_channels
            .get(device)
            .into_iter()
            .flatten()
            .filter_map(|id| {
                let summary = &self.channels.get(id)?.summary;
                Some(StoredBucket {
                    sensor_id: &**id,
                    bucket: summary.flush()?,
                    recent: summary.recent(),
                })
            })
            .collect();
        rmp_serde::to_vec(&buckets)
    }

    /// The stored open summary bucket of a new channel and the timestamps it had
    /// counted, if any.
    fn stored_summary(&mut self, device: &Arc<str>, sensor_id: &str) -> Option<RestoredBucket> {
        let interval = self.settings.summary_interval_secs;
        if !self.stored_summaries.contains_key(device) {
            let key = device_summary_key(device, interval);
            let stored = match self.state.get(&key) {
                Ok(Some(bytes)) => match rmp_serde::from_slice::<Vec<StoredBucket<String>>>(&bytes)
                {
                    Ok(v) => Some(
                        v.into_iter()
                            .map(|s| (s.sensor_id, (s.bucket, s.recent)))
                            .collect(),
                    ),
                    Err(e) => {
                        self.counters.state_errors += 1;
                        tracing::warn!(key = %key, error = %e, "Cannot read stored summary buckets.");
                        None
                    }
                },
                Ok(None) => None,
                Err(e) => {
                    self.counters.state_errors += 1;
                    tracing::warn!(key = %key, error = %format!("{e:#}"), "Cannot load summary buckets.");
                    None
                }
            };
            self.stored_summaries.insert(device.clone(), stored);
        }
        if let Some(Some(map)) = self.stored_summaries.get_mut(device) {
            return map.remove(sensor_id);
        }
        // No entry for the device: the per-channel entry of an older version.
        let skey = summary_key(sensor_id, interval);
        match self.state.get(&skey) {
            Ok(Some(bytes)) => serde_json::from_slice::<Bucket>(&bytes)
                .ok()
                .map(|b| (b, Vec::new())),
            Ok(None) => None,
            Err(e) => {
                self.counters.state_errors += 1;
                tracing::warn!(key = %skey, error = %format!("{e:#}"), "Cannot load a summary bucket.");
                None
            }
        }
    }

    /// Whether the readings passed next come from a source that redelivers (MQTT
    /// QoS 1): the summaries of their channels then remember what they counted, to
    /// count a late reading and skip a redelivered one (`summary.rs`), from the
    /// channel's first reading on.
    pub fn set_redelivering(&mut self, on: bool) {
        self.redelivering = on;
    }

    /// Sets the validation limits of a channel (from its hardware profile). Channels
    /// never registered are validated with no limits.
    pub fn register_channel(&mut self, sensor_id: &str, limits: ChannelLimits) {
        if let Some(ch) = self.channels.get_mut(sensor_id) {
            ch.validator = Validator::new(limits.clone());
        }
        self.limits.insert(sensor_id.to_string(), limits);
    }

    /// Sets the detection settings of a device (its `[devices.detection]` and
    /// `[devices.machine]` resolved against `[pipeline]`). Devices never configured use
    /// the pipeline's settings. A change of the learning plan applies to the next
    /// learning period, not to one under way.
    pub fn configure_device(&mut self, device: &str, detection: DeviceDetection) {
        self.devices.insert(device.to_string(), detection);
    }

    /// Processes a batch of readings; returns the records for the outbox.
    pub fn process(&mut self, readings: &[Reading]) -> Vec<Record> {
        let mut out = Vec::with_capacity(readings.len());
        self.process_into(readings, &mut out);
        out
    }

    /// Like [`Processor::process`], appending to `out`.
    pub fn process_into(&mut self, readings: &[Reading], out: &mut Vec<Record>) {
        for a in std::mem::take(&mut self.pending_alerts) {
            self.emit_alert(a, out);
        }
        for r in readings {
            if !self.touched.contains(&r.device) {
                self.touched.insert(r.device.clone());
            }
            // Arrival stamps are the gateway's own: kept strictly increasing per
            // sensor, so two readings received in the same microsecond (a JSON
            // batch, serial frames read together) stay two readings downstream,
            // where a reading is identified by sensor and time.
            let adjusted;
            let r = if r.arrival {
                let ch = self.channel(r);
                let ts = match ch.last_arrival_us {
                    Some(last) if r.ts_us <= last => last + 1,
                    _ => r.ts_us,
                };
                ch.last_arrival_us = Some(ts);
                if ts != r.ts_us {
                    adjusted = Reading {
                        ts_us: ts,
                        ..r.clone()
                    };
                    &adjusted
                } else {
                    r
                }
            } else {
                r
            };
            // A scalar reading's second half waits for the batch's other scalars
            // (one batched score); a channel already waiting, or any other kind of
            // reading, finishes the waiting ones first, in reading order.
            if !matches!(r.value, Value::Scalar(_)) || self.waiting(&r.sensor_id) {
                self.finish_scalars(out);
            }
            match &r.value {
                Value::Scalar(v) => self.scalar(r, *v),
                Value::Block {
                    sample_rate_hz,
                    samples,
                } => self.block(r, samples, *sample_rate_hz, out),
                Value::Missing => {
                    self.counters.missing += 1;
                    let ch = self.channel(r);
                    ch.errors.count += 1;
                    ch.errors.last_ts_us = r.ts_us;
                    ch.errors.last_flags.clone_from(&r.flags);
                }
                Value::Text(_) => self.counters.text_ignored += 1,
            }
        }
        self.finish_scalars(out);
    }

    /// At shutdown: emits every channel's partial summary bucket and persists it so the
    /// bucket resumes after a restart (see `summary.rs` for the re-emission rule), and
    /// saves every learning channel's samples.
    pub fn flush(&mut self) -> Vec<Record> {
        let mut out = Vec::new();
        let interval = self.settings.summary_interval_secs;
        let mut keys: Vec<Arc<str>> = self.channels.keys().cloned().collect();
        keys.sort();
        for key in keys {
            let Some(ch) = self.channels.get_mut(&key) else {
                continue;
            };
            if let Some(r) = &mut ch.relative {
                let bkey = baseline_key(&ch.id.sensor_id, ch.is_waveform);
                let writes = r.to_save(&bkey, 0, 0, true);
                if !apply_state_writes(&mut *self.state, &mut self.counters, writes, "a baseline") {
                    r.save_failed();
                }
            }
            let Some(bucket) = ch.summary.flush() else {
                continue;
            };
            self.counters.summaries += 1;
            out.push(Record::Summary(summary_record(&ch.id, interval, &bucket)));
        }
        let mut devices: Vec<Arc<str>> = self.device_channels.keys().cloned().collect();
        devices.sort();
        for device in devices {
            let key = device_summary_key(&device, interval);
            match self.device_summaries(&device) {
                Ok(bytes) => {
                    if let Err(e) = self.state.put(&key, &bytes) {
                        self.counters.state_errors += 1;
                        tracing::warn!(key = %key, error = %format!("{e:#}"), "Cannot persist summary buckets.");
                    }
                }
                Err(_) => self.counters.state_errors += 1,
            }
        }
        out
    }

    fn device(&self, device: &str) -> &DeviceDetection {
        self.devices.get(device).unwrap_or(&self.default_device)
    }

    fn channel(&mut self, r: &Reading) -> &mut ChannelState {
        if !self.channels.contains_key(&r.sensor_id) {
            let limits = self.limits.get(&*r.sensor_id).cloned().unwrap_or_default();
            let id = ChannelId {
                device: r.device.clone(),
                channel: r.channel.clone(),
                sensor_id: r.sensor_id.clone(),
                sensor_type: r.sensor_type,
                unit: r.unit.clone(),
            };
            let mut summary = SummaryAggregator::new(self.settings.summary_interval_secs);
            if let Some((bucket, recent)) = self.stored_summary(&r.device, &r.sensor_id) {
                summary.restore(bucket, recent);
            }
            self.device_channels
                .entry(r.device.clone())
                .or_default()
                .push(r.sensor_id.clone());
            // The samples an acknowledged waveform message left short of a window.
            let windower = match self.state.get(&window_key(&r.sensor_id)) {
                Ok(Some(bytes)) => rmp_serde::from_slice(&bytes)
                    .ok()
                    .and_then(Windower::from_state)
                    .map(Box::new),
                Ok(None) => None,
                Err(e) => {
                    self.counters.state_errors += 1;
                    tracing::warn!(sensor = %r.sensor_id, error = %format!("{e:#}"), "Cannot load a channel's pending waveform samples.");
                    None
                }
            };
            // Episodes open when the gateway last stopped.
            let episodes = match self.state.get(&episodes_key(&r.sensor_id)) {
                Ok(Some(bytes)) => rmp_serde::from_slice::<StoredEpisodes>(&bytes).ok(),
                Ok(None) => None,
                Err(e) => {
                    self.counters.state_errors += 1;
                    tracing::warn!(sensor = %r.sensor_id, error = %format!("{e:#}"), "Cannot load a channel's alert episodes.");
                    None
                }
            };
            let episodes = episodes.unwrap_or(StoredEpisodes {
                model: EpisodeTracker::new(),
                state: EpisodeTracker::new(),
                iso: EpisodeTracker::new(),
                stuck: EpisodeTracker::new(),
                range: EpisodeTracker::new(),
            });
            self.channels.insert(
                r.sensor_id.clone(),
                Box::new(ChannelState {
                    id,
                    validator: Validator::new(limits),
                    windower,
                    rolling: None,
                    time_window: None,
                    relative: None,
                    envelope: None,
                    model_episode: episodes.model,
                    state_episode: episodes.state,
                    iso_episode: episodes.iso,
                    stuck_episode: episodes.stuck,
                    range_episode: episodes.range,
                    summary,
                    errors: ChannelErrors::default(),
                    last_scored_us: None,
                    detector: Id::default(),
                    is_waveform: matches!(r.value, Value::Block { .. }),
                    cadence_us: 0.0,
                    cadence_n: 0,
                    prev_ts_us: None,
                    warnings: Vec::new(),
                    reported_component: None,
                    last_arrival_us: None,
                }),
            );
        }
        // Inserted just above when absent.
        self.channels
            .get_mut(&r.sensor_id)
            .expect("channel state exists")
    }
}

fn typical_values(b: &LearnedBaseline) -> Vec<(String, f64)> {
    b.features
        .iter()
        .enumerate()
        .filter_map(|(j, n)| b.typical(j).map(|v| (n.clone(), v)))
        .collect()
}

/// "45 min", "24 h", "7 d", "2.5 s".
pub fn human_duration_us(us: i64) -> String {
    let s = us as f64 / 1e6;
    if s >= 86_400.0 {
        format!("{} d", fmt_num(s / 86_400.0))
    } else if s >= 3600.0 {
        format!("{} h", fmt_num(s / 3600.0))
    } else if s >= 60.0 {
        format!("{} min", fmt_num(s / 60.0))
    } else {
        format!("{} s", fmt_num(s))
    }
}

fn summary_record(id: &ChannelId, interval_secs: u32, b: &Bucket) -> SummaryRecord {
    SummaryRecord {
        sensor_id: Id::from(&id.sensor_id),
        sensor_type: id.sensor_type,
        unit: Id::from(&id.unit),
        bucket_start_us: b.start_us,
        interval_secs,
        min: b.min,
        max: b.max,
        avg: b.avg(),
        count: b.count,
        last: b.last,
        device: Id::from(&id.device),
    }
}

fn summary_key(sensor_id: &str, interval_secs: u32) -> String {
    format!("summary/{interval_secs}/{sensor_id}")
}

/// A stored open bucket and the timestamps it had counted.
type RestoredBucket = (Bucket, Vec<TimestampUs>);

/// One channel's open bucket in a device's summary state entry. Encoded as a
/// MessagePack array; entries of earlier versions have no third element and decode
/// with no timestamps.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredBucket<S> {
    sensor_id: S,
    bucket: Bucket,
    #[serde(default)]
    recent: Vec<TimestampUs>,
}

/// State key of a device's open summary buckets (replaces [`summary_key`]).
fn device_summary_key(device: &str, interval_secs: u32) -> String {
    format!("summaries/{interval_secs}/{device}")
}

/// State key of a channel's alert episodes ([`StoredEpisodes`]).
fn episodes_key(sensor_id: &str) -> String {
    format!("episodes/{sensor_id}")
}

/// State key of a channel's windower (samples short of a full window).
fn window_key(sensor_id: &str) -> String {
    format!("window/{sensor_id}")
}

/// Applies a baseline's state writes in order, stopping at the first that fails
/// (counted and logged as "Cannot persist {what}."). True when all were applied.
pub(crate) fn apply_state_writes(
    state: &mut dyn StateStore,
    counters: &mut ProcessorCounters,
    writes: Vec<StateWrite>,
    what: &str,
) -> bool {
    for (key, value) in writes {
        let done = match &value {
            Some(v) => state.put(&key, v),
            None => state.delete(&key),
        };
        if let Err(e) = done {
            counters.state_errors += 1;
            tracing::warn!(key = %key, error = %format!("{e:#}"), "Cannot persist {what}.");
            return false;
        }
    }
    true
}

/// State-store key of a channel's baseline (learning or learned).
pub fn baseline_key(sensor_id: &str, waveform: bool) -> String {
    format!(
        "baseline/v2/{}/{sensor_id}",
        if waveform { "window" } else { "scalar" }
    )
}
