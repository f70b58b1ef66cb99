//! `[pipeline]` section of the gateway config: windowing, detection and alerting knobs.

use super::alerts::EpisodeRules;
use serde::{Deserialize, Serialize};

/// How readings become windows, scores, alerts and summaries. Every field has a
/// default, so an empty `[pipeline]` section (or none) is valid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSettings {
    /// Samples per waveform window when no model bundle dictates it (a bundle's own
    /// `window.length` wins for the channels it serves).
    #[serde(default = "default_window_samples")]
    pub window_samples: usize,
    /// Fraction of a window shared with the next one, 0..0.95 (0.5 = hop of half a
    /// window); like `window_samples`, a bundle's own value wins.
    #[serde(default = "default_window_overlap")]
    pub window_overlap: f64,
    /// Length of a summary bucket in seconds, 60..=86400; buckets are aligned to
    /// multiples of it in UTC reading time.
    #[serde(default = "default_summary_interval_secs")]
    pub summary_interval_secs: u32,
    /// An episode opens when at least this many of the last `debounce_m` windows (or
    /// readings) are anomalous: one odd window is not an alert.
    #[serde(default = "default_debounce_k")]
    pub debounce_k: u32,
    /// See `debounce_k`; at most 64.
    #[serde(default = "default_debounce_m")]
    pub debounce_m: u32,
    /// An episode closes only on scores below `threshold * hysteresis` (0 < h <= 1),
    /// so a score hovering at the threshold does not open and close it repeatedly.
    #[serde(default = "default_hysteresis")]
    pub hysteresis: f64,
    /// Consecutive windows below the hysteresis level needed to resolve an episode.
    #[serde(default = "default_clear_windows")]
    pub clear_windows: u32,
    /// No new episode on a channel within this many seconds after one closed (reading
    /// time), so a flapping machine does not page anyone every minute.
    #[serde(default = "default_cooldown_secs")]
    pub cooldown_secs: u64,
    /// An open episode sends fresher evidence at most this often (reading time).
    #[serde(default = "default_update_interval_secs")]
    pub update_interval_secs: u64,
    /// Replaced by `[pipeline.baseline]` (each channel now learns its baseline over a
    /// learning period); still accepted so an old config loads, and reported by
    /// `edgegw check`.
    #[serde(default)]
    pub warmup_windows: Option<u32>,
    /// Replaced by `baseline.threshold`; accepted and reported like `warmup_windows`.
    #[serde(default)]
    pub fallback_sigma: Option<f64>,
    /// Readings per rolling window of a scalar channel for a model bundle that counts
    /// readings and does not say how many (absolute bundles only).
    #[serde(default = "default_rolling_length")]
    pub rolling_length: usize,
    /// Length of a waveform window in seconds, for channels no absolute model bundle
    /// dictates: at 12 kHz "0.17 s" is 2048 samples, at 25.6 kHz 4352. Wins over
    /// `window_samples` when set.
    #[serde(default)]
    pub window: Option<TimeSpan>,
    /// The rolling window of scalar channels (temperature, pressure...), in time:
    /// their level, mean, spread and trend are computed over it, whatever the cadence.
    #[serde(default = "default_rolling_window")]
    pub rolling_window: TimeSpan,
    /// Commissioning: how each channel learns its own healthy baseline, and the
    /// threshold of scores relative to it.
    #[serde(default)]
    pub baseline: BaselineSettings,
}

