//! Waveform windows and their features.
//!
//! [`FeatureExtractor`] computes the vibration feature vector of one window exactly as
//! the training side does (`tools/feature_vectors.py`, `tools/train/features.py`; the
//! test compares to numpy within 1e-4 relative). All arithmetic is in f64. The FFT plan
//! and every buffer are made once per window length, so a window allocates nothing.
//!
//! [`Windower`] cuts one channel's stream of waveform blocks (any block size) into
//! overlapping windows. A window never spans a gap in the stream: when a block does not
//! continue the previous one in time, or the sample rate changes, the partial window is
//! dropped and windowing restarts.
//!
//! [`FeatureExtractor::compute_all`] adds the physical, rate-aware features of
//! [`super::physical`] from the same forward FFT (the physical module owns their
//! definitions and the envelope machinery; this one owns the window and its spectrum).
//!
//! This module knows nothing about models, alerts or records.

use super::physical::{
    physical_features, CentredStats, EnvelopeAnalyser, EnvelopeResolution, PhysicalFeatures,
    PhysicalParams,
};
use crate::TimestampUs;
use realfft::num_complex::Complex;
use realfft::{RealFftPlanner, RealToComplex};
use std::collections::VecDeque;
use std::sync::Arc;

/// Canonical order of the vibration window features.
pub const WINDOW_FEATURES: [&str; 11] = [
    "rms",
    "peak_to_peak",
    "kurtosis",
    "skewness",
    "std",
    "crest_factor",
    "dominant_freq",
    "dominant_freq_amplitude",
    "spectral_centroid",
    "high_freq_energy",
    "mean",
];

/// Canonical order of the scalar rolling features.
pub const ROLLING_FEATURES: [&str; 9] = [
    "value", "mean", "std", "min", "max", "slope", "delta_1", "delta_n", "zscore",
];

/// `high_freq_energy` is the share of spectral energy above this frequency.
pub const HIGH_FREQ_CUTOFF_HZ: f64 = 1000.0;

/// The features of one window, in [`WINDOW_FEATURES`] order.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct WindowFeatures(pub [f64; 11]);

impl WindowFeatures {
    /// The value of a feature by name.
    pub fn get(&self, name: &str) -> Option<f64> {
        WINDOW_FEATURES
            .iter()
            .position(|n| *n == name)
            .map(|i| self.0[i])
    }

    pub fn rms(&self) -> f64 {
        self.0[0]
    }

    /// (name, value) pairs in canonical order, as a window record carries them.
    pub fn named(&self) -> Vec<(String, f64)> {
        WINDOW_FEATURES
            .iter()
            .zip(self.0.iter())
            .map(|(n, v)| (n.to_string(), *v))
            .collect()
    }
}

/// Computes window features for one window length, reusing its FFT plan and buffers.
pub struct FeatureExtractor {
    len: usize,
    fft: Arc<dyn RealToComplex<f64>>,
    /// Centred samples; the FFT overwrites it.
    centred: Vec<f64>,
    spectrum: Vec<Complex<f64>>,
    scratch: Vec<Complex<f64>>,
    /// Envelope plans and buffers for [`FeatureExtractor::compute_all`], made on its
    /// first call (an extractor used only for `compute` never pays for them).
    envelope: EnvelopeAnalyser,
}

impl std::fmt::Debug for FeatureExtractor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeatureExtractor")
            .field("len", &self.len)
            .finish()
    }
}

