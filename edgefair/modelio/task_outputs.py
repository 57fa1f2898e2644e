"""Outputs beyond binary classification: which output a multi-class or regression model is
read from, and its class decisions or values (verify and bundle build; not the device runtime,
which counts binary decisions and imports only ``modelio.outputs``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgefair.errors import ModelError
from edgefair.modelio.outputs import SCORE_NAME_HINTS, choose_output
from edgefair.modelio.session import Signature, TensorSpec

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
