"""The counts table: one small, exactly mergeable integer table per subgroup.

    counts[group, label, reference_decision, candidate_decision]   int64, shape (G, 3, 2, 2)
    score_hist[group, label, model, bin]                           int64, shape (G, 3, 2, B)

label is 0, 1 or unknown (index 2). A single-model table stores the decision in both
decision axes (candidate == reference) and has ``paired=False``. Groups are the
intersections of every sensitive attribute; each attribute alone is a marginal
(``table.marginal(["sex"])``). Tables form a commutative monoid under ``+``.

Counting is one ``np.bincount`` over a combined index: no Python loop over rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from edgefair.core.cells import CELLS_PER_GROUP as CELLS_PER_GROUP  # re-exported: the layout with the table
from edgefair.core.cells import DEFAULT_BINS as DEFAULT_BINS
from edgefair.core.cells import UNKNOWN_LABEL as UNKNOWN_LABEL
from edgefair.core.cells import cell_index as cell_index
from edgefair.core.groups import GroupKey, IntArray, factorize_groups, marginal_keys, sum_by_key
from edgefair.errors import InputError

if TYPE_CHECKING:
    import numpy.typing as npt

SCHEMA_VERSION = 1


@dataclass(frozen=True, eq=False)
class CountsTable:
    """Counts per intersectional group. Immutable; combine with ``+`` or ``merge``."""

    attributes: tuple[str, ...]
    groups: tuple[GroupKey, ...]
    counts: IntArray
    score_hist: IntArray
    paired: bool = False

    def __post_init__(self) -> None:
        g = len(self.groups)
        if self.counts.shape != (g, 3, 2, 2):
            raise InputError(f"counts has shape {self.counts.shape}, expected ({g}, 3, 2, 2)")
        if self.score_hist.ndim != 4 or self.score_hist.shape[:3] != (g, 3, 2):
            raise InputError(f"score_hist has shape {self.score_hist.shape}, expected ({g}, 3, 2, bins)")
        if any(len(k) != len(self.attributes) for k in self.groups):
            raise InputError("every group key needs one value per attribute")

    @property
    def bins(self) -> int:
        return int(self.score_hist.shape[3])

    @property
    def rows(self) -> int:
        return int(self.counts.sum())

    def group_sizes(self) -> IntArray:
        return self.counts.sum(axis=(1, 2, 3))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CountsTable):
            return NotImplemented
        return (
            self.attributes == other.attributes
            and self.groups == other.groups
            and self.paired == other.paired
            and np.array_equal(self.counts, other.counts)
            and np.array_equal(self.score_hist, other.score_hist)
        )

    def __hash__(self) -> int:  # tables are values; hash what identifies them cheaply
        return hash((self.attributes, self.groups, self.rows))

    def __add__(self, other: CountsTable) -> CountsTable:
        return merge([self, other])

    def __sub__(self, other: CountsTable) -> CountsTable:
        """The difference of two tables (a delta: cells may be negative), over both groups."""
        return merge([self, other.negated()])

    def negated(self) -> CountsTable:
        return CountsTable(self.attributes, self.groups, -self.counts, -self.score_hist, self.paired)

    def nonzero_groups(self) -> CountsTable:
        """The same table without groups whose every cell is zero."""
        keep = [i for i in range(len(self.groups)) if self.counts[i].any() or self.score_hist[i].any()]
        return CountsTable(
            self.attributes,
            tuple(self.groups[i] for i in keep),
            self.counts[keep],
            self.score_hist[keep],
            self.paired,
        )

    def __radd__(self, other: object) -> CountsTable:
        if other == 0:  # lets sum(tables) work
            return self
        return NotImplemented

    def marginal(self, attributes: Sequence[str]) -> CountsTable:
        """Sum out every attribute not named: the table of ``attributes`` alone."""
        return _regroup(self, tuple(attributes), marginal_keys(self.attributes, self.groups, attributes))

    def overall(self) -> CountsTable:
        """One group holding every row."""
        return _regroup(self, (), [() for _ in self.groups])

    def select(self, group: GroupKey) -> CountsTable:
        """The table of one group only (zero if it never occurred)."""
        if group in self.groups:
            i = self.groups.index(group)
            return CountsTable(
                self.attributes,
                (group,),
                self.counts[i : i + 1].copy(),
                self.score_hist[i : i + 1].copy(),
                self.paired,
            )
        return empty(self.attributes, self.bins, self.paired, groups=[group])

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready document; ``from_dict`` inverts it exactly."""
        return {
            "schema_version": SCHEMA_VERSION,
            "kind": "edgefair.counts_table",
            "attributes": list(self.attributes),
            "paired": self.paired,
            "bins": self.bins,
            "groups": [
                {
                    "key": list(k),
                    "counts": self.counts[i].reshape(-1).tolist(),
                    "score_hist": self.score_hist[i].reshape(-1).tolist(),
                }
                for i, k in enumerate(self.groups)
            ],
        }

    def to_json(self) -> str:
        import json  # loaded when a table is written, not with the device runtime

        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True)


