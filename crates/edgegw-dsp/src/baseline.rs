//! Commissioning: each channel learns its own healthy baseline, and scores are
//! expressed relative to it.
//!
//! A machine the gateway has never seen has no labelled data and no model of its own.
//! What it does have is a period after installation (or after maintenance) when it is
//! taken to be healthy. During that **learning period** a [`Commissioning`] collects
//! the channel's health features, spread over a duration (e.g. 24 h, at most
//! `samples` of them, one per equal slot of the duration, so a day of operation is
//! represented and not its first minutes). When the period is over it turns them into
//! a [`LearnedBaseline`] with robust statistics, and from then on the baseline is
//! **held fixed**: a slow degradation is measured against it, never learned away.
//! `edgegw baseline reset` starts a new learning period after maintenance.
//!
//! Statistics, per feature (after its [`Transform`]):
//! - location: the median;
//! - scale: the largest of 1.4826 × MAD, the upper (and for two-sided features the
//!   lower) 10 % tail distance divided by 1.2816 (the same for a normal distribution;
//!   larger for a heavy-tailed feature such as the kurtosis of a bearing that knocks
//!   now and then, so that what the channel normally does is not called anomalous),
//!   and a floor (see [`Transform::floor`]);
//! - correlated neighbours: consecutive samples are not independent (overlapping
//!   windows, slow processes, a 24 h rolling mean sampled every 10 minutes), so the
//!   effective sample size is `n_eff = n / (1 + 2 Σ ρ_k)`, summing the sample
//!   autocorrelations ρ_k from lag 1 while they stay positive (Geyer's initial
//!   positive sequence). Unlike the lag-1 (AR(1)) shortcut it does not depend on how
//!   densely a slow feature was sampled: a week of 24 h means is about 7–8
//!   independent values at a 5-minute and at an hourly cadence alike. The scale is
//!   widened by `sqrt(1 + 1.57 / n_eff)` — the prediction interval of a new value
//!   around a median estimated from `n_eff` independent values.
//!
//! A value's z is `(transform(x) − median) / scale`. This module does no scoring: the
//! processor turns z vectors into scores (with a model bundle or the built-in rule).
//! It touches no storage either: learning state and baselines are serialised by the
//! caller into the gateway's `StateStore` (`edgegw::pipeline::detect`).

use crate::TimestampUs;
use serde::{Deserialize, Serialize};

/// How a feature is compared with its baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transform {
    /// Energies and amplitude ratios: compared as logarithms, so "twice the baseline"
    /// is the same distance on every machine and in every unit.
    Log,
    /// Levels that may be zero or negative (temperatures, slopes).
    Linear,
}

impl Transform {
    fn apply(self, x: f64) -> f64 {
        match self {
            Transform::Log => x.max(1e-12).ln(),
            Transform::Linear => x,
        }
    }

    /// The smallest scale a feature may have, whatever its commissioning showed. A
    /// channel that was perfectly steady while learning must not alarm on the first
    /// ordinary wobble.
    /// - Log features: 0.15 (a factor of 1.16, 1.3 dB), about the repeatability of a
    ///   vibration measurement between two days of the same machine at the same load;
    ///   with the default threshold of 4 the smallest change that alarms on its own is
    ///   then e^0.6 = 1.8× the baseline (5 dB), close to the "alert at twice the
    ///   baseline" rule of vibration practice.
    /// - Linear features: 1 % of the median's magnitude (and a tiny absolute floor).
    pub fn floor(self, median: f64) -> f64 {
        match self {
            Transform::Log => LOG_SCALE_FLOOR,
            Transform::Linear => (0.01 * median.abs()).max(1e-6),
        }
    }
}

/// See [`Transform::floor`].
pub const LOG_SCALE_FLOOR: f64 = 0.15;

/// Which deviations count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sides {
    /// Only more is a fault (vibration energy, impulsiveness); a drop is judged apart,
    /// as a change of machine or sensor state.
    Upper,
    /// Both directions (a temperature that runs hot, or drops because the machine
    /// stopped or the sensor came loose).
    Both,
}

/// One feature the baseline tracks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FeatureSpec {
    pub name: &'static str,
    pub transform: Transform,
    pub sides: Sides,
}

