//! `manifest.json` of a model bundle: what the model expects and how to read its output.
//!
//! Parsing is strict about the fields the gateway relies on and names the field in
//! every error. Unknown top-level fields are accepted (and ignored) so that a newer
//! training script can add information without breaking older gateways; `training`
//! is free-form by design.

use super::{InferenceError, Result};
use crate::pipeline::features::{ROLLING_FEATURES, WINDOW_FEATURES};
use crate::record::SensorType;
use serde::Deserialize;

/// What the model consumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BundleKind {
    /// Feature vectors of waveform windows (vibration).
    Window,
    /// Rolling features of a scalar channel (temperature, pressure, ...).
    Rolling,
}

impl BundleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BundleKind::Window => "window",
            BundleKind::Rolling => "rolling",
        }
    }

    /// The feature names a bundle of this kind may ask for.
    pub fn known_features(self) -> &'static [&'static str] {
        match self {
            BundleKind::Window => &WINDOW_FEATURES,
            BundleKind::Rolling => &ROLLING_FEATURES,
        }
    }

    /// The feature names a bundle of this kind and reference may ask for.
    pub fn features_for(self, reference: Reference) -> Vec<&'static str> {
        use crate::pipeline::relative::{SCALAR_SPECS, WINDOW_SCORED, WINDOW_SPECS};
        match (self, reference) {
            (_, Reference::Absolute) => self.known_features().to_vec(),
            (BundleKind::Window, Reference::Baseline) => WINDOW_SPECS[..WINDOW_SCORED]
                .iter()
                .map(|s| s.name)
                .collect(),
            (BundleKind::Rolling, Reference::Baseline) => {
                SCALAR_SPECS.iter().map(|s| s.name).collect()
            }
        }
    }
}

/// What the model's input features are measured against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reference {
    /// Absolute feature values (g, Hz, °C): a model of one known machine, trained on
    /// its data at one sample rate (or cadence).
    #[default]
    Absolute,
    /// Signed robust z values of the channel's health features against the baseline
    /// it learned during commissioning: one model for machines it never saw, at any
    /// sample rate or cadence.
    Baseline,
}

impl Reference {
    pub fn as_str(self) -> &'static str {
        match self {
            Reference::Absolute => "absolute",
            Reference::Baseline => "baseline",
        }
    }
}

/// Windowing the model was trained with (kind `window`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct WindowSpec {
    /// Samples per window.
    pub length: usize,
    /// Fraction of a window shared with the next one (0.5 = hop of half a window).
    pub overlap: f64,
    /// The model's spectral features only mean something at this sample rate.
    pub sample_rate_hz: f64,
}

/// Rolling window the model was trained with (kind `rolling`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RollingSpec {
    /// Readings per rolling window, current one included.
    pub length: usize,
    /// The reading cadence the model was trained at, in seconds: a channel whose
    /// readings come at another cadence spans another time with the same count, and
    /// is warned about (log, metrics, `models list`).
    #[serde(default)]
    pub cadence_secs: Option<f64>,
}

/// The model's input tensor.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct InputSpec {
    pub name: String,
    /// Must be `[1, number of features]`.
    pub shape: Vec<usize>,
    /// Must be `float32`.
    pub dtype: String,
}

/// The model's output tensor: the anomaly score, float32 `[1, 1]` or `[1]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct OutputSpec {
    pub name: String,
}

/// A known input and the output the model must give for it (checked at load).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Example {
    pub input: Vec<Vec<f32>>,
    pub output: f64,
}

/// The parsed manifest of a bundle.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    /// Sensor types this bundle serves (the registry indexes by them).
    pub sensor_types: Vec<SensorType>,
    pub kind: BundleKind,
    /// Absolute features (default) or features relative to the channel's baseline.
    #[serde(default)]
    pub reference: Reference,
    /// Ordered model input: names from [`WINDOW_FEATURES`] or [`ROLLING_FEATURES`]
    /// (absolute), or the health features of [`BundleKind::features_for`] (baseline).
    pub features: Vec<String>,
    #[serde(default)]
    pub window: Option<WindowSpec>,
    #[serde(default)]
    pub rolling: Option<RollingSpec>,
    pub input: InputSpec,
    pub output: OutputSpec,
    /// Scores above it are anomalous (higher = more anomalous).
    pub threshold: f64,
    /// Hex sha256 of `model.onnx`.
    pub sha256: String,
    pub example: Example,
    /// Free-form provenance (data, date, metrics); carried, never interpreted.
    #[serde(default)]
    pub training: serde_json::Value,
}

