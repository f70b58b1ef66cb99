//! Per-device detection settings: `[devices.machine]` ([`MachineSettings`],
//! [`BearingSpec`]), `[devices.detection]` ([`DetectionOverrides`]) and the two
//! resolved against `[pipeline]` ([`DeviceDetection`]).

use super::{PipelineSettings, TimeSpan};
use serde::Deserialize;

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
    pub foundation: Option<crate::pipeline::iso::Foundation>,
}

/// A bearing by designation or by geometry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum BearingSpec {
    Designation(String),
    Geometry(crate::pipeline::bearing::BearingGeometry),
}

impl BearingSpec {
    /// The geometry, or why there is none.
    pub fn geometry(&self) -> Result<crate::pipeline::bearing::BearingGeometry, String> {
        match self {
            BearingSpec::Designation(name) => crate::pipeline::bearing::designation(name).ok_or_else(|| {
                format!(
                    "{name:?} is not in the built-in bearing table ({}); give its geometry instead: {{ balls = .., ball_diameter_mm = .., pitch_diameter_mm = .., contact_angle_deg = 0 }}",
                    crate::pipeline::bearing::DESIGNATIONS
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
    pub plan: crate::pipeline::baseline::LearnPlan,
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
    pub bearing: Option<(String, crate::pipeline::bearing::DefectMultipliers)>,
    pub iso: Option<(
        crate::pipeline::iso::MachineGroup,
        crate::pipeline::iso::Foundation,
    )>,
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
                m.iso_group
                    .and_then(crate::pipeline::iso::MachineGroup::from_number),
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
                .filter(|g| crate::pipeline::iso::MachineGroup::from_number(*g).is_none())
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
