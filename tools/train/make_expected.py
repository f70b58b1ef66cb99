#!/usr/bin/env python3
"""Write reference features and scores for the committed slices: testdata/expected/*.json.

Usage: python tools/train/make_expected.py [--models models/] [--testdata testdata/]

Needs only the committed slices and bundles (no ../shared/data), so a fresh
clone can regenerate it. The Rust side uses these files to check that its
features and tract inference match the Python reference:
  - features: float64, expect agreement to ~1e-9 relative (different FFTs);
  - scores: onnxruntime float32, expect agreement to ~1e-4 relative;
  - flagged / alert episodes: exact (no score here is within 1e-3 of a threshold,
    checked below).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from evaluate import DEBOUNCE_K, DEBOUNCE_N, Bundle  # noqa: E402
from features import (  # noqa: E402
    ROLLING_FEATURES,
    WINDOW_FEATURES,
    debounce_episodes,
    load_f32,
    load_nab_csv,
    rolling_matrix,
    window_matrix,
)

CWRU_SLICES = ["normal_12k_holdout.f32", "IR007_12k.f32", "B007_12k.f32", "OR007_12k.f32"]
NAB_SLICE = "machine_temperature_slice.csv"
NAB_FEATURE_STRIDE = 50


def check_margin(name: str, scores: np.ndarray, threshold: float) -> None:
    close = np.abs(scores - threshold) < 1e-3 * max(1.0, threshold)
    if close.any():
        raise SystemExit(f"{name}: a score is within 1e-3 of the threshold; flags would be fragile")


def vibration(b: Bundle, td: Path) -> dict:
    w = b.manifest["window"]
    length, fs = int(w["length"]), float(w["sample_rate_hz"])
    hop = int(round(length * (1 - float(w["overlap"]))))
    files = []
    for name in CWRU_SLICES:
        sig = load_f32(td / "cwru" / name)
        allf = window_matrix(sig, fs, WINDOW_FEATURES, length, hop)
        cols = [WINDOW_FEATURES.index(f) for f in b.features]
        s = b.scores(allf[:, cols])
        check_margin(name, s, b.threshold)
        flags = list(s > b.threshold)
        files.append({
            "file": f"testdata/cwru/{name}",
            "samples": int(sig.shape[0]),
            "windows": int(allf.shape[0]),
            "flagged": int(sum(flags)),
            "alert_episodes": [list(e) for e in debounce_episodes(flags, DEBOUNCE_K, DEBOUNCE_N)],
            "features": [dict(zip(WINDOW_FEATURES, map(float, row))) for row in allf],
            "scores": [float(x) for x in s],
        })
    return {
        "bundle": b.manifest["name"],
        "sha256": b.manifest["sha256"],
        "threshold": b.threshold,
        "window": w,
        "debounce": {"k": DEBOUNCE_K, "n": DEBOUNCE_N},
        "note": ("window i covers samples [i*hop, i*hop+length); features hold all canonical window "
                 "features in float64; scores are onnxruntime float32 outputs of the bundle's "
                 "features; alert_episodes are [open, close) window indices (close exclusive) under "
                 "'open when >= k of the last n windows are flagged, close when fewer are'"),
        "files": files,
    }


def temperature(b: Bundle, td: Path) -> dict:
    n = int(b.manifest["rolling"]["length"])
    ts, v = load_nab_csv(td / "nab" / NAB_SLICE)
    allf = rolling_matrix(v, ROLLING_FEATURES, n)
    cols = [ROLLING_FEATURES.index(f) for f in b.features]
    s = b.scores(allf[:, cols])
    check_margin(NAB_SLICE, s, b.threshold)
    flags = [False] * (n - 1) + list(s > b.threshold)
    eps = debounce_episodes(flags, DEBOUNCE_K, DEBOUNCE_N)
    return {
        "bundle": b.manifest["name"],
        "sha256": b.manifest["sha256"],
        "threshold": b.threshold,
        "rolling": b.manifest["rolling"],
        "debounce": {"k": DEBOUNCE_K, "n": DEBOUNCE_N},
        "file": f"testdata/nab/{NAB_SLICE}",
        "readings": len(ts),
        "note": (f"score i belongs to reading i + {n - 1} (the first reading with a full rolling window); "
                 f"features are given for every {NAB_FEATURE_STRIDE}th scored reading, all canonical "
                 "rolling features in float64; alert_episodes are reading indices [open, close) and "
                 "timestamps"),
        "first_scored_reading": n - 1,
        "flagged": int(sum(flags)),
        "alert_episodes": [
            {"open": o, "close": c, "open_ts": ts[o], "close_ts": ts[c] if c < len(ts) else None}
            for o, c in eps
        ],
        "features": [
            {"reading": int(i + n - 1), "timestamp": ts[i + n - 1], **dict(zip(ROLLING_FEATURES, map(float, allf[i])))}
            for i in range(0, allf.shape[0], NAB_FEATURE_STRIDE)
        ],
        "scores": [float(x) for x in s],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=Path, default=ROOT / "models")
    ap.add_argument("--testdata", type=Path, default=ROOT / "testdata")
    args = ap.parse_args()
    out = args.testdata / "expected"
    out.mkdir(parents=True, exist_ok=True)
    vib = vibration(Bundle(args.models / "vibration-default"), args.testdata)
    tmp = temperature(Bundle(args.models / "temperature-default"), args.testdata)
    (out / "vibration-default.json").write_text(json.dumps(vib, indent=1) + "\n")
    (out / "temperature-default.json").write_text(json.dumps(tmp, indent=1) + "\n")
    for f in vib["files"]:
        print(f"{f['file']}: {f['windows']} windows, {f['flagged']} flagged, episodes {f['alert_episodes']}")
    print(f"{tmp['file']}: {tmp['readings']} readings, {len(tmp['scores'])} scored, {tmp['flagged']} flagged, "
          f"episodes {[(e['open_ts'], e['close_ts']) for e in tmp['alert_episodes']]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
