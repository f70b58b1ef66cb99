//! The plot behind a waveform alert, for the status page: the window that triggered
//! it (min/max per pixel column), its amplitude spectrum and its envelope spectrum,
//! with the bearing defect frequencies of the machine marked (from the alert's
//! evidence, `bearing.defect_hz`).
//!
//! Captured by the processor thread when an alert opens or escalates (rare: the cost
//! of one FFT and one envelope analysis then, nothing otherwise), from the samples of
//! the batch that completed the window.

use crate::pipeline::features::FeatureExtractor;
use crate::pipeline::physical::PhysicalParams;
use crate::record::{AlertRecord, TimestampUs};
use realfft::RealFftPlanner;

/// Points per curve sent to the page (the page is ~1,000 px wide at most).
pub const POINTS: usize = 400;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Plot {
    /// Reading time of the window's last sample.
    pub ts_us: TimestampUs,
    pub sample_rate_hz: f64,
    pub samples: usize,
    pub unit: String,
    /// `(min, max)` of the samples in each of up to [`POINTS`] columns.
    pub waveform: Vec<(f32, f32)>,
    /// Amplitude spectrum (Hann window), the maximum of each column, and the width
    /// of one column in Hz.
    pub spectrum: Vec<f32>,
    pub spectrum_df: f64,
    /// Envelope spectrum (to 2 kHz), likewise.
    pub envelope: Vec<f32>,
    pub envelope_df: f64,
    /// Defect frequencies to mark, `(label, Hz)`: `BPFO`, `BPFI`, `2xBSF`, `FTF`.
    pub marks: Vec<(String, f64)>,
    /// A scalar channel's trend instead: `(bucket start µs, mean, min, max)` over its
    /// rolling window, and the baseline band of its level `(low, typical, high)` at
    /// the alert's threshold.
    #[serde(default)]
    pub trend: Vec<(TimestampUs, f32, f32, f32)>,
    #[serde(default)]
    pub band: Option<(f64, f64, f64)>,
}

/// What the processor knows of a scalar channel's recent course
/// (`Processor::scalar_trend`).
pub struct ScalarTrend {
    pub buckets: Vec<(TimestampUs, f64, f64, f64)>,
    /// The learned level: median and scale in the baseline's transformed space, and
    /// whether that space is logarithmic.
    pub band: Option<(f64, f64, bool)>,
}

/// The plot behind an alert on a scalar channel: its trend and baseline band.
pub fn capture_trend(alert: &AlertRecord, unit: &str, t: ScalarTrend) -> Option<Plot> {
    if t.buckets.is_empty() {
        return None;
    }
    let threshold = alert.evidence["threshold"].as_f64().unwrap_or(4.0);
    let band = t.band.map(|(m, s, log)| {
        let back = |x: f64| if log { x.exp() } else { x };
        (back(m - threshold * s), back(m), back(m + threshold * s))
    });
    Some(Plot {
        ts_us: alert.ts_us,
        sample_rate_hz: 0.0,
        samples: 0,
        unit: unit.to_string(),
        waveform: Vec::new(),
        spectrum: Vec::new(),
        spectrum_df: 0.0,
        envelope: Vec::new(),
        envelope_df: 0.0,
        marks: Vec::new(),
        trend: t
            .buckets
            .iter()
            .map(|(ts, mean, lo, hi)| (*ts, *mean as f32, *lo as f32, *hi as f32))
            .collect(),
        band,
    })
}

