//! `[pipeline]` section of the gateway config: windowing, detection and alerting knobs.

use super::alerts::EpisodeRules;
use serde::{Deserialize, Serialize};

mod device;
mod timespan;

pub use device::{BearingSpec, DetectionOverrides, DeviceDetection, MachineSettings};
pub use timespan::TimeSpan;

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
    /// Replaced by `[pipeline.baseline]` (each channel now learns its baseline over a
    /// learning period); still accepted so an old config loads, and reported by
    /// `edgegw check`.
    #[serde(default)]
    pub warmup_windows: Option<u32>,
    /// Replaced by `baseline.threshold`; accepted and reported like `warmup_windows`.
    #[serde(default)]
    pub fallback_sigma: Option<f64>,
    /// Readings per rolling window of a scalar channel for a model bundle that counts
    /// readings and does not say how many (absolute bundles only).
    #[serde(default = "default_rolling_length")]
    pub rolling_length: usize,
    /// Length of a waveform window in seconds, for channels no absolute model bundle
    /// dictates: at 12 kHz "0.17 s" is 2048 samples, at 25.6 kHz 4352. Wins over
    /// `window_samples` when set.
    #[serde(default)]
    pub window: Option<TimeSpan>,
    /// The rolling window of scalar channels (temperature, pressure...), in time:
    /// their level, mean, spread and trend are computed over it, whatever the cadence.
    #[serde(default = "default_rolling_window")]
    pub rolling_window: TimeSpan,
    /// Commissioning: how each channel learns its own healthy baseline, and the
    /// threshold of scores relative to it.
    #[serde(default)]
    pub baseline: BaselineSettings,
}

/// `[pipeline.baseline]` (and the per-device `[devices.detection]` overrides).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaselineSettings {
    /// How long a channel learns its healthy state after it is first seen (or after
    /// `edgegw baseline reset`), in reading time: "24h" covers a day of load and
    /// temperature changes. "0" takes the first `samples` clean windows or readings
    /// instead (for short recordings).
    #[serde(default = "default_learn")]
    pub learn: TimeSpan,
    /// Windows or readings kept from the learning period, one per equal slot of it, so
    /// the whole period is represented, not its first minutes.
    #[serde(default = "default_learn_samples")]
    pub samples: u32,
    /// The period does not end before this many samples were taken.
    #[serde(default = "default_learn_min_samples")]
    pub min_samples: u32,
    /// Threshold of the built-in relative score (robust standard deviations from the
    /// baseline; relative model bundles carry their own). 4 is far outside what a
    /// learned feature does by chance.
    #[serde(default = "default_relative_threshold")]
    pub threshold: f64,
    /// Run the trend (CUSUM) detector on each channel's score, for slow onsets.
    #[serde(default = "yes")]
    pub trend: bool,
    /// A waveform channel whose acceleration RMS falls below this share of its
    /// baseline (and 4 robust standard deviations) raises a "machine or sensor state
    /// changed" event instead of a fault alert.
    #[serde(default = "default_drop_ratio")]
    pub drop_ratio: f64,
}

fn yes() -> bool {
    true
}
fn default_learn() -> TimeSpan {
    TimeSpan::from_secs(86_400.0)
}
fn default_learn_samples() -> u32 {
    200
}
fn default_learn_min_samples() -> u32 {
    20
}
fn default_relative_threshold() -> f64 {
    4.0
}
fn default_drop_ratio() -> f64 {
    0.5
}
fn default_rolling_window() -> TimeSpan {
    TimeSpan::from_secs(86_400.0)
}

impl Default for BaselineSettings {
    fn default() -> Self {
        BaselineSettings {
            learn: default_learn(),
            samples: default_learn_samples(),
            min_samples: default_learn_min_samples(),
            threshold: default_relative_threshold(),
            trend: true,
            drop_ratio: default_drop_ratio(),
        }
    }
}

impl BaselineSettings {
    /// Problems as `<prefix>.<field>: message`.
    pub fn problems(&self, prefix: &str) -> Vec<String> {
        let mut p = Vec::new();
        if !(self.learn.secs() >= 0.0 && self.learn.secs() <= 366.0 * 86_400.0) {
            p.push(format!("{prefix}.learn: must be 0 .. 366 days"));
        }
        if !(2..=100_000).contains(&self.samples) {
            p.push(format!(
                "{prefix}.samples: {} must be 2..=100000",
                self.samples
            ));
        }
        if self.min_samples < 2 || self.min_samples > self.samples {
            p.push(format!(
                "{prefix}.min_samples: {} must be 2..=samples ({})",
                self.min_samples, self.samples
            ));
        }
        if !(self.threshold.is_finite() && self.threshold > 0.0) {
            p.push(format!(
                "{prefix}.threshold: {} must be a positive number",
                self.threshold
            ));
        }
        if !(self.drop_ratio > 0.0 && self.drop_ratio < 1.0) {
            p.push(format!(
                "{prefix}.drop_ratio: {} must be between 0 and 1",
                self.drop_ratio
            ));
        }
        p
    }

    /// The learning plan these settings describe.
    pub fn plan(&self) -> super::baseline::LearnPlan {
        super::baseline::LearnPlan {
            duration_us: (self.learn.secs() * 1e6) as i64,
            samples: self.samples.max(2),
            min_samples: self.min_samples.clamp(2, self.samples.max(2)),
        }
    }
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
            warmup_windows: None,
            fallback_sigma: None,
            rolling_length: default_rolling_length(),
            window: None,
            rolling_window: default_rolling_window(),
            baseline: BaselineSettings::default(),
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
        if let Some(w) = self.window {
            check(
                w.secs() > 0.0 && w.secs() <= 60.0,
                "window",
                format!("{w} must be more than 0 and at most 60 s"),
            );
        }
        check(
            self.rolling_window.secs() >= 60.0 && self.rolling_window.secs() <= 90.0 * 86_400.0,
            "rolling_window",
            format!("{} must be 1 min .. 90 days", self.rolling_window),
        );
        check(
            (2..=100_000).contains(&self.rolling_length),
            "rolling_length",
            format!("{} must be 2..=100000", self.rolling_length),
        );
        problems.extend(self.baseline.problems("pipeline.baseline"));
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// Settings that are still accepted but no longer do anything, as
    /// `pipeline.<field>: what replaced it` (warnings for `edgegw check`).
    pub fn deprecations(&self) -> Vec<String> {
        let mut d = Vec::new();
        if self.warmup_windows.is_some() {
            d.push("pipeline.warmup_windows: ignored; each channel now learns its baseline over [pipeline.baseline] learn (a duration) with up to `samples` windows spread over it".to_string());
        }
        if self.fallback_sigma.is_some() {
            d.push("pipeline.fallback_sigma: ignored; the threshold of scores relative to a channel's baseline is [pipeline.baseline] threshold".to_string());
        }
        d
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
