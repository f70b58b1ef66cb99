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
//! Layout: this file holds the channel state, commissioning and scoring
//! ([`Processor::relative_step`]); `scalar.rs` the readings path, `window.rs` the
//! waveform path (windows, envelope, bearing diagnosis), `episodes.rs` the alert
//! episodes and their words.

mod episodes;
use episodes::sensor_fault_alerts;
mod scalar;
mod window;

use super::alerts::{
    self, fmt_num, make_alert, AlertContent, EpisodeRules, EpisodeTracker, Transition,
};
use super::baseline::LearnedBaseline;
use super::bearing::{self, FamilyLevels};
use super::detect::{score_with_model, Detection, StateStore, BUILTIN_RULE};
use super::features::{FeatureExtractor, WindowMeta, Windower, ROLLING_FEATURES, WINDOW_FEATURES};
use super::iso;
use super::physical::{accel_unit_to_ms2, PhysicalParams};
use super::relative::{
    trend_alarm, BaselineState, RelativeDetector, Step, SCALAR_SPECS, WINDOW_SCORED, WINDOW_SPECS,
};
use super::rolling::{RollingWindow, TimeWindow};
use super::settings::{DeviceDetection, PipelineSettings};
use super::summary::{Bucket, SummaryAggregator};
use super::validate::{ChannelLimits, Validator, Verdict};
use crate::inference::{BundleKind, ModelBundle, Reference, SharedRegistry};
use crate::record::{
    format_rfc3339, AlertRecord, AlertState, ReadingRecord, Record, ScoreInfo, SummaryRecord,
    TimestampUs, WindowRecord,
};
use crate::sources::{ChannelId, Reading, Value};
use serde::Serialize;
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Counters for the report and the metrics endpoint.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ProcessorCounters {
    /// Scalar readings turned into reading records.
    pub readings: u64,
    /// Waveform blocks received.
    pub blocks: u64,
    /// Windows turned into window records.
    pub windows: u64,
    /// Windows and readings scored by a model bundle.
    pub scored_by_model: u64,
    /// Windows and readings scored by the built-in relative rule (no bundle fits).
    pub scored_by_fallback: u64,
    /// Windows and readings used to learn a baseline (not scored).
    pub commissioning: u64,
    /// Baselines learned (a learning period ended).
    pub baselines_learned: u64,
    /// Alert records emitted (open, update, escalation and resolved).
    pub alerts: u64,
    /// Summary records emitted.
    pub summaries: u64,
    /// Readings that failed validation (any flag).
    pub flagged: u64,
    /// `Value::Missing` readings (device errors): nothing emitted.
    pub missing: u64,
    /// `Value::Text` readings: ignored.
    pub text_ignored: u64,
    /// A model failed to score; the built-in rule scored instead.
    pub model_errors: u64,
    /// The state store failed to load or save a baseline or bucket.
    pub state_errors: u64,
    /// Readings older than their channel's open summary bucket.
    pub late_for_summary: u64,
    /// Channels whose data does not fit a bundle chosen for them (sample rate or
    /// cadence): warned once each.
    pub mismatch_warnings: u64,
}

/// Device errors of one channel (`Value::Missing` readings).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChannelErrors {
    pub count: u64,
    pub last_ts_us: TimestampUs,
    /// Flags of the last failed reading (`modbus_exception:2`, `timeout`, ...).
    pub last_flags: Vec<String>,
}

/// What detection does on one channel now (for `/metrics`, the status page and
/// `edgegw replay`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChannelStatus {
    pub sensor_id: String,
    /// `window` or `scalar`.
    pub kind: &'static str,
    /// The detector that scored the channel's last window or reading.
    pub detector: String,
    /// Baseline learning progress, 0..1 (1 once learned).
    pub baseline_progress: f64,
    pub baseline_learned: bool,
    /// When the baseline was learned, and from how many samples.
    pub baseline_learned_us: Option<TimestampUs>,
    pub baseline_samples: u32,
    /// The typical (median) value of each learned health feature.
    pub baseline: Vec<(String, f64)>,
    /// Current trend (CUSUM) level and its alarm level.
    pub trend: f64,
    pub trend_alarm: f64,
    /// Severity of the open fault episode (0: none).
    pub open_severity: u8,
    /// Warnings about the data against its detector (sample rate, cadence).
    pub warnings: Vec<String>,
    /// Median interval between readings, seconds (scalars).
    pub cadence_secs: Option<f64>,
}

