//! The pipeline stage as one synchronous object: readings in, records out.
//!
//! [`Processor::process`] validates each reading, turns scalars into
//! [`ReadingRecord`]s and waveform blocks into [`WindowRecord`]s, scores them (model or
//! statistical fallback), runs the alert episodes and the summaries, and returns the
//! records for the outbox. It is deterministic in reading time: nothing reads the wall
//! clock, so replaying the same readings gives the same records.
//!
//! What it does with each kind of [`Value`]:
//! - `Scalar`: a `ReadingRecord` (validation lowers its quality; never dropped), rolling
//!   detection, summary.
//! - `Block`: no reading record (raw waveforms never go upstream); windows, each a
//!   `WindowRecord` with its score, alerts; the summary of a waveform channel is over
//!   its windows' RMS.
//! - `Missing`: nothing is emitted, because a `ReadingRecord` needs a value; the
//!   channel's error counter goes up and its flags are kept ([`Processor::channel_errors`]).
//! - `Text`: ignored (device identification, not a measurement); counted.
//!
//! It does not own tasks, channels or SQLite: the wiring (a later section of
//! `pipeline/mod.rs`) runs it between the sources and the outbox.

use super::alerts::{
    self, fmt_num, make_alert, AlertContent, EpisodeRules, EpisodeTracker, Transition,
};
use super::detect::{
    score_with_model, Detection, FallbackDetector, StateStore, FALLBACK_ROLLING_FEATURES,
    FALLBACK_WINDOW_FEATURES,
};
use super::features::{FeatureExtractor, WindowMeta, Windower, ROLLING_FEATURES, WINDOW_FEATURES};
use super::rolling::RollingWindow;
use super::settings::PipelineSettings;
use super::summary::{Bucket, SummaryAggregator};
use super::validate::{ChannelLimits, Validator, Verdict};
use crate::inference::{BundleKind, ModelBundle, SharedRegistry};
use crate::record::{
    format_rfc3339, AlertState, ReadingRecord, Record, SummaryRecord, TimestampUs, WindowRecord,
};
use crate::sources::{ChannelId, Reading, Value};
use serde::Serialize;
use serde_json::json;
use std::collections::HashMap;
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
    /// Windows and readings scored by the statistical fallback.
    pub scored_by_fallback: u64,
    /// Alert records emitted (open, update and resolved).
    pub alerts: u64,
    /// Summary records emitted.
    pub summaries: u64,
    /// Readings that failed validation (any flag).
    pub flagged: u64,
    /// `Value::Missing` readings (device errors): nothing emitted.
    pub missing: u64,
    /// `Value::Text` readings: ignored.
    pub text_ignored: u64,
    /// A model failed to score; the fallback scored instead.
    pub model_errors: u64,
    /// The state store failed to load or save a baseline or bucket.
    pub state_errors: u64,
    /// Readings older than their channel's open summary bucket.
    pub late_for_summary: u64,
}

/// Device errors of one channel (`Value::Missing` readings).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChannelErrors {
    pub count: u64,
    pub last_ts_us: TimestampUs,
    /// Flags of the last failed reading (`modbus_exception:2`, `timeout`, ...).
    pub last_flags: Vec<String>,
}

/// Everything the processor knows about one channel.
struct ChannelState {
    id: ChannelId,
    validator: Validator,
    windower: Option<Windower>,
    rolling: Option<RollingWindow>,
    fallback: Option<FallbackDetector>,
    /// The model episode, and one each for the sensor-fault alerts.
    model_episode: EpisodeTracker,
    stuck_episode: EpisodeTracker,
    range_episode: EpisodeTracker,
    summary: SummaryAggregator,
    errors: ChannelErrors,
}

