"""Model signatures, feeds from named columns, and scores/decisions from outputs.

Needs only numpy and onnxruntime, so the runtime, the server, convert's checks and
verify's evaluation all share it. Columns are matched to inputs by name: a model input
``age`` of shape [N] or [N, 1] takes the column ``age``; a single 2-D input [N, k] takes
``k`` feature columns (named, or every non-label, non-sensitive column in order).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgefair.errors import InputError, ModelError

ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
    "tensor(string)": np.object_,
    "tensor(float16)": np.float16,
}
SCORE_NAME_HINTS = ("probabilities", "probability", "prob", "score", "output_probability")


@dataclass(frozen=True)
class TensorSpec:
    name: str
    type: str  # onnxruntime's spelling, e.g. "tensor(float)"
    shape: tuple[int | str | None, ...]

    @property
    def numpy_dtype(self) -> Any:
        if self.type not in ORT_TYPES:
            raise ModelError(f"tensor {self.name!r} has unsupported type {self.type}")
        return ORT_TYPES[self.type]

    @property
    def width(self) -> int | None:
        """Features per row: 1 for [N] or [N, 1], k for [N, k], None if unknown."""
        if len(self.shape) <= 1:
            return 1
        if len(self.shape) == 2 and isinstance(self.shape[1], int):
            return self.shape[1]
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "shape": [d if isinstance(d, int) else None for d in self.shape],
        }


@dataclass(frozen=True)
class Signature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def input_names(self) -> list[str]:
        return [i.name for i in self.inputs]


def open_session(model: str | Path | bytes, threads: int = 1) -> Any:
    """An onnxruntime CPU session with ``threads`` intra-op threads; ModelError on failure."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    what = "the model" if isinstance(model, bytes) else str(model)
    if not isinstance(model, bytes):
        if not Path(model).exists():
            raise ModelError(f"{model}: no such file")
        model = Path(model).read_bytes()
    try:
        return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelError(f"onnxruntime cannot load {what}: {first[:300]}") from None


def signature(session: Any) -> Signature:
    """The inputs and outputs of an onnxruntime InferenceSession."""

    def specs(items: Sequence[Any]) -> tuple[TensorSpec, ...]:
        return tuple(TensorSpec(x.name, x.type, tuple(x.shape)) for x in items)

    return Signature(specs(session.get_inputs()), specs(session.get_outputs()))


def _as_dtype(values: np.ndarray, spec: TensorSpec, column: str, source: str) -> np.ndarray:
    dtype = spec.numpy_dtype
    if dtype is np.object_ and values.dtype == object:
        return values  # already Python objects (strings): onnxruntime checks each one
    if dtype is np.object_:
        if values.dtype.kind == "f":  # numbers given to a string input: no '.0' surprises
            return np.array(
                [("" if v != v else (str(int(v)) if float(v).is_integer() else str(v))) for v in values.tolist()],
                dtype=object,
            )
        return values.astype(str).astype(object)
    if values.dtype.kind in "OUS":
        text = values.astype(str)
        text = np.where(np.isin(np.char.strip(text), ("", "?", "NA", "nan", "NaN")), "nan", text)
        try:
            numbers = text.astype(np.float64)
        except ValueError:
            bad = next(v for v in text.tolist() if not _is_number(v))
            raise InputError(
                f"{source}: column {column!r} feeds model input {spec.name!r} ({spec.type}) but holds {bad!r}"
            ) from None
    else:
        numbers = values
    if np.dtype(dtype).kind in "iub" and np.isnan(np.asarray(numbers, np.float64)).any():
        raise InputError(f"{source}: column {column!r} has missing values but model input {spec.name!r} is {spec.type}")
    return np.asarray(numbers).astype(dtype)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def build_feeds(
    sig: Signature,
    columns: Mapping[str, np.ndarray],
    *,
    feature_columns: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    source: str = "data",
) -> dict[str, np.ndarray]:
    """Feeds for ``session.run`` from named columns (any dtype), converted per input."""
    if len(sig.inputs) == 1 and (sig.inputs[0].width or 0) > 1:
        spec = sig.inputs[0]
        if spec.name in columns:
            raise InputError(
                f"{source}: model input {spec.name!r} takes {spec.width} features "
                "per row; give the feature columns, not one column"
            )
        names = list(feature_columns) if feature_columns else [c for c in columns if c not in exclude]
        if len(names) != spec.width:
            raise InputError(
                f"{source}: model input {spec.name!r} takes {spec.width} features "
                f"per row but {len(names)} feature columns were found ({names[:8]}...); "
                "name them with --features"
            )
        missing = [c for c in names if c not in columns]
        if missing:
            raise InputError(f"{source}: no column {missing[0]!r} for model input {spec.name!r}")
        cols = [_as_dtype(np.asarray(columns[c]), spec, c, source) for c in names]
        return {spec.name: np.stack(cols, axis=1)}
    feeds = {}
    missing = [s.name for s in sig.inputs if s.name not in columns]
    if missing:
        raise InputError(
            f"{source}: model input(s) {', '.join(map(repr, missing))} have no column "
            f"of that name; columns are: {', '.join(list(columns)[:20])}"
        )
    for spec in sig.inputs:
        values = _as_dtype(np.asarray(columns[spec.name]), spec, spec.name, source)
        feeds[spec.name] = values.reshape(-1, 1) if len(spec.shape) == 2 else values.reshape(-1)
    return feeds