/// `[pipeline.baseline]` (and the per-device `[devices.detection]` overrides).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaselineSettings {
    /// How long a channel learns its healthy state after it is first seen (or after
    /// `edgegw baseline reset`), in reading time: "24h" covers a day of load and
    /// temperature changes. "0" takes the first `samples` clean windows or readings
    /// instead (for short recordings).
    #[serde(default = "default_learn")]
    pub learn: TimeSpan,
    /// Windows or readings kept from the learning period, one per equal slot of it, so
    /// the whole period is represented, not its first minutes.
    #[serde(default = "default_learn_samples")]
    pub samples: u32,
    /// The period does not end before this many samples were taken.
    #[serde(default = "default_learn_min_samples")]
    pub min_samples: u32,
    /// Threshold of the built-in relative score (robust standard deviations from the
    /// baseline; relative model bundles carry their own). 4 is far outside what a
    /// learned feature does by chance.
    #[serde(default = "default_relative_threshold")]
    pub threshold: f64,
    /// Run the trend (CUSUM) detector on each channel's score, for slow onsets.
    #[serde(default = "yes")]
    pub trend: bool,
    /// A waveform channel whose acceleration RMS falls below this share of its
    /// baseline (and 4 robust standard deviations) raises a "machine or sensor state
    /// changed" event instead of a fault alert.
    #[serde(default = "default_drop_ratio")]
    pub drop_ratio: f64,
}

fn yes() -> bool {
    true
}
fn default_learn() -> TimeSpan {
    TimeSpan::from_secs(86_400.0)
}
fn default_learn_samples() -> u32 {
    200
}
fn default_learn_min_samples() -> u32 {
    20
}
fn default_relative_threshold() -> f64 {
    4.0
}
fn default_drop_ratio() -> f64 {
    0.5
}
fn default_rolling_window() -> TimeSpan {
    TimeSpan::from_secs(86_400.0)
}

impl Default for BaselineSettings {
    fn default() -> Self {
        BaselineSettings {
            learn: default_learn(),
            samples: default_learn_samples(),
            min_samples: default_learn_min_samples(),
            threshold: default_relative_threshold(),
            trend: true,
            drop_ratio: default_drop_ratio(),
        }
    }
}

impl BaselineSettings {
    /// Problems as `<prefix>.<field>: message`.
    pub fn problems(&self, prefix: &str) -> Vec<String> {
        let mut p = Vec::new();
        if !(self.learn.secs() >= 0.0 && self.learn.secs() <= 366.0 * 86_400.0) {
            p.push(format!("{prefix}.learn: must be 0 .. 366 days"));
        }
        if !(2..=100_000).contains(&self.samples) {
            p.push(format!(
                "{prefix}.samples: {} must be 2..=100000",
                self.samples
            ));
        }
        if self.min_samples < 2 || self.min_samples > self.samples {
            p.push(format!(
                "{prefix}.min_samples: {} must be 2..=samples ({})",
                self.min_samples, self.samples
            ));
        }
        if !(self.threshold.is_finite() && self.threshold > 0.0) {
            p.push(format!(
                "{prefix}.threshold: {} must be a positive number",
                self.threshold
            ));
        }
        if !(self.drop_ratio > 0.0 && self.drop_ratio < 1.0) {
            p.push(format!(
                "{prefix}.drop_ratio: {} must be between 0 and 1",
                self.drop_ratio
            ));
        }
        p
    }

    /// The learning plan these settings describe.
    pub fn plan(&self) -> super::baseline::LearnPlan {
        super::baseline::LearnPlan {
            duration_us: (self.learn.secs() * 1e6) as i64,
            samples: self.samples.max(2),
            min_samples: self.min_samples.clamp(2, self.samples.max(2)),
        }
    }
}

/// A length of time written for people: `"24h"`, `"45 min"`, `"7d"`, `"0.17s"`,
/// `"500ms"`, or a plain number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct TimeSpan(f64);

impl TimeSpan {
    pub fn from_secs(secs: f64) -> TimeSpan {
        TimeSpan(secs)
    }

    pub fn secs(self) -> f64 {
        self.0
    }

    /// Parses `"24h"`, `"1.5 h"`, `"45min"`, `"7 days"`, `"100 ms"`, `"30"` (seconds).
    pub fn parse(text: &str) -> Result<TimeSpan, String> {
        let t = text.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let value: f64 = num
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not a duration: write e.g. \"24h\", \"45min\", \"7d\", \"0.5s\" or a number of seconds"))?;
        let factor = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
            "ms" | "millisecond" | "milliseconds" => 1e-3,
            "m" | "min" | "mins" | "minute" | "minutes" => 60.0,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3600.0,
            "d" | "day" | "days" => 86_400.0,
            other => {
                return Err(format!(
                    "{text:?}: unknown unit {other:?}; use ms, s, min, h or d"
                ))
            }
        };
        if !value.is_finite() || value < 0.0 {
            return Err(format!("{text:?} must be a positive duration"));
        }
        Ok(TimeSpan(value * factor))
    }
}