/// Everything the processor knows about one channel.
struct ChannelState {
    id: ChannelId,
    validator: Validator,
    windower: Option<Windower>,
    /// Count-based rolling window, for absolute rolling bundles.
    rolling: Option<RollingWindow>,
    /// Time-based rolling window, for relative scalar detection.
    time_window: Option<TimeWindow>,
    relative: Option<RelativeDetector>,
    /// Exponential average of the envelope spectrum (bearing diagnosis).
    envelope: Option<EnvelopeAverage>,
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
    detector: String,
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
    limits: HashMap<String, ChannelLimits>,
    devices: HashMap<String, DeviceDetection>,
    default_device: DeviceDetection,
    /// Latest shaft speed per device, Hz, from its speed channel.
    speeds: HashMap<String, f64>,
    channels: HashMap<Arc<str>, ChannelState>,
    /// One extractor (FFT plan and buffers) per window length in use.
    extractors: HashMap<usize, FeatureExtractor>,
    pending: Vec<PendingWindow>,
    model_input: Vec<f32>,
    counters: ProcessorCounters,
    /// Channels that got readings since the last [`Processor::take_state`].
    touched: HashSet<Arc<str>>,
    /// Channels whose windower took waveform samples since then.
    touched_windows: HashSet<Arc<str>>,
}

impl std::fmt::Debug for Processor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Processor")
            .field("channels", &self.channels.len())
            .field("counters", &self.counters)
            .finish()
    }
}