def empty(
    attributes: Sequence[str],
    bins: int = DEFAULT_BINS,
    paired: bool = False,
    groups: Sequence[GroupKey] = (),
) -> CountsTable:
    """The zero table (optionally with named empty groups)."""
    g = len(groups)
    return CountsTable(
        tuple(attributes),
        tuple(tuple(k) for k in groups),
        np.zeros((g, 3, 2, 2), np.int64),
        np.zeros((g, 3, 2, bins), np.int64),
        paired,
    )


MAX_COUNT = 2**62  # a cell above this could overflow int64 when tables are merged
MAX_BINS = 100_000


def _cells(values: Any, expected: int, group: str, field: str) -> list[int]:
    """One group's list of cells: exactly ``expected`` non-negative integers up to MAX_COUNT."""
    if not isinstance(values, list):
        raise InputError(f"counts table group {group}: {field!r} must be a list of {expected} integers")
    if len(values) != expected:
        raise InputError(f"counts table group {group}: {field!r} has {len(values)} cells, expected {expected}")
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, int):
            raise InputError(f"counts table group {group}: {field}[{i}] is {_short(v)}, expected a whole count")
        if not 0 <= v <= MAX_COUNT:
            raise InputError(f"counts table group {group}: {field}[{i}] is {v}, expected a count in [0, 2**62]")
    return values


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def from_dict(doc: Mapping[str, Any]) -> CountsTable:
    """Rebuild a table from ``to_dict`` output, checking every field.

    Counts must be JSON integers (not floats, not booleans) in [0, 2**62], so nothing is
    silently truncated or wrapped; each group's lists must have exactly their cells."""
    if not isinstance(doc, Mapping):
        raise InputError("counts table document must be a JSON object")
    if doc.get("kind") != "edgefair.counts_table":
        raise InputError("document is not an edgefair counts table (kind mismatch)")
    version = doc.get("schema_version")
    if isinstance(version, bool) or version != SCHEMA_VERSION:
        raise InputError(f"counts table schema_version {_short(version)}, expected {SCHEMA_VERSION}")
    for key in ("attributes", "bins", "groups", "paired"):
        if key not in doc:
            raise InputError(f"counts table has no {key!r}")
    attrs, bins, entries, paired = doc["attributes"], doc["bins"], doc["groups"], doc["paired"]
    if not isinstance(attrs, list) or not all(isinstance(a, str) and a for a in attrs):
        raise InputError(f"counts table 'attributes' must be a list of non-empty names, got {_short(attrs)}")
    attributes = tuple(attrs)
    if len(set(attributes)) != len(attributes):
        raise InputError(f"counts table 'attributes' names an attribute twice: {_short(attrs)}")
    if isinstance(bins, bool) or not isinstance(bins, int) or not 1 <= bins <= MAX_BINS:
        raise InputError(f"counts table 'bins' must be an integer in [1, {MAX_BINS}], got {_short(bins)}")
    if not isinstance(paired, bool):
        raise InputError(f"counts table 'paired' must be true or false, got {_short(paired)}")
    if not isinstance(entries, list):
        raise InputError(f"counts table 'groups' must be a list, got {_short(entries)}")
    groups: list[GroupKey] = []
    cells: list[list[int]] = []
    bars: list[list[int]] = []  # arrays are built from what the document holds: its size bounds them
    for i, entry in enumerate(entries):
        if not isinstance(entry, Mapping) or not {"key", "counts", "score_hist"} <= set(entry):
            raise InputError(f"counts table groups[{i}] must be an object with key, counts and score_hist")
        key = entry["key"]
        if not isinstance(key, list) or len(key) != len(attributes) or not all(isinstance(v, str) for v in key):
            raise InputError(
                f"counts table groups[{i}]: 'key' must be a list of {len(attributes)} strings "
                f"(one per attribute), got {_short(key)}"
            )
        name = f"{i} {_short(key)}"
        cells.append(_cells(entry["counts"], CELLS_PER_GROUP, name, "counts"))
        bars.append(_cells(entry["score_hist"], 6 * bins, name, "score_hist"))
        groups.append(tuple(key))
    counts = np.array(cells, np.int64).reshape(len(groups), 3, 2, 2)
    hist = np.array(bars, np.int64).reshape(len(groups), 3, 2, bins)
    if len(set(groups)) != len(groups):
        dup = next(k for k in groups if groups.count(k) > 1)
        raise InputError(f"counts table lists group {list(dup)} twice")
    total = int(counts.sum(dtype=np.float64)) if len(groups) else 0
    if total > MAX_COUNT or (len(groups) and float(hist.sum(dtype=np.float64)) > 2.0 * MAX_COUNT):
        raise InputError(f"counts table holds more than 2**62 rows in total ({total:.3g}); expected counts")
    return _canonical(CountsTable(attributes, tuple(groups), counts, hist, paired))


