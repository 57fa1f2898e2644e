"""Latency measured on this machine, not assumed: each model timed at the deployment batch,
one thread, the whole model (preprocessing included), as a ratio to the source in the same
run.

The machine may be shared and noisy, so timings are interleaved: in every round each model
(the source included) runs a burst of calls in a shuffled order, and a variant's ratio for
the round is its time over the source's time in that round. The reported ratio is the median
over rounds; ``ratio_high`` (the upper quartile) is what "faster than the source" is judged
on, so one lucky round does not make a variant faster.

Sessions differ too: two sessions of the same model, timed together, came out 0.98-1.01x
each other by median (upper quartiles 1.00-1.07) on this project's 2-core machines. So a
claim that matters (the final choice) pools several independent timings, each with fresh
sessions and its own order (``pooled``): the ratios of all their rounds are taken together.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgefair import modelio

BURST_SECONDS = 0.01  # per model per round: long enough to beat the timer, short enough to interleave


@dataclass(frozen=True)
class Latency:
    """Seconds per call at ``batch`` rows and the ratio to the source timed beside it."""

    batch: int
    seconds: float
    source_seconds: float
    ratio: float  # median over rounds of (this model / the source)
    ratio_high: float  # upper quartile of the same
    rounds: int

    @property
    def faster(self) -> bool:
        return self.ratio_high < 1.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "batch": self.batch,
            "seconds": self.seconds,
            "source_seconds": self.source_seconds,
            "ratio": self.ratio,
            "ratio_upper_quartile": self.ratio_high,
            "rounds": self.rounds,
        }


def batch_feeds(feeds: Mapping[str, np.ndarray], batch: int) -> dict[str, np.ndarray]:
    """``batch`` rows of ``feeds`` (cycled when there are fewer)."""
    n = len(next(iter(feeds.values())))
    idx = np.arange(batch) % n
    return {k: np.ascontiguousarray(v[idx]) for k, v in feeds.items()}


def time_rounds(
    source: bytes,
    models: Sequence[bytes],
    feeds: Mapping[str, np.ndarray],
    batch: int,
    rounds: int = 9,
    seed: int = 0,
) -> np.ndarray:
    """Seconds per call, one row per round, one column per model (the source first): one
    independent timing (fresh sessions, its own shuffled order)."""
    sessions = [modelio.open_session(b, threads=1) for b in (source, *models)]
    run_feeds = batch_feeds(feeds, batch)
    for s in sessions:  # warm-up: first calls allocate
        s.run(None, run_feeds)
        s.run(None, run_feeds)
    t0 = time.perf_counter()
    sessions[0].run(None, run_feeds)
    single = max(time.perf_counter() - t0, 1e-6)
    calls = max(1, min(2000, math.ceil(BURST_SECONDS / single)))
    rng = np.random.default_rng(seed)
    per_round = np.zeros((rounds, len(sessions)))
    for r in range(rounds):
        for i in rng.permutation(len(sessions)).tolist():
            sess = sessions[i]
            start = time.perf_counter()
            for _ in range(calls):
                sess.run(None, run_feeds)
            per_round[r, i] = (time.perf_counter() - start) / calls
    return per_round


def latencies(per_round: np.ndarray, batch: int) -> list[Latency]:
    """One ``Latency`` per column after the first (the source): the median and upper quartile
    of the per-round ratios (each model over the source in the same round)."""
    ratios = per_round[:, 1:] / per_round[:, :1]
    source_seconds = float(np.median(per_round[:, 0]))
    return [
        Latency(
            batch=batch,
            seconds=float(np.median(per_round[:, j + 1])),
            source_seconds=source_seconds,
            ratio=float(np.median(ratios[:, j])),
            ratio_high=float(np.quantile(ratios[:, j], 0.75)),
            rounds=len(per_round),
        )
        for j in range(ratios.shape[1])
    ]


def pooled(timings: Sequence[np.ndarray], batch: int) -> list[Latency]:
    """The ``Latency`` of several independent timings of the same models, their rounds pooled:
    a model is faster only if the upper quartile of all its rounds' ratios, from every timing,
    is below 1, so one timing whose sessions happened to run fast cannot carry it."""
    return latencies(np.vstack(list(timings)), batch)


def time_models(
    source: bytes,
    models: Sequence[bytes],
    feeds: Mapping[str, np.ndarray],
    batch: int,
    rounds: int = 9,
    seed: int = 0,
    repeats: int = 1,
) -> list[Latency]:
    """One ``Latency`` per model in ``models``, each against ``source``: ``repeats``
    independent timings of ``rounds`` rounds each, pooled."""
    if not models:
        return []
    return pooled([time_rounds(source, models, feeds, batch, rounds, seed + r) for r in range(repeats)], batch)
