"""Sample weights: the counts table's cells as sums of weights, beside the integer counts.

    sums[group, label, reference, candidate]      float64, the weights of each cell's rows
    squares[...]                                   float64, the squared weights (effective sizes)
    counts[...]                                    int64, the unweighted ``CountsTable`` cells

Every rate is the same declaration as in ``core.metrics`` (its numerator and denominator
masks) read over the weight sums, so a weighted rate is sum(w over the numerator's rows)
over sum(w over the denominator's rows): fairlearn's MetricFrame with ``sample_weight``
(``count`` stays the number of rows, as fairlearn's ``count`` takes no weights). Tables
add with ``+``; float sums, so a different chunking agrees to rounding.

Intervals: Wilson at the Kish effective size n_eff = (sum w)^2 / sum w^2 of each rate's
denominator (the plain Wilson interval when every weight is 1).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from edgefair.core import metrics as m
from edgefair.core import stats, tables
from edgefair.core.groups import GroupKey, factorize_groups
from edgefair.errors import InputError

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, eq=False)
class WeightedTable:
    attributes: tuple[str, ...]
    groups: tuple[GroupKey, ...]
    sums: FloatArray  # (G, 3, 2, 2)
    squares: FloatArray  # (G, 3, 2, 2)
    table: tables.CountsTable  # the integer counts of the same rows
    paired: bool = False

    def __add__(self, other: WeightedTable) -> WeightedTable:
        return merge([self, other])

    def marginal(self, attributes: Sequence[str]) -> WeightedTable:
        pos = [self.attributes.index(a) for a in attributes]
        return _regroup(self, tuple(attributes), [tuple(k[p] for p in pos) for k in self.groups])

    def overall(self) -> WeightedTable:
        return _regroup(self, (), [() for _ in self.groups])


def weight_array(values: npt.ArrayLike, length: int, what: str = "sample_weight") -> FloatArray:
    """Finite, non-negative weights, one per row."""
    arr = np.asarray(values)
    if arr.ndim != 1 or len(arr) != length:
        raise InputError(f"{what} must have one weight per row ({length}), got shape {arr.shape}")
    if arr.dtype.kind not in "iubf":
        raise InputError(f"{what} must be numbers, got dtype {arr.dtype}")
    out = arr.astype(np.float64)
    bad = ~(np.isfinite(out) & (out >= 0))
    if bad.any():
        i = int(np.argmax(bad))
        raise InputError(f"{what}: row {i} is {out[i].item()!r}; weights must be finite and >= 0")
    return out


def from_arrays(
    sensitive: Mapping[str, npt.ArrayLike],
    reference: npt.ArrayLike,
    candidate: npt.ArrayLike | None,
    y_true: npt.ArrayLike | None,
    weights: npt.ArrayLike,
    *,
    reference_score: npt.ArrayLike | None = None,
) -> WeightedTable:
    """Count rows into the integer table and sum their weights into the same cells."""
    counted = tables.from_arrays(sensitive, reference, candidate, y_true, reference_score=reference_score)
    ref = tables.binary_array(reference, "reference decisions")
    n = len(ref)
    w = weight_array(weights, n)
    cand = ref if candidate is None else tables.binary_array(candidate, "candidate decisions", n)
    labels = np.full(n, tables.UNKNOWN_LABEL) if y_true is None else tables.binary_array(y_true, "labels", n)
    codes, groups = factorize_groups(sensitive, n)
    index = codes * tables.CELLS_PER_GROUP + tables.cell_index(labels, ref, cand)
    size = len(groups) * tables.CELLS_PER_GROUP
    shape = (len(groups), 3, 2, 2)
    sums = np.bincount(index, weights=w, minlength=size).reshape(shape).astype(np.float64)
    squares = np.bincount(index, weights=w * w, minlength=size).reshape(shape).astype(np.float64)
    return WeightedTable(tuple(sensitive), groups, sums, squares, counted, candidate is not None)


def merge(items: Iterable[WeightedTable]) -> WeightedTable:
    parts = list(items)
    if not parts:
        raise InputError("merge needs at least one table")
    keys = sorted({k for t in parts for k in t.groups})
    index = {k: i for i, k in enumerate(keys)}
    sums, squares = np.zeros((len(keys), 3, 2, 2)), np.zeros((len(keys), 3, 2, 2))
    for t in parts:
        rows = [index[k] for k in t.groups]
        np.add.at(sums, rows, t.sums)
        np.add.at(squares, rows, t.squares)
    counted = tables.merge([t.table for t in parts])
    return WeightedTable(parts[0].attributes, tuple(keys), sums, squares, counted, any(t.paired for t in parts))


def _regroup(t: WeightedTable, attributes: tuple[str, ...], keys: list[GroupKey]) -> WeightedTable:
    distinct = sorted(set(keys))
    index = {k: i for i, k in enumerate(distinct)}
    rows = [index[k] for k in keys]
    sums, squares = np.zeros((len(distinct), 3, 2, 2)), np.zeros((len(distinct), 3, 2, 2))
    np.add.at(sums, rows, t.sums)
    np.add.at(squares, rows, t.squares)
    counted = t.table.marginal(list(attributes)) if attributes else t.table.overall()
    return WeightedTable(attributes, tuple(distinct), sums, squares, counted, t.paired)


def parts(sums: FloatArray, metric: str, model: m.Model = "reference") -> tuple[FloatArray, FloatArray]:
    """Weighted numerator and denominator of a declared rate (``core.metrics`` masks)."""
    declared = m.get(metric)
    if declared.denominator is None:
        raise InputError(f"{metric!r} is a count, not a weighted rate")
    flat = np.asarray(sums, np.float64).reshape(*np.shape(sums)[:-3], 12)
    num = flat @ m.mask(declared, declared.numerator, model).astype(np.float64)
    den = flat @ m.mask(declared, declared.denominator, model).astype(np.float64)
    return num, den


def compute(t: WeightedTable, metric: str, model: m.Model = "reference", whole: bool = False) -> FloatArray:
    """Per-group weighted values (``whole``: of all rows); a count is the number of rows."""
    if not m.get(metric).is_rate:
        counts = t.table.counts.sum(axis=0) if whole else t.table.counts
        return m.compute(counts, metric, model)
    num, den = parts(t.sums.sum(axis=0) if whole else t.sums, metric, model)
    out = np.zeros(np.shape(num))
    np.divide(num, den, out=out, where=den != 0)
    return out


def intervals(t: WeightedTable, metric: str, model: m.Model, confidence: float) -> tuple[FloatArray, FloatArray]:
    """Wilson intervals at the Kish effective size of each group's denominator."""
    num, den = parts(t.sums, metric, model)
    _, den2 = parts(t.squares, metric, model)
    n_eff = np.where(den2 > 0, den * den / np.where(den2 > 0, den2, 1.0), 0.0)
    share = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
    return stats.wilson_interval(share * n_eff, n_eff, confidence)


