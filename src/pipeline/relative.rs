//! Detection relative to a channel's own baseline: commissioning, z vectors, the trend
//! (CUSUM) and the drop check, for one channel.
//!
//! [`RelativeDetector`] owns the channel's [`BaselineState`]: while learning it offers
//! each clean window (or reading) to the [`Commissioning`]; once learned it turns the
//! health features into signed z values against the fixed [`LearnedBaseline`]. It does
//! not score: the processor hands the z values to a relative model bundle (or the
//! built-in [`top2_score`] rule) and feeds the score back through
//! [`RelativeDetector::trend`], a one-sided CUSUM that sees slow onsets a single window
//! does not (`C = max(0, C + (score − threshold/2)·w)`, alarm above 5 × threshold;
//! `w` is 1 per window, and the elapsed hours per reading for scalar channels, so a
//! scalar channel's trend means the same at any cadence).
//!
//! Persistence goes through the caller ([`RelativeDetector::to_bytes`]) into the
//! pipeline's state store, so commissioning resumes after a restart and a learned
//! baseline is never relearned by accident. The CUSUM is not persisted: after a
//! restart it starts from 0 (open alert episodes are: `Processor::take_state`).

use super::baseline::{
    top2_score, Commissioning, FeatureSpec, LearnPlan, LearnedBaseline, Offer, Sides, Transform,
};
use super::bearing::FamilyLevels;
use crate::record::TimestampUs;
use serde::{Deserialize, Serialize};

/// The features a waveform (vibration) channel learns: the nine scored health
/// features of [`super::physical::HEALTH_FEATURES`] (all one-sided: more energy or
/// impulsiveness is worse), then the four bearing defect families of the envelope
/// spectrum (learned only to name the component later; not scored, NaN when the device
/// has no bearing configured).
pub const WINDOW_SPECS: [FeatureSpec; 13] = [
    log_upper("accel_rms"),
    log_upper("kurtosis"),
    log_upper("crest_factor"),
    log_upper("velocity_rms"),
    log_upper("band_0_1k"),
    log_upper("band_1_4k"),
    log_upper("band_4k_up"),
    log_upper("envelope_rms"),
    log_upper("envelope_modulation"),
    log_upper("env_ftf"),
    log_upper("env_ball"),
    log_upper("env_bpfo"),
    log_upper("env_bpfi"),
];

/// How many of [`WINDOW_SPECS`] are scored.
pub const WINDOW_SCORED: usize = 9;

/// The features a scalar channel learns ([`super::rolling::SCALAR_HEALTH_FEATURES`]),
/// compared in both directions.
pub const SCALAR_SPECS: [FeatureSpec; 4] = [
    linear_both("level"),
    linear_both("mean"),
    linear_both("std"),
    linear_both("slope"),
];

const fn log_upper(name: &'static str) -> FeatureSpec {
    FeatureSpec {
        name,
        transform: Transform::Log,
        sides: Sides::Upper,
    }
}

const fn linear_both(name: &'static str) -> FeatureSpec {
    FeatureSpec {
        name,
        transform: Transform::Linear,
        sides: Sides::Both,
    }
}

/// A channel's baseline: being learned, or learned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum BaselineState {
    Learning(Commissioning),
    Learned(LearnedBaseline),
}

/// What one window or reading did.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Still learning (progress 0..1); `started` on the first sample of a period.
    Learning { progress: f64, started: bool },
    /// The learning period just ended; the baseline is now fixed.
    Learned,
    /// Scored against the baseline: the signed z of every feature is in
    /// [`RelativeDetector::z`].
    Ready,
    /// Not usable (not clean while learning, or no finite feature).
    Skipped,
}

/// The relative detection state of one channel.
#[derive(Debug, Clone)]
pub struct RelativeDetector {
    specs: &'static [FeatureSpec],
    scored: usize,
    plan: LearnPlan,
    state: Option<BaselineState>,
    z: Vec<f64>,
    cusum: f64,
    /// Set when the state changed since [`RelativeDetector::to_bytes`] was last called.
    dirty: bool,
    last_saved_us: TimestampUs,
}

