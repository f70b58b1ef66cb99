//! `[pipeline]` section of the gateway config: windowing, detection and alerting knobs.

use super::alerts::EpisodeRules;
use serde::{Deserialize, Serialize};

/// How readings become windows, scores, alerts and summaries. Every field has a
/// default, so an empty `[pipeline]` section (or none) is valid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSettings {
    /// Samples per waveform window when no model bundle dictates it (a bundle's own
    /// `window.length` wins for the channels it serves).
    #[serde(default = "default_window_samples")]
    pub window_samples: usize,
    /// Fraction of a window shared with the next one, 0..0.95 (0.5 = hop of half a
    /// window); like `window_samples`, a bundle's own value wins.
    #[serde(default = "default_window_overlap")]
    pub window_overlap: f64,
    /// Length of a summary bucket in seconds, 60..=86400; buckets are aligned to
    /// multiples of it in UTC reading time.
    #[serde(default = "default_summary_interval_secs")]
    pub summary_interval_secs: u32,
    /// An episode opens when at least this many of the last `debounce_m` windows (or
    /// readings) are anomalous: one odd window is not an alert.
    #[serde(default = "default_debounce_k")]
    pub debounce_k: u32,
    /// See `debounce_k`; at most 64.
    #[serde(default = "default_debounce_m")]
    pub debounce_m: u32,
    /// An episode closes only on scores below `threshold * hysteresis` (0 < h <= 1),
    /// so a score hovering at the threshold does not open and close it repeatedly.
    #[serde(default = "default_hysteresis")]
    pub hysteresis: f64,
    /// Consecutive windows below the hysteresis level needed to resolve an episode.
    #[serde(default = "default_clear_windows")]
    pub clear_windows: u32,
    /// No new episode on a channel within this many seconds after one closed (reading
    /// time), so a flapping machine does not page anyone every minute.
    #[serde(default = "default_cooldown_secs")]
    pub cooldown_secs: u64,
    /// An open episode sends fresher evidence at most this often (reading time).
    #[serde(default = "default_update_interval_secs")]
    pub update_interval_secs: u64,
    /// Clean windows (or readings) a channel's statistical fallback learns its baseline
    /// from before it scores anything.
    #[serde(default = "default_warmup_windows")]
    pub warmup_windows: u32,
    /// Standard deviations from the baseline above which the fallback calls a feature
    /// anomalous (its threshold).
    #[serde(default = "default_fallback_sigma")]
    pub fallback_sigma: f64,
    /// Readings per rolling window of a scalar channel when no bundle dictates it.
    #[serde(default = "default_rolling_length")]
    pub rolling_length: usize,
}

fn default_window_samples() -> usize {
    2048
}
fn default_window_overlap() -> f64 {
    0.5
}
fn default_summary_interval_secs() -> u32 {
    3600
}
fn default_debounce_k() -> u32 {
    3
}
fn default_debounce_m() -> u32 {
    5
}
fn default_hysteresis() -> f64 {
    0.8
}
fn default_clear_windows() -> u32 {
    5
}
fn default_cooldown_secs() -> u64 {
    600
}
fn default_update_interval_secs() -> u64 {
    300
}
fn default_warmup_windows() -> u32 {
    30
}
fn default_fallback_sigma() -> f64 {
    3.0
}
fn default_rolling_length() -> usize {
    12
}

impl Default for PipelineSettings {
    fn default() -> Self {
        PipelineSettings {
            window_samples: default_window_samples(),
            window_overlap: default_window_overlap(),
            summary_interval_secs: default_summary_interval_secs(),
            debounce_k: default_debounce_k(),
            debounce_m: default_debounce_m(),
            hysteresis: default_hysteresis(),
            clear_windows: default_clear_windows(),
            cooldown_secs: default_cooldown_secs(),
            update_interval_secs: default_update_interval_secs(),
            warmup_windows: default_warmup_windows(),
            fallback_sigma: default_fallback_sigma(),
            rolling_length: default_rolling_length(),
        }
    }
}

impl PipelineSettings {
    /// Every problem at once, each as `pipeline.<field>: <what is wrong and what is valid>`.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        let mut check = |ok: bool, field: &str, msg: String| {
            if !ok {
                problems.push(format!("pipeline.{field}: {msg}"));
            }
        };
        check(
            (16..=65536).contains(&self.window_samples),
            "window_samples",
            format!("{} must be 16..=65536", self.window_samples),
        );
        check(
            (0.0..=0.95).contains(&self.window_overlap),
            "window_overlap",
            format!("{} must be 0..=0.95", self.window_overlap),
        );
        check(
            (60..=86400).contains(&self.summary_interval_secs),
            "summary_interval_secs",
            format!("{} must be 60..=86400", self.summary_interval_secs),
        );
        check(
            (1..=64).contains(&self.debounce_m),
            "debounce_m",
            format!("{} must be 1..=64", self.debounce_m),
        );
        check(
            self.debounce_k >= 1 && self.debounce_k <= self.debounce_m,
            "debounce_k",
            format!(
                "{} must be 1..=debounce_m ({})",
                self.debounce_k, self.debounce_m
            ),
        );
        check(
            self.hysteresis > 0.0 && self.hysteresis <= 1.0,
            "hysteresis",
            format!("{} must be in (0, 1]", self.hysteresis),
        );
        check(
            self.clear_windows >= 1,
            "clear_windows",
            "must be at least 1".into(),
        );
        check(
            self.warmup_windows >= 2,
            "warmup_windows",
            format!("{} must be at least 2", self.warmup_windows),
        );
        check(
            self.fallback_sigma.is_finite() && self.fallback_sigma > 0.0,
            "fallback_sigma",
            format!("{} must be a positive number", self.fallback_sigma),
        );
        check(
            (2..=100_000).contains(&self.rolling_length),
            "rolling_length",
            format!("{} must be 2..=100000", self.rolling_length),
        );
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// The alert episode rules these settings describe.
    pub fn episode_rules(&self) -> EpisodeRules {
        EpisodeRules {
            debounce_k: self.debounce_k.max(1),
            debounce_m: self.debounce_m.clamp(1, 64),
            hysteresis: self.hysteresis,
            clear_windows: self.clear_windows.max(1),
            cooldown_us: (self.cooldown_secs as i64).saturating_mul(1_000_000),
            update_interval_us: (self.update_interval_secs as i64).saturating_mul(1_000_000),
        }
    }
}