def from_json(text: str) -> CountsTable:
    import json

    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"counts table is not valid JSON: {exc}") from None
    except (ValueError, RecursionError) as exc:  # an integer of > 4300 digits; nesting too deep
        raise InputError(
            f"counts table is not usable JSON: {(str(exc).splitlines() or [type(exc).__name__])[0][:100]}"
        ) from None
    if not isinstance(doc, dict):
        raise InputError("counts table JSON must be an object")
    return from_dict(doc)


def merge(tables: Iterable[CountsTable]) -> CountsTable:
    """Exact sum of tables over the union of their groups."""
    items = list(tables)
    if not items:
        raise InputError("merge needs at least one table")
    first = items[0]
    for t in items[1:]:
        if t.attributes != first.attributes:
            raise InputError(f"cannot merge tables over {list(t.attributes)} and {list(first.attributes)}")
        if t.bins != first.bins:
            raise InputError(f"cannot merge tables with {t.bins} and {first.bins} score bins")
    keys = sorted({k for t in items for k in t.groups})
    index = {k: i for i, k in enumerate(keys)}
    counts = np.zeros((len(keys), 3, 2, 2), np.int64)
    hist = np.zeros((len(keys), 3, 2, first.bins), np.int64)
    total = sum(float(t.counts.sum()) + float(t.score_hist.sum()) for t in items)
    if total > MAX_COUNT:  # int64 would wrap silently
        raise InputError(f"merged counts would exceed {MAX_COUNT:.3g} rows; refusing to overflow")
    for t in items:
        rows = [index[k] for k in t.groups]
        np.add.at(counts, rows, t.counts)
        np.add.at(hist, rows, t.score_hist)
    return CountsTable(first.attributes, tuple(keys), counts, hist, any(t.paired for t in items))


