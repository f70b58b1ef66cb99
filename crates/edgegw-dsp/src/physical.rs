//! Physical, rate-aware vibration features of one window.
//!
//! The canonical window features ([`super::features`]) are what the models were trained
//! on; their spectral parts are in FFT bins, so they mean something else at another
//! sample rate. The features here are in physical units and fixed Hz bands, computed for
//! the channel's real rate, so one detection rule works for a 5 kHz and a 25.6 kHz
//! sensor alike: acceleration RMS, kurtosis and crest factor, velocity RMS (10 Hz ..
//! 1 kHz, in mm/s when the unit is an acceleration unit, as ISO 10816/20816 use it),
//! band RMS in 0–1 kHz, 1–4 kHz and 4 kHz–0.45 fs, and the envelope (demodulated)
//! signal of a high band, whose spectrum shows bearing defect rates.
//!
//! This module owns the definitions (the reference is `tools/physical_vectors.py`; the
//! test compares to it) and the envelope machinery. It computes from the spectrum that
//! [`super::features::FeatureExtractor::compute_all`] already has, so a window costs one
//! forward FFT for both feature sets. The envelope is computed by moving the band's
//! bins to the start of an M-point inverse FFT ([`EnvelopeResolution`] says which M and
//! why the default samples it at the window's own rate, matching the reference
//! exactly).
//!
//! It must not allocate per window in steady state (plans and buffers are cached per
//! envelope FFT length), and it knows nothing about models, baselines, alerts or
//! records: it turns a window into numbers.

use realfft::num_complex::Complex;
use realfft::{RealFftPlanner, RealToComplex};
use rustfft::{Fft, FftPlanner};
use std::f64::consts::PI;
use std::sync::Arc;

/// The physical health features, in [`PhysicalFeatures::health`] order.
pub const HEALTH_FEATURES: [&str; 9] = [
    "accel_rms",
    "kurtosis",
    "crest_factor",
    "velocity_rms",
    "band_0_1k",
    "band_1_4k",
    "band_4k_up",
    "envelope_rms",
    "envelope_modulation",
];

/// Standard gravity, m/s² per g.
const STANDARD_GRAVITY: f64 = 9.80665;

/// Bands stop at this fraction of the sample rate: above it a sensor's anti-alias
/// filter rolls off, so energy there says more about the filter than the machine.
const USABLE_FRACTION_OF_RATE: f64 = 0.45;

/// Velocity is integrated over 10 Hz ..= 1 kHz (ISO 10816/20816 broadband velocity):
/// below 10 Hz 1/f blows up window leakage and sensor drift.
const VELOCITY_BAND_HZ: (f64, f64) = (10.0, 1000.0);

/// The envelope spectrum is kept up to this frequency (or the envelope's Nyquist):
/// bearing defect rates and their first harmonics live well below it.
pub const ENVELOPE_SPECTRUM_MAX_HZ: f64 = 2000.0;

/// At most this many envelope FFT lengths keep their plans and buffers: one per band
/// size in use (usually one per channel rate), bounded so that a channel whose rate
/// keeps changing cannot grow the cache.
const ENVELOPE_PLAN_CACHE: usize = 4;

/// m/s² per unit of an acceleration channel's `unit` (trimmed, any case), or `None`
/// when the unit is not an acceleration unit this module knows.
pub fn accel_unit_to_ms2(unit: &str) -> Option<f64> {
    match unit.trim().to_lowercase().as_str() {
        "g" => Some(STANDARD_GRAVITY),
        "m/s²" | "m/s2" | "m/s^2" => Some(1.0),
        "mm/s²" | "mm/s2" => Some(0.001),
        _ => None,
    }
}

/// What the physical features need to know about the channel besides its samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PhysicalParams {
    /// The channel's real sample rate: every band is in Hz, so this sets which bins
    /// they cover (and which bands exist at all).
    pub sample_rate_hz: f64,
    /// m/s² per sample unit ([`accel_unit_to_ms2`]). `None` for an unknown unit: the
    /// velocity is then computed with a factor of 1 (fine for relative use) and not
    /// reported in mm/s.
    pub accel_to_ms2: Option<f64>,
    /// The envelope (demodulation) band, when the hardware profile knows the
    /// structural resonance the bearing impacts excite; `None` for the default.
    pub envelope_band_hz: Option<(f64, f64)>,
}