impl std::fmt::Display for TimeSpan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.0;
        if s >= 86_400.0 && (s / 86_400.0).fract() == 0.0 {
            write!(f, "{}d", s / 86_400.0)
        } else if s >= 3600.0 && (s / 3600.0).fract() == 0.0 {
            write!(f, "{}h", s / 3600.0)
        } else if s >= 60.0 && (s / 60.0).fract() == 0.0 {
            write!(f, "{}min", s / 60.0)
        } else {
            write!(f, "{s}s")
        }
    }
}

impl Serialize for TimeSpan {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for TimeSpan {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<TimeSpan, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(f64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Num(n) if n.is_finite() && n >= 0.0 => Ok(TimeSpan(n)),
            Raw::Num(n) => Err(serde::de::Error::custom(format!(
                "{n} must be a positive number of seconds"
            ))),
            Raw::Text(t) => TimeSpan::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

fn default_window_samples() -> usize {
    2048
}
fn default_window_overlap() -> f64 {
    0.5
}
fn default_summary_interval_secs() -> u32 {
    3600
}
fn default_debounce_k() -> u32 {
    3
}
fn default_debounce_m() -> u32 {
    5
}
fn default_hysteresis() -> f64 {
    0.8
}
fn default_clear_windows() -> u32 {
    5
}
fn default_cooldown_secs() -> u64 {
    600
}
fn default_update_interval_secs() -> u64 {
    300
}
fn default_rolling_length() -> usize {
    12
}

impl Default for PipelineSettings {
    fn default() -> Self {
        PipelineSettings {
            window_samples: default_window_samples(),
            window_overlap: default_window_overlap(),
            summary_interval_secs: default_summary_interval_secs(),
            debounce_k: default_debounce_k(),
            debounce_m: default_debounce_m(),
            hysteresis: default_hysteresis(),
            clear_windows: default_clear_windows(),
            cooldown_secs: default_cooldown_secs(),
            update_interval_secs: default_update_interval_secs(),
            warmup_windows: None,
            fallback_sigma: None,
            rolling_length: default_rolling_length(),
            window: None,
            rolling_window: default_rolling_window(),
            baseline: BaselineSettings::default(),
        }
    }
}

impl PipelineSettings {
    /// Every problem at once, each as `pipeline.<field>: <what is wrong and what is valid>`.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        let mut check = |ok: bool, field: &str, msg: String| {
            if !ok {
                problems.push(format!("pipeline.{field}: {msg}"));
            }
        };
        check(
            (16..=65536).contains(&self.window_samples),
            "window_samples",
            format!("{} must be 16..=65536", self.window_samples),
        );
        check(
            (0.0..=0.95).contains(&self.window_overlap),
            "window_overlap",
            format!("{} must be 0..=0.95", self.window_overlap),
        );
        check(
            (60..=86400).contains(&self.summary_interval_secs),
            "summary_interval_secs",
            format!("{} must be 60..=86400", self.summary_interval_secs),
        );
        check(
            (1..=64).contains(&self.debounce_m),
            "debounce_m",
            format!("{} must be 1..=64", self.debounce_m),
        );
        check(
            self.debounce_k >= 1 && self.debounce_k <= self.debounce_m,
            "debounce_k",
            format!(
                "{} must be 1..=debounce_m ({})",
                self.debounce_k, self.debounce_m
            ),
        );
        check(
            self.hysteresis > 0.0 && self.hysteresis <= 1.0,
            "hysteresis",
            format!("{} must be in (0, 1]", self.hysteresis),
        );
        check(
            self.clear_windows >= 1,
            "clear_windows",
            "must be at least 1".into(),
        );
        if let Some(w) = self.window {
            check(
                w.secs() > 0.0 && w.secs() <= 60.0,
                "window",
                format!("{w} must be more than 0 and at most 60 s"),
            );
        }
        check(
            self.rolling_window.secs() >= 60.0 && self.rolling_window.secs() <= 90.0 * 86_400.0,
            "rolling_window",
            format!("{} must be 1 min .. 90 days", self.rolling_window),
        );
        check(
            (2..=100_000).contains(&self.rolling_length),
            "rolling_length",
            format!("{} must be 2..=100000", self.rolling_length),
        );
        problems.extend(self.baseline.problems("pipeline.baseline"));
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// Settings that are still accepted but no longer do anything, as
    /// `pipeline.<field>: what replaced it` (warnings for `edgegw check`).
    pub fn deprecations(&self) -> Vec<String> {
        let mut d = Vec::new();
        if self.warmup_windows.is_some() {
            d.push("pipeline.warmup_windows: ignored; each channel now learns its baseline over [pipeline.baseline] learn (a duration) with up to `samples` windows spread over it".to_string());
        }
        if self.fallback_sigma.is_some() {
            d.push("pipeline.fallback_sigma: ignored; the threshold of scores relative to a channel's baseline is [pipeline.baseline] threshold".to_string());
        }
        d
    }

    /// The alert episode rules these settings describe.
    pub fn episode_rules(&self) -> EpisodeRules {
        EpisodeRules {
            debounce_k: self.debounce_k.max(1),
            debounce_m: self.debounce_m.clamp(1, 64),
            hysteresis: self.hysteresis,
            clear_windows: self.clear_windows.max(1),
            cooldown_us: (self.cooldown_secs as i64).saturating_mul(1_000_000),
            update_interval_us: (self.update_interval_secs as i64).saturating_mul(1_000_000),
        }
    }
}

/// `[devices.machine]`: facts about the machine at a measuring point, for the physics
/// that needs no training (ISO zones, bearing defect frequencies).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineSettings {
    /// Shaft speed in revolutions per minute, when it is fixed.
    #[serde(default)]
    pub shaft_rpm: Option<f64>,
    /// A channel of this device that reports the shaft speed (rpm, or Hz when its unit
    /// is "Hz"); its latest reading is used.
    #[serde(default)]
    pub speed_channel: Option<String>,
    /// The bearing at the measuring point: a designation of the built-in table
    /// ("6205", "6203") or its geometry
    /// `{ balls = 9, ball_diameter_mm = 7.94, pitch_diameter_mm = 39.04 }`.
    #[serde(default)]
    pub bearing: Option<BearingSpec>,
    /// ISO 20816-3 machine group: 1 (large, above 300 kW) or 2 (medium, 15..300 kW).
    #[serde(default)]
    pub iso_group: Option<u8>,
    /// ISO 20816-3 foundation: "rigid" or "flexible".
    #[serde(default)]
    pub foundation: Option<super::iso::Foundation>,
}

/// A bearing by designation or by geometry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum BearingSpec {
    Designation(String),
    Geometry(super::bearing::BearingGeometry),
}