/// A computed window waiting to be scored (the windower's buffer moves on).
struct PendingWindow {
    features: [f64; 11],
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
    channels: HashMap<Arc<str>, ChannelState>,
    /// One extractor (FFT plan and buffers) per window length in use.
    extractors: HashMap<usize, FeatureExtractor>,
    pending: Vec<PendingWindow>,
    model_input: Vec<f32>,
    counters: ProcessorCounters,
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
            registry,
            state,
            limits: HashMap::new(),
            channels: HashMap::new(),
            extractors: HashMap::new(),
            pending: Vec::new(),
            model_input: Vec::new(),
            counters: ProcessorCounters::default(),
        }
    }

    /// Sets the validation limits of a channel (from its hardware profile). Channels
    /// never registered are validated with no limits.
    pub fn register_channel(&mut self, sensor_id: &str, limits: ChannelLimits) {
        if let Some(ch) = self.channels.get_mut(sensor_id) {
            ch.validator = Validator::new(limits.clone());
        }
        self.limits.insert(sensor_id.to_string(), limits);
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

    /// Processes a batch of readings; returns the records for the outbox.
    pub fn process(&mut self, readings: &[Reading]) -> Vec<Record> {
        let mut out = Vec::with_capacity(readings.len());
        self.process_into(readings, &mut out);
        out
    }

    /// Like [`Processor::process`], appending to `out`.
    pub fn process_into(&mut self, readings: &[Reading], out: &mut Vec<Record>) {
        for r in readings {
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
    /// bucket resumes after a restart (see `summary.rs` for the re-emission rule).
    pub fn flush(&mut self) -> Vec<Record> {
        let mut out = Vec::new();
        let interval = self.settings.summary_interval_secs;
        let mut keys: Vec<Arc<str>> = self.channels.keys().cloned().collect();
        keys.sort();
        for key in keys {
            let Some(ch) = self.channels.get(&key) else {
                continue;
            };
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
            self.channels.insert(
                r.sensor_id.clone(),
                ChannelState {
                    id,
                    validator: Validator::new(limits),
                    windower: None,
                    rolling: None,
                    fallback: None,
                    model_episode: EpisodeTracker::new(),
                    stuck_episode: EpisodeTracker::new(),
                    range_episode: EpisodeTracker::new(),
                    summary,
                    errors: ChannelErrors::default(),
                },
            );
        }
        // Inserted just above when absent.
        self.channels
            .get_mut(&r.sensor_id)
            .expect("channel state exists")
    }

    fn fallback<'a>(
        state: &mut dyn StateStore,
        counters: &mut ProcessorCounters,
        settings: &PipelineSettings,
        ch: &'a mut ChannelState,
        kind: BundleKind,
    ) -> &'a mut FallbackDetector {
        ch.fallback.get_or_insert_with(|| {
            let key = baseline_key(&ch.id.sensor_id, kind);
            let stored = match state.get(&key) {
                Ok(v) => v,
                Err(e) => {
                    counters.state_errors += 1;
                    tracing::warn!(key = %key, error = %format!("{e:#}"), "Cannot load a baseline.");
                    None
                }
            };
            let (all, tested): (&[&str], &[&str]) = match kind {
                BundleKind::Window => (&WINDOW_FEATURES, &FALLBACK_WINDOW_FEATURES),
                BundleKind::Rolling => (&ROLLING_FEATURES, &FALLBACK_ROLLING_FEATURES),
            };
            FallbackDetector::new(
                all,
                tested,
                settings.warmup_windows,
                settings.fallback_sigma,
                stored.as_deref(),
            )
        })
    }

    /// Scores one feature vector with `bundle`, or the fallback when there is none or it
    /// fails. `None` while the fallback is still learning.
    fn detect(
        &mut self,
        sensor_id: &Arc<str>,
        bundle: Option<&Arc<ModelBundle>>,
        kind: BundleKind,
        values: &[f64],
        clean: bool,
    ) -> Option<Detection> {
        let names: &[&str] = match kind {
            BundleKind::Window => &WINDOW_FEATURES,
            BundleKind::Rolling => &ROLLING_FEATURES,
        };
        if let Some(bundle) = bundle {
            match score_with_model(bundle, names, values, &mut self.model_input) {
                Ok(d) => {
                    self.counters.scored_by_model += 1;
                    return Some(d);
                }
                Err(e) => {
                    self.counters.model_errors += 1;
                    tracing::warn!(sensor_id = %sensor_id, error = %e, "Model failed; using the statistical fallback.");
                }
            }
        }
        let ch = self.channels.get_mut(sensor_id)?;
        let fb = Self::fallback(
            self.state.as_mut(),
            &mut self.counters,
            &self.settings,
            ch,
            kind,
        );
        let (detection, completed) = fb.observe(values, clean);
        if completed {
            let key = baseline_key(sensor_id, kind);
            if let Err(e) = self.state.put(&key, &fb.to_bytes()) {
                self.counters.state_errors += 1;
                tracing::warn!(key = %key, error = %format!("{e:#}"), "Cannot persist a baseline.");
            }
        }
        if detection.is_some() {
            self.counters.scored_by_fallback += 1;
        }
        detection
    }

    fn scalar(&mut self, r: &Reading, value: f64, out: &mut Vec<Record>) {
        let rolling_len_default = self.settings.rolling_length;
        let interval = self.settings.summary_interval_secs;
        let mut summaries = 0;
        let bundle = self
            .registry
            .load()
            .select_for(&r.device, r.sensor_type, BundleKind::Rolling);
        let rules = self.rules;
        let ch = self.channel(r);
        let verdict = ch.validator.check_scalar(r.ts_us, value);
        let mut quality = r.quality;
        let mut flags = r.flags.clone();
        verdict.apply(&mut quality, &mut flags);
        let id = ch.id.clone();
        out.push(Record::Reading(ReadingRecord {
            sensor_id: id.sensor_id.to_string(),
            device: id.device.to_string(),
            channel: id.channel.to_string(),
            sensor_type: id.sensor_type,
            unit: id.unit.to_string(),
            ts_us: r.ts_us,
            value,
            quality,
            flags,
        }));
        let fault_value = format!("{} {}", fmt_num(value), id.unit);
        let fault_alerts = sensor_fault_alerts(ch, &rules, r.ts_us, &verdict, &fault_value);
        if !verdict.out_of_range {
            if let Some(done) = ch.summary.push(r.ts_us, value) {
                out.push(Record::Summary(summary_record(&id, interval, &done)));
                summaries += 1;
            }
        }
        let late = std::mem::take(&mut ch.summary.late);
        self.counters.late_for_summary += late;
        self.counters.summaries += summaries;
        self.counters.readings += 1;
        if !verdict.is_clean() {
            self.counters.flagged += 1;
        }
        self.counters.alerts += fault_alerts.len() as u64;
        out.extend(fault_alerts.into_iter().map(Record::Alert));

        // Out-of-range values are not the process: keep them out of detection.
        if verdict.out_of_range || quality <= 0.0 {
            return;
        }
        let len = bundle
            .as_ref()
            .and_then(|b| b.manifest().rolling.as_ref().map(|s| s.length))
            .unwrap_or(rolling_len_default);
        let ch = self.channel(r);
        let rolling = ch.rolling.get_or_insert_with(|| RollingWindow::new(len));
        if rolling.len() != len {
            *rolling = RollingWindow::new(len);
        }
        let Some(features) = rolling.push(value) else {
            return;
        };
        let clean = verdict.is_clean() && r.quality >= 1.0;
        let Some(det) = self.detect(
            &id.sensor_id,
            bundle.as_ref(),
            BundleKind::Rolling,
            &features.0,
            clean,
        ) else {
            return;
        };
        self.episode(
            &id,
            r.ts_us,
            &det,
            &ROLLING_FEATURES,
            &features.0,
            "readings",
            out,
        );
    }

    fn block(&mut self, r: &Reading, samples: &Arc<[f32]>, fs: f64, out: &mut Vec<Record>) {
        self.counters.blocks += 1;
        let bundle = self
            .registry
            .load()
            .select_for(&r.device, r.sensor_type, BundleKind::Window)
            .filter(|b| {
                b.manifest()
                    .window
                    .as_ref()
                    .is_some_and(|w| (w.sample_rate_hz - fs).abs() <= 1e-6 * fs.abs())
            });
        let (len, overlap) = match bundle.as_ref().and_then(|b| b.manifest().window.clone()) {
            Some(w) => (w.length, w.overlap),
            None => (self.settings.window_samples, self.settings.window_overlap),
        };
        let rules = self.rules;
        let interval = self.settings.summary_interval_secs;
        let ch = self.channel(r);
        let verdict = ch.validator.check_block(r.ts_us, samples, fs);
        let mut quality = r.quality;
        verdict.apply(&mut quality, &mut Vec::new());
        if !verdict.is_clean() {
            self.counters.flagged += 1;
        }
        let ch = self.channel(r);
        let (lo, hi) = samples
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            });
        let fault_value = format!(
            "samples from {} to {} {}",
            fmt_num(f64::from(lo)),
            fmt_num(f64::from(hi)),
            ch.id.unit
        );
        let fault_alerts = sensor_fault_alerts(ch, &rules, r.ts_us, &verdict, &fault_value);
        self.counters.alerts += fault_alerts.len() as u64;
        out.extend(fault_alerts.into_iter().map(Record::Alert));

        let extractor = self
            .extractors
            .entry(len)
            .or_insert_with(|| FeatureExtractor::new(len));
        let Some(ch) = self.channels.get_mut(&r.sensor_id) else {
            return;
        };
        let windower = ch
            .windower
            .get_or_insert_with(|| Windower::new(len, overlap));
        if windower.len() != len || windower.hop() != Windower::hop_for(len, overlap) {
            *windower = Windower::new(len, overlap);
        }
        let pending = &mut self.pending;
        windower.push(samples, fs, r.ts_us, quality, |w, meta| {
            if let Some(f) = extractor.compute(w, meta.sample_rate_hz) {
                pending.push(PendingWindow {
                    features: f.0,
                    meta,
                    samples: w.len() as u32,
                });
            }
        });
        let id = ch.id.clone();
        let mut pending = std::mem::take(&mut self.pending);
        for w in pending.drain(..) {
            self.counters.windows += 1;
            let named: Vec<(String, f64)> = WINDOW_FEATURES
                .iter()
                .zip(w.features.iter())
                .map(|(n, v)| (n.to_string(), *v))
                .collect();
            // A window with an out-of-range sample is not scored: the sensor, not the
            // machine, is what is wrong.
            let det = if w.meta.quality > 0.0 {
                let clean = w.meta.quality >= 1.0;
                self.detect(
                    &id.sensor_id,
                    bundle.as_ref(),
                    BundleKind::Window,
                    &w.features,
                    clean,
                )
            } else {
                None
            };
            out.push(Record::Window(WindowRecord {
                sensor_id: id.sensor_id.to_string(),
                device: id.device.to_string(),
                channel: id.channel.to_string(),
                sensor_type: id.sensor_type,
                unit: id.unit.to_string(),
                ts_us: w.meta.ts_us,
                sample_rate_hz: w.meta.sample_rate_hz,
                samples: w.samples,
                features: named,
                score: det.as_ref().map(|d| d.score),
                threshold: det.as_ref().map(|d| d.threshold),
                detector: det.as_ref().map(|d| d.detector.clone()),
                quality: w.meta.quality,
            }));
            if let Some(ch) = self.channels.get_mut(&id.sensor_id) {
                if let Some(done) = ch.summary.push(w.meta.ts_us, w.features[0]) {
                    out.push(Record::Summary(summary_record(&id, interval, &done)));
                    self.counters.summaries += 1;
                }
                self.counters.late_for_summary += std::mem::take(&mut ch.summary.late);
            }
            if let Some(det) = det {
                self.episode(
                    &id,
                    w.meta.ts_us,
                    &det,
                    &WINDOW_FEATURES,
                    &w.features,
                    "windows",
                    out,
                );
            }
        }
        self.pending = pending;
    }

    /// Runs the model episode of a channel for one scored window or reading.
    #[allow(clippy::too_many_arguments)]
    fn episode(
        &mut self,
        id: &ChannelId,
        ts_us: TimestampUs,
        det: &Detection,
        names: &[&str],
        values: &[f64],
        unit_of_work: &str,
        out: &mut Vec<Record>,
    ) {
        let rules = self.rules;
        let warmup = self.settings.warmup_windows;
        let Some(ch) = self.channels.get_mut(&id.sensor_id) else {
            return;
        };
        let episode_before = ch.model_episode.episode_us();
        let peak_before = ch.model_episode.peak_confidence();
        let clear = det.score < det.threshold * rules.hysteresis;
        let transition =
            ch.model_episode
                .observe(&rules, ts_us, det.is_anomalous(), clear, det.confidence);
        if transition == Transition::None {
            return;
        }
        let features: Vec<(String, f64)> = names
            .iter()
            .zip(values)
            .map(|(n, v)| (n.to_string(), *v))
            .collect();
        let features = features.as_slice();
        let anomaly_type = alerts::anomaly_type(id.sensor_type);
        let label = type_label(&anomaly_type);
        let recent = ch.model_episode.recent_anomalous(&rules);
        let feature_map: serde_json::Map<String, serde_json::Value> = features
            .iter()
            .map(|(n, v)| (n.clone(), json!(v)))
            .collect();
        let (state, episode_us, confidence, description, evidence) = match transition {
            Transition::None => return,
            Transition::Open | Transition::Update => {
                let episode_us = ch.model_episode.episode_us().unwrap_or(ts_us);
                let why = match &det.worst_feature {
                    Some((f, z)) => format!(
                        "{f} is {} standard deviations from this sensor's baseline (learned from its first {warmup} {unit_of_work}; limit {})",
                        fmt_num(z.abs()),
                        fmt_num(det.threshold)
                    ),
                    None => format!(
                        "anomaly score {} is above the model's threshold {} ({})",
                        fmt_num(det.score),
                        fmt_num(det.threshold),
                        det.detector
                    ),
                };
                let key_values = key_feature_text(features, &id.unit);
                let description = format!(
                    "{label} on {}: {why}, in {recent} of the last {} {unit_of_work}. {key_values}",
                    id.sensor_id, rules.debounce_m
                );
                let mut evidence = json!({
                    "detector": det.detector,
                    "score": det.score,
                    "threshold": det.threshold,
                    "features": feature_map,
                    "at": format_rfc3339(ts_us),
                    "anomalous": recent,
                    "of_last": rules.debounce_m,
                });
                if let Some((f, z)) = &det.worst_feature {
                    evidence["baseline_feature"] = json!(f);
                    evidence["baseline_z"] = json!(z);
                }
                let state = if transition == Transition::Open {
                    AlertState::Open
                } else {
                    AlertState::Update
                };
                (state, episode_us, det.confidence, description, evidence)
            }
            Transition::Resolved => {
                let episode_us = episode_before.unwrap_or(ts_us);
                let minutes = (ts_us - episode_us) as f64 / 60e6;
                let description = format!(
                    "{label} on {} resolved: score stayed below {} ({} x threshold {}) for {} consecutive {unit_of_work}; the episode lasted {} minutes.",
                    id.sensor_id,
                    fmt_num(det.threshold * rules.hysteresis),
                    rules.hysteresis,
                    fmt_num(det.threshold),
                    rules.clear_windows,
                    fmt_num(minutes)
                );
                let evidence = json!({
                    "detector": det.detector,
                    "score": det.score,
                    "threshold": det.threshold,
                    "clear_below": det.threshold * rules.hysteresis,
                    "clear_for": rules.clear_windows,
                    "features": feature_map,
                    "episode_start": format_rfc3339(episode_us),
                    "at": format_rfc3339(ts_us),
                    "peak_confidence": peak_before,
                });
                (
                    AlertState::Resolved,
                    episode_us,
                    peak_before,
                    description,
                    evidence,
                )
            }
        };
        let alert = make_alert(
            id,
            state,
            episode_us,
            ts_us,
            AlertContent {
                anomaly_type,
                confidence,
                description,
                evidence,
            },
        );
        self.counters.alerts += 1;
        out.push(Record::Alert(alert));
    }
}

