//! The scalar readings path of the [`Processor`]: validation, the reading record with
//! its detection, rolling detection (time-based and relative, or a count-based
//! absolute bundle), ISO zones of velocity registers, summaries.

use super::scoring::z_row;
use super::*;

/// A scored reading waiting for its episode: the detection, the trend (CUSUM level,
/// alarmed) and the features for the alert text (named only if an alert is made).
type AlertInput = (Detection, Option<(f64, bool)>, AlertFeatures);

/// The features of a scored reading, for its fault episode's alert text and evidence.
enum AlertFeatures {
    /// The rolling health features, in [`SCALAR_HEALTH_FEATURES`] order: named only
    /// when the fault episode makes an alert (opens, escalates, updates, resolves),
    /// not for every reading.
    ///
    /// [`SCALAR_HEALTH_FEATURES`]: crate::pipeline::rolling::SCALAR_HEALTH_FEATURES
    Health([f64; 4]),
    /// Named already (a count-based bundle's rolling features).
    Named(Vec<(String, f64)>),
}

/// A scalar reading between its two halves ([`Processor::scalar`] and
/// [`Processor::finish_scalars`]): everything up to its score is done, and what is
/// left to emit (its record, summary, alerts, episodes) waits here, in reading order.
pub(super) struct ScalarTail {
    id: ChannelId,
    ts_us: TimestampUs,
    value: f64,
    quality: f32,
    flags: Vec<String>,
    fault_alerts: Vec<AlertRecord>,
    summary_done: Option<Bucket>,
    scoreable: bool,
    info: ScoreInfo,
    alert_input: Option<AlertInput>,
    /// Waiting for its relative bundle's score (one batched run for the batch).
    waiting: Option<Waiting>,
}

/// A reading's z values waiting for its relative bundle.
struct Waiting {
    /// Its row: `Processor::score_groups[group]`, row `row`.
    group: usize,
    row: usize,
    threshold: f64,
    trend_on: bool,
    trend_weight: f64,
    health: [f64; 4],
}

/// The rows of a batch that wait for one relative bundle, and their scores.
pub(super) struct ScoreGroup {
    bundle: Arc<ModelBundle>,
    rows: Vec<f32>,
    scores: Vec<crate::inference::Result<f32>>,
}

impl ScoreGroup {
    pub(super) fn new(bundle: Arc<ModelBundle>) -> ScoreGroup {
        ScoreGroup {
            bundle,
            rows: Vec::new(),
            scores: Vec::new(),
        }
    }
}