@dataclass(frozen=True)
class OutputChoice:
    """Which output carries the positive-class score (or only a label)."""

    name: str
    column: int | None  # 1 for [N, 2] probabilities, None for [N] / [N, 1]
    kind: str  # "probabilities", "score" or "label"


def choose_output(sig: Signature, name: str | None = None) -> OutputChoice:
    """Find the binary classifier's score: given by name, or detected."""
    outs = {o.name: o for o in sig.outputs}
    if name is not None:
        if name not in outs:
            raise ModelError(f"model has no output {name!r}; outputs are {list(outs)}")
        return _describe(outs[name])
    floats = [o for o in sig.outputs if o.type in ("tensor(float)", "tensor(double)", "tensor(float16)")]
    floats.sort(key=lambda o: not any(h in o.name.lower() for h in SCORE_NAME_HINTS))
    for o in floats:
        if o.width in (1, 2) and len(o.shape) <= 2:
            return _describe(o)
    labels = [o for o in sig.outputs if o.type in ("tensor(int64)", "tensor(int32)", "tensor(bool)")]
    if labels:
        return _describe(labels[0])
    raise ModelError(
        "model has no output that looks like a binary classifier score or label "
        f"(outputs: {[(o.name, o.type, list(o.shape)) for o in sig.outputs]})"
    )


def _describe(o: TensorSpec) -> OutputChoice:
    if o.type in ("tensor(int64)", "tensor(int32)", "tensor(bool)"):
        return OutputChoice(o.name, None, "label")
    if o.type not in ("tensor(float)", "tensor(double)", "tensor(float16)"):
        raise ModelError(f"output {o.name!r} is {o.type}; expected float scores or an int label")
    if o.width == 2:
        return OutputChoice(o.name, 1, "probabilities")
    if o.width == 1:
        return OutputChoice(o.name, None, "score")
    raise ModelError(f"output {o.name!r} has shape {list(o.shape)}; a binary classifier gives [N], [N, 1] or [N, 2]")


def decisions(value: np.ndarray, choice: OutputChoice, threshold: float) -> tuple[np.ndarray | None, np.ndarray]:
    """(scores in [0, 1] or None, 0/1 decisions) from one output array."""
    arr = np.asarray(value)
    if choice.kind == "label":
        flat = arr.reshape(-1).astype(np.int64)
        if ((flat != 0) & (flat != 1)).any():
            raise ModelError(f"output {choice.name!r} has labels other than 0 and 1: {np.unique(flat)[:5].tolist()}")
        return None, flat
    scores = arr[:, choice.column] if choice.column is not None else arr.reshape(-1)
    scores = scores.astype(np.float64)
    if not (scores.min(initial=0.0) >= 0.0 and scores.max(initial=1.0) <= 1.0):  # NaN fails too
        bad = ~((scores >= 0) & (scores <= 1))
        raise ModelError(
            f"output {choice.name!r} has values outside [0, 1] (e.g. "
            f"{scores[bad][0]:.4g}); it is not a probability (logits?)"
        )
    return scores, (scores >= threshold).astype(np.int64)


def decisions_list(value: np.ndarray, choice: OutputChoice, threshold: float) -> tuple[Any, Any]:
    """``decisions`` for a few rows, as Python lists (same checks, no numpy call overhead)."""
    if choice.kind == "label":
        labels = [int(v) for v in np.asarray(value).reshape(-1).tolist()]
        if any(v not in (0, 1) for v in labels):
            raise ModelError(f"output {choice.name!r} has labels other than 0 and 1: {sorted(set(labels))[:5]}")
        return None, labels
    rows = np.asarray(value).tolist()
    if choice.column is not None:
        scores = [float(r[choice.column]) for r in rows]
    else:
        scores = [float(r[0]) if isinstance(r, list) else float(r) for r in rows]
    for v in scores:
        if not 0.0 <= v <= 1.0:  # NaN fails too
            raise ModelError(
                f"output {choice.name!r} has values outside [0, 1] (e.g. {v:.4g}); it is not a probability (logits?)"
            )
    return scores, [1 if v >= threshold else 0 for v in scores]
