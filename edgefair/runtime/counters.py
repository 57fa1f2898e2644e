"""On-device counters: a counts table updated on the hot path, and delayed labels.

Group codes come from per-attribute dictionaries (runtime.coding), so an update is a few
dict lookups and a scatter-add into a preallocated array: no table building per call. The
serving hot path defers even that: ``defer`` keeps each call's codes and validated scores,
and they are added in bulk (one ``np.bincount``) once ``FOLD_ROWS`` rows are held, or when
anything reads the counts (``table``, ``counts``, outcomes, a flush), so a reader never
sees a row missing and a call costs a list append.
Rows are counted with label "unknown"; ``record_outcomes`` moves a row to its label when
it arrives, joined by prediction id (bounded memory, with a time-to-live). Late, unknown
and expired ids are counted, not dropped silently.
"""

from __future__ import annotations

import time
from array import array
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from edgefair.core.cells import CELLS_PER_GROUP, DEFAULT_BINS, UNKNOWN_LABEL, cell_index
from edgefair.errors import InputError
from edgefair.runtime.coding import MAX_VALUES_PER_ATTRIBUTE, OTHER, UNKNOWN, GroupCoding

if TYPE_CHECKING:  # the table class loads when a table is first built, not with the runtime
    from edgefair.core.tables import CountsTable

__all__ = ["MAX_VALUES_PER_ATTRIBUTE", "OTHER", "UNKNOWN", "Counters", "OutcomeStats"]

FOLD_ROWS = 65_536  # deferred rows held before they are added in (``table()`` adds them at once)