/// How long a channel learns, and how many samples it keeps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LearnPlan {
    /// Length of the learning period in reading time. 0 means "the first `samples`
    /// clean windows or readings", for short recordings.
    pub duration_us: i64,
    /// At most this many samples, one per `duration / samples` slot.
    pub samples: u32,
    /// The period does not end before this many samples were taken (a channel that
    /// sends rarely, or was down half the day, keeps learning until it has them).
    pub min_samples: u32,
}

impl LearnPlan {
    fn slot_us(&self) -> i64 {
        if self.duration_us <= 0 {
            0
        } else {
            (self.duration_us / i64::from(self.samples.max(1))).max(1)
        }
    }
}

/// The learning state of one channel: persisted after every sample, so a restart
/// resumes where it stopped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Commissioning {
    /// Feature names, in order (a stored state for other features is discarded).
    pub features: Vec<String>,
    pub started_us: TimestampUs,
    pub duration_us: i64,
    pub target: u32,
    pub min_samples: u32,
    /// Index of the last slot a sample was taken in (-1: none yet).
    pub last_slot: i64,
    /// Raw feature values (before the transform), one row per sample. NaN marks a
    /// feature that does not exist for this channel (a band above its Nyquist).
    pub rows: Rows,
    /// In the stored form only (0 in memory): how many chunks of
    /// [`super::relative::LEARN_CHUNK_ROWS`] rows come before `rows`, each stored once
    /// under its own key ([`super::relative::rows_key`]), so that a day of learning
    /// does not write every sample again with each new one.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub chunks: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Commissioning samples: rows of equal width stored in one flat allocation, not one
/// per sample (a plant gateway learns thousands of channels at once).
///
/// Each value is held as an `f32` offset from its column's reference, the column's
/// first finite value, kept as `f64`: 200 rows of 4 features take 3.2 kB (6.4 kB as
/// `f64`, about 14 kB as a `Vec` per row). The offset keeps the precision where it
/// matters: a reading of 1,000,000,123.4 that varies by tenths keeps its tenths,
/// where a plain `f32` would round it to 64. The error is 6e-8 of a sample's distance
/// from the first one, far below any baseline's spread. A non-finite offset (a value
/// beyond `f32` of the reference, ~3e38) is held as NaN, a missing feature.
///
/// Serialised as a list of rows of absolute `f64` values, as before (a state written
/// by an older version loads; the first finite value of a column, the reference, comes
/// back exactly); rows of unequal width do not deserialise.
#[derive(Debug, Clone, Default)]
pub struct Rows {
    width: usize,
    /// Per column: the first finite value, NaN until there is one.
    refs: Vec<f64>,
    data: Vec<f32>,
}

impl Rows {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.data.len().checked_div(self.width).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Values per row (0 before the first row).
    pub fn width(&self) -> usize {
        self.width
    }

    /// All values, row after row, as `f64` (NaN for a missing feature).
    pub fn to_f64(&self) -> Vec<f64> {
        let w = self.width.max(1);
        self.data
            .iter()
            .enumerate()
            .map(|(i, d)| self.refs[i % w] + f64::from(*d))
            .collect()
    }

    /// Rows `start..end` (clamped to the rows there are), on the same references: each
    /// value is exactly the one these rows hold (and serialise).
    pub fn sub(&self, start: usize, end: usize) -> Rows {
        let w = self.width;
        let end = end.min(self.len());
        Rows {
            width: w,
            refs: self.refs.clone(),
            data: self.data[start.min(end) * w..end * w].to_vec(),
        }
    }

    /// Appends a row; the first row sets the width, later rows of another width are
    /// refused (returns false). Grows by doubling up to `max_rows`, then exactly.
    pub fn push(&mut self, row: &[f64], max_rows: usize) -> bool {
        if row.is_empty() || (self.width != 0 && row.len() != self.width) {
            return false;
        }
        if self.width == 0 {
            self.width = row.len();
            self.refs = vec![f64::NAN; row.len()];
        }
        if self.data.len() == self.data.capacity() {
            let rows = self.len();
            let want = (2 * rows).max(8).min(max_rows.max(rows + 1));
            self.data
                .reserve_exact((want.max(rows + 1) - rows) * self.width);
        }
        for (v, r) in row.iter().zip(self.refs.iter_mut()) {
            if r.is_nan() && v.is_finite() {
                *r = *v;
            }
            let d = (v - *r) as f32;
            self.data.push(if d.is_finite() { d } else { f32::NAN });
        }
        true
    }
}