impl FeatureExtractor {
    /// An extractor for windows of `len` samples (`len >= 2`; smaller is raised to 2).
    pub fn new(len: usize) -> FeatureExtractor {
        let len = len.max(2);
        let fft = RealFftPlanner::<f64>::new().plan_fft_forward(len);
        FeatureExtractor {
            len,
            centred: fft.make_input_vec(),
            spectrum: fft.make_output_vec(),
            scratch: fft.make_scratch_vec(),
            fft,
            envelope: EnvelopeAnalyser::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// Features of `x` sampled at `sample_rate_hz`. Returns `None` when `x` does not
    /// have the extractor's length.
    pub fn compute(&mut self, x: &[f32], sample_rate_hz: f64) -> Option<WindowFeatures> {
        self.analyse(x, sample_rate_hz)
            .map(|(features, _)| features)
    }

    /// The canonical features (exactly what `compute` returns) and the physical features, from one FFT.
    ///
    /// Returns `None` when `x` does not have the extractor's length, like `compute`.
    /// The envelope spectrum of the window is then available from
    /// [`FeatureExtractor::envelope_spectrum`] until the next call.
    pub fn compute_all(
        &mut self,
        x: &[f32],
        params: &PhysicalParams,
    ) -> Option<(WindowFeatures, PhysicalFeatures)> {
        let (features, peak) = self.analyse(x, params.sample_rate_hz)?;
        let stats = CentredStats {
            rms: features.0[4],
            kurtosis: features.0[2],
            peak,
        };
        let physical =
            physical_features(stats, &self.spectrum, self.len, params, &mut self.envelope);
        Some((features, physical))
    }

    /// Envelope spectrum of the last `compute_all`: amplitudes of bins 0.. and their spacing in Hz.
    ///
    /// Bin j is at j × spacing (spacing = fs/L, the window's resolution), kept up to
    /// 2 kHz and the envelope's Nyquist. Empty before the first `compute_all`, and when
    /// no FFT bin falls in the envelope band.
    pub fn envelope_spectrum(&self) -> (&[f64], f64) {
        self.envelope.spectrum()
    }

    /// How finely `compute_all` samples the envelope ([`EnvelopeResolution::Full`]
    /// unless changed): a trade of envelope accuracy for time, see the variants.
    pub fn set_envelope_resolution(&mut self, resolution: EnvelopeResolution) {
        self.envelope.set_resolution(resolution);
    }

    pub fn envelope_resolution(&self) -> EnvelopeResolution {
        self.envelope.resolution()
    }

    /// How many envelope FFT lengths have cached plans (tests of the no-allocation rule).
    #[cfg(test)]
    pub(crate) fn envelope_plans(&self) -> usize {
        self.envelope.cached_plans()
    }

    /// The canonical features and max |x − mean| (the physical features' peak). After
    /// it, `self.spectrum` holds the rfft of the centred window (zeros if the FFT
    /// failed, so nothing downstream reads a previous window's spectrum).
    fn analyse(&mut self, x: &[f32], sample_rate_hz: f64) -> Option<(WindowFeatures, f64)> {
        if x.len() != self.len {
            return None;
        }
        let n = self.len as f64;
        let (mut sum, mut sum_sq) = (0.0f64, 0.0f64);
        let (mut min, mut max, mut max_abs) = (f64::INFINITY, f64::NEG_INFINITY, 0.0f64);
        for &v in x {
            let v = f64::from(v);
            sum += v;
            sum_sq += v * v;
            min = min.min(v);
            max = max.max(v);
            max_abs = max_abs.max(v.abs());
        }
        let mean = sum / n;
        let (mut m2, mut m3, mut m4) = (0.0f64, 0.0f64, 0.0f64);
        for (c, &v) in self.centred.iter_mut().zip(x) {
            let d = f64::from(v) - mean;
            *c = d;
            let d2 = d * d;
            m2 += d2;
            m3 += d2 * d;
            m4 += d2 * d2;
        }
        m2 /= n;
        m3 /= n;
        m4 /= n;
        let rms = (sum_sq / n).sqrt();
        let (kurtosis, skewness) = if m2 > 0.0 {
            (m4 / (m2 * m2), m3 / (m2 * m2.sqrt()))
        } else {
            (0.0, 0.0)
        };
        let crest = if rms > 0.0 { max_abs / rms } else { 0.0 };

        // The FFT cannot fail with buffers made by its own plan; if it ever did, the
        // spectral features would be wrong, so report them as zero rather than stale.
        let fft_ok = self
            .fft
            .process_with_scratch(&mut self.centred, &mut self.spectrum, &mut self.scratch)
            .is_ok();
        if !fft_ok {
            self.spectrum.fill(Complex::new(0.0, 0.0));
        }
        let scale = 2.0 / n;
        let df = sample_rate_hz / n;
        let (mut best_k, mut best_a) = (1usize, f64::NEG_INFINITY);
        let (mut sum_a, mut sum_fa, mut sum_e, mut sum_e_high) = (0.0f64, 0.0, 0.0, 0.0);
        if fft_ok {
            for k in 1..=self.len / 2 {
                // |X| as sqrt(re² + im²): `norm()` is hypot, several times slower,
                // and the extra range safety is not needed for sensor amplitudes.
                let c = self.spectrum[k];
                let a = (c.re * c.re + c.im * c.im).sqrt() * scale;
                let f = k as f64 * df;
                if a > best_a {
                    best_a = a;
                    best_k = k;
                }
                sum_a += a;
                sum_fa += f * a;
                let e = a * a;
                sum_e += e;
                if f > HIGH_FREQ_CUTOFF_HZ {
                    sum_e_high += e;
                }
            }
        }
        let (dominant_freq, dominant_amp) = if fft_ok {
            (best_k as f64 * df, best_a)
        } else {
            (0.0, 0.0)
        };
        let centroid = if sum_a > 0.0 { sum_fa / sum_a } else { 0.0 };
        let hfe = if sum_e > 0.0 { sum_e_high / sum_e } else { 0.0 };
        // max |x − mean| in f64: rounding is monotonic, so it is max|c_i| exactly.
        let centred_peak = (max - mean).max(mean - min);
        let features = WindowFeatures([
            rms,
            max - min,
            kurtosis,
            skewness,
            m2.sqrt(),
            crest,
            dominant_freq,
            dominant_amp,
            centroid,
            hfe,
            mean,
        ]);
        Some((features, centred_peak))
    }
}

/// A full window handed out by [`Windower::push`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowMeta {
    /// Time of the window's last sample.
    pub ts_us: TimestampUs,
    pub sample_rate_hz: f64,
    /// Lowest quality of the blocks whose samples are in the window.
    pub quality: f32,
}

/// Cuts one channel's waveform blocks into windows of `len` samples every `hop`.
#[derive(Debug)]
pub struct Windower {
    len: usize,
    hop: usize,
    /// Samples not yet consumed by a full window (at most `len`).
    buf: Vec<f32>,
    sample_rate_hz: f64,
    /// Expected time of the next sample, for gap detection.
    next_ts_us: Option<f64>,
    /// (absolute index one past the block's last sample, block quality), oldest first.
    segments: VecDeque<(u64, f32)>,
    /// Absolute index of `buf[0]`.
    buf_start: u64,
    /// Windows dropped because the stream had a gap or changed rate.
    pub restarts: u64,
}

/// What a [`Windower`] holds between windows: saved with the batch whose samples
/// it holds (`Processor::take_state`), so that a waveform message acknowledged to
/// its source is durable even while its samples wait for the next window.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WindowerState {
    len: usize,
    hop: usize,
    sample_rate_hz: f64,
    next_ts_us: Option<f64>,
    buf_start: u64,
    buf: Vec<f32>,
    segments: Vec<(u64, f32)>,
}

