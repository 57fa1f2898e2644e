"""Prune ONNX initializers.

- ``prune_magnitude``: per layer, zero the smallest-magnitude weights of every MatMul,
  Gemm and Conv. Same shapes, so it saves size after compression, not time.
- ``prune_structured``: remove whole hidden units from chains
  MatMul(W1) [-> Add(b)] -> elementwise activation -> MatMul(W2): columns of W1, entries
  of b, rows of W2. The matrices shrink, so the model really runs faster. Chains are found
  on MatMul (a Gemm with constant weights is rewritten as MatMul + Add for the search);
  every Gemm so rewritten is a Gemm again in the result: onnxruntime fuses Gemm + Relu and
  the static quantiser makes a QGemm of it, while a MatMul + Add whose shapes were dropped
  stays three unfused nodes (measured on the Adult MLP at batch 1: a pruned model ran
  slower than the unpruned one, its static int8 weight-only). With ``refit`` rows, each
  chain's second matrix and bias are refitted by least squares after the cut (no
  training): on the Adult MLP, 50-62.5% pruned then kept the default policy, which the
  plain cut fails from 22.5% on.
"""

from __future__ import annotations

import gzip
from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgefair import modelio
from edgefair.convert.common import ConversionResult, consumers, gemm_to_matmul, initializers, model_bytes
from edgefair.errors import InputError, ModelError

WEIGHTED_OPS = ("MatMul", "Gemm", "Conv")
ELEMENTWISE = (
    "Relu",
    "LeakyRelu",
    "Sigmoid",
    "Tanh",
    "Elu",
    "Selu",
    "Gelu",
    "HardSigmoid",
    "Softplus",
    "PRelu",
    "Celu",
    "HardSwish",
    "Mish",
)


def check_fraction(fraction: float, what: str) -> None:
    """The one bound on pruning fractions: strictly between 0 and 1."""
    if not 0.0 < fraction < 1.0:
        raise InputError(f"{what} must be between 0 and 1 (exclusive), got {fraction}")


def _compressed_size(model: onnx.ModelProto) -> int:
    return len(gzip.compress(model_bytes(model), compresslevel=6))


def prune_magnitude(model: onnx.ModelProto, sparsity: float) -> ConversionResult:
    """Zero the ``sparsity`` fraction of smallest |w| in each weight matrix."""
    check_fraction(sparsity, "prune fraction")
    work = onnx.ModelProto()
    work.CopyFrom(model)
    inits = initializers(work)
    layers: dict[str, float] = {}
    for node in work.graph.node:
        if node.op_type not in WEIGHTED_OPS or len(node.input) < 2 or node.input[1] not in inits:
            continue
        name = node.input[1]
        tensor = inits[name]
        if name in layers or tensor.data_type != onnx.TensorProto.FLOAT or len(tensor.dims) < 2:
            continue
        w = numpy_helper.to_array(tensor).copy()
        k = round(sparsity * w.size)
        if k:
            flat = w.reshape(-1)
            flat[np.argpartition(np.abs(flat), k - 1)[:k]] = 0.0
        tensor.CopyFrom(numpy_helper.from_array(w, name))
        layers[name] = float(np.mean(w == 0))
    if not layers:
        raise ModelError("nothing to prune: no MatMul, Gemm or Conv with float weight initializers")
    report = {
        "kind": "magnitude",
        "target_sparsity": sparsity,
        "sparsity_by_layer": layers,
        "compressed_size_before": _compressed_size(model),
        "compressed_size_after": _compressed_size(work),
    }
    return ConversionResult(work, sparsity > 0, report)


def _single_next(tensor: str, readers: dict[str, list[onnx.NodeProto]], outputs: set[str]) -> onnx.NodeProto | None:
    nxt = readers.get(tensor, [])
    return nxt[0] if len(nxt) == 1 and tensor not in outputs else None


