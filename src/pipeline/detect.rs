//! Scoring a feature vector with a model bundle, and the small persistent state store
//! the pipeline keeps its baselines and summary buckets in.
//!
//! Absolute bundles score the channel's absolute features; relative bundles score the
//! z values of [`super::relative`] (the processor builds either input). When no bundle
//! fits, the processor uses the built-in relative rule ([`BUILTIN_RULE`],
//! [`super::baseline::top2_score`]).
//!
//! This module runs no timers and emits no records.

use crate::id::Id;
use crate::inference::ModelBundle;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

/// Small persistent key-value state for the pipeline (baselines, summary buckets).
/// The outbox implements it with a SQLite table; [`MemoryStateStore`] is for tests.
pub trait StateStore: Send {
    fn get(&mut self, key: &str) -> anyhow::Result<Option<Vec<u8>>>;
    fn put(&mut self, key: &str, value: &[u8]) -> anyhow::Result<()>;
    /// Removes `key` (nothing happens when it is not there).
    fn delete(&mut self, key: &str) -> anyhow::Result<()>;
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

    fn delete(&mut self, key: &str) -> anyhow::Result<()> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(key);
        Ok(())
    }
}

/// The outcome of scoring one window or reading.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    pub score: f64,
    pub threshold: f64,
    /// `name@version` of the model, or [`BUILTIN_RULE`].
    pub detector: Id,
    /// 0..1: `clamp(1 - threshold/score, 0, 1)` above the threshold.
    pub confidence: f64,
}

impl Detection {
    pub fn is_anomalous(&self) -> bool {
        self.score > self.threshold
    }
}

/// The detector name of the built-in relative rule (used when no relative bundle
/// serves a channel).
pub const BUILTIN_RULE: &str = "baseline-rule";

/// [`BUILTIN_RULE`] as the [`Id`] records carry (shared, not a copy per reading).
pub static BUILTIN_RULE_ID: LazyLock<Id> = LazyLock::new(|| Id::from(BUILTIN_RULE));

/// The detector of a reading that was not scored (out of range, zero quality, no
/// detector for its channel).
pub static NOT_SCORED: LazyLock<Id> = LazyLock::new(|| Id::from("not-scored"));

/// The detector of a reading or window of a channel still learning its baseline:
/// `commissioning N %`, N the learning progress (`0..=1`) rounded to a whole percent.
/// The 101 names are made once and shared.
pub fn commissioning(progress: f64) -> Id {
    static NAMES: LazyLock<Vec<Id>> = LazyLock::new(|| {
        (0..=100)
            .map(|n| Id::from(format!("commissioning {n} %")))
            .collect()
    });
    let n = if progress.is_nan() {
        0
    } else {
        (100.0 * progress).round().clamp(0.0, 100.0) as usize
    };
    NAMES[n].clone()
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
        detector: bundle.detector().clone(),
        confidence: bundle.confidence(score),
    })
}
