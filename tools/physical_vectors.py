#!/usr/bin/env python3
"""Reference values for the Rust physical (rate-aware) vibration features.

Writes `tests/data/physical_vectors.json`: a few windows (real CWRU slices at 12 kHz,
referenced by file and offset; synthetic windows stored as float32 sample lists) with
the physical features and the envelope spectrum that numpy computes for them.
`cargo test` reads the committed JSON and compares `crates/edgegw-dsp/src/physical.rs` to it,
so the tests never need Python.

`features` below is the definition (the same semantics as the prototype the lead
wrote): everything in float64, on the full window length, with the documented guards
for flat windows (kurtosis, crest factor and envelope modulation 0 instead of NaN) and
an optional caller-chosen envelope band.

Usage: python3 tools/physical_vectors.py [--out tests/data/physical_vectors.json]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

G = 9.80665
HEALTH_FEATURES = [
    "accel_rms",
    "kurtosis",
    "crest_factor",
    "velocity_rms",
    "band_0_1k",
    "band_1_4k",
    "band_4k_up",
    "envelope_rms",
    "envelope_modulation",
]
# The envelope spectrum is kept up to this frequency (and the envelope's Nyquist).
ENVELOPE_SPECTRUM_MAX_HZ = 2000.0


def accel_unit_to_ms2(unit: str) -> float | None:
    """m/s² per unit of the channel, or None when the unit is not an acceleration."""
    u = unit.strip().lower()
    if u == "g":
        return G
    if u in ("m/s²", "m/s2", "m/s^2"):
        return 1.0
    if u in ("mm/s²", "mm/s2"):
        return 0.001
    return None


def envelope_band(fs: float, band: tuple[float, float] | None) -> tuple[float, float]:
    """The default band (1 kHz .. 0.45 fs, or the upper half of that when 0.45 fs <
    2 kHz), or the caller's clamped to 0 < lo < hi <= fs/2 (default if that is empty)."""
    top = 0.45 * fs
    default = (1000.0 if top >= 2000.0 else top / 2.0, top)
    if band is None:
        return default
    lo, hi = band
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return default
    hi = min(hi, fs / 2.0)
    lo = max(lo, np.finfo(float).tiny)
    if not lo < hi:
        return default
    return (lo, hi)


def band_rms(a: np.ndarray, f: np.ndarray, lo: float, hi: float) -> float:
    m = (f >= lo) & (f < hi)
    return float(np.sqrt((a[m] ** 2 / 2).sum())) if m.any() else math.nan


def features(x, fs: float, to_ms2: float | None = G, band: tuple[float, float] | None = None):
    """(health features in HEALTH_FEATURES order, accel_peak, velocity in mm/s or None,
    envelope band used, full-length envelope spectrum E_j at j * fs / L)."""
    x = np.asarray(x, float)
    n = len(x)
    c = x - x.mean()
    m2 = (c**2).mean()
    rms = np.sqrt(m2)
    peak = np.abs(c).max()
    kurt = (c**4).mean() / m2**2 if m2 > 0 else 0.0
    crest = peak / rms if rms > 0 else 0.0

    spec = np.fft.rfft(c)
    f = np.fft.rfftfreq(n, 1 / fs)
    a = np.abs(spec) * 2 / n
    scale = to_ms2 if to_ms2 is not None else 1.0
    vband = (f >= 10) & (f <= 1000)
    v = a[vband] * scale / (2 * np.pi * f[vband]) * 1000
    vel = float(np.sqrt((v**2 / 2).sum()))

    top = 0.45 * fs
    b0 = band_rms(a, f, 10, min(1000, top))
    b1 = band_rms(a, f, 1000, min(4000, top)) if top > 1000 else math.nan
    b2 = band_rms(a, f, 4000, top) if top > 4000 else math.nan

    lo, hi = envelope_band(fs, band)
    m = (f >= lo) & (f < hi)
    z = np.zeros(n, complex)
    z[: len(spec)][m] = spec[m] * 2
    env = np.abs(np.fft.ifft(z))
    e = env - env.mean()
    env_spec = np.abs(np.fft.rfft(e)) * 2 / n
    env_mean = env.mean()
    env_std = env.std()
    modulation = env_std / env_mean if env_mean > 0 else 0.0

    health = [rms, kurt, crest, vel, b0, b1, b2, env_std, modulation]
    return (
        [float(h) for h in health],
        float(peak),
        vel if to_ms2 is not None else None,
        (lo, hi),
        env_spec,
    )


def json_number(v: float) -> float | None:
    """JSON has no NaN: a band that does not exist at this rate is written as null."""
    return None if math.isnan(v) else float(v)


