"""Fold an affine column scaling into the weighted layer it feeds: one node fewer per call.

The rule: a ``Scaler`` (ai.onnx.ml; ``y = (x - offset) * scale`` per column) whose float
input has a known column count, read only by a ``Concat`` on the last axis of 2-D tensors
(or fed straight to the layer), whose output is read only by a ``Gemm`` (transA 0, alpha
and beta 1, constant B) or a ``MatMul`` with a constant 2-D B followed by an ``Add`` of a
constant bias. With the Scaler's columns at rows ``c .. c + k`` of B (as [K, N]):

    B'[c + j] = B[c + j] * scale[j]      bias' = bias - sum_j offset[j] * scale[j] * B[c + j]

and the Scaler's input goes to the Concat directly. The product is the same up to float
rounding; the variant is gated like any other. At batch 1 every node costs a fixed few
microseconds, which is a share of the whole call when the model is small.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgefair.convert.common import consumers, initializers

ML = "ai.onnx.ml"


def fold_scalers(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """(a copy of ``model`` with every foldable Scaler folded, how many were folded)."""
    work = onnx.ModelProto()
    work.CopyFrom(model)
    folded = 0
    while _fold_one(work):
        folded += 1
    return work, folded


def _widths(model: onnx.ModelProto) -> dict[str, tuple[int, int | None]]:
    """Tensor -> (rank, last axis or None), from the graph and onnx shape inference."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # an op onnx cannot infer: what the graph declares is still used
        inferred = model
    g = inferred.graph
    out: dict[str, tuple[int, int | None]] = {}
    for v in [*g.input, *g.value_info, *g.output]:
        t = v.type.tensor_type
        if t.elem_type != onnx.TensorProto.FLOAT or not t.HasField("shape"):
            continue
        dims = t.shape.dim
        out[v.name] = (len(dims), dims[-1].dim_value if dims and dims[-1].HasField("dim_value") else None)
    return out


def _fold_one(model: onnx.ModelProto) -> bool:
    graph = model.graph
    inits = initializers(model)
    readers = consumers(model)
    outputs = {o.name for o in graph.output}
    widths = _widths(model)

    def only_reader(tensor: str) -> onnx.NodeProto | None:
        r = readers.get(tensor, [])
        return r[0] if len(r) == 1 and tensor not in outputs else None

    for scaler in graph.node:
        if scaler.op_type != "Scaler" or scaler.domain != ML:
            continue
        attrs = {a.name: list(helper.get_attribute_value(a)) for a in scaler.attribute}
        rank, k = widths.get(scaler.input[0], (0, None))
        if rank != 2 or k is None:
            continue  # a float matrix with a known column count only
        offset = np.asarray(attrs.get("offset", [0.0]), np.float64)
        scale = np.asarray(attrs.get("scale", [1.0]), np.float64)
        if offset.size not in (1, k) or scale.size not in (1, k):
            continue
        offset, scale = np.broadcast_to(offset, (k,)), np.broadcast_to(scale, (k,))
        concat, start, layer_input = None, 0, scaler.output[0]
        nxt = only_reader(scaler.output[0])
        if nxt is not None and nxt.op_type == "Concat" and nxt.domain in ("", "ai.onnx"):
            axis = next((helper.get_attribute_value(a) for a in nxt.attribute if a.name == "axis"), None)
            before = list(nxt.input).index(scaler.output[0])
            shapes = [widths.get(t, (0, None)) for t in nxt.input[:before]]
            if axis not in (1, -1) or list(nxt.input).count(scaler.output[0]) != 1:
                continue
            if any(r != 2 or w is None for r, w in shapes):
                continue
            concat, start, layer_input = nxt, sum(w for _, w in shapes if w is not None), nxt.output[0]
            nxt = only_reader(nxt.output[0])
        target = _layer(nxt, layer_input, inits, only_reader, lambda t: len(readers.get(t, [])))
        if target is None:
            continue
        weight_name, transposed, bias_name, add = target
        w = numpy_helper.to_array(inits[weight_name]).astype(np.float64)
        wk = w.T if transposed else w  # [K, N]
        if start + k > wk.shape[0]:
            continue
        rows = wk[start : start + k]
        correction = (offset * scale) @ rows  # [N]
        new = wk.copy()
        new[start : start + k] = rows * scale[:, None]
        stored = new.T if transposed else new
        inits[weight_name].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(stored, np.float32), weight_name))
        if bias_name is not None:
            b = numpy_helper.to_array(inits[bias_name]).astype(np.float64)
            inits[bias_name].CopyFrom(numpy_helper.from_array((b - correction).astype(np.float32), bias_name))
        else:  # a Gemm without C gets one
            name = weight_name + "_folded_bias"
            graph.initializer.append(numpy_helper.from_array((-correction).astype(np.float32), name))
            assert add is not None and add.op_type == "Gemm"
            add.input.append(name)
        if concat is not None:
            concat.input[list(concat.input).index(scaler.output[0])] = scaler.input[0]
        else:
            nxt_node = readers[scaler.output[0]][0]
            nxt_node.input[list(nxt_node.input).index(scaler.output[0])] = scaler.input[0]
        graph.node.remove(scaler)
        dropped = {scaler.output[0]}
        kept = [v for v in graph.value_info if v.name not in dropped]
        del graph.value_info[:]
        graph.value_info.extend(kept)
        return True
    return False


def _layer(
    node: onnx.NodeProto | None,
    tensor: str,
    inits: dict[str, onnx.TensorProto],
    only_reader: Callable[[str], onnx.NodeProto | None],
    uses: Callable[[str], int],
) -> tuple[str, bool, str | None, onnx.NodeProto | None] | None:
    """(weight, stored transposed, bias or None, the node that adds the bias) of the weighted
    layer that reads ``tensor`` as its first input, when the fold applies to it (its weight
    and bias constants read by that layer alone)."""
    if node is None or node.input[0] != tensor or node.domain not in ("", "ai.onnx"):
        return None
    if len(node.input) < 2 or node.input[1] not in inits or uses(node.input[1]) != 1:
        return None
    if inits[node.input[1]].data_type != onnx.TensorProto.FLOAT:
        return None  # the folded weights are written back as float32
    if node.op_type == "Gemm":
        a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
        if a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0:
            return None
        if len(inits[node.input[1]].dims) != 2:
            return None
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
        if bias is not None and (
            bias not in inits or uses(bias) != 1 or inits[bias].data_type != onnx.TensorProto.FLOAT
        ):
            return None
        n = inits[node.input[1]].dims[0 if a.get("transB", 0) else 1]
        if bias is not None and int(np.prod(inits[bias].dims)) != n:
            return None  # a per-row bias would not take a per-column correction
        return node.input[1], bool(a.get("transB", 0)), bias, node
    if node.op_type == "MatMul" and len(inits[node.input[1]].dims) == 2:
        add = only_reader(node.output[0])
        if add is None or add.op_type != "Add" or add.input[0] != node.output[0] or add.input[1] not in inits:
            return None
        if uses(add.input[1]) != 1 or inits[add.input[1]].data_type != onnx.TensorProto.FLOAT:
            return None
        n = inits[node.input[1]].dims[1]
        if int(np.prod(inits[add.input[1]].dims)) != n:
            return None
        return node.input[1], False, add.input[1], add
    return None
