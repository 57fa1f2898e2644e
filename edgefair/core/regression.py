"""The moments table of a regression model (or a pair of them): mergeable sums per group.

Per group, the sums of ``v v^T`` over labelled rows, for

    v = [1, p_r, p_c, e_r, e_c, |e_r|, |e_c|, e_r^2, e_c^2, |p_c - p_r|]

(p: prediction, e = p - y: error, r / c: reference / candidate). The first row holds the
counts and plain sums, the rest every second moment, so per-group mean error, MAE, RMSE,
their paired differences and the covariances of all of them come from this one table.
Tables add with ``+``; float sums, so a different chunking agrees to rounding, not bit for
bit (the integer tables of classifiers are exact).

Intervals: the vector of a group's means is asymptotically normal (CLT) with covariance
from the same moments; ``normal_replicates`` draws group sums from it, so the gate treats
them as it treats bootstrap replicates (marginals are sums of the same draws).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from edgefair.core.groups import GroupKey, factorize_groups, marginal_keys, sum_by_key
from edgefair.core.stats import z_value
from edgefair.errors import InputError

FloatArray = npt.NDArray[np.float64]
COMPONENTS = ("n", "p_r", "p_c", "e_r", "e_c", "abs_r", "abs_c", "sq_r", "sq_c", "change")
V = len(COMPONENTS)
METRICS = (
    "count",
    "mean_prediction",
    "mean_error",
    "mean_absolute_error",
    "root_mean_squared_error",
    "mean_absolute_change",
)
ERROR_METRICS = ("mean_absolute_error", "root_mean_squared_error")  # lower is better
PAIRED = ("mean_absolute_change",)
_COMPONENT = {
    "mean_prediction": ("p_r", "p_c"),
    "mean_error": ("e_r", "e_c"),
    "mean_absolute_error": ("abs_r", "abs_c"),
}


@dataclass(frozen=True, eq=False)
class MomentsTable:
    """Sums of outer products per intersectional group; combine with ``+``."""

    attributes: tuple[str, ...]
    groups: tuple[GroupKey, ...]
    gram: FloatArray  # (G, V, V)
    paired: bool = False

    def __post_init__(self) -> None:
        if self.gram.shape != (len(self.groups), V, V):
            raise InputError(f"moments have shape {self.gram.shape}, expected ({len(self.groups)}, {V}, {V})")

    @property
    def rows(self) -> int:
        return round(float(self.gram[:, 0, 0].sum()))

    def sizes(self) -> FloatArray:
        return np.asarray(self.gram[:, 0, 0])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MomentsTable):
            return NotImplemented
        return (
            self.attributes == other.attributes
            and self.groups == other.groups
            and self.paired == other.paired
            and np.array_equal(self.gram, other.gram)
        )

    def __hash__(self) -> int:
        return hash((self.attributes, self.groups))

    def __add__(self, other: MomentsTable) -> MomentsTable:
        return merge([self, other])

    def __radd__(self, other: object) -> MomentsTable:
        if other == 0:
            return self
        return NotImplemented

    def marginal(self, attributes: Sequence[str]) -> MomentsTable:
        return _regroup(self, tuple(attributes), marginal_keys(self.attributes, self.groups, attributes))

    def overall(self) -> MomentsTable:
        return _regroup(self, (), [() for _ in self.groups])

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": 1,
            "kind": "edgefair.moments_table",
            "attributes": list(self.attributes),
            "paired": self.paired,
            "components": list(COMPONENTS),
            "groups": [
                {"key": list(k), "moments": self.gram[i][np.triu_indices(V)].tolist()}
                for i, k in enumerate(self.groups)
            ],
        }


def merge(items: Iterable[MomentsTable]) -> MomentsTable:
    parts = list(items)
    if not parts:
        raise InputError("merge needs at least one table")
    first = parts[0]
    for t in parts[1:]:
        if t.attributes != first.attributes:
            raise InputError(f"cannot merge tables over {list(t.attributes)} and {list(first.attributes)}")
    keys = sorted({k for t in parts for k in t.groups})
    index = {k: i for i, k in enumerate(keys)}
    gram = np.zeros((len(keys), V, V))
    for t in parts:
        np.add.at(gram, [index[g] for g in t.groups], t.gram)
    return MomentsTable(first.attributes, tuple(keys), gram, any(t.paired for t in parts))


MAX_MAGNITUDE = 1e15  # largest |value| a regression label or prediction may have


def finite_array(values: npt.ArrayLike, what: str, length: int | None = None) -> FloatArray:
    arr = np.asarray(values)
    if arr.ndim == 2 and 1 in arr.shape:
        arr = arr.reshape(-1)
    if arr.ndim != 1:
        raise InputError(f"{what} must be one-dimensional, got shape {arr.shape}")
    if arr.dtype.kind not in "iubf":
        raise InputError(f"{what} must be numbers, got dtype {arr.dtype}")
    if length is not None and len(arr) != length:
        raise InputError(f"{what} has {len(arr)} rows, expected {length}")
    out = arr.astype(np.float64)
    bad = ~np.isfinite(out)
    if bad.any():
        i = int(np.argmax(bad))
        raise InputError(f"{what}: row {i} is {out[i].item()!r}, expected a finite number")
    huge = np.abs(out) > MAX_MAGNITUDE
    if huge.any():  # the moments hold 4th powers of errors: beyond this float64 keeps no precision
        i = int(np.argmax(huge))
        raise InputError(
            f"{what}: row {i} is {out[i].item()!r}, beyond +-{MAX_MAGNITUDE:g}: its moments (errors to the 4th "
            "power) keep no precision in float64; rescale the values (e.g. to thousands)"
        )
    return out


def from_arrays(
    sensitive: Mapping[str, npt.ArrayLike],
    reference: npt.ArrayLike,
    candidate: npt.ArrayLike | None,
    y_true: npt.ArrayLike,
) -> MomentsTable:
    """Sum the moments of predictions against labels, per group."""
    if not sensitive:
        raise InputError("at least one sensitive attribute is needed")
    ref = finite_array(reference, "reference predictions")
    n = len(ref)
    cand = ref if candidate is None else finite_array(candidate, "candidate predictions", n)
    y = finite_array(y_true, "labels", n)
    codes, groups = factorize_groups(sensitive, n)
    e_r, e_c = ref - y, cand - y
    v = np.stack([np.ones(n), ref, cand, e_r, e_c, np.abs(e_r), np.abs(e_c), e_r**2, e_c**2, np.abs(cand - ref)], 1)
    gram = np.zeros((len(groups), V, V))
    for g in range(len(groups)):  # one matrix product per group, not a loop over rows
        rows = v[codes == g]
        gram[g] = rows.T @ rows
    return MomentsTable(tuple(sensitive), groups, gram, candidate is not None)


def _regroup(table: MomentsTable, attributes: tuple[str, ...], keys: list[GroupKey]) -> MomentsTable:
    distinct, (gram,) = sum_by_key(keys, table.gram)
    return MomentsTable(attributes, distinct, gram, table.paired)


# -- metrics over sums: first moments s (..., V) and the second-moment diagonal ---------------


def _at(name: str) -> int:
    return COMPONENTS.index(name)


def compute_from_sums(sums: npt.NDArray[np.float64], metric: str, model: str = "reference") -> FloatArray:
    """A metric from the first-moment sums (..., V): index 0 is the row count. RMSE reads the
    sum of squared errors, which is a first moment of v."""
    s = np.asarray(sums, np.float64)
    n = s[..., 0]
    if metric == "count":
        return np.asarray(n, np.float64)
    if model not in ("reference", "candidate"):
        raise InputError(f"model must be 'reference' or 'candidate', got {model!r}")
    side = 0 if model == "reference" else 1
    if metric in _COMPONENT:
        num = s[..., _at(_COMPONENT[metric][side])]
    elif metric == "root_mean_squared_error":
        num = s[..., _at(("sq_r", "sq_c")[side])]
    elif metric == "mean_absolute_change":
        num = s[..., _at("change")]
    else:
        raise InputError(f"metric {metric!r} has no regression meaning; regression metrics: {', '.join(METRICS)}")
    out = np.zeros(np.shape(num))
    np.divide(num, n, out=out, where=n > 0)
    if metric == "root_mean_squared_error":
        out = np.sqrt(np.maximum(out, 0.0))
    return out


def compute(table: MomentsTable, metric: str, model: str = "reference") -> FloatArray:
    """Per-group values of ``metric`` (0.0 for an empty group)."""
    return compute_from_sums(table.gram[:, 0, :], metric, model)


def normal_replicates(gram: FloatArray, replicates: int, seed: int) -> FloatArray:
    """Draws of each group's first-moment sums, shape (R, G, V), from the normal law of the
    CLT: mean n * mu, covariance n * Sigma, both read from the group's moments; the count
    (index 0) is held fixed, as the multinomial bootstrap holds group sizes."""
    g = gram.shape[0]
    rng = np.random.default_rng(seed)
    out = np.zeros((replicates, g, V))
    for i in range(g):
        n = gram[i, 0, 0]
        out[:, i, 0] = n
        if n <= 0:
            continue
        mean = gram[i, 0, 1:] / n
        cov = gram[i, 1:, 1:] / n - np.outer(mean, mean)
        vals, vecs = np.linalg.eigh((cov + cov.T) / 2)
        root = vecs * np.sqrt(np.clip(vals, 0.0, None))  # a PSD square root: identical models have rank < V-1
        z = rng.standard_normal((replicates, V - 1))
        out[:, i, 1:] = n * mean + np.sqrt(n) * z @ root.T
    return out


def _gradient(gram: FloatArray, metric: str, model: str) -> FloatArray:
    """d metric / d (component means), per group: (G, V - 1). RMSE by the delta method."""
    g = gram.shape[0]
    out = np.zeros((g, V - 1))
    side = 0 if model == "reference" else 1
    if metric in _COMPONENT:
        out[:, _at(_COMPONENT[metric][side]) - 1] = 1.0
    elif metric == "root_mean_squared_error":
        rmse = compute_from_sums(gram[:, 0, :], metric, model)
        out[:, _at(("sq_r", "sq_c")[side]) - 1] = np.where(rmse > 0, 0.5 / np.where(rmse > 0, rmse, 1.0), 0.0)
    elif metric == "mean_absolute_change":
        out[:, _at("change") - 1] = 1.0
    else:
        raise InputError(f"metric {metric!r} has no regression interval; use one of {', '.join(METRICS[1:])}")
    return out


def _normal_interval(gram: FloatArray, grad: FloatArray, centre: FloatArray, confidence: float) -> FloatArray:
    n = gram[:, 0, 0]
    safe = np.where(n > 0, n, 1.0)
    mean = gram[:, 0, 1:] / safe[:, None]
    cov = gram[:, 1:, 1:] / safe[:, None, None] - mean[:, :, None] * mean[:, None, :]
    var = np.einsum("gi,gij,gj->g", grad, cov, grad) / safe
    half = z_value(confidence) * np.sqrt(np.clip(var, 0.0, None))
    return np.where(n[:, None] > 1, np.stack([centre - half, centre + half], 1), np.nan)


def interval(table: MomentsTable, metric: str, model: str = "reference", confidence: float = 0.95) -> FloatArray:
    """Normal (CLT) interval of each group's metric, (G, 2); NaN for groups of under 2 rows."""
    centre = compute(table, metric, model)
    return _normal_interval(table.gram, _gradient(table.gram, metric, model), centre, confidence)


def difference(table: MomentsTable, metric: str, confidence: float = 0.95) -> tuple[FloatArray, FloatArray]:
    """Candidate minus reference per group, and its paired normal interval (G, 2): the
    covariance of the two models' errors on the same rows is in the moments."""
    centre = compute(table, metric, "candidate") - compute(table, metric, "reference")
    grad = _gradient(table.gram, metric, "candidate") - _gradient(table.gram, metric, "reference")
    return centre, _normal_interval(table.gram, grad, centre, confidence)
