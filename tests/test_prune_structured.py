"""Structured pruning of Gemm layers: the pruned model is a Gemm model again, keeps the
types it declared, and computes the network with the least important units removed.

The network (as torch and sklearn pipelines export it): x[N, 5] -> Scaler (ai.onnx.ml, whose
output type onnx cannot infer, so the model declares it) -> Gemm (transB) -> Relu -> Gemm ->
Relu -> Gemm -> Softmax. Oracles: numpy's forward pass with the units removed by the
documented importance rule (|W1 column| * |W2 row|, largest kept, chain by chain);
onnxruntime's own optimiser (the fused node count) and its static quantiser (the activations
it quantises).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnx.parser
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from edgefair.convert.prune import prune_structured
from edgefair.convert.quantize import QuantizeOptions, QuantMode, quantize
from edgefair.errors import ModelError

HIDDEN = 16
OFFSET = [1.0, -2.0, 0.5, 3.0, 0.0]
SCALE = [0.5, 2.0, 1.0, 0.25, 4.0]


def scaled_gemm_mlp(seed: int = 0) -> tuple[onnx.ModelProto, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 1, (5, HIDDEN)).astype(np.float32)
    w2 = rng.normal(0, 1, (HIDDEN, HIDDEN)).astype(np.float32)
    w3 = rng.normal(0, 1, (HIDDEN, 2)).astype(np.float32)
    b1, b2, b3 = (rng.normal(0, 0.1, n).astype(np.float32) for n in (HIDDEN, HIDDEN, 2))
    model = onnx.parser.parse_model(f"""
    <ir_version: 8, opset_import: ["" : 17, "ai.onnx.ml" : 1]>
    scaled (float[N, 5] x) => (float[N, 2] probabilities) {{
    s = ai.onnx.ml.Scaler <offset = {OFFSET}, scale = {SCALE}> (x)
    h1 = Gemm <transB = 1> (s, w1t, b1)
    r1 = Relu (h1)
    h2 = Gemm <transB = 1> (r1, w2t, b2)
    r2 = Relu (h2)
    z = Gemm <transB = 1> (r2, w3t, b3)
    probabilities = Softmax <axis = 1> (z)
    }}""")
    model.graph.initializer.extend(
        numpy_helper.from_array(np.ascontiguousarray(a), n)
        for a, n in ((w1.T, "w1t"), (b1, "b1"), (w2.T, "w2t"), (b2, "b2"), (w3.T, "w3t"), (b3, "b3"))
    )
    model.graph.value_info.append(helper.make_tensor_value_info("s", onnx.TensorProto.FLOAT, ["N", 5]))
    onnx.checker.check_model(model, full_check=True)
    return model, [w1, b1, w2, b2, w3, b3]


def numpy_pruned(weights: list[np.ndarray], fraction: float, x: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """The pruned network's probabilities by numpy, and the hidden widths it kept."""
    w1, b1, w2, b2, w3, b3 = (w.astype(np.float64) for w in weights)
    widths = []
    for layer in (0, 1):  # chain 1: (w1, b1) -> w2's rows; chain 2: (w2, b2) -> w3's rows
        a, b, c = (w1, b1, w2) if layer == 0 else (w2, b2, w3)
        n = a.shape[1]
        keep_n = max(1, round(n * (1 - fraction)))
        score = np.linalg.norm(a, axis=0) * np.linalg.norm(c, axis=1)
        keep = np.sort(np.argsort(-score, kind="stable")[:keep_n])
        a, b, c = a[:, keep], b[keep], c[keep, :]
        widths.append(len(keep))
        if layer == 0:
            w1, b1, w2 = a, b, c
        else:
            w2, b2, w3 = a, b, c
    s = (x.astype(np.float64) - np.array(OFFSET)) * np.array(SCALE)
    r1 = np.maximum(s @ w1 + b1, 0)
    r2 = np.maximum(r1 @ w2 + b2, 0)
    z = r2 @ w3 + b3
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True), widths


def _session(model: onnx.ModelProto, optimised_to: Path | None = None) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if optimised_to is not None:
        opts.optimized_model_filepath = str(optimised_to)
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


X = np.random.default_rng(7).normal(0, 2, (300, 5)).astype(np.float32)


def test_pruned_gemm_network_is_numpys_network_without_the_least_important_units() -> None:
    model, weights = scaled_gemm_mlp()
    for fraction in (0.25, 0.4):
        pruned = prune_structured(model, fraction).model
        expected, widths = numpy_pruned(weights, fraction, X)
        got = _session(pruned).run(None, {"x": X})[0]
        np.testing.assert_allclose(got, expected, atol=2e-5)
        assert widths == [12, 12] if fraction == 0.25 else [10, 10]
        dims = {t.name: list(t.dims) for t in pruned.graph.initializer}
        assert sorted(d for d in dims.values() if len(d) == 2) == sorted([[5, widths[0]], widths, [widths[1], 2]])


