#!/usr/bin/env python3
"""Time onnxruntime per-call inference on each bundle's example input.

Usage: python tools/train/bench_onnxruntime.py [--models models/] [--iters 20000] [--repeats 5]

Single thread (intra- and inter-op), one `InferenceSession.run` per call with
the manifest's example input ([1, F] float32), as the gateway calls its model
once per window/reading. Prints the median over repeats of the mean µs/call, and
the best repeat; the Rust side compares tract against these numbers. The Python
call overhead of `run` (a few µs) is included: it is what a Python caller pays.
Needs no data set: only the committed bundles.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=Path, default=ROOT / "models")
    ap.add_argument("--iters", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    import onnxruntime as ort

    bundles = sorted(p.parent for p in args.models.glob("*/manifest.json"))
    if not bundles:
        raise SystemExit(f"{args.models}: no */manifest.json found")
    print(f"onnxruntime {ort.__version__}, Python {platform.python_version()}, {platform.machine()}, "
          f"1 thread, {args.iters} calls x {args.repeats} repeats")
    for b in bundles:
        man = json.loads((b / "manifest.json").read_text())
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sess = ort.InferenceSession(str(b / "model.onnx"), opts, providers=["CPUExecutionProvider"])
        x = np.asarray(man["example"]["input"], dtype=np.float32)
        feed = {man["input"]["name"]: x}
        out_name = [man["output"]["name"]]
        got = float(sess.run(out_name, feed)[0].reshape(-1)[0])
        if got != man["example"]["output"]:
            raise SystemExit(f"{b}: example output {got} != manifest {man['example']['output']}")
        for _ in range(min(2000, args.iters)):
            sess.run(out_name, feed)
        per_call = []
        for _ in range(args.repeats):
            t0 = time.perf_counter_ns()
            for _ in range(args.iters):
                sess.run(out_name, feed)
            per_call.append((time.perf_counter_ns() - t0) / args.iters / 1000.0)
        print(f"{man['name']:<22} F={x.shape[1]:<3} median {statistics.median(per_call):7.2f} µs/call  "
              f"best {min(per_call):7.2f} µs/call")
    return 0


if __name__ == "__main__":
    sys.exit(main())
