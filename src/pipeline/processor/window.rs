//! The waveform path of the [`Processor`]: blocks into windows, physical features and
//! the envelope spectrum, bearing families, scoring, window records.

use super::*;

impl Processor {
    pub(super) fn block(
        &mut self,
        r: &Reading,
        samples: &Arc<[f32]>,
        fs: f64,
        out: &mut Vec<Record>,
    ) {
        self.counters.blocks += 1;
        let choice = self.registry.load().choose_at(
            Some(&r.device),
            r.sensor_type,
            BundleKind::Window,
            Some(fs),
        );
        let bundle = choice.chosen.as_ref().map(|(b, _)| b.clone());
        let dev = self.device(&r.device).clone();
        let absolute = bundle
            .as_ref()
            .filter(|b| b.manifest().reference == Reference::Absolute)
            .cloned();
        let (len, overlap) = match absolute.as_ref().and_then(|b| b.manifest().window.clone()) {
            Some(w) => (w.length, w.overlap),
            None => {
                let len = match dev.window_secs {
                    Some(s) => ((s * fs).round() as usize).max(16),
                    None => dev.window_samples,
                };
                (len, dev.window_overlap)
            }
        };
        let rules = self.rules;
        let interval = self.settings.summary_interval_secs;
        let ch = self.channel(r);
        // Say once, loudly, when a bundle chosen for this channel cannot score it.
        let mut new_warnings = 0;
        for (b, why) in &choice.skipped {
            let w = format!("sample rate: {} is not used: {why}", b.detector());
            if !ch.warnings.contains(&w) {
                tracing::warn!(sensor_id = %ch.id.sensor_id, warning = %w, scored_by = %bundle.as_ref().map_or(BUILTIN_RULE.to_string(), |b| b.detector().to_string()), "A model bundle does not fit this channel.");
                ch.warnings.push(w);
                new_warnings += 1;
            }
        }
        self.counters.mismatch_warnings += new_warnings;
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
        let unit = ch.id.unit.clone();
        let fault_value = || {
            format!(
                "samples from {} to {} {}",
                fmt_num(f64::from(lo)),
                fmt_num(f64::from(hi)),
                unit
            )
        };
        let fault_alerts = sensor_fault_alerts(ch, &rules, r.ts_us, &verdict, fault_value);
        for a in fault_alerts {
            self.emit_alert(a, out);
        }

        let params = PhysicalParams {
            sample_rate_hz: fs,
            accel_to_ms2: accel_unit_to_ms2(&r.unit),
            envelope_band_hz: dev.envelope_band_hz,
        };
        let extractor = self
            .extractors
            .entry(len)
            .or_insert_with(|| FeatureExtractor::new(len));
        let Some(ch) = self.channels.get_mut(&r.sensor_id) else {
            return;
        };
        let windower = ch
            .windower
            .get_or_insert_with(|| Box::new(Windower::new(len, overlap)));
        if windower.len() != len || windower.hop() != Windower::hop_for(len, overlap) {
            **windower = Windower::new(len, overlap);
        }
        if !self.touched_windows.contains(&r.sensor_id) {
            self.touched_windows.insert(r.sensor_id.clone());
        }
        let pending = &mut self.pending;
        windower.push(samples, fs, r.ts_us, quality, |w, meta| {
            let p = PhysicalParams {
                sample_rate_hz: meta.sample_rate_hz,
                ..params
            };
            if let Some((f, phys)) = extractor.compute_all(w, &p) {
                let (env, df) = extractor.envelope_spectrum();
                pending.push(PendingWindow {
                    features: f.0,
                    physical: Some(phys),
                    envelope: env.to_vec(),
                    envelope_df: df,
                    meta,
                    samples: w.len() as u32,
                });
            }
        });
        let id = ch.id.clone();
        let shaft_hz = dev
            .shaft_hz
            .or_else(|| self.speeds.get(&*id.device).copied());
        let mut pending = std::mem::take(&mut self.pending);
        for w in pending.drain(..) {
            self.window(
                &id,
                w,
                absolute.as_ref(),
                bundle.as_ref(),
                &dev,
                shaft_hz,
                interval,
                out,
            );
        }
        self.pending = pending;
    }

