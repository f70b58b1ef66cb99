//! What the [`Processor`] reports and what operators ask of it: the counters, device
//! errors and detection status per channel, and baseline resets (`edgegw baseline
//! reset`, in memory and in the state store).

use super::*;

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

impl Processor {
    pub fn counters(&self) -> &ProcessorCounters {
        &self.counters
    }

    /// A scalar channel's rolling trend (its time window's buckets: start, mean, min,
    /// max) and its learned baseline of the level (median, scale, logarithmic?), for
    /// the plot behind an alert on the status page.
    pub fn scalar_trend(&self, sensor_id: &str) -> Option<crate::ops::plot::ScalarTrend> {
        let ch = self.channels.get(sensor_id)?;
        let buckets = ch.time_window.as_ref()?.bucket_summary();
        let band = ch
            .relative
            .as_ref()
            .and_then(|r| r.baseline())
            .and_then(|b| {
                let j = b.index("level")?;
                let (m, s) = (*b.median.get(j)?, *b.scale.get(j)?);
                let log = matches!(
                    b.transforms.get(j),
                    Some(crate::pipeline::baseline::Transform::Log)
                );
                (m.is_finite() && s.is_finite()).then_some((m, s, log))
            });
        Some(crate::ops::plot::ScalarTrend { buckets, band })
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
                    detector: ch.detector.to_string(),
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
                // An open episode ends here, said upstream and to the notification
                // sinks like any other end (a stack light goes off), not dropped.
                let now = crate::record::now_us();
                for (tracker, anomaly_type) in [
                    (&ch.model_episode, alerts::anomaly_type(ch.id.sensor_type)),
                    (&ch.state_episode, alerts::STATE_CHANGED.to_string()),
                ] {
                    let Some(episode_us) = tracker.episode_us() else {
                        continue;
                    };
                    let alert = alerts::make_alert(
                        &ch.id,
                        AlertState::Resolved,
                        episode_us,
                        now.max(episode_us),
                        alerts::AlertContent {
                            anomaly_type: anomaly_type.to_string(),
                            confidence: tracker.peak_confidence(),
                            description: format!(
                                "{} on {}: the episode ends with a baseline reset; the channel learns its healthy state again.",
                                anomaly_type, ch.id.sensor_id
                            ),
                            evidence: serde_json::json!({
                                "reason": "baseline_reset",
                                "episode_start": crate::record::format_rfc3339(episode_us),
                                "peak_confidence": tracker.peak_confidence(),
                            }),
                        },
                    );
                    self.pending_alerts.push(alert);
                }
                ch.model_episode = EpisodeTracker::new();
                ch.state_episode = EpisodeTracker::new();
                self.touched_episodes.insert(ch.id.sensor_id.to_string());
                let key = baseline_key(&ch.id.sensor_id, ch.is_waveform);
                let writes = r.writes(&key);
                if !apply_state_writes(
                    &mut *self.state,
                    &mut self.counters,
                    writes,
                    "a baseline reset",
                ) {
                    r.save_failed();
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
}

/// State-store key of a persisted `edgegw baseline reset` request list.
pub const RESET_REQUESTS_KEY: &str = "baseline/reset-requests";

/// True when `selector` (`DEVICE` or `DEVICE.CHANNEL`) names this channel.
pub fn selects(selector: &str, device: &str, sensor_id: &str) -> bool {
    selector == sensor_id || selector == device
}

fn learning_samples(r: &RelativeDetector) -> u32 {
    match r.state() {
        Some(BaselineState::Learning(c)) => c.rows.len() as u32,
        _ => 0,
    }
}