impl Processor {
    /// The first half of a scalar reading: validation, cadence, summary, features,
    /// commissioning, the z values. Its score by a relative bundle and the records it
    /// makes wait in `self.tails` for [`Processor::finish_scalars`], which the batch
    /// loop calls before a reading of a channel already waiting, before any other
    /// kind of reading, and at the end of the batch: so each channel's steps run in
    /// reading order, the records come out in reading order, and a poll's readings
    /// are scored by one batched tract run (`ModelBundle::score_rows`, the same
    /// scores as one call each).
    pub(super) fn scalar(&mut self, r: &Reading, value: f64) {
        let rolling_len_default = self.settings.rolling_length;
        let choice = self.registry.load().choose_at(
            Some(&r.device),
            r.sensor_type,
            BundleKind::Rolling,
            None,
        );
        let bundle = choice.chosen.map(|(b, _)| b);
        let rules = self.rules;
        let rolling_secs = self.device(&r.device).rolling_window_secs;
        // A speed channel feeds the bearing frequencies of its device's windows.
        if let Some(sc) = self.device(&r.device).speed_channel.as_deref() {
            if sc == &*r.channel && value.is_finite() && value > 0.0 {
                let hz = if r.unit.eq_ignore_ascii_case("hz") {
                    value
                } else {
                    value / 60.0
                };
                self.speeds.insert(r.device.to_string(), hz);
            }
        }
        let redelivering = self.redelivering;
        let ch = self.channel(r);
        let verdict = ch.validator.check_scalar(r.ts_us, value);
        let mut quality = r.quality;
        let mut flags = r.flags.clone();
        verdict.apply(&mut quality, &mut flags);
        let id = ch.id.clone();
        // Cadence: a smoothed interval between readings.
        if let Some(prev) = ch.prev_ts_us {
            let dt = (r.ts_us - prev) as f64;
            if dt > 0.0 && (ch.cadence_n == 0 || dt < 20.0 * ch.cadence_us) {
                ch.cadence_us = if ch.cadence_n == 0 {
                    dt
                } else {
                    ch.cadence_us + 0.1 * (dt - ch.cadence_us)
                };
                ch.cadence_n += 1;
            }
        }
        ch.prev_ts_us = Some(r.ts_us);
        let unit = id.unit.clone();
        let fault_value = || format!("{} {}", fmt_num(value), unit);
        let fault_alerts = sensor_fault_alerts(ch, &rules, r.ts_us, &verdict, fault_value);
        let mut summary_done = None;
        if !verdict.out_of_range {
            if redelivering {
                ch.summary.remember_recent();
            }
            summary_done = ch.summary.push(r.ts_us, value);
        }
        self.counters.late_for_summary += std::mem::take(&mut ch.summary.late);
        self.counters.readings += 1;
        if !verdict.is_clean() {
            self.counters.flagged += 1;
        }

        // Detection. Out-of-range values are not the process: keep them out of it.
        let scoreable = !(verdict.out_of_range || quality <= 0.0);
        let clean = verdict.is_clean() && r.quality >= 1.0;
        let mut tail = ScalarTail {
            id,
            ts_us: r.ts_us,
            value,
            quality,
            flags,
            fault_alerts,
            summary_done,
            scoreable,
            info: ScoreInfo {
                detector: NOT_SCORED.clone(),
                score: None,
                threshold: None,
            },
            alert_input: None,
            waiting: None,
        };
        let absolute = bundle
            .as_ref()
            .filter(|b| b.manifest().reference == Reference::Absolute);
        if scoreable {
            if let Some(b) = absolute {
                let len = b
                    .manifest()
                    .rolling
                    .as_ref()
                    .map(|s| s.length)
                    .unwrap_or(rolling_len_default);
                self.check_cadence(&tail.id, b);
                let ch = self.channel(r);
                let rolling = ch
                    .rolling
                    .get_or_insert_with(|| Box::new(RollingWindow::new(len)));
                if rolling.len() != len {
                    **rolling = RollingWindow::new(len);
                }
                match rolling.push(value) {
                    None => {
                        tail.info.detector =
                            format!("{} (filling its {len}-reading window)", b.detector()).into();
                    }
                    Some(features) => match score_with_model(
                        b,
                        &ROLLING_FEATURES,
                        &features.0,
                        &mut self.model_input,
                    ) {
                        Ok(d) => {
                            self.counters.scored_by_model += 1;
                            tail.info = ScoreInfo {
                                detector: d.detector.clone(),
                                score: Some(d.score),
                                threshold: Some(d.threshold),
                            };
                            tail.alert_input =
                                Some((d, None, AlertFeatures::Named(features.named())));
                        }
                        Err(e) => {
                            self.counters.model_errors += 1;
                            tracing::warn!(sensor_id = %tail.id.sensor_id, error = %e, "Model failed on a reading.");
                        }
                    },
                }
            } else {
                let ch = self.channel(r);
                let tw = ch
                    .time_window
                    .get_or_insert_with(|| TimeWindow::new(rolling_secs));
                if (tw.span_us() as f64 - rolling_secs * 1e6).abs() > 1.0 {
                    *tw = TimeWindow::new(rolling_secs);
                }
                let features = tw.push(r.ts_us, value);
                // The trend counts hours, so it means the same at any cadence.
                let trend_weight = ch
                    .last_scored_us
                    .map_or(0.0, |l| ((r.ts_us - l).max(0) as f64 / 3.6e9).min(24.0));
                if let Some(f) = features {
                    let sensor_id = tail.id.sensor_id.clone();
                    match self.relative_observe(&sensor_id, false, r.ts_us, &f.health, clean) {
                        None => {
                            let ch = self.channel(r);
                            let p = ch.relative.as_ref().map_or(0.0, |d| d.progress(r.ts_us));
                            tail.info.detector = commissioning(p);
                        }
                        Some((threshold, trend_on)) => {
                            match bundle.filter(|b| b.manifest().reference == Reference::Baseline) {
                                Some(b) => {
                                    let (group, row) = self.queue_row(&sensor_id, b);
                                    tail.waiting = Some(Waiting {
                                        group,
                                        row,
                                        threshold,
                                        trend_on,
                                        trend_weight,
                                        health: f.health,
                                    });
                                }
                                None => {
                                    let (det, trend) = self.relative_score(
                                        &sensor_id,
                                        None,
                                        threshold,
                                        trend_on,
                                        trend_weight,
                                    );
                                    self.scored(&mut tail, det, trend, f.health);
                                }
                            }
                        }
                    }
                }
            }
        }
        self.tails.push(tail);
    }