/// Equal when every value is the same, bit for bit (NaN, a missing feature, equals
/// itself).
impl PartialEq for Rows {
    fn eq(&self, other: &Rows) -> bool {
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        self.width == other.width
            && self.data.len() == other.data.len()
            && bits(&self.to_f64()) == bits(&other.to_f64())
    }
}

impl From<Vec<Vec<f64>>> for Rows {
    fn from(rows: Vec<Vec<f64>>) -> Rows {
        let mut out = Rows::default();
        for r in &rows {
            out.push(r, rows.len());
        }
        out
    }
}

impl Serialize for Rows {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let values = self.to_f64();
        s.collect_seq(values.chunks_exact(self.width.max(1)))
    }
}

impl<'de> Deserialize<'de> for Rows {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Rows, D::Error> {
        // JSON writes NaN (a missing feature) as null: read it back as NaN.
        let rows = Vec::<Vec<Option<f64>>>::deserialize(d)?;
        let mut out = Rows::default();
        let mut row = Vec::new();
        for r in &rows {
            row.clear();
            row.extend(r.iter().map(|v| v.unwrap_or(f64::NAN)));
            if !out.push(&row, rows.len()) {
                return Err(serde::de::Error::custom(
                    "commissioning rows of unequal width",
                ));
            }
        }
        Ok(out)
    }
}

/// What [`Commissioning::offer`] did with a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Not taken (same slot as the previous sample, or not clean).
    Skipped,
    /// Taken; still learning.
    Taken,
    /// The learning period is complete: call [`Commissioning::learn`].
    Complete,
}

impl Commissioning {
    pub fn new(features: &[FeatureSpec], plan: &LearnPlan, started_us: TimestampUs) -> Self {
        Commissioning {
            features: features.iter().map(|f| f.name.to_string()).collect(),
            started_us,
            duration_us: plan.duration_us.max(0),
            target: plan.samples.max(2),
            min_samples: plan.min_samples.clamp(2, plan.samples.max(2)),
            last_slot: -1,
            rows: Rows::default(),
            chunks: 0,
        }
    }

    /// True when a stored state belongs to these features.
    pub fn matches(&self, features: &[FeatureSpec]) -> bool {
        self.features.len() == features.len()
            && self.features.iter().zip(features).all(|(a, b)| a == b.name)
            && (self.rows.is_empty() || self.rows.width() == features.len())
    }

    /// Share of the learning period done, 0..1 (by time and by samples, whichever is
    /// behind).
    pub fn progress(&self, now_us: TimestampUs) -> f64 {
        let by_samples = self.rows.len() as f64 / f64::from(self.min_samples.max(1));
        let by_time = if self.duration_us > 0 {
            (now_us - self.started_us) as f64 / self.duration_us as f64
        } else {
            self.rows.len() as f64 / f64::from(self.target.max(1))
        };
        by_samples.min(by_time).clamp(0.0, 1.0)
    }

    /// Offers one clean window's (or reading's) features at `ts_us`.
    pub fn offer(&mut self, ts_us: TimestampUs, values: &[f64]) -> Offer {
        if values.len() != self.features.len() || values.iter().all(|v| !v.is_finite()) {
            return Offer::Skipped;
        }
        let elapsed = ts_us.saturating_sub(self.started_us).max(0);
        let plan = LearnPlan {
            duration_us: self.duration_us,
            samples: self.target,
            min_samples: self.min_samples,
        };
        let slot_us = plan.slot_us();
        let time_done = self.duration_us > 0 && elapsed >= self.duration_us;
        let take = if slot_us == 0 {
            self.rows.len() < self.target as usize
        } else if time_done {
            // Past the period but short of samples: take every value until enough.
            true
        } else {
            elapsed / slot_us > self.last_slot
        };
        if take {
            if slot_us > 0 {
                self.last_slot = (elapsed / slot_us).max(self.last_slot + 1);
            }
            // One sample per slot of the period: rare, so the temporary is fine.
            let clean: Vec<f64> = values
                .iter()
                .map(|v| if v.is_finite() { *v } else { f64::NAN })
                .collect();
            self.rows.push(&clean, self.target as usize);
        }
        let enough = self.rows.len() >= self.min_samples as usize;
        let complete = if self.duration_us > 0 {
            time_done && enough
        } else {
            self.rows.len() >= self.target as usize
        };
        if complete {
            Offer::Complete
        } else if take {
            Offer::Taken
        } else {
            Offer::Skipped
        }
    }

