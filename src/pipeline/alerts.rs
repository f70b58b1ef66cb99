//! Alert episodes: turning a stream of per-window verdicts into few, honest alerts.
//!
//! Per channel and per kind of problem, an [`EpisodeTracker`] runs this state machine,
//! driven only by reading timestamps (never the wall clock):
//! - **open** when at least `debounce_k` of the last `debounce_m` windows are anomalous,
//!   unless a previous episode closed less than `cooldown_secs` ago;
//! - while open, an **escalation** as soon as the condition is worse by a whole
//!   severity step, sustained like an opening (the `debounce_k`-th highest confidence
//!   of the last `debounce_m` windows maps to a higher severity than the episode has);
//! - otherwise an **update** at most every `update_interval_secs`, and only for an
//!   anomalous window (fresh evidence);
//! - **resolved** when the score stayed below `threshold * hysteresis` for
//!   `clear_windows` consecutive windows; windows between that level and the threshold
//!   neither count towards closing nor refresh the episode.
//!
//! This module also words the alerts (anomaly type, description, recommended actions);
//! it decides nothing about scores.

use crate::record::{severity_from_confidence, AlertRecord, AlertState, SensorType, TimestampUs};
use crate::sources::ChannelId;

/// The episode rules, from the `[pipeline]` settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpisodeRules {
    pub debounce_k: u32,
    pub debounce_m: u32,
    pub hysteresis: f64,
    pub clear_windows: u32,
    pub cooldown_us: i64,
    pub update_interval_us: i64,
}

/// What one observation did to the episode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    None,
    Open,
    Update,
    /// Still open, and worse by at least one severity step.
    Escalate,
    Resolved,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct OpenEpisode {
    episode_us: TimestampUs,
    last_emit_us: TimestampUs,
    clear_run: u32,
    peak_confidence: f64,
    /// Severity last reported upstream (open or escalation).
    severity: u8,
    /// Confidences of the last `debounce_m` observations (0 for a calm one).
    recent: std::collections::VecDeque<f64>,
}

/// The episode state of one channel for one kind of problem. Serialisable: the
/// processor keeps it in the state table at each transition, so an episode open at
/// a restart still closes (`Processor::take_state`).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EpisodeTracker {
    /// Last `debounce_m` verdicts, newest in bit 0.
    history: u64,
    /// Boxed: most channels never have an open episode, and a plant gateway keeps five
    /// trackers for each of its thousands of channels.
    open: Option<Box<OpenEpisode>>,
    cooldown_until_us: Option<TimestampUs>,
}

impl EpisodeTracker {
    pub fn new() -> EpisodeTracker {
        EpisodeTracker::default()
    }

    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// The episode id (time it opened), if one is open.
    pub fn episode_us(&self) -> Option<TimestampUs> {
        self.open.as_ref().map(|o| o.episode_us)
    }

    /// Highest confidence seen in the open episode.
    pub fn peak_confidence(&self) -> f64 {
        self.open.as_ref().map_or(0.0, |o| o.peak_confidence)
    }

    /// Severity the open episode last reported (0 when none is open).
    pub fn severity(&self) -> u8 {
        self.open.as_ref().map_or(0, |o| o.severity)
    }

    /// The confidence the episode can claim as sustained: the `debounce_k`-th highest
    /// of the last `debounce_m` observations.
    pub fn sustained_confidence(&self, rules: &EpisodeRules) -> f64 {
        let Some(o) = &self.open else { return 0.0 };
        let mut v: Vec<f64> = o.recent.iter().copied().collect();
        v.sort_by(|a, b| b.total_cmp(a));
        v.get(rules.debounce_k.max(1) as usize - 1)
            .copied()
            .unwrap_or(0.0)
    }

    /// How many of the last `debounce_m` verdicts were anomalous.
    pub fn recent_anomalous(&self, rules: &EpisodeRules) -> u32 {
        (self.history & mask(rules.debounce_m)).count_ones()
    }

