"""``edgefair metrics --task multiclass|regression``: a CSV of labels and predictions, streamed
in chunks into a K-class table or a moments table (the same tables verify builds)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgefair import data
from edgefair.core import multiclass, regression
from edgefair.errors import InputError


def _classes(values: Any, name: str, source: str, line: int) -> np.ndarray:
    numbers = data.numeric(values, name, source, line, allow_missing=False)
    bad = (numbers < 0) | (numbers != np.floor(numbers)) | (numbers >= multiclass.MAX_CLASSES)
    if bad.any():
        i = int(np.argmax(bad))
        raise InputError(
            f"{source}, line {line + i}, column {name!r}: {np.asarray(values)[i]!r} is not a class index 0, 1, 2, ..."
        )
    return numbers.astype(np.int64)


def task_table_from_csv(
    path: str | Path, label: str, sensitive: Sequence[str], prediction: str | None, task: str
) -> multiclass.ClassTable | regression.MomentsTable:
    """One model's table for a CSV with label, prediction and sensitive columns."""
    if task not in ("multiclass", "regression"):
        raise InputError(f"--task must be binary, multiclass or regression, got {task!r}")
    if not sensitive:
        raise InputError("--sensitive names no column; give at least one")
    if prediction is None:
        raise InputError(f"--task {task} reads --prediction (class indices or predicted values)")
    parts: list[Any] = []
    for chunk in data.iter_csv(path, list(dict.fromkeys([label, prediction, *sensitive]))):
        if chunk.rows == 0:
            continue
        cols, src, line = chunk.columns, chunk.source, chunk.first_line
        sens = {c: cols[c] for c in sensitive}
        if task == "multiclass":
            y, pred = _classes(cols[label], label, src, line), _classes(cols[prediction], prediction, src, line)
            k = max(2, int(max(y.max(), pred.max())) + 1)
            parts.append(multiclass.from_arrays(sens, pred, None, y, classes=k))
        else:
            y = data.numeric(cols[label], label, src, line, allow_missing=False)
            pred = data.numeric(cols[prediction], prediction, src, line, allow_missing=False)
            parts.append(regression.from_arrays(sens, pred, None, y))
    if not parts:
        raise InputError(f"{path}: no data rows after the header")
    if task == "multiclass":
        k = max(t.classes for t in parts)
        return multiclass.merge([multiclass.widened(t, k) for t in parts])
    return regression.merge(parts)