impl BearingSpec {
    /// The geometry, or why there is none.
    pub fn geometry(&self) -> Result<super::bearing::BearingGeometry, String> {
        match self {
            BearingSpec::Designation(name) => super::bearing::designation(name).ok_or_else(|| {
                format!(
                    "{name:?} is not in the built-in bearing table ({}); give its geometry instead: {{ balls = .., ball_diameter_mm = .., pitch_diameter_mm = .., contact_angle_deg = 0 }}",
                    super::bearing::DESIGNATIONS
                        .iter()
                        .map(|d| d.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }),
            BearingSpec::Geometry(g) => g.check().map(|()| *g),
        }
    }

    pub fn label(&self) -> String {
        match self {
            BearingSpec::Designation(n) => n.clone(),
            BearingSpec::Geometry(g) => format!(
                "{} balls, {} mm on a {} mm pitch",
                g.balls, g.ball_diameter_mm, g.pitch_diameter_mm
            ),
        }
    }
}

/// `[devices.detection]`: per-device overrides of the `[pipeline]` detection settings.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectionOverrides {
    /// Learning period (see `[pipeline.baseline] learn`).
    #[serde(default)]
    pub learn: Option<TimeSpan>,
    #[serde(default)]
    pub learn_samples: Option<u32>,
    #[serde(default)]
    pub learn_min_samples: Option<u32>,
    /// Threshold of the built-in relative score.
    #[serde(default)]
    pub threshold: Option<f64>,
    /// Waveform window length in time, or in samples.
    #[serde(default)]
    pub window: Option<TimeSpan>,
    #[serde(default)]
    pub window_samples: Option<usize>,
    #[serde(default)]
    pub window_overlap: Option<f64>,
    /// Rolling window of scalar channels, in time.
    #[serde(default)]
    pub rolling_window: Option<TimeSpan>,
    /// The band demodulated for the envelope spectrum, in Hz (default: 1 kHz up to
    /// 0.45 × the sample rate).
    #[serde(default)]
    pub envelope_band_hz: Option<[f64; 2]>,
}

/// The detection settings of one device, resolved from `[pipeline]`,
/// `[devices.detection]` and `[devices.machine]`.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceDetection {
    pub plan: super::baseline::LearnPlan,
    pub threshold: f64,
    pub trend: bool,
    pub drop_ratio: f64,
    pub window_secs: Option<f64>,
    pub window_samples: usize,
    pub window_overlap: f64,
    pub rolling_window_secs: f64,
    pub envelope_band_hz: Option<(f64, f64)>,
    /// Fixed shaft speed, Hz.
    pub shaft_hz: Option<f64>,
    pub speed_channel: Option<String>,
    pub bearing: Option<(String, super::bearing::DefectMultipliers)>,
    pub iso: Option<(super::iso::MachineGroup, super::iso::Foundation)>,
}

