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

/// The health features of a scalar channel, in order, for the relative (baseline)
/// detection: `level` (recent level: an exponential average with a time constant of
/// 1/24 of the rolling window, one hour for a 24 h window), and the `mean`, `std` and
/// `slope` (units per hour) over the rolling window. All are compared two-sided with
/// the channel's baseline: a temperature that runs hot and one that drops because the
/// machine stopped are both news.
pub const SCALAR_HEALTH_FEATURES: [&str; 4] = ["level", "mean", "std", "slope"];

/// Rolling statistics of a scalar channel over a window defined in time ("the last
/// 24 h"), whatever the cadence of the readings.
///
/// Memory is bounded whatever the cadence: the window is kept as [`TIME_BUCKETS`]
/// buckets (one hour each for a 24 h window) of count, mean, spread, extremes and the
/// sums a least-squares slope needs, so a channel read every second costs the same as
/// one read every hour. The window therefore covers the current bucket and the
/// previous `TIME_BUCKETS - 1`: between 23/24 and all of the nominal span.
#[derive(Debug, Clone)]
pub struct TimeWindow {
    span_us: i64,
    bucket_us: i64,
    buckets: VecDeque<TimeBucket>,
    level: Option<f64>,
    last_ts_us: Option<i64>,
    previous: Option<f64>,
}

/// Buckets per window.
pub const TIME_BUCKETS: usize = 24;

#[derive(Debug, Clone, Copy)]
struct TimeBucket {
    /// Bucket index: `ts_us / bucket_us`.
    index: i64,
    n: f64,
    mean: f64,
    m2: f64,
    min: f64,
    max: f64,
    /// Sums for the slope, time in hours since the bucket's start.
    st: f64,
    stt: f64,
    stv: f64,
    first: f64,
}

/// Statistics of a [`TimeWindow`] after a reading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimeFeatures {
    /// [`SCALAR_HEALTH_FEATURES`] order.
    pub health: [f64; 4],
    /// The rolling features of [`ROLLING_FEATURES`] over the time window (slope per
    /// hour, `delta_n` against the first reading still in the window).
    pub rolling: RollingFeatures,
    /// Readings in the window.
    pub count: u64,
}

impl TimeWindow {
    /// Each bucket's start, mean, min and max, oldest first (the status page's trend
    /// behind a scalar alert).
    pub fn bucket_summary(&self) -> Vec<(i64, f64, f64, f64)> {
        self.buckets
            .iter()
            .map(|b| (b.index * self.bucket_us, b.mean, b.min, b.max))
            .collect()
    }

    /// A window of `span_secs` (at least 2 s).
    pub fn new(span_secs: f64) -> TimeWindow {
        let span_us = (span_secs.max(2.0) * 1e6) as i64;
        TimeWindow {
            span_us,
            bucket_us: (span_us / TIME_BUCKETS as i64).max(1),
            buckets: VecDeque::new(),
            level: None,
            last_ts_us: None,
            previous: None,
        }
    }

    pub fn span_us(&self) -> i64 {
        self.span_us
    }

    /// Adds a reading; returns the window's features (from the second reading on).
    pub fn push(&mut self, ts_us: i64, value: f64) -> Option<TimeFeatures> {
        if !value.is_finite() {
            return None;
        }
        let index = ts_us.div_euclid(self.bucket_us);
        let t_h = (ts_us - index * self.bucket_us) as f64 / 3.6e9;
        // Level: exponential average with a time constant of one bucket.
        let dt = self.last_ts_us.map_or(0, |l| (ts_us - l).max(0)) as f64;
        self.level = Some(match self.level {
            None => value,
            Some(l) => {
                let alpha = 1.0 - (-dt / self.bucket_us as f64).exp();
                l + alpha * (value - l)
            }
        });
        let delta_1 = self.previous.map_or(0.0, |p| value - p);
        if self.last_ts_us.is_none_or(|l| ts_us >= l) {
            self.last_ts_us = Some(ts_us);
        }
        self.previous = Some(value);
        // Into its bucket (a late reading whose bucket is gone is not added).
        // Newest first: a reading almost always belongs to the newest bucket.
        match self.buckets.iter_mut().rev().find(|b| b.index == index) {
            Some(b) => b.add(t_h, value),
            None => {
                if self.buckets.back().is_none_or(|b| b.index < index) {
                    // Grown as the hours pass, to at most TIME_BUCKETS + 1 (a new
                    // bucket is pushed before the oldest leaves): a plant gateway has
                    // tens of thousands of these, most of them young.
                    let len = self.buckets.len();
                    if len == self.buckets.capacity() {
                        let want = (2 * len).clamp(2, TIME_BUCKETS + 1);
                        self.buckets.reserve_exact(want.max(len + 1) - len);
                    }
                    self.buckets.push_back(TimeBucket::new(index, t_h, value));
                }
            }
        }
        let newest = self.buckets.back().map_or(index, |b| b.index);
        while self
            .buckets
            .front()
            .is_some_and(|b| b.index <= newest - TIME_BUCKETS as i64)
        {
            self.buckets.pop_front();
        }
        self.features(value, delta_1)
    }

