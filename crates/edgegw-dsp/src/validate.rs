//! Per-channel validation: range, stuck, spike and stale checks.
//!
//! Validation never drops a reading: it lowers `quality` and says why in `flags`, so the
//! cloud sees what the gateway saw. Each failed check multiplies the quality by its
//! factor (a reading can fail several):
//!
//! | flag           | factor | meaning                                                   |
//! |----------------|--------|-----------------------------------------------------------|
//! | `out_of_range` | 0.0    | outside `min..=max` (or not a number): physically wrong   |
//! | `stuck`        | 0.3    | `stuck_after` identical consecutive values                 |
//! | `spike`        | 0.5    | rate of change above `max_rate_per_s`                      |
//! | `stale`        | 0.7    | more than `stale_after_ms` since the previous reading      |
//!
//! For waveform blocks the checks apply to the samples: range to every sample, spike to
//! sample-to-sample changes (at the sample rate, and across the block boundary), stuck
//! to runs of identical samples (so `stuck_after` counts samples there) and stale to
//! the gap between blocks.

use crate::TimestampUs;
use serde::Deserialize;

pub const OUT_OF_RANGE_FACTOR: f32 = 0.0;
pub const STUCK_FACTOR: f32 = 0.3;
pub const SPIKE_FACTOR: f32 = 0.5;
pub const STALE_FACTOR: f32 = 0.7;

/// Plausibility limits of one channel (from its hardware profile). Every check is off
/// when its limit is absent.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelLimits {
    /// Lowest physically possible value, in the channel's unit.
    #[serde(default)]
    pub min: Option<f64>,
    /// Highest physically possible value, in the channel's unit.
    #[serde(default)]
    pub max: Option<f64>,
    /// Fastest plausible change, in units per second; faster is a spike (a loose wire,
    /// electrical noise), not the process.
    #[serde(default)]
    pub max_rate_per_s: Option<f64>,
    /// This many identical consecutive values (samples, for waveforms) mean a frozen
    /// sensor or a register that stopped updating.
    #[serde(default)]
    pub stuck_after: Option<u32>,
    /// A reading arriving this long after the previous one is flagged: the values in
    /// between are missing.
    #[serde(default)]
    pub stale_after_ms: Option<u64>,
}

/// What validation found in one reading.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Verdict {
    pub out_of_range: bool,
    pub stuck: bool,
    pub spike: bool,
    pub stale: bool,
}

impl Verdict {
    /// True when every check passed.
    pub fn is_clean(&self) -> bool {
        !(self.out_of_range || self.stuck || self.spike || self.stale)
    }

    /// The product of the factors of the failed checks.
    pub fn quality_factor(&self) -> f32 {
        let mut q = 1.0;
        if self.out_of_range {
            q *= OUT_OF_RANGE_FACTOR;
        }
        if self.stuck {
            q *= STUCK_FACTOR;
        }
        if self.spike {
            q *= SPIKE_FACTOR;
        }
        if self.stale {
            q *= STALE_FACTOR;
        }
        q
    }

    /// Flag strings of the failed checks, in a fixed order.
    pub fn flags(&self) -> impl Iterator<Item = &'static str> {
        [
            (self.out_of_range, "out_of_range"),
            (self.stuck, "stuck"),
            (self.spike, "spike"),
            (self.stale, "stale"),
        ]
        .into_iter()
        .filter(|(on, _)| *on)
        .map(|(_, f)| f)
    }

    /// Applies the verdict to a reading's quality and flags.
    pub fn apply(&self, quality: &mut f32, flags: &mut Vec<String>) {
        *quality *= self.quality_factor();
        flags.extend(self.flags().map(str::to_string));
    }
}

/// Validation state of one channel.
#[derive(Debug, Clone)]
pub struct Validator {
    limits: ChannelLimits,
    /// Time of the previous reading (stale check).
    last_ts_us: Option<TimestampUs>,
    /// Last in-range value and its time (spike check); out-of-range values are not
    /// used as a reference, so the reading after a glitch is not a spike too.
    last_good: Option<(TimestampUs, f64)>,
    /// The value of the current run of identical values and its length.
    run: Option<(f64, u32)>,
}

impl Validator {
    pub fn new(limits: ChannelLimits) -> Validator {
        Validator {
            limits,
            last_ts_us: None,
            last_good: None,
            run: None,
        }
    }

    pub fn limits(&self) -> &ChannelLimits {
        &self.limits
    }

    fn in_range(&self, v: f64) -> bool {
        !v.is_nan()
            && self.limits.min.is_none_or(|min| v >= min)
            && self.limits.max.is_none_or(|max| v <= max)
    }

    fn stale(&mut self, ts_us: TimestampUs) -> bool {
        let stale = match (self.limits.stale_after_ms, self.last_ts_us) {
            (Some(limit), Some(prev)) => ts_us.saturating_sub(prev) > (limit as i64) * 1000,
            _ => false,
        };
        self.last_ts_us = Some(ts_us);
        stale
    }

    /// Counts `v` into the run of identical values; true once the run is long enough.
    fn stuck_step(&mut self, v: f64) -> bool {
        let run = match self.run {
            Some((prev, n)) if prev == v => n.saturating_add(1),
            _ => 1,
        };
        self.run = Some((v, run));
        self.limits.stuck_after.is_some_and(|n| run >= n.max(2))
    }

