"""Quantise an ONNX model: dynamic int8, static int8 (QDQ, calibrated), or fp16.

The known traps are handled here rather than left to the user:
- skl2onnx emits duplicate opset imports, which onnxruntime's quantiser rejects: merged.
- dynamic int8 does not cover Gemm: constant-weight Gemm becomes MatMul + Add first.
- calibration readers are single-use: a fresh one is built for every run.
- a model in which nothing was quantised is an error, never a "quantised" copy.
"""

from __future__ import annotations

import contextlib
import enum
import io
import logging
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgefair.convert.common import (
    ConversionResult,
    consumers,
    declare_ml_float_outputs,
    dedupe_opsets,
    drop_unused_opsets,
    gemm_to_matmul,
    model_bytes,
    op_counts,
    save_model,
)
from edgefair.convert.half import fp16
from edgefair.errors import InputError, ModelError

QUANTISED_OPS = {
    "MatMulInteger",
    "ConvInteger",
    "DynamicQuantizeLinear",
    "QuantizeLinear",
    "DequantizeLinear",
    "QLinearMatMul",
    "QLinearConv",
    "DynamicQuantizeMatMul",
    "MatMulIntegerToFloat",
    "QGemm",
}
STATIC_OPS = ("MatMul", "Gemm", "Conv", "ConvTranspose", "Relu", "Clip", "MaxPool", "AveragePool")
DYNAMIC_OPS = ("MatMul", "Conv", "Gather", "Attention", "LSTM")


class QuantMode(enum.Enum):
    DYNAMIC_INT8 = "dynamic"
    STATIC_INT8 = "static"
    FP16 = "fp16"


class CalibrationMethod(enum.Enum):
    MINMAX = "minmax"
    ENTROPY = "entropy"
    PERCENTILE = "percentile"


class QuantFormat(enum.Enum):
    """Static int8: QDQ (Quantize/DequantizeLinear pairs) or QOperator (QLinear* ops)."""

    QDQ = "qdq"
    QOPERATOR = "qoperator"


class IntType(enum.Enum):
    UINT8 = "uint8"
    INT8 = "int8"


@dataclass(frozen=True, kw_only=True)
class QuantizeOptions:
    mode: QuantMode = QuantMode.DYNAMIC_INT8
    per_channel: bool = False
    calibration_method: CalibrationMethod = CalibrationMethod.MINMAX
    calibration_rows: int = 2000
    calibration_batch: int = 200
    # Static int8 only: the weighted layer(s) that produce the outputs stay float. Quantised
    # logits flip decisions near the threshold (Adult MLP: 98.1% -> 99.4% agreement).
    keep_output_layer_float: bool = True
    seed: int = 0
    reduce_range: bool = False  # 7-bit weights: no saturation in the u8 x s8 kernels of CPUs without VNNI
    quant_format: QuantFormat = QuantFormat.QDQ  # static int8 only
    activation_type: IntType = IntType.UINT8  # static int8 only
    weight_type: IntType = IntType.INT8  # static int8 only
    nodes_to_exclude: tuple[str, ...] = ()  # kept in float; names as ``quantisable_nodes`` gives them

    def __post_init__(self) -> None:
        for name in ("calibration_rows", "calibration_batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{name} must be a whole number of at least 1, got {value!r}")


Progress = Callable[[int, int], None]


def balanced_sample(groups: np.ndarray, rows: int, seed: int = 0) -> np.ndarray:
    """Row indices with (up to) equal rows per group: minorities are not drowned out by the
    majority when activation ranges are calibrated. Small groups contribute all their rows."""
    values, codes = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    rng = np.random.default_rng(seed)
    per_group = max(1, rows // max(1, len(values)))
    picks = []
    for g in range(len(values)):
        members = np.flatnonzero(codes == g)
        take = min(per_group, len(members))
        picks.append(rng.choice(members, size=take, replace=False))
    return np.sort(np.concatenate(picks)) if picks else np.array([], np.int64)


class _FeedReader:
    """onnxruntime CalibrationDataReader over prepared feeds, in batches."""

    def __init__(self, feeds: Mapping[str, np.ndarray], batch: int, progress: Progress | None):
        self._feeds = feeds
        self._rows = len(next(iter(feeds.values())))
        self._batch = batch
        self._progress = progress
        self._iter: Iterator[dict[str, np.ndarray]] = self._batches()

    def _batches(self) -> Iterator[dict[str, np.ndarray]]:
        for start in range(0, self._rows, self._batch):
            if self._progress:
                self._progress(min(start + self._batch, self._rows), self._rows)
            yield {k: v[start : start + self._batch] for k, v in self._feeds.items()}

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._iter, None)

    def rewind(self) -> None:
        self._iter = self._batches()