impl PhysicalParams {
    /// The envelope band actually used (the default rule above, or the caller's, clamped).
    ///
    /// The default is 1 kHz .. 0.45 fs: above the shaft harmonics, below the
    /// anti-alias roll-off. When 0.45 fs is below 2 kHz that band would be too narrow
    /// (or empty), so its upper half is used instead. A caller's band is clamped to
    /// 0 < lo < hi <= fs/2 (lo is raised just above 0, so the DC bin never enters);
    /// one that is not finite or empty after clamping falls back to the default.
    pub fn envelope_band(&self) -> (f64, f64) {
        let fs = self.sample_rate_hz;
        let top = USABLE_FRACTION_OF_RATE * fs;
        let default = (if top >= 2000.0 { 1000.0 } else { top / 2.0 }, top);
        let Some((lo, hi)) = self.envelope_band_hz else {
            return default;
        };
        if !(lo.is_finite() && hi.is_finite()) {
            return default;
        }
        let hi = hi.min(fs / 2.0);
        let lo = lo.max(f64::MIN_POSITIVE);
        if lo < hi {
            (lo, hi)
        } else {
            default
        }
    }
}

/// The physical features of one window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PhysicalFeatures {
    /// In HEALTH_FEATURES order; NaN where a band does not exist at this rate.
    pub health: [f64; 9],
    /// Largest |x − mean|, in the channel's unit: the crest factor's numerator, kept
    /// because a shock shows here before it moves any RMS.
    pub accel_peak: f64,
    /// velocity_rms in mm/s when the unit is an acceleration unit.
    pub velocity_mm_s: Option<f64>,
}

impl PhysicalFeatures {
    /// A health feature or `accel_peak` by name; `None` for an unknown name and for a
    /// band that does not exist at this rate (NaN), so a NaN never reaches a baseline.
    pub fn get(&self, name: &str) -> Option<f64> {
        let value = if name == "accel_peak" {
            self.accel_peak
        } else {
            let i = HEALTH_FEATURES.iter().position(|n| *n == name)?;
            self.health[i]
        };
        (!value.is_nan()).then_some(value)
    }

    /// (name, value) of the health features then `accel_peak`, skipping NaN (bands that
    /// do not exist at this rate), as a window record carries them.
    pub fn named(&self) -> Vec<(String, f64)> {
        HEALTH_FEATURES
            .iter()
            .zip(self.health.iter())
            .map(|(n, v)| (n.to_string(), *v))
            .chain(std::iter::once(("accel_peak".to_string(), self.accel_peak)))
            .filter(|(_, v)| !v.is_nan())
            .collect()
    }
}

/// The time-domain statistics of the centred window, which the canonical features
/// already computed (in f64, from the same samples).
#[derive(Debug, Clone, Copy)]
pub(crate) struct CentredStats {
    /// sqrt(mean(c²)), c = x − mean.
    pub rms: f64,
    /// m4 / m2², 0 for a flat window.
    pub kurtosis: f64,
    /// max |c|.
    pub peak: f64,
}

