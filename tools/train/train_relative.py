#!/usr/bin/env python3
"""Build the two shipped *relative* edgegw model bundles.

Usage: python tools/train/train_relative.py [--out models/]

A relative bundle (manifest `"reference": "baseline"`) does not see a machine's
absolute features: its input is the vector of signed robust z values of the channel's
health features against the baseline the channel learned during commissioning
(docs/models.md, "Commissioning"). Because every input is already in units of "how
unusual is this for this very machine", one model serves machines it has never seen,
at any sample rate and in any unit.

The shipped relative models are a fixed rule written as an ONNX graph, not a fitted
model:

    vibration-relative:  z [1, 9] -> Relu -> TopK(k=2) -> ReduceMean -> score [1, 1]
    scalar-relative:     z [1, 4] -> Abs  -> TopK(k=2) -> ReduceMean -> score [1, 1]

that is the mean of the two largest deviations, one-sided for vibration (more energy
or impulsiveness is a fault, less is not) and two-sided for slow scalars. Requiring
two features to agree keeps one volatile feature from alarming alone. The threshold,
4 robust standard deviations, is a rule too (see docs/models.md). Nothing here is
fitted to the evaluation data: docs/DETECTION.md measures the bundles through
`edgegw replay` on recordings from three rigs. The format lets the cloud team ship a
*fitted* relative model (e.g. trained on many machines' z vectors) through S3 in the
same way; the gateway only needs the manifest's feature names.

Deterministic: re-running reproduces the committed files byte for byte.
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

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))

import model as mdl  # noqa: E402

CREATED = "2026-12-06"

VIB_FEATURES = [
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
SCALAR_FEATURES = ["level", "mean", "std", "slope"]
THRESHOLD = 4.0

BUNDLES = [
    {
        "name": "vibration-relative",
        "version": "2.0.0",
        "sensor_types": ["vibration", "bearing"],
        "kind": "window",
        "features": VIB_FEATURES,
        "sides": "upper",
        "example": [0.5, -0.2, 0.1, 6.0, 1.0, 9.5, 0.0, 2.0, -1.0],
        "data": "Any machine, any sample rate: inputs are robust z values against the channel's own commissioning baseline.",
    },
    {
        "name": "scalar-relative",
        "version": "2.0.0",
        "sensor_types": ["temperature", "general"],
        "kind": "rolling",
        "features": SCALAR_FEATURES,
        "sides": "both",
        "example": [-5.0, -3.0, 0.5, 1.0],
        "data": "Any slow scalar (temperature, pressure, ...), any cadence: inputs are robust z values of level, mean, std and slope over the rolling time window against the channel's own commissioning baseline.",
    },
]


def reference_score(z: np.ndarray, sides: str) -> float:
    d = np.maximum(z, 0.0) if sides == "upper" else np.abs(z)
    top = np.sort(d)[::-1][:2]
    return float(top.mean())


def to_onnx(n_features: int, sides: str, name: str) -> onnx.ModelProto:
    inits = [numpy_helper.from_array(np.array([2], dtype=np.int64), "top_k")]
    first = "Relu" if sides == "upper" else "Abs"
    nodes = [
        helper.make_node(first, ["features"], ["deviation"], name="op_deviation"),
        helper.make_node("TopK", ["deviation", "top_k"], ["top_values", "top_indices"], name="op_top2", axis=1),
        helper.make_node("ReduceMean", ["top_values"], ["score"], name="op_mean", axes=[1], keepdims=1),
    ]
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, n_features])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, [1, 1])],
        initializer=inits,
        doc_string="Mean of the two largest deviations of robust z values from the channel's baseline.",
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", mdl.OPSET)],
        producer_name=mdl.PRODUCER,
        producer_version=mdl.PRODUCER_VERSION,
        ir_version=mdl.IR_VERSION,
    )
    onnx.checker.check_model(model, full_check=True)
    mdl.check_unique_names(model)
    return model


def write(out: Path, spec: dict) -> None:
    import onnxruntime as ort

    d = out / spec["name"]
    d.mkdir(parents=True, exist_ok=True)
    model = to_onnx(len(spec["features"]), spec["sides"], spec["name"])
    onnx_path = d / "model.onnx"
    onnx_path.write_bytes(model.SerializeToString())
    example = np.array([spec["example"]], dtype=np.float32)
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = float(sess.run(["score"], {"features": example})[0].reshape(-1)[0])
    want = reference_score(example[0].astype(np.float64), spec["sides"])
    if abs(got - want) > 1e-6 * max(1.0, abs(want)):
        raise SystemExit(f"{spec['name']}: onnxruntime gives {got}, the rule {want}")
    manifest = {
        "name": spec["name"],
        "version": spec["version"],
        "sensor_types": spec["sensor_types"],
        "kind": spec["kind"],
        "reference": "baseline",
        "features": spec["features"],
        "input": {"name": "features", "shape": [1, len(spec["features"])], "dtype": "float32"},
        "output": {"name": "score"},
        "threshold": THRESHOLD,
        "sha256": hashlib.sha256(onnx_path.read_bytes()).hexdigest(),
        "example": {"input": [[float(v) for v in example[0]]], "output": got},
        "training": {
            "data": spec["data"],
            "rows": 0,
            "method": (
                "rule, no fitted parameters: mean of the two largest "
                + ("one-sided (upper) " if spec["sides"] == "upper" else "absolute ")
                + "robust z values against the channel's commissioning baseline"
            ),
            "threshold_rule": "4 robust standard deviations (docs/models.md)",
            "created": CREATED,
        },
    }
    (d / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"{d}: example score {got:.6f} (onnxruntime), sha256 {manifest['sha256'][:16]}...")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "models")
    args = ap.parse_args()
    for spec in BUNDLES:
        write(args.out, spec)


if __name__ == "__main__":
    main()
