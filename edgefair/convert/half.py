"""fp16: the weights halved (onnxconverter-common), the preprocessing left in float32.

Only the compute from the first weighted op on goes to fp16. Everything the float32 part
(the preprocessing) computes with stays float32: its nodes, initializers and Constants.
Nothing is clamped silently: a tensor that would go to fp16 but holds a finite value beyond
fp16's range (|x| > 65504) stays float32 with the nodes that read it, and any value still
clamped (inside a subgraph) is reported, as are values that round to zero in fp16.

On CPU fp16 saves size, not time; ``quantize`` with ``QuantMode.FP16`` calls ``fp16``.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from edgefair.convert.common import ConversionResult, consumers, model_bytes
from edgefair.errors import ModelError

FP16_MAX = 65504.0  # fp16's largest finite value
WEIGHTED = ("MatMul", "Gemm", "Conv", "ConvTranspose")
_FLOAT = onnx.TensorProto.FLOAT
_HALF = onnx.TensorProto.FLOAT16


def _upstream_of_weights(model: onnx.ModelProto) -> list[str]:
    """Nodes before the first weighted op: the preprocessing. fp16 there buys nothing and
    breaks graphs that mix ML-domain float32 outputs into a Concat, so it stays float32."""
    readers = consumers(model)
    frontier = [n for n in model.graph.node if n.op_type in WEIGHTED]
    downstream: set[int] = set()
    while frontier:
        node = frontier.pop()
        if id(node) in downstream:
            continue
        downstream.add(id(node))
        for out in node.output:
            frontier.extend(readers.get(out, []))
    return [n.name for n in model.graph.node if id(n) not in downstream]


def _beyond(values: np.ndarray) -> int:
    """How many finite values fp16 cannot hold (|x| > 65504): they would be clamped."""
    a = np.abs(values.astype(np.float64, copy=False))
    return int(np.count_nonzero(np.isfinite(a) & (a > FP16_MAX)))


def _underflow(values: np.ndarray) -> int:
    """How many nonzero values round to zero in fp16 (|x| <= 2**-25): rounding, not a clamp."""
    with np.errstate(over="ignore"):
        return int(np.count_nonzero((values != 0) & (values.astype(np.float16) == 0)))


def _attribute_tensors(node: onnx.NodeProto) -> Iterator[onnx.TensorProto]:
    """Float tensors held in a node's attributes, in its subgraphs too."""
    for attr in node.attribute:
        for t in [attr.t, *attr.tensors]:
            if t.data_type == _FLOAT:
                yield t
        for g in [*attr.graphs, *([attr.g] if attr.HasField("g") else [])]:
            yield from (t for t in g.initializer if t.data_type == _FLOAT)
            for inner in g.node:
                yield from _attribute_tensors(inner)


def _split_shared(model: onnx.ModelProto, blocked: set[str]) -> None:
    """A float initializer read by both parts gets a copy for the fp16 readers: the
    converter would otherwise keep it float32 and hand an fp16 node a float32 input."""
    names = {n.name for n in model.graph.node} | {t.name for t in model.graph.initializer}
    read_by = consumers(model)
    for init in list(model.graph.initializer):
        if init.data_type != _FLOAT:
            continue
        readers = read_by.get(init.name, [])
        if not any(r.name in blocked for r in readers) or all(r.name in blocked for r in readers):
            continue
        copy_name = f"{init.name}_fp16"
        while copy_name in names:
            copy_name += "_"
        names.add(copy_name)
        copy = model.graph.initializer.add()
        copy.CopyFrom(init)
        copy.name = copy_name
        for r in readers:
            if r.name not in blocked:
                r.input[:] = [copy_name if i == init.name else i for i in r.input]


def _constants_as_initializers(model: onnx.ModelProto) -> None:
    """Float Constant nodes become initializers of the same name: the converter would send a
    Constant's value through fp16 on its way into a float32 node (and never drops that cast);
    an initializer is kept float32 for float32 readers and halved (checked) for fp16 ones."""
    keep = []
    for node in model.graph.node:
        values = None
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and len(node.attribute) == 1:
            a = node.attribute[0]
            if a.name == "value" and a.t.data_type == _FLOAT and not a.t.external_data:
                values = numpy_helper.to_array(a.t)
            elif a.name == "value_float":
                values = np.array(a.f, np.float32)
            elif a.name == "value_floats":
                values = np.array(a.floats, np.float32)
        if values is None:
            keep.append(node)
        else:
            model.graph.initializer.append(numpy_helper.from_array(values, node.output[0]))
    if len(keep) < len(model.graph.node):
        del model.graph.node[:]
        model.graph.node.extend(keep)


def _keep_out_of_range(model: onnx.ModelProto, blocked: set[str]) -> dict[str, int]:
    """Block the nodes that would read a tensor fp16 cannot hold (an initializer or an
    attribute), so it stays float32 with them. Returns tensor name -> values beyond range."""
    beyond = {t.name: _beyond(numpy_helper.to_array(t)) for t in model.graph.initializer if t.data_type == _FLOAT}
    kept: dict[str, int] = {}
    for node in model.graph.node:
        if node.name in blocked:
            continue
        hits = {i: beyond[i] for i in node.input if beyond.get(i)}
        for t in _attribute_tensors(node):
            if n := _beyond(numpy_helper.to_array(t)):
                hits[f"{node.name}.{t.name or 'value'}"] = n
        if hits:
            blocked.add(node.name)
            kept.update(hits)
    return kept