/// Number of leading bins k in 0..n whose frequency `k · df` satisfies `below`, which
/// must hold for a prefix of the bins (frequencies increase with k). Comparing the
/// same `k · df` products numpy compares keeps band edges on the same bins, which
/// matters when an edge falls exactly on a bin (10 Hz bins at 25.6 kHz / 2560).
fn bins_below(n: usize, df: f64, below: impl Fn(f64) -> bool) -> usize {
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if below(mid as f64 * df) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// Σ |X_k|² over `range` (empty when the range is).
fn power(spectrum: &[Complex<f64>], range: std::ops::Range<usize>) -> f64 {
    spectrum
        .get(range)
        .unwrap_or(&[])
        .iter()
        .map(|c| c.re * c.re + c.im * c.im)
        .sum()
}

/// Plans and buffers of the envelope for one envelope FFT length `len` (M).
struct EnvelopePlan {
    len: usize,
    inverse: Arc<dyn Fft<f64>>,
    forward: Arc<dyn RealToComplex<f64>>,
    /// The shifted analytic band spectrum, then (in place) the complex band signal.
    analytic: Vec<Complex<f64>>,
    inverse_scratch: Vec<Complex<f64>>,
    /// The centred envelope; the forward FFT overwrites it.
    envelope: Vec<f64>,
    spectrum: Vec<Complex<f64>>,
    forward_scratch: Vec<Complex<f64>>,
}

impl EnvelopePlan {
    fn new(len: usize) -> EnvelopePlan {
        let inverse = FftPlanner::<f64>::new().plan_fft_inverse(len);
        let forward = RealFftPlanner::<f64>::new().plan_fft_forward(len);
        EnvelopePlan {
            len,
            analytic: vec![Complex::new(0.0, 0.0); len],
            inverse_scratch: vec![Complex::new(0.0, 0.0); inverse.get_inplace_scratch_len()],
            envelope: forward.make_input_vec(),
            spectrum: forward.make_output_vec(),
            forward_scratch: forward.make_scratch_vec(),
            inverse,
            forward,
        }
    }
}

/// How finely the envelope is sampled: the envelope FFT length M, see
/// [`envelope_fft_len`] for why any M >= the band's bin count gives exact envelope
/// values and what a smaller M changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EnvelopeResolution {
    /// Envelope sampled at the window's own rate (M = L): the same numbers as the
    /// full-length definition (`tools/physical_vectors.py`). The default: it meets the
    /// time budget (2048 samples at 12 kHz: 32.6 µs for all features, goal 60 µs).
    #[default]
    Full,
    /// Envelope sampled at the smallest power of two M >= the band's bin count (at
    /// most L): 24.2 µs instead of 32.6 µs for the same window, but the envelope
    /// features and spectrum alias more (envelope_rms up to ~3e-3 relative off the
    /// definition; spectrum bins up to ~2 % of the largest bin for the default band,
    /// ~25 % for a narrow band where M = B). For trend use only.
    Decimated,
}

/// The envelope FFT length M for a band of `band_bins` bins in a window of `len`.
///
/// Why the shift is exact: the analytic band signal is z_n = (1/L) Σ_k Z_k e^{2πi kn/L}
/// over the band bins k0 .. k0+B. Moving the band to bins 0 .. B multiplies z by
/// e^{−2πi k0 n/L}, a phase of modulus one, so |z| (the envelope) is unchanged. The
/// shifted spectrum has only B non-zero bins, so an M-point inverse FFT (M >= B, still
/// divided by L) evaluates the same trigonometric polynomial at M equally spaced
/// instants of the window: the envelope sampled at fs·M/L. With M = L those are the
/// window's own sample instants and every number equals the full-length definition.
///
/// With M < L the envelope values are exact, but at fewer instants, and the envelope
/// |z| is not band-limited (it dips sharply wherever z passes near zero, and even
/// |z|² spans B bins, more than the M/2 below the envelope's Nyquist when M < 2B), so
/// its mean, its std and its spectrum alias more than at M = L. Only an envelope that
/// is itself band-limited (a clean AM tone) comes out the same; on real windows the
/// difference is what [`EnvelopeResolution::Decimated`] documents, which is why
/// [`EnvelopeResolution::Full`] is the default.
fn envelope_fft_len(band_bins: usize, len: usize, resolution: EnvelopeResolution) -> usize {
    match resolution {
        EnvelopeResolution::Full => len,
        EnvelopeResolution::Decimated => {
            let m = band_bins.max(2).next_power_of_two();
            if m >= len {
                len
            } else {
                m
            }
        }
    }
}

