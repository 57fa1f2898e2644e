"""Shadow and canary: a candidate model beside the serving one, counted as one paired table.

    with FairSession("v1/") as serving, FairSession("v2/") as candidate:
        shadow = ShadowSession(serving, candidate)              # or mode="canary", share=0.1
        outputs = shadow.run(features, sensitive={"race": ...}, ids=ids)
        shadow.record_outcomes(ids, labels)                     # labels that arrive later
        shadow.paired_table()        # the table ``edgefair verify`` builds offline on these rows

Both models score every request (the candidate on exactly the serving one's inputs); the
answer comes from the serving model (``shadow``), or, for a fixed share of requests, from
the candidate (``canary``: request i goes to the candidate when floor((i+1) x share) >
floor(i x share), an exact share with no randomness). The paired table counts, per group,
(label, reference decision, candidate decision) with both models' score histograms: the
serving model is the reference, the candidate the candidate, as in ``edgefair verify``.
Rows are counted with label unknown and move to their label when it arrives (by id, as
FairSession joins them). Each session keeps its own counters too. Composes FairSession
(numpy + onnxruntime + stdlib only); the gate runs on the table above this layer.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgefair import modelio
from edgefair.core.tables import CELLS_PER_GROUP, DEFAULT_BINS, UNKNOWN_LABEL, CountsTable, cell_index
from edgefair.errors import EdgefairError, InputError
from edgefair.runtime.counters import Counters, OutcomeStats
from edgefair.runtime.session import FairSession, SessionDescription

MODES = ("shadow", "canary")


@dataclass(frozen=True)
class ShadowOptions:
    mode: str = "shadow"  # shadow: the serving model answers; canary: the candidate answers `share` of requests
    share: float = 0.0  # canary only: the fixed share of requests the candidate answers
    max_pending: int = 100_000  # ids kept for late labels (oldest dropped first, and counted)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InputError(f"shadow mode must be one of {list(MODES)}, got {self.mode!r}")
        if not (math.isfinite(self.share) and 0.0 <= self.share <= 1.0):
            raise InputError(f"canary share must be a number in [0, 1], got {self.share!r}")
        if self.mode == "shadow" and self.share:
            raise InputError("a share of requests goes to the candidate only in canary mode")
        if self.max_pending < 1:
            raise InputError(f"max_pending must be at least 1, got {self.max_pending}")


class PairedCounters:
    """A paired counts table updated in place: group x label x reference x candidate decision,
    and both models' score histograms. Group codes come from a ``Counters`` over the same
    attributes and known values, so groups are the ones FairSession counts under."""

    def __init__(self, attributes: Sequence[str], known: Mapping[str, Sequence[str]], bins: int, max_pending: int):
        self.coder = Counters(list(attributes), known, bins)
        self.bins = bins
        groups = self.coder.counts.shape[0]
        self._counts = np.zeros(groups * CELLS_PER_GROUP, np.int64)
        self._hist = np.zeros((groups, 3, 2, bins), np.int64)
        self._pending: OrderedDict[str, tuple[int, int, int, int, int]] = OrderedDict()
        self._joined: OrderedDict[str, None] = OrderedDict()
        self.max_pending = max_pending
        self.outcomes = OutcomeStats()
        self._lock = threading.Lock()

    def _bin(self, score: float | None) -> int:
        return -1 if score is None else min(int(score * self.bins), self.bins - 1)

    def update(
        self,
        groups: Sequence[int],
        reference: Sequence[int],
        candidate: Sequence[int],
        reference_scores: Sequence[float] | None,
        candidate_scores: Sequence[float] | None,
        ids: Sequence[Any] | None,
    ) -> None:
        with self._lock:
            for i, g in enumerate(groups):
                r, c = int(reference[i]), int(candidate[i])
                rb = self._bin(None if reference_scores is None else reference_scores[i])
                cb = self._bin(None if candidate_scores is None else candidate_scores[i])
                self._counts[g * CELLS_PER_GROUP + cell_index(UNKNOWN_LABEL, r, c)] += 1
                if rb >= 0:
                    self._hist[g, UNKNOWN_LABEL, 0, rb] += 1
                if cb >= 0:
                    self._hist[g, UNKNOWN_LABEL, 1, cb] += 1
                if ids is not None:
                    key = str(ids[i])
                    if key in self._pending:
                        self.outcomes.duplicate += 1
                        continue
                    self._pending[key] = (g, r, c, rb, cb)
            while len(self._pending) > self.max_pending:
                self._pending.popitem(last=False)
                self.outcomes.evicted += 1

    def record_outcomes(self, ids: Sequence[Any], labels: Sequence[int]) -> OutcomeStats:
        """Move each known id's row to its label (labels already checked as 0/1)."""
        result = OutcomeStats()
        with self._lock:
            for key, y in zip(ids, labels, strict=True):
                entry = self._pending.pop(str(key), None)
                if entry is None:
                    if str(key) in self._joined:
                        result.duplicate += 1
                    else:
                        result.unknown_id += 1
                    continue
                g, r, c, rb, cb = entry
                base = g * CELLS_PER_GROUP
                self._counts[base + cell_index(UNKNOWN_LABEL, r, c)] -= 1
                self._counts[base + cell_index(y, r, c)] += 1
                for model, b in ((0, rb), (1, cb)):
                    if b >= 0:
                        self._hist[g, UNKNOWN_LABEL, model, b] -= 1
                        self._hist[g, y, model, b] += 1
                self._joined[str(key)] = None
                result.joined += 1
            while len(self._joined) > self.max_pending:
                self._joined.popitem(last=False)
            self.outcomes.joined += result.joined
            self.outcomes.unknown_id += result.unknown_id
            self.outcomes.duplicate += result.duplicate
        return result

    def table(self) -> CountsTable:
        """The paired table (only groups that occurred, sorted by key, as ``from_arrays``)."""
        with self._lock:
            counts, hist = self._counts.reshape(-1, 3, 2, 2).copy(), self._hist.copy()
        keys = self.coder.group_keys()
        present = np.flatnonzero(counts.reshape(len(keys), -1).any(axis=1))
        order = sorted(present.tolist(), key=lambda i: keys[i])
        return CountsTable(self.coder.attributes, tuple(keys[i] for i in order), counts[order], hist[order], True)


