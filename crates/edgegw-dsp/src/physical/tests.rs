//! Tests of the physical features and the envelope spectrum against the numpy reference vectors.

use super::*;
use crate::features::FeatureExtractor;
use std::f64::consts::SQRT_2;

/// The brief's agreement with numpy: 1e-6 relative, or 1e-9 absolute near zero.
fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * a.abs().max(b.abs()) || (a - b).abs() <= 1e-9
}

struct Case {
    name: String,
    x: Vec<f32>,
    params: PhysicalParams,
    expected: serde_json::Value,
}

fn cases() -> Vec<Case> {
    // The gateway's repository root: the vectors and the recordings they name are
    // shared with the Python tools.
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let path = format!("{root}/tests/data/physical_vectors.json");
    let text = std::fs::read_to_string(&path).expect("tests/data/physical_vectors.json");
    let v: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let windows = v["windows"].as_array().expect("windows");
    assert!(windows.len() >= 8, "expected several reference windows");
    windows
        .iter()
        .map(|w| {
            let x: Vec<f32> = if let Some(src) = w.get("source") {
                let file = src["file"].as_str().expect("file");
                let bytes = std::fs::read(format!("{root}/{file}")).expect("source file");
                let offset = src["offset"].as_u64().expect("offset") as usize;
                let len = src["len"].as_u64().expect("len") as usize;
                bytes
                    .chunks_exact(4)
                    .skip(offset)
                    .take(len)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect()
            } else {
                w["samples"]
                    .as_array()
                    .expect("samples")
                    .iter()
                    .map(|s| s.as_f64().expect("number") as f32)
                    .collect()
            };
            let band = w["envelope_band_hz"]
                .as_array()
                .map(|b| (b[0].as_f64().expect("lo"), b[1].as_f64().expect("hi")));
            Case {
                name: w["name"].as_str().unwrap_or("?").to_string(),
                x,
                params: PhysicalParams {
                    sample_rate_hz: w["sample_rate_hz"].as_f64().expect("rate"),
                    accel_to_ms2: accel_unit_to_ms2(w["unit"].as_str().expect("unit")),
                    envelope_band_hz: band,
                },
                expected: w["expected"].clone(),
            }
        })
        .collect()
}

/// Bit patterns, so that NaN bands compare equal to themselves.
fn bits(p: &PhysicalFeatures) -> Vec<u64> {
    p.health
        .iter()
        .chain([p.accel_peak, p.velocity_mm_s.unwrap_or(-1.0)].iter())
        .map(|v| v.to_bits())
        .collect()
}