    /// The baseline these samples give.
    pub fn learn(&self, specs: &[FeatureSpec], learned_us: TimestampUs) -> LearnedBaseline {
        let values = self.rows.to_f64();
        let rows: Vec<&[f64]> = values.chunks_exact(self.rows.width().max(1)).collect();
        LearnedBaseline::from_rows(specs, &rows, self.started_us, learned_us)
    }
}

/// A channel's healthy state, held fixed after commissioning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LearnedBaseline {
    pub features: Vec<String>,
    pub transforms: Vec<Transform>,
    pub sides: Vec<Sides>,
    /// Median of the transformed values; NaN for a feature with no finite sample
    /// (stored as JSON null, read back as NaN).
    #[serde(deserialize_with = "nan_vec")]
    pub median: Vec<f64>,
    #[serde(deserialize_with = "nan_vec")]
    pub scale: Vec<f64>,
    /// Effective number of independent samples per feature.
    #[serde(deserialize_with = "nan_vec")]
    pub n_eff: Vec<f64>,
    pub samples: u32,
    pub started_us: TimestampUs,
    pub learned_us: TimestampUs,
}

/// A list of numbers in which null (how JSON writes NaN) reads as NaN. Without it a
/// learned vibration baseline whose bearing families are NaN (no bearing configured)
/// did not load after a restart, and the channel learned again for a day.
fn nan_vec<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
    let v = Vec::<Option<f64>>::deserialize(d)?;
    Ok(v.into_iter().map(|x| x.unwrap_or(f64::NAN)).collect())
}

impl LearnedBaseline {
    /// Robust statistics of `rows` (raw values, one row per sample).
    pub fn from_rows<R: AsRef<[f64]>>(
        specs: &[FeatureSpec],
        rows: &[R],
        started_us: TimestampUs,
        learned_us: TimestampUs,
    ) -> LearnedBaseline {
        let d = specs.len();
        let mut median = vec![f64::NAN; d];
        let mut scale = vec![f64::NAN; d];
        let mut n_eff = vec![0.0; d];
        let mut col = Vec::with_capacity(rows.len());
        for (j, spec) in specs.iter().enumerate() {
            // In sample order (for the autocorrelation), finite values only.
            col.clear();
            col.extend(
                rows.iter()
                    .filter_map(|r| r.as_ref().get(j).copied())
                    .filter(|v| v.is_finite())
                    .map(|v| spec.transform.apply(v)),
            );
            if col.is_empty() {
                continue;
            }
            let mut sorted = col.clone();
            sorted.sort_by(f64::total_cmp);
            let med = quantile(&sorted, 0.5);
            let mut dev: Vec<f64> = sorted.iter().map(|v| (v - med).abs()).collect();
            dev.sort_by(f64::total_cmp);
            let mad = 1.4826 * quantile(&dev, 0.5);
            let upper = (quantile(&sorted, 0.9) - med) / 1.2816;
            let lower = (med - quantile(&sorted, 0.1)) / 1.2816;
            let spread = match spec.sides {
                Sides::Upper => mad.max(upper),
                Sides::Both => mad.max(upper).max(lower),
            };
            let ne = effective_samples(&col, med);
            n_eff[j] = ne;
            median[j] = med;
            scale[j] = (spread * (1.0 + 1.57 / ne).sqrt()).max(spec.transform.floor(med));
        }
        LearnedBaseline {
            features: specs.iter().map(|s| s.name.to_string()).collect(),
            transforms: specs.iter().map(|s| s.transform).collect(),
            sides: specs.iter().map(|s| s.sides).collect(),
            median,
            scale,
            n_eff,
            samples: rows.len() as u32,
            started_us,
            learned_us,
        }
    }

    /// True when a stored baseline belongs to these features.
    pub fn matches(&self, specs: &[FeatureSpec]) -> bool {
        self.features.len() == specs.len()
            && self.median.len() == specs.len()
            && self.scale.len() == specs.len()
            && self.features.iter().zip(specs).all(|(a, b)| a == b.name)
    }

