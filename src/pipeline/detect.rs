//! Scoring a feature vector: with the channel's model bundle, or with the statistical
//! fallback when no bundle serves the channel.
//!
//! The fallback is a per-feature 3-sigma test (the sigma is `fallback_sigma`) against a
//! baseline learned from the channel's first `warmup_windows` clean windows (or
//! readings, for scalar channels). Its score is the largest |z| over a fixed subset of
//! features and its threshold is `fallback_sigma`, so confidence is computed the same
//! way as for a model. It is honest about what it is: it detects a change from how the
//! channel looked when the gateway first saw it, not a fault. The baseline is kept
//! through a [`StateStore`] (the outbox's SQLite in production) so it survives restarts;
//! a restart during warm-up starts the warm-up again.
//!
//! This module runs no timers and emits no records.

use crate::inference::ModelBundle;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Small persistent key-value state for the pipeline (baselines, summary buckets).
/// The outbox implements it with a SQLite table; [`MemoryStateStore`] is for tests.
pub trait StateStore: Send {
    fn get(&mut self, key: &str) -> anyhow::Result<Option<Vec<u8>>>;
    fn put(&mut self, key: &str, value: &[u8]) -> anyhow::Result<()>;
}

/// In-memory [`StateStore`]. Clones share the same map, so a test can hand one clone to
/// a processor and inspect (or reuse, as after a restart) the other.
#[derive(Debug, Clone, Default)]
pub struct MemoryStateStore(Arc<Mutex<HashMap<String, Vec<u8>>>>);

impl MemoryStateStore {
    pub fn new() -> MemoryStateStore {
        MemoryStateStore::default()
    }

    /// The keys currently stored, sorted.
    pub fn keys(&self) -> Vec<String> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut keys: Vec<String> = map.keys().cloned().collect();
        keys.sort();
        keys
    }
}

impl StateStore for MemoryStateStore {
    fn get(&mut self, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        Ok(map.get(key).cloned())
    }

    fn put(&mut self, key: &str, value: &[u8]) -> anyhow::Result<()> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(key.to_string(), value.to_vec());
        Ok(())
    }
}

/// Window features the fallback tests: the amplitude, impulsiveness and spectral-shape
/// features. `dominant_freq` (jumps between harmonics), `skewness` (near zero, noisy),
/// `std` (same as rms for a centred signal) and `mean` (sensor offset) are left out.
pub const FALLBACK_WINDOW_FEATURES: [&str; 7] = [
    "rms",
    "peak_to_peak",
    "kurtosis",
    "crest_factor",
    "dominant_freq_amplitude",
    "spectral_centroid",
    "high_freq_energy",
];

/// Rolling features the fallback tests: level, spread, trend and step.
pub const FALLBACK_ROLLING_FEATURES: [&str; 4] = ["value", "std", "slope", "delta_1"];

/// The outcome of scoring one window or reading.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    pub score: f64,
    pub threshold: f64,
    /// `name@version` of the model, or `fallback`.
    pub detector: String,
    /// 0..1: `clamp(1 - threshold/score, 0, 1)` above the threshold.
    pub confidence: f64,
    /// For the fallback: the feature furthest from its baseline and its z.
    pub worst_feature: Option<(String, f64)>,
}

impl Detection {
    pub fn is_anomalous(&self) -> bool {
        self.score > self.threshold
    }
}

/// Scores `values` (named by `names`) with `bundle`, taking the features in the
/// bundle's order. `buf` is reused between calls.
pub fn score_with_model(
    bundle: &ModelBundle,
    names: &[&str],
    values: &[f64],
    buf: &mut Vec<f32>,
) -> Result<Detection, crate::inference::InferenceError> {
    buf.clear();
    for f in bundle.features() {
        // The manifest's features were checked against the known names at load time.
        let v = names
            .iter()
            .position(|n| n == f)
            .map(|i| values[i])
            .unwrap_or(0.0);
        buf.push(v as f32);
    }
    let score = f64::from(bundle.score(buf)?);
    Ok(Detection {
        score,
        threshold: bundle.threshold(),
        detector: bundle.detector().to_string(),
        confidence: bundle.confidence(score),
        worst_feature: None,
    })
}