/// JSON null is a band that does not exist at this rate.
fn expected_f64(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

/// Envelope features and spectrum compared with a tolerance of their own; the
/// other physical features always to `close`.
fn check_case(
    case: &Case,
    resolution: EnvelopeResolution,
    envelope_close: impl Fn(f64, f64) -> bool,
    spectrum_tolerance_of_max: f64,
) {
    let name = &case.name;
    let mut ex = FeatureExtractor::new(case.x.len());
    ex.set_envelope_resolution(resolution);
    let (canonical, got) = ex.compute_all(&case.x, &case.params).expect("length");
    let want = &case.expected;
    for (i, fname) in HEALTH_FEATURES.iter().enumerate() {
        let w = expected_f64(&want["health"][fname]);
        let g = got.health[i];
        let ok = if w.is_nan() {
            g.is_nan()
        } else if fname.starts_with("envelope_") {
            envelope_close(g, w)
        } else {
            close(g, w)
        };
        assert!(
            ok,
            "{name} ({resolution:?}): {fname} = {g} but numpy says {w}"
        );
    }
    let peak = expected_f64(&want["accel_peak"]);
    assert!(close(got.accel_peak, peak), "{name}: accel_peak");
    match want["velocity_mm_s"].as_f64() {
        Some(v) => assert!(
            got.velocity_mm_s.is_some_and(|g| close(g, v)),
            "{name}: velocity_mm_s {:?} vs {v}",
            got.velocity_mm_s
        ),
        None => assert_eq!(got.velocity_mm_s, None, "{name}: unknown unit"),
    }
    let used = &want["envelope_band_used_hz"];
    let (lo, hi) = case.params.envelope_band();
    assert!(close(lo, expected_f64(&used[0])), "{name}: band lo {lo}");
    assert!(close(hi, expected_f64(&used[1])), "{name}: band hi {hi}");

    // The canonical half is exactly `compute`, and a second run repeats itself.
    let mut plain = FeatureExtractor::new(case.x.len());
    let fs = case.params.sample_rate_hz;
    assert_eq!(plain.compute(&case.x, fs), Some(canonical), "{name}");
    let spectrum = ex.envelope_spectrum().0.to_vec();
    let (canonical2, again) = ex.compute_all(&case.x, &case.params).expect("length");
    assert_eq!(canonical2, canonical, "{name}: not repeatable");
    assert_eq!(bits(&again), bits(&got), "{name}: not repeatable");
    assert_eq!(ex.envelope_spectrum().0, &spectrum[..], "{name}");

    // Envelope spectrum: same bins at the common frequencies.
    let (bins, df) = ex.envelope_spectrum();
    let want_df = expected_f64(&want["envelope_spectrum_df_hz"]);
    assert!(close(df, want_df), "{name}: spacing {df} vs {want_df}");
    let want_bins: Vec<f64> = want["envelope_spectrum"]
        .as_array()
        .expect("envelope_spectrum")
        .iter()
        .map(expected_f64)
        .collect();
    assert!(!bins.is_empty(), "{name}: no envelope spectrum");
    assert!(bins.len() <= want_bins.len(), "{name}: too many bins");
    let top = want_bins.iter().fold(0.0f64, |m, v| m.max(*v));
    for (j, (g, w)) in bins.iter().zip(&want_bins).enumerate() {
        let ok = if spectrum_tolerance_of_max == 0.0 {
            close(*g, *w)
        } else {
            (g - w).abs() <= spectrum_tolerance_of_max * top
        };
        assert!(
            ok,
            "{name}: envelope bin {j} ({} Hz) = {g} vs {w}",
            j as f64 * df
        );
    }
}

#[test]
fn physical_features_match_numpy() {
    for case in cases() {
        check_case(&case, EnvelopeResolution::Full, close, 0.0);
        // Full resolution keeps every bin numpy keeps (up to 2 kHz or fs/2).
        let mut ex = FeatureExtractor::new(case.x.len());
        ex.compute_all(&case.x, &case.params).expect("length");
        let want = case.expected["envelope_spectrum"].as_array().map(Vec::len);
        assert_eq!(Some(ex.envelope_spectrum().0.len()), want, "{}", case.name);
    }
}

#[test]
fn decimated_envelope_stays_near_numpy() {
    // See `envelope_fft_len`: a decimated envelope is exact at fewer instants, so
    // the aliasing of |z| differs from numpy's full-length envelope. Measured on
    // these windows: envelope_rms and envelope_modulation within 3e-3 relative;
    // spectrum bins within 2 % of the largest bin for the default bands, 23 % for
    // the narrow 2.5–4 kHz band (M = B = 256: the envelope's own bandwidth folds
    // back over its Nyquist). The non-envelope features are unaffected.
    let near = |a: f64, b: f64| (a - b).abs() <= 5e-3 * b.abs() || (a - b).abs() <= 1e-9;
    for case in cases() {
        check_case(&case, EnvelopeResolution::Decimated, near, 0.25);
    }
}

fn sine(fs: f64, len: usize, parts: &[(f64, f64)]) -> Vec<f32> {
    (0..len)
        .map(|i| {
            let t = i as f64 / fs;
            parts
                .iter()
                .map(|(a, f)| a * (2.0 * PI * f * t).sin())
                .sum::<f64>() as f32
        })
        .collect()
}

fn params(fs: f64, unit: &str) -> PhysicalParams {
    PhysicalParams {
        sample_rate_hz: fs,
        accel_to_ms2: accel_unit_to_ms2(unit),
        envelope_band_hz: None,
    }
}

#[test]
fn velocity_and_bands_are_the_same_at_any_rate() {
    // 1 g at 100 Hz: v = a/(2πf) = 15.61 mm/s peak, 11.04 mm/s RMS, whatever the
    // rate (bins of 5 Hz at 12 kHz / 2400, 10 Hz at 25.6 kHz / 2560).
    let want_velocity = STANDARD_GRAVITY * 1000.0 / (2.0 * PI * 100.0) / SQRT_2;
    for (fs, len) in [(12_000.0, 2400), (25_600.0, 2560)] {
        let x = sine(fs, len, &[(1.0, 100.0), (0.1, 2000.0)]);
        let mut ex = FeatureExtractor::new(len);
        let (_, p) = ex.compute_all(&x, &params(fs, "g")).expect("length");
        let v = p.velocity_mm_s.expect("g is an acceleration unit");
        assert!(
            (v - want_velocity).abs() < 1e-5 * want_velocity,
            "{fs}: {v}"
        );
        let b0 = p.get("band_0_1k").expect("band");
        let b1 = p.get("band_1_4k").expect("band");
        assert!((b0 - 1.0 / SQRT_2).abs() < 1e-6, "{fs}: {b0}");
        assert!((b1 - 0.1 / SQRT_2).abs() < 1e-6, "{fs}: {b1}");
        assert!(p.get("band_4k_up").expect("band") < 1e-5, "{fs}");
    }
    // Same signal in m/s²: the velocity scales by 1/g; an unknown unit keeps the
    // factor-1 number but no mm/s.
    let x = sine(12_000.0, 2400, &[(1.0, 100.0)]);
    let mut ex = FeatureExtractor::new(2400);
    let (_, ms2) = ex.compute_all(&x, &params(12_000.0, "m/s2")).expect("len");
    let (_, raw) = ex.compute_all(&x, &params(12_000.0, "volts")).expect("len");
    let v = ms2.velocity_mm_s.expect("m/s2");
    assert!((v * STANDARD_GRAVITY - want_velocity).abs() < 1e-5 * want_velocity);
    assert_eq!(raw.velocity_mm_s, None);
    assert_eq!(raw.get("velocity_rms"), Some(v));
}

#[test]
fn bands_that_do_not_exist_at_a_low_rate_are_nan_and_skipped() {
    let fs = 2_000.0;
    let x = sine(fs, 512, &[(0.5, 125.0), (0.2, 625.0)]);
    let mut ex = FeatureExtractor::new(512);
    let (_, p) = ex.compute_all(&x, &params(fs, "g")).expect("length");
    assert!(p.health[5].is_nan() && p.health[6].is_nan());
    assert_eq!(p.get("band_1_4k"), None);
    assert_eq!(p.get("band_4k_up"), None);
    assert_eq!(p.get("no_such_feature"), None);
    let names: Vec<String> = p.named().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "accel_rms",
            "kurtosis",
            "crest_factor",
            "velocity_rms",
            "band_0_1k",
            "envelope_rms",
            "envelope_modulation",
            "accel_peak"
        ]
    );
    assert!(p.named().iter().all(|(_, v)| v.is_finite()));
    assert_eq!(p.get("accel_peak"), Some(p.accel_peak));
    // At 2 kHz the envelope band is the upper half of 0 .. 900 Hz.
    assert_eq!(params(fs, "g").envelope_band(), (450.0, 900.0));
}