    /// Signed z of each value; 0 for a feature the baseline has no statistics for or a
    /// value that is not finite (neutral: it neither raises nor lowers a score).
    pub fn z_into(&self, values: &[f64], out: &mut Vec<f64>) {
        out.clear();
        for (j, &x) in values.iter().enumerate().take(self.features.len()) {
            let (m, s) = (self.median[j], self.scale[j]);
            let z = if x.is_finite() && m.is_finite() && s.is_finite() && s > 0.0 {
                (self.transforms[j].apply(x) - m) / s
            } else {
                0.0
            };
            out.push(z.clamp(-Z_LIMIT, Z_LIMIT));
        }
    }

    /// The baseline value of feature `j` in its own unit (the median, transformed
    /// back), for messages.
    pub fn typical(&self, j: usize) -> Option<f64> {
        let m = *self.median.get(j)?;
        if !m.is_finite() {
            return None;
        }
        Some(match self.transforms[j] {
            Transform::Log => m.exp(),
            Transform::Linear => m,
        })
    }

    pub fn index(&self, name: &str) -> Option<usize> {
        self.features.iter().position(|f| f == name)
    }
}

/// z values are clamped to ±this, so one absurd value (a sensor fault) cannot make a
/// score infinite.
pub const Z_LIMIT: f64 = 1000.0;

/// Linear-interpolated quantile of sorted values.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        1 => sorted[0],
        n => {
            let pos = q.clamp(0.0, 1.0) * (n - 1) as f64;
            let lo = pos.floor() as usize;
            let hi = (lo + 1).min(n - 1);
            sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
        }
    }
}

/// Effective number of independent values in `x` (in sample order): `n / (1 + 2 Σ ρ_k)`
/// over the initial run of positive autocorrelations (at most 1000 lags).
fn effective_samples(x: &[f64], centre: f64) -> f64 {
    let n = x.len();
    if n < 3 {
        return n as f64;
    }
    let c: Vec<f64> = x.iter().map(|v| v - centre).collect();
    let den: f64 = c.iter().map(|v| v * v).sum();
    if den <= 0.0 {
        return n as f64;
    }
    let mut sum = 0.0;
    for lag in 1..(n / 2).min(1000) {
        let r: f64 = c[lag..].iter().zip(&c).map(|(a, b)| a * b).sum::<f64>() / den;
        if r <= 0.0 {
            break;
        }
        sum += r;
    }
    (n as f64 / (1.0 + 2.0 * sum)).clamp(1.0, n as f64)
}

