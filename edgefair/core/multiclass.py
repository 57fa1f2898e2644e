"""The K-class paired table: the counts table of a multi-class model, exactly mergeable.

    counts[group, label, reference_class, candidate_class]   int64, shape (G, K + 1, K, K)

label is a class 0..K-1 or unknown (index K); for K = 2 this is exactly the 12-cell
layout of ``tables.CountsTable``. A single-model table stores the decision in both class
axes. Tables add with ``+`` (a commutative monoid, like ``CountsTable``).

Binary-style metrics of class k are the one-vs-rest projection ``one_vs_rest(table, k)``,
a ``CountsTable``, so every binary metric, interval and gate applies to it unchanged.
The multi-class metrics (accuracy, per-class selection and true positive rates, flips)
are functions of counts of shape ``(..., K + 1, K, K)``, so one code path serves groups
and bootstrap replicates.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from edgefair.core import tables
from edgefair.core.groups import GroupKey, IntArray, factorize_groups, marginal_keys, sum_by_key
from edgefair.errors import InputError

FloatArray = npt.NDArray[np.float64]
MAX_CLASSES = 256  # (K + 1) K^2 cells per group: 16.8M at 256
# metrics with a multi-class meaning; per-class ones have a class axis
PER_CLASS = ("selection_rate", "true_positive_rate")
SCALAR = ("accuracy", "flip_rate", "negative_flip_rate", "positive_flip_rate")
PAIRED = ("flip_rate", "negative_flip_rate", "positive_flip_rate")
METRICS = ("count", *SCALAR[:1], *PER_CLASS, *PAIRED)


@dataclass(frozen=True, eq=False)
class ClassTable:
    """Counts per intersectional group of a K-class model (or a pair of them)."""

    attributes: tuple[str, ...]
    groups: tuple[GroupKey, ...]
    counts: IntArray
    paired: bool = False

    def __post_init__(self) -> None:
        g, k = len(self.groups), self.classes
        if self.counts.ndim != 4 or self.counts.shape != (g, k + 1, k, k):
            raise InputError(f"counts has shape {self.counts.shape}, expected ({g}, K+1, K, K)")

    @property
    def classes(self) -> int:
        return int(self.counts.shape[-1])

    @property
    def rows(self) -> int:
        return int(self.counts.sum())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ClassTable):
            return NotImplemented
        return (
            self.attributes == other.attributes
            and self.groups == other.groups
            and self.paired == other.paired
            and np.array_equal(self.counts, other.counts)
        )

    def __hash__(self) -> int:
        return hash((self.attributes, self.groups, self.rows))

    def __add__(self, other: ClassTable) -> ClassTable:
        return merge([self, other])

    def __radd__(self, other: object) -> ClassTable:
        if other == 0:
            return self
        return NotImplemented

    def __sub__(self, other: ClassTable) -> ClassTable:
        return merge([self, ClassTable(other.attributes, other.groups, -other.counts, other.paired)])

    def marginal(self, attributes: Sequence[str]) -> ClassTable:
        return _regroup(self, tuple(attributes), marginal_keys(self.attributes, self.groups, attributes))

    def overall(self) -> ClassTable:
        return _regroup(self, (), [() for _ in self.groups])

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": 1,
            "kind": "edgefair.class_table",
            "attributes": list(self.attributes),
            "paired": self.paired,
            "classes": self.classes,
            "groups": [
                {"key": list(k), "counts": self.counts[i].reshape(-1).tolist()} for i, k in enumerate(self.groups)
            ],
        }


def empty(attributes: Sequence[str], classes: int, paired: bool = False) -> ClassTable:
    return ClassTable(tuple(attributes), (), np.zeros((0, classes + 1, classes, classes), np.int64), paired)


def merge(items: Iterable[ClassTable]) -> ClassTable:
    """Exact sum over the union of groups."""
    parts = list(items)
    if not parts:
        raise InputError("merge needs at least one table")
    first = parts[0]
    for t in parts[1:]:
        if t.attributes != first.attributes:
            raise InputError(f"cannot merge tables over {list(t.attributes)} and {list(first.attributes)}")
        if t.classes != first.classes:
            raise InputError(f"cannot merge tables of {t.classes} and {first.classes} classes")
    keys = sorted({k for t in parts for k in t.groups})
    index = {k: i for i, k in enumerate(keys)}
    k = first.classes
    counts = np.zeros((len(keys), k + 1, k, k), np.int64)
    for t in parts:
        np.add.at(counts, [index[g] for g in t.groups], t.counts)
    return ClassTable(first.attributes, tuple(keys), counts, any(t.paired for t in parts))


def from_dict(doc: Mapping[str, Any]) -> ClassTable:
    """Rebuild a table from ``to_dict`` output (counts must be whole, non-negative)."""
    if not isinstance(doc, Mapping) or doc.get("kind") != "edgefair.class_table":
        raise InputError("document is not an edgefair class table (kind mismatch)")
    k = doc.get("classes")
    if isinstance(k, bool) or not isinstance(k, int) or not 2 <= k <= MAX_CLASSES:
        raise InputError(f"class table 'classes' must be an integer in [2, {MAX_CLASSES}], got {k!r}")
    groups, cells = [], []
    for i, entry in enumerate(doc.get("groups", [])):
        values = entry.get("counts") if isinstance(entry, Mapping) else None
        if not isinstance(values, list) or len(values) != (k + 1) * k * k:
            raise InputError(f"class table groups[{i}]: 'counts' must be a list of {(k + 1) * k * k} counts")
        if any(isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= tables.MAX_COUNT for v in values):
            raise InputError(f"class table groups[{i}]: every count must be a whole number in [0, 2**62]")
        groups.append(tuple(str(v) for v in entry.get("key", [])))
        cells.append(values)
    counts = np.array(cells, np.int64).reshape(len(groups), k + 1, k, k)
    table = ClassTable(tuple(doc.get("attributes", [])), tuple(groups), counts, bool(doc.get("paired")))
    return _regroup(table, table.attributes, list(table.groups))


def class_array(values: npt.ArrayLike, what: str, classes: int, length: int | None = None) -> IntArray:
    """Validate class indices 0..classes-1 (ints, or floats that are whole) as int64."""
    arr = np.asarray(values).reshape(-1) if np.ndim(values) == 2 and 1 in np.shape(values) else np.asarray(values)
    if arr.ndim != 1:
        raise InputError(f"{what} must be one-dimensional, got shape {arr.shape}")
    if length is not None and len(arr) != length:
        raise InputError(f"{what} has {len(arr)} rows, expected {length}")
    if arr.dtype.kind not in "iubf":
        raise InputError(f"{what} must be class indices 0..{classes - 1}, got dtype {arr.dtype}")
    if arr.dtype.kind in "iu" and (len(arr) == 0 or (arr.min() >= 0 and arr.max() < classes)):
        return arr.astype(np.int64, copy=False)  # fast path: two reductions
    bad = ~np.isin(arr, np.arange(classes))
    if bad.any():
        i = int(np.argmax(bad))
        raise InputError(f"{what}: row {i} is {arr[i].item()!r}, expected a class index in 0..{classes - 1}")
    return arr.astype(np.int64)


def from_arrays(
    sensitive: Mapping[str, npt.ArrayLike],
    reference: npt.ArrayLike,
    candidate: npt.ArrayLike | None = None,
    y_true: npt.ArrayLike | None = None,
    *,
    classes: int,
) -> ClassTable:
    """Count rows of class decisions (and labels, or None for unknown) into a table."""
    if not sensitive:
        raise InputError("at least one sensitive attribute is needed")
    if not 2 <= classes <= MAX_CLASSES:
        raise InputError(f"classes must be in [2, {MAX_CLASSES}], got {classes}")
    ref = class_array(reference, "reference decisions", classes)
    n = len(ref)
    cand = ref if candidate is None else class_array(candidate, "candidate decisions", classes, n)
    labels = np.full(n, classes, np.int64) if y_true is None else class_array(y_true, "labels", classes, n)
    codes, groups = factorize_groups(sensitive, n)
    per_group = (classes + 1) * classes * classes
    index = codes * per_group + (labels * classes + ref) * classes + cand
    counts = np.bincount(index, minlength=len(groups) * per_group)
    shape = (len(groups), classes + 1, classes, classes)
    return ClassTable(tuple(sensitive), groups, counts.reshape(shape).astype(np.int64), candidate is not None)


def one_vs_rest(table: ClassTable, positive: int) -> tables.CountsTable:
    """The binary table of class ``positive`` against the rest (label, both decisions).

    Score histograms are not kept by a class table, so the projection's are zero."""
    k = table.classes
    if not 0 <= positive < k:
        raise InputError(f"positive class {positive} is not among the classes 0..{k - 1}")
    to_label = np.zeros((k + 1, 3), np.int64)
    to_label[np.arange(k), 0] = 1
    to_label[positive] = [0, 1, 0]
    to_label[k] = [0, 0, 1]
    to_decision = np.zeros((k, 2), np.int64)
    to_decision[:, 0] = 1
    to_decision[positive] = [0, 1]
    counts = np.einsum("gyrc,yl,rs,ct->glst", table.counts, to_label, to_decision, to_decision)
    hist = np.zeros((len(table.groups), 3, 2, tables.DEFAULT_BINS), np.int64)
    return tables.CountsTable(table.attributes, table.groups, counts.astype(np.int64), hist, table.paired)


