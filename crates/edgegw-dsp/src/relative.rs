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
use crate::TimestampUs;
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

/// Rows of learning samples per stored chunk ([`Commissioning::chunks`]). A learning
/// channel's own key holds fewer than this many rows; each full chunk is written once
/// under [`rows_key`]. With the default 200 samples a day that is about 200 writes of
/// up to 20 rows and 10 of a chunk, instead of 200 writes of up to 200 rows (1.6 MB a
/// channel on its first day, `examples/channel_state.rs`).
pub const LEARN_CHUNK_ROWS: usize = 20;

/// State-store key of chunk `i` of the learning samples of the baseline stored under
/// `key` (outside the `baseline/` prefix, so listings of baselines do not see it).
pub fn rows_key(key: &str, i: usize) -> String {
    format!("baseline-rows/{i}/{key}")
}

/// One write to the state store: the key and its new value, or None to delete it.
pub type StateWrite = (String, Option<Vec<u8>>);

/// Reads a stored baseline state (`main`, the value under `key`) and, for a learning
/// state stored in chunks, its chunks through `get`. Returns the whole state and the
/// number of chunks found stored; `Ok(None)` for no state ("null", or a form this
/// version does not read, as before). A chunk that is missing or unreadable is an
/// error: the caller starts learning over.
pub fn load_state(
    key: &str,
    main: &[u8],
    get: &mut dyn FnMut(&str) -> Option<Vec<u8>>,
) -> Result<Option<(BaselineState, usize)>, String> {
    let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(main) else {
        return Ok(None);
    };
    // A learning state's rows are read as the f64 values they were written as, and
    // pushed in order after its chunks' rows, so each value comes back exactly (the
    // `Rows` of a part alone would take another reference and round).
    let tail = value
        .get_mut("Learning")
        .and_then(|c| c.get_mut("rows"))
        .map(|r| std::mem::replace(r, serde_json::Value::Array(Vec::new())));
    let Ok(state) = serde_json::from_value::<BaselineState>(value) else {
        return Ok(None);
    };
    let (mut c, tail) = match (state, tail) {
        (BaselineState::Learning(c), Some(tail)) => (c, tail),
        (other, _) => return Ok(Some((other, 0))),
    };
    type Plain = Vec<Vec<Option<f64>>>;
    let n = c.chunks as usize;
    let mut parts: Vec<Plain> = Vec::with_capacity(n + 1);
    for i in 0..n {
        let k = rows_key(key, i);
        let bytes = get(&k).ok_or_else(|| format!("{k} is missing"))?;
        let chunk: Plain = serde_json::from_slice(&bytes).map_err(|e| format!("{k}: {e}"))?;
        if chunk.len() != LEARN_CHUNK_ROWS {
            return Err(format!("{k}: {} rows, not {LEARN_CHUNK_ROWS}", chunk.len()));
        }
        parts.push(chunk);
    }
    parts.push(serde_json::from_value(tail).map_err(|e| format!("{key}: {e}"))?);
    let cap = parts.iter().map(Vec::len).sum();
    let mut rows = super::baseline::Rows::default();
    let mut row = Vec::new();
    for r in parts.iter().flatten() {
        row.clear();
        row.extend(r.iter().map(|v| v.unwrap_or(f64::NAN)));
        if !rows.push(&row, cap) {
            return Err(format!("{key}: learning rows of unequal width"));
        }
    }
    c.rows = rows;
    c.chunks = 0;
    Ok(Some((BaselineState::Learning(c), n)))
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
    /// Set when the state changed since it was last saved.
    dirty: bool,
    last_saved_us: TimestampUs,
    /// Chunks of the learning samples already in the state store.
    chunks_saved: usize,
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
        let loaded = stored.and_then(|b| load_state("", b, &mut |_| None).ok().flatten());
        RelativeDetector::resume(specs, scored, plan, loaded)
    }

    /// A detector resuming a state read by [`load_state`] (when it belongs to the same
    /// features).
    pub fn resume(
        specs: &'static [FeatureSpec],
        scored: usize,
        plan: LearnPlan,
        loaded: Option<(BaselineState, usize)>,
    ) -> RelativeDetector {
        // A state of other features is dropped, and its chunks are not this
        // detector's: the chunks of the new learning period overwrite them from 0.
        let (state, chunks_saved) = match loaded {
            Some((s, n)) => match &s {
                BaselineState::Learning(c) if c.matches(specs) => (Some(s), n),
                BaselineState::Learned(b) if b.matches(specs) => (Some(s), n),
                _ => (None, 0),
            },
            None => (None, 0),
        };
        RelativeDetector {
            chunks_saved,
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

    /// True (and counted as saved) when the state changed and the last save is at
    /// least `min_interval_us` of reading time ago (or `force`): the caller then
    /// stores [`RelativeDetector::writes`]. Cheap, for every reading and window.
    pub fn due(&mut self, now_us: TimestampUs, min_interval_us: i64, force: bool) -> bool {
        if !self.dirty {
            return false;
        }
        let learned = matches!(self.state, Some(BaselineState::Learned(_)) | None);
        if !force && !learned && now_us.saturating_sub(self.last_saved_us) < min_interval_us {
            return false;
        }
        self.dirty = false;
        self.last_saved_us = now_us;
        true
    }

    /// [`RelativeDetector::writes`] under `key` when [`RelativeDetector::due`].
    pub fn to_save(
        &mut self,
        key: &str,
        now_us: TimestampUs,
        min_interval_us: i64,
        force: bool,
    ) -> Vec<StateWrite> {
        if self.due(now_us, min_interval_us, force) {
            self.writes(key)
        } else {
            Vec::new()
        }
    }

    /// The writes that store the state under `key` as it is now, in order: while
    /// learning, the full chunks of samples not stored yet, then the rest under `key`
    /// with their count; otherwise the state under `key`, then the deletion of the
    /// chunks a learning period left.
    pub fn writes(&mut self, key: &str) -> Vec<StateWrite> {
        let mut out = Vec::new();
        if let Some(BaselineState::Learning(c)) = &self.state {
            let full = c.rows.len() / LEARN_CHUNK_ROWS;
            for i in self.chunks_saved..full {
                let rows = c.rows.sub(i * LEARN_CHUNK_ROWS, (i + 1) * LEARN_CHUNK_ROWS);
                out.push((
                    rows_key(key, i),
                    Some(serde_json::to_vec(&rows).unwrap_or_default()),
                ));
            }
            // Rows only grow while learning; a reset leaves Learning and clears below.
            self.chunks_saved = full;
            let stored = Commissioning {
                features: c.features.clone(),
                started_us: c.started_us,
                duration_us: c.duration_us,
                target: c.target,
                min_samples: c.min_samples,
                last_slot: c.last_slot,
                rows: c.rows.sub(full * LEARN_CHUNK_ROWS, usize::MAX),
                chunks: full as u32,
            };
            let value = serde_json::to_vec(&BaselineState::Learning(stored)).unwrap_or_default();
            out.push((key.to_string(), Some(value)));
        } else {
            out.push((key.to_string(), Some(self.to_bytes())));
            out.extend((0..self.chunks_saved).map(|i| (rows_key(key, i), None)));
            self.chunks_saved = 0;
        }
        out
    }

    /// A save's writes did not all reach the store: the next save writes every chunk
    /// again (the puts are idempotent), so the stored count never names a missing one.
    pub fn save_failed(&mut self) {
        self.chunks_saved = 0;
        self.dirty = true;
    }

    /// The whole state serialised as one value (JSON; `null` before learning starts;
    /// a learning state with all its samples inline, a form [`load_state`] reads too).
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

    /// Learning the first `n` clean values.
    fn first(n: u32) -> LearnPlan {
        LearnPlan {
            duration_us: 0,
            samples: n,
            min_samples: n,
        }
    }

    fn plan() -> LearnPlan {
        first(20)
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

    fn apply(
        store: &mut std::collections::HashMap<String, Vec<u8>>,
        writes: Vec<StateWrite>,
    ) -> usize {
        let mut bytes = 0;
        for (k, v) in writes {
            match v {
                Some(v) => {
                    bytes += k.len() + v.len();
                    store.insert(k, v);
                }
                None => {
                    store.remove(&k);
                }
            }
        }
        bytes
    }

    #[test]
    fn learning_samples_are_stored_in_chunks_written_once_and_removed_when_learned() {
        let plan = first(200);
        let key = "baseline/v2/scalar/dev1.t";
        let value = |i: i64| 20.0 + (i % 7) as f64 * 0.123_456_789;
        let mut d = RelativeDetector::new(&SCALAR_SPECS, 4, plan, None);
        let mut store = std::collections::HashMap::new();
        let (mut chunked, mut whole) = (0, 0);
        for i in 0..150 {
            let v = value(i);
            d.observe(i, &[v, v, 0.5, 0.01], true);
            whole += key.len() + d.to_bytes().len();
            chunked += apply(&mut store, d.to_save(key, i, 0, false));
        }
        // Each sample saved: 150 writes of the whole state against chunks written once.
        assert!(chunked * 5 < whole, "chunked {chunked} B, whole {whole} B");
        assert_eq!(
            store
                .keys()
                .filter(|k| k.starts_with("baseline-rows/"))
                .count(),
            7,
            "150 rows: 7 full chunks of 20, 10 rows under the key"
        );
        // A restart resumes every sample.
        let mut get = |k: &str| store.get(k).cloned();
        let loaded = load_state(key, &store[key].clone(), &mut get).unwrap();
        let mut e = RelativeDetector::resume(&SCALAR_SPECS, 4, plan, loaded);
        assert_eq!(e.state(), d.state(), "the same 150 samples");
        // It goes on writing only the chunks it has not stored, then learns and
        // removes them.
        let before = store.len();
        let mut learned = false;
        for i in 150..200 {
            let v = value(i);
            learned |= e.observe(i, &[v, v, 0.5, 0.01], true) == Step::Learned;
            apply(&mut store, e.to_save(key, i, 0, learned));
        }
        assert!(learned);
        assert!(store.len() < before, "chunks removed");
        assert_eq!(store.keys().collect::<Vec<_>>(), vec![key]);
        assert!(matches!(e.state(), Some(BaselineState::Learned(b)) if b.samples == 200));
        // The learned baseline equals the one of a detector that never restarted.
        for i in 150..200 {
            let v = value(i);
            d.observe(i, &[v, v, 0.5, 0.01], true);
        }
        assert_eq!(e.baseline(), d.baseline());
    }

    #[test]
    fn a_missing_chunk_is_an_error_and_a_reset_removes_the_chunks() {
        let plan = first(100);
        let key = "baseline/v2/window/dev1.v";
        let mut d = RelativeDetector::new(&WINDOW_SPECS, WINDOW_SCORED, plan, None);
        let mut store = std::collections::HashMap::new();
        // The bearing families are NaN (no bearing configured): JSON null, read back.
        let mut row = [f64::NAN; 13];
        for i in 0..45 {
            row[..9].fill(1.0 + i as f64 * 0.01);
            d.observe(i, &row, true);
            apply(&mut store, d.to_save(key, i, 0, false));
        }
        let main = store[key].clone();
        let mut get = |k: &str| store.get(k).cloned();
        let (state, chunks) = load_state(key, &main, &mut get).unwrap().unwrap();
        assert_eq!(chunks, 2);
        assert_eq!(Some(&state), d.state(), "NaN features come back as NaN");
        let mut gaps = store.clone();
        gaps.remove(&rows_key(key, 1));
        let mut get = |k: &str| gaps.get(k).cloned();
        let err = load_state(key, &main, &mut get).unwrap_err();
        assert!(
            err.contains("baseline-rows/1/") && err.contains("missing"),
            "{err}"
        );
        d.reset();
        apply(&mut store, d.writes(key));
        assert_eq!(store.keys().collect::<Vec<_>>(), vec![key]);
        assert_eq!(store[key], b"null");
        // The whole-state form of older versions still loads.
        let mut older = RelativeDetector::new(&WINDOW_SPECS, WINDOW_SCORED, plan, None);
        for i in 0..30 {
            row[..9].fill(2.0);
            older.observe(i, &row, true);
        }
        let resumed =
            RelativeDetector::new(&WINDOW_SPECS, WINDOW_SCORED, plan, Some(&older.to_bytes()));
        assert_eq!(resumed.state(), older.state());
        // Chunks of a stored state for other features are not taken for this
        // detector's: its own first chunk is written, not assumed.
        let mut stale = std::collections::HashMap::new();
        let mut w = RelativeDetector::new(&WINDOW_SPECS, WINDOW_SCORED, plan, None);
        for i in 0..45 {
            row[..9].fill(3.0);
            w.observe(i, &row, true);
        }
        apply(&mut stale, w.writes(key));
        let loaded = load_state(key, &stale[key].clone(), &mut |k| stale.get(k).cloned()).unwrap();
        assert_eq!(loaded.as_ref().map(|l| l.1), Some(2));
        let mut other = RelativeDetector::resume(&SCALAR_SPECS, 4, plan, loaded);
        assert!(other.state().is_none(), "other features");
        for i in 0..25 {
            other.observe(i, &[1.0, 1.0, 0.1, 0.0], true);
        }
        let writes = other.writes(key);
        assert!(writes
            .iter()
            .any(|(k, v)| k == &rows_key(key, 0) && v.is_some()));
    }

    #[test]
    fn a_learned_vibration_baseline_without_bearing_families_survives_a_restart() {
        // No bearing configured: the four families are NaN in every sample, so NaN in
        // the learned medians, which JSON writes as null.
        let plan = first(30);
        let mut d = RelativeDetector::new(&WINDOW_SPECS, WINDOW_SCORED, plan, None);
        let mut row = [f64::NAN; 13];
        for i in 0..30 {
            row[..9].fill(1.0 + (i % 5) as f64 * 0.1);
            d.observe(i, &row, true);
        }
        let b = d.baseline().expect("learned").clone();
        assert!(b.median[12].is_nan());
        let key = "baseline/v2/window/dev1.v";
        let mut store = std::collections::HashMap::new();
        apply(&mut store, d.to_save(key, 30, 0, true));
        let mut get = |k: &str| store.get(k).cloned();
        let loaded = load_state(key, &store[key].clone(), &mut get).unwrap();
        let e = RelativeDetector::resume(&WINDOW_SPECS, WINDOW_SCORED, plan, loaded);
        let again = e.baseline().expect("still learned after the restart");
        assert_eq!(again.median[..9], b.median[..9]);
        assert!(again.median[9..].iter().all(|m| m.is_nan()));
    }
}
