"""Tiny ONNX models built in place (ONNX text syntax), for tests."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.parser
from onnx import helper, numpy_helper


def sklearn_onnx(estimator: object, sample: np.ndarray) -> bytes:
    """A fitted scikit-learn classifier as ONNX bytes (skl2onnx, opset 17): probabilities as a
    plain [N, 2] tensor (no ZipMap), the input typed from one row of ``sample``."""
    from skl2onnx import to_onnx

    options = {id(estimator): {"zipmap": False}}
    return to_onnx(estimator, sample[:1], options=options, target_opset=17).SerializeToString()


def mlp(inputs: int = 4, hidden: int = 16, seed: int = 0, gemm: bool = False) -> onnx.ModelProto:
    """x[N, inputs] -> MatMul/Gemm -> Relu -> MatMul -> Sigmoid -> score[N, 1]."""
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 1, (inputs, hidden)).astype(np.float32)
    b1 = rng.normal(0, 0.1, hidden).astype(np.float32)
    w2 = rng.normal(0, 1, (hidden, 1)).astype(np.float32)
    first = "h = Gemm (x, w1t, b1) <transB = 1>" if gemm else "m = MatMul (x, w1)\n    h = Add (m, b1)"
    model = onnx.parser.parse_model(f"""
    <ir_version: 8, opset_import: ["" : 17]>
    tiny (float[N, {inputs}] x) => (float[N, 1] score) {{
    {first}
    r = Relu (h)
    z = MatMul (r, w2)
    score = Sigmoid (z)
    }}""")
    w1_init = numpy_helper.from_array(np.ascontiguousarray(w1.T) if gemm else w1, "w1t" if gemm else "w1")
    model.graph.initializer.extend([w1_init, numpy_helper.from_array(b1, "b1"), numpy_helper.from_array(w2, "w2")])
    onnx.checker.check_model(model, full_check=True)
    return model


def no_weights() -> onnx.ModelProto:
    """A model with nothing to quantise: score = Sigmoid(x)."""
    return onnx.parser.parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    plain (float[N, 1] x) => (float[N, 1] score) { score = Sigmoid (x) }""")


def with_domain(domain: str) -> onnx.ModelProto:
    node = helper.make_node("Custom", ["x"], ["score"], domain=domain)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 1])],
        [helper.make_tensor_value_info("score", onnx.TensorProto.FLOAT, ["N", 1])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(domain, 1)])
