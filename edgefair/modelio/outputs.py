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


# -- beyond binary classification --------------------------------------------------------------

TASKS = ("binary", "multiclass", "regression")
FLOAT_TYPES = ("tensor(float)", "tensor(double)", "tensor(float16)")
LABEL_TYPES = ("tensor(int64)", "tensor(int32)")


@dataclass(frozen=True)
class TaskOutput:
    """The output a multi-class or regression model is read from, and how."""

    task: str  # "multiclass" or "regression"
    name: str  # the output read
    kind: str  # "argmax" (of class probabilities), "label" (the model's class output), "value"
    classes: int | None  # K, from the width of the class probabilities
    probabilities: str | None = None  # the probability output (multi-class), also when decisions come from a label

    def describe(self) -> str:
        if self.kind == "argmax":
            return f"argmax of {self.name!r} ({self.classes} classes)"
        if self.kind == "label":
            return f"class output {self.name!r} ({self.classes} classes, from {self.probabilities!r})"
        return f"values of {self.name!r}"


def _class_probabilities(sig: Signature) -> list[TensorSpec]:
    found = [o for o in sig.outputs if o.type in FLOAT_TYPES and len(o.shape) == 2 and (o.width or 0) > 2]
    found.sort(key=lambda o: not any(h in o.name.lower() for h in SCORE_NAME_HINTS))
    return found


def detect_task(sig: Signature, name: str | None = None) -> str:
    """'multiclass' when the model's score is a [N, K > 2] float output (named, or found where
    no binary score is), else 'binary'. Regression cannot be told from a [N, 1] score: say so."""
    outs = {o.name: o for o in sig.outputs}
    if name is not None:
        o = outs.get(name)
        if o is not None and o.type in FLOAT_TYPES and len(o.shape) == 2 and (o.width or 0) > 2:
            return "multiclass"
        return "binary"
    try:
        if choose_output(sig).kind != "label":
            return "binary"
    except ModelError:
        pass
    return "multiclass" if _class_probabilities(sig) else "binary"


def choose_task_output(sig: Signature, task: str, name: str | None = None) -> TaskOutput:
    """The output of a multi-class model (argmax of probabilities, or the named label output)
    or of a regression model (one float per row)."""
    outs = {o.name: o for o in sig.outputs}
    if name is not None and name not in outs:
        raise ModelError(f"model has no output {name!r}; outputs are {list(outs)}")
    listed = [(o.name, o.type, list(o.shape)) for o in sig.outputs]
    if task == "multiclass":
        probs = _class_probabilities(sig)
        if name is not None and outs[name].type in LABEL_TYPES:
            if not probs:
                raise ModelError(f"output {name!r} is a class label; the model has no [N, K] probabilities to count K")
            return TaskOutput("multiclass", name, "label", probs[0].width, probs[0].name)
        chosen = [outs[name]] if name is not None else probs
        if not chosen or chosen[0] not in probs:
            raise ModelError(f"no [N, K] float output with K > 2 for a multi-class model (outputs: {listed})")
        return TaskOutput("multiclass", chosen[0].name, "argmax", chosen[0].width, chosen[0].name)
    if task == "regression":
        values = [outs[name]] if name is not None else [o for o in sig.outputs if o.type in FLOAT_TYPES]
        for o in values:
            if o.type in FLOAT_TYPES and (o.width or 1) == 1 and len(o.shape) <= 2:
                return TaskOutput("regression", o.name, "value", None)
        raise ModelError(f"no [N] or [N, 1] float output for a regression model (outputs: {listed})")
    raise ModelError(f"task must be one of {', '.join(TASKS)}, got {task!r}")


def class_decisions(value: np.ndarray, choice: TaskOutput) -> np.ndarray:
    """Class indices 0..K-1 from the chosen output (argmax: the first of tied maxima)."""
    arr = np.asarray(value)
    assert choice.classes is not None
    if choice.kind == "label":
        flat = arr.reshape(-1).astype(np.int64)
        bad = (flat < 0) | (flat >= choice.classes)
        if bad.any():
            raise ModelError(
                f"output {choice.name!r} gives class {int(flat[bad][0])}, outside 0..{choice.classes - 1}; "
                "edgefair needs classes coded as the probability columns' indices"
            )
        return flat
    scores = arr.astype(np.float64)
    if np.isnan(scores).any():
        raise ModelError(f"output {choice.name!r} has NaN class scores")
    return np.argmax(scores, axis=1).astype(np.int64)


def regression_values(value: np.ndarray, choice: TaskOutput) -> np.ndarray:
    flat = np.asarray(value, np.float64).reshape(-1)
    if not np.isfinite(flat).all():
        raise ModelError(f"output {choice.name!r} has values that are not finite (e.g. {flat[~np.isfinite(flat)][0]})")
    return flat