def main() -> None:
    root = Path(__file__).resolve().parent.parent
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=root / "tests" / "data" / "physical_vectors.json")
    args = ap.parse_args()
    rng = np.random.default_rng(20251206)

    # (name, fs, unit, requested envelope band, samples, source or None)
    windows = []

    def cwru(name, file, offset, length, unit="g", band=None):
        path = root / "testdata" / "cwru" / file
        x = np.fromfile(path, dtype="<f4")[offset : offset + length]
        assert len(x) == length, f"{path} is too short"
        src = {"file": f"testdata/cwru/{file}", "offset": offset, "len": length}
        windows.append((name, 12000.0, unit, band, x, src))

    cwru("cwru_normal_holdout_2048", "normal_12k_holdout.f32", 1024, 2048)
    cwru("cwru_IR007_2048", "IR007_12k.f32", 5000, 2048)
    # Same rate, a caller-chosen envelope band (the outer-race resonance region).
    cwru("cwru_OR007_2048_band_2500_4000", "OR007_12k.f32", 9000, 2048, band=(2500.0, 4000.0))
    # A length that is not a power of two, the unit in m/s² (velocity scaled by 1/g).
    cwru("cwru_B007_1500_ms2", "B007_12k.f32", 3000, 1500, unit=" M/S^2 ")
    # An unknown unit: velocity computed with a factor of 1 and no mm/s value.
    cwru("cwru_IR007_1024_unknown_unit", "IR007_12k.f32", 12000, 1024, unit="counts")

    # 25.6 kHz, 2560 samples (10 Hz bins: the band edges 10, 1000 and 4000 Hz fall on
    # bins): a 6 kHz resonance excited by impacts at an outer-race rate of 107.3 Hz,
    # a 29.95 Hz shaft tone, a 4 kHz tone right on a band edge and noise.
    fs = 25600.0
    n = 2560
    t = np.arange(n) / fs
    impacts = np.zeros(n)
    for k in range(int(0.1 * 107.3) + 1):
        t0 = k / 107.3 + 0.0013
        dt = t - t0
        on = dt >= 0
        impacts[on] += np.exp(-dt[on] * 900.0) * np.sin(2 * np.pi * 6000.0 * dt[on])
    x = (
        0.8 * impacts
        + 0.3 * np.sin(2 * np.pi * 29.95 * t)
        + 0.05 * np.sin(2 * np.pi * 4000.0 * t + 0.3)
        + 0.02 * rng.standard_normal(n)
    ).astype(np.float32)
    windows.append(("synthetic_25k6_2560_bearing", fs, "g", None, x, None))

    # 5 kHz: 0.45 fs = 2250 Hz, so band_4k_up does not exist and band_1_4k stops at
    # 2250 Hz; the envelope band is still 1000 .. 2250 Hz.
    fs = 5000.0
    n = 1024
    t = np.arange(n) / fs
    carrier = np.sin(2 * np.pi * 1700.0 * t)
    x = (
        (1.0 + 0.5 * np.sin(2 * np.pi * 87.0 * t)) * 0.4 * carrier
        + 0.2 * np.sin(2 * np.pi * 120.0 * t)
        + 0.03 * rng.standard_normal(n)
    ).astype(np.float32)
    windows.append(("synthetic_5k_1024", fs, "g", None, x, None))

    # 2 kHz: 0.45 fs = 900 Hz, below 1 kHz: only band_0_1k (to 900 Hz) exists, and the
    # envelope band is the upper half, 450 .. 900 Hz.
    fs = 2000.0
    n = 512
    t = np.arange(n) / fs
    x = (
        (1.0 + 0.8 * np.sin(2 * np.pi * 31.0 * t)) * 0.2 * np.sin(2 * np.pi * 700.0 * t)
        + 0.1 * np.sin(2 * np.pi * 50.0 * t)
        + 0.01 * rng.standard_normal(n)
    ).astype(np.float32)
    windows.append(("synthetic_2k_512", fs, "mm/s2", None, x, None))

    # A flat window (a stuck sensor): defined zeros everywhere, no NaN.
    windows.append(("flat_12k_2048", 12000.0, "g", None, np.full(2048, 0.25, dtype=np.float32), None))

    out = {
        "note": "Generated by tools/physical_vectors.py (numpy, full-length envelope); do not edit.",
        "envelope_spectrum_max_hz": ENVELOPE_SPECTRUM_MAX_HZ,
        "windows": [],
    }
    for name, fs, unit, band, x, src in windows:
        to_ms2 = accel_unit_to_ms2(unit)
        health, peak, vel_mm_s, used, env_spec = features(x, fs, to_ms2, band)
        df = fs / len(x)
        keep = min(ENVELOPE_SPECTRUM_MAX_HZ, fs / 2)
        bins = [float(v) for j, v in enumerate(env_spec) if j * df <= keep]
        w = {
            "name": name,
            "sample_rate_hz": fs,
            "unit": unit,
            "envelope_band_hz": list(band) if band is not None else None,
            "expected": {
                "health": {k: json_number(v) for k, v in zip(HEALTH_FEATURES, health)},
                "accel_peak": peak,
                "velocity_mm_s": vel_mm_s,
                "envelope_band_used_hz": list(used),
                "envelope_spectrum_df_hz": df,
                "envelope_spectrum": bins,
            },
        }
        if src is not None:
            w["source"] = src
        else:
            # float32 values written as exact doubles: `as f32` in Rust gives them back.
            w["samples"] = [float(v) for v in x]
        out["windows"].append(w)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1, allow_nan=False) + "\n")
    print(f"wrote {args.out}: {len(out['windows'])} windows")


if __name__ == "__main__":
    main()
