//! Alert episodes of the [`Processor`] and their words: the fault episode (score and
//! trend, escalation, the likely component), the "state changed" event, ISO 20816-3
//! zones, the sensor-fault checks, and the logging of every alert at info.

use super::*;

mod text;

use text::{deviations, key_feature_text, type_label, why_text};

impl Processor {
    /// The "machine or sensor state changed" event: vibration energy far below the
    /// baseline (one-sided scoring does not call it a fault).
    pub(super) fn state_change(
        &mut self,
        id: &ChannelId,
        ts: TimestampUs,
        dev: &DeviceDetection,
        named: &[(String, f64)],
        out: &mut Vec<Record>,
    ) {
        let rules = self.rules;
        let Some(ch) = self.channels.get_mut(&id.sensor_id) else {
            return;
        };
        let Some(r) = &ch.relative else { return };
        let Some(b) = r.baseline() else { return };
        let Some(j) = b.index("accel_rms") else {
            return;
        };
        let (Some(z), Some(typical)) = (r.z_of("accel_rms"), b.typical(j)) else {
            return;
        };
        let now = named
            .iter()
            .find(|(n, _)| n == "accel_rms")
            .map_or(f64::NAN, |(_, v)| *v);
        let ratio = now / typical;
        let dropped = z < -dev.threshold && ratio < dev.drop_ratio;
        let recovered = !dropped && ratio > dev.drop_ratio.sqrt();
        let before = ch.state_episode.episode_us();
        let tr = ch
            .state_episode
            .observe(&rules, ts, dropped, recovered, STATE_CHANGE_CONFIDENCE);
        let (state, episode_us, description) = match tr {
            Transition::None | Transition::Update | Transition::Escalate => return,
            Transition::Open => (
                AlertState::Open,
                ts,
                format!(
                    "Vibration on {} dropped to {} x this machine's baseline (acceleration RMS {} against {} {}): the machine stopped or runs at another speed or load, or the sensor came loose. This is a change of state, not a bearing fault.",
                    id.sensor_id,
                    fmt_num(ratio),
                    fmt_num(now),
                    fmt_num(typical),
                    id.unit
                ),
            ),
            Transition::Resolved => (
                AlertState::Resolved,
                before.unwrap_or(ts),
                format!(
                    "Vibration on {} is back near its baseline ({} x).",
                    id.sensor_id,
                    fmt_num(ratio)
                ),
            ),
        };
        let alert = make_alert(
            id,
            state,
            episode_us,
            ts,
            AlertContent {
                anomaly_type: alerts::STATE_CHANGED.to_string(),
                confidence: STATE_CHANGE_CONFIDENCE,
                description,
                evidence: json!({
                    "check": "accel_rms below the baseline",
                    "accel_rms": now,
                    "baseline_accel_rms": typical,
                    "ratio": ratio,
                    "z": z,
                    "drop_ratio": dev.drop_ratio,
                    "at": format_rfc3339(ts),
                }),
            },
        );
        self.emit_alert(alert, out);
    }