impl Windower {
    /// The samples not yet in a full window, and where the stream stands.
    pub fn state(&self) -> WindowerState {
        WindowerState {
            len: self.len,
            hop: self.hop,
            sample_rate_hz: self.sample_rate_hz,
            next_ts_us: self.next_ts_us,
            buf_start: self.buf_start,
            buf: self.buf.clone(),
            segments: self.segments.iter().copied().collect(),
        }
    }

    /// A windower that continues from a saved state; `None` when the state does not
    /// hold together (then the channel starts with an empty window).
    pub fn from_state(s: WindowerState) -> Option<Windower> {
        let sane = s.len >= 2 && (1..=s.len).contains(&s.hop) && s.buf.len() < s.len;
        sane.then(|| Windower {
            len: s.len,
            hop: s.hop,
            buf: s.buf,
            sample_rate_hz: s.sample_rate_hz,
            next_ts_us: s.next_ts_us,
            segments: s.segments.into(),
            buf_start: s.buf_start,
            restarts: 0,
        })
    }

    /// Windows of `len` samples, consecutive windows sharing `overlap` (0..0.95) of them.
    pub fn new(len: usize, overlap: f64) -> Windower {
        let len = len.max(2);
        Windower {
            len,
            hop: Windower::hop_for(len, overlap),
            buf: Vec::with_capacity(len),
            sample_rate_hz: 0.0,
            next_ts_us: None,
            segments: VecDeque::new(),
            buf_start: 0,
            restarts: 0,
        }
    }

