"""Every metric, declared once as cells of the counts table, with fairlearn's names.

A metric is a numerator and a denominator: two sets of cells of a group's
``(label, reference_decision, candidate_decision)`` block. Values, Wilson intervals,
drift, the server's ``/fairness`` and the gate all read the same exact integers from
that declaration (``parts``); nothing recovers a count as ``round(rate * rows)``.

Every function takes counts of shape ``(..., 3, 2, 2)`` and returns arrays of shape
``(...)``, so one code path scores one group, all groups, or thousands of bootstrap
replicates at once.

Single-model metrics are declared over (label, decision) pairs and read either model's
decision axis. Paired metrics (flips) are declared over both decisions and say so
(``paired=True``): they describe the pair, so the ``model`` argument does not apply.

Empty denominators follow fairlearn (scikit-learn's convention): the rate is 0.0, and
``undefined_metrics`` says which groups and metrics that happened for, so a report can
say so and a gate can refuse to treat that 0.0 as evidence.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from edgefair.core.groups import GroupKey, IntArray
from edgefair.core.tables import UNKNOWN_LABEL, CountsTable
from edgefair.errors import InputError

FloatArray = npt.NDArray[np.float64]
Model = Literal["reference", "candidate"]
Method = Literal["between_groups", "to_overall"]
LABELS = (0, 1, UNKNOWN_LABEL)
LABELLED = (0, 1)


Cells = tuple[tuple[int, ...], ...]


@dataclass(frozen=True, eq=False)
class Metric:
    """One metric, as data: the cells it counts over the cells it is a share of.

    A single-model metric lists (label, decision) pairs (the other model's decision is
    summed out); a paired metric lists (label, reference, candidate) cells."""

    name: str
    description: str
    numerator: Cells
    denominator: Cells | None  # None: the metric is a count, not a rate
    paired: bool = False

    @property
    def is_rate(self) -> bool:
        return self.denominator is not None


def _mask(cells: Iterable[tuple[int, ...]]) -> IntArray:
    out = np.zeros((3, 2, 2), np.int64)
    for cell in cells:
        out[cell] = 1
    return out.reshape(-1)


def mask(metric: Metric, cells: Cells, model: Model) -> IntArray:
    """The 0/1 mask over a group's 12 cells that ``cells`` of ``metric`` mean for ``model``
    (built when asked: cheap, and nothing is computed at import)."""
    if metric.paired:
        return _mask(cells)
    if model == "reference":
        return _mask((y, d, other) for y, d in cells for other in (0, 1))
    return _mask((y, other, d) for y, d in cells for other in (0, 1))


ALL: Cells = tuple((y, d) for y in LABELS for d in (0, 1))
EVERY_LABELLED_CELL: Cells = tuple((y, r, c) for y in LABELLED for r in (0, 1) for c in (0, 1))
DECLARATIONS: tuple[Metric, ...] = (
    Metric("count", "rows", ALL, None),
    Metric("selection_rate", "decision 1 over all rows", ((0, 1), (1, 1), (2, 1)), ALL),
    Metric("true_positive_rate", "decision 1 over label-1 rows", ((1, 1),), ((1, 0), (1, 1))),
    Metric("false_positive_rate", "decision 1 over label-0 rows", ((0, 1),), ((0, 0), (0, 1))),
    Metric("true_negative_rate", "decision 0 over label-0 rows", ((0, 0),), ((0, 0), (0, 1))),
    Metric("false_negative_rate", "decision 0 over label-1 rows", ((1, 0),), ((1, 0), (1, 1))),
    Metric("accuracy", "decision equals label, over labelled rows", ((0, 0), (1, 1)), ((0, 0), (0, 1), (1, 0), (1, 1))),
    Metric("positive_predictive_value", "label 1 over decision-1 labelled rows", ((1, 1),), ((0, 1), (1, 1))),
    Metric(
        "flip_rate",
        "decision changed, over all rows",
        tuple((y, r, 1 - r) for y in LABELS for r in (0, 1)),
        tuple((y, r, c) for y in LABELS for r in (0, 1) for c in (0, 1)),
        paired=True,
    ),
    # right before (reference) and wrong after (candidate): label 0 went 0 -> 1, label 1 went 1 -> 0
    Metric(
        "negative_flip_rate",
        "reference right, candidate wrong, over labelled rows",
        ((0, 0, 1), (1, 1, 0)),
        EVERY_LABELLED_CELL,
        paired=True,
    ),
    Metric(
        "positive_flip_rate",
        "reference wrong, candidate right, over labelled rows",
        ((0, 1, 0), (1, 0, 1)),
        EVERY_LABELLED_CELL,
        paired=True,
    ),
)
METRICS: dict[str, Metric] = {m.name: m for m in DECLARATIONS}
BASE_METRICS = tuple(m.name for m in DECLARATIONS if not m.paired)
PAIRED_METRICS = tuple(m.name for m in DECLARATIONS if m.paired)
RATE_METRICS = tuple(m.name for m in DECLARATIONS if m.is_rate and not m.paired)


def get(metric: str) -> Metric:
    """The declaration of ``metric``; an InputError naming the known ones otherwise."""
    found = METRICS.get(metric)
    if found is None:
        raise InputError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")
    return found


def check_metric(metric: str) -> None:
    get(metric)


def _model(model: str) -> Model:
    if model not in ("reference", "candidate"):
        raise InputError(f"model must be 'reference' or 'candidate', got {model!r}")
    return "reference" if model == "reference" else "candidate"


def _apply(counts: npt.NDArray[np.int64], mask: IntArray) -> IntArray:
    flat = np.asarray(counts).reshape(*np.shape(counts)[:-3], 12)
    return np.asarray(flat @ mask, np.int64)


def parts(counts: npt.NDArray[np.int64], metric: str, model: Model = "reference") -> tuple[IntArray, IntArray]:
    """The exact integer numerator and denominator of ``metric`` (a count's denominator is 1)."""
    declared, which = get(metric), _model(model)
    numerator = _apply(counts, mask(declared, declared.numerator, which))
    if declared.denominator is None:
        return numerator, np.ones_like(numerator)
    return numerator, _apply(counts, mask(declared, declared.denominator, which))


def denominator(counts: npt.NDArray[np.int64], metric: str, model: Model = "reference") -> FloatArray:
    """How many rows a rate is over: drives Wilson intervals and 'undefined' flags."""
    declared = get(metric)
    if declared.denominator is None:  # a count is "over" every row
        return _apply(counts, np.ones(12, np.int64)).astype(np.float64)
    return parts(counts, metric, model)[1].astype(np.float64)


def compute(counts: npt.NDArray[np.int64], metric: str, model: Model = "reference") -> FloatArray:
    """The value: numerator over denominator, 0.0 where the denominator is empty (as fairlearn)."""
    num, den = parts(counts, metric, model)
    if not get(metric).is_rate:
        return num.astype(np.float64)
    out = np.zeros(np.shape(num), np.float64)
    np.divide(num, den, out=out, where=den != 0)
    return out


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
        if not get(m).is_rate:
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
