#!/usr/bin/env python3
"""Write docs/DETECTION.md from `edgegw replay` runs on the real recordings.

Usage: python3 tools/detection_report.py [--data ../shared/data] [--bin target/debug/edgegw]
                                         [--out docs/DETECTION.md]

Every number in the report comes from the Rust pipeline through `edgegw replay`
(the same code the daemon runs); this script only runs the commands, reads their
JSON reports, computes the reference points of the data sets (the PRONOSTIA 3x RMS
snapshot, NAB's labelled windows) and writes the tables. Each table names the command
that produced it. Needs only the Python standard library.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START = "2026-01-01T00:00:00Z"
START_S = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc).timestamp()


def run_replay(binary: str, args: list[str]) -> tuple[dict, str]:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    cmd = [binary, "replay", *args, "--json", out, "--quiet"]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{res.stdout}\n{res.stderr}")
    report = json.loads(Path(out).read_text())
    os.unlink(out)
    return report, "edgegw replay " + " ".join(a if " " not in a else repr(a) for a in args)


def rel(p: Path) -> str:
    try:
        return os.path.relpath(p, ROOT)
    except ValueError:
        return str(p)


def pct(a: int, b: int) -> str:
    return f"{100.0 * a / b:.1f} %" if b else "–"


def num(v) -> str:
    if v is None:
        return "–"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def episodes(report: dict, types=None) -> list[dict]:
    """Open..resolved spans of alert episodes (by anomaly type), with their updates."""
    eps = []
    open_by_type = {}
    last = max((i["last_us"] or 0) for i in report["inputs"])
    for a in report["alerts"]:
        t = a["anomaly_type"]
        if types and t not in types:
            continue
        if a["state"] == "open":
            e = {"type": t, "open_us": a["ts_us"], "close_us": None, "severity": [a["severity"]],
                 "escalations": [], "components": [a["likely_component"]] if a["likely_component"] else [],
                 "input": a["input"], "first": a}
            eps.append(e)
            open_by_type[t] = e
        elif t in open_by_type:
            e = open_by_type[t]
            if a["state"] == "resolved":
                e["close_us"] = a["ts_us"]
                del open_by_type[t]
            else:
                e["severity"].append(a["severity"])
                if a["escalated"]:
                    e["escalations"].append((a["ts_us"], a["severity"]))
                if a["likely_component"]:
                    e["components"].append(a["likely_component"])
    for e in eps:
        e["still_open"] = e["close_us"] is None
        if e["close_us"] is None:
            e["close_us"] = last
    return eps


FAULT_TYPES = {"vibration_anomaly", "temperature_anomaly", "vibration_severity"}


# --- CWRU -----------------------------------------------------------------------

def cwru(binary: str, data: Path) -> tuple[list[str], dict]:
    lines = []
    cfg = "config/replay/cwru.toml"
    normal = data / "cwru/normal_0_97_12k.f32"
    rows = []
    healthy = None
    results = {}
    want = {"IR007_0_105": ("inner race", {"inner_race"}), "OR007at6_0_130": ("outer race", {"outer_race"}),
            "B007_0_118": ("ball", {"ball", "ball_or_cage"})}
    cmds = []
    for name, (label, ok) in want.items():
        r, cmd = run_replay(binary, ["--config", cfg, "--sensor", "cwru.de", "--rate", "12000",
                                     "--input", rel(normal), "--input", rel(data / f"cwru/{name}.f32")])
        cmds.append(cmd)
        healthy = r["inputs"][0]
        fault = r["inputs"][1]
        eps = [e for e in episodes(r, FAULT_TYPES) if e["input"] == 1]
        comps = [c for e in eps for c in e["components"]]
        first_named = next((a for a in r["alerts"] if a["input"] == 1 and a["likely_component"]), None)
        t0 = fault["first_us"]
        named_ok = bool(comps) and comps[-1] in ok and all(c in ok for c in comps)
        results[name] = {"flagged": fault["flagged"], "scored": fault["scored"], "named": named_ok}
        rows.append(
            f"| **{name}** ({label}) | {fault['scored']} | {fault['flagged']} | **{pct(fault['flagged'], fault['scored'])}** "
            f"| {num(fault['score_min'])} / {num(fault['score_median'])} / {num(fault['score_max'])} "
            f"| {len(eps)} | {', '.join(sorted(set(comps))) or '–'} "
            f"| {((first_named['ts_us'] - t0) / 1e6 + 2048 / 12000):.2f} s |" if first_named else
            f"| **{name}** ({label}) | {fault['scored']} | {fault['flagged']} | **{pct(fault['flagged'], fault['scored'])}** "
            f"| {num(fault['score_min'])} / {num(fault['score_median'])} / {num(fault['score_max'])} | {len(eps)} | – | – |")
    results["healthy"] = {"flagged": healthy["flagged"], "scored": healthy["scored"]}
    lines += [
        "## Vibration: CWRU bearing rig (12 kHz, drive end, 0 hp, 1797 rpm)",
        "",
        f"Config `{cfg}`: the channel learns its baseline on the first half (2.54 s) of the healthy "
        "recording; the second half is scored as held-back healthy data; then a fault recording plays "
        "on the same channel with continuous time. Bearing 6205 at 1797 rpm is configured, so alerts "
        "name the likely component from the envelope spectrum (averaged over the last 8 windows) "
        "against the channel's own baseline. Windows of 2048 samples, 50 % overlap. Commands "
        "(one per fault file; the healthy part is the same in each):",
        "",
        "```sh",
        *cmds,
        "```",
        "",
        "| data | windows scored | flagged | flagged % | score min / median / max | fault episodes | component named | first named after |",
        "|---|---|---|---|---|---|---|---|",
        f"| **healthy, second half** (after learning on the first) | {healthy['scored']} | {healthy['flagged']} | **{pct(healthy['flagged'], healthy['scored'])}** "
        f"| {num(healthy['score_min'])} / {num(healthy['score_median'])} / {num(healthy['score_max'])} | {healthy['episodes_opened']} | – | – |",
        *rows,
        "",
        "Threshold 4 (robust standard deviations, `vibration-relative@2.0.0`). 'First named after': "
        "seconds of fault data until an alert (open or update) named the component.",
        "",
    ]
    return lines, results


# --- PRONOSTIA --------------------------------------------------------------------

def rms_reference(path: Path) -> int:
    raw = path.read_bytes()
    n = len(raw) // 2
    vals = struct.unpack(f"<{n}h", raw)
    snaps = [vals[i:i + 2560] for i in range(0, n, 2560)]
    rms = [math.sqrt(sum((v * 0.001) ** 2 for v in s) / len(s)) for s in snaps]
    med = sorted(rms[:100])
    median = (med[49] + med[50]) / 2
    return next(i + 1 for i, r in enumerate(rms) if r > 3 * median), len(snaps)


def snapshot_of(ts_us: int) -> int:
    return int(round((ts_us / 1e6 - START_S - 0.0999) / 10)) + 1


def pronostia(binary: str, data: Path, learn_variants=("30min", "45min", "60min")) -> tuple[list[str], dict]:
    lines = [
        "## Vibration: PRONOSTIA run-to-failure bearings (25.6 kHz)",
        "",
        "Config `config/replay/pronostia.toml`: one 2560-sample window per 0.1 s snapshot (every 10 s); "
        "the channel learns for its first 45 minutes (135 snapshots, one per 20 s) — a 2.5-hour "
        "accelerated life test standing in for a day of a real machine's months. No bearing geometry is "
        "given for this rig, so alerts do not name a component. The reference snapshot is the first "
        "whose RMS exceeds 3x the median RMS of the first 100 snapshots, computed by this script from "
        "the data.",
        "",
    ]
    cmds = []
    rows = []
    results = {}
    for bearing, dev in [("Bearing1_2", "b1_2"), ("Bearing2_1", "b2_1")]:
        path = data / f"pronostia/{bearing}_acc_h.i16"
        ref, total = rms_reference(path)
        half = total // 2
        r, cmd = run_replay(binary, ["--config", "config/replay/pronostia.toml", "--sensor", f"{dev}.acc_h",
                                     "--input", rel(path), "--rate", "25600", "--scale", "0.001",
                                     "--snapshot", "2560", "--period", "10"])
        cmds.append(cmd)
        eps = episodes(r, FAULT_TYPES)
        first_half = [e for e in eps if snapshot_of(e["open_us"]) <= half]
        late = [e for e in eps if snapshot_of(e["open_us"]) > half]
        sustained = next((e for e in late if e["still_open"]), None)
        first_open = snapshot_of(late[0]["open_us"]) if late else None
        esc = [(snapshot_of(t), s) for e in late for (t, s) in e["escalations"]]
        other = [a for a in r["alerts"] if a["anomaly_type"] not in FAULT_TYPES and a["state"] == "open"]
        results[bearing] = {"first_half": len(first_half), "open": first_open, "ref": ref,
                            "sustained_open": snapshot_of(sustained["open_us"]) if sustained else None,
                            "escalations": esc}
        inp = r["inputs"][0]
        rows.append(
            f"| **{bearing}** | {total} | {half} | {ref} | {len(first_half)} | "
            f"{first_open if first_open else '–'} | "
            f"{snapshot_of(sustained['open_us']) if sustained else '–'} | "
            f"{', '.join(f'{s} at {x}' for x, s in esc) or '–'} | {max((s for e in late for s in e['severity']), default='–')} | "
            f"{inp['flagged']} of {inp['scored']} | {len(other)} |")
    lines += ["```sh", *cmds, "```", "",
              "| bearing | snapshots | half | 3x RMS reference | episodes in first half | first episode opens (snapshot) | sustained episode opens | escalations (severity at snapshot) | highest severity | windows above threshold | other events (state changed, sensor) |",
              "|---|---|---|---|---|---|---|---|---|---|---|", *rows, ""]
    # Sensitivity to the learning period (not used to choose it).
    sens = ["| learning period | " + " | ".join(["Bearing1_2: first-half episodes / first open", "Bearing2_1: first-half episodes / first open"]) + " |",
            "|---|---|---|"]
    for learn in learn_variants:
        cells = []
        for bearing, dev in [("Bearing1_2", "b1_2"), ("Bearing2_1", "b2_1")]:
            path = data / f"pronostia/{bearing}_acc_h.i16"
            _, total = rms_reference(path)
            cfg = make_variant("config/replay/pronostia.toml", {"learn = \"45min\"": f"learn = \"{learn}\""})
            r, _ = run_replay(binary, ["--config", cfg, "--sensor", f"{dev}.acc_h", "--input", rel(path), "--rate",
                                       "25600", "--scale", "0.001", "--snapshot", "2560", "--period", "10"])
            eps = episodes(r, FAULT_TYPES)
            fh = sum(1 for e in eps if snapshot_of(e["open_us"]) <= total // 2)
            late = [snapshot_of(e["open_us"]) for e in eps if snapshot_of(e["open_us"]) > total // 2]
            cells.append(f"{fh} / {late[0] if late else '–'}")
        sens.append(f"| {learn} | " + " | ".join(cells) + " |")
    lines += ["Sensitivity to the learning period (same config otherwise; the shipped configs use 45 min):", "", *sens, ""]
    return lines, results


VARIANT_DIR = None


def make_variant(cfg: str, replace: dict) -> str:
    """A copy of a replay config with text replaced, next to the original (so its
    relative profile_dir still resolves)."""
    global VARIANT_DIR
    src = ROOT / cfg
    text = src.read_text()
    for a, b in replace.items():
        if a not in text:
            sys.exit(f"{cfg}: {a!r} not found")
        text = text.replace(a, b)
    if VARIANT_DIR is None:
        VARIANT_DIR = []
    path = src.parent / f".variant-{len(VARIANT_DIR)}.toml"
    path.write_text(text)
    VARIANT_DIR.append(path)
    return rel(path)


# --- NAB --------------------------------------------------------------------------

def nab(binary: str, data: Path) -> tuple[list[str], dict]:
    windows = json.loads((data / "nab/anomaly_windows.json").read_text())["machine_temperature_system_failure.csv"]
    wins = [(dt.datetime.fromisoformat(a).replace(tzinfo=dt.timezone.utc).timestamp() * 1e6,
             dt.datetime.fromisoformat(b).replace(tzinfo=dt.timezone.utc).timestamp() * 1e6) for a, b in windows]
    fmt = lambda us: dt.datetime.fromtimestamp(us / 1e6, dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
    lines = [
        "## Temperature: NAB machine temperature",
        "",
        "Config `config/replay/nab.toml`: the channel learns for its first week (one sample per "
        "10 minutes of it); rolling window 24 h (level, mean, spread and trend over the last 24 h, "
        "in time, not readings); two-sided scores (`scalar-relative@2.0.0`, threshold 4) and the trend "
        "(CUSUM). The same config at the data's 5-minute cadence and resampled to hourly means. "
        "A labelled window counts as alerted when an alert episode is open at any time inside it; an "
        "episode that overlaps no labelled window is false.",
        "",
        "```sh",
        "edgegw replay --config config/replay/nab.toml --sensor machine.temp --input "
        + rel(data / "nab/machine_temperature_system_failure.csv"),
        "edgegw replay --config config/replay/nab.toml --sensor machine.temp --input "
        + rel(data / "nab/machine_temperature_system_failure.csv") + " --resample 3600",
        "```",
        "",
    ]
    results = {}
    cmds = []
    for label, extra in [("5 min", []), ("1 hour", ["--resample", "3600"])]:
        r, cmd = run_replay(binary, ["--config", "config/replay/nab.toml", "--sensor", "machine.temp", "--input",
                                     rel(data / "nab/machine_temperature_system_failure.csv"), *extra])
        cmds.append(cmd)
        eps = episodes(r, {"temperature_anomaly"})
        hit = [[e for e in eps if e["open_us"] <= b and e["close_us"] >= a] for a, b in wins]
        false = [e for e in eps if not any(e["open_us"] <= b and e["close_us"] >= a for a, b in wins)]
        results[label] = {"hit": sum(1 for h in hit if h), "false": len(false)}
        lines += [f"### Cadence {label}: {sum(1 for h in hit if h)} of 4 labelled windows alerted, {len(false)} false episode(s)", "",
                  f"Learning ended {fmt(r['status'][0]['baseline_learned_us'])} after {r['status'][0]['baseline_samples']} samples; "
                  f"{r['inputs'][0]['scored']} readings scored, {r['inputs'][0]['flagged']} above the threshold.", "",
                  "| labelled window | alerted | episode(s) overlapping it |", "|---|---|---|"]
        for (a, b), h in zip(wins, hit):
            spans = ", ".join(f"{fmt(e['open_us'])} .. {fmt(e['close_us'])}" for e in h) or "–"
            lines.append(f"| {fmt(a)} .. {fmt(b)} | **{'yes' if h else 'no'}** | {spans} |")
        lines += ["", "All episodes:", "", "| opens | closes | overlaps a labelled window |", "|---|---|---|"]
        for e in eps:
            ov = any(e["open_us"] <= b and e["close_us"] >= a for a, b in wins)
            lines.append(f"| {fmt(e['open_us'])} | {fmt(e['close_us'])}{' (still open)' if e['still_open'] else ''} | {'yes' if ov else '**no (false)**'} |")
        lines.append("")
    sens = ["| learning period | 5 min: alerted / false | 1 hour: alerted / false |", "|---|---|---|"]
    for learn in ["5d", "6d", "7d"]:
        cfg = make_variant("config/replay/nab.toml", {"learn = \"7d\"": f"learn = \"{learn}\""})
        cells = []
        for extra in [[], ["--resample", "3600"]]:
            r, _ = run_replay(binary, ["--config", cfg, "--sensor", "machine.temp", "--input",
                                       rel(data / "nab/machine_temperature_system_failure.csv"), *extra])
            eps = episodes(r, {"temperature_anomaly"})
            h = sum(1 for a, b in wins if any(e["open_us"] <= b and e["close_us"] >= a for e in eps))
            f = sum(1 for e in eps if not any(e["open_us"] <= b and e["close_us"] >= a for a, b in wins))
            cells.append(f"{h} of 4 / {f}")
        sens.append(f"| {learn} | " + " | ".join(cells) + " |")
    lines += ["Sensitivity to the learning period (the shipped config uses 7 days):", "", *sens, ""]
    return lines, results


# --- other rates -------------------------------------------------------------------

def other_rates(binary: str, data: Path) -> list[str]:
    r, cmd = run_replay(binary, ["--config", "config/replay/cwru.toml", "--sensor", "cwru.de", "--rate", "48000",
                                 "--input", rel(data / "cwru/normal_0_97_48k.f32")])
    i = r["inputs"][0]
    return [
        "## The same config at another sample rate",
        "",
        "The healthy CWRU recording at its original 48 kHz (the 12 kHz file is decimated from it): "
        "same config, same 2048-sample windows (now 43 ms each), no retraining. The channel learns on "
        "the first 2.54 s and scores the rest.",
        "",
        "```sh", cmd, "```", "",
        f"{i['units']} windows, {i['commissioning']} learning, {i['scored']} scored, **{i['flagged']} above the threshold** "
        f"(score min / median / max {num(i['score_min'])} / {num(i['score_median'])} / {num(i['score_max'])}), "
        f"{i['episodes_opened']} fault episodes.",
        "",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared/data")
    ap.add_argument("--bin", default=str(ROOT / "target/debug/edgegw"))
    ap.add_argument("--out", type=Path, default=ROOT / "docs/DETECTION.md")
    args = ap.parse_args()
    data = args.data.resolve()
    try:
        c_lines, c = cwru(args.bin, data)
        p_lines, p = pronostia(args.bin, data)
        n_lines, n = nab(args.bin, data)
        o_lines = other_rates(args.bin, data)
    finally:
        for v in VARIANT_DIR or []:
            v.unlink(missing_ok=True)
    version = subprocess.run([args.bin, "--version"], capture_output=True, text=True).stdout.strip()
    ok = lambda b: "met" if b else "**NOT met**"
    summary = [
        f"- CWRU healthy, second half after learning on the first: **{c['healthy']['flagged']} of {c['healthy']['scored']}** windows flagged (goal 0: {ok(c['healthy']['flagged'] == 0)}).",
    ]
    for name in ["IR007_0_105", "OR007at6_0_130", "B007_0_118"]:
        x = c[name]
        summary.append(f"- CWRU {name}: **{pct(x['flagged'], x['scored'])}** of windows flagged, component named correctly: "
                       f"{'yes' if x['named'] else '**no**'} (goal >= 95 % and named: {ok(x['flagged'] >= 0.95 * x['scored'] and x['named'])}).")
    for b, x in p.items():
        good = x["first_half"] == 0 and x["sustained_open"] is not None and x["sustained_open"] <= x["ref"]
        summary.append(f"- PRONOSTIA {b}: {x['first_half']} episodes in the first half; sustained alert from snapshot "
                       f"**{x['sustained_open']}** (reference {x['ref']}); escalations: {len(x['escalations'])} (goal: {ok(good and x['escalations'])}).")
    for cad, x in n.items():
        summary.append(f"- NAB at {cad}: **{x['hit']} of 4** labelled windows alerted, **{x['false']}** false episodes "
                       f"(goal >= 3 and <= 2: {ok(x['hit'] >= 3 and x['false'] <= 2)}).")
    head = [
        "# Detection on machines it was never trained on",
        "",
        "Generated by `python3 tools/detection_report.py --data ../shared/data --bin target/debug/edgegw` "
        f"({version}); do not edit by hand. Every number below comes from `edgegw replay`, which feeds "
        "the recording through the same pipeline code the daemon runs (commissioning, features, the "
        "shipped relative bundles, trend, episodes), offline and at full speed. Each section gives its "
        "commands; add `--csv FILE` to any of them for every window's features and score.",
        "",
        "How detection works (details: docs/models.md): each channel first **learns its own healthy "
        "baseline** during a learning period; after that its health features are compared with that "
        "baseline as robust z values and scored by a relative model bundle — the same bundle for every "
        "machine, sample rate and unit. Nothing in these runs was trained on the recording it is scored "
        "on, apart from the learning period at its start, as on a real machine after installation.",
        "",
        "## Summary",
        "",
        *summary,
        "",
    ]
    caveats = [
        "## Caveats, stated plainly",
        "",
        "- These are three rigs. The rules (threshold 4, the scale floor of 0.15 in log units, "
        "two features must agree, the trend's allowance of half the threshold and alarm at five times "
        "it, 3 of 5 windows to open) were chosen by reasoning and checked on them — the choices and "
        "the alternatives that were tried are in docs/models.md. The results of prototypes of the "
        "method on these recordings were looked at while choosing, so this is not a blind test; "
        "the sensitivity tables show how much the outcome depends on the learning period.",
        "- CWRU's healthy recording is 5 s: the held-back half is 27 windows, which cannot show a false "
        "alarm rate of 1 in 1000. The faults are strong (twice to nine times the healthy energy).",
        "- The ball fault B007 is named through the cage-rate (FTF) line in the envelope spectrum "
        "('ball or cage'), not through the ball spin frequency: on this recording the ball defect "
        "modulates the vibration at the cage frequency. An alert names a component only when one "
        "family stands out (1.5x its baseline level and 1.25x the next).",
        "- PRONOSTIA's bearings run near their early level for most of their life and degrade within "
        "minutes at the end; the gateway sees the last minutes. Bearing2_1's energy above 4 kHz rises "
        "several-fold during its first hour (healthy by the data set's account), which the learning "
        "period partly sees and which the one-sided score tolerates because no second feature rises with "
        "it. Bearing1_2 opens exactly at its reference snapshot: there is no margin to spare there.",
        "- NAB: the labelled window 2014-01-27 .. 2014-01-29 is a long shallow dip that the machine also "
        "shows outside labelled windows, so it is missed; the false episode around 2014-02-03 is a "
        "9-hour drop to about 50 that is not labelled.",
        "",
    ]
    text = "\n".join(head + c_lines + p_lines + n_lines + o_lines + caveats) + "\n"
    args.out.write_text(text)
    print(f"wrote {rel(args.out)}")


if __name__ == "__main__":
    main()
