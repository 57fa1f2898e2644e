"""Honest selection needs two splits: the search scores every variant on one, and the
chosen variant is certified on the other, which the search never saw.

The split rule (a test recomputes it): ``perm = numpy.random.default_rng(seed).permutation(n)``;
the held-out rows are ``sorted(perm[:round(n * holdout)])``, the search rows the rest, in file
order. A split's SHA-256 is that of the data's SHA-256, a colon and its row indices as
little-endian int64 bytes, so a certificate names exactly the rows it was computed on.

Each split is scored by a ``SplitScorer``: the reference once, then any number of candidates
per pass, at the deployment batch, through verification's own ``score_chunk``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgefair import data
from edgefair.core.tables import CountsTable
from edgefair.errors import InputError
from edgefair.verification import evaluate as ev
from edgefair.verification.gate import gate
from edgefair.verification.policy import Policy


@dataclass(frozen=True)
class Split:
    """One side of the split: which rows, and those rows as an in-memory Dataset."""

    name: str  # "search" or "holdout"
    rows: np.ndarray  # indices into the data, ascending
    dataset: data.Dataset


def split_rows(n: int, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(search rows, held-out rows), each ascending; the rule in the module docstring."""
    perm = np.random.default_rng(seed).permutation(n)
    k = round(n * holdout)
    return np.sort(perm[k:]), np.sort(perm[:k])


def subset(ds: data.Dataset, rows: np.ndarray, name: str, describe: str) -> Split:
    digest = hashlib.sha256(f"{ds.sha256}:".encode() + np.asarray(rows, "<i8").tobytes()).hexdigest()
    cols = {k: np.asarray(v)[rows] for k, v in ds.columns.items()}
    return Split(name, rows, data.Dataset(cols, describe, digest, len(rows)))


class _ScoredOnce(ev._Model):
    """The reference on one split: scored at the first pass, its outputs reused after."""

    def __init__(self, model: ev._Model) -> None:
        self.__dict__.update(model.__dict__)
        self._decided: tuple[np.ndarray | None, np.ndarray] | None = None

    def decide(
        self, feeds: dict[str, np.ndarray], chunk: data.Chunk | None = None, batch: int | None = None
    ) -> tuple[np.ndarray | None, np.ndarray]:
        if self._decided is None:
            self._decided = super().decide(feeds, chunk, batch)
        return self._decided


INVARIANCE_ROWS = 512  # rows on which a candidate must give the same outputs in one call as in batches


