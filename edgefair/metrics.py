"""Pure functions from counts to numbers, with fairlearn's names and conventions.

Every function takes counts of shape ``(..., 3, 2, 2)`` (label, reference decision,
candidate decision) and returns an array of shape ``(...)``, so the same code scores one
group, all groups, or thousands of bootstrap replicates at once.

Empty denominators follow fairlearn (scikit-learn's convention): the rate is 0.0, and
``undefined_metrics`` says which groups and metrics that happened for, so a report can
say so and a gate can refuse to treat that 0.0 as evidence.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt

from edgefair.errors import InputError
from edgefair.tables import CountsTable, GroupKey

FloatArray = npt.NDArray[np.float64]
Model = Literal["reference", "candidate"]
Method = Literal["between_groups", "to_overall"]

BASE_METRICS = (
    "count",
    "selection_rate",
    "true_positive_rate",
    "false_positive_rate",
    "true_negative_rate",
    "false_negative_rate",
    "accuracy",
    "positive_predictive_value",
)
PAIRED_METRICS = ("flip_rate", "negative_flip_rate", "positive_flip_rate")


def _by_decision(counts: npt.NDArray[np.int64], model: Model) -> npt.NDArray[np.int64]:
    """Collapse the other model's axis: (..., label, decision)."""
    if model == "reference":
        return counts.sum(axis=-1)
    if model == "candidate":
        return counts.sum(axis=-2)
    raise InputError(f"model must be 'reference' or 'candidate', got {model!r}")


def _ratio(num: npt.NDArray[np.int64], den: npt.NDArray[np.int64]) -> FloatArray:
    out = np.zeros(np.shape(num), np.float64)
    np.divide(num, den, out=out, where=den != 0)
    return out


def count(counts: npt.NDArray[np.int64], model: Model = "reference") -> FloatArray:
    return counts.sum(axis=(-3, -2, -1)).astype(np.float64)


def selection_rate(counts: npt.NDArray[np.int64], model: Model = "reference") -> FloatArray:
    c = _by_decision(counts, model)
    return _ratio(c[..., 1].sum(axis=-1), c.sum(axis=(-2, -1)))


def true_positive_rate(counts: npt.NDArray[np.int64], model: Model = "reference") -> FloatArray:
    c = _by_decision(counts, model)
    return _ratio(c[..., 1, 1], c[..., 1, :].sum(axis=-1))


def false_negative_rate(counts: npt.NDArray[np.int64], model: Model = "reference") -> FloatArray:
    c = _by_decision(counts, model)
    return _ratio(c[..., 1, 0], c[..., 1, :].sum(axis=-1))


def false_positive_rate(counts: npt.NDArray[np.int64], model: Model = "reference") -> FloatArray:
    c = _by_decision(counts, model)
    return _ratio(c[..., 0, 1], c[..., 0, :].sum(axis=-1))


def true_negative_rate(counts: npt.NDArray[np.int64], model: Model = "reference") -> FloatArray:
    c = _by_decision(counts, model)
    return _ratio(c[..., 0, 0], c[..., 0, :].sum(axis=-1))


def accuracy(counts: npt.NDArray[np.int64], model: Model = "reference") -> FloatArray:
    c = _by_decision(counts, model)
    return _ratio(c[..., 0, 0] + c[..., 1, 1], c[..., :2, :].sum(axis=(-2, -1)))


def positive_predictive_value(counts: npt.NDArray[np.int64], model: Model = "reference") -> FloatArray:
    c = _by_decision(counts, model)
    return _ratio(c[..., 1, 1], c[..., :2, 1].sum(axis=-1))


def flip_rate(counts: npt.NDArray[np.int64], model: Model = "candidate") -> FloatArray:
    """Rows whose decision changed between reference and candidate, over all rows."""
    changed = counts[..., 0, 1] + counts[..., 1, 0]
    return _ratio(changed.sum(axis=-1), counts.sum(axis=(-3, -2, -1)))


def negative_flip_rate(counts: npt.NDArray[np.int64], model: Model = "candidate") -> FloatArray:
    """Labelled rows the reference got right and the candidate got wrong."""
    # label 0: right before = ref 0, wrong after = cand 1; label 1 the mirror image
    flips = counts[..., 0, 0, 1] + counts[..., 1, 1, 0]
    return _ratio(flips, counts[..., :2, :, :].sum(axis=(-3, -2, -1)))


def positive_flip_rate(counts: npt.NDArray[np.int64], model: Model = "candidate") -> FloatArray:
    """Labelled rows the reference got wrong and the candidate got right."""
    flips = counts[..., 0, 1, 0] + counts[..., 1, 0, 1]
    return _ratio(flips, counts[..., :2, :, :].sum(axis=(-3, -2, -1)))


MetricFn = Callable[[npt.NDArray[np.int64], Model], FloatArray]
METRICS: dict[str, MetricFn] = {
    "count": count,
    "selection_rate": selection_rate,
    "true_positive_rate": true_positive_rate,
    "false_positive_rate": false_positive_rate,
    "true_negative_rate": true_negative_rate,
    "false_negative_rate": false_negative_rate,
    "accuracy": accuracy,
    "positive_predictive_value": positive_predictive_value,
    "flip_rate": flip_rate,
    "negative_flip_rate": negative_flip_rate,
    "positive_flip_rate": positive_flip_rate,
}