def quantize(
    model: onnx.ModelProto,
    options: QuantizeOptions = QuantizeOptions(),
    calibration_feeds: Mapping[str, np.ndarray] | None = None,
    progress: Progress | None = None,
) -> ConversionResult:
    """Quantise ``model``; static mode needs ``calibration_feeds`` (model inputs -> arrays)."""
    if options.mode is QuantMode.FP16:
        work = onnx.ModelProto()
        work.CopyFrom(model)
        dedupe_opsets(work)
        _name_nodes(work)
        return fp16(work)
    with tempfile.TemporaryDirectory(prefix="edgefair-quant-") as tmp:
        src, out = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx"
        prepared, rewritten = _prepare(model, options, Path(tmp))
        before = op_counts(prepared)
        if options.mode is QuantMode.DYNAMIC_INT8:
            ops = [o for o in DYNAMIC_OPS if o in before]
            if not ops:
                raise ModelError(_nothing_message(before, "dynamic int8", DYNAMIC_OPS))
            noise = _run(lambda: _dynamic(src, out, ops, options))
        else:
            ops = [o for o in STATIC_OPS if o in before]
            if not ops:
                raise ModelError(_nothing_message(before, "static int8", STATIC_OPS))
            if not calibration_feeds:
                raise InputError("static int8 needs calibration data (--calibration-data)")
            reader = _FeedReader(calibration_feeds, options.calibration_batch, progress)
            excluded = _output_layers(prepared) if options.keep_output_layer_float else []
            noise = _run(lambda: _static(src, out, ops, options, reader, excluded))
        quantised = onnx.load_model(str(out))
        drop_unused_opsets(quantised)
    after = op_counts(quantised)
    added = {k: v for k, v in after.items() if k in QUANTISED_OPS}
    if not added:
        if options.nodes_to_exclude:  # the model has quantisable nodes; this variant keeps them all float
            raise ModelError(
                f"nothing to quantise with {options.mode.value}: every node it could quantise is kept float "
                f"({', '.join(options.nodes_to_exclude)}"
                f"{' and the output layer' if options.keep_output_layer_float else ''}); no quantised copy was written"
            )
        raise ModelError(_nothing_message(before, options.mode.value, ops))
    report = {
        "mode": options.mode.value,
        "per_channel": options.per_channel,
        "quantised_op_types": ops,
        "gemm_rewritten_as_matmul": rewritten,
        "nodes_quantised": _quantised_by_type(before, quantised, ops),
        "quantisation_ops_added": added,
        "size_before": len(model_bytes(model)),
        "size_after": len(model_bytes(quantised)),
        "quantiser_warnings": {"count": len(noise), "first": noise[0] if noise else None},
    }
    if options.reduce_range:
        report["reduce_range"] = True
    if options.nodes_to_exclude:
        report["nodes_kept_float"] = list(options.nodes_to_exclude)
    if options.mode is QuantMode.STATIC_INT8:
        report["format"] = options.quant_format.value
        report["activation_type"] = options.activation_type.value
        report["weight_type"] = options.weight_type.value
        report["calibration_method"] = options.calibration_method.value
        report["calibration_rows"] = len(next(iter(calibration_feeds.values())))  # type: ignore[union-attr]
    return ConversionResult(quantised, True, report)