impl RelativeDetector {
    /// A detector for `specs` (the first `scored` are scored), resuming `stored` when it
    /// belongs to the same features (anything else starts a new learning period).
    pub fn new(
        specs: &'static [FeatureSpec],
        scored: usize,
        plan: LearnPlan,
        stored: Option<&[u8]>,
    ) -> RelativeDetector {
        let state = stored
            .and_then(|b| serde_json::from_slice::<BaselineState>(b).ok())
            .filter(|s| match s {
                BaselineState::Learning(c) => c.matches(specs),
                BaselineState::Learned(b) => b.matches(specs),
            });
        RelativeDetector {
            specs,
            scored: scored.min(specs.len()),
            plan,
            state,
            z: Vec::with_capacity(specs.len()),
            cusum: 0.0,
            dirty: false,
            last_saved_us: i64::MIN,
        }
    }

    pub fn specs(&self) -> &'static [FeatureSpec] {
        self.specs
    }

    /// Sides of the scored features.
    pub fn scored_sides(&self) -> Vec<Sides> {
        self.specs[..self.scored].iter().map(|s| s.sides).collect()
    }

    pub fn state(&self) -> Option<&BaselineState> {
        self.state.as_ref()
    }

    pub fn baseline(&self) -> Option<&LearnedBaseline> {
        match &self.state {
            Some(BaselineState::Learned(b)) => Some(b),
            _ => None,
        }
    }

    /// Signed z values of the last [`Step::Ready`], in spec order.
    pub fn z(&self) -> &[f64] {
        &self.z
    }

    /// The z of a feature by name (after a [`Step::Ready`]).
    pub fn z_of(&self, name: &str) -> Option<f64> {
        let i = self.specs.iter().position(|s| s.name == name)?;
        self.z.get(i).copied()
    }

    /// The built-in relative score of the last [`Step::Ready`].
    pub fn builtin_score(&self) -> f64 {
        let sides: Vec<Sides> = self.scored_sides();
        top2_score(&self.z[..self.scored.min(self.z.len())], &sides)
    }

    /// Feeds one window's (or reading's) features at `ts_us`; `clean` = good quality.
    pub fn observe(&mut self, ts_us: TimestampUs, values: &[f64], clean: bool) -> Step {
        if let Some(BaselineState::Learned(b)) = &self.state {
            b.z_into(values, &mut self.z);
            return Step::Ready;
        }
        if !clean {
            return Step::Skipped;
        }
        let started = self.state.is_none();
        if started {
            let c = Commissioning::new(self.specs, &self.plan, ts_us);
            self.state = Some(BaselineState::Learning(c));
        }
        let Some(BaselineState::Learning(c)) = &mut self.state else {
            return Step::Skipped;
        };
        let offer = c.offer(ts_us, values);
        if offer != Offer::Skipped || started {
            self.dirty = true;
        }
        if offer == Offer::Complete {
            let learned = c.learn(self.specs, ts_us);
            self.state = Some(BaselineState::Learned(learned));
            self.cusum = 0.0;
            return Step::Learned;
        }
        Step::Learning {
            progress: c.progress(ts_us),
            started,
        }
    }

    /// Progress of the learning period at `now_us` (1 once learned, 0 before the first
    /// sample).
    pub fn progress(&self, now_us: TimestampUs) -> f64 {
        match &self.state {
            None => 0.0,
            Some(BaselineState::Learning(c)) => c.progress(now_us),
            Some(BaselineState::Learned(_)) => 1.0,
        }
    }

    /// Starts a new learning period at the next clean value (after maintenance).
    pub fn reset(&mut self) {
        self.state = None;
        self.cusum = 0.0;
        self.dirty = true;
    }

    /// Updates the trend with one score (`weight`: 1 per window, hours per reading).
    /// Returns the CUSUM and whether it is above its alarm level.
    pub fn trend(&mut self, score: f64, threshold: f64, weight: f64) -> (f64, bool) {
        let k = threshold / 2.0;
        if score.is_finite() && weight.is_finite() && weight >= 0.0 {
            // Capped at twice the alarm level: a long event must not leave a debt
            // that takes days of normal data to pay back before its episode can close.
            self.cusum =
                (self.cusum + (score - k) * weight).clamp(0.0, 2.0 * trend_alarm(threshold));
        }
        (self.cusum, self.cusum > trend_alarm(threshold))
    }

    pub fn cusum(&self) -> f64 {
        self.cusum
    }

    /// The learned medians of the bearing families, if the baseline has them.
    pub fn family_baseline(&self) -> Option<FamilyLevels> {
        let b = self.baseline()?;
        let get = |n: &str| b.index(n).and_then(|j| b.typical(j));
        Some(FamilyLevels {
            ftf: get("env_ftf")?,
            ball: get("env_ball")?,
            bpfo: get("env_bpfo")?,
            bpfi: get("env_bpfi")?,
        })
    }

    /// The state to persist, when it changed and the last save is at least
    /// `min_interval_us` of reading time ago (or `force`).
    pub fn to_save(
        &mut self,
        now_us: TimestampUs,
        min_interval_us: i64,
        force: bool,
    ) -> Option<Vec<u8>> {
        if !self.dirty {
            return None;
        }
        let learned = matches!(self.state, Some(BaselineState::Learned(_)) | None);
        if !force && !learned && now_us.saturating_sub(self.last_saved_us) < min_interval_us {
            return None;
        }
        self.dirty = false;
        self.last_saved_us = now_us;
        Some(self.to_bytes())
    }

    /// The state serialised for the state store (JSON; `null` before learning starts).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.state).unwrap_or_default()
    }
}