    fn features(&self, value: f64, delta_1: f64) -> Option<TimeFeatures> {
        let first = self.buckets.front()?;
        let anchor = first.index;
        let (mut n, mut mean, mut m2) = (0.0f64, 0.0f64, 0.0f64);
        let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
        let (mut st, mut stt, mut stv, mut sv) = (0.0f64, 0.0, 0.0, 0.0);
        let bucket_h = self.bucket_us as f64 / 3.6e9;
        for b in &self.buckets {
            // Chan et al.: combine (n, mean, M2).
            let nn = n + b.n;
            let d = b.mean - mean;
            mean += d * b.n / nn;
            m2 += b.m2 + d * d * n * b.n / nn;
            n = nn;
            min = min.min(b.min);
            max = max.max(b.max);
            let shift = (b.index - anchor) as f64 * bucket_h;
            st += b.st + b.n * shift;
            stt += b.stt + 2.0 * shift * b.st + b.n * shift * shift;
            let bsv = b.mean * b.n;
            stv += b.stv + shift * bsv;
            sv += bsv;
        }
        if n < 2.0 {
            return None;
        }
        let std = (m2 / n).max(0.0).sqrt();
        let den = n * stt - st * st;
        let slope = if den > 1e-12 {
            (n * stv - st * sv) / den
        } else {
            0.0
        };
        let level = self.level.unwrap_or(value);
        Some(TimeFeatures {
            health: [level, mean, std, slope],
            rolling: RollingFeatures([
                value,
                mean,
                std,
                min,
                max,
                slope,
                delta_1,
                value - first.first,
                (value - mean) / std.max(1e-9),
            ]),
            count: n as u64,
        })
    }
}

impl TimeBucket {
    fn new(index: i64, t_h: f64, v: f64) -> TimeBucket {
        let mut b = TimeBucket {
            index,
            n: 0.0,
            mean: 0.0,
            m2: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            st: 0.0,
            stt: 0.0,
            stv: 0.0,
            first: v,
        };
        b.add(t_h, v);
        b
    }

    fn add(&mut self, t_h: f64, v: f64) {
        self.n += 1.0;
        let d = v - self.mean;
        self.mean += d / self.n;
        self.m2 += d * (v - self.mean);
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.st += t_h;
        self.stt += t_h * t_h;
        self.stv += t_h * v;
    }
}

#[cfg(test)]
mod time_tests {
    use super::*;

    const H: i64 = 3_600_000_000;

    #[test]
    fn matches_exact_statistics_at_any_cadence() {
        // A ramp of 2 units per hour plus a daily swing, every 5 min for 3 days and
        // every hour for 3 days: the window's mean/std/slope agree with a direct
        // computation over the readings of the last 24 buckets.
        for step_us in [5 * 60_000_000i64, H] {
            let mut w = TimeWindow::new(24.0 * 3600.0);
            let mut all: Vec<(i64, f64)> = Vec::new();
            let mut last = None;
            let mut t = 0;
            while t < 72 * H {
                let v = 50.0 + 2.0 * t as f64 / H as f64 + 5.0 * (t as f64 / H as f64 / 3.8).sin();
                all.push((t, v));
                last = w.push(t, v);
                t += step_us;
            }
            let f = last.expect("features");
            let newest = (t - step_us) / (H);
            let inside: Vec<&(i64, f64)> =
                all.iter().filter(|(ts, _)| ts / H > newest - 24).collect();
            let n = inside.len() as f64;
            let mean = inside.iter().map(|(_, v)| v).sum::<f64>() / n;
            let var = inside.iter().map(|(_, v)| (v - mean).powi(2)).sum::<f64>() / n;
            let tm = inside
                .iter()
                .map(|(ts, _)| *ts as f64 / H as f64)
                .sum::<f64>()
                / n;
            let sxy: f64 = inside
                .iter()
                .map(|(ts, v)| (*ts as f64 / H as f64 - tm) * (v - mean))
                .sum();
            let sxx: f64 = inside
                .iter()
                .map(|(ts, _)| (*ts as f64 / H as f64 - tm).powi(2))
                .sum();
            assert_eq!(f.count, inside.len() as u64);
            assert!((f.health[1] - mean).abs() < 1e-9, "{} {mean}", f.health[1]);
            assert!((f.health[2] - var.sqrt()).abs() < 1e-9);
            assert!(
                (f.health[3] - sxy / sxx).abs() < 1e-9,
                "{} {}",
                f.health[3],
                sxy / sxx
            );
        }
    }

    #[test]
    fn memory_is_bounded_and_level_follows() {
        let mut w = TimeWindow::new(3600.0);
        for s in 0..20_000i64 {
            w.push(s * 1_000_000, if s < 10_000 { 1.0 } else { 3.0 });
        }
        assert!(w.buckets.len() <= TIME_BUCKETS);
        let f = w.push(20_000 * 1_000_000, 3.0).expect("features");
        assert!((f.health[0] - 3.0).abs() < 1e-6, "level {}", f.health[0]);
    }
}
