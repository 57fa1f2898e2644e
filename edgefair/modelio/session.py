"""onnxruntime sessions and model signatures: the one adapter every stage opens models with.

Needs only numpy and onnxruntime, so the device runtime, the server, convert's checks and
verify's evaluation all share it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgefair.errors import ModelError

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
    opts.log_severity_level = 4  # a failure is raised as one ModelError line, not logged as well
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
