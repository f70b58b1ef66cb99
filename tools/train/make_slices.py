#!/usr/bin/env python3
"""Cut the small committed data slices in testdata/ from the full data set.

Usage: python tools/train/make_slices.py [--data DIR] [--out testdata]

DIR defaults to ../shared/data relative to the project root. The slices are
byte-exact copies of parts of the source files (no resampling, no rounding), so
re-running reproduces them byte for byte.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from features import load_nab_csv, load_nab_windows  # noqa: E402

FS = 12000
FAULT_SECONDS = 2.0
FAULT_FILES = {
    "IR007_12k.f32": "IR007_0_105.f32",
    "B007_12k.f32": "B007_0_118.f32",
    "OR007_12k.f32": "OR007at6_0_130.f32",
}
NAB_CSV = "machine_temperature_system_failure.csv"
# The slice holds the fourth labelled window (the catastrophic failure of
# 2014-02-07 .. 2014-02-09) with NAB_LEAD_ROWS normal readings before it.
NAB_WINDOW_INDEX = 3
NAB_LEAD_ROWS = 850
NAB_SLICE_ROWS = 1500


def healthy_split(n_samples: int) -> int:
    """Index of the first held-back sample: the first 70 % train, the rest is held back."""
    return (n_samples * 7) // 10


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=ROOT / "testdata")
    args = ap.parse_args()

    cwru_in = args.data / "cwru"
    cwru_out = args.out / "cwru"
    nab_out = args.out / "nab"
    cwru_out.mkdir(parents=True, exist_ok=True)
    nab_out.mkdir(parents=True, exist_ok=True)

    # Healthy hold-out: last 30 % of the 12 kHz healthy recording, raw bytes.
    raw = (cwru_in / "normal_0_97_12k.f32").read_bytes()
    if len(raw) % 4:
        raise SystemExit(f"{cwru_in / 'normal_0_97_12k.f32'}: size {len(raw)} is not a multiple of 4")
    n = len(raw) // 4
    cut = healthy_split(n)
    (cwru_out / "normal_12k_holdout.f32").write_bytes(raw[cut * 4 :])
    print(f"normal_12k_holdout.f32: samples {cut}..{n} of {n}")
    # The whole healthy recording: the relative detection commissions on its first
    # half (config/replay/cwru.toml, tests/detection_replay.rs).
    (cwru_out / "normal_12k.f32").write_bytes(raw)
    print(f"normal_12k.f32: all {n} samples")

    n_fault = int(FAULT_SECONDS * FS)
    for dst, src in FAULT_FILES.items():
        raw = (cwru_in / src).read_bytes()
        if len(raw) < n_fault * 4:
            raise SystemExit(f"{cwru_in / src}: shorter than {FAULT_SECONDS} s")
        (cwru_out / dst).write_bytes(raw[: n_fault * 4])
        print(f"{dst}: first {n_fault} samples of {src}")

    # NAB slice: copy the csv lines verbatim.
    csv_path = args.data / "nab" / NAB_CSV
    ts, _ = load_nab_csv(csv_path)
    windows = load_nab_windows(args.data / "nab" / "anomaly_windows.json", NAB_CSV)
    w_start, w_end = windows[NAB_WINDOW_INDEX]
    first_in = next(i for i, t in enumerate(ts) if t >= w_start)
    start = first_in - NAB_LEAD_ROWS
    end = start + NAB_SLICE_ROWS
    lines = csv_path.read_text().splitlines(keepends=True)
    header, body = lines[0], lines[1:]
    (nab_out / "machine_temperature_slice.csv").write_text(header + "".join(body[start:end]))
    slice_ts = ts[start:end]
    in_slice = [
        [a, b]
        for a, b in windows
        if any(a <= t <= b for t in slice_ts)
    ]
    with open(args.data / "nab" / "anomaly_windows.json") as fh:
        full = json.load(fh)[NAB_CSV]
    # Keep the original timestamp strings of the windows that fall in the slice.
    kept = [pair for pair in full if [pair[0][:19], pair[1][:19]] in in_slice]
    with open(nab_out / "anomaly_windows.json", "w") as fh:
        json.dump({"machine_temperature_slice.csv": kept}, fh, indent=1)
        fh.write("\n")
    print(f"machine_temperature_slice.csv: rows {start}..{end} of {len(ts)} ({slice_ts[0]} .. {slice_ts[-1]}), windows {kept}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
