//! Relative scoring of one window or reading: the channel's relative detector
//! (created and resumed from the state store on first use), commissioning, and the
//! score from a relative bundle or the built-in rule ([`Processor::relative_step`]).

use super::*;

/// A learning channel saves its samples at most this often (reading time), so a day
/// of learning is a few dozen writes, and a restart loses at most this much of it.
const LEARNING_SAVE_INTERVAL_US: i64 = 60_000_000;

impl Processor {
    /// The relative detector of a channel, created (and resumed from the state store)
    /// on first use.
    fn relative<'a>(
        state: &mut dyn StateStore,
        counters: &mut ProcessorCounters,
        plan: crate::pipeline::baseline::LearnPlan,
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
            let loaded = stored.and_then(|main| {
                let mut get = |k: &str| state.get(k).ok().flatten();
                match load_state(&key, &main, &mut get) {
                    Ok(loaded) => loaded,
                    Err(e) => {
                        counters.state_errors += 1;
                        tracing::warn!(key = %key, error = %e, "A learning baseline's stored samples are incomplete; the channel learns again.");
                        None
                    }
                }
            });
            let d = RelativeDetector::resume(specs, scored, plan, loaded);
            if let Some(BaselineState::Learned(b)) = d.state() {
                tracing::info!(sensor_id = %ch.id.sensor_id, learned = %format_rfc3339(b.learned_us), samples = b.samples, "Baseline resumed from the outbox database.");
            }
            d
        })
    }

    /// Runs the relative detector on one window's or reading's health `values`.
    /// Returns the detection once the baseline is learned (None while learning).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn relative_step(
        &mut self,
        sensor_id: &Arc<str>,
        bundle: Option<&Arc<ModelBundle>>,
        waveform: bool,
        ts_us: TimestampUs,
        values: &[f64],
        clean: bool,
        trend_weight: f64,
    ) -> (Option<Detection>, Option<(f64, bool)>) {
        let Some((threshold, trend_on)) =
            self.relative_observe(sensor_id, waveform, ts_us, values, clean)
        else {
            return (None, None);
        };
        let model = bundle
            .filter(|b| b.manifest().reference == Reference::Baseline)
            .map(|b| {
                self.model_input.clear();
                z_row(&self.channels, sensor_id, b, &mut self.model_input);
                (b, b.score(&self.model_input))
            });
        self.relative_score(sensor_id, model, threshold, trend_on, trend_weight)
    }

    /// The first half of [`Processor::relative_step`]: commissioning, or the z values
    /// of a learned baseline. Returns the channel's threshold and whether its trend is
    /// on once the baseline is learned (None while learning).
    pub(super) fn relative_observe(
        &mut self,
        sensor_id: &Arc<str>,
        waveform: bool,
        ts_us: TimestampUs,
        values: &[f64],
        clean: bool,
    ) -> Option<(f64, bool)> {
        let ch = self.channels.get_mut(sensor_id)?;
        let dev = self
            .devices
            .get(&*ch.id.device)
            .unwrap_or(&self.default_device);
        let (plan, threshold, trend_on) = (dev.plan, dev.threshold, dev.trend);
        let r = Self::relative(self.state.as_mut(), &mut self.counters, plan, ch, waveform);
        let step = r.observe(ts_us, values, clean);
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
        // The key is formatted only for a save, not for every reading.
        if r.due(ts_us, LEARNING_SAVE_INTERVAL_US, force) {
            let writes = r.writes(&baseline_key(sensor_id, waveform));
            if !apply_state_writes(&mut *self.state, &mut self.counters, writes, "a baseline") {
                r.save_failed();
            }
        }
        (step == Step::Ready).then_some((threshold, trend_on))
    }

    /// The second half of [`Processor::relative_step`]: the detection from a relative
    /// bundle's score (`model`: the bundle and its result for this channel's z
    /// values) or, without one or when it failed, the built-in rule; and the trend.
    pub(super) fn relative_score(
        &mut self,
        sensor_id: &Arc<str>,
        model: Option<(&Arc<ModelBundle>, crate::inference::Result<f32>)>,
        threshold: f64,
        trend_on: bool,
        trend_weight: f64,
    ) -> (Option<Detection>, Option<(f64, bool)>) {
        let mut det = None;
        if let Some((b, result)) = model {
            match result {
                Ok(score) => {
                    let score = f64::from(score);
                    self.counters.scored_by_model += 1;
                    det = Some(Detection {
                        score,
                        threshold: b.threshold(),
                        detector: b.detector().clone(),
                        confidence: b.confidence(score),
                    });
                }
                Err(e) => {
                    self.counters.model_errors += 1;
                    tracing::warn!(sensor_id = %sensor_id, error = %e, "Relative model failed; using the built-in rule.");
                }
            }
        }
        let Some(r) = self
            .channels
            .get_mut(sensor_id)
            .and_then(|c| c.relative.as_mut())
        else {
            return (det, None);
        };
        let det = det.unwrap_or_else(|| {
            self.counters.scored_by_fallback += 1;
            let score = r.builtin_score();
            Detection {
                score,
                threshold,
                detector: BUILTIN_RULE_ID.clone(),
                confidence: crate::inference::bundle::confidence(score, threshold),
            }
        });
        let trend = trend_on.then(|| r.trend(det.score, det.threshold, trend_weight));
        (Some(det), trend)
    }
}

/// Appends a channel's z values in `bundle`'s feature order to `dst`: the input row of
/// a relative bundle (0 for a feature the baseline does not have).
pub(super) fn z_row(
    channels: &NameMap<Arc<str>, Box<ChannelState>>,
    sensor_id: &str,
    bundle: &ModelBundle,
    dst: &mut Vec<f32>,
) {
    let r = channels.get(sensor_id).and_then(|c| c.relative.as_ref());
    dst.extend(
        bundle
            .features()
            .iter()
            .map(|f| r.and_then(|r| r.z_of(f)).unwrap_or(0.0) as f32),
    );
}
