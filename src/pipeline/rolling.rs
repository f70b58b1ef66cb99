//! Rolling features of a scalar channel over its last N readings.
//!
//! Definitions (the bundle contract, same as `tools/feature_vectors.py`), with `r` the
//! last N readings oldest first and the current one last: value, mean, std
//! (population), min, max, slope (least squares against index 0..N-1, units per
//! reading), delta_1 (current - previous), delta_n (current - r\[0\]),
//! zscore = (value - mean) / max(std, 1e-9). Computed in f64 over a ring buffer
//! allocated once.

use super::features::ROLLING_FEATURES;
use std::collections::VecDeque;

/// The rolling features of one reading, in [`ROLLING_FEATURES`] order.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RollingFeatures(pub [f64; 9]);

impl RollingFeatures {
    pub fn get(&self, name: &str) -> Option<f64> {
        ROLLING_FEATURES
            .iter()
            .position(|n| *n == name)
            .map(|i| self.0[i])
    }

    pub fn named(&self) -> Vec<(String, f64)> {
        ROLLING_FEATURES
            .iter()
            .zip(self.0.iter())
            .map(|(n, v)| (n.to_string(), *v))
            .collect()
    }
}

/// The last `len` readings of one channel.
#[derive(Debug, Clone)]
pub struct RollingWindow {
    len: usize,
    values: VecDeque<f64>,
}

impl RollingWindow {
    /// A window of `len` readings (at least 2).
    pub fn new(len: usize) -> RollingWindow {
        let len = len.max(2);
        RollingWindow {
            len,
            values: VecDeque::with_capacity(len),
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    pub fn clear(&mut self) {
        self.values.clear();
    }

    /// Adds the current reading; returns its features once the window is full.
    pub fn push(&mut self, value: f64) -> Option<RollingFeatures> {
        if self.values.len() == self.len {
            self.values.pop_front();
        }
        self.values.push_back(value);
        if self.values.len() < self.len {
            return None;
        }
        Some(compute(self.values.iter().copied(), self.values.len()))
    }
}

/// Rolling features of `r` (oldest first, `n` values, `n >= 1`).
pub fn compute(r: impl Iterator<Item = f64> + Clone, n: usize) -> RollingFeatures {
    let nf = n as f64;
    let (mut sum, mut min, mut max) = (0.0f64, f64::INFINITY, f64::NEG_INFINITY);
    let (mut first, mut prev, mut value) = (0.0f64, 0.0f64, 0.0f64);
    for (i, v) in r.clone().enumerate() {
        sum += v;
        min = min.min(v);
        max = max.max(v);
        if i == 0 {
            first = v;
        }
        prev = value;
        value = v;
    }
    let mean = sum / nf;
    let im = (nf - 1.0) / 2.0;
    let (mut var, mut sxy, mut sxx) = (0.0f64, 0.0f64, 0.0f64);
    for (i, v) in r.enumerate() {
        let d = v - mean;
        let di = i as f64 - im;
        var += d * d;
        sxy += di * d;
        sxx += di * di;
    }
    let std = (var / nf).sqrt();
    let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    let delta_1 = if n >= 2 { value - prev } else { 0.0 };
    RollingFeatures([
        value,
        mean,
        std,
        min,
        max,
        slope,
        delta_1,
        value - first,
        (value - mean) / std.max(1e-9),
    ])
}