/// A learning channel saves its samples at most this often (reading time), so a day
/// of learning is a few dozen writes, and a restart loses at most this much of it.
const LEARNING_SAVE_INTERVAL_US: i64 = 60_000_000;

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
            limits: HashMap::new(),
            devices: HashMap::new(),
            speeds: HashMap::new(),
            channels: HashMap::new(),
            extractors: HashMap::new(),
            pending: Vec::new(),
            model_input: Vec::new(),
            counters: ProcessorCounters::default(),
            touched: HashSet::new(),
            touched_windows: HashSet::new(),
        }
    }

    /// The open summary bucket of every channel that got readings since the last
    /// call, as state table entries, to be committed in the same transaction as the
    /// records these readings produced (`OutboxBatch::state`). After a crash a bucket
    /// then resumes from exactly the readings that were stored: none lost from it,
    /// none counted twice when a source redelivers (see `summary.rs`).
    ///
    /// `with_windows`: also the samples each waveform channel fed since the last call
    /// still holds short of a full window (for a batch its source will be told is
    /// stored: an MQTT message is acknowledged after this commit, and must not be
    /// lost while its samples wait in the windower). Sources that are not told
    /// (polled Modbus blocks) skip this write.
    pub fn take_state(&mut self, with_windows: bool) -> Vec<(String, Vec<u8>)> {
        let interval = self.settings.summary_interval_secs;
        let mut out = Vec::with_capacity(self.touched.len());
        for id in self.touched.drain() {
            let Some(bucket) = self.channels.get(&id).and_then(|ch| ch.summary.flush()) else {
                continue;
            };
            match serde_json::to_vec(&bucket) {
                Ok(bytes) => out.push((summary_key(&id, interval), bytes)),
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
        out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        out
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

    pub fn counters(&self) -> &ProcessorCounters {
        &self.counters
    }

    /// Device errors of a channel, if it has had any.
    pub fn channel_errors(&self, sensor_id: &str) -> Option<&ChannelErrors> {
        self.channels
            .get(sensor_id)
            .map(|c| &c.errors)
            .filter(|e| e.count > 0)
    }

    /// What detection does on every channel seen so far, sorted by sensor id.
    pub fn channel_status(&self, now_us: TimestampUs) -> Vec<ChannelStatus> {
        let mut out: Vec<ChannelStatus> = self
            .channels
            .values()
            .map(|ch| {
                let (progress, learned, learned_us, samples, baseline, trend) = match &ch.relative {
                    None => (0.0, false, None, 0, Vec::new(), 0.0),
                    Some(r) => {
                        let (learned_us, samples, typical) = match r.baseline() {
                            Some(b) => (Some(b.learned_us), b.samples, typical_values(b)),
                            None => (None, learning_samples(r), Vec::new()),
                        };
                        (
                            r.progress(now_us),
                            r.baseline().is_some(),
                            learned_us,
                            samples,
                            typical,
                            r.cusum(),
                        )
                    }
                };
                let threshold = self.device(&ch.id.device).threshold;
                ChannelStatus {
                    sensor_id: ch.id.sensor_id.to_string(),
                    kind: if ch.is_waveform { "window" } else { "scalar" },
                    detector: ch.detector.clone(),
                    baseline_progress: progress,
                    baseline_learned: learned,
                    baseline_learned_us: learned_us,
                    baseline_samples: samples,
                    baseline,
                    trend,
                    trend_alarm: trend_alarm(threshold),
                    open_severity: ch.model_episode.severity(),
                    warnings: ch.warnings.clone(),
                    cadence_secs: (ch.cadence_n > 0).then_some(ch.cadence_us / 1e6),
                }
            })
            .collect();
        out.sort_by(|a, b| a.sensor_id.cmp(&b.sensor_id));
        out
    }

    /// Starts a new learning period for every channel that `selector` names
    /// (`DEVICE` or `DEVICE.CHANNEL`), in memory and in the state store. Returns the
    /// sensor ids reset.
    pub fn reset_baselines(&mut self, selector: &str) -> Vec<String> {
        let mut reset = Vec::new();
        for ch in self.channels.values_mut() {
            if !selects(selector, &ch.id.device, &ch.id.sensor_id) {
                continue;
            }
            if let Some(r) = &mut ch.relative {
                r.reset();
                ch.model_episode = EpisodeTracker::new();
                ch.state_episode = EpisodeTracker::new();
                let key = baseline_key(&ch.id.sensor_id, ch.is_waveform);
                if let Err(e) = self.state.put(&key, &r.to_bytes()) {
                    self.counters.state_errors += 1;
                    tracing::warn!(key = %key, error = %format!("{e:#}"), "Cannot persist a baseline reset.");
                }
                reset.push(ch.id.sensor_id.to_string());
                tracing::info!(sensor_id = %ch.id.sensor_id, "Baseline reset: the channel learns its healthy state again from its next clean data.");
            }
        }
        reset.sort();
        reset
    }

    /// Applies reset requests that `edgegw baseline reset` left in the state store
    /// while the daemon runs (the app calls this every few seconds).
    pub fn apply_reset_requests(&mut self) -> Vec<String> {
        let requests = match self.state.get(RESET_REQUESTS_KEY) {
            Ok(Some(bytes)) => serde_json::from_slice::<Vec<String>>(&bytes).unwrap_or_default(),
            Ok(None) => return Vec::new(),
            Err(e) => {
                self.counters.state_errors += 1;
                tracing::warn!(error = %format!("{e:#}"), "Cannot read baseline reset requests.");
                return Vec::new();
            }
        };
        if requests.is_empty() {
            return Vec::new();
        }
        let mut done = Vec::new();
        for selector in &requests {
            done.extend(self.reset_baselines(selector));
        }
        if let Err(e) = self.state.put(RESET_REQUESTS_KEY, b"[]") {
            self.counters.state_errors += 1;
            tracing::warn!(error = %format!("{e:#}"), "Cannot clear baseline reset requests.");
        }
        done
    }

    /// Processes a batch of readings; returns the records for the outbox.
    pub fn process(&mut self, readings: &[Reading]) -> Vec<Record> {
        let mut out = Vec::with_capacity(readings.len());
        self.process_into(readings, &mut out);
        out
    }

    /// Like [`Processor::process`], appending to `out`.
    pub fn process_into(&mut self, readings: &[Reading], out: &mut Vec<Record>) {
        for r in readings {
            if !self.touched.contains(&r.sensor_id) {
                self.touched.insert(r.sensor_id.clone());
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
            match &r.value {
                Value::Scalar(v) => self.scalar(r, *v, out),
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
                if let Some(bytes) = r.to_save(0, 0, true) {
                    let bkey = baseline_key(&ch.id.sensor_id, ch.is_waveform);
                    if let Err(e) = self.state.put(&bkey, &bytes) {
                        self.counters.state_errors += 1;
                        tracing::warn!(key = %bkey, error = %format!("{e:#}"), "Cannot persist a baseline.");
                    }
                }
            }
            let Some(bucket) = ch.summary.flush() else {
                continue;
            };
            let record = summary_record(&ch.id, interval, &bucket);
            let skey = summary_key(&ch.id.sensor_id, interval);
            match serde_json::to_vec(&bucket) {
                Ok(bytes) => {
                    if let Err(e) = self.state.put(&skey, &bytes) {
                        self.counters.state_errors += 1;
                        tracing::warn!(key = %skey, error = %format!("{e:#}"), "Cannot persist a summary bucket.");
                    }
                }
                Err(_) => self.counters.state_errors += 1,
            }
            self.counters.summaries += 1;
            out.push(Record::Summary(record));
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
            let skey = summary_key(&r.sensor_id, self.settings.summary_interval_secs);
            match self.state.get(&skey) {
                Ok(Some(bytes)) => {
                    if let Ok(bucket) = serde_json::from_slice::<Bucket>(&bytes) {
                        summary.restore(bucket);
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    self.counters.state_errors += 1;
                    tracing::warn!(key = %skey, error = %format!("{e:#}"), "Cannot load a summary bucket.");
                }
            }
            // The samples an acknowledged waveform message left short of a window.
            let windower = match self.state.get(&window_key(&r.sensor_id)) {
                Ok(Some(bytes)) => rmp_serde::from_slice(&bytes)
                    .ok()
                    .and_then(Windower::from_state),
                Ok(None) => None,
                Err(e) => {
                    self.counters.state_errors += 1;
                    tracing::warn!(sensor = %r.sensor_id, error = %format!("{e:#}"), "Cannot load a channel's pending waveform samples.");
                    None
                }
            };
            self.channels.insert(
                r.sensor_id.clone(),
                ChannelState {
                    id,
                    validator: Validator::new(limits),
                    windower,
                    rolling: None,
                    time_window: None,
                    relative: None,
                    envelope: None,
                    model_episode: EpisodeTracker::new(),
                    state_episode: EpisodeTracker::new(),
                    iso_episode: EpisodeTracker::new(),
                    stuck_episode: EpisodeTracker::new(),
                    range_episode: EpisodeTracker::new(),
                    summary,
                    errors: ChannelErrors::default(),
                    last_scored_us: None,
                    detector: String::new(),
                    is_waveform: matches!(r.value, Value::Block { .. }),
                    cadence_us: 0.0,
                    cadence_n: 0,
                    prev_ts_us: None,
                    warnings: Vec::new(),
                    reported_component: None,
                    last_arrival_us: None,
                },
            );
        }
        // Inserted just above when absent.
        self.channels
            .get_mut(&r.sensor_id)
            .expect("channel state exists")
    }

    /// The relative detector of a channel, created (and resumed from the state store)
    /// on first use.
    fn relative<'a>(
        state: &mut dyn StateStore,
        counters: &mut ProcessorCounters,
        plan: super::baseline::LearnPlan,
        ch: &'a mut ChannelState,
        waveform: bool,
    ) -> &'a mut RelativeDetector {
        ch.relative.get_or_insert_with(|| {
            let key = baseline_key(&ch.id.sensor_id, waveform);
            let stored = match state.get(&key) {
                Ok(v) => v,
                Err(e) => {
                    counters.state_errors += 1;
                    tracing::warn!(key = %key, error = %format!("{e:#}"), "Cannot load a baseline.");
                    None
                }
            };
            let (specs, scored): (&'static [_], usize) = if waveform {
                (&WINDOW_SPECS, WINDOW_SCORED)
            } else {
                (&SCALAR_SPECS, SCALAR_SPECS.len())
            };
            let d = RelativeDetector::new(specs, scored, plan, stored.as_deref());
            if let Some(BaselineState::Learned(b)) = d.state() {
                tracing::info!(sensor_id = %ch.id.sensor_id, learned = %format_rfc3339(b.learned_us), samples = b.samples, "Baseline resumed from the outbox database.");
            }
            d
        })
    }

    /// Runs the relative detector on one window's or reading's health `values`.
    /// Returns the detection once the baseline is learned (None while learning).
    #[allow(clippy::too_many_arguments)]
    fn relative_step(
        &mut self,
        sensor_id: &Arc<str>,
        bundle: Option<&Arc<ModelBundle>>,
        waveform: bool,
        ts_us: TimestampUs,
        values: &[f64],
        clean: bool,
        trend_weight: f64,
    ) -> (Option<Detection>, Option<(f64, bool)>) {
        let Some(ch) = self.channels.get_mut(sensor_id) else {
            return (None, None);
        };
        let dev = self
            .devices
            .get(&*ch.id.device)
            .unwrap_or(&self.default_device);
        let (plan, threshold, trend_on) = (dev.plan, dev.threshold, dev.trend);
        let r = Self::relative(self.state.as_mut(), &mut self.counters, plan, ch, waveform);
        let step = r.observe(ts_us, values, clean);
        let key = baseline_key(sensor_id, waveform);
        match &step {
            Step::Learning { progress, started } => {
                self.counters.commissioning += 1;
                if *started {
                    let plan_text = if plan.duration_us > 0 {
                        format!(
                            "{} with up to {} samples spread over it",
                            human_duration_us(plan.duration_us),
                            plan.samples
                        )
                    } else {
                        format!("the first {} clean windows or readings", plan.samples)
                    };
                    tracing::info!(sensor_id = %sensor_id, at = %format_rfc3339(ts_us), plan = %plan_text, "Baseline learning started: the channel is taken to be healthy while it learns.");
                }
                let _ = progress;
            }
            Step::Learned => {
                self.counters.commissioning += 1;
                self.counters.baselines_learned += 1;
                if let Some(b) = r.baseline() {
                    let typical = typical_values(b)
                        .iter()
                        .map(|(n, v)| format!("{n} {}", fmt_num(*v)))
                        .collect::<Vec<_>>()
                        .join(", ");
                    tracing::info!(sensor_id = %sensor_id, at = %format_rfc3339(ts_us), samples = b.samples, typical = %typical, "Baseline learned; it is held fixed from now on (edgegw baseline reset starts over).");
                }
            }
            Step::Ready | Step::Skipped => {}
        }
        let force = matches!(step, Step::Learned);
        if let Some(bytes) = r.to_save(ts_us, LEARNING_SAVE_INTERVAL_US, force) {
            if let Err(e) = self.state.put(&key, &bytes) {
                self.counters.state_errors += 1;
                tracing::warn!(key = %key, error = %format!("{e:#}"), "Cannot persist a baseline.");
            }
        }
        if step != Step::Ready {
            return (None, None);
        }
        // Score the z values: a relative bundle, or the built-in rule.
        let mut det = None;
        if let Some(b) = bundle.filter(|b| b.manifest().reference == Reference::Baseline) {
            self.model_input.clear();
            for f in b.features() {
                self.model_input.push(r.z_of(f).unwrap_or(0.0) as f32);
            }
            match b.score(&self.model_input) {
                Ok(score) => {
                    let score = f64::from(score);
                    self.counters.scored_by_model += 1;
                    det = Some(Detection {
                        score,
                        threshold: b.threshold(),
                        detector: b.detector().to_string(),
                        confidence: b.confidence(score),
                    });
                }
                Err(e) => {
                    self.counters.model_errors += 1;
                    tracing::warn!(sensor_id = %sensor_id, error = %e, "Relative model failed; using the built-in rule.");
                }
            }
        }
        let det = det.unwrap_or_else(|| {
            self.counters.scored_by_fallback += 1;
            let score = r.builtin_score();
            Detection {
                score,
                threshold,
                detector: BUILTIN_RULE.to_string(),
                confidence: crate::inference::bundle::confidence(score, threshold),
            }
        });
        let trend = trend_on.then(|| r.trend(det.score, det.threshold, trend_weight));
        (Some(det), trend)
    }
}

/// State-store key of a persisted `edgegw baseline reset` request list.
pub const RESET_REQUESTS_KEY: &str = "baseline/reset-requests";

/// True when `selector` (`DEVICE` or `DEVICE.CHANNEL`) names this channel.
pub fn selects(selector: &str, device: &str, sensor_id: &str) -> bool {
    selector == sensor_id || selector == device
}

fn typical_values(b: &LearnedBaseline) -> Vec<(String, f64)> {
    b.features
        .iter()
        .enumerate()
        .filter_map(|(j, n)| b.typical(j).map(|v| (n.clone(), v)))
        .collect()
}

fn learning_samples(r: &RelativeDetector) -> u32 {
    match r.state() {
        Some(BaselineState::Learning(c)) => c.rows.len() as u32,
        _ => 0,
    }
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
        sensor_id: id.sensor_id.to_string(),
        sensor_type: id.sensor_type,
        unit: id.unit.to_string(),
        bucket_start_us: b.start_us,
        interval_secs,
        min: b.min,
        max: b.max,
        avg: b.avg(),
        count: b.count,
        last: b.last,
        device: id.device.to_string(),
    }
}

fn summary_key(sensor_id: &str, interval_secs: u32) -> String {
    format!("summary/{interval_secs}/{sensor_id}")
}

/// State key of a channel's windower (samples short of a full window).
fn window_key(sensor_id: &str) -> String {
    format!("window/{sensor_id}")
}

/// State-store key of a channel's baseline (learning or learned).
pub fn baseline_key(sensor_id: &str, waveform: bool) -> String {
    format!(
        "baseline/v2/{}/{sensor_id}",
        if waveform { "window" } else { "scalar" }
    )
}
