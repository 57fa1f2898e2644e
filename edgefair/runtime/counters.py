"""On-device counters: a counts table updated on the hot path, and delayed labels.

Group codes come from per-attribute dictionaries (known values first, then values seen in
the field up to a cap, then an explicit "other" group), so an update is a few dict
lookups and one ``np.bincount`` into a preallocated array: no table building per call.
Rows are counted with label "unknown"; ``record_outcomes`` moves a row to its label when
it arrives, joined by prediction id (bounded memory, with a time-to-live). Late, unknown
and expired ids are counted, not dropped silently.
"""

from __future__ import annotations

import threading
import time
from array import array
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import numpy as np

from edgefair.core.tables import CELLS_PER_GROUP, DEFAULT_BINS, UNKNOWN_LABEL, CountsTable, cell_index
from edgefair.errors import InputError

OTHER = "other"  # values outside the known (or learned) set
UNKNOWN = "unknown"  # the attribute was not given at all
MAX_VALUES_PER_ATTRIBUTE = 16  # per attribute without known values; more go to 'other'
MAX_LOOKUP = 4096  # strings remembered per attribute beyond its groups (values resolved to 'other')


@dataclass
class OutcomeStats:
    joined: int = 0
    unknown_id: int = 0
    duplicate: int = 0
    expired: int = 0
    evicted: int = 0

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class Counters:
    """A mutable counts table over fixed attributes; thread-safe."""

    def __init__(
        self,
        attributes: Sequence[str],
        known_values: Mapping[str, Sequence[str]] | None = None,
        bins: int = DEFAULT_BINS,
        max_pending: int = 100_000,
        ttl_seconds: float = 7 * 86400,
        max_values: int = MAX_VALUES_PER_ATTRIBUTE,
    ):
        if not attributes:
            raise InputError("at least one sensitive attribute is needed")
        self.attributes = tuple(attributes)
        self.bins = bins
        self.max_values = max_values
        self._values: list[dict[str, int]] = []
        self._learn: list[bool] = []
        self._sizes: list[int] = []
        for a in self.attributes:
            values = [str(v) for v in (known_values or {}).get(a, ()) if str(v) not in (OTHER, UNKNOWN)]
            self._values.append({OTHER: 0, UNKNOWN: 1, **{v: i + 2 for i, v in enumerate(dict.fromkeys(values))}})
            self._learn.append(not values)  # no known values: learn up to max_values, then 'other'
            self._sizes.append(max_values + 2 if not values else len(self._values[-1]))
        # value -> code for the hot path: the group values above, plus strings already resolved
        # to 'other' or 'unknown' (codes never change once given), bounded
        self._lookup: list[dict[Any, int]] = [dict(t) for t in self._values]
        self._lock = threading.Lock()
        groups = int(np.prod(self._sizes))
        # plain int64 buffers with numpy views: a single row is counted with Python ints (no
        # numpy scalar per row), a batch with one scatter-add on the view; same memory
        self._cells = array("q", bytes(8 * groups * CELLS_PER_GROUP))
        self._bins = array("q", bytes(8 * groups * 3 * bins))
        self._flat_counts = np.frombuffer(self._cells, np.int64)
        self._flat_hist = np.frombuffer(self._bins, np.int64)
        self.counts = self._flat_counts.reshape(groups, 3, 2, 2)
        self.hist = self._flat_hist.reshape(groups, 3, bins)
        # a row with decision d (label unknown) lands in cell group * CELLS_PER_GROUP + _cell[d]
        self._cell = (cell_index(UNKNOWN_LABEL, 0, 0), cell_index(UNKNOWN_LABEL, 1, 1))
        self._cell_array = np.array(self._cell, np.int64)
        self._pending: OrderedDict[str, tuple[int, int, int, float]] = OrderedDict()
        self._joined: OrderedDict[str, None] = OrderedDict()  # recent joined ids (bounded), to tell duplicates
        self.max_pending = max_pending
        self.ttl_seconds = ttl_seconds
        self.outcomes = OutcomeStats()

    def _code(self, attr: int, value: Any) -> int:
        if value is None or (isinstance(value, float) and value != value) or value == "":
            return 1  # not given: 'unknown', never a learned group called "None" or "nan"
        table = self._values[attr]
        key = value if isinstance(value, str) else str(value)
        code = table.get(key)
        if code is None:
            if self._learn[attr] and len(table) < self.max_values + 2:
                code = len(table)
                table[key] = code
            else:
                code = 0
        lookup = self._lookup[attr]
        if isinstance(value, str) and len(lookup) < MAX_LOOKUP:  # only strings: 1, 1.0 and True hash alike
            lookup[value] = code
        return code

    def _slow_codes(self, attr: int, items: Sequence[Any]) -> list[int]:
        """Codes of values not all in the lookup (new, non-string or missing); learns under the lock."""
        lookup = self._lookup[attr]
        out = []
        with self._lock:
            for v in items:
                code = lookup.get(v) if isinstance(v, str) else None
                if code is None:
                    if isinstance(v, (list, tuple, dict, set, np.ndarray)):
                        name = self.attributes[attr]
                        raise InputError(
                            f"sensitive attribute {name!r} holds {type(v).__name__}s; expected one value per row"
                        )
                    code = self._code(attr, v)
                out.append(code)
        return out

    def _columns(self, sensitive: Mapping[str, Any], rows: int) -> list[Any]:
        """Each attribute's values, in order; names and lengths checked (one line naming the problem)."""
        try:
            columns = [sensitive[name] for name in self.attributes]
            if len(sensitive) == len(self.attributes):
                for c in columns:
                    if len(c) != rows:
                        break
                else:
                    return columns
        except (KeyError, TypeError):
            pass
        for name in self.attributes:
            if name not in sensitive:
                raise InputError(f"sensitive attribute {name!r} is missing; expected {list(self.attributes)}")
            values = sensitive[name]
            if not hasattr(values, "__len__") or isinstance(values, (str, bytes)):
                raise InputError(f"sensitive attribute {name!r} must be a list or array of {rows} values")
            if len(values) != rows:
                raise InputError(f"sensitive attribute {name!r} has {len(values)} values for {rows} rows")
        extra = set(sensitive) - set(self.attributes)
        raise InputError(f"unexpected sensitive attribute {sorted(extra)[0]!r}; expected {list(self.attributes)}")

    def group_code(self, sensitive: Mapping[str, Any]) -> int:
        """The group code of a single row (``sensitive`` holds one value per attribute)."""
        flat = 0
        for a, column in enumerate(self._columns(sensitive, 1)):
            value = column[0]
            code = self._lookup[a].get(value) if isinstance(value, str) else None
            if code is None:
                code = self._slow_codes(a, [value])[0]
            flat = flat * self._sizes[a] + code
        return flat

    def group_codes(self, sensitive: Mapping[str, Any], rows: int) -> np.ndarray:
        """Per-row group codes (numpy, for batches); checks names and lengths first."""
        flat: np.ndarray | None = None
        for a, column in enumerate(self._columns(sensitive, rows)):
            codes = self._column_codes(a, column)
            flat = codes if flat is None else flat * self._sizes[a] + codes
        assert flat is not None  # at least one attribute
        return flat

    def _column_codes(self, attr: int, column: Any) -> np.ndarray:
        if isinstance(column, np.ndarray) and column.dtype.kind in "biu" and column.ndim == 1:
            # numbers: code each distinct value once, in order of first appearance (learning order)
            distinct, first, inverse = np.unique(column, return_index=True, return_inverse=True)
            order = np.argsort(first, kind="stable")
            codes = np.empty(len(distinct), np.int64)
            codes[order] = self._slow_codes(attr, distinct[order].tolist())
            return codes[inverse.reshape(-1)]
        items = column.tolist() if isinstance(column, np.ndarray) else list(column)
        try:  # strings already seen: one C-speed lookup per row, into bytes when codes fit
            lookup = self._lookup[attr]
            found = itemgetter(*items)(lookup) if len(items) > 1 else tuple(map(lookup.__getitem__, items))
            if self._sizes[attr] <= 256:
                return np.frombuffer(bytes(found), np.uint8).astype(np.int64)
            return np.array(found, np.int64)
        except (KeyError, TypeError):  # a new, missing or non-string value (lists are unhashable)
            return np.array(self._slow_codes(attr, items), np.int64)

    def group_code_list(self, sensitive: Mapping[str, Any], rows: int) -> list[int]:
        """``group_codes`` as a plain list (cheaper for a few rows)."""
        flat: list[int] = []
        for a, column in enumerate(self._columns(sensitive, rows)):
            items = column.tolist() if isinstance(column, np.ndarray) else list(column)
            lookup = self._lookup[a]
            found = [lookup.get(v) if isinstance(v, str) else None for v in items]
            codes: list[int] = self._slow_codes(a, items) if None in found else found  # type: ignore[assignment]
            size = self._sizes[a]
            flat = codes if a == 0 else [f * size + c for f, c in zip(flat, codes, strict=True)]
        return flat

    def update_one(self, group: int, decision: int, score: float | None, ids: Sequence[Any] | None = None) -> None:
        """``update`` for a single row, with Python scalars."""
        with self._lock:
            self._cells[group * CELLS_PER_GROUP + self._cell[decision]] += 1
            if score is not None:
                bins = self.bins
                self._bins[(group * 3 + UNKNOWN_LABEL) * bins + min(int(score * bins), bins - 1)] += 1
            if ids is not None:
                self._remember(ids, [group], [decision], None if score is None else [score])

    def update(self, groups: Any, decisions: Any, scores: Any, ids: Sequence[str] | None = None) -> None:
        """Count a batch of predictions (label unknown); remember ids for later outcomes.

        Takes numpy arrays, or plain lists for a few rows (the runtime's small-batch path)."""
        rows = len(groups)
        if rows <= 16:  # a few rows: plain ints beat numpy's per-call overhead
            g = groups if isinstance(groups, list) else groups.tolist()
            d = decisions if isinstance(decisions, list) else decisions.tolist()
            sc = scores if scores is None or isinstance(scores, list) else scores.tolist()
            bins, cell, counts, hist = self.bins, self._cell, self._cells, self._bins
            with self._lock:
                for i in range(rows):  # one model: the decision fills both decision axes
                    counts[g[i] * CELLS_PER_GROUP + cell[d[i]]] += 1
                    if sc is not None:
                        hist[(g[i] * 3 + UNKNOWN_LABEL) * bins + min(int(sc[i] * bins), bins - 1)] += 1
                if ids is not None:
                    self._remember(ids, g, d, sc)
            return
        # a batch: numpy scatter-add; the cost follows the batch, not the table
        cells = groups * CELLS_PER_GROUP + self._cell_array[decisions]
        hist_cells = None
        if scores is not None:
            bins_of_rows = np.minimum((scores * self.bins).astype(np.int64), self.bins - 1)
            hist_cells = (groups * 3 + UNKNOWN_LABEL) * self.bins + bins_of_rows
        with self._lock:
            np.add.at(self._flat_counts, cells, 1)
            if hist_cells is not None:
                np.add.at(self._flat_hist, hist_cells, 1)
            if ids is not None:
                sc_list = scores.tolist() if scores is not None else None
                self._remember(ids, groups.tolist(), decisions.tolist(), sc_list)

    def _remember(
        self, ids: Sequence[Any], groups: list[int], decisions: list[int], scores: list[float] | None
    ) -> None:
        """Keep (group, decision, score bin, time) per id for later outcomes; lock held."""
        now = time.monotonic()
        for i, key in enumerate(ids):
            b = min(int(scores[i] * self.bins), self.bins - 1) if scores is not None else -1
            if str(key) in self._pending:  # a reused id: the first prediction keeps it
                self.outcomes.duplicate += 1
                continue
            self._pending[str(key)] = (groups[i], decisions[i], b, now)
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self._pending:
            entry = next(iter(self._pending.values()))
            if now - entry[3] > self.ttl_seconds:
                self._pending.popitem(last=False)
                self.outcomes.expired += 1
            elif len(self._pending) > self.max_pending:
                self._pending.popitem(last=False)
                self.outcomes.evicted += 1
            else:
                break

    def record_outcomes(self, ids: Sequence[Any], labels: Sequence[Any]) -> OutcomeStats:
        """Move each known id's row from label 'unknown' to its label (0/1)."""
        if len(ids) != len(labels):
            raise InputError(f"{len(ids)} ids but {len(labels)} labels")
        parsed = []
        for i, y in enumerate(labels):
            if y in (0, 1, "0", "1", True, False):
                parsed.append(int(y))
            else:
                raise InputError(f"label {i} is {y!r}; expected 0 or 1")
        result = OutcomeStats()
        with self._lock:
            expired_before = self.outcomes.expired
            self._trim(time.monotonic())
            result.expired = self.outcomes.expired - expired_before
            for key, y in zip(ids, parsed, strict=True):
                entry = self._pending.pop(str(key), None)
                if entry is not None:
                    self._move(entry, y)
                    self._joined[str(key)] = None
                    result.joined += 1
                elif str(key) in self._joined:  # a second outcome for one prediction: counted once
                    result.duplicate += 1
                else:
                    result.unknown_id += 1
            while len(self._joined) > self.max_pending:
                self._joined.popitem(last=False)
            self.outcomes.joined += result.joined
            self.outcomes.unknown_id += result.unknown_id
            self.outcomes.duplicate += result.duplicate
        return result

    def _move(self, entry: tuple[int, int, int, float], label: int) -> None:
        """A counted row gets its label: out of the 'unknown' cell, into the label's; lock held."""
        g, d, b, _ = entry
        base = g * CELLS_PER_GROUP
        self._flat_counts[base + cell_index(UNKNOWN_LABEL, d, d)] -= 1
        self._flat_counts[base + cell_index(label, d, d)] += 1
        if b >= 0:
            self.hist[g, UNKNOWN_LABEL, b] -= 1
            self.hist[g, label, b] += 1

    def known_values(self) -> dict[str, list[str]]:
        """Every value each attribute can be counted under (bounded: safe as metric labels)."""
        with self._lock:
            return {a: list(t) for a, t in zip(self.attributes, self._values, strict=True)}

    def group_keys(self) -> list[tuple[str, ...]]:
        names = [{code: value for value, code in t.items()} for t in self._values]
        keys = []
        for flat in range(self.counts.shape[0]):
            key = []
            for a in reversed(range(len(self.attributes))):
                flat, r = divmod(flat, self._sizes[a])
                key.append(names[a].get(r, ""))
            keys.append(tuple(reversed(key)))
        return keys

    def table(self) -> CountsTable:
        """The current counts as an immutable table (only groups that occurred)."""
        with self._lock:
            counts, hist = self.counts.copy(), self.hist.copy()
        keys = self.group_keys()
        present = np.flatnonzero(counts.reshape(len(keys), -1).any(axis=1))
        order = sorted(present.tolist(), key=lambda i: keys[i])
        full_hist = np.repeat(hist[order][:, :, None, :], 2, axis=2)
        return CountsTable(self.attributes, tuple(keys[i] for i in order), counts[order], full_hist, False)

    def add(self, table: CountsTable) -> None:
        """Add a table's counts in place (a restart resumes the store's totals this way)."""
        if table.attributes != self.attributes:
            raise InputError(f"stored counters are over {list(table.attributes)}, expected {list(self.attributes)}")
        for key, counts, hist in zip(table.groups, table.counts, table.score_hist, strict=True):
            codes = [self._code(a, v) for a, v in enumerate(key)]
            flat = 0
            for a, c in enumerate(codes):
                flat = flat * self._sizes[a] + c
            with self._lock:
                self.counts[flat] += counts
                if hist.shape[-1] == self.bins:
                    self.hist[flat] += hist[:, 0, :]