    /// Scores one window and runs its episodes.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn window(
        &mut self,
        id: &ChannelId,
        w: PendingWindow,
        absolute: Option<&Arc<ModelBundle>>,
        bundle: Option<&Arc<ModelBundle>>,
        dev: &DeviceDetection,
        shaft_hz: Option<f64>,
        interval: u32,
        out: &mut Vec<Record>,
    ) {
        self.counters.windows += 1;
        let ts = w.meta.ts_us;
        let mut named: Vec<(String, f64)> = WINDOW_FEATURES
            .iter()
            .zip(w.features.iter())
            .map(|(n, v)| (n.to_string(), *v))
            .collect();
        if let Some(p) = &w.physical {
            // kurtosis and crest_factor are in the canonical set already (the health
            // crest factor is the centred one: accel_peak / accel_rms, both recorded).
            for (n, v) in p.named() {
                if !WINDOW_FEATURES.contains(&n.as_str()) {
                    named.push((n, v));
                }
            }
        }
        // Bearing families from the averaged envelope spectrum.
        let mut families: Option<FamilyLevels> = None;
        if let Some(ch) = self.channels.get_mut(&id.sensor_id) {
            if !w.envelope.is_empty() {
                let avg = ch.envelope.get_or_insert_with(|| {
                    Box::new(EnvelopeAverage {
                        spectrum: Vec::new(),
                        df: 0.0,
                        n: 0,
                    })
                });
                avg.push(&w.envelope, w.envelope_df);
                if let (Some(hz), Some((_, m))) = (shaft_hz, &dev.bearing) {
                    families = bearing::family_levels(&avg.spectrum, avg.df, hz, m);
                }
            }
        }
        if let Some(f) = &families {
            named.extend([
                ("env_ftf".to_string(), f.ftf),
                ("env_ball".to_string(), f.ball),
                ("env_bpfo".to_string(), f.bpfo),
                ("env_bpfi".to_string(), f.bpfi),
            ]);
        }
        // A window with an out-of-range sample is not scored: the sensor, not the
        // machine, is what is wrong.
        let scoreable = w.meta.quality > 0.0;
        let clean = w.meta.quality >= 1.0;
        let mut det = None;
        let mut trend = None;
        let mut detector = NOT_SCORED.clone();
        if scoreable {
            if let Some(b) = absolute {
                match score_with_model(b, &WINDOW_FEATURES, &w.features, &mut self.model_input) {
                    Ok(d) => {
                        self.counters.scored_by_model += 1;
                        detector.clone_from(&d.detector);
                        det = Some(d);
                    }
                    Err(e) => {
                        self.counters.model_errors += 1;
                        tracing::warn!(sensor_id = %id.sensor_id, error = %e, "Model failed on a window.");
                    }
                }
            } else if let Some(p) = &w.physical {
                let mut values = [f64::NAN; 13];
                values[..WINDOW_SCORED].copy_from_slice(&p.health);
                if let Some(f) = &families {
                    values[9..13].copy_from_slice(&[f.ftf, f.ball, f.bpfo, f.bpfi]);
                }
                let (d, t) =
                    self.relative_step(&id.sensor_id, bundle, true, ts, &values, clean, 1.0);
                trend = t;
                match &d {
                    Some(d) => detector.clone_from(&d.detector),
                    None => {
                        let p = self
                            .channels
                            .get(&id.sensor_id)
                            .and_then(|c| c.relative.as_ref())
                            .map_or(0.0, |r| r.progress(ts));
                        detector = commissioning(p);
                    }
                }
                det = d;
            }
        }
        if let Some(ch) = self.channels.get_mut(&id.sensor_id) {
            ch.detector.clone_from(&detector);
        }
        out.push(Record::Window(WindowRecord {
            sensor_id: Id::from(&id.sensor_id),
            device: Id::from(&id.device),
            channel: Id::from(&id.channel),
            sensor_type: id.sensor_type,
            unit: Id::from(&id.unit),
            ts_us: ts,
            sample_rate_hz: w.meta.sample_rate_hz,
            samples: w.samples,
            features: named.clone(),
            score: det.as_ref().map(|d| d.score),
            threshold: det.as_ref().map(|d| d.threshold),
            detector: Some(detector),
            quality: w.meta.quality,
        }));
        if let Some(ch) = self.channels.get_mut(&id.sensor_id) {
            if self.redelivering {
                ch.summary.remember_recent();
            }
            if let Some(done) = ch.summary.push(ts, w.features[0]) {
                out.push(Record::Summary(summary_record(id, interval, &done)));
                self.counters.summaries += 1;
            }
            self.counters.late_for_summary += std::mem::take(&mut ch.summary.late);
        }
        // ISO 20816-3 zone: physics, scored from the first window on.
        if let (Some((g, f)), Some(v)) = (dev.iso, w.physical.and_then(|p| p.velocity_mm_s)) {
            if scoreable {
                self.iso_episode(id, ts, v, g, f, out);
            }
        }
        if let Some(det) = det {
            let diagnosis = self.bearing_diagnosis(id, families.as_ref(), shaft_hz, dev);
            self.state_change(id, ts, dev, &named, out);
            self.fault_episode(id, ts, &det, trend, || named, "windows", diagnosis, out);
        }
    }

    /// What the envelope spectrum says about the bearing, if one is configured.
    pub(super) fn bearing_diagnosis(
        &self,
        id: &ChannelId,
        families: Option<&FamilyLevels>,
        shaft_hz: Option<f64>,
        dev: &DeviceDetection,
    ) -> Option<bearing::Diagnosis> {
        let now = families?;
        let (_, m) = dev.bearing.as_ref()?;
        let baseline = self
            .channels
            .get(&id.sensor_id)
            .and_then(|c| c.relative.as_ref())
            .and_then(|r| r.family_baseline());
        Some(bearing::diagnose(now, baseline.as_ref(), shaft_hz?, m))
    }
}