impl Manifest {
    /// Parses and checks the manifest's own consistency (not the model file).
    pub fn parse(bundle: &str, json: &[u8]) -> Result<Manifest> {
        let m: Manifest =
            serde_json::from_slice(json).map_err(|source| InferenceError::ManifestSyntax {
                bundle: bundle.to_string(),
                source,
            })?;
        m.check(bundle)?;
        Ok(m)
    }

    fn check(&self, bundle: &str) -> Result<()> {
        let bad = |field: &'static str, reason: String| InferenceError::ManifestField {
            bundle: bundle.to_string(),
            field,
            reason,
        };
        if self.name.trim().is_empty() {
            return Err(bad("name", "must not be empty".into()));
        }
        if self.version.trim().is_empty() {
            return Err(bad("version", "must not be empty".into()));
        }
        if self.sensor_types.is_empty() {
            return Err(bad(
                "sensor_types",
                "must name at least one sensor type".into(),
            ));
        }
        if self.features.is_empty() {
            return Err(bad("features", "must list at least one feature".into()));
        }
        let known = self.kind.features_for(self.reference);
        for (i, f) in self.features.iter().enumerate() {
            if !known.contains(&f.as_str()) {
                return Err(bad(
                    "features",
                    format!(
                        "unknown feature `{f}` for kind {} with reference {}; known: {}",
                        self.kind.as_str(),
                        self.reference.as_str(),
                        known.join(", ")
                    ),
                ));
            }
            if self.features[..i].contains(f) {
                return Err(bad("features", format!("feature `{f}` is listed twice")));
            }
        }
        match self.kind {
            // A relative bundle works at any rate and cadence: no window or rolling
            // spec is required (one that is given is checked below all the same).
            BundleKind::Window
                if self.reference == Reference::Baseline && self.window.is_none() => {}
            BundleKind::Rolling
                if self.reference == Reference::Baseline && self.rolling.is_none() => {}
            BundleKind::Window => {
                let Some(w) = &self.window else {
                    return Err(bad("window", "required for kind window".into()));
                };
                if !(2..=1 << 20).contains(&w.length) {
                    return Err(bad(
                        "window",
                        format!("length {} must be 2..=1048576", w.length),
                    ));
                }
                if !(0.0..0.96).contains(&w.overlap) {
                    return Err(bad(
                        "window",
                        format!("overlap {} must be in 0..0.95", w.overlap),
                    ));
                }
                if !(w.sample_rate_hz.is_finite() && w.sample_rate_hz > 0.0) {
                    return Err(bad(
                        "window",
                        format!("sample_rate_hz {} must be positive", w.sample_rate_hz),
                    ));
                }
            }
            BundleKind::Rolling => {
                let Some(r) = &self.rolling else {
                    return Err(bad("rolling", "required for kind rolling".into()));
                };
                if !(2..=100_000).contains(&r.length) {
                    return Err(bad(
                        "rolling",
                        format!("length {} must be 2..=100000", r.length),
                    ));
                }
                if let Some(c) = r.cadence_secs.filter(|c| !(c.is_finite() && *c > 0.0)) {
                    return Err(bad(
                        "rolling",
                        format!("cadence_secs {c} must be a positive number of seconds"),
                    ));
                }
            }
        }
        if self.input.shape != [1, self.features.len()] {
            return Err(bad(
                "input.shape",
                format!(
                    "{:?} does not match the {} features: expected [1, {}]",
                    self.input.shape,
                    self.features.len(),
                    self.features.len()
                ),
            ));
        }
        if self.input.dtype != "float32" {
            return Err(bad(
                "input.dtype",
                format!("`{}` is not supported: expected float32", self.input.dtype),
            ));
        }
        if !(self.threshold.is_finite() && self.threshold > 0.0) {
            return Err(bad(
                "threshold",
                format!("{} must be a positive number", self.threshold),
            ));
        }
        let hex_ok = self.sha256.len() == 64 && self.sha256.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex_ok {
            return Err(bad("sha256", "must be 64 hex digits".into()));
        }
        if self.example.input.len() != 1 || self.example.input[0].len() != self.features.len() {
            return Err(bad(
                "example.input",
                format!("must be one row of {} numbers", self.features.len()),
            ));
        }
        if !self.example.output.is_finite() {
            return Err(bad("example.output", "must be a finite number".into()));
        }
        Ok(())
    }

    /// True when the model's window features only mean something at its own rate.
    pub fn rate_bound(&self) -> Option<f64> {
        match (self.kind, self.reference) {
            (BundleKind::Window, Reference::Absolute) => {
                self.window.as_ref().map(|w| w.sample_rate_hz)
            }
            _ => None,
        }
    }

    /// `name@version`, as window records and alert evidence name the detector.
    pub fn detector_name(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }
}