def test_pruned_model_is_a_gemm_model_that_onnxruntime_fuses_as_it_fuses_the_source() -> None:
    model, _ = scaled_gemm_mlp()
    pruned = prune_structured(model, 0.25).model
    assert [n.op_type for n in pruned.graph.node] == [n.op_type for n in model.graph.node]
    assert [v.name for v in pruned.graph.value_info] == ["s"]  # the declared type outside the chains stays
    with tempfile.TemporaryDirectory() as tmp:
        _session(model, Path(tmp) / "a.onnx")
        _session(pruned, Path(tmp) / "b.onnx")
        source_ops = [n.op_type for n in onnx.load(str(Path(tmp) / "a.onnx")).graph.node]
        pruned_ops = [n.op_type for n in onnx.load(str(Path(tmp) / "b.onnx")).graph.node]
    assert pruned_ops == source_ops and "FusedGemm" in source_ops, (source_ops, pruned_ops)


def test_static_int8_of_the_pruned_model_quantises_the_activations_the_source_s_does() -> None:
    model, _ = scaled_gemm_mlp()
    options = QuantizeOptions(mode=QuantMode.STATIC_INT8)
    feeds = {"x": X[:200]}

    def activation_quantisers(m: onnx.ModelProto) -> list[str]:
        q = quantize(m, options, feeds).model
        return sorted(n.input[0] for n in q.graph.node if n.op_type == "QuantizeLinear")

    source = activation_quantisers(model)
    assert "s" in source
    assert activation_quantisers(prune_structured(model, 0.25).model) == source


def numpy_refitted(weights: list[np.ndarray], fraction: float, rows: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The documented refit, chain by chain in numpy: cut by importance, then W2 and the bias
    after it by least squares on ``rows``, so that [A_kept, 1] [W2'; b'] is the source's A W2 + b,
    A_kept as the network cut so far computes it; the probabilities on ``x``."""
    w1, b1, w2, b2, w3, b3 = (w.astype(np.float64) for w in weights)
    s = (rows.astype(np.float64) - np.array(OFFSET)) * np.array(SCALE)
    source_a1 = np.maximum(s @ w1 + b1, 0)
    source_a2 = np.maximum(source_a1 @ w2 + b2, 0)
    keep_n = round(HIDDEN * (1 - fraction))

    def cut(a: np.ndarray, c: np.ndarray) -> np.ndarray:
        return np.sort(np.argsort(-(np.linalg.norm(a, axis=0) * np.linalg.norm(c, axis=1)), kind="stable")[:keep_n])

    def lstsq(a: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sol = np.linalg.lstsq(np.hstack([a, np.ones((len(a), 1))]), target, rcond=None)[0]
        return sol[:-1], sol[-1]

    k1 = cut(w1, w2)
    w1, b1, w2 = w1[:, k1], b1[k1], w2[k1, :]
    a1 = np.maximum(s @ w1 + b1, 0)
    w2, b2 = lstsq(a1, source_a1 @ weights[2].astype(np.float64) + weights[3])
    k2 = cut(w2, w3)
    w2, b2, w3 = w2[:, k2], b2[k2], w3[k2, :]
    a2 = np.maximum(a1 @ w2 + b2, 0)
    w3, b3 = lstsq(a2, source_a2 @ weights[4].astype(np.float64) + weights[5])
    sx = (x.astype(np.float64) - np.array(OFFSET)) * np.array(SCALE)
    z = np.maximum(np.maximum(sx @ w1 + b1, 0) @ w2 + b2, 0) @ w3 + b3
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_refit_is_numpys_least_squares_chain_by_chain_and_undoes_most_of_the_cut() -> None:
    model, weights = scaled_gemm_mlp()
    rows = np.random.default_rng(8).normal(0, 2, (400, 5)).astype(np.float32)
    fraction = 0.5
    refitted = prune_structured(model, fraction, refit={"x": rows})
    assert refitted.report["refitted_on_rows"] == 400
    got = _session(refitted.model).run(None, {"x": X})[0]
    np.testing.assert_allclose(got, numpy_refitted(weights, fraction, rows, X), atol=1e-4)
    # on rows it never saw, it is nearer the source than the plain cut
    source = _session(model).run(None, {"x": X})[0]
    plain = _session(prune_structured(model, fraction).model).run(None, {"x": X})[0]
    assert np.abs(got - source).mean() < 0.5 * np.abs(plain - source).mean()
    assert [n.op_type for n in refitted.model.graph.node] == [n.op_type for n in model.graph.node]


def test_refit_rows_with_missing_values_are_refused_not_fitted() -> None:
    model, _ = scaled_gemm_mlp()
    rows = np.random.default_rng(9).normal(0, 2, (50, 5)).astype(np.float32)
    rows[7, 2] = np.nan
    with pytest.raises(ModelError, match="non-finite activations"):
        prune_structured(model, 0.5, refit={"x": rows})