    /// The ISO 20816-3 zone episode of a window.
    pub(super) fn iso_episode(
        &mut self,
        id: &ChannelId,
        ts: TimestampUs,
        velocity: f64,
        group: iso::MachineGroup,
        foundation: iso::Foundation,
        out: &mut Vec<Record>,
    ) {
        let rules = self.rules;
        let zone = iso::zone(velocity, group, foundation);
        let limits = iso::boundaries(group, foundation);
        let severity = zone.severity();
        // Confidence that maps to the zone's severity with the cloud's mapping.
        let confidence = match severity {
            Some(5) => 0.9,
            Some(_) => 0.5,
            None => 0.0,
        };
        let Some(ch) = self.channels.get_mut(&id.sensor_id) else {
            return;
        };
        let before = ch.iso_episode.episode_us();
        let peak = ch.iso_episode.peak_confidence();
        let tr = ch.iso_episode.observe(
            &rules,
            ts,
            severity.is_some(),
            severity.is_none(),
            confidence,
        );
        let group_text = match group {
            iso::MachineGroup::Group1 => "group 1 (large)",
            iso::MachineGroup::Group2 => "group 2 (medium)",
        };
        let foundation_text = match foundation {
            iso::Foundation::Rigid => "rigid",
            iso::Foundation::Flexible => "flexible",
        };
        let (state, episode_us, conf, description) = match tr {
            Transition::None => return,
            Transition::Open | Transition::Update | Transition::Escalate => (
                if tr == Transition::Open {
                    AlertState::Open
                } else {
                    AlertState::Update
                },
                ch.iso_episode.episode_us().unwrap_or(ts),
                confidence,
                format!(
                    "Vibration severity on {}: velocity {} mm/s RMS (10-1000 Hz) is in ISO 20816-3 zone {} for a {group_text} machine on a {foundation_text} foundation (zone limits {}/{}/{} mm/s): {}.",
                    id.sensor_id,
                    fmt_num(velocity),
                    zone.as_str(),
                    limits[0],
                    limits[1],
                    limits[2],
                    zone.meaning()
                ),
            ),
            Transition::Resolved => (
                AlertState::Resolved,
                before.unwrap_or(ts),
                peak,
                format!(
                    "Vibration severity on {} is back in ISO 20816-3 zone {} ({} mm/s).",
                    id.sensor_id,
                    zone.as_str(),
                    fmt_num(velocity)
                ),
            ),
        };
        let alert = make_alert(
            id,
            state,
            episode_us,
            ts,
            AlertContent {
                anomaly_type: alerts::VIBRATION_SEVERITY.to_string(),
                confidence: conf,
                description,
                evidence: json!({
                    "standard": "ISO 20816-3",
                    "zone": zone.as_str(),
                    "velocity_mm_s": velocity,
                    "group": group_text,
                    "foundation": foundation_text,
                    "zone_limits_mm_s": limits,
                    "escalated": tr == Transition::Escalate,
                    "at": format_rfc3339(ts),
                }),
            },
        );
        self.emit_alert(alert, out);
    }