/// Mean and variance of each tested feature, learned online (Welford).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// Names of the tested features, so a baseline from another feature set is ignored.
    pub features: Vec<String>,
    pub count: u32,
    pub mean: Vec<f64>,
    /// Sum of squared deviations (Welford's M2).
    pub m2: Vec<f64>,
}

impl Baseline {
    fn new(features: &[&str]) -> Baseline {
        Baseline {
            features: features.iter().map(|s| s.to_string()).collect(),
            count: 0,
            mean: vec![0.0; features.len()],
            m2: vec![0.0; features.len()],
        }
    }

    fn observe(&mut self, x: &[f64]) {
        self.count += 1;
        let n = f64::from(self.count);
        for (i, &v) in x.iter().enumerate() {
            let d = v - self.mean[i];
            self.mean[i] += d / n;
            self.m2[i] += d * (v - self.mean[i]);
        }
    }

    /// Population std of feature `i`, floored at 1 % of its mean (and 1e-9) so a
    /// baseline that happened to be nearly constant does not flag rounding noise.
    pub fn std(&self, i: usize) -> f64 {
        let var = if self.count > 0 {
            self.m2[i] / f64::from(self.count)
        } else {
            0.0
        };
        var.sqrt().max(0.01 * self.mean[i].abs()).max(1e-9)
    }
}

/// The statistical fallback of one channel.
#[derive(Debug, Clone)]
pub struct FallbackDetector {
    /// Indices of the tested features in the canonical feature vector.
    indices: Vec<usize>,
    baseline: Baseline,
    warmup: u32,
    sigma: f64,
    /// Scratch for the tested values.
    x: Vec<f64>,
}

impl FallbackDetector {
    /// A detector testing `tested` (a subset of `all`), resuming a persisted baseline
    /// when `stored` holds one for the same features.
    pub fn new(
        all: &[&str],
        tested: &[&str],
        warmup: u32,
        sigma: f64,
        stored: Option<&[u8]>,
    ) -> FallbackDetector {
        let indices: Vec<usize> = tested
            .iter()
            .filter_map(|t| all.iter().position(|a| a == t))
            .collect();
        let names: Vec<&str> = indices.iter().map(|&i| all[i]).collect();
        let fresh = Baseline::new(&names);
        let baseline = stored
            .and_then(|b| serde_json::from_slice::<Baseline>(b).ok())
            .filter(|b| {
                b.features == fresh.features
                    && b.mean.len() == names.len()
                    && b.m2.len() == names.len()
            })
            .unwrap_or(fresh);
        FallbackDetector {
            x: Vec::with_capacity(indices.len()),
            indices,
            baseline,
            warmup: warmup.max(2),
            sigma,
        }
    }

    /// True once the baseline is learned.
    pub fn is_ready(&self) -> bool {
        self.baseline.count >= self.warmup
    }

    pub fn baseline(&self) -> &Baseline {
        &self.baseline
    }

    /// Learns from `values` during warm-up (only when `clean`), scores after it.
    /// Returns the detection (after warm-up) and whether the baseline just completed
    /// (so the caller persists it).
    pub fn observe(&mut self, values: &[f64], clean: bool) -> (Option<Detection>, bool) {
        self.x.clear();
        self.x.extend(self.indices.iter().map(|&i| values[i]));
        if !self.is_ready() {
            if clean && self.x.iter().all(|v| v.is_finite()) {
                self.baseline.observe(&self.x);
                return (None, self.is_ready());
            }
            return (None, false);
        }
        let mut worst = (0usize, 0.0f64);
        for (i, &v) in self.x.iter().enumerate() {
            let z = (v - self.baseline.mean[i]) / self.baseline.std(i);
            if z.abs() > worst.1.abs() || !z.is_finite() {
                worst = (i, z);
            }
        }
        let score = if worst.1.is_finite() {
            worst.1.abs()
        } else {
            f64::MAX
        };
        let detection = Detection {
            score,
            threshold: self.sigma,
            detector: "fallback".to_string(),
            confidence: crate::inference::bundle::confidence(score, self.sigma),
            worst_feature: Some((self.baseline.features[worst.0].clone(), worst.1)),
        };
        (Some(detection), false)
    }

    /// The baseline serialised for the [`StateStore`].
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.baseline).unwrap_or_default()
    }
}
