"""What every conversion pass shares: loading, saving atomically, small graph fixes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgefair.errors import ModelError
from edgefair.files import write_atomic
from edgefair.modelio.safety import check_model_bytes


@dataclass(frozen=True)
class ConversionResult:
    """A pass's output: the new model, whether anything changed, and what it did."""

    model: onnx.ModelProto
    changed: bool
    report: dict[str, Any] = field(default_factory=dict)


def load_model(path: str | Path) -> onnx.ModelProto:
    """Read an ONNX file; anything else is a ModelError naming the file."""
    p = Path(path)
    if not p.exists():
        raise ModelError(f"{p}: no such file")
    if p.is_dir():
        raise ModelError(f"{p}: is a directory, expected an ONNX file")
    try:
        model = onnx.load_model(str(p), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise ModelError(f"{p}: not an ONNX model ({type(exc).__name__})") from None
    if not model.graph.node and not model.graph.output:
        raise ModelError(f"{p}: not an ONNX model (empty or truncated graph)")
    for t in model.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            raise ModelError(f"{p}: initializer {t.name!r} uses external data; pass a self-contained model")
    return model


def model_bytes(model: onnx.ModelProto) -> bytes:
    return bytes(model.SerializeToString())


def save_model(model: onnx.ModelProto, path: str | Path) -> Path:
    """Write atomically: a temp file beside the target, then rename."""
    return write_atomic(path, model_bytes(model))


def consumers(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    """Tensor name -> the nodes that read it."""
    out: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            out.setdefault(name, []).append(node)
    return out


def dedupe_opsets(model: onnx.ModelProto) -> bool:
    """Merge duplicate opset imports (skl2onnx emits them; ORT's quantiser rejects them)."""
    best: dict[str, int] = {}
    for op in model.opset_import:
        best[op.domain] = max(best.get(op.domain, 0), op.version)
    if len(best) == len(model.opset_import):
        return False
    del model.opset_import[:]
    model.opset_import.extend(helper.make_opsetid(d, v) for d, v in sorted(best.items()))
    return True


def drop_unused_opsets(model: onnx.ModelProto) -> list[str]:
    """Remove opset imports no node uses (ORT's quantiser adds eight); returns the removed."""
    used = {n.domain for n in model.graph.node} | {"", "ai.onnx"}
    used |= {f.domain for f in model.functions}
    keep = [o for o in model.opset_import if o.domain in used]
    removed = [o.domain for o in model.opset_import if o.domain not in used]
    if removed:
        del model.opset_import[:]
        model.opset_import.extend(keep)
    return removed


def initializers(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {t.name: t for t in model.graph.initializer}


def gemm_to_matmul(model: onnx.ModelProto) -> int:
    """Rewrite Gemm with constant weights as MatMul (+ Add): dynamic int8 and structured
    pruning both work on MatMul. Returns how many nodes were rewritten."""
    inits = initializers(model)
    new_nodes = []
    rewritten = 0
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        simple = (
            node.op_type == "Gemm"
            and node.domain in ("", "ai.onnx")
            and attrs.get("transA", 0) == 0
            and attrs.get("alpha", 1.0) == 1.0
            and attrs.get("beta", 1.0) == 1.0
            and node.input[1] in inits
        )
        if not simple:
            new_nodes.append(node)
            continue
        w = numpy_helper.to_array(inits[node.input[1]])
        if attrs.get("transB", 0):
            w = w.T
            name = node.input[1] + "_t"
            model.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(w), name))
        else:
            name = node.input[1]
        has_bias = len(node.input) > 2 and node.input[2]
        mm_out = node.output[0] + "_mm" if has_bias else node.output[0]
        new_nodes.append(
            helper.make_node("MatMul", [node.input[0], name], [mm_out], name=(node.name or mm_out) + "_matmul")
        )
        if has_bias:
            new_nodes.append(
                helper.make_node("Add", [mm_out, node.input[2]], [node.output[0]], name=(node.name or mm_out) + "_bias")
            )
        rewritten += 1
    if rewritten:
        del model.graph.node[:]
        model.graph.node.extend(new_nodes)
        drop_unused_initializers(model)
    return rewritten


def drop_unused_initializers(model: onnx.ModelProto) -> None:
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    keep = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)


def check_domains(model: onnx.ModelProto, where: str = "model") -> None:
    """The model-safety check (operator domains, external data, size) on an in-memory model."""
    check_model_bytes(model_bytes(model), where)


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    out: dict[str, int] = {}
    for n in model.graph.node:
        out[n.op_type] = out.get(n.op_type, 0) + 1
    return out


# ai.onnx.ml ops whose output is float by the spec but which onnx's type inference leaves
# untyped: after the optimiser drops skl2onnx's Cast, everything after a Scaler has no type,
# and onnxruntime's histogram calibrators (entropy, percentile) then find no tensor at all
FLOAT_ML_OUTPUTS = ("Scaler", "Normalizer", "LinearRegressor")


def declare_ml_float_outputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with those outputs declared float and the types inferred from there on."""
    graph = model.graph
    known = {v.name for v in (*graph.value_info, *graph.input, *graph.output)}
    ml = [n for n in graph.node if n.domain == "ai.onnx.ml" and n.op_type in FLOAT_ML_OUTPUTS and n.output]
    missing = [n.output[0] for n in ml if n.output[0] not in known]
    if not missing:
        return model
    graph.value_info.extend(helper.make_tensor_value_info(o, onnx.TensorProto.FLOAT, None) for o in missing)
    try:
        return onnx.shape_inference.infer_shapes(model)
    except Exception:  # inference refused: the declared outputs alone still help
        return model
