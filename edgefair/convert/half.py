"""fp16: the weights halved (onnxconverter-common), the preprocessing left in float32.

On CPU fp16 saves size, not time; ``quantize`` with ``QuantMode.FP16`` calls ``fp16``.
"""

from __future__ import annotations

import warnings

import onnx

from edgefair.convert.common import ConversionResult, consumers, model_bytes
from edgefair.errors import ModelError


def _upstream_of_weights(model: onnx.ModelProto) -> list[str]:
    """Nodes before the first weighted op: the preprocessing. fp16 there buys nothing and
    breaks graphs that mix ML-domain float32 outputs into a Concat, so it stays float32."""
    readers = consumers(model)
    frontier = [n for n in model.graph.node if n.op_type in ("MatMul", "Gemm", "Conv", "ConvTranspose")]
    downstream: set[int] = set()
    while frontier:
        node = frontier.pop()
        if id(node) in downstream:
            continue
        downstream.add(id(node))
        for out in node.output:
            frontier.extend(readers.get(out, []))
    return [n.name for n in model.graph.node if id(n) not in downstream]


def fp16(model: onnx.ModelProto) -> ConversionResult:
    from onnxconverter_common import float16

    floats_before = sum(1 for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT)
    if not floats_before:
        raise ModelError("nothing to convert to fp16: the model has no float32 initializers")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            converted = float16.convert_float_to_float16(
                model, keep_io_types=True, node_block_list=_upstream_of_weights(model)
            )
    except Exception as exc:
        raise ModelError(f"fp16 conversion failed: {exc}".splitlines()[0]) from None
    halves = sum(1 for t in converted.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16)
    if not halves:
        raise ModelError("fp16 conversion changed nothing: no initializer became float16")
    report = {
        "mode": "fp16",
        "initializers_converted": halves,
        "values_clamped_to_fp16_range": sum("truncated" in str(w.message) for w in caught),
        "note": "fp16 halves the weights; on CPU it saves size, not time",
        "size_before": len(model_bytes(model)),
        "size_after": len(model_bytes(converted)),
    }
    return ConversionResult(converted, True, report)