def _drop_round_trips(model: onnx.ModelProto, theirs: set[str]) -> int:
    """A float32 value cast to fp16 and straight back (the converter does this where a
    float32 node's output also feeds an fp16 one) is read as the float32 original. Only the
    converter's casts (not in ``theirs``, the model's own) are touched: those cast float32."""
    made = {n.output[0]: n for n in model.graph.node if n.op_type == "Cast" and n.output and n.name not in theirs}
    outputs = {o.name for o in model.graph.output}
    read_by = consumers(model)
    dropped = 0
    for node in model.graph.node:
        mine = node.op_type == "Cast" and node.input and node.name not in theirs
        first = made.get(node.input[0]) if mine else None
        if first is None or _to(first) != _HALF or _to(node) != _FLOAT or node.output[0] in outputs:
            continue
        for reader in read_by.get(node.output[0], []):
            reader.input[:] = [first.input[0] if i == node.output[0] else i for i in reader.input]
        dropped += 1
    while True:  # casts nothing reads any more
        read = {i for n in model.graph.node for i in n.input} | outputs
        dead = [n for n in model.graph.node if n.op_type == "Cast" and n.name not in theirs and n.output[0] not in read]
        if not dead:
            info = [v for v in model.graph.value_info if v.name in read]
            del model.graph.value_info[:]
            model.graph.value_info.extend(info)
            return dropped
        for n in dead:
            model.graph.node.remove(n)


def _to(cast: onnx.NodeProto) -> int:
    return next((a.i for a in cast.attribute if a.name == "to"), 0)


def _changed_values(
    source: onnx.ModelProto, converted: onnx.ModelProto, blocked: set[str]
) -> tuple[dict[str, int], dict[str, int]]:
    """Values the converter changed, by tensor: (clamped to +-65504, rounded to zero)."""
    before = {t.name: t for t in source.graph.initializer if t.data_type == _FLOAT}
    clamped: dict[str, int] = {}
    underflowed: dict[str, int] = {}

    def tally(name: str, t: onnx.TensorProto) -> None:
        values = numpy_helper.to_array(t)
        for counts, n in ((clamped, _beyond(values)), (underflowed, _underflow(values))):
            if n:
                counts[name] = counts.get(name, 0) + n

    for t in converted.graph.initializer:
        if t.data_type == _HALF and t.name in before:
            tally(t.name, before[t.name])
    for node in source.graph.node:  # the converter halves every unblocked node's attributes
        if node.name not in blocked:
            for t in _attribute_tensors(node):
                tally(f"{node.name}.{t.name or 'value'}", t)
    return clamped, underflowed


def fp16(model: onnx.ModelProto) -> ConversionResult:
    from onnxconverter_common import float16

    work = onnx.ModelProto()
    work.CopyFrom(model)
    inits = {t.name for t in work.graph.initializer} | {
        o for n in work.graph.node if n.op_type == "Constant" for o in n.output
    }
    # Exporters (torch's dynamo) list initializers in value_info; the converter then casts a
    # blocked node's initializer input instead of keeping it, and halves the initializer.
    kept_info = [v for v in work.graph.value_info if v.name not in inits]
    del work.graph.value_info[:]
    work.graph.value_info.extend(kept_info)
    _constants_as_initializers(work)
    if not any(t.data_type == _FLOAT for t in work.graph.initializer):
        raise ModelError("nothing to convert to fp16: the model has no float32 initializers")
    theirs = {n.name for n in work.graph.node if n.op_type == "Cast"}
    blocked = set(_upstream_of_weights(work))
    kept = _keep_out_of_range(work, blocked)
    _split_shared(work, blocked)
    floats = {t.name for t in work.graph.initializer if t.data_type == _FLOAT}
    float32 = {i for n in work.graph.node if n.name in blocked for i in n.input if i in floats}
    preprocessing = float32 - set(kept)
    source = onnx.ModelProto()
    source.CopyFrom(work)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # what it changed is counted below, by tensor
            converted = float16.convert_float_to_float16(
                work,
                min_positive_val=0.0,  # tiny values round (to zero) as fp16 does, not raised
                max_finite_val=FP16_MAX,
                keep_io_types=True,
                node_block_list=sorted(blocked),
            )
    except Exception as exc:
        raise ModelError(f"fp16 conversion failed: {exc}".splitlines()[0]) from None
    _drop_round_trips(converted, theirs)
    types = {t.name: t.data_type for t in converted.graph.initializer}
    halves = sum(1 for t in types.values() if t == _HALF)
    if not halves:
        raise ModelError("fp16 conversion changed nothing: no initializer became float16")
    lost = sorted(n for n in float32 if types.get(n, _FLOAT) != _FLOAT)
    if lost:  # the promise above, checked on the result rather than trusted to the converter
        raise ModelError(f"fp16 conversion halved constants that must stay float32: {', '.join(lost)}")
    clamped, underflowed = _changed_values(source, converted, blocked)
    report: dict[str, Any] = {
        "mode": "fp16",
        "initializers_converted": halves,
        "initializers_kept_float32": sorted(preprocessing),
        "kept_float32_out_of_fp16_range": kept,
        "values_clamped_to_fp16_range": sum(clamped.values()),
        "clamped_tensors": clamped,
        "values_underflowed_to_zero": sum(underflowed.values()),
        "underflowed_tensors": underflowed,
        "note": "fp16 halves the weights; on CPU it saves size, not time",
        "size_before": len(model_bytes(model)),
        "size_after": len(model_bytes(converted)),
    }
    return ConversionResult(converted, True, report)