@dataclass(frozen=True)
class WeightedMetricFrame:
    """fairlearn's MetricFrame with ``sample_weight``: the same answers as ``MetricFrame``."""

    weighted: WeightedTable
    metrics: tuple[str, ...]
    model: m.Model = "reference"

    @property
    def table(self) -> tables.CountsTable:
        return self.weighted.table

    @property
    def overall(self) -> dict[str, float]:
        return {x: float(compute(self.weighted, x, self.model, whole=True)) for x in self.metrics}

    def _by(self, t: WeightedTable) -> dict[GroupKey, dict[str, float]]:
        values = {x: compute(t, x, self.model) for x in self.metrics}
        return {k: {x: float(values[x][i]) for x in self.metrics} for i, k in enumerate(t.groups)}

    @property
    def by_group(self) -> dict[Any, dict[str, float]]:
        return {k[0] if len(k) == 1 else k: v for k, v in self._by(self.weighted).items()}

    @property
    def by_attribute(self) -> dict[str, dict[str, dict[str, float]]]:
        return {
            a: {k[0]: v for k, v in self._by(self.weighted.marginal([a])).items()} for a in self.weighted.attributes
        }

    @property
    def undefined(self) -> dict[Any, list[str]]:
        out: dict[Any, list[str]] = {}
        for x in self.metrics:
            if m.get(x).is_rate:
                den = parts(self.weighted.sums, x, self.model)[1]
                for i in np.flatnonzero(den == 0).tolist():
                    k = self.weighted.groups[i]
                    out.setdefault(k[0] if len(k) == 1 else k, []).append(x)
        return out

    def _values(self, metric: str) -> tuple[FloatArray, FloatArray]:
        return compute(self.weighted, metric, self.model), compute(self.weighted, metric, self.model, whole=True)

    def difference(self, method: m.Method = "between_groups") -> dict[str, float]:
        return {x: float(m.aggregate_difference(*self._values(x), method)) for x in self.metrics}

    def ratio(self, method: m.Method = "between_groups") -> dict[str, float]:
        return {x: float(m.aggregate_ratio(*self._values(x), method)) for x in self.metrics}

    def group_intervals(self, confidence: float = 0.95) -> dict[Any, dict[str, list[float]]]:
        out: dict[Any, dict[str, list[float]]] = {}
        for x in self.metrics:
            if not m.get(x).is_rate:
                continue
            low, high = intervals(self.weighted, x, self.model, confidence)
            for i, k in enumerate(self.weighted.groups):
                out.setdefault(k[0] if len(k) == 1 else k, {})[x] = [float(low[i]), float(high[i])]
        return out

    def to_dict(self, confidence: float = 0.95) -> dict[str, Any]:
        """The document of ``edgefair metrics --weight COL --json`` (MetricFrame's, weighted)."""
        attrs = self.weighted.attributes

        def named(d: Mapping[Any, Any]) -> dict[str, Any]:
            return {_name(attrs, k if isinstance(k, tuple) else (k,)): v for k, v in d.items()}

        def gap(metric: str, ratio: bool = False) -> float:
            values, whole = compute(self.weighted, metric, self.model), compute(self.weighted, metric, self.model, True)
            agg = m.aggregate_ratio if ratio else m.aggregate_difference
            return float(agg(values, whole, "between_groups"))

        tpr, fpr = gap("true_positive_rate"), gap("false_positive_rate")
        tpr_r, fpr_r = gap("true_positive_rate", True), gap("false_positive_rate", True)
        return {
            "sensitive": list(attrs),
            "rows": self.table.rows,
            "weighted": True,
            "total_weight": float(self.weighted.sums.sum()),
            "confidence": confidence,
            "overall": self.overall,
            "by_group": named(self.by_group),
            "by_attribute": self.by_attribute if len(attrs) > 1 else {},
            "difference": self.difference("between_groups"),
            "difference_to_overall": self.difference("to_overall"),
            "ratio": self.ratio("between_groups"),
            "ratio_to_overall": self.ratio("to_overall"),
            "demographic_parity_difference": gap("selection_rate"),
            "demographic_parity_ratio": gap("selection_rate", True),
            "equalized_odds_difference": max(tpr, fpr),
            "equalized_odds_ratio": min(tpr_r, fpr_r),
            "intervals": {
                "method": "wilson at the Kish effective size (groups); differences of weighted rates have none",
                "by_group": named(self.group_intervals(confidence)),
                "difference": {},
            },
            "undefined": {
                "note": "empty (zero-weight) denominator: reported as 0.0, as fairlearn does",
                "by_group": named(self.undefined),
            },
        }


def _name(attributes: Sequence[str], key: GroupKey) -> str:
    """As ``frame.group_name`` (which imports this module): 'Female' or 'race=White, sex=Female'."""
    return key[0] if len(key) == 1 else ", ".join(f"{a}={v}" for a, v in zip(attributes, key, strict=True))
