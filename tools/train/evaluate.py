#!/usr/bin/env python3
"""Evaluate the shipped ABSOLUTE bundles (vibration-default, temperature-default) on the real
data and write docs/absolute-models-evaluation.md (docs/DETECTION.md covers the default,
relative detection, from `edgegw replay`).

Usage: python tools/train/evaluate.py [--data DIR] [--models models/] [--doc docs/absolute-models-evaluation.md]

Scores are computed by onnxruntime from the committed model.onnx files (what the
gateway ships), with features computed by tools/train/features.py (the reference
the Rust side matches). Alert episodes use the gateway's default debounce: an
alert opens when at least 3 of the last 5 scored windows (or readings) are
anomalous (score > threshold) and closes when fewer than 3 of the last 5 are.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))

import model as mdl  # noqa: E402
from features import (  # noqa: E402
    ROLLING_FEATURES,
    WINDOW_FEATURES,
    debounce_episodes,
    load_f32,
    load_nab_csv,
    load_nab_windows,
    rolling_matrix,
    window_matrix,
    window_starts,
)
from make_slices import healthy_split  # noqa: E402

DEBOUNCE_K = 3
DEBOUNCE_N = 5
READING_MINUTES = 5  # NAB cadence


class Bundle:
    def __init__(self, path: Path):
        import onnxruntime as ort

        self.path = path
        self.manifest = json.loads((path / "manifest.json").read_text())
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self.sess = ort.InferenceSession(str(path / "model.onnx"), opts, providers=["CPUExecutionProvider"])
        self.threshold = float(self.manifest["threshold"])
        self.features = self.manifest["features"]

    def scores(self, x: np.ndarray) -> np.ndarray:
        """One onnxruntime call per row, as the gateway does (input shape is [1, F])."""
        out = np.empty(x.shape[0])
        xf = x.astype(np.float32)
        for i in range(x.shape[0]):
            out[i] = self.sess.run(["score"], {"features": xf[i : i + 1]})[0].reshape(-1)[0]
        return out


def fmt_s(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f} s"


def vib_file_row(b: Bundle, label: str, sig: np.ndarray, offset_s: float = 0.0) -> dict:
    w = b.manifest["window"]
    length, fs = int(w["length"]), float(w["sample_rate_hz"])
    hop = int(round(length * (1 - float(w["overlap"]))))
    x = window_matrix(sig, fs, b.features, length, hop)
    s = b.scores(x)
    flags = list(s > b.threshold)
    starts = window_starts(sig.shape[0], length, hop)
    ends_s = [offset_s + (st + length) / fs for st in starts]
    eps = debounce_episodes(flags, DEBOUNCE_K, DEBOUNCE_N)
    first_flag = next((ends_s[i] for i, f in enumerate(flags) if f), None)
    return {
        "file": label,
        "seconds": sig.shape[0] / fs,
        "windows": len(flags),
        "flagged": int(sum(flags)),
        "rate": (sum(flags) / len(flags)) if flags else 0.0,
        "first_flag_s": first_flag,
        "first_alert_s": ends_s[eps[0][0]] if eps else None,
        "episodes": len(eps),
        "min": float(s.min()),
        "median": float(np.median(s)),
        "max": float(s.max()),
    }


def vib_table(rows: list[dict]) -> list[str]:
    out = [
        "| data | length | windows | flagged | flagged % | first flagged window ends | alert opens (3 of 5) | alert episodes | score min / median / max |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['file']} | {r['seconds']:.3f} s | {r['windows']} | {r['flagged']} | {100 * r['rate']:.1f} % | "
            f"{fmt_s(r['first_flag_s'])} | {fmt_s(r['first_alert_s'])} | {r['episodes']} | "
            f"{r['min']:.2f} / {r['median']:.2f} / {r['max']:.2f} |"
        )
    return out


def vibration_section(b: Bundle, data: Path) -> tuple[list[str], dict]:
    cw = data / "cwru"
    healthy = load_f32(cw / "normal_0_97_12k.f32")
    cut = healthy_split(healthy.shape[0])
    fs = float(b.manifest["window"]["sample_rate_hz"])
    rows = [
        vib_file_row(b, "healthy, first 70 % (training)", healthy[:cut]),
        vib_file_row(b, "**healthy, last 30 % (held back)**", healthy[cut:], offset_s=cut / fs),
        vib_file_row(b, "**IR007_0_105 (inner race)**", load_f32(cw / "IR007_0_105.f32")),
        vib_file_row(b, "**B007_0_118 (ball)**", load_f32(cw / "B007_0_118.f32")),
        vib_file_row(b, "**OR007at6_0_130 (outer race)**", load_f32(cw / "OR007at6_0_130.f32")),
    ]
    hold, faults = rows[1], rows[2:]
    summary = {
        "fp_rate": hold["rate"],
        "fp_windows": f"{hold['flagged']} of {hold['windows']}",
        "fault_rates": {r["file"].strip("*").split(" ")[0]: r["rate"] for r in faults},
    }
    goal_fp = hold["rate"] <= 0.01
    goal_det = all(r["rate"] >= 0.95 for r in faults)
    lines = [
        "## Vibration: `vibration-default` on CWRU (12 kHz, drive end, 0 HP)",
        "",
        f"Threshold {b.threshold} ({b.manifest['training']['threshold_rule']}). "
        f"Features: {', '.join(b.features)}. Windows of {b.manifest['window']['length']} samples, "
        f"{int(100 * b.manifest['window']['overlap'])} % overlap. Times are from the start of each file "
        "(the held-back part keeps the time of the original recording) and give the end of the window, "
        "when the gateway can first score it.",
        "",
        *vib_table(rows),
        "",
        f"- False-positive rate on the held-back healthy 30 %: **{100 * hold['rate']:.1f} %** "
        f"({hold['flagged']} of {hold['windows']} windows; goal ≤ 1 %: {'met' if goal_fp else 'NOT met'}).",
        "- Detection rate on the fault files: "
        + ", ".join(f"{k} **{100 * v:.1f} %**" for k, v in summary["fault_rates"].items())
        + f" (goal ≥ 95 % each: {'met' if goal_det else 'NOT met'}).",
        f"- Lowest fault score / highest held-back healthy score: "
        f"{min(r['min'] for r in faults):.1f} / {hold['max']:.2f} (threshold {b.threshold}).",
        "",
        "Caveats, stated plainly: the held-back healthy part is 16 windows from the same 5 s recording "
        "as the training part, so a 0 % false-positive rate here says little about months on another "
        "machine; a 1 % rate cannot even be resolved with 16 windows. The faults are far from the "
        "healthy baseline mainly because their vibration energy (rms, peak-to-peak) is 2x (ball) to "
        "9x (outer race) the healthy level on this rig. On a different machine, load or sensor "
        "mounting the healthy level differs, and this default model will flag it: retrain on the "
        "machine's own healthy data (docs/models.md).",
        "",
    ]
    return lines, summary


def vib_alternatives(data: Path) -> list[str]:
    """Same recipe with other feature subsets: what the choice of features buys."""
    cw = data / "cwru"
    healthy = load_f32(cw / "normal_0_97_12k.f32")
    cut = healthy_split(healthy.shape[0])
    sets = {
        "shipped (7)": ["rms", "peak_to_peak", "kurtosis", "crest_factor", "dominant_freq_amplitude",
                        "spectral_centroid", "high_freq_energy"],
        "all but dominant_freq (10)": [f for f in WINDOW_FEATURES if f != "dominant_freq"],
        "shape only, no energy (kurtosis, skewness, crest_factor, spectral_centroid, high_freq_energy)":
            ["kurtosis", "skewness", "crest_factor", "spectral_centroid", "high_freq_energy"],
    }
    files = {"held back": healthy[cut:], "IR007": load_f32(cw / "IR007_0_105.f32"),
             "B007": load_f32(cw / "B007_0_118.f32"), "OR007": load_f32(cw / "OR007at6_0_130.f32")}
    import train as tr

    out = [
        "Same recipe (Ledoit-Wolf, threshold 1.25 x max leave-neighbours-out score) with other feature "
        "subsets, float64 scoring. Cells: flagged windows in % (highest score for the healthy data, lowest for a fault):",
        "",
        "| features | threshold | held back | IR007 | B007 | OR007 |",
        "|---|---|---|---|---|---|",
    ]
    for label, names in sets.items():
        x = window_matrix(healthy[:cut], 12000, names)
        m = mdl.fit(x, names)
        thr = tr.ceil4(1.25 * float(tr.leave_neighbours_out_scores(x, names).max()))
        cells = []
        for key, sig in files.items():
            s = m.score(window_matrix(sig, 12000, names))
            worst = s.max() if key == "held back" else s.min()
            cells.append(f"{100 * float(np.mean(s > thr)):.1f} ({worst:.1f})")
        out.append(f"| {label} | {thr} | " + " | ".join(cells) + " |")
    out += [
        "",
        "`dominant_freq` cannot be used at all: it is the same FFT bin (4142.6 Hz) in every healthy "
        "training window, so its standard deviation is 0. On this rig even the shape-only subset "
        "separates the ball fault B007, through its spectral features (more energy above 1 kHz), not "
        "through kurtosis or crest factor; the energy features give the shipped model a wider margin "
        "on B007. The shipped subset was chosen by reasoning (train.py says why each feature is in or "
        "out), not by searching subsets against the faults; the threshold uses healthy training "
        "windows only. During development the per-file feature ranges of the fault files were looked "
        "at, so this is not a blind test.",
        "",
    ]
    return out


def nab_eval(values: np.ndarray, ts: list[str], windows: list[tuple[str, str]], names: list[str],
             length: int, score_fn, threshold: float) -> dict:
    x = rolling_matrix(values, names, length)
    s = score_fn(x)
    flags = [False] * (length - 1) + list(s > threshold)
    eps = debounce_episodes(flags, DEBOUNCE_K, DEBOUNCE_N)
    idx = []
    for a, b in windows:
        i = next(k for k, t in enumerate(ts) if t >= a)
        j = max(k for k, t in enumerate(ts) if t <= b) + 1
        idx.append((i, j))
    res_windows = []
    for (i, j), (a, b) in zip(idx, windows):
        hits = [(o, c) for o, c in eps if o < j and c > i]  # open at some reading inside
        opened_inside = [o for o, c in hits if i <= o < j]
        first = hits[0][0] if hits else None
        res_windows.append({
            "start": a, "end": b, "alerted": bool(hits), "first_open": ts[first] if first is not None else None,
            "h_after_start": (first - i) * READING_MINUTES / 60 if first is not None else None,
            "h_before_end": (j - 1 - first) * READING_MINUTES / 60 if first is not None else None,
            "opened_inside": len(opened_inside),
            "max_score": float(s[max(0, i - length + 1): max(0, j - length + 1)].max()) if j > length else None,
        })
    false_eps = []
    for o, c in eps:
        if any(i <= o < j for i, j in idx):
            continue
        lookback = any(i < o + 1 and j > o - length + 1 for i, j in idx)  # rolling window holds labelled readings
        false_eps.append({"open": ts[o], "readings": c - o, "lookback_overlaps_window": lookback})
    return {"windows": res_windows, "false": false_eps, "episodes": len(eps), "flagged": int(sum(flags)),
            "scored": len(s)}


def nab_section(b: Bundle, data: Path) -> tuple[list[str], dict]:
    csv_name = "machine_temperature_system_failure.csv"
    ts, v = load_nab_csv(data / "nab" / csv_name)
    windows = load_nab_windows(data / "nab" / "anomaly_windows.json", csv_name)
    n = int(b.manifest["rolling"]["length"])
    r = nab_eval(v, ts, windows, b.features, n, b.scores, b.threshold)
    lines = [
        "## Temperature: `temperature-default` on NAB machine temperature",
        "",
        f"Threshold {b.threshold} ({b.manifest['training']['threshold_rule']}). Features: "
        f"{', '.join(b.features)} over the last {n} readings ({n * READING_MINUTES / 60:.0f} h at the "
        f"5-minute cadence). {len(ts)} readings scored in time order; the first {n - 1} have no score "
        f"(the rolling window is not full yet). {r['flagged']} readings flagged, {r['episodes']} alert "
        "episodes in all.",
        "",
        "| labelled window | alerted | first alert opens | hours after window start | hours before window end | highest score in window |",
        "|---|---|---|---|---|---|",
    ]
    for w in r["windows"]:
        lines.append(
            f"| {w['start']} .. {w['end']} | {'**yes**' if w['alerted'] else '**no**'} | {w['first_open'] or '–'} | "
            f"{'%.1f' % w['h_after_start'] if w['h_after_start'] is not None else '–'} | "
            f"{'%.1f' % w['h_before_end'] if w['h_before_end'] is not None else '–'} | "
            f"{'%.2f' % w['max_score'] if w['max_score'] is not None else '–'} |"
        )
    lines += ["", f"False alert episodes (opened outside every labelled window): **{len(r['false'])}**", ""]
    if r["false"]:
        lines += ["| opens | lasts (readings) | its 24 h look-back still holds labelled readings |", "|---|---|---|"]
        for f in r["false"]:
            lines.append(f"| {f['open']} | {f['readings']} | {'yes' if f['lookback_overlaps_window'] else 'no'} |")
        lines.append("")
    n_hit = sum(w["alerted"] for w in r["windows"])
    notes = []
    for w in r["windows"]:
        if w["alerted"]:
            continue
        i = next(k for k, t in enumerate(ts) if t >= w["start"])
        j = max(k for k, t in enumerate(ts) if t <= w["end"]) + 1
        after = v[j : j + 2 * 288]
        notes.append(
            f"Missed: {w['start'][:10]} .. {w['end'][:10]} (highest score {w['max_score']:.2f}, threshold "
            f"{b.threshold}). Its mean temperature is {v[i:j].mean():.1f} (std {v[i:j].std():.1f}); the 48 h "
            f"right after it, outside the labelled window and so part of the training data, have mean "
            f"{after.mean():.1f} (std {after.std():.1f}). A model trained on everything outside the windows "
            "learns such days as normal, so it cannot separate this window."
        )
    missed_note = " ".join(notes)
    close = [w for w in r["windows"] if w["alerted"] and w["max_score"] is not None
             and w["max_score"] < 1.1 * b.threshold]
    marginal_note = " ".join(
        f"The alert on {w['start'][:10]} .. {w['end'][:10]} is marginal: its highest score "
        f"{w['max_score']:.2f} is within 10 % of the threshold." for w in close
    )
    lines += [
        f"Result: {n_hit} of {len(r['windows'])} labelled windows alerted, {len(r['false'])} false alert "
        f"episode(s) (goal: every window, at most a few false alerts: "
        f"{'met' if n_hit == len(r['windows']) else 'NOT met'}).",
        "",
        "NAB's windows are centred on the labelled failure point, so about 24 h of each window lies "
        "before the event itself; 'hours after window start' of about 24 means the alert came at about "
        "the time of the labelled event. "
        f"{missed_note} "
        f"{marginal_note}",
        "",
    ]
    return lines, {"alerted": n_hit, "windows": len(r["windows"]), "false": len(r["false"])}


def nab_alternatives(data: Path) -> list[str]:
    """Sensitivity of the temperature model to rolling length and feature subset."""
    csv_name = "machine_temperature_system_failure.csv"
    ts, v = load_nab_csv(data / "nab" / csv_name)
    windows = load_nab_windows(data / "nab" / "anomaly_windows.json", csv_name)
    inside = np.zeros(v.shape[0], dtype=bool)
    for a, b in windows:
        for i, t in enumerate(ts):
            if a <= t <= b:
                inside[i] = True
    out = [
        "Sensitivity of the recipe (threshold = max training score) to the rolling length N and the "
        "feature subset, float64 scoring. Window columns give hours after window start of the first "
        "alert, '–' = missed:",
        "",
        "| N (readings) | features | threshold | 12-10 | 12-15 | 01-27 | 02-07 | false episodes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    subsets = [["value", "mean", "std", "min", "max"], ROLLING_FEATURES]
    for n in (12, 72, 288):
        full = rolling_matrix(v, ROLLING_FEATURES, n)
        touched = np.convolve(inside.astype(int), np.ones(n, dtype=int), mode="valid") > 0
        for names in subsets:
            cols = [ROLLING_FEATURES.index(f) for f in names]
            m = mdl.fit(full[~touched][:, cols], names)
            thr = float(m.score(full[~touched][:, cols]).max())
            r = nab_eval(v, ts, windows, names, n, lambda x, m=m: m.score(x), thr)
            cells = ["%.1f" % w["h_after_start"] if w["alerted"] else "–" for w in r["windows"]]
            label = "all 9" if names == ROLLING_FEATURES else ", ".join(names)
            out.append(f"| {n} | {label} | {thr:.2f} | " + " | ".join(cells) + f" | {len(r['false'])} |")
    out += [
        "",
        "The shipped choice is N = 288 with level/spread features. This choice was made with these "
        "windows in view (the NAB series has no separate validation part), so the NAB numbers above "
        "are optimistic for unseen machines; the threshold itself uses training data only.",
        "",
    ]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--models", type=Path, default=ROOT / "models")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "absolute-models-evaluation.md")
    args = ap.parse_args()

    import onnxruntime

    vib = Bundle(args.models / "vibration-default")
    temp = Bundle(args.models / "temperature-default")
    vib_lines, vs = vibration_section(vib, args.data)
    nab_lines, ns = nab_section(temp, args.data)
    doc = [
        "# Detection performance of the shipped absolute models (vibration-default, temperature-default)",
        "",
        "These bundles are models of ONE machine each (the CWRU rig at 12 kHz, the NAB machine at a "
        "5-minute cadence); the gateway uses them only where pinned or named by the S3 index. The "
        "default detection, relative to each channel's own baseline, is measured in docs/DETECTION.md.",
        "",
        "Generated by `python tools/train/evaluate.py --data ../shared/data` (from the project root, "
        "after `pip install -r tools/train/requirements.txt`); do not edit by hand. "
        f"Scores come from the committed `model.onnx` files run by onnxruntime {onnxruntime.__version__} "
        f"(Python {platform.python_version()}); features from `tools/train/features.py`, the reference "
        "the gateway's Rust code matches.",
        "",
        "Alert debounce (the gateway's default): a window (or reading) is anomalous when its score is "
        f"above the bundle's threshold; an alert opens when at least {DEBOUNCE_K} of the last "
        f"{DEBOUNCE_N} scored windows/readings are anomalous, and in this evaluation it closes again "
        f"when fewer than {DEBOUNCE_K} of the last {DEBOUNCE_N} are. An 'alert episode' is one "
        "open..close span. Confidence of an alert = clamp(1 - threshold / score, 0, 1).",
        "",
        "## Summary",
        "",
        f"- Vibration: {100 * vs['fp_rate']:.1f} % false windows on the held-back healthy data "
        f"({vs['fp_windows']}); detection "
        + ", ".join(f"{k} {100 * r:.1f} %" for k, r in vs["fault_rates"].items()) + ".",
        f"- Temperature: {ns['alerted']} of {ns['windows']} NAB anomaly windows alerted, "
        f"{ns['false']} false alert episode(s).",
        "",
        *vib_lines,
        "### Feature subset",
        "",
        *vib_alternatives(args.data),
        *nab_lines,
        "### Rolling length and features",
        "",
        *nab_alternatives(args.data),
        "## Reproduce",
        "",
        "```sh",
        "pip install -r tools/train/requirements.txt",
        "python tools/train/train.py --data ../shared/data --out models/   # retrain (byte-identical)",
        "python tools/train/evaluate.py --data ../shared/data              # rewrite this file",
        "python tools/train/bench_onnxruntime.py                           # onnxruntime µs/call",
        "```",
        "",
    ]
    args.doc.parent.mkdir(parents=True, exist_ok=True)
    args.doc.write_text("\n".join(doc))
    print(f"wrote {args.doc}")
    print(f"vibration: fp {vs['fp_windows']}, detection {vs['fault_rates']}")
    print(f"temperature: {ns}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
