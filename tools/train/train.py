#!/usr/bin/env python3
"""Train the two default edgegw model bundles from the real data.

Usage: python tools/train/train.py [--data DIR] [--out models/]

DIR defaults to ../shared/data relative to the project root. Writes
<out>/vibration-default/{model.onnx,manifest.json} and
<out>/temperature-default/{model.onnx,manifest.json}, then loads each bundle
with onnxruntime and checks that it reproduces the manifest's example.

Deterministic: no random numbers are used anywhere (Ledoit-Wolf shrinkage and
Cholesky are closed-form), the `created` stamp is a constant, so re-running with
the pinned requirements reproduces the committed files byte for byte (see
docs/models.md for the one caveat: a different BLAS may change a last float bit).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))

import model as mdl  # noqa: E402
from features import (  # noqa: E402
    ROLLING_FEATURES,
    WINDOW_FEATURES,
    load_f32,
    load_nab_csv,
    load_nab_windows,
    rolling_matrix,
    window_matrix,
)
from make_slices import healthy_split  # noqa: E402

# Constant creation stamp so that retraining reproduces the committed bytes.
# Bump it together with `version` when the training recipe changes.
CREATED = "2025-11-25"

# --- vibration-default -----------------------------------------------------
# Feature subset chosen by reasoning, not by looking at fault scores:
#  - rms, peak_to_peak: vibration energy and amplitude (the ball fault mainly
#    raises energy);
#  - kurtosis, crest_factor: impulsiveness (inner/outer race faults);
#  - dominant_freq_amplitude, spectral_centroid, high_freq_energy: spectral shape,
#    where bearing defect resonances show up;
# dropped: std (equals rms when the mean is ~0: collinear), mean (the sensor's DC
# offset, not machine health), skewness (sign depends on sensor mounting, noisy),
# dominant_freq (a discrete bin that is constant over the healthy training
# windows, so it has zero variance, and it moves with shaft speed).
VIB = {
    "name": "vibration-default",
    "version": "1.0.0",
    "sensor_types": ["vibration", "bearing"],
    "features": [
        "rms",
        "peak_to_peak",
        "kurtosis",
        "crest_factor",
        "dominant_freq_amplitude",
        "spectral_centroid",
        "high_freq_energy",
    ],
    "length": 2048,
    "overlap": 0.5,
    "fs": 12000,
    "source": "cwru/normal_0_97_12k.f32",
    "margin": 1.25,
}

# --- temperature-default ---------------------------------------------------
# 288 readings = 24 h at NAB's 5-minute cadence: a whole operating day, so that
# the short dips the machine makes in normal operation do not look anomalous on
# their own. Level and spread features only: value, mean, std, min, max.
TEMP = {
    "name": "temperature-default",
    "version": "1.0.0",
    "sensor_types": ["temperature"],
    "features": ["value", "mean", "std", "min", "max"],
    "rolling_length": 288,
    "source": "nab/machine_temperature_system_failure.csv",
    "windows": "nab/anomaly_windows.json",
    "margin": 1.0,
}


def ceil4(x: float) -> float:
    """Round a threshold up to 4 decimals (readable, and never below the rule's value)."""
    return math.ceil(x * 1e4) / 1e4


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def vibration_training_rows(data: Path) -> tuple[np.ndarray, int, int]:
    sig = load_f32(data / VIB["source"])
    cut = healthy_split(sig.shape[0])
    hop = int(VIB["length"] * (1 - VIB["overlap"]))
    x = window_matrix(sig[:cut], VIB["fs"], VIB["features"], VIB["length"], hop)
    return x, cut, sig.shape[0]


def leave_neighbours_out_scores(x: np.ndarray, names: list[str]) -> np.ndarray:
    """Score each training window with a model fitted without it and without the
    windows that overlap it (|i - j| <= 1 at 50 % overlap): out-of-sample scores."""
    out = np.empty(x.shape[0])
    for i in range(x.shape[0]):
        keep = [j for j in range(x.shape[0]) if abs(j - i) > 1]
        m = mdl.fit(x[keep], names)
        out[i] = m.score(x[i : i + 1])[0]
    return out


def nab_series(data: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Timestamps, values and an in-labelled-window mask for the NAB series."""
    ts, v = load_nab_csv(data / TEMP["source"])
    windows = load_nab_windows(data / TEMP["windows"], Path(TEMP["source"]).name)
    inside = np.zeros(v.shape[0], dtype=bool)
    for a, b in windows:
        for i, t in enumerate(ts):
            if a <= t <= b:
                inside[i] = True
    return ts, v, inside


def temperature_training_rows(data: Path) -> tuple[np.ndarray, int]:
    ts, v, inside = nab_series(data)
    n = TEMP["rolling_length"]
    x = rolling_matrix(v, TEMP["features"], n)
    # Row r covers readings r .. r+n-1; keep it only if none of them is labelled.
    touched = np.convolve(inside.astype(int), np.ones(n, dtype=int), mode="valid") > 0
    return x[~touched], int(v.shape[0])


def write_bundle(out: Path, spec: dict, m: mdl.Mahalanobis, threshold: float, example_row: np.ndarray,
                 kind: dict, training: dict, doc: str) -> None:
    import onnx
    import onnxruntime as ort

    d = out / spec["name"]
    d.mkdir(parents=True, exist_ok=True)
    model = mdl.to_onnx(m, spec["name"], doc)
    bad = mdl.ops_used(model) - mdl.ALLOWED_OPS
    if bad:
        raise SystemExit(f"{spec['name']}: graph uses ops outside the tract-safe set: {sorted(bad)}")
    onnx_path = d / "model.onnx"
    onnx_path.write_bytes(model.SerializeToString())

    example_in = example_row.astype(np.float32).reshape(1, -1)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    got = sess.run(["score"], {"features": example_in})[0]
    example_out = float(got.reshape(-1)[0])
    ref = float(m.score(example_in.astype(np.float64))[0])
    if not math.isclose(example_out, ref, rel_tol=1e-4, abs_tol=1e-4):
        raise SystemExit(f"{onnx_path}: onnxruntime score {example_out} != float64 reference {ref}")

    f = len(spec["features"])
    manifest = {
        "name": spec["name"],
        "version": spec["version"],
        "sensor_types": spec["sensor_types"],
        **kind,
        "input": {"name": "features", "shape": [1, f], "dtype": "float32"},
        "output": {"name": "score"},
        "threshold": threshold,
        "sha256": sha256_file(onnx_path),
        "example": {"input": [[float(v) for v in example_in[0]]], "output": example_out},
        "training": training,
    }
    man_path = d / "manifest.json"
    man_path.write_text(json.dumps(manifest, indent=2) + "\n")

    # Verify what was written, as a consumer would: checksum, load, example.
    back = json.loads(man_path.read_text())
    if back["sha256"] != sha256_file(onnx_path):
        raise SystemExit(f"{man_path}: sha256 mismatch")
    onnx.checker.check_model(onnx.load(str(onnx_path)), full_check=True)
    sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    again = sess.run(["score"], {"features": np.asarray(back["example"]["input"], dtype=np.float32)})[0]
    if float(again.reshape(-1)[0]) != back["example"]["output"]:
        raise SystemExit(f"{man_path}: example output not reproduced by onnxruntime")
    print(f"{spec['name']}: {f} features, threshold {threshold}, shrinkage {m.shrinkage:.4f}, "
          f"example score {example_out:.6f} (onnxruntime) vs {ref:.6f} (float64), sha256 {back['sha256'][:16]}...")


def train_vibration(data: Path, out: Path) -> None:
    x, cut, total = vibration_training_rows(data)
    m = mdl.fit(x, VIB["features"])
    lno = leave_neighbours_out_scores(x, VIB["features"])
    in_sample = m.score(x)
    threshold = ceil4(VIB["margin"] * float(lno.max()))
    print(f"vibration: {x.shape[0]} training windows, in-sample max {in_sample.max():.3f}, "
          f"leave-neighbours-out max {lno.max():.3f} -> threshold {threshold}")
    hop = int(VIB["length"] * (1 - VIB["overlap"]))
    write_bundle(
        out,
        VIB,
        m,
        threshold,
        x[0],
        {
            "kind": "window",
            "features": VIB["features"],
            "window": {"length": VIB["length"], "overlap": VIB["overlap"], "sample_rate_hz": VIB["fs"]},
        },
        {
            "data": (f"CWRU Bearing Data Center, drive-end accelerometer, 0 HP, healthy bearing, "
                     f"{VIB['source']} (12 kHz) samples 0..{cut} of {total} (first 70 %), "
                     f"windows of {VIB['length']} hop {hop}"),
            "rows": int(x.shape[0]),
            "threshold_rule": (f"{VIB['margin']} x the largest leave-neighbours-out score of the training "
                               f"windows (each window scored by a model fitted without it and the windows "
                               f"overlapping it), rounded up to 4 decimals"),
            "created": CREATED,
        },
        "edgegw vibration-default: Mahalanobis distance of standardised waveform features "
        "(Ledoit-Wolf shrunk covariance) from healthy CWRU 12 kHz windows",
    )


def train_temperature(data: Path, out: Path) -> None:
    x, total = temperature_training_rows(data)
    m = mdl.fit(x, TEMP["features"])
    s = m.score(x)
    threshold = ceil4(TEMP["margin"] * float(s.max()))
    print(f"temperature: {x.shape[0]} training rows, score max {s.max():.3f}, "
          f"q99.9 {np.quantile(s, 0.999):.3f} -> threshold {threshold}")
    n = TEMP["rolling_length"]
    write_bundle(
        out,
        TEMP,
        m,
        threshold,
        x[0],
        {"kind": "rolling", "features": TEMP["features"], "rolling": {"length": n, "cadence_secs": 300}},
        {
            "data": (f"NAB {TEMP['source']} ({total} readings, one every 5 minutes): every rolling "
                     f"window of {n} readings (24 h) that touches no labelled anomaly window"),
            "rows": int(x.shape[0]),
            "threshold_rule": "the largest training score, rounded up to 4 decimals",
            "created": CREATED,
        },
        "edgegw temperature-default: Mahalanobis distance of standardised rolling "
        "level/spread features (24 h of 5-minute readings) from NAB machine temperature, "
        "normal periods only",
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=ROOT / "models")
    args = ap.parse_args()
    if not (args.data / "cwru").is_dir() or not (args.data / "nab").is_dir():
        raise SystemExit(f"{args.data}: expected cwru/ and nab/ below it (see --data)")
    train_vibration(args.data, args.out)
    train_temperature(args.data, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