def _regroup(table: ClassTable, attributes: tuple[str, ...], keys: list[GroupKey]) -> ClassTable:
    distinct, (counts,) = sum_by_key(keys, table.counts)
    return ClassTable(attributes, distinct, counts, table.paired)


# -- metrics over counts of shape (..., K + 1, K, K) -----------------------------------------


def _model_axis(counts: npt.NDArray[Any], model: str) -> npt.NDArray[Any]:
    """(..., K + 1, K): label x the model's decision, the other model summed out."""
    if model not in ("reference", "candidate"):
        raise InputError(f"model must be 'reference' or 'candidate', got {model!r}")
    return np.asarray(counts.sum(axis=-1) if model == "reference" else counts.sum(axis=-2))


def parts(counts: npt.NDArray[Any], metric: str, model: str = "reference") -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    """Exact numerator and denominator of a multi-class metric: shape (...) for accuracy
    and flips, (..., K) per class for selection and true positive rates."""
    c = np.asarray(counts)
    k = c.shape[-1]
    labelled = c[..., :k, :, :]
    if metric == "count":
        total = c.sum(axis=(-3, -2, -1))
        return total, np.ones_like(total)
    if metric in PAIRED:
        eye = np.eye(k, dtype=bool)
        ref_right = eye[:, :, None]  # (label, ref, cand): ref == label
        cand_right = eye[:, None, :]
        if metric == "flip_rate":
            return (c * ~eye).sum(axis=(-3, -2, -1)), c.sum(axis=(-3, -2, -1))
        cells = ref_right & ~cand_right if metric == "negative_flip_rate" else ~ref_right & cand_right
        return (labelled * cells).sum(axis=(-3, -2, -1)), labelled.sum(axis=(-3, -2, -1))
    d = _model_axis(c, model)
    if metric == "accuracy":
        return np.trace(d[..., :k, :], axis1=-2, axis2=-1), d[..., :k, :].sum(axis=(-2, -1))
    if metric == "selection_rate":
        total = d.sum(axis=(-2, -1))
        return d.sum(axis=-2), np.broadcast_to(total[..., None], (*d.shape[:-2], k)).copy()
    if metric == "true_positive_rate":
        return np.diagonal(d[..., :k, :], axis1=-2, axis2=-1).copy(), d[..., :k, :].sum(axis=-1)
    raise InputError(f"metric {metric!r} has no multi-class meaning; multi-class metrics: {', '.join(METRICS)}")