impl DeviceDetection {
    /// The pipeline-wide settings, for devices without overrides.
    pub fn from_pipeline(p: &PipelineSettings) -> DeviceDetection {
        DeviceDetection {
            plan: p.baseline.plan(),
            threshold: p.baseline.threshold,
            trend: p.baseline.trend,
            drop_ratio: p.baseline.drop_ratio,
            window_secs: p.window.map(TimeSpan::secs),
            window_samples: p.window_samples,
            window_overlap: p.window_overlap,
            rolling_window_secs: p.rolling_window.secs(),
            envelope_band_hz: None,
            shaft_hz: None,
            speed_channel: None,
            bearing: None,
            iso: None,
        }
    }

    /// `p` with a device's overrides and machine facts applied. Invalid parts (which
    /// `edgegw check` reports) are left out rather than guessed.
    pub fn resolve(
        p: &PipelineSettings,
        o: Option<&DetectionOverrides>,
        m: Option<&MachineSettings>,
    ) -> DeviceDetection {
        let mut d = DeviceDetection::from_pipeline(p);
        if let Some(o) = o {
            let mut b = p.baseline.clone();
            if let Some(v) = o.learn {
                b.learn = v;
            }
            if let Some(v) = o.learn_samples {
                b.samples = v;
                b.min_samples = b.min_samples.min(v);
            }
            if let Some(v) = o.learn_min_samples {
                b.min_samples = v;
            }
            d.plan = b.plan();
            if let Some(v) = o.threshold.filter(|t| t.is_finite() && *t > 0.0) {
                d.threshold = v;
            }
            if let Some(v) = o.window {
                d.window_secs = Some(v.secs());
            }
            if let Some(v) = o.window_samples {
                d.window_samples = v;
                if o.window.is_none() {
                    d.window_secs = None;
                }
            }
            if let Some(v) = o.window_overlap {
                d.window_overlap = v;
            }
            if let Some(v) = o.rolling_window {
                d.rolling_window_secs = v.secs();
            }
            d.envelope_band_hz = o.envelope_band_hz.map(|[a, b]| (a, b));
        }
        if let Some(m) = m {
            d.shaft_hz = m
                .shaft_rpm
                .filter(|r| r.is_finite() && *r > 0.0)
                .map(|r| r / 60.0);
            d.speed_channel.clone_from(&m.speed_channel);
            d.bearing = m
                .bearing
                .as_ref()
                .and_then(|b| b.geometry().ok().map(|g| (b.label(), g.multipliers())));
            d.iso = match (
                m.iso_group.and_then(super::iso::MachineGroup::from_number),
                m.foundation,
            ) {
                (Some(g), Some(f)) => Some((g, f)),
                _ => None,
            };
        }
        d
    }