    /// Queues the channel's z values as a row for `bundle`'s batched run (see
    /// [`Processor::finish_scalars`]): returns its group and row.
    pub(super) fn queue_row(
        &mut self,
        sensor_id: &Arc<str>,
        bundle: Arc<ModelBundle>,
    ) -> (usize, usize) {
        let group = match self
            .score_groups
            .iter()
            .position(|g| Arc::ptr_eq(&g.bundle, &bundle))
        {
            Some(i) => i,
            None => {
                self.score_groups.push(scalar::ScoreGroup::new(bundle));
                self.score_groups.len() - 1
            }
        };
        let g = &mut self.score_groups[group];
        // A manifest has at least one feature (checked at load).
        let row = g.rows.len() / g.bundle.features().len();
        z_row(&self.channels, sensor_id, &g.bundle, &mut g.rows);
        (group, row)
    }

    /// Whether a reading of `sensor_id` waits in `self.tails`.
    pub(super) fn waiting(&self, sensor_id: &str) -> bool {
        self.tails.iter().any(|t| &*t.id.sensor_id == sensor_id)
    }

    /// The second half of the waiting scalar readings, in reading order: their
    /// scores (one batched run per bundle), then their records, summaries, alerts
    /// and episodes.
    pub(super) fn finish_scalars(&mut self, out: &mut Vec<Record>) {
        if self.tails.is_empty() {
            return;
        }
        let mut tails = std::mem::take(&mut self.tails);
        // One batched run per bundle for the rows that wait for it.
        let mut groups = std::mem::take(&mut self.score_groups);
        for g in &mut groups {
            g.bundle.score_rows(&g.rows, &mut g.scores);
        }
        for mut tail in tails.drain(..) {
            if let Some(w) = tail.waiting.take() {
                let g = &mut groups[w.group];
                let n = g.bundle.features().len();
                let score = match g.scores.get_mut(w.row) {
                    Some(s) => std::mem::replace(s, Ok(0.0)),
                    // Not whole rows (cannot happen: each row is the bundle's
                    // features): the single call says why.
                    None => g.bundle.score(&g.rows[w.row * n..(w.row + 1) * n]),
                };
                let sensor_id = tail.id.sensor_id.clone();
                let (det, trend) = self.relative_score(
                    &sensor_id,
                    Some((&groups[w.group].bundle, score)),
                    w.threshold,
                    w.trend_on,
                    w.trend_weight,
                );
                self.scored(&mut tail, det, trend, w.health);
            }
            self.emit_scalar(tail, out);
        }
        groups.clear();
        self.score_groups = groups;
        // Keep the allocation for the next batch.
        self.tails = tails;
    }