/// The envelope machinery of one extractor: inverse-FFT plans cached by size, and the
/// envelope spectrum of the last window.
pub(crate) struct EnvelopeAnalyser {
    plans: Vec<EnvelopePlan>,
    resolution: EnvelopeResolution,
    /// Envelope spectrum amplitudes of the last window, bins 0.. at `spectrum_df_hz`.
    spectrum: Vec<f64>,
    spectrum_df_hz: f64,
}

impl EnvelopeAnalyser {
    pub(crate) fn new() -> EnvelopeAnalyser {
        EnvelopeAnalyser {
            plans: Vec::new(),
            resolution: EnvelopeResolution::default(),
            spectrum: Vec::new(),
            spectrum_df_hz: 0.0,
        }
    }

    pub(crate) fn set_resolution(&mut self, resolution: EnvelopeResolution) {
        self.resolution = resolution;
    }

    pub(crate) fn resolution(&self) -> EnvelopeResolution {
        self.resolution
    }

    /// Envelope spectrum of the last window: amplitudes of bins 0.. and their spacing.
    pub(crate) fn spectrum(&self) -> (&[f64], f64) {
        (&self.spectrum, self.spectrum_df_hz)
    }

    #[cfg(test)]
    pub(crate) fn cached_plans(&self) -> usize {
        self.plans.len()
    }

    /// Index of the plan for FFT length `m`, made on first use; the oldest one is
    /// dropped when the cache is full.
    fn plan_index(&mut self, m: usize) -> usize {
        match self.plans.iter().position(|p| p.len == m) {
            Some(i) => i,
            None => {
                if self.plans.len() >= ENVELOPE_PLAN_CACHE {
                    self.plans.remove(0);
                }
                self.plans.push(EnvelopePlan::new(m));
                self.plans.len() - 1
            }
        }
    }

    /// (envelope_rms, envelope_modulation) of the band `bins` of `spectrum` (the rfft
    /// of a centred window of `len` samples at `fs`), and its envelope spectrum.
    fn analyse(
        &mut self,
        spectrum: &[Complex<f64>],
        bins: std::ops::Range<usize>,
        len: usize,
        fs: f64,
    ) -> (f64, f64) {
        let band = spectrum.get(bins).unwrap_or(&[]);
        self.spectrum.clear();
        self.spectrum_df_hz = fs / len as f64;
        if band.is_empty() {
            // No bin in the band: the envelope is zero and has no spectrum.
            return (0.0, 0.0);
        }
        let m = envelope_fft_len(band.len(), len, self.resolution);
        let df = self.spectrum_df_hz;
        let i = self.plan_index(m);
        let plan = &mut self.plans[i];

        // Z_k = 2 X_k in the band (the analytic signal's one-sided spectrum), shifted
        // to bins 0 .. B of the M-point array.
        // M >= B by construction; `min` only keeps a broken invariant from panicking.
        let (head, tail) = plan.analytic.split_at_mut(band.len().min(m));
        for (z, x) in head.iter_mut().zip(band) {
            *z = x * 2.0;
        }
        tail.fill(Complex::new(0.0, 0.0));
        plan.inverse
            .process_with_scratch(&mut plan.analytic, &mut plan.inverse_scratch);

        // env = |z| / L (rustfft's inverse is unnormalised; the 1/L is the full
        // window's, whatever M is). sqrt(re² + im²) rather than `norm()` (hypot):
        // several times faster, and envelope amplitudes need no overflow guard.
        let inv_len = 1.0 / len as f64;
        let mut sum = 0.0f64;
        for (e, z) in plan.envelope.iter_mut().zip(&plan.analytic) {
            let v = (z.re * z.re + z.im * z.im).sqrt() * inv_len;
            *e = v;
            sum += v;
        }
        let count = plan.envelope.len() as f64;
        let mean = sum / count;
        let mut sum_sq = 0.0f64;
        for e in plan.envelope.iter_mut() {
            *e -= mean;
            sum_sq += *e * *e;
        }
        let std = (sum_sq / count).sqrt();
        let modulation = if mean > 0.0 { std / mean } else { 0.0 };

        // Envelope spectrum E_j = |rfft(env − mean)_j| · 2/M at j · fs/L (the envelope
        // lasts the window's duration whatever M is), up to 2 kHz and its Nyquist.
        if plan
            .forward
            .process_with_scratch(
                &mut plan.envelope,
                &mut plan.spectrum,
                &mut plan.forward_scratch,
            )
            .is_ok()
        {
            let scale = 2.0 / count;
            let nyquist_hz = df * (m / 2) as f64;
            let max_hz = ENVELOPE_SPECTRUM_MAX_HZ.min(nyquist_hz);
            for (j, c) in plan.spectrum.iter().enumerate() {
                if j as f64 * df > max_hz {
                    break;
                }
                self.spectrum
                    .push((c.re * c.re + c.im * c.im).sqrt() * scale);
            }
        }
        (std, modulation)
    }
}