def _as_matmul(options: QuantizeOptions) -> bool:
    """Dynamic int8 does not cover Gemm; QOperator's quantised Gemm (QGemm) is a
    com.microsoft op, which the model-safety check refuses: both get MatMul + Add."""
    return options.mode is QuantMode.DYNAMIC_INT8 or options.quant_format is QuantFormat.QOPERATOR


def _prepare(model: onnx.ModelProto, options: QuantizeOptions, tmp: Path) -> tuple[onnx.ModelProto, int]:
    """The graph the quantiser sees, saved as ``tmp/in.onnx``, and how many Gemm became MatMul.

    Op types, node names and output layers are read off the pre-processed graph: its
    optimiser fuses and renames nodes (MatMul + Add becomes Gemm, for one)."""
    work = onnx.ModelProto()
    work.CopyFrom(model)
    dedupe_opsets(work)
    _name_nodes(work)
    rewritten = gemm_to_matmul(work) if _as_matmul(options) else 0
    src = tmp / "in.onnx"
    save_model(work, src)
    prepared = declare_ml_float_outputs(onnx.load_model(str(_pre_process(src, tmp / "pre.onnx"))))
    if _as_matmul(options):
        rewritten = max(rewritten, gemm_to_matmul(prepared))
    _name_nodes(prepared)
    save_model(prepared, src)
    return prepared, rewritten


def quantisable_nodes(model: onnx.ModelProto, options: QuantizeOptions) -> tuple[str, ...]:
    """The weighted nodes (constant weights) that ``options`` quantise, named as in the graph
    the quantiser sees: the names ``QuantizeOptions.nodes_to_exclude`` takes."""
    if options.mode is QuantMode.FP16:
        return ()
    with tempfile.TemporaryDirectory(prefix="edgefair-quant-") as tmp:
        prepared, _ = _prepare(model, options, Path(tmp))
    constants = {t.name for t in prepared.graph.initializer}
    dynamic = options.mode is QuantMode.DYNAMIC_INT8
    weighted = ("MatMul", "Conv") if dynamic else ("MatMul", "Gemm", "Conv", "ConvTranspose")
    return tuple(
        n.name for n in prepared.graph.node if n.op_type in weighted and len(n.input) > 1 and n.input[1] in constants
    )


def _nothing_message(before: dict[str, int], mode: str, ops: Sequence[str]) -> str:
    top = ", ".join(f"{k} x{v}" for k, v in sorted(before.items(), key=lambda kv: -kv[1])[:6])
    return (
        f"nothing to quantise with {mode}: the model has none of {', '.join(ops)} with "
        f"float weights (its ops: {top}); no quantised copy was written"
    )