def _labels(labels: Sequence[Any]) -> list[int]:
    out = []
    for i, y in enumerate(labels):
        if y not in (0, 1, "0", "1", True, False):
            raise InputError(f"label {i} is {y!r}; expected 0 or 1")
        out.append(int(y))
    return out


class ShadowSession:
    """The serving FairSession and a candidate on the same requests; one paired table.

    Has FairSession's serving surface (``run``, ``record_outcomes``, ``table``, ``describe``,
    ``drift``, ``flush``), so a server can put it where a FairSession was. ``close`` closes
    neither session: they belong to the caller."""

    def __init__(self, serving: FairSession, candidate: FairSession, options: ShadowOptions | None = None):
        self.serving, self.candidate = serving, candidate
        self.options = options or ShadowOptions()
        mine, theirs = serving.describe(), candidate.describe()
        if [(t.name, t.type) for t in mine.inputs] != [(t.name, t.type) for t in theirs.inputs]:
            raise InputError("the candidate's inputs differ from the serving model's; a candidate must be a drop-in")
        if mine.attributes != theirs.attributes:
            raise InputError(f"the candidate counts {theirs.attributes}, the serving model {mine.attributes}")
        known = serving.bundle.sensitive if serving.bundle else {a: [] for a in mine.attributes}
        self.paired = PairedCounters(mine.attributes, known, DEFAULT_BINS, self.options.max_pending)
        self.requests = 0  # requests seen
        self.answered_by_candidate = 0
        self.candidate_errors = 0
        self.last_answered_by = "serving"
        self.attached = True  # False once detached (after a rollback): the serving model alone

    def _canary(self) -> bool:
        i, share = self.requests, self.options.share
        return self.options.mode == "canary" and math.floor((i + 1) * share) > math.floor(i * share)

    def run(
        self, inputs: Mapping[str, Any], sensitive: Mapping[str, Any], ids: Sequence[Any] | None = None
    ) -> dict[str, np.ndarray]:
        """Both models on ``inputs``; the answer of the one this request is routed to."""
        served = self.serving.run(inputs, sensitive, ids)  # validates inputs, sensitive values and ids
        if not self.attached:
            self.last_answered_by = "serving"
            return served
        try:
            shadowed = self.candidate.run(inputs, sensitive, ids)
        except EdgefairError:  # a failing candidate never breaks serving: counted, not answered
            self.candidate_errors += 1
            self.last_answered_by = "serving"
            return served
        rows = len(next(iter(served.values())))
        groups = self.paired.coder.group_code_list(sensitive, rows)
        ref_scores, ref = _decide(self.serving, served)
        cand_scores, cand = _decide(self.candidate, shadowed)
        self.paired.update(groups, ref, cand, ref_scores, cand_scores, ids)
        to_candidate = self._canary()
        self.requests += 1
        self.answered_by_candidate += int(to_candidate)
        self.last_answered_by = "candidate" if to_candidate else "serving"
        return shadowed if to_candidate else served

    def record_outcomes(self, ids: Sequence[Any], labels: Sequence[Any]) -> OutcomeStats:
        parsed = _labels(labels)
        if len(ids) != len(parsed):
            raise InputError(f"{len(ids)} ids but {len(parsed)} labels")
        result = self.serving.record_outcomes(ids, parsed)
        self.candidate.record_outcomes(ids, parsed)
        self.paired.record_outcomes(ids, parsed)
        return result

    def paired_table(self) -> CountsTable:
        return self.paired.table()

    def labelled_rows(self) -> int:
        return int(self.paired.table().counts[:, :2].sum())

    def detach(self) -> None:
        """Stop running the candidate: every request is the serving model's from now on."""
        self.attached = False

    # the serving model's surface, so a server can use this where it used a FairSession
    def table(self) -> CountsTable:
        return self.serving.table()

    def describe(self) -> SessionDescription:
        return self.serving.describe()

    def drift(self) -> dict[str, Any]:
        return self.serving.drift()

    def flush(self) -> None:
        self.serving.flush()
        self.candidate.flush()

    def close(self) -> None:
        """The sessions belong to the caller: flush them, close neither."""
        self.flush()


def _decide(session: FairSession, outputs: dict[str, np.ndarray]) -> tuple[list[float] | None, list[int]]:
    scores, decisions = modelio.decisions_list(outputs[session.choice.name], session.choice, session.threshold)
    return scores, decisions