    /// Feeds one verdict at `ts_us`: `anomalous` (score above threshold) and `clear`
    /// (score below threshold * hysteresis).
    pub fn observe(
        &mut self,
        rules: &EpisodeRules,
        ts_us: TimestampUs,
        anomalous: bool,
        clear: bool,
        confidence: f64,
    ) -> Transition {
        self.history = ((self.history << 1) | u64::from(anomalous)) & mask(rules.debounce_m);
        if let Some(open) = &mut self.open {
            open.recent
                .push_back(if anomalous { confidence } else { 0.0 });
            while open.recent.len() > rules.debounce_m.max(1) as usize {
                open.recent.pop_front();
            }
            if anomalous {
                open.peak_confidence = open.peak_confidence.max(confidence);
            }
            open.clear_run = if clear { open.clear_run + 1 } else { 0 };
            if open.clear_run >= rules.clear_windows.max(1) {
                self.open = None;
                self.history = 0;
                self.cooldown_until_us = Some(ts_us.saturating_add(rules.cooldown_us));
                return Transition::Resolved;
            }
            let sustained = self.sustained_confidence(rules);
            let Some(open) = &mut self.open else {
                return Transition::None;
            };
            let severity = severity_from_confidence(sustained);
            if anomalous && severity > open.severity {
                open.severity = severity;
                open.last_emit_us = ts_us;
                return Transition::Escalate;
            }
            if anomalous && ts_us - open.last_emit_us >= rules.update_interval_us {
                open.last_emit_us = ts_us;
                return Transition::Update;
            }
            return Transition::None;
        }
        let cooling = self.cooldown_until_us.is_some_and(|until| ts_us < until);
        if anomalous && !cooling && self.recent_anomalous(rules) >= rules.debounce_k.max(1) {
            let mut recent = std::collections::VecDeque::with_capacity(rules.debounce_m as usize);
            recent.push_back(confidence);
            self.open = Some(Box::new(OpenEpisode {
                episode_us: ts_us,
                last_emit_us: ts_us,
                clear_run: 0,
                peak_confidence: confidence,
                severity: severity_from_confidence(confidence),
                recent,
            }));
            return Transition::Open;
        }
        Transition::None
    }
}

fn mask(m: u32) -> u64 {
    match m {
        0 => 1,
        1..=63 => (1u64 << m) - 1,
        _ => u64::MAX,
    }
}

/// The cloud's anomaly type for a model/fallback alert on a channel of `sensor_type`.
pub fn anomaly_type(sensor_type: SensorType) -> String {
    match sensor_type {
        SensorType::Vibration | SensorType::Bearing => "vibration_anomaly".to_string(),
        other => format!("{}_anomaly", other.as_str()),
    }
}

pub const SENSOR_STUCK: &str = "sensor_stuck";
pub const SENSOR_OUT_OF_RANGE: &str = "sensor_out_of_range";
/// Vibration energy fell far below the channel's baseline: the machine stopped, runs
/// at another speed or load, or the sensor came loose. Information, not a fault.
pub const STATE_CHANGED: &str = "machine_state_changed";
/// Velocity RMS in ISO 20816-3 zone C or D.
pub const VIBRATION_SEVERITY: &str = "vibration_severity";