    /// The hop (samples between window starts) for `len` and `overlap`.
    pub fn hop_for(len: usize, overlap: f64) -> usize {
        let len = len.max(2);
        let overlap = if overlap.is_finite() {
            overlap.clamp(0.0, 0.95)
        } else {
            0.0
        };
        let hop = ((len as f64) * (1.0 - overlap)).round().max(1.0) as usize;
        hop.min(len)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn hop(&self) -> usize {
        self.hop
    }

    fn reset(&mut self) {
        if !self.buf.is_empty() {
            self.restarts += 1;
        }
        self.buf_start += self.buf.len() as u64;
        self.buf.clear();
        self.segments.clear();
    }

    /// Feeds one block (`ts_us` = time of its last sample) and calls `on_window` with
    /// each window it completes, in order.
    pub fn push(
        &mut self,
        samples: &[f32],
        sample_rate_hz: f64,
        ts_us: TimestampUs,
        quality: f32,
        mut on_window: impl FnMut(&[f32], WindowMeta),
    ) {
        if samples.is_empty() || !(sample_rate_hz.is_finite() && sample_rate_hz > 0.0) {
            return;
        }
        let period_us = 1e6 / sample_rate_hz;
        let first_ts = ts_us as f64 - (samples.len() - 1) as f64 * period_us;
        // A block continues the stream when its first sample is where the previous
        // block said the next one would be, within half a block (sources stamp blocks
        // on arrival, with jitter) and at least two sample periods.
        let continues = self.sample_rate_hz == sample_rate_hz
            && self.next_ts_us.is_some_and(|expected| {
                let tolerance = (0.5 * samples.len() as f64 * period_us).max(2.0 * period_us);
                (first_ts - expected).abs() <= tolerance
            });
        if !continues {
            self.reset();
            self.sample_rate_hz = sample_rate_hz;
        }
        self.next_ts_us = Some(ts_us as f64 + period_us);

        let block_start = self.buf_start + self.buf.len() as u64;
        self.segments
            .push_back((block_start + samples.len() as u64, quality));
        let mut rest = samples;
        while !rest.is_empty() {
            let take = (self.len - self.buf.len()).min(rest.len());
            self.buf.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.buf.len() == self.len {
                // Segments ending before the buffer were pruned; the rest overlap it.
                let q = self.segments.iter().map(|(_, q)| *q).fold(1.0f32, f32::min);
                // The window's last sample is `rest.len()` samples before the block's.
                let last_ts = ts_us as f64 - rest.len() as f64 * period_us;
                on_window(
                    &self.buf,
                    WindowMeta {
                        ts_us: last_ts.round() as TimestampUs,
                        sample_rate_hz,
                        quality: q,
                    },
                );
                self.buf.copy_within(self.hop.., 0);
                self.buf.truncate(self.len - self.hop);
                self.buf_start += self.hop as u64;
                while self
                    .segments
                    .front()
                    .is_some_and(|(seg_end, _)| *seg_end <= self.buf_start)
                {
                    self.segments.pop_front();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rolling::RollingWindow;

    /// Relative 1e-4, or absolute 1e-6 near zero (skewness of a sine, mean of noise).
    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-4 * b.abs().max(a.abs()) || (a - b).abs() <= 1e-6
    }

    fn vectors() -> serde_json::Value {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/data/feature_vectors.json"
        );
        let text = std::fs::read_to_string(path).expect("tests/data/feature_vectors.json");
        serde_json::from_str(&text).expect("valid JSON")
    }

    #[test]
    fn window_features_match_numpy() {
        let v = vectors();
        let windows = v["windows"].as_array().expect("windows");
        assert!(windows.len() >= 4, "expected several reference windows");
        for w in windows {
            let name = w["name"].as_str().unwrap_or("?");
            let fs = w["sample_rate_hz"].as_f64().expect("rate");
            let x: Vec<f32> = w["samples"]
                .as_array()
                .expect("samples")
                .iter()
                .map(|s| s.as_f64().expect("number") as f32)
                .collect();
            let mut ex = FeatureExtractor::new(x.len());
            let got = ex.compute(&x, fs).expect("length matches");
            for (i, fname) in WINDOW_FEATURES.iter().enumerate() {
                let want = w["features"][fname].as_f64().expect("feature");
                assert!(
                    close(got.0[i], want),
                    "{name}: {fname} = {} but numpy says {want}",
                    got.0[i]
                );
            }
            // The extractor is reused: a second run gives the same numbers.
            assert_eq!(ex.compute(&x, fs), Some(got), "{name}: not repeatable");
        }
    }

    #[test]
    fn rolling_features_match_numpy() {
        let v = vectors();
        for case in v["rolling"].as_array().expect("rolling") {
            let name = case["name"].as_str().unwrap_or("?");
            let values: Vec<f64> = case["values"]
                .as_array()
                .expect("values")
                .iter()
                .map(|x| x.as_f64().expect("number"))
                .collect();
            let mut rw = RollingWindow::new(values.len());
            let mut got = None;
            for &x in &values {
                got = rw.push(x);
            }
            let got = got.expect("window full after N readings");
            for (i, fname) in ROLLING_FEATURES.iter().enumerate() {
                let want = case["features"][fname].as_f64().expect("feature");
                assert!(
                    close(got.0[i], want),
                    "{name}: {fname} = {} but numpy says {want}",
                    got.0[i]
                );
            }
        }
    }

    #[test]
    fn wrong_length_is_refused() {
        let mut ex = FeatureExtractor::new(64);
        assert_eq!(ex.compute(&[0.0; 32], 1000.0), None);
        // A flat window has no spread: defined zeros, no NaN.
        let flat = ex.compute(&[1.0; 64], 1000.0).expect("length ok");
        assert!(flat.0.iter().all(|v| v.is_finite()));
        assert_eq!(flat.get("kurtosis"), Some(0.0));
        assert_eq!(flat.get("rms"), Some(1.0));
    }

    fn block(n: usize, start: usize) -> Vec<f32> {
        (start..start + n).map(|i| i as f32).collect()
    }

    #[test]
    fn windower_cuts_any_block_size_with_overlap() {
        // 100 Hz, window 8, hop 4: blocks of 3 samples; sample i is at time i * 10 ms.
        let mut w = Windower::new(8, 0.5);
        assert_eq!(w.hop(), 4);
        let mut got: Vec<(Vec<f32>, WindowMeta)> = Vec::new();
        for b in 0..7 {
            let samples = block(3, b * 3);
            let last_ts = ((b * 3 + 2) * 10_000) as i64;
            w.push(&samples, 100.0, last_ts, 1.0, |x, m| {
                got.push((x.to_vec(), m))
            });
        }
        // 21 samples: windows start at 0, 4, 8, 12.
        let starts: Vec<f32> = got.iter().map(|(x, _)| x[0]).collect();
        assert_eq!(starts, vec![0.0, 4.0, 8.0, 12.0]);
        for (x, m) in &got {
            assert_eq!(x.len(), 8);
            let last = x[7] as i64;
            assert_eq!(
                m.ts_us,
                last * 10_000,
                "window ts is its last sample's time"
            );
            assert_eq!(x.windows(2).filter(|p| p[1] != p[0] + 1.0).count(), 0);
        }
    }

    #[test]
    fn windower_restarts_on_a_gap_and_tracks_quality() {
        let mut w = Windower::new(4, 0.0);
        let mut got: Vec<(Vec<f32>, WindowMeta)> = Vec::new();
        w.push(&block(3, 0), 100.0, 20_000, 1.0, |x, m| {
            got.push((x.to_vec(), m))
        });
        // Next block one second later: not continuous, the 3 buffered samples go.
        w.push(&block(4, 100), 100.0, 1_030_000, 0.5, |x, m| {
            got.push((x.to_vec(), m))
        });
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, block(4, 100));
        assert_eq!(got[0].1.quality, 0.5);
        assert_eq!(w.restarts, 1);
        // A continuous clean block after it: quality back to 1 for the next window.
        w.push(&block(4, 104), 100.0, 1_070_000, 1.0, |x, m| {
            got.push((x.to_vec(), m))
        });
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].1.quality, 1.0);
    }
}