/// The CUSUM level above which a trend alarms: five times the score threshold (with
/// the allowance of half the threshold per window, that is for example ten windows in
/// a row at 1.5 × threshold, or a long run just above half of it). The CUSUM itself
/// is capped at twice this level.
pub fn trend_alarm(threshold: f64) -> f64 {
    5.0 * threshold
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> LearnPlan {
        LearnPlan {
            duration_us: 0,
            samples: 20,
            min_samples: 20,
        }
    }

    #[test]
    fn learns_then_scores_and_resumes_from_storage() {
        let mut d = RelativeDetector::new(&SCALAR_SPECS, 4, plan(), None);
        let mut steps = Vec::new();
        for i in 0..25 {
            let v = 50.0 + (i % 3) as f64;
            steps.push(d.observe(i, &[v, v, 1.0, 0.0], true));
        }
        assert_eq!(
            steps[0],
            Step::Learning {
                progress: 0.05,
                started: true
            }
        );
        assert_eq!(steps[19], Step::Learned);
        assert_eq!(steps[20], Step::Ready);
        // A value far above: two-sided z on level and mean.
        assert_eq!(d.observe(30, &[80.0, 80.0, 1.0, 0.0], true), Step::Ready);
        assert!(d.z()[0] > 10.0 && d.builtin_score() > 10.0);
        // Stored and resumed: the same baseline, no relearning.
        let bytes = d.to_bytes();
        let mut e = RelativeDetector::new(&SCALAR_SPECS, 4, plan(), Some(&bytes));
        assert_eq!(e.observe(31, &[50.0, 50.0, 1.0, 0.0], true), Step::Ready);
        // Other features: the stored state is not used.
        let f = RelativeDetector::new(&WINDOW_SPECS, WINDOW_SCORED, plan(), Some(&bytes));
        assert!(f.state().is_none());
        // Reset: learning again.
        e.reset();
        assert!(matches!(
            e.observe(40, &[50.0, 50.0, 1.0, 0.0], true),
            Step::Learning { started: true, .. }
        ));
    }

    #[test]
    fn unclean_values_are_not_learned() {
        let mut d = RelativeDetector::new(&SCALAR_SPECS, 4, plan(), None);
        assert_eq!(d.observe(0, &[1.0, 1.0, 1.0, 1.0], false), Step::Skipped);
        assert!(d.state().is_none());
    }

    #[test]
    fn cusum_accumulates_a_sustained_moderate_rise() {
        let mut d = RelativeDetector::new(&SCALAR_SPECS, 4, plan(), None);
        // Score 3 against threshold 4: never anomalous alone, but 2 - 1 per window adds up.
        let mut alarm_at = None;
        for i in 0..30 {
            let (_, alarm) = d.trend(3.0, 4.0, 1.0);
            if alarm && alarm_at.is_none() {
                alarm_at = Some(i);
            }
        }
        assert_eq!(alarm_at, Some(20), "C > 20 after 21 windows of +1");
        // Calm scores bring it back down.
        for _ in 0..30 {
            d.trend(0.0, 4.0, 1.0);
        }
        assert_eq!(d.cusum(), 0.0);
    }
}