/// A few sensible next steps for plant maintenance, per anomaly type.
pub fn recommended_actions(anomaly_type: &str) -> Vec<String> {
    let actions: &[&str] = match anomaly_type {
        "vibration_anomaly" => &[
            "Inspect the bearing for wear, noise and heat; check its lubrication",
            "Check shaft alignment, balance and coupling condition",
            "Check that the machine mounting bolts and the sensor mount are tight",
            "Compare with recent maintenance work and schedule a detailed vibration analysis",
        ],
        "temperature_anomaly" => &[
            "Check cooling: fans, filters, coolant flow and ambient temperature",
            "Check the machine's load and duty cycle against its rating",
            "Inspect bearings and lubrication for friction heat",
            "Confirm the reading with a handheld thermometer",
        ],
        "pressure_anomaly" => &[
            "Check for leaks, blockages and clogged filters",
            "Check valve positions and the pump or compressor output",
            "Confirm the reading with a reference gauge",
        ],
        "pump_anomaly" => &[
            "Check the pump for cavitation, blockage and seal leaks",
            "Check inlet pressure, flow and motor current",
            "Inspect bearings and coupling",
        ],
        "voltage_anomaly" => &[
            "Check the supply and the connections for looseness or corrosion",
            "Check the load on the circuit and the protective devices",
        ],
        "humidity_anomaly" => &[
            "Check ventilation, door seals and dehumidifiers",
            "Look for water leaks or condensation near the sensor",
        ],
        STATE_CHANGED => &[
            "Check whether the machine is running, and at its usual speed and load",
            "Check the sensor's mounting (magnet, stud, adhesive) and its cable",
            "After maintenance or a change of operating point, start a new baseline: edgegw baseline reset DEVICE",
        ],
        VIBRATION_SEVERITY => &[
            "Plan an inspection: ISO 20816-3 zone C is not suitable for long-term continuous operation, zone D may damage the machine",
            "Check balance, alignment, looseness and the foundation",
            "Confirm with a portable vibration meter at the same point",
        ],
        SENSOR_STUCK => &[
            "Check the sensor's power and wiring",
            "Check that the device still updates the register or topic the gateway reads",
            "Power-cycle or replace the sensor if the value stays frozen",
        ],
        SENSOR_OUT_OF_RANGE => &[
            "Check the sensor wiring for a short or open circuit",
            "Check the range, scale and offset in the hardware profile",
            "Replace the sensor if readings stay outside its physical range",
        ],
        _ => &[
            "Inspect the machine at this measuring point",
            "Confirm the reading with a reference instrument",
            "Compare with recent process or maintenance changes",
        ],
    };
    actions.iter().map(|s| s.to_string()).collect()
}

/// Everything about one alert except who it is about.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertContent {
    pub anomaly_type: String,
    pub confidence: f64,
    pub description: String,
    pub evidence: serde_json::Value,
}

/// Builds the record for a transition of an episode of `channel`.
pub fn make_alert(
    channel: &ChannelId,
    state: AlertState,
    episode_us: TimestampUs,
    ts_us: TimestampUs,
    content: AlertContent,
) -> AlertRecord {
    let confidence = content.confidence.clamp(0.0, 1.0);
    AlertRecord {
        sensor_id: (&channel.sensor_id).into(),
        device: (&channel.device).into(),
        channel: (&channel.channel).into(),
        sensor_type: channel.sensor_type,
        recommended_actions: recommended_actions(&content.anomaly_type),
        anomaly_type: content.anomaly_type,
        severity: severity_from_confidence(confidence),
        confidence,
        description: content.description,
        evidence: content.evidence,
        state,
        episode_us,
        ts_us,
    }
}

