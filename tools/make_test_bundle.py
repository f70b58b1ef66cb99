#!/usr/bin/env python3
"""Builds the small ONNX bundle the Rust tests load: `tests/data/bundles/vibration-test/`.

Same graph family as the shipped defaults (Sub, Div, MatMul, Mul, ReduceSum, Sqrt):
standardise the feature vector, project onto a few principal directions, reconstruct,
and return the root of the summed squared residual as the anomaly score. The
parameters come from synthetic healthy windows (sine + noise at 12 kHz), so the test
bundle is deterministic and needs no real data. It is a test fixture, not a detector
to ship.

Usage: python3 tools/make_test_bundle.py [--out tests/data/bundles/vibration-test]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
from feature_vectors import window_features  # noqa: E402

FEATURES = [
    "rms", "peak_to_peak", "kurtosis", "skewness", "std", "crest_factor",
    "dominant_freq", "dominant_freq_amplitude", "spectral_centroid", "high_freq_energy", "mean",
]


def main() -> None:
    ap = argparse.ArgumentParser()
    root = Path(__file__).resolve().parent.parent
    ap.add_argument("--out", type=Path, default=root / "tests" / "data" / "bundles" / "vibration-test")
    args = ap.parse_args()

    rng = np.random.default_rng(7)
    fs, n = 12000.0, 2048
    t = np.arange(n) / fs
    rows = []
    for _ in range(200):
        f0 = 150.0 + rng.uniform(-10, 10)
        x = rng.uniform(0.4, 0.6) * np.sin(2 * np.pi * f0 * t + rng.uniform(0, 6.28))
        x += 0.05 * rng.standard_normal(n)
        rows.append([window_features(x.astype(np.float32).astype(np.float64), fs)[f] for f in FEATURES])
    X = np.asarray(rows)
    mu = X.mean(axis=0)
    sigma = np.maximum(X.std(axis=0), 1e-3 * np.maximum(np.abs(mu), 1.0))
    Z = (X - mu) / sigma
    _, _, vt = np.linalg.svd(Z, full_matrices=False)
    k = 4
    P = vt[:k].T  # [F, k]
    w = np.ones(len(FEATURES))

    def score(x: np.ndarray) -> np.ndarray:
        z = (x - mu) / sigma
        r = z - (z @ P) @ P.T
        return np.sqrt(np.sum(r * r * w, axis=1, keepdims=True))

    train_scores = score(X)[:, 0]
    threshold = float(np.quantile(train_scores, 0.995) * 1.5)

    f32 = lambda a: numpy_helper.from_array(np.asarray(a, dtype=np.float32))  # noqa: E731
    inits = [f32(mu.reshape(1, -1)), f32(sigma.reshape(1, -1)), f32(P), f32(P.T), f32(w.reshape(1, -1)),
             numpy_helper.from_array(np.array([1], dtype=np.int64))]
    for name, init in zip(["mu", "sigma", "proj", "proj_t", "weights", "axes"], inits):
        init.name = name
    nodes = [
        helper.make_node("Sub", ["features", "mu"], ["centered"]),
        helper.make_node("Div", ["centered", "sigma"], ["z"]),
        helper.make_node("MatMul", ["z", "proj"], ["code"]),
        helper.make_node("MatMul", ["code", "proj_t"], ["recon"]),
        helper.make_node("Sub", ["z", "recon"], ["resid"]),
        helper.make_node("Mul", ["resid", "resid"], ["sq"]),
        helper.make_node("Mul", ["sq", "weights"], ["wsq"]),
        helper.make_node("ReduceSum", ["wsq", "axes"], ["ss"], keepdims=1),
        helper.make_node("Sqrt", ["ss"], ["score"]),
    ]
    graph = helper.make_graph(
        nodes, "vibration_test_pca",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, len(FEATURES)])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, [1, 1])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="edgegw-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    data = model.SerializeToString()

    example_in = np.asarray(X[0:1], dtype=np.float32)
    example_out = float(score(example_in.astype(np.float64))[0, 0])
    try:
        import onnxruntime as ort

        sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        ort_out = float(sess.run(None, {"features": example_in})[0][0, 0])
        assert abs(ort_out - example_out) <= 1e-4 * max(1.0, abs(example_out)), (ort_out, example_out)
        example_out = ort_out
    except ImportError:
        pass

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "model.onnx").write_bytes(data)
    manifest = {
        "name": "vibration-test",
        "version": "0.0.1",
        "sensor_types": ["vibration", "bearing"],
        "kind": "window",
        "features": FEATURES,
        "window": {"length": n, "overlap": 0.5, "sample_rate_hz": fs},
        "input": {"name": "features", "shape": [1, len(FEATURES)], "dtype": "float32"},
        "output": {"name": "score"},
        "threshold": threshold,
        "sha256": hashlib.sha256(data).hexdigest(),
        "example": {"input": example_in.astype(np.float64).tolist(), "output": example_out},
        "training": {"note": "synthetic test fixture from tools/make_test_bundle.py; not for use on a plant",
                     "windows": len(rows), "components": k},
    }
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"wrote {args.out}: threshold {threshold:.4f}, example score {example_out:.4f}")


if __name__ == "__main__":
    main()