    /// Checks one scalar reading.
    pub fn check_scalar(&mut self, ts_us: TimestampUs, value: f64) -> Verdict {
        let mut verdict = Verdict {
            stale: self.stale(ts_us),
            stuck: self.stuck_step(value),
            ..Verdict::default()
        };
        if !self.in_range(value) {
            verdict.out_of_range = true;
            return verdict;
        }
        if let (Some(max_rate), Some((prev_ts, prev))) =
            (self.limits.max_rate_per_s, self.last_good)
        {
            let dt_s = (ts_us - prev_ts) as f64 / 1e6;
            if dt_s > 0.0 && (value - prev).abs() / dt_s > max_rate {
                verdict.spike = true;
            }
        }
        self.last_good = Some((ts_us, value));
        verdict
    }

    /// Checks one waveform block (`ts_us` = time of its last sample).
    pub fn check_block(
        &mut self,
        ts_us: TimestampUs,
        samples: &[f32],
        sample_rate_hz: f64,
    ) -> Verdict {
        let mut verdict = Verdict {
            stale: self.stale(ts_us),
            ..Verdict::default()
        };
        let max_step = self
            .limits
            .max_rate_per_s
            .filter(|_| sample_rate_hz > 0.0)
            .map(|r| r / sample_rate_hz);
        // Compare across the block boundary only when this block continues the last.
        let period_us = if sample_rate_hz > 0.0 {
            1e6 / sample_rate_hz
        } else {
            0.0
        };
        let first_ts = ts_us as f64 - samples.len().saturating_sub(1) as f64 * period_us;
        let mut prev = self
            .last_good
            .filter(|(t, _)| (first_ts - *t as f64).abs() <= 2.0 * period_us)
            .map(|(_, v)| v);
        let mut stuck = false;
        let check_stuck = self.limits.stuck_after.is_some();
        for &s in samples {
            let v = f64::from(s);
            if check_stuck {
                stuck |= self.stuck_step(v);
            }
            if !self.in_range(v) {
                verdict.out_of_range = true;
                continue;
            }
            if let (Some(step), Some(p)) = (max_step, prev) {
                if (v - p).abs() > step {
                    verdict.spike = true;
                }
            }
            prev = Some(v);
        }
        verdict.stuck = stuck;
        if let Some(v) = prev {
            self.last_good = Some((ts_us, v));
        }
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ChannelLimits {
        ChannelLimits {
            min: Some(-20.0),
            max: Some(150.0),
            max_rate_per_s: Some(1.0),
            stuck_after: Some(4),
            stale_after_ms: Some(60_000),
        }
    }

    #[test]
    fn each_check_flags_and_lowers_quality() {
        let mut v = Validator::new(limits());
        assert!(v.check_scalar(0, 20.0).is_clean());
        // 10 s later, +5: 0.5/s is fine.
        assert!(v.check_scalar(10_000_000, 25.0).is_clean());
        // +20 in 10 s is 2/s: spike.
        let s = v.check_scalar(20_000_000, 45.0);
        assert!(s.spike && !s.out_of_range);
        assert_eq!(s.quality_factor(), SPIKE_FACTOR);
        // Out of range: quality 0 and not used as the spike reference.
        let o = v.check_scalar(30_000_000, 400.0);
        assert!(o.out_of_range);
        assert_eq!(o.quality_factor(), 0.0);
        assert!(v.check_scalar(40_000_000, 45.0).is_clean());
        // Stale: two minutes since the previous reading.
        let st = v.check_scalar(160_000_000, 45.0);
        assert!(st.stale);
        // 45.0 now repeated: third and fourth identical value -> stuck at the fourth.
        assert!(!v.check_scalar(170_000_000, 45.0).stuck);
        let stuck = v.check_scalar(180_000_000, 45.0);
        assert!(stuck.stuck);
        assert_eq!(stuck.flags().collect::<Vec<_>>(), vec!["stuck"]);
        let mut q = 1.0;
        let mut flags = vec!["modbus_retry".to_string()];
        Verdict {
            spike: true,
            stale: true,
            ..Verdict::default()
        }
        .apply(&mut q, &mut flags);
        assert!((q - SPIKE_FACTOR * STALE_FACTOR).abs() < 1e-6);
        assert_eq!(flags, vec!["modbus_retry", "spike", "stale"]);
    }

    #[test]
    fn nan_is_out_of_range_and_no_limits_means_no_flags() {
        let mut v = Validator::new(ChannelLimits::default());
        assert!(v.check_scalar(0, 1e9).is_clean());
        assert!(v.check_scalar(1, 1e9).is_clean());
        assert!(v.check_scalar(2, f64::NAN).out_of_range);
    }

    #[test]
    fn blocks_are_checked_sample_by_sample() {
        let mut v = Validator::new(ChannelLimits {
            min: Some(-10.0),
            max: Some(10.0),
            max_rate_per_s: Some(1000.0), // 1 unit per sample at 1 kHz
            stuck_after: Some(50),
            stale_after_ms: None,
        });
        let smooth: Vec<f32> = (0..100).map(|i| (i as f32 * 0.05).sin()).collect();
        assert!(v.check_block(99_000, &smooth, 1000.0).is_clean());
        let mut jumpy = smooth.clone();
        jumpy[50] = 5.0;
        assert!(v.check_block(199_000, &jumpy, 1000.0).spike);
        let flat = vec![0.25f32; 100];
        assert!(v.check_block(299_000, &flat, 1000.0).stuck);
        let mut clipped = smooth;
        clipped[10] = 12.0;
        assert!(v.check_block(399_000, &clipped, 1000.0).out_of_range);
    }
}