/// The sensor-fault episodes (stuck, out of range) of one reading or block.
fn sensor_fault_alerts(
    ch: &mut ChannelState,
    rules: &EpisodeRules,
    ts_us: TimestampUs,
    verdict: &Verdict,
    value_text: &str,
) -> Vec<crate::record::AlertRecord> {
    let mut alerts = Vec::new();
    let limits = ch.validator.limits().clone();
    let checks = [
        (
            alerts::SENSOR_STUCK,
            verdict.stuck,
            // A value that does not move may also be a very steady process.
            0.7,
            &mut ch.stuck_episode,
            format!(
                "the same value repeated at least {} times in a row",
                limits.stuck_after.unwrap_or(0)
            ),
        ),
        (
            alerts::SENSOR_OUT_OF_RANGE,
            verdict.out_of_range,
            // Outside the physical range: certainly the sensor or its wiring.
            0.9,
            &mut ch.range_episode,
            format!(
                "outside its valid range {}..{} {}",
                limits.min.map_or("-inf".to_string(), fmt_num),
                limits.max.map_or("+inf".to_string(), fmt_num),
                ch.id.unit
            ),
        ),
    ];
    for (anomaly_type, flagged, confidence, tracker, what) in checks {
        let before = tracker.episode_us();
        let transition = tracker.observe(rules, ts_us, flagged, !flagged, confidence);
        let (state, episode_us, description) = match transition {
            Transition::None => continue,
            Transition::Open | Transition::Update => (
                if transition == Transition::Open {
                    AlertState::Open
                } else {
                    AlertState::Update
                },
                tracker.episode_us().unwrap_or(ts_us),
                format!(
                    "Sensor {} {}: {what} (last reading: {value_text}). Its readings are kept with lowered quality.",
                    ch.id.sensor_id,
                    if anomaly_type == alerts::SENSOR_STUCK { "looks stuck" } else { "reads out of range" }
                ),
            ),
            Transition::Resolved => (
                AlertState::Resolved,
                before.unwrap_or(ts_us),
                format!(
                    "Sensor {} reads plausible values again ({} clean readings in a row).",
                    ch.id.sensor_id, rules.clear_windows
                ),
            ),
        };
        let evidence = json!({
            "check": anomaly_type,
            "last_value": value_text,
            "limits": {
                "min": limits.min, "max": limits.max,
                "stuck_after": limits.stuck_after,
                "max_rate_per_s": limits.max_rate_per_s,
            },
            "at": format_rfc3339(ts_us),
        });
        alerts.push(make_alert(
            &ch.id,
            state,
            episode_us,
            ts_us,
            AlertContent {
                anomaly_type: anomaly_type.to_string(),
                confidence,
                description,
                evidence,
            },
        ));
    }
    alerts
}

