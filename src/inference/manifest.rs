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
    /// Ordered model input: names from [`WINDOW_FEATURES`] or [`ROLLING_FEATURES`].
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
        let known = self.kind.known_features();
        for (i, f) in self.features.iter().enumerate() {
            if !known.contains(&f.as_str()) {
                return Err(bad(
                    "features",
                    format!(
                        "unknown feature `{f}` for kind {}; known: {}",
                        self.kind.as_str(),
                        known.join(", ")
                    ),
                ));
            }
            if self.features[..i].contains(f) {
                return Err(bad("features", format!("feature `{f}` is listed twice")));
            }
        }
        match self.kind {
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

    /// `name@version`, as window records and alert evidence name the detector.
    pub fn detector_name(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }
}