def prune_structured(
    model: onnx.ModelProto, fraction: float, refit: Mapping[str, np.ndarray] | None = None
) -> ConversionResult:
    """Remove ``fraction`` of the hidden units of every prunable MatMul chain.

    ``refit`` (model inputs -> rows): after each chain is cut, in graph order, its second
    matrix and the bias added after it are refitted by least squares so that the chain's
    product on these rows, given the units kept (as the network cut so far computes them),
    is the source's: W2', b' = argmin |[A_kept, 1] [W2'; b'] - (A W2 + b)|^2."""
    check_fraction(fraction, "structured prune fraction")
    work = onnx.ModelProto()
    work.CopyFrom(model)
    was_gemm = {n.output[0] for n in work.graph.node if n.op_type == "Gemm" and n.domain in ("", "ai.onnx")}
    gemm_to_matmul(work)
    reference = onnx.ModelProto()
    reference.CopyFrom(work)  # the source, with the same tensor names as ``work``
    graph = work.graph
    inits = initializers(work)
    readers = consumers(work)
    outputs = {o.name for o in graph.output}
    uses = {name: len(readers.get(name, [])) for name in inits}
    layers: dict[str, dict[str, int]] = {}
    resized: set[str] = set()  # the tensors inside pruned chains: their last axis shrank
    for first in list(graph.node):
        chain = _chain_from(first, inits, readers, outputs, uses)
        if chain is None:
            continue
        w1_name, bias_name, w2_name, inside, act, product = chain
        resized.update(inside)
        w1 = numpy_helper.to_array(inits[w1_name])
        w2 = numpy_helper.to_array(inits[w2_name])
        hidden = w1.shape[1]
        keep_n = max(1, round(hidden * (1.0 - fraction)))
        importance = np.linalg.norm(w1, axis=0) * np.linalg.norm(w2, axis=1)
        keep = np.sort(np.argsort(-importance, kind="stable")[:keep_n])
        inits[w1_name].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(w1[:, keep]), w1_name))
        inits[w2_name].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(w2[keep, :]), w2_name))
        if bias_name:
            b = numpy_helper.to_array(inits[bias_name])
            nb = b[..., keep]
            inits[bias_name].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(nb), bias_name))
        if refit is not None:
            after = _bias_after(product, inits, readers, outputs, uses, w2.shape[1])
            _refit(work, reference, refit, act, product, w2_name, after, resized)
        layers[w1_name] = {"hidden_before": int(hidden), "hidden_after": int(keep_n)}
    if not layers:
        raise ModelError("nothing to prune structurally: no MatMul -> activation -> MatMul chain with constant weights")
    # shapes inside the chains changed (ORT re-infers them); every other tensor's declared
    # type stays: the static quantiser calibrates only tensors it knows are float
    kept = [v for v in graph.value_info if v.name not in resized]
    del graph.value_info[:]
    graph.value_info.extend(kept)
    _matmul_to_gemm(work, was_gemm)
    report = {
        "kind": "structured",
        "fraction": fraction,
        "refitted_on_rows": None if refit is None else len(next(iter(refit.values()))),
        "units_by_layer": layers,
        "size_before": len(model_bytes(model)),
        "size_after": len(model_bytes(work)),
    }
    return ConversionResult(work, fraction > 0, report)


def _bias_after(
    product: str,
    inits: dict[str, onnx.TensorProto],
    readers: dict[str, list[onnx.NodeProto]],
    outputs: set[str],
    uses: dict[str, int],
    width: int,
) -> str | None:
    """The constant bias (read there only) an Add puts on ``product``, if any."""
    add = _single_next(product, readers, outputs)
    if add is None or add.op_type != "Add" or add.input[0] != product:
        return None
    t = inits.get(add.input[1])
    if t is None or uses[add.input[1]] != 1 or int(np.prod(t.dims)) != width or t.data_type != onnx.TensorProto.FLOAT:
        return None
    return add.input[1]


