"""``metric_frame``: fairlearn's MetricFrame answers, computed from one counts table.

Groups are keyed like MetricFrame's ``by_group``: the value (as a string) for one
sensitive column, a tuple of values for several. ``by_attribute`` holds each column alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from edgefair.core import metrics as m
from edgefair.core import stats, tables, weighted
from edgefair.core.groups import GroupKey
from edgefair.core.tables import CountsTable
from edgefair.errors import InputError

GroupLabel = str | tuple[str, ...]


def group_label(key: GroupKey) -> GroupLabel:
    return key[0] if len(key) == 1 else key


def group_name(attributes: Sequence[str], key: GroupKey) -> str:
    """A readable, unambiguous name: 'Female', or 'race=White, sex=Female'."""
    if len(key) == 1:
        return key[0]
    return ", ".join(f"{a}={v}" for a, v in zip(attributes, key, strict=True))


@dataclass(frozen=True)
class MetricFrame:
    table: CountsTable
    metrics: tuple[str, ...]
    model: m.Model = "reference"

    @property
    def overall(self) -> dict[str, float]:
        return m.overall(self.table, self.metrics, self.model)

    @property
    def by_group(self) -> dict[GroupLabel, dict[str, float]]:
        values = m.by_group(self.table, self.metrics, self.model)
        return {group_label(k): v for k, v in values.items()}

    @property
    def by_attribute(self) -> dict[str, dict[str, dict[str, float]]]:
        """Each sensitive column on its own: {column: {value: {metric: float}}}."""
        out = {}
        for attr in self.table.attributes:
            values = m.by_group(self.table.marginal([attr]), self.metrics, self.model)
            out[attr] = {k[0]: v for k, v in values.items()}
        return out

    @property
    def undefined(self) -> dict[GroupLabel, list[str]]:
        """Groups and metrics with an empty denominator (reported as 0.0, like fairlearn)."""
        found = m.undefined_metrics(self.table, self.metrics, self.model)
        return {group_label(k): v for k, v in found.items()}

    def difference(self, method: m.Method = "between_groups") -> dict[str, float]:
        return {x: m.difference(self.table, x, method, self.model) for x in self.metrics}

    def ratio(self, method: m.Method = "between_groups") -> dict[str, float]:
        return {x: m.ratio(self.table, x, method, self.model) for x in self.metrics}

    def group_intervals(self, confidence: float = 0.95) -> dict[GroupLabel, dict[str, list[float]]]:
        """Wilson intervals for every rate of every group."""
        out: dict[GroupLabel, dict[str, list[float]]] = {}
        for metric in self.metrics:
            if not m.get(metric).is_rate:
                continue
            num, den = m.parts(self.table.counts, metric, self.model)
            low, high = stats.wilson_interval(num, den, confidence)
            for i, k in enumerate(self.table.groups):
                out.setdefault(group_label(k), {})[metric] = [float(low[i]), float(high[i])]
        return out

    def difference_intervals(
        self, confidence: float = 0.95, replicates: int = 1000, seed: int = 0
    ) -> dict[str, list[float]]:
        """Bootstrap intervals (group-stratified) for each between-groups difference."""
        reps = stats.bootstrap_counts(self.table.counts, replicates, seed)
        whole = reps.sum(axis=1)
        out = {}
        for metric in self.metrics:
            if not m.get(metric).is_rate:
                continue
            gaps = m.aggregate_difference(
                m.compute(reps, metric, self.model),
                m.compute(whole, metric, self.model),
                "between_groups",
            )
            iv = stats.percentile_interval(gaps, confidence)
            out[metric] = [iv.low, iv.high]
        return out

    def to_dict(self, confidence: float = 0.95) -> dict[str, Any]:
        """The JSON document of ``edgefair metrics --json``."""
        attrs = self.table.attributes

        def named(d: Mapping[GroupLabel, Any]) -> dict[str, Any]:
            return {group_name(attrs, k if isinstance(k, tuple) else (k,)): v for k, v in d.items()}

        return {
            "sensitive": list(attrs),
            "rows": self.table.rows,
            "confidence": confidence,
            "overall": self.overall,
            "by_group": named(self.by_group),
            "by_attribute": self.by_attribute if len(attrs) > 1 else {},
            "difference": self.difference("between_groups"),
            "difference_to_overall": self.difference("to_overall"),
            "ratio": self.ratio("between_groups"),
            "ratio_to_overall": self.ratio("to_overall"),
            "demographic_parity_difference": m.demographic_parity_difference(self.table),
            "demographic_parity_ratio": m.demographic_parity_ratio(self.table),
            "equalized_odds_difference": m.equalized_odds_difference(self.table),
            "equalized_odds_ratio": m.equalized_odds_ratio(self.table),
            "intervals": {
                "method": "wilson (groups), group-stratified bootstrap (differences)",
                "by_group": named(self.group_intervals(confidence)),
                "difference": self.difference_intervals(confidence),
            },
            "undefined": {
                "note": "empty denominator: reported as 0.0, as fairlearn does",
                "by_group": named(self.undefined),
            },
        }


def sensitive_columns(sensitive_features: Any) -> dict[str, Any]:
    """Accept a 1-D array, a mapping of name -> array, or a pandas Series/DataFrame."""
    if isinstance(sensitive_features, Mapping):
        return dict(sensitive_features)
    columns = getattr(sensitive_features, "columns", None)
    if columns is not None:  # a DataFrame, without importing pandas
        return {str(c): np.asarray(sensitive_features[c]) for c in columns}
    arr = np.asarray(sensitive_features)
    if arr.ndim == 1:
        name = getattr(sensitive_features, "name", None)
        return {str(name) if name is not None else "sensitive_feature_0": arr}
    if arr.ndim == 2:
        return {f"sensitive_feature_{i}": arr[:, i] for i in range(arr.shape[1])}
    raise InputError(f"sensitive_features must be 1-D or 2-D, got shape {arr.shape}")


def metric_frame(
    y_true: npt.ArrayLike | None,
    y_pred: npt.ArrayLike,
    *,
    sensitive_features: Any,
    metrics: Sequence[str] = m.BASE_METRICS,
    y_score: npt.ArrayLike | None = None,
    sample_weight: npt.ArrayLike | None = None,
) -> MetricFrame | weighted.WeightedMetricFrame:
    """Per-group metrics of one model's 0/1 decisions; equal to fairlearn's MetricFrame
    (with ``sample_weight``: to fairlearn's MetricFrame given the weights as sample_params)."""
    for metric in metrics:
        m.check_metric(metric)
    if sample_weight is not None:
        columns = sensitive_columns(sensitive_features)
        summed = weighted.from_arrays(columns, y_pred, None, y_true, sample_weight, reference_score=y_score)
        if summed.table.rows == 0:
            raise InputError("no rows: metric_frame needs at least one prediction")
        return weighted.WeightedMetricFrame(summed, tuple(metrics))
    table = tables.from_arrays(sensitive_columns(sensitive_features), y_pred, None, y_true, reference_score=y_score)
    if table.rows == 0:
        raise InputError("no rows: metric_frame needs at least one prediction")
    return MetricFrame(table, tuple(metrics))