def _quantised_by_type(before: dict[str, int], quantised: onnx.ModelProto, ops: Sequence[str]) -> dict[str, int]:
    """Nodes per op type that now run in int8: replaced (dynamic) or fed by
    DequantizeLinear (QDQ)."""
    after = op_counts(quantised)
    dq = {o for n in quantised.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    out = {}
    for op in ops:
        # a weighted op runs in int8 when its weight is dequantised; others when their input is
        slot = 1 if op in ("MatMul", "Gemm", "Conv", "ConvTranspose") else 0
        wrapped = sum(
            1 for n in quantised.graph.node if n.op_type == op and len(n.input) > slot and n.input[slot] in dq
        )
        replaced = max(0, before.get(op, 0) - after.get(op, 0))
        if wrapped + replaced:  # count what changed, never "Relu x0"
            out[op] = wrapped + replaced
    return out


def _pre_process(src: Path, dst: Path) -> Path:
    """onnxruntime's quant_pre_process (shape inference, graph optimisation); skipped with
    the symbolic pass (needs sympy, fails on ML-domain ops) and whenever it cannot run."""
    import onnxruntime as ort
    from onnxruntime.quantization.shape_inference import quant_pre_process

    ort.set_default_logger_severity(3)  # the quantiser's own sessions warn about trivia

    try:
        quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
        return dst
    except Exception:  # pre-processing is an optimisation, not a requirement
        return src


class _Collect(logging.Handler):
    """Keeps what onnxruntime's quantiser logs, so it is summarised in the report, not printed."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage().splitlines()[0][:200] if record.getMessage() else record.levelname)


def _run(job: Callable[[], None]) -> list[str]:
    """Run a quantiser call with its log output collected; returns the warnings."""
    collect, root = _Collect(), logging.getLogger()
    saved = root.handlers[:]
    root.handlers[:] = [collect]  # the quantiser logs on the root logger
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            job()
    except (ModelError, InputError):
        raise
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"onnxruntime quantisation failed: {first}") from None
    finally:
        root.handlers[:] = saved
    return collect.messages + [str(w.message).splitlines()[0][:200] for w in caught]


def _dynamic(src: Path, out: Path, ops: list[str], options: QuantizeOptions) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load_model(str(src))
    # only nodes whose weight is a constant: activations x activations stay float
    constants = {t.name for t in model.graph.initializer}
    nodes = [n.name for n in model.graph.node if n.op_type in ops and len(n.input) > 1 and n.input[1] in constants]
    nodes = [n for n in nodes if n not in options.nodes_to_exclude]
    if not nodes:
        raise ModelError(_nothing_message(op_counts(model), "dynamic int8", ops))
    quantize_dynamic(
        str(src),
        str(out),
        op_types_to_quantize=ops,
        nodes_to_quantize=nodes,
        per_channel=options.per_channel,
        reduce_range=options.reduce_range,
        weight_type=QuantType.QInt8,
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )


def _output_layers(model: onnx.ModelProto) -> list[str]:
    """Weighted nodes from which a graph output is reached without another weighted node."""
    weighted = ("MatMul", "Gemm", "Conv", "ConvTranspose")
    readers = consumers(model)
    outputs = {o.name for o in model.graph.output}
    found = []
    for start in (n for n in model.graph.node if n.op_type in weighted):
        frontier, seen = list(start.output), set()
        while frontier:
            tensor = frontier.pop()
            if tensor in outputs:
                found.append(start.name)
                break
            for nxt in readers.get(tensor, []):
                if nxt.op_type not in weighted and nxt.name not in seen:
                    seen.add(nxt.name)
                    frontier.extend(nxt.output)
    return found


def _static(src: Path, out: Path, ops: list[str], options: QuantizeOptions, reader: Any, excluded: list[str]) -> None:
    from onnxruntime.quantization import CalibrationMethod as OrtMethod
    from onnxruntime.quantization import QuantFormat as OrtFormat
    from onnxruntime.quantization import QuantType, quantize_static

    method = {
        CalibrationMethod.MINMAX: OrtMethod.MinMax,
        CalibrationMethod.ENTROPY: OrtMethod.Entropy,
        CalibrationMethod.PERCENTILE: OrtMethod.Percentile,
    }[options.calibration_method]
    types = {IntType.UINT8: QuantType.QUInt8, IntType.INT8: QuantType.QInt8}
    with contextlib.redirect_stdout(io.StringIO()):  # the calibrators print progress
        quantize_static(
            str(src),
            str(out),
            reader,
            quant_format=OrtFormat.QDQ if options.quant_format is QuantFormat.QDQ else OrtFormat.QOperator,
            op_types_to_quantize=ops,
            per_channel=options.per_channel,
            reduce_range=options.reduce_range,
            nodes_to_exclude=[*excluded, *options.nodes_to_exclude],
            activation_type=types[options.activation_type],
            weight_type=types[options.weight_type],
            calibrate_method=method,
            extra_options={
                "CalibTensorRangeSymmetric": False,
                "CalibMovingAverage": False,
                "DefaultTensorType": onnx.TensorProto.FLOAT,
            },
        )


def _name_nodes(model: onnx.ModelProto) -> None:
    """Give every node a unique name: node lists passed to the converters need them."""
    seen: set[str] = set()
    for i, n in enumerate(model.graph.node):
        if not n.name or n.name in seen:
            n.name = f"{n.op_type}_{i}_edgefair"
        seen.add(n.name)