    /// Runs the fault episode of a channel for one scored window or reading.
    /// `named` gives its named features; it is called only when the episode opens,
    /// escalates, updates or resolves (not for every reading).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn fault_episode(
        &mut self,
        id: &ChannelId,
        ts_us: TimestampUs,
        det: &Detection,
        trend: Option<(f64, bool)>,
        named: impl FnOnce() -> Vec<(String, f64)>,
        unit_of_work: &str,
        diagnosis: Option<bearing::Diagnosis>,
        out: &mut Vec<Record>,
    ) {
        let rules = self.rules;
        let Some(ch) = self.channels.get_mut(&id.sensor_id) else {
            return;
        };
        let alarm = trend_alarm(det.threshold);
        let (cusum, trend_alarmed) = trend.unwrap_or((0.0, false));
        let trend_conf = if trend_alarmed {
            crate::inference::bundle::confidence(cusum, alarm)
        } else {
            0.0
        };
        let anomalous = det.is_anomalous() || trend_alarmed;
        let confidence = det.confidence.max(trend_conf);
        let clear = det.score < det.threshold * rules.hysteresis && cusum < alarm / 2.0;
        let episode_before = ch.model_episode.episode_us();
        let peak_before = ch.model_episode.peak_confidence();
        let severity_before = ch.model_episode.severity();
        let mut transition = ch
            .model_episode
            .observe(&rules, ts_us, anomalous, clear, confidence);
        // The envelope spectrum often needs a few more windows than the energy to
        // name the component: say so as soon as it does (or changes its mind).
        let component = diagnosis.as_ref().and_then(|d| d.component);
        let mut identified = false;
        match transition {
            Transition::Open | Transition::Escalate | Transition::Update => {
                identified = component.is_some() && component != ch.reported_component;
                ch.reported_component = component.or(ch.reported_component);
            }
            Transition::Resolved => ch.reported_component = None,
            Transition::None => {
                if anomalous
                    && ch.model_episode.is_open()
                    && component.is_some()
                    && component != ch.reported_component
                {
                    ch.reported_component = component;
                    identified = true;
                    transition = Transition::Update;
                }
            }
        }
        if transition == Transition::None {
            return;
        }
        let named = &named();
        let anomaly_type = alerts::anomaly_type(id.sensor_type);
        let label = type_label(&anomaly_type);
        let recent = ch.model_episode.recent_anomalous(&rules);
        let baseline = ch.relative.as_ref().and_then(|r| r.baseline());
        let deviations = ch
            .relative
            .as_ref()
            .filter(|_| baseline.is_some())
            .map(|r| deviations(r, named))
            .unwrap_or_default();
        let feature_map: serde_json::Map<String, serde_json::Value> = named
            .iter()
            .filter(|(_, v)| v.is_finite())
            .map(|(n, v)| (n.clone(), json!(v)))
            .collect();
        let mut evidence = json!({
            "detector": det.detector,
            "score": det.score,
            "threshold": det.threshold,
            "features": feature_map,
            "at": format_rfc3339(ts_us),
        });
        if let Some(b) = baseline {
            evidence["baseline"] = json!({
                "learned": format_rfc3339(b.learned_us),
                "samples": b.samples,
            });
            evidence["deviations"] = json!(deviations
                .iter()
                .map(|d| json!({"feature": d.name, "value": d.value, "baseline": d.typical, "ratio": d.ratio, "z": d.z}))
                .collect::<Vec<_>>());
        }
        if trend.is_some() {
            evidence["trend"] = json!({"cusum": cusum, "alarm": alarm, "alarmed": trend_alarmed});
        }
        let mut component_action = None;
        if let Some(d) = &diagnosis {
            evidence["bearing"] = json!({
                "likely_component": d.component.map(|c| c.as_str()),
                "newly_identified": identified,
                "ratios": d.ratios,
                "defect_hz": d.defect_hz,
                "text": d.text,
            });
            if let Some(c) = d.component {
                component_action = Some(format!(
                    "Plan a bearing inspection: the envelope spectrum points at the {}",
                    c.describe()
                ));
            }
        }
        let (state, episode_us, confidence, description) = match transition {
            Transition::None => return,
            Transition::Open | Transition::Update | Transition::Escalate => {
                let episode_us = ch.model_episode.episode_us().unwrap_or(ts_us);
                let why = why_text(det, trend_alarmed, cusum, alarm, &deviations, &id.unit);
                let mut description = format!(
                    "{label} on {}: {why}, in {recent} of the last {} {unit_of_work}.",
                    id.sensor_id, rules.debounce_m
                );
                if let Some(d) = &diagnosis {
                    description.push(' ');
                    description.push_str(&d.text);
                }
                let key_values = key_feature_text(named, &id.unit);
                if !key_values.is_empty() {
                    description.push(' ');
                    description.push_str(&key_values);
                }
                evidence["anomalous"] = json!(recent);
                evidence["of_last"] = json!(rules.debounce_m);
                let (state, confidence) = match transition {
                    Transition::Open => (AlertState::Open, confidence),
                    Transition::Escalate => {
                        evidence["escalated_from_severity"] = json!(severity_before);
                        description = format!(
                            "Escalated from severity {severity_before} to {}: {description}",
                            ch.model_episode.severity()
                        );
                        (
                            AlertState::Update,
                            ch.model_episode.sustained_confidence(&rules),
                        )
                    }
                    _ => {
                        if identified {
                            if let Some(c) = component {
                                description = format!(
                                    "Likely component identified: {}. {description}",
                                    c.describe()
                                );
                            }
                        }
                        (AlertState::Update, confidence)
                    }
                };
                (state, episode_us, confidence, description)
            }
            Transition::Resolved => {
                let episode_us = episode_before.unwrap_or(ts_us);
                let minutes = (ts_us - episode_us) as f64 / 60e6;
                evidence["clear_below"] = json!(det.threshold * rules.hysteresis);
                evidence["clear_for"] = json!(rules.clear_windows);
                evidence["episode_start"] = json!(format_rfc3339(episode_us));
                evidence["peak_confidence"] = json!(peak_before);
                let description = format!(
                    "{label} on {} resolved: score stayed below {} ({} x threshold {}) for {} consecutive {unit_of_work}; the episode lasted {} minutes.",
                    id.sensor_id,
                    fmt_num(det.threshold * rules.hysteresis),
                    rules.hysteresis,
                    fmt_num(det.threshold),
                    rules.clear_windows,
                    fmt_num(minutes)
                );
                (AlertState::Resolved, episode_us, peak_before, description)
            }
        };
        let mut alert = make_alert(
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
        if matches!(transition, Transition::Escalate | Transition::Update) {
            // An open episode reports its own (sustained) severity, never less than
            // it already reported: one calmer window is not a de-escalation.
            let ch_severity = self
                .channels
                .get(&id.sensor_id)
                .map_or(0, |c| c.model_episode.severity());
            alert.severity = alert.severity.max(ch_severity).clamp(1, 5);
        }
        if let Some(a) = component_action {
            alert.recommended_actions.insert(0, a);
        }
        self.emit_alert(alert, out);
    }

    /// Counts, logs (info: operators must see alerts in the log) and emits an alert.
    pub(super) fn emit_alert(&mut self, a: AlertRecord, out: &mut Vec<Record>) {
        self.counters.alerts += 1;
        // Its trackers go into the state table with this alert.
        if !self.touched_episodes.contains(a.sensor_id.as_str()) {
            self.touched_episodes.insert(a.sensor_id.to_string());
        }
        let what = match (a.state, a.evidence.get("escalated_from_severity").is_some()) {
            (AlertState::Open, _) => "Alert opened",
            (AlertState::Update, true) => "Alert escalated",
            (AlertState::Update, false) => "Alert updated",
            (AlertState::Resolved, _) => "Alert resolved",
        };
        tracing::info!(
            sensor_id = %a.sensor_id,
            anomaly_type = %a.anomaly_type,
            severity = a.severity,
            at = %format_rfc3339(a.ts_us),
            episode = %format_rfc3339(a.episode_us),
            description = %a.description,
            "{what}"
        );
        out.push(Record::Alert(a));
    }
}