/// The plot of `window` (the alert's triggering samples) for `alert`. `None` for
/// fewer than 64 samples.
pub fn capture(
    alert: &AlertRecord,
    unit: &str,
    window: &[f32],
    sample_rate_hz: f64,
) -> Option<Plot> {
    if window.len() < 64 || !sample_rate_hz.is_finite() || sample_rate_hz <= 0.0 {
        return None;
    }
    let n = window.len();
    let waveform = columns(n, POINTS)
        .map(|r| {
            let s = &window[r];
            let lo = s.iter().copied().fold(f32::INFINITY, f32::min);
            let hi = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            (lo, hi)
        })
        .collect();

    // Amplitude spectrum of the centred, Hann-windowed samples.
    let mean = window.iter().map(|x| f64::from(*x)).sum::<f64>() / n as f64;
    let fft = RealFftPlanner::<f64>::new().plan_fft_forward(n);
    let mut input: Vec<f64> = window
        .iter()
        .enumerate()
        .map(|(i, x)| {
            let w = 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / n as f64).cos();
            (f64::from(*x) - mean) * w
        })
        .collect();
    let mut out = fft.make_output_vec();
    fft.process(&mut input, &mut out).ok()?;
    // Hann's coherent gain is 0.5: 4/n gives the amplitude of a sine on a bin.
    let amp: Vec<f64> = out.iter().map(|c| c.norm() * 4.0 / n as f64).collect();
    let (spectrum, spectrum_df) = pool(&amp, sample_rate_hz / n as f64);

    let mut extractor = FeatureExtractor::new(n);
    let params = PhysicalParams {
        sample_rate_hz,
        accel_to_ms2: None,
        envelope_band_hz: None,
    };
    extractor.compute_all(window, &params)?;
    let (env, env_df) = extractor.envelope_spectrum();
    let (envelope, envelope_df) = pool(env, env_df);

    let marks = alert.evidence["bearing"]["defect_hz"]
        .as_object()
        .map(|m| {
            [
                ("bpfo", "BPFO"),
                ("bpfi", "BPFI"),
                ("ball", "2xBSF"),
                ("ftf", "FTF"),
            ]
            .iter()
            .filter_map(|(k, label)| {
                let hz = m.get(*k)?.as_f64()?;
                (hz.is_finite() && hz > 0.0).then(|| (label.to_string(), hz))
            })
            .collect()
        })
        .unwrap_or_default();
    Some(Plot {
        ts_us: alert.ts_us,
        sample_rate_hz,
        samples: n,
        unit: unit.to_string(),
        waveform,
        spectrum,
        spectrum_df,
        envelope,
        envelope_df,
        marks,
        trend: Vec::new(),
        band: None,
    })
}

/// `n` items cut into at most `k` contiguous, non-empty ranges.
fn columns(n: usize, k: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    let k = k.min(n).max(1);
    (0..k).map(move |c| (c * n / k)..((c + 1) * n / k).max(c * n / k + 1))
}

/// A spectrum reduced to at most [`POINTS`] columns (the maximum of each, so a line
/// is never lost), and the column width in Hz.
fn pool(bins: &[f64], df: f64) -> (Vec<f32>, f64) {
    if bins.is_empty() {
        return (Vec::new(), df);
    }
    let per = bins.len().div_ceil(POINTS);
    let pooled = bins
        .chunks(per)
        .map(|c| c.iter().copied().fold(0.0f64, f64::max) as f32)
        .collect();
    (pooled, df * per as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{AlertState, SensorType};

    #[test]
    fn a_sine_shows_as_its_line_and_the_marks_come_from_the_evidence() {
        let fs = 12_000.0;
        let x: Vec<f32> = (0..2048)
            .map(|i| (2.0 * std::f64::consts::PI * 1_500.0 * i as f64 / fs).sin() as f32)
            .collect();
        let alert = AlertRecord {
            sensor_id: "fan.accel".into(),
            device: "fan".into(),
            channel: "accel".into(),
            sensor_type: SensorType::Vibration,
            anomaly_type: "vibration_anomaly".into(),
            severity: 4,
            confidence: 0.8,
            description: String::new(),
            evidence: serde_json::json!({"bearing": {"defect_hz": {"bpfi": 162.2, "bpfo": 107.4, "ball": 141.2, "ftf": 11.9}}}),
            recommended_actions: vec![],
            state: AlertState::Open,
            episode_us: 1,
            ts_us: 1,
        };
        let p = capture(&alert, "g", &x, fs).expect("plot");
        assert_eq!(p.waveform.len(), POINTS);
        assert!(p.waveform.iter().all(|(lo, hi)| lo <= hi && *hi <= 1.0));
        assert!(p.spectrum.len() <= POINTS);
        // The strongest column holds 1,500 Hz, with the sine's amplitude.
        let (i, peak) = p
            .spectrum
            .iter()
            .enumerate()
            .fold((0, 0.0f32), |b, (i, v)| if *v > b.1 { (i, *v) } else { b });
        let hz = (i as f64 + 0.5) * p.spectrum_df;
        assert!((hz - 1_500.0).abs() <= p.spectrum_df, "{hz} Hz");
        assert!((peak - 1.0).abs() < 0.1, "{peak}");
        assert_eq!(p.marks.len(), 4);
        assert_eq!(p.marks[1], ("BPFI".to_string(), 162.2));
        assert!(capture(&alert, "g", &x[..10], fs).is_none());
    }
}
