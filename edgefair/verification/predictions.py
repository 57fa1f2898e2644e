"""Metrics of a CSV of predictions: stream it in chunks, count each, add the tables."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgefair import data
from edgefair.core import tables, weighted
from edgefair.core.frame import MetricFrame
from edgefair.core.metrics import BASE_METRICS
from edgefair.core.weighted import WeightedMetricFrame
from edgefair.errors import InputError


def metrics_from_csv(
    path: str | Path,
    label: str,
    sensitive: Sequence[str],
    prediction: str | None = None,
    score: str | None = None,
    threshold: float = 0.5,
    metrics: Sequence[str] = BASE_METRICS,
    weight: str | None = None,
) -> MetricFrame | WeightedMetricFrame:
    """One MetricFrame for a CSV with label, decision (or score) and sensitive columns
    (``weight``: a column of sample weights, giving fairlearn's weighted MetricFrame)."""
    if not sensitive:
        raise InputError("--sensitive names no column; give at least one")
    if (prediction is None) == (score is None):
        raise InputError("give exactly one of --prediction (0/1 column) or --score (column)")
    if not 0.0 <= threshold <= 1.0:
        raise InputError(f"--threshold must be in [0, 1], got {threshold}")
    decision_col = prediction if prediction is not None else score
    assert decision_col is not None
    wanted = list(dict.fromkeys([label, decision_col, *sensitive, *([weight] if weight else [])]))
    parts: list[Any] = []
    for chunk in data.iter_csv(path, wanted):
        if chunk.rows == 0:
            continue
        cols, src, line = chunk.columns, chunk.source, chunk.first_line
        y = data.binary_column(cols[label], label, src, line)
        scores = None
        if score is not None:
            scores = data.numeric(cols[score], score, src, line, allow_missing=False)
            bad = (scores < 0) | (scores > 1)
            if bad.any():
                i = int(np.argmax(bad))
                raise InputError(f"{src}, line {line + i}, column {score!r}: score {scores[i]!r} is outside [0, 1]")
            decisions = (scores >= threshold).astype(np.int64)
        else:
            decisions = data.binary_column(cols[decision_col], decision_col, src, line)
        sens = {c: cols[c] for c in sensitive}
        if weight is not None:
            w = weight_column(cols[weight], weight, src, line)
            parts.append(weighted.from_arrays(sens, decisions, None, y, w, reference_score=scores))
        else:
            parts.append(tables.from_arrays(sens, decisions, None, y, reference_score=scores))
    if not parts:
        raise InputError(f"{path}: no data rows after the header")
    if weight is not None:
        return WeightedMetricFrame(weighted.merge(parts), tuple(metrics))
    return MetricFrame(tables.merge(parts), tuple(metrics))


def weight_column(values: Any, name: str, source: str, first_line: int) -> np.ndarray:
    """Sample weights from a column: finite numbers >= 0; anything else names line and value."""
    w = data.numeric(values, name, source, first_line, allow_missing=True)
    bad = ~(np.isfinite(w) & (w >= 0))
    if bad.any():
        i = int(np.argmax(bad))
        raise InputError(
            f"{source}, line {first_line + i}, column {name!r}: weight {np.asarray(values)[i]!r} "
            "is not a finite number >= 0"
        )
    return w