class SplitScorer:
    """Paired tables of candidates against the reference on one split, one pass per call.

    Everything is judged at the deployment batch. A candidate whose outputs on the first
    512 rows are the same (to 1e-6) in one call as in calls of the deployment batch is
    scored in whole chunks (fast); any other (dynamic int8: activation scales per call) is
    scored call by call at the deployment batch. The reference is always scored at the
    deployment batch, once; the certificate is a fresh verify at the deployment batch."""

    def __init__(self, reference: str | Path, split: Split, options: ev.EvaluateOptions) -> None:
        self.split = split
        self.options = options
        self.reference = _ScoredOnce(ev._Model(reference, options.threshold, options.score_output))
        needed = ev.needed_columns(self.reference.sig, options)
        cols = split.dataset.columns
        source = split.dataset.source
        chosen = {k: data.require_column(cols, k, source) for k in needed} if needed is not None else dict(cols)
        self.chunk = data.Chunk(chosen, 2, split.dataset.source)
        if ev.score_chunk(self.reference, [], self.chunk, options) is None:  # the reference, once
            raise InputError(f"{split.dataset.source}: no data rows")
        self.whole = dataclasses.replace(options, batch_size=None)
        self.sample = self.feeds(INVARIANCE_ROWS)

    def tables(self, candidates: Sequence[str | Path]) -> list[tuple[CountsTable, str]]:
        """Each candidate's paired table and how it was scored."""
        models = [ev._Model(c, self.options.threshold, self.options.score_output) for c in candidates]
        for m in models:
            ev._same_inputs(self.reference, m)
        invariant = [self._batch_invariant(m) for m in models]
        batch = self.options.batch_size
        how = {
            True: f"in chunks: the same outputs at batch {batch} on {INVARIANCE_ROWS} rows",
            False: f"at batch {batch}",
        }
        out: dict[int, tuple[CountsTable, str]] = {}
        for flag, opts in ((False, self.options), (True, self.whole)):
            group = [i for i, f in enumerate(invariant) if f is flag]
            if group:
                scored = ev.score_chunk(self.reference, [models[i] for i in group], self.chunk, opts)
                assert scored is not None
                out.update({i: (t, how[flag]) for i, t in zip(group, scored[0], strict=True)})
        return [out[i] for i in range(len(models))]

    def _batch_invariant(self, model: ev._Model) -> bool:
        batch = self.options.batch_size
        rows = len(next(iter(self.sample.values())))
        if batch is None or batch >= rows:
            return batch is None  # a large batch costs few calls: score it as deployed
        name = model.choice.name
        whole = np.asarray(model.session.run([name], self.sample)[0])
        parts = np.concatenate(
            [
                model.session.run([name], {k: v[i : i + batch] for k, v in self.sample.items()})[0]
                for i in range(0, rows, batch)
            ]
        )
        if whole.dtype.kind != "f":
            return bool(np.array_equal(whole, parts))
        return bool(np.allclose(whole, parts, rtol=0.0, atol=1e-6))

    def identical(self) -> CountsTable:
        """The reference against itself: what a candidate that changes nothing would show."""
        scored = ev.score_chunk(self.reference, [self.reference], self.chunk, self.options)
        assert scored is not None
        return scored[0][0]

    def feeds(self, rows: int = 256) -> dict[str, np.ndarray]:
        """The first ``rows`` rows as model feeds (for timing and calibration)."""
        head = data.Chunk({k: v[:rows] for k, v in self.chunk.columns.items()}, 2, self.chunk.source)
        exclude = [self.options.label, *self.options.sensitive]
        from edgefair import modelio

        return modelio.build_feeds(
            self.reference.sig, head.columns, feature_columns=self.options.feature_columns, exclude=exclude
        )


def scaled(table: CountsTable, factor: int) -> CountsTable:
    """The same proportions at ``factor`` times the rows."""
    return dataclasses.replace(table, counts=table.counts * factor, score_hist=table.score_hist * factor)


def require_decidable(identical: CountsTable, policy: Policy, holdout: float, total_rows: int) -> None:
    """InputError unless the held-out split could pass even one check: a candidate identical
    to the reference must pass the policy there. The message says how many rows would do,
    found by scaling the held-out table (same groups, same proportions) until it passes."""
    if gate(identical, policy).verdict == "pass":
        return
    factor = 2
    while factor <= 4096 and gate(scaled(identical, factor), policy).verdict != "pass":
        factor *= 2
    held = identical.rows
    if factor > 4096:
        raise InputError(
            f"the held-out split ({held} of {total_rows} rows) cannot decide the policy even for a candidate "
            "identical to the reference, at any size: a check's groups are too small or too unbalanced"
        )
    low, high = factor // 2, factor
    while high - low > max(1, low // 20):  # to within 5%
        mid = (low + high) // 2
        low, high = (low, mid) if gate(scaled(identical, mid), policy).verdict == "pass" else (mid, high)
    needed = math.ceil(high * held / holdout)
    raise InputError(
        f"{total_rows} rows give a held-out split of {held} rows (--holdout {holdout}), too few for the policy "
        f"to pass anything, even a candidate identical to the reference; about {needed:,} rows would"
    )


def split_info(search: Split, held: Split, total: int, holdout: float, seed: int, sha: str) -> dict[str, Any]:
    return {
        "rule": "perm = numpy.random.default_rng(seed).permutation(rows); "
        "held-out = sorted(perm[:round(rows * holdout)])",
        "rows": total,
        "holdout": holdout,
        "seed": seed,
        "data_sha256": sha,
        "search_rows": len(search.rows),
        "holdout_rows": len(held.rows),
        "search_sha256": search.dataset.sha256,
        "holdout_sha256": held.dataset.sha256,
    }