def from_arrays(
    sensitive: Mapping[str, npt.ArrayLike],
    reference: npt.ArrayLike,
    candidate: npt.ArrayLike | None = None,
    y_true: npt.ArrayLike | None = None,
    *,
    reference_score: npt.ArrayLike | None = None,
    candidate_score: npt.ArrayLike | None = None,
    bins: int = DEFAULT_BINS,
) -> CountsTable:
    """Count rows into a table.

    ``reference`` (and ``candidate`` for a paired table) are 0/1 decisions; ``y_true`` is
    0/1 labels or None (all unknown); scores in [0, 1] fill the histograms.
    """
    if not sensitive:
        raise InputError("at least one sensitive attribute is needed")
    ref = binary_array(reference, "reference decisions")
    n = len(ref)
    cand = ref if candidate is None else binary_array(candidate, "candidate decisions", n)
    if y_true is None:
        labels = np.full(n, UNKNOWN_LABEL, np.int64)
    else:
        labels = binary_array(y_true, "labels", n)
    codes, groups = factorize_groups(sensitive, n)
    index = codes * CELLS_PER_GROUP  # built in place: one temporary for 10^6 rows
    index += cell_index(labels, ref, cand)
    counts = np.bincount(index, minlength=len(groups) * CELLS_PER_GROUP).reshape(len(groups), 3, 2, 2)
    hist = np.zeros((len(groups), 3, 2, bins), np.int64)
    for model, score in ((0, reference_score), (1, candidate_score)):
        if score is not None:
            b = score_bins(score, bins, n, "reference scores" if model == 0 else "candidate scores")
            flat = np.bincount((codes * 3 + labels) * bins + b, minlength=len(groups) * 3 * bins)
            hist[:, :, model, :] = flat.reshape(len(groups), 3, bins)
    if candidate_score is None and reference_score is not None and candidate is None:
        hist[:, :, 1, :] = hist[:, :, 0, :]
    return CountsTable(tuple(sensitive), groups, counts.astype(np.int64), hist, candidate is not None)


def binary_array(values: npt.ArrayLike, what: str, length: int | None = None) -> IntArray:
    """Validate a 0/1 vector (bool, int or float) and return it as int64."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        arr = arr.reshape(-1) if arr.ndim == 2 and 1 in arr.shape else arr
    if arr.ndim != 1:
        raise InputError(f"{what} must be one-dimensional, got shape {arr.shape}")
    if length is not None and len(arr) != length:
        raise InputError(f"{what} has {len(arr)} rows, expected {length}")
    if arr.dtype == np.bool_:
        return arr.astype(np.int64)
    if arr.dtype.kind not in "iuf":
        raise InputError(f"{what} must be numeric 0/1, got dtype {arr.dtype}")
    if arr.dtype.kind in "iu" and (len(arr) == 0 or (arr.min() >= 0 and arr.max() <= 1)):
        return arr.astype(np.int64, copy=False)  # fast path: two reductions, no temporaries
    bad = (arr != 0) & (arr != 1)
    if bad.any():
        i = int(np.argmax(bad))
        raise InputError(f"{what} must be 0 or 1; row {i} is {arr[i].item()!r}")
    return arr.astype(np.int64)


def score_bins(values: npt.ArrayLike, bins: int, length: int, what: str) -> IntArray:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if len(arr) != length:
        raise InputError(f"{what} has {len(arr)} rows, expected {length}")
    bad = ~((arr >= 0.0) & (arr <= 1.0))  # catches NaN too
    if bad.any():
        i = int(np.argmax(bad))
        raise InputError(f"{what} must lie in [0, 1]; row {i} is {arr[i].item()!r}")
    return np.minimum((arr * bins).astype(np.int64), bins - 1)


def _regroup(table: CountsTable, attributes: tuple[str, ...], keys: list[GroupKey]) -> CountsTable:
    distinct, (counts, hist) = sum_by_key(keys, table.counts, table.score_hist)
    return CountsTable(attributes, distinct, counts, hist, table.paired)


def _canonical(table: CountsTable) -> CountsTable:
    """Groups in sorted order, so equal tables compare equal and serialise identically."""
    return _regroup(table, table.attributes, list(table.groups))