fn type_label(anomaly_type: &str) -> String {
    let mut s = anomaly_type.replace('_', " ");
    if let Some(first) = s.get_mut(0..1) {
        first.make_ascii_uppercase();
    }
    s
}

/// The features a maintenance engineer reads first, in words.
fn key_feature_text(features: &[(String, f64)], unit: &str) -> String {
    let get = |n: &str| features.iter().find(|(k, _)| k == n).map(|(_, v)| *v);
    let mut parts = Vec::new();
    if let Some(v) = get("rms") {
        parts.push(format!("RMS {} {unit}", fmt_num(v)));
    }
    if let Some(v) = get("kurtosis") {
        parts.push(format!("kurtosis {}", fmt_num(v)));
    }
    if let Some(v) = get("crest_factor") {
        parts.push(format!("crest factor {}", fmt_num(v)));
    }
    if let Some(v) = get("dominant_freq") {
        parts.push(format!("dominant frequency {} Hz", fmt_num(v)));
    }
    if let Some(v) = get("value") {
        parts.push(format!("value {} {unit}", fmt_num(v)));
    }
    if let Some(v) = get("mean") {
        if get("value").is_some() {
            parts.push(format!("recent mean {} {unit}", fmt_num(v)));
        }
    }
    if let Some(v) = get("slope") {
        parts.push(format!("trend {} {unit} per reading", fmt_num(v)));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("Now: {}.", parts.join(", "))
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
    }
}

fn summary_key(sensor_id: &str, interval_secs: u32) -> String {
    format!("summary/{interval_secs}/{sensor_id}")
}

fn baseline_key(sensor_id: &str, kind: BundleKind) -> String {
    format!("baseline/{}/{sensor_id}", kind.as_str())
}