/// The built-in relative score: the mean of the two largest deviations (one-sided or
/// absolute, per feature). Requiring two features to agree keeps one volatile feature
/// (a knock that raises the kurtosis of one window, one band that drifts with the
/// process) from alarming alone, while a developing fault raises energy and its
/// envelope, or several bands, together. Shipped relative bundles compute the same
/// (see `tools/train/train_relative.py`); this is the rule the pipeline uses when no
/// relative bundle serves a channel.
pub fn top2_score(z: &[f64], sides: &[Sides]) -> f64 {
    let (mut a, mut b) = (0.0f64, 0.0f64);
    for (v, s) in z.iter().zip(sides) {
        let d = match s {
            Sides::Upper => v.max(0.0),
            Sides::Both => v.abs(),
        };
        if d > a {
            b = a;
            a = d;
        } else if d > b {
            b = d;
        }
    }
    (a + b) / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPECS: [FeatureSpec; 2] = [
        FeatureSpec {
            name: "rms",
            transform: Transform::Log,
            sides: Sides::Upper,
        },
        FeatureSpec {
            name: "temp",
            transform: Transform::Linear,
            sides: Sides::Both,
        },
    ];

    fn noise(i: u64) -> f64 {
        // Deterministic pseudo-random in -0.5..0.5.
        let x = i
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((x >> 11) as f64 / (1u64 << 53) as f64) - 0.5
    }

    #[test]
    fn samples_are_held_as_f32_offsets_without_losing_a_large_reading_s_decimals() {
        // A totaliser-like value near 1e9 that moves by tenths: as plain f32 every
        // sample would round to a multiple of 64; as offsets from the first sample
        // the baseline equals the one learned from the f64 values.
        let raw: Vec<Vec<f64>> = (0..200u64)
            .map(|i| vec![1.0 + noise(i), 1_000_000_123.4 + noise(i + 1000)])
            .collect();
        let rows = Rows::from(raw.clone());
        assert_eq!(rows.data.capacity() * 4, 200 * 2 * 4, "4 bytes a value");
        let back = rows.to_f64();
        for (got, want) in back.iter().zip(raw.iter().flatten()) {
            assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        }
        let plain = f64::from(raw[1][1] as f32);
        assert!(
            (plain - raw[1][1]).abs() > 1.0,
            "plain f32 would lose it: {plain}"
        );
        let exact = LearnedBaseline::from_rows(&SPECS, &raw, 0, 1);
        let held: Vec<&[f64]> = back.chunks_exact(2).collect();
        let learned = LearnedBaseline::from_rows(&SPECS, &held, 0, 1);
        // The same within a millionth of the baseline's spread: no z value moves.
        for j in 0..2 {
            let (m, e, s) = (learned.median[j], exact.median[j], exact.scale[j]);
            assert!(
                (m - e).abs() < 1e-6 * s,
                "median {j}: {m} vs {e} (scale {s})"
            );
            let ls = learned.scale[j];
            assert!((ls - s).abs() < 1e-6 * s, "scale {j}: {ls} vs {s}");
        }
    }

    #[test]
    fn rows_round_trip_through_the_state_format_and_keep_missing_features() {
        // A feature missing in the first rows (NaN) takes its reference later.
        let mut raw: Vec<Vec<f64>> = (0..50u64)
            .map(|i| vec![f64::NAN, 20.0 + noise(i)])
            .collect();
        raw.extend((0..50u64).map(|i| vec![3.0 + noise(i + 7), 20.0 + noise(i + 99)]));
        let rows = Rows::from(raw.clone());
        let bytes = rmp_serde::to_vec(&rows).unwrap();
        // The stored form is the list of absolute rows an older version wrote...
        let stored: Vec<Vec<f64>> = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(stored.len(), 100);
        assert!(stored[..50].iter().all(|r| r[0].is_nan()));
        assert_eq!(
            stored[50][0], raw[50][0],
            "the reference comes back exactly"
        );
        // ...and loads back to the same rows.
        let again: Rows = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(again.to_f64().len(), 200);
        for (a, b) in again.to_f64().iter().zip(rows.to_f64()) {
            assert!(
                a.to_bits() == b.to_bits() || (a - b).abs() < 1e-12,
                "{a} vs {b}"
            );
        }
        let older: Rows = rmp_serde::from_slice(&rmp_serde::to_vec(&raw).unwrap()).unwrap();
        assert_eq!(older.len(), 100);
        // A value beyond f32's range from its reference is a missing feature.
        let mut wild = Rows::default();
        assert!(wild.push(&[1.0, 1.0], 4));
        assert!(wild.push(&[1e300, 2.0], 4));
        assert!(wild.to_f64()[2].is_nan());
        assert_eq!(wild.to_f64()[3], 2.0);
        assert!(!wild.push(&[1.0], 4), "a row of another width is refused");
    }

    #[test]
    fn learning_spreads_samples_over_the_period() {
        let plan = LearnPlan {
            duration_us: 100_000_000,
            samples: 10,
            min_samples: 5,
        };
        let mut c = Commissioning::new(&SPECS, &plan, 0);
        let mut taken = 0;
        let mut complete_at = None;
        // One value per second for 200 s: one sample per 10 s slot.
        for s in 0..200 {
            match c.offer(s * 1_000_000, &[1.0, 20.0]) {
                Offer::Taken => taken += 1,
                Offer::Complete => {
                    complete_at = Some(s);
                    break;
                }
                Offer::Skipped => {}
            }
        }
        assert_eq!(taken, 10, "one per slot");
        assert_eq!(complete_at, Some(100), "ends when the duration is over");
        assert!((c.progress(50_000_000) - 0.5).abs() < 1e-9);
    }

    #[test]
    fn a_sparse_channel_keeps_learning_until_it_has_enough() {
        let plan = LearnPlan {
            duration_us: 10_000_000,
            samples: 10,
            min_samples: 4,
        };
        let mut c = Commissioning::new(&SPECS, &plan, 0);
        // One value every 8 s: after 10 s only two samples.
        let mut outcome = Vec::new();
        for k in 0..6 {
            outcome.push(c.offer(k * 8_000_000, &[1.0, 1.0]));
        }
        assert_eq!(outcome[3], Offer::Complete, "{outcome:?}");
    }

    #[test]
    fn count_mode_takes_the_first_n() {
        let plan = LearnPlan {
            duration_us: 0,
            samples: 3,
            min_samples: 3,
        };
        let mut c = Commissioning::new(&SPECS, &plan, 0);
        assert_eq!(c.offer(0, &[1.0, 1.0]), Offer::Taken);
        assert_eq!(c.offer(1, &[1.0, 1.0]), Offer::Taken);
        assert_eq!(c.offer(2, &[1.0, 1.0]), Offer::Complete);
    }

    #[test]
    fn robust_statistics_ignore_a_burst_and_respect_the_floor() {
        // 200 samples of a steady rms 1.0 ± 1 % with a 5 % run-in burst at 3x.
        let rows: Vec<Vec<f64>> = (0..200)
            .map(|i| {
                let rms = if (20..30).contains(&i) {
                    3.0
                } else {
                    1.0 + 0.02 * noise(i)
                };
                vec![rms, 50.0 + 2.0 * noise(i + 1000)]
            })
            .collect();
        let b = LearnedBaseline::from_rows(&SPECS, &rows, 0, 1);
        assert!(
            (b.typical(0).unwrap() - 1.0).abs() < 0.01,
            "median ignores the burst"
        );
        assert_eq!(b.scale[0], LOG_SCALE_FLOOR, "steady feature: the floor");
        let mut z = Vec::new();
        b.z_into(&[2.0, 50.0], &mut z);
        assert!((z[0] - 2f64.ln() / LOG_SCALE_FLOOR).abs() < 0.1, "{}", z[0]);
        assert!(z[1].abs() < 1.0);
        // Linear, two-sided: a uniform ±1 spread gives a scale of about 0.78 / 1.28.
        assert!(b.scale[1] > 0.6 && b.scale[1] < 1.0, "{}", b.scale[1]);
    }

    #[test]
    fn heavy_tails_widen_the_scale_and_correlation_widens_it_more() {
        // Kurtosis-like: mostly 3, 15 % of the samples 10.
        let rows: Vec<Vec<f64>> = (0..100)
            .map(|i| {
                vec![
                    if i % 7 == 0 {
                        10.0
                    } else {
                        3.0 + 0.01 * noise(i)
                    },
                    0.0,
                ]
            })
            .collect();
        let b = LearnedBaseline::from_rows(&SPECS, &rows, 0, 1);
        assert!(b.scale[0] > 0.5, "tail-based scale: {}", b.scale[0]);
        // A slow sine is strongly autocorrelated: few effective samples.
        let slow: Vec<Vec<f64>> = (0..100)
            .map(|i| vec![1.0, (i as f64 / 30.0).sin()])
            .collect();
        let fast: Vec<Vec<f64>> = (0..100).map(|i| vec![1.0, noise(i) * 2.0]).collect();
        let bs = LearnedBaseline::from_rows(&SPECS, &slow, 0, 1);
        let bf = LearnedBaseline::from_rows(&SPECS, &fast, 0, 1);
        assert!(bs.n_eff[1] < 10.0, "{}", bs.n_eff[1]);
        assert!(bf.n_eff[1] > 50.0, "{}", bf.n_eff[1]);
    }

    #[test]
    fn missing_features_are_neutral() {
        let rows: Vec<Vec<f64>> = (0..10).map(|_| vec![1.0, f64::NAN]).collect();
        let b = LearnedBaseline::from_rows(&SPECS, &rows, 0, 1);
        assert!(b.median[1].is_nan());
        let mut z = Vec::new();
        b.z_into(&[1.0, 123.0], &mut z);
        assert_eq!(z, vec![0.0, 0.0]);
    }

    #[test]
    fn top2_needs_two_features_and_respects_sides() {
        let sides = [Sides::Upper, Sides::Upper, Sides::Both];
        assert_eq!(top2_score(&[8.0, 0.0, 0.0], &sides), 4.0);
        assert_eq!(top2_score(&[5.0, 5.0, 0.0], &sides), 5.0);
        assert_eq!(top2_score(&[-9.0, 1.0, -3.0], &sides), 2.0);
    }
}