def _denominator(counts: npt.NDArray[np.int64], metric: str, model: Model) -> FloatArray:
    """How many rows a rate is over: drives Wilson intervals and 'undefined' flags."""
    c = _by_decision(counts, model) if metric not in PAIRED_METRICS else None
    if metric in ("count", "selection_rate", "flip_rate"):
        return counts.sum(axis=(-3, -2, -1)).astype(np.float64)
    if metric in ("true_positive_rate", "false_negative_rate"):
        assert c is not None
        return c[..., 1, :].sum(axis=-1).astype(np.float64)
    if metric in ("false_positive_rate", "true_negative_rate"):
        assert c is not None
        return c[..., 0, :].sum(axis=-1).astype(np.float64)
    if metric == "positive_predictive_value":
        assert c is not None
        return c[..., :2, 1].sum(axis=-1).astype(np.float64)
    # accuracy and the flip rates over labelled rows
    return counts[..., :2, :, :].sum(axis=(-3, -2, -1)).astype(np.float64)


def denominator(counts: npt.NDArray[np.int64], metric: str, model: Model = "reference") -> FloatArray:
    check_metric(metric)
    return _denominator(counts, metric, model)


def check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise InputError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")


def compute(counts: npt.NDArray[np.int64], metric: str, model: Model = "reference") -> FloatArray:
    check_metric(metric)
    return METRICS[metric](counts, model)


def by_group(
    table: CountsTable, metrics: Sequence[str] = BASE_METRICS, model: Model = "reference"
) -> dict[GroupKey, dict[str, float]]:
    values = {m: compute(table.counts, m, model) for m in metrics}
    return {k: {m: float(values[m][i]) for m in metrics} for i, k in enumerate(table.groups)}


def overall(table: CountsTable, metrics: Sequence[str] = BASE_METRICS, model: Model = "reference") -> dict[str, float]:
    total = table.counts.sum(axis=0)
    return {m: float(compute(total, m, model)) for m in metrics}


def undefined_metrics(
    table: CountsTable, metrics: Sequence[str] = BASE_METRICS, model: Model = "reference"
) -> dict[GroupKey, list[str]]:
    """Groups whose rate had an empty denominator (reported as 0.0, as fairlearn does)."""
    out: dict[GroupKey, list[str]] = {}
    for m in metrics:
        if m == "count":
            continue
        den = denominator(table.counts, m, model)
        for i in np.flatnonzero(den == 0).tolist():
            out.setdefault(table.groups[i], []).append(m)
    return out


def aggregate_difference(group_values: FloatArray, overall_value: FloatArray, method: Method) -> FloatArray:
    """fairlearn's MetricFrame.difference over the last axis (groups), NaN-skipping."""
    with warnings.catch_warnings(), np.errstate(invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        if method == "between_groups":
            return np.asarray(np.nanmax(group_values, axis=-1) - np.nanmin(group_values, axis=-1))
        if method == "to_overall":
            gap = np.abs(group_values - np.expand_dims(overall_value, -1))
            return np.asarray(np.nanmax(gap, axis=-1))
    raise InputError(f"method must be 'between_groups' or 'to_overall', got {method!r}")


def aggregate_ratio(group_values: FloatArray, overall_value: FloatArray, method: Method) -> FloatArray:
    """fairlearn's MetricFrame.ratio over the last axis (groups), NaN-skipping."""
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        if method == "between_groups":
            return np.asarray(np.nanmin(group_values, axis=-1) / np.nanmax(group_values, axis=-1))
        if method == "to_overall":
            r = group_values / np.expand_dims(overall_value, -1)
            r = np.where(r > 1, 1 / r, r)
            return np.asarray(np.nanmin(r, axis=-1))
    raise InputError(f"method must be 'between_groups' or 'to_overall', got {method!r}")


def difference(table: CountsTable, metric: str, method: Method = "between_groups", model: Model = "reference") -> float:
    """``<metric>_difference`` of fairlearn: largest gap between groups or to overall."""
    values = compute(table.counts, metric, model)
    whole = compute(table.counts.sum(axis=0), metric, model)
    return float(aggregate_difference(values, whole, method))


def ratio(table: CountsTable, metric: str, method: Method = "between_groups", model: Model = "reference") -> float:
    """``<metric>_ratio`` of fairlearn: smallest ratio between groups or to overall."""
    values = compute(table.counts, metric, model)
    whole = compute(table.counts.sum(axis=0), metric, model)
    return float(aggregate_ratio(values, whole, method))


def demographic_parity_difference(
    table: CountsTable, method: Method = "between_groups", model: Model = "reference"
) -> float:
    return difference(table, "selection_rate", method, model)


def demographic_parity_ratio(
    table: CountsTable, method: Method = "between_groups", model: Model = "reference"
) -> float:
    return ratio(table, "selection_rate", method, model)


def _worst_or_mean(a: float, b: float, agg: str, worst: Callable[[float, float], float]) -> float:
    if agg == "worst_case":
        return worst(a, b)  # builtin max/min, as fairlearn, including its NaN order
    if agg == "mean":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return float(np.nanmean([a, b]))
    raise InputError(f"agg must be 'worst_case' or 'mean', got {agg!r}")


def equalized_odds_difference(
    table: CountsTable,
    method: Method = "between_groups",
    agg: str = "worst_case",
    model: Model = "reference",
) -> float:
    tpr = difference(table, "true_positive_rate", method, model)
    fpr = difference(table, "false_positive_rate", method, model)
    return _worst_or_mean(tpr, fpr, agg, max)


def equalized_odds_ratio(
    table: CountsTable,
    method: Method = "between_groups",
    agg: str = "worst_case",
    model: Model = "reference",
) -> float:
    tpr = ratio(table, "true_positive_rate", method, model)
    fpr = ratio(table, "false_positive_rate", method, model)
    return _worst_or_mean(tpr, fpr, agg, min)