/// Confidence of a "state changed" event: severity 1, information.
const STATE_CHANGE_CONFIDENCE: f64 = 0.15;

/// The sensor-fault episodes (stuck, out of range) of one reading or block.
/// `value_text` describes the last value; it is called only when an alert is made
/// (almost never: this runs for every reading, and formatting is not free).
pub(super) fn sensor_fault_alerts(
    ch: &mut ChannelState,
    rules: &EpisodeRules,
    ts_us: TimestampUs,
    verdict: &Verdict,
    value_text: impl Fn() -> String,
) -> Vec<AlertRecord> {
    let mut alerts = Vec::new();
    let limits = ch.validator.limits();
    let checks = [
        (
            alerts::SENSOR_STUCK,
            verdict.stuck,
            // A value that does not move may also be a very steady process.
            0.7,
            &mut ch.stuck_episode,
        ),
        (
            alerts::SENSOR_OUT_OF_RANGE,
            verdict.out_of_range,
            // Outside the physical range: certainly the sensor or its wiring.
            0.9,
            &mut ch.range_episode,
        ),
    ];
    for (anomaly_type, flagged, confidence, tracker) in checks {
        let before = tracker.episode_us();
        let transition = tracker.observe(rules, ts_us, flagged, !flagged, confidence);
        if matches!(transition, Transition::None | Transition::Escalate) {
            continue;
        }
        let value_text = value_text();
        let what = if anomaly_type == alerts::SENSOR_STUCK {
            format!(
                "the same value repeated at least {} times in a row",
                limits.stuck_after.unwrap_or(0)
            )
        } else {
            format!(
                "outside its valid range {}..{} {}",
                limits.min.map_or("-inf".to_string(), fmt_num),
                limits.max.map_or("+inf".to_string(), fmt_num),
                ch.id.unit
            )
        };
        let (state, episode_us, description) = match transition {
            Transition::None | Transition::Escalate => continue,
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
