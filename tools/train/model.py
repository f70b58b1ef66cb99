"""The anomaly model family shipped in edgegw bundles: scaled Mahalanobis distance.

score(x) = sqrt(sum_j (((x - mu) / sigma) @ W)_j^2)

mu, sigma: per-feature mean and population std of the training rows.
W: lower Cholesky factor of the Ledoit-Wolf shrunk precision matrix of the
standardised training rows, so that sum((z @ W)^2) = z P z^T.

The ONNX graph uses only Sub, Div, MatMul, Mul, ReduceSum (opset 13, axes as an
input tensor) and Sqrt, all implemented by tract 0.23 and onnxruntime.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from sklearn.covariance import LedoitWolf

OPSET = 13
IR_VERSION = 8
PRODUCER = "edgegw-train"
PRODUCER_VERSION = "1"


@dataclass
class Mahalanobis:
    mu: np.ndarray  # [F] float64
    sigma: np.ndarray  # [F] float64
    w: np.ndarray  # [F, F] float64, lower triangular
    shrinkage: float

    def score(self, x: np.ndarray) -> np.ndarray:
        """Scores of rows x [n, F] in float64 (reference; the ONNX graph runs in float32)."""
        z = (np.asarray(x, dtype=np.float64) - self.mu) / self.sigma
        d = z @ self.w
        return np.sqrt(np.sum(d * d, axis=1))


def fit(x: np.ndarray, names: list[str]) -> Mahalanobis:
    """Fit on training rows x [n, F]. Deterministic: no randomness is involved."""
    x = np.asarray(x, dtype=np.float64)
    mu = x.mean(axis=0)
    sigma = x.std(axis=0)  # population std, ddof = 0
    for name, s in zip(names, sigma):
        if not s > 0:
            raise ValueError(f"feature {name!r} is constant in the training data; drop it from the model")
    z = (x - mu) / sigma
    lw = LedoitWolf(store_precision=True, assume_centered=True).fit(z)
    precision = lw.precision_
    precision = (precision + precision.T) / 2.0
    w = np.linalg.cholesky(precision)
    return Mahalanobis(mu=mu, sigma=sigma, w=w, shrinkage=float(lw.shrinkage_))


def to_onnx(m: Mahalanobis, graph_name: str, doc: str) -> onnx.ModelProto:
    """The model as a small ONNX graph: input `features` [1, F] float32 -> `score` [1, 1] float32."""
    f = m.mu.shape[0]
    inits = [
        numpy_helper.from_array(m.mu.astype(np.float32).reshape(1, f), "mu"),
        numpy_helper.from_array(m.sigma.astype(np.float32).reshape(1, f), "sigma"),
        numpy_helper.from_array(m.w.astype(np.float32), "whiten"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "sum_axes"),
    ]
    nodes = [
        helper.make_node("Sub", ["features", "mu"], ["centred"], name="op_centre"),
        helper.make_node("Div", ["centred", "sigma"], ["z"], name="op_scale"),
        helper.make_node("MatMul", ["z", "whiten"], ["d"], name="op_whiten"),
        helper.make_node("Mul", ["d", "d"], ["d2"], name="op_square"),
        helper.make_node("ReduceSum", ["d2", "sum_axes"], ["d2_sum"], name="op_sum", keepdims=1),
        helper.make_node("Sqrt", ["d2_sum"], ["score"], name="op_distance"),
    ]
    graph = helper.make_graph(
        nodes,
        graph_name,
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, f])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, [1, 1])],
        initializer=inits,
        doc_string=doc,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name=PRODUCER,
        producer_version=PRODUCER_VERSION,
        ir_version=IR_VERSION,
    )
    onnx.checker.check_model(model, full_check=True)
    check_unique_names(model)
    return model


def check_unique_names(model: onnx.ModelProto) -> None:
    """tract turns initializers into nodes named after them and refuses duplicate
    node names ("duplicate name for node"), so node names must differ from every
    tensor name as well as from each other."""
    names = [n.name for n in model.graph.node] + [t.name for t in model.graph.initializer]
    dup = {x for x in names if names.count(x) > 1}
    if dup:
        raise ValueError(f"duplicate node/initializer names (tract rejects them): {sorted(dup)}")


ALLOWED_OPS = {"Sub", "Div", "MatMul", "Mul", "ReduceSum", "Sqrt"}


def ops_used(model: onnx.ModelProto) -> set[str]:
    return {n.op_type for n in model.graph.node}
