"""Which output holds a binary classifier's score, and scores and decisions from it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgefair.errors import ModelError
from edgefair.modelio.session import Signature, TensorSpec

SCORE_NAME_HINTS = ("probabilities", "probability", "prob", "score", "output_probability")
# float32 rounding: onnxruntime's Sigmoid returns 1 + 2**-23 for some inputs (about 1 row in a
# million of N(0, 1) logits through a small MLP). Scores this close to [0, 1] are clipped into
# it; anything further out is not a probability.
SCORE_SLACK = 2.0**-20


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
    low, high = scores.min(initial=0.0), scores.max(initial=1.0)
    if not (low >= -SCORE_SLACK and high <= 1.0 + SCORE_SLACK):  # NaN fails too
        bad = ~((scores >= -SCORE_SLACK) & (scores <= 1.0 + SCORE_SLACK))
        raise ModelError(
            f"output {choice.name!r} has values outside [0, 1] (e.g. "
            f"{scores[bad][0]:.4g}); it is not a probability (logits?)"
        )
    if low < 0.0 or high > 1.0:
        scores = np.clip(scores, 0.0, 1.0)
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
    for i, v in enumerate(scores):
        if not 0.0 <= v <= 1.0:  # NaN fails too
            if not -SCORE_SLACK <= v <= 1.0 + SCORE_SLACK:
                raise ModelError(
                    f"output {choice.name!r} has values outside [0, 1] (e.g. {v:.4g}); "
                    "it is not a probability (logits?)"
                )
            scores[i] = min(max(v, 0.0), 1.0)
    return scores, [1 if v >= threshold else 0 for v in scores]