@dataclass
class OutcomeStats:
    joined: int = 0
    unknown_id: int = 0
    duplicate: int = 0
    expired: int = 0
    evicted: int = 0

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class Counters(GroupCoding):
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
        groups = self._init_coding(attributes, known_values, max_values)
        self.bins = bins
        # plain int64 buffers with numpy views: a single row is counted with Python ints (no
        # numpy scalar per row), a batch with one scatter-add on the view; same memory
        self._cells = array("q", bytes(8 * groups * CELLS_PER_GROUP))
        self._bins = array("q", bytes(8 * groups * 3 * bins))
        self._flat_counts = np.frombuffer(self._cells, np.int64)
        self._flat_hist = np.frombuffer(self._bins, np.int64)
        self._counts = self._flat_counts.reshape(groups, 3, 2, 2)
        self._hist = self._flat_hist.reshape(groups, 3, bins)
        # rows counted later, in bulk (``defer``), all at one threshold: batches as (codes,
        # scores); single rows as plain ints and floats in two lists (no tuple per row)
        self._deferred: list[tuple[Sequence[np.ndarray], np.ndarray]] = []
        self._deferred_flat: list[tuple[np.ndarray, np.ndarray]] = []  # batches with flat codes (all Coded)
        self._single_groups: list[int] = []
        self._single_scores: list[float] = []
        self._threshold = 0.5
        self._deferred_rows = 0
        # a row with decision d (label unknown) lands in cell group * CELLS_PER_GROUP + _cell[d]
        self._cell = (cell_index(UNKNOWN_LABEL, 0, 0), cell_index(UNKNOWN_LABEL, 1, 1))
        self._cell_array = np.array(self._cell, np.int64)
        self._pending: OrderedDict[str, tuple[int, int, int, float]] = OrderedDict()
        self._joined: OrderedDict[str, None] = OrderedDict()  # recent joined ids (bounded), to tell duplicates
        self.max_pending = max_pending
        self.ttl_seconds = ttl_seconds
        self.outcomes = OutcomeStats()

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

    def defer(self, codes: Sequence[np.ndarray] | np.ndarray, scores: np.ndarray, threshold: float) -> None:
        """Count a batch later, exactly as ``update`` would now: ``codes`` from ``known_codes``
        (one array per attribute, or flat codes), ``scores`` an array the caller will not
        change, already checked to lie within [0, 1], and the decision threshold."""
        with self._lock:
            self._hold(threshold)
            if isinstance(codes, np.ndarray):
                self._deferred_flat.append((codes, scores))
            else:
                self._deferred.append((codes, scores))
            self._deferred_rows += len(scores)
            if self._deferred_rows >= FOLD_ROWS:
                self._fold()

    def defer_one(self, group: int, score: float, threshold: float) -> None:
        """``defer`` for one row (its flat group code and a score in [0, 1])."""
        with self._lock:
            self._hold(threshold)
            self._single_groups.append(group)
            self._single_scores.append(score)
            self._deferred_rows += 1
            if self._deferred_rows >= FOLD_ROWS:
                self._fold()

    def _hold(self, threshold: float) -> None:
        """Held rows share one threshold: rows held at another are added in first; lock held."""
        if threshold != self._threshold:
            self._fold()
            self._threshold = threshold

    def _fold(self) -> None:
        """Add the held rows in; lock held. Each row gets one joint index (group, decision,
        score bin) and one ``bincount`` gives both its counts cell and its histogram bin."""
        if not self._deferred_rows:
            return
        groups = [np.array(self._single_groups, np.int64)]
        scores = [np.array(self._single_scores, np.float64)]
        if self._deferred:
            codes = [np.concatenate([c[a] for c, _ in self._deferred]) for a in range(len(self.attributes))]
            groups.append(self.flat(codes))
            scores.extend(s.reshape(-1) for _, s in self._deferred)
        groups.extend(c for c, _ in self._deferred_flat)
        scores.extend(s.reshape(-1) for _, s in self._deferred_flat)
        self._deferred, self._deferred_flat, self._single_groups, self._single_scores = [], [], [], []
        self._deferred_rows = 0
        g, s = np.concatenate(groups), np.concatenate(scores)
        # as ``update`` counts them: each score's float64 value against the threshold and the bins
        bins, top = self.bins, int(g.max()) + 1  # only the groups up to the largest code are touched
        joint = g * (2 * bins) + (s >= np.float64(self._threshold)) * bins
        joint += np.minimum((s * np.float64(bins)).astype(np.int64), bins - 1)
        per = np.bincount(joint, minlength=top * 2 * bins).reshape(top, 2, bins)
        self._counts[:top, UNKNOWN_LABEL, 0, 0] += per[:, 0].sum(axis=1)
        self._counts[:top, UNKNOWN_LABEL, 1, 1] += per[:, 1].sum(axis=1)
        self._hist[:top, UNKNOWN_LABEL] += per.sum(axis=1)

    @property
    def counts(self) -> np.ndarray:
        """The live counts, (groups, labels, decision, decision), deferred rows included."""
        with self._lock:
            self._fold()
        return self._counts

    @property
    def hist(self) -> np.ndarray:
        """The live score histograms, (groups, labels, bins), deferred rows included."""
        with self._lock:
            self._fold()
        return self._hist

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
            self._hist[g, UNKNOWN_LABEL, b] -= 1
            self._hist[g, label, b] += 1

    def group_keys(self) -> list[tuple[str, ...]]:
        names = [{code: value for value, code in t.items()} for t in self._values]
        keys = []
        for flat in range(self._counts.shape[0]):
            key = []
            for a in reversed(range(len(self.attributes))):
                flat, r = divmod(flat, self._sizes[a])
                key.append(names[a].get(r, ""))
            keys.append(tuple(reversed(key)))
        return keys

    def table(self) -> CountsTable:
        """The current counts as an immutable table (only groups that occurred)."""
        with self._lock:
            self._fold()
            counts, hist = self._counts.copy(), self._hist.copy()
        keys = self.group_keys()
        present = np.flatnonzero(counts.reshape(len(keys), -1).any(axis=1))
        order = sorted(present.tolist(), key=lambda i: keys[i])
        full_hist = np.repeat(hist[order][:, :, None, :], 2, axis=2)
        from edgefair.core.tables import CountsTable

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
                self._counts[flat] += counts
                if hist.shape[-1] == self.bins:
                    self._hist[flat] += hist[:, 0, :]