/// A number for a sentence: 3 significant digits, no exponent for usual magnitudes.
pub fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    let a = v.abs();
    if a == 0.0 {
        "0".to_string()
    } else if a >= 1000.0 {
        format!("{v:.0}")
    } else if a >= 100.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else if a >= 0.001 {
        format!("{v:.4}")
    } else {
        format!("{v:.3e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000;

    fn rules() -> EpisodeRules {
        EpisodeRules {
            debounce_k: 3,
            debounce_m: 5,
            hysteresis: 0.8,
            clear_windows: 2,
            cooldown_us: 100 * S,
            update_interval_us: 30 * S,
        }
    }

    /// Feeds scores (threshold 1.0) one per 10 s; returns the transitions with times.
    fn run(t: &mut EpisodeTracker, start_s: i64, scores: &[f64]) -> Vec<(i64, Transition)> {
        let r = rules();
        scores
            .iter()
            .enumerate()
            .filter_map(|(i, &s)| {
                let ts = (start_s + 10 * i as i64) * S;
                let tr = t.observe(&r, ts, s > 1.0, s < 0.8, 0.5);
                (tr != Transition::None).then_some((ts / S, tr))
            })
            .collect()
    }

    #[test]
    fn debounce_needs_k_of_m() {
        let mut t = EpisodeTracker::new();
        // Isolated anomalies never reach 3 of 5.
        assert!(run(&mut t, 0, &[2.0, 0.1, 0.1, 2.0, 0.1, 0.1, 2.0, 0.1]).is_empty());
        // The history carries on: 60 (A), 70, then 100 (A), 110, 120 (A) is 3 of 5.
        let got = run(&mut t, 100, &[2.0, 0.1, 2.0, 2.0]);
        assert_eq!(got, vec![(120, Transition::Open)]);
        assert_eq!(t.episode_us(), Some(120 * S));
        // Fresh: A, _, A, A -> opens on the third anomalous window.
        let mut t = EpisodeTracker::new();
        let got = run(&mut t, 0, &[2.0, 0.1, 2.0, 2.0]);
        assert_eq!(got, vec![(30, Transition::Open)]);
    }

    #[test]
    fn hysteresis_and_updates() {
        let mut t = EpisodeTracker::new();
        let got = run(
            &mut t,
            0,
            // open at 20; 0.9 is below threshold but above 0.8: not clear.
            // updates only on anomalous windows 30 s apart; two clear windows resolve.
            &[2.0, 2.0, 2.0, 2.0, 0.9, 0.9, 2.0, 0.9, 0.5, 0.9, 0.5, 0.5],
        );
        assert_eq!(
            got,
            vec![
                (20, Transition::Open),
                (60, Transition::Update),
                (110, Transition::Resolved)
            ]
        );
        assert!(!t.is_open());
    }

    #[test]
    fn cooldown_blocks_a_new_episode() {
        let mut t = EpisodeTracker::new();
        let got = run(&mut t, 0, &[2.0, 2.0, 2.0, 0.1, 0.1]);
        assert_eq!(
            got,
            vec![(20, Transition::Open), (40, Transition::Resolved)]
        );
        // Anomalous again right away: nothing until the cooldown (100 s after 40) ends.
        let got = run(&mut t, 50, &[2.0; 12]);
        assert_eq!(got, vec![(140, Transition::Open)]);
    }

    #[test]
    fn a_worsening_condition_escalates_once_per_step() {
        let r = rules();
        let mut t = EpisodeTracker::new();
        let mut got = Vec::new();
        // Confidence 0.1 (severity 1) opens; then 0.5 (severity 3) for 5 windows,
        // then 0.9 (severity 5): escalations when 3 of the last 5 reach a level.
        let confs = [0.1, 0.1, 0.1, 0.5, 0.5, 0.5, 0.5, 0.5, 0.9, 0.9, 0.9, 0.9];
        for (i, c) in confs.iter().enumerate() {
            let tr = t.observe(&r, i as i64 * S, true, false, *c);
            if tr != Transition::None {
                got.push((i, tr, t.severity()));
            }
        }
        assert_eq!(
            got,
            vec![
                (2, Transition::Open, 1),
                (5, Transition::Escalate, 3),
                (10, Transition::Escalate, 5)
            ]
        );
    }

    #[test]
    fn anomaly_types_and_actions() {
        assert_eq!(anomaly_type(SensorType::Bearing), "vibration_anomaly");
        assert_eq!(anomaly_type(SensorType::Vibration), "vibration_anomaly");
        assert_eq!(anomaly_type(SensorType::Temperature), "temperature_anomaly");
        assert_eq!(anomaly_type(SensorType::Pressure), "pressure_anomaly");
        for t in [
            "vibration_anomaly",
            SENSOR_STUCK,
            SENSOR_OUT_OF_RANGE,
            "audio_anomaly",
        ] {
            assert!(recommended_actions(t).len() >= 2, "{t}");
        }
        assert_eq!(fmt_num(162.456), "162.5");
        assert_eq!(fmt_num(0.12345), "0.1235");
    }
}