    /// Problems of a device's `[devices.detection]` and `[devices.machine]`, as
    /// `<field>: message` relative to the device (for `edgegw check`).
    pub fn problems(o: Option<&DetectionOverrides>, m: Option<&MachineSettings>) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(o) = o {
            if let Some(s) = o.learn_samples.filter(|s| !(2..=100_000).contains(s)) {
                out.push(format!("detection.learn_samples: {s} must be 2..=100000"));
            }
            if let Some(t) = o.threshold.filter(|t| !(t.is_finite() && *t > 0.0)) {
                out.push(format!(
                    "detection.threshold: {t} must be a positive number"
                ));
            }
            if let Some(w) = o.window.filter(|w| !(w.secs() > 0.0 && w.secs() <= 60.0)) {
                out.push(format!(
                    "detection.window: {w} must be more than 0 and at most 60 s"
                ));
            }
            if let Some(n) = o.window_samples.filter(|n| !(16..=1 << 20).contains(n)) {
                out.push(format!(
                    "detection.window_samples: {n} must be 16..=1048576"
                ));
            }
            if let Some(v) = o.window_overlap.filter(|v| !(0.0..=0.95).contains(v)) {
                out.push(format!("detection.window_overlap: {v} must be 0..=0.95"));
            }
            if let Some(w) = o
                .rolling_window
                .filter(|w| !(w.secs() >= 60.0 && w.secs() <= 90.0 * 86_400.0))
            {
                out.push(format!(
                    "detection.rolling_window: {w} must be 1 min .. 90 days"
                ));
            }
            if let Some([a, b]) = o.envelope_band_hz {
                if !(a.is_finite() && b.is_finite() && a > 0.0 && b > a) {
                    out.push(format!(
                        "detection.envelope_band_hz: [{a}, {b}] must be [low, high] in Hz with 0 < low < high"
                    ));
                }
            }
        }
        if let Some(m) = m {
            if let Some(r) = m
                .shaft_rpm
                .filter(|r| !(r.is_finite() && *r > 0.0 && *r < 1e6))
            {
                out.push(format!(
                    "machine.shaft_rpm: {r} must be a positive speed in rpm"
                ));
            }
            if m.shaft_rpm.is_some() && m.speed_channel.is_some() {
                out.push(
                    "machine.speed_channel: give either shaft_rpm or speed_channel, not both"
                        .into(),
                );
            }
            if let Some(b) = &m.bearing {
                if let Err(e) = b.geometry() {
                    out.push(format!("machine.bearing: {e}"));
                }
                if m.shaft_rpm.is_none() && m.speed_channel.is_none() {
                    out.push("machine.bearing: defect frequencies need the shaft speed: add shaft_rpm or speed_channel".into());
                }
            }
            if let Some(g) = m
                .iso_group
                .filter(|g| super::iso::MachineGroup::from_number(*g).is_none())
            {
                out.push(format!("machine.iso_group: {g} is not an ISO 20816-3 group: use 1 (large machines, above 300 kW) or 2 (medium, 15 kW to 300 kW)"));
            }
            if m.iso_group.is_some() != m.foundation.is_some() {
                out.push("machine.foundation: ISO 20816-3 zones need both iso_group and foundation (\"rigid\" or \"flexible\")".into());
            }
        }
        out
    }
}