def compute(counts: npt.NDArray[Any], metric: str, model: str = "reference") -> FloatArray:
    """The value (0.0 where the denominator is empty, as scikit-learn and fairlearn)."""
    num, den = parts(counts, metric, model)
    out = np.zeros(np.shape(num), np.float64)
    np.divide(num, den, out=out, where=np.asarray(den) != 0)
    return out


def bootstrap(counts: IntArray, replicates: int, seed: int, discordance_prior: float = 0.5) -> IntArray:
    """Paired, group-stratified multinomial replicates, shape (R, G, K + 1, K, K).

    As ``stats.bootstrap_counts``: each group keeps its size, and every discordant cell
    (the models disagree) of a label the group has rows of gets ``discordance_prior``
    pseudo-rows, so a few identical rows cannot prove that two models agree."""
    g, k = counts.shape[0], counts.shape[-1]
    flat = counts.reshape(g, -1).astype(np.float64)
    sizes = counts.reshape(g, -1).sum(axis=1)
    has_label = counts.sum(axis=(-2, -1)) > 0  # (G, K + 1)
    discordant = ~np.eye(k, dtype=bool)
    prior = discordance_prior * (has_label[:, :, None, None] & discordant[None, None]).reshape(g, -1)
    weights = flat + prior
    totals = weights.sum(axis=1)
    probs = weights / np.where(totals > 0, totals, 1)[:, None]
    probs[sizes == 0, 0] = 1.0
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(sizes, probs, size=(replicates, g))
    return draws.reshape((replicates, *counts.shape)).astype(np.int64)


def widened(table: ClassTable, classes: int) -> ClassTable:
    """The same counts over ``classes`` >= K classes (the extra classes have no rows), so
    tables counted over chunks that saw different classes can be added."""
    k = table.classes
    if classes < k:
        raise InputError(f"cannot narrow a {k}-class table to {classes} classes")
    out = np.zeros((len(table.groups), classes + 1, classes, classes), np.int64)
    out[:, :k, :k, :k] = table.counts[:, :k]
    out[:, classes, :k, :k] = table.counts[:, k]
    return ClassTable(table.attributes, table.groups, out, table.paired)