/// The physical features of a window of `len` samples from its centred statistics and
/// `spectrum` (the rfft of the centred window, bins 0 ..= len/2).
pub(crate) fn physical_features(
    stats: CentredStats,
    spectrum: &[Complex<f64>],
    len: usize,
    params: &PhysicalParams,
    envelope: &mut EnvelopeAnalyser,
) -> PhysicalFeatures {
    let fs = params.sample_rate_hz;
    let n = len as f64;
    let bins = spectrum.len().min(len / 2 + 1);
    // numpy's rfftfreq spacing, computed the same way so band edges agree bit for bit.
    let df = 1.0 / (n * (1.0 / fs));
    let first_at = |f: f64| bins_below(bins, df, |fk| fk < f);

    // A_k = |X_k|·2/L and RMS = sqrt(Σ A_k²/2), so RMS² = Σ|X_k|² · 2/L².
    let to_rms2 = 2.0 / (n * n);
    let band_rms = |lo: f64, hi: f64| {
        let range = first_at(lo)..first_at(hi);
        if range.is_empty() {
            f64::NAN
        } else {
            (power(spectrum, range) * to_rms2).sqrt()
        }
    };
    let top = USABLE_FRACTION_OF_RATE * fs;
    let band_0_1k = band_rms(10.0, top.min(1000.0));
    let band_1_4k = if top > 1000.0 {
        band_rms(1000.0, top.min(4000.0))
    } else {
        f64::NAN
    };
    let band_4k_up = if top > 4000.0 {
        band_rms(4000.0, top)
    } else {
        f64::NAN
    };

    // Velocity: V_k = A_k · to_ms2 · 1000 / (2π f_k) mm/s, so Σ V_k²/2 =
    // (to_ms2 · 1000/2π)² · Σ A_k²/(2 f_k²): one division per bin, scale once.
    let (vlo, vhi) = VELOCITY_BAND_HZ;
    let velocity_bins = first_at(vlo)..bins_below(bins, df, |fk| fk <= vhi);
    let mut weighted = 0.0f64;
    for k in velocity_bins {
        let (c, f) = (spectrum[k], k as f64 * df);
        weighted += (c.re * c.re + c.im * c.im) / (f * f);
    }
    let to_ms2 = params.accel_to_ms2.unwrap_or(1.0);
    let velocity = (weighted * to_rms2).sqrt() * to_ms2 * 1000.0 / (2.0 * PI);

    let (lo, hi) = params.envelope_band();
    let (envelope_rms, envelope_modulation) =
        envelope.analyse(spectrum, first_at(lo)..first_at(hi), len, fs);

    let crest = if stats.rms > 0.0 {
        stats.peak / stats.rms
    } else {
        0.0
    };
    PhysicalFeatures {
        health: [
            stats.rms,
            stats.kurtosis,
            crest,
            velocity,
            band_0_1k,
            band_1_4k,
            band_4k_up,
            envelope_rms,
            envelope_modulation,
        ],
        accel_peak: stats.peak,
        velocity_mm_s: params.accel_to_ms2.map(|_| velocity),
    }
}

#[cfg(test)]
mod tests;