def _values(model: onnx.ModelProto, names: list[str], feeds: Mapping[str, np.ndarray], stale: set[str]) -> list[Any]:
    """``names``' values when ``model`` runs on ``feeds`` (declared shapes in ``stale`` dropped)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    kept = [v for v in m.graph.value_info if v.name not in stale]
    del m.graph.value_info[:]
    m.graph.value_info.extend(kept)
    have = {o.name for o in m.graph.output}
    m.graph.output.extend(
        helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names if n not in have
    )
    return list(modelio.open_session(model_bytes(m)).run(names, dict(feeds)))


def _refit(
    work: onnx.ModelProto,
    reference: onnx.ModelProto,
    feeds: Mapping[str, np.ndarray],
    act: str,
    product: str,
    w2_name: str,
    bias: str | None,
    stale: set[str],
) -> None:
    """Refit W2 (and the bias after it) in ``work`` by least squares: see prune_structured."""
    inits = initializers(work)
    w2 = numpy_helper.to_array(inits[w2_name])
    (kept,) = _values(work, [act], feeds, stale)
    (target,) = _values(reference, [product], feeds, stale)
    a = np.asarray(kept, np.float64).reshape(-1, w2.shape[0])
    t = np.asarray(target, np.float64).reshape(-1, w2.shape[1])
    if not (np.isfinite(a).all() and np.isfinite(t).all()):
        raise ModelError(f"cannot refit {w2_name}: the refit rows give non-finite activations (missing values?)")
    if bias is not None:
        b = numpy_helper.to_array(inits[bias]).astype(np.float64)
        solution = _least_squares(np.hstack([a, np.ones((len(a), 1))]), t + b.reshape(-1))
        new_b = solution[-1].reshape(b.shape).astype(np.float32)
        inits[bias].CopyFrom(numpy_helper.from_array(new_b, bias))
        solution = solution[:-1]
    else:
        solution = _least_squares(a, t)
    inits[w2_name].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(solution, np.float32), w2_name))


RIDGE = 1e-9  # relative to the mean squared activation: only so that dead units do not make it singular


def _least_squares(a: np.ndarray, t: np.ndarray) -> np.ndarray:
    """argmin_X |a X - t|^2 by the normal equations (a few hundred columns: a small solve;
    numpy's SVD-based lstsq took ~1 s per layer on 1,000 rows)."""
    gram = a.T @ a
    gram[np.diag_indices_from(gram)] += RIDGE * max(float(np.trace(gram)) / len(gram), 1e-30)
    return np.linalg.solve(gram, a.T @ t)


def _matmul_to_gemm(model: onnx.ModelProto, was_gemm: set[str]) -> None:
    """Undo ``gemm_to_matmul`` for the nodes whose output was a Gemm's: MatMul(x, W) [+ Add(b)]
    becomes Gemm(x, W[, b]) (transB 0, alpha and beta 1: the same product, W already [K, N])."""
    graph = model.graph
    inits = initializers(model)
    readers = consumers(model)
    outputs = {o.name for o in graph.output}
    drop: set[int] = set()
    replace: dict[int, onnx.NodeProto] = {}
    position = {id(n): i for i, n in enumerate(graph.node)}
    for i, node in enumerate(graph.node):
        if node.op_type != "MatMul" or node.input[1] not in inits:
            continue
        inputs, out, last = [node.input[0], node.input[1]], node.output[0], i
        add = _single_next(out, readers, outputs)
        bias_add = add is not None and add.op_type == "Add" and add.input[0] == out and add.input[1] in inits
        if out not in was_gemm and bias_add and add is not None and add.output[0] in was_gemm:
            inputs, out, last = [*inputs, add.input[1]], add.output[0], position[id(add)]
        if out not in was_gemm:
            continue
        name = node.name.removesuffix("_matmul") or out
        replace[last] = onnx.helper.make_node("Gemm", inputs, [out], name=name)
        if last != i:
            drop.add(i)
    nodes = [replace.get(i, n) for i, n in enumerate(graph.node) if i not in drop]
    del graph.node[:]
    graph.node.extend(nodes)


def _chain_from(
    node: onnx.NodeProto,
    inits: dict[str, onnx.TensorProto],
    readers: dict[str, list[onnx.NodeProto]],
    outputs: set[str],
    uses: dict[str, int],
) -> tuple[str, str | None, str, tuple[str, ...], str, str] | None:
    """(W1, bias or None, W2, the tensors between W1's and W2's products, the activation W2
    multiplies, W2's product) when ``node`` starts a prunable chain, else None."""

    def const2d(name: str) -> bool:
        t = inits.get(name)
        return t is not None and len(t.dims) == 2 and t.data_type == onnx.TensorProto.FLOAT and uses[name] == 1

    if node.op_type != "MatMul" or not const2d(node.input[1]):
        return None
    hidden = inits[node.input[1]].dims[1]
    nxt = _single_next(node.output[0], readers, outputs)
    bias, bias_node = None, None
    if nxt is not None and nxt.op_type == "Add":
        other = nxt.input[1] if nxt.input[0] == node.output[0] else nxt.input[0]
        t = inits.get(other)
        if t is None or uses[other] != 1 or int(np.prod(t.dims)) != hidden or (t.dims and t.dims[-1] != hidden):
            return None
        bias, bias_node = other, nxt
        nxt = _single_next(nxt.output[0], readers, outputs)
    if nxt is None or nxt.op_type not in ELEMENTWISE or (len(nxt.input) > 1 and nxt.op_type != "PRelu"):
        return None
    if nxt.op_type == "PRelu":
        return None  # per-unit slopes would need slicing too; left alone
    last = _single_next(nxt.output[0], readers, outputs)
    if last is None or last.op_type != "MatMul" or last.input[0] != nxt.output[0]:
        return None
    if not const2d(last.input[1]) or inits[last.input[1]].dims[0] != hidden:
        return None
    inside = tuple(n.output[0] for n in (node, nxt)) + ((bias_node.output[0],) if bias_node is not None else ())
    return node.input[1], bias, last.input[1], inside, nxt.output[0], last.output[0]