#[test]
fn units_are_matched_trimmed_and_in_any_case() {
    assert_eq!(accel_unit_to_ms2(" G "), Some(STANDARD_GRAVITY));
    for unit in ["m/s²", "M/S2", "m/s^2"] {
        assert_eq!(accel_unit_to_ms2(unit), Some(1.0), "{unit}");
    }
    for unit in ["mm/s²", "MM/S2"] {
        assert_eq!(accel_unit_to_ms2(unit), Some(0.001), "{unit}");
    }
    for unit in ["", "mm/s", "gauss", "degC", "m/s"] {
        assert_eq!(accel_unit_to_ms2(unit), None, "{unit}");
    }
}

#[test]
fn envelope_band_default_and_clamping() {
    let at = |fs: f64, band: Option<(f64, f64)>| {
        PhysicalParams {
            sample_rate_hz: fs,
            accel_to_ms2: None,
            envelope_band_hz: band,
        }
        .envelope_band()
    };
    assert_eq!(at(12_000.0, None), (1000.0, 5400.0));
    assert_eq!(at(25_600.0, None), (1000.0, 11_520.0));
    // 0.45 fs = 1800 Hz < 2 kHz: the upper half.
    assert_eq!(at(4_000.0, None), (900.0, 1800.0));
    assert_eq!(at(12_000.0, Some((2000.0, 4000.0))), (2000.0, 4000.0));
    // Clamped to fs/2, and lo just above 0.
    assert_eq!(at(12_000.0, Some((3000.0, 9000.0))), (3000.0, 6000.0));
    assert_eq!(
        at(12_000.0, Some((-5.0, 500.0))),
        (f64::MIN_POSITIVE, 500.0)
    );
    // Empty, inverted or not finite: the default.
    for band in [
        (7000.0, 8000.0),
        (4000.0, 2000.0),
        (f64::NAN, 3000.0),
        (1.0, f64::INFINITY),
    ] {
        assert_eq!(at(12_000.0, Some(band)), (1000.0, 5400.0), "{band:?}");
    }
}