    /// A scalar reading's detection: its record says how it was scored, and its
    /// fault episode gets it.
    fn scored(
        &mut self,
        tail: &mut ScalarTail,
        det: Option<Detection>,
        trend: Option<(f64, bool)>,
        health: [f64; 4],
    ) {
        let Some(d) = det else { return };
        if let Some(ch) = self.channels.get_mut(&tail.id.sensor_id) {
            ch.last_scored_us = Some(tail.ts_us);
        }
        tail.info = ScoreInfo {
            detector: d.detector.clone(),
            score: Some(d.score),
            threshold: Some(d.threshold),
        };
        tail.alert_input = Some((d, trend, AlertFeatures::Health(health)));
    }

    /// What a scalar reading emits, once scored: its record, a finished summary
    /// bucket, sensor-fault alerts, the ISO zone and fault episodes.
    fn emit_scalar(&mut self, tail: ScalarTail, out: &mut Vec<Record>) {
        let interval = self.settings.summary_interval_secs;
        let ScalarTail {
            id,
            ts_us,
            value,
            quality,
            flags,
            fault_alerts,
            summary_done,
            scoreable,
            info,
            alert_input,
            waiting: _,
        } = tail;
        if let Some(ch) = self.channels.get_mut(&id.sensor_id) {
            ch.detector.clone_from(&info.detector);
        }
        out.push(Record::Reading(ReadingRecord {
            sensor_id: Id::from(&id.sensor_id),
            device: Id::from(&id.device),
            channel: Id::from(&id.channel),
            sensor_type: id.sensor_type,
            unit: Id::from(&id.unit),
            ts_us,
            value,
            quality,
            flags,
            detection: Some(info),
        }));
        if let Some(done) = summary_done {
            out.push(Record::Summary(summary_record(&id, interval, &done)));
            self.counters.summaries += 1;
        }
        for a in fault_alerts {
            self.emit_alert(a, out);
        }
        // A velocity RMS register (mm/s) of a device with an ISO 20816-3 class.
        if let Some((g, f)) = self.device(&id.device).iso {
            if scoreable
                && id.unit.eq_ignore_ascii_case("mm/s")
                && matches!(
                    id.sensor_type,
                    crate::record::SensorType::Vibration | crate::record::SensorType::Bearing
                )
            {
                self.iso_episode(&id, ts_us, value, g, f, out);
            }
        }
        if let Some((det, trend, features)) = alert_input {
            let named = || match features {
                AlertFeatures::Health(h) => crate::pipeline::rolling::SCALAR_HEALTH_FEATURES
                    .iter()
                    .zip(h)
                    .map(|(n, v)| (n.to_string(), v))
                    .collect(),
                AlertFeatures::Named(v) => v,
            };
            self.fault_episode(&id, ts_us, &det, trend, named, "readings", None, out);
        }
    }

    /// Warns once when a count-based bundle sees readings at another cadence than it
    /// was trained at.
    pub(super) fn check_cadence(&mut self, id: &ChannelId, b: &ModelBundle) {
        let Some(expected) = b.manifest().rolling.as_ref().and_then(|r| r.cadence_secs) else {
            return;
        };
        let Some(ch) = self.channels.get_mut(&id.sensor_id) else {
            return;
        };
        if ch.cadence_n < 20 || ch.warnings.iter().any(|w| w.starts_with("cadence")) {
            return;
        }
        let got = ch.cadence_us / 1e6;
        if (got / expected - 1.0).abs() > 0.5 {
            let w = format!(
                "cadence: readings come every {} s but {} counts readings made every {} s: its {}-reading window spans {} instead of {}",
                fmt_num(got),
                b.detector(),
                fmt_num(expected),
                b.manifest().rolling.as_ref().map_or(0, |r| r.length),
                human_duration_us((got * 1e6) as i64 * b.manifest().rolling.as_ref().map_or(0, |r| r.length) as i64),
                human_duration_us((expected * 1e6) as i64 * b.manifest().rolling.as_ref().map_or(0, |r| r.length) as i64),
            );
            tracing::warn!(sensor_id = %id.sensor_id, warning = %w, "The data's cadence does not fit the model bundle.");
            ch.warnings.push(w);
            self.counters.mismatch_warnings += 1;
        }
    }
}
