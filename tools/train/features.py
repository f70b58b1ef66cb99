"""Feature definitions shared by training and evaluation.

These are the reference definitions: the Rust side (edgegw) computes exactly the
same numbers for the same window, so any change here is a change to the bundle
contract (see docs/models.md). Everything is computed in float64.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

# Canonical order of the vibration (waveform window) features.
WINDOW_FEATURES = [
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
]

# Canonical order of the scalar rolling features.
ROLLING_FEATURES = [
    "value",
    "mean",
    "std",
    "min",
    "max",
    "slope",
    "delta_1",
    "delta_n",
    "zscore",
]

HIGH_FREQ_CUTOFF_HZ = 1000.0


def window_features(x: np.ndarray, fs: float) -> dict[str, float]:
    """All waveform features of one window `x` (any length L >= 2) at sample rate `fs`."""
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    mean = float(np.mean(x))
    c = x - mean
    m2 = float(np.mean(c**2))
    m3 = float(np.mean(c**3))
    m4 = float(np.mean(c**4))
    std = float(np.sqrt(m2))
    rms = float(np.sqrt(np.mean(x**2)))
    p2p = float(np.max(x) - np.min(x))
    kurt = m4 / (m2 * m2) if m2 > 0 else 0.0
    skew = m3 / (m2**1.5) if m2 > 0 else 0.0
    crest = float(np.max(np.abs(x))) / rms if rms > 0 else 0.0

    spec = np.fft.rfft(c)
    amp = np.abs(spec) * 2.0 / n
    k = np.arange(amp.shape[0])
    freqs = k * fs / n
    # k = 1 .. L/2 only (drop DC).
    amp = amp[1 : n // 2 + 1]
    freqs = freqs[1 : n // 2 + 1]
    i = int(np.argmax(amp))  # first index on ties
    dom_f = float(freqs[i])
    dom_a = float(amp[i])
    sa = float(np.sum(amp))
    centroid = float(np.sum(freqs * amp) / sa) if sa > 0 else 0.0
    e = amp**2
    se = float(np.sum(e))
    hfe = float(np.sum(e[freqs > HIGH_FREQ_CUTOFF_HZ]) / se) if se > 0 else 0.0
    return {
        "rms": rms,
        "peak_to_peak": p2p,
        "kurtosis": kurt,
        "skewness": skew,
        "std": std,
        "crest_factor": crest,
        "dominant_freq": dom_f,
        "dominant_freq_amplitude": dom_a,
        "spectral_centroid": centroid,
        "high_freq_energy": hfe,
        "mean": mean,
    }


def window_starts(n_samples: int, length: int, hop: int) -> list[int]:
    """Start offsets of every full window (no padding of a trailing partial window)."""
    if n_samples < length:
        return []
    return list(range(0, n_samples - length + 1, hop))


def window_matrix(
    signal: np.ndarray, fs: float, names: list[str], length: int = 2048, hop: int = 1024
) -> np.ndarray:
    """Feature matrix [n_windows, len(names)] for a whole recording."""
    rows = []
    for s in window_starts(signal.shape[0], length, hop):
        f = window_features(signal[s : s + length], fs)
        rows.append([f[name] for name in names])
    return np.asarray(rows, dtype=np.float64).reshape(-1, len(names))


def rolling_features(r: np.ndarray) -> dict[str, float]:
    """Rolling features of the last N readings `r`, oldest first, current last."""
    r = np.asarray(r, dtype=np.float64)
    n = r.shape[0]
    value = float(r[-1])
    mean = float(np.mean(r))
    std = float(np.sqrt(np.mean((r - mean) ** 2)))
    idx = np.arange(n, dtype=np.float64)
    im = float(np.mean(idx))
    denom = float(np.sum((idx - im) ** 2))
    slope = float(np.sum((idx - im) * (r - mean)) / denom) if denom > 0 else 0.0
    return {
        "value": value,
        "mean": mean,
        "std": std,
        "min": float(np.min(r)),
        "max": float(np.max(r)),
        "slope": slope,
        "delta_1": value - float(r[-2]) if n >= 2 else 0.0,
        "delta_n": value - float(r[0]),
        "zscore": (value - mean) / max(std, 1e-9),
    }


def rolling_matrix(values: np.ndarray, names: list[str], length: int) -> np.ndarray:
    """Feature matrix [len(values) - length + 1, len(names)]; row i ends at reading i+length-1."""
    rows = []
    for end in range(length - 1, values.shape[0]):
        f = rolling_features(values[end - length + 1 : end + 1])
        rows.append([f[name] for name in names])
    return np.asarray(rows, dtype=np.float64).reshape(-1, len(names))


def load_f32(path: Path) -> np.ndarray:
    """Raw little-endian float32, one channel, no header."""
    return np.fromfile(path, dtype="<f4")


def load_nab_csv(path: Path) -> tuple[list[str], np.ndarray]:
    """NAB csv (`timestamp,value`) -> (timestamps as strings, values float64)."""
    ts: list[str] = []
    vals: list[float] = []
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        if header[:2] != ["timestamp", "value"]:
            raise ValueError(f"{path}: expected header timestamp,value, got {header}")
        for row in reader:
            ts.append(row[0])
            vals.append(float(row[1]))
    return ts, np.asarray(vals, dtype=np.float64)


def load_nab_windows(path: Path, csv_name: str) -> list[tuple[str, str]]:
    """Labelled anomaly windows as (start, end) timestamp strings 'YYYY-mm-dd HH:MM:SS'."""
    with open(path) as fh:
        data = json.load(fh)
    return [(a[:19], b[:19]) for a, b in data[csv_name]]


def debounce_episodes(flags: list[bool], k: int = 3, n: int = 5) -> list[tuple[int, int]]:
    """Alert episodes under the gateway's k-of-n debounce.

    An alert opens at the first index where at least k of the last n flags
    (including the current one) are true; it stays open while that holds and
    closes at the first index where it no longer holds. Returns (open, close)
    index pairs, close exclusive (len(flags) if still open at the end).
    """
    episodes = []
    open_at = None
    window: list[bool] = []
    count = 0
    for i, f in enumerate(flags):
        window.append(f)
        count += int(f)
        if len(window) > n:
            count -= int(window.pop(0))
        active = count >= k
        if active and open_at is None:
            open_at = i
        elif not active and open_at is not None:
            episodes.append((open_at, i))
            open_at = None
    if open_at is not None:
        episodes.append((open_at, len(flags)))
    return episodes