#[test]
fn flat_and_wrong_length_windows() {
    let mut ex = FeatureExtractor::new(256);
    let p = params(12_000.0, "g");
    assert!(ex.compute_all(&[0.0; 128], &p).is_none());
    let (_, flat) = ex.compute_all(&[3.5; 256], &p).expect("length");
    assert_eq!(flat.health, [0.0; 9]);
    assert_eq!(flat.accel_peak, 0.0);
    let (spectrum, df) = ex.envelope_spectrum();
    assert!(spectrum.iter().all(|v| *v == 0.0) && !spectrum.is_empty());
    assert_eq!(df, 12_000.0 / 256.0);
    // Nonsense rates give NaN or zeros, never a panic.
    for fs in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e-3] {
        let x = sine(12_000.0, 256, &[(1.0, 300.0)]);
        ex.compute_all(&x, &params(fs, "g")).expect("length");
    }
}

#[test]
fn envelope_plans_are_cached_per_band_size() {
    let x = sine(12_000.0, 2048, &[(1.0, 3000.0), (0.3, 3100.0)]);
    let mut ex = FeatureExtractor::new(2048);
    ex.set_envelope_resolution(EnvelopeResolution::Decimated);
    let mut p = params(12_000.0, "g");
    for _ in 0..3 {
        ex.compute_all(&x, &p).expect("length");
    }
    assert_eq!(ex.envelope_plans(), 1);
    p.envelope_band_hz = Some((2500.0, 3500.0));
    for _ in 0..3 {
        ex.compute_all(&x, &p).expect("length");
    }
    assert_eq!(ex.envelope_plans(), 2);
    // Many band sizes: the cache stays bounded.
    for i in 0..20 {
        p.envelope_band_hz = Some((1000.0, 1100.0 + 200.0 * i as f64));
        ex.compute_all(&x, &p).expect("length");
    }
    assert!(ex.envelope_plans() <= ENVELOPE_PLAN_CACHE);
}

#[test]
fn decimation_is_exact_for_a_band_limited_envelope() {
    // A 3515.625 Hz carrier (bin 600 at 12 kHz / 2048) amplitude-modulated at
    // 117.1875 Hz (bin 20) by 40 %: z = A(1 + m cos) e^{iωt} has |z| = A(1 + m cos),
    // band-limited, so sampling it at fewer instants loses nothing and both
    // resolutions agree to rounding (of the f32 samples, whose tiny in-band noise
    // is the only part of |z| that is not band-limited); both equal the closed form.
    let (fs, len) = (12_000.0, 2048);
    let (fc, fm, a, m) = (600.0 * fs / 2048.0, 20.0 * fs / 2048.0, 0.5, 0.4);
    let x: Vec<f32> = (0..len)
        .map(|i| {
            let t = i as f64 / fs;
            (a * (1.0 + m * (2.0 * PI * fm * t).cos()) * (2.0 * PI * fc * t).sin()) as f32
        })
        .collect();
    let p = params(fs, "g");
    let mut full = FeatureExtractor::new(len);
    let mut decimated = FeatureExtractor::new(len);
    decimated.set_envelope_resolution(EnvelopeResolution::Decimated);
    let (_, f) = full.compute_all(&x, &p).expect("length");
    let (_, d) = decimated.compute_all(&x, &p).expect("length");
    assert!(close(f.health[7], a * m / SQRT_2), "{}", f.health[7]);
    assert!(close(f.health[8], m / SQRT_2), "{}", f.health[8]);
    for i in 7..9 {
        assert!((f.health[i] - d.health[i]).abs() < 1e-8, "{i}");
    }
    let (fe, df) = full.envelope_spectrum();
    let (de, ddf) = decimated.envelope_spectrum();
    assert_eq!(df, ddf);
    assert!(close(fe[20], a * m), "{}", fe[20]);
    assert!(de.len() <= fe.len());
    for (j, (u, v)) in fe.iter().zip(de).enumerate() {
        assert!((u - v).abs() < 1e-8, "bin {j}: {u} vs {v}");
    }
}
