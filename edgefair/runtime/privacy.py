"""What leaves the device: small cells suppressed, optional discrete Laplace noise.

A row adds one to one count cell and one histogram bin, so an export's L1 sensitivity is
2 and the noise scale is 2 / epsilon. Noise is added first and small cells suppressed
after (post-processing keeps the guarantee). Exact raw counts leave only on request.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgefair.core.tables import CountsTable
from edgefair.errors import InputError

DEFAULT_MIN_CELL = 11
SENSITIVITY = 2


def discrete_laplace(rng: np.random.Generator, scale: float, shape: tuple[int, ...]) -> np.ndarray:
    """Two-sided geometric noise: P(k) proportional to exp(-|k| / scale)."""
    p = 1.0 - math.exp(-1.0 / scale)
    return (rng.geometric(p, shape) - rng.geometric(p, shape)).astype(np.int64)


def private_export(
    table: CountsTable,
    min_cell: int = DEFAULT_MIN_CELL,
    epsilon: float | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    """A JSON document of the table with noisy (optional) and suppressed cells (null)."""
    if min_cell < 0:
        raise InputError(f"min_cell must be non-negative, got {min_cell}")
    if epsilon is not None and not (epsilon > 0 and math.isfinite(epsilon)):
        raise InputError(f"epsilon must be a positive, finite number, got {epsilon}")
    counts = table.counts.astype(np.int64)
    hist = table.score_hist[:, :, 0, :].astype(np.int64)
    if epsilon is not None:
        rng = np.random.default_rng(seed)
        scale = SENSITIVITY / epsilon
        counts = counts + discrete_laplace(rng, scale, counts.shape)
        hist = hist + discrete_laplace(rng, scale, hist.shape)

    def shown(values: np.ndarray) -> list[int | None]:
        return [int(v) if v >= min_cell else None for v in values.reshape(-1).tolist()]

    return {
        "kind": "edgefair.counters_export",
        "schema_version": 1,
        "attributes": list(table.attributes),
        "bins": table.bins,
        "privacy": {
            "min_cell": min_cell,
            "epsilon": epsilon,
            "mechanism": "discrete Laplace" if epsilon else None,
            "scale": SENSITIVITY / epsilon if epsilon else None,
            "note": "cells under min_cell (after noise) are null",
        },
        "groups": [
            {"key": list(k), "counts": shown(counts[i]), "score_hist": shown(hist[i])}
            for i, k in enumerate(table.groups)
        ],
    }


@dataclass(frozen=True)
class ExportSummary:
    output: Path
    min_cell: int
    epsilon: float | None
    epsilon_spent: float | None  # the store's total after this export
    budget: float | None
    raw: bool


def write_private_export(
    store: str | Path,
    output: str | Path,
    *,
    min_cell: int = DEFAULT_MIN_CELL,
    epsilon: float | None = None,
    budget: float | None = None,
    raw: bool = False,
) -> ExportSummary:
    """Write what may leave the device: suppressed (and optionally noised) counts, or the
    exact table with ``raw``. The epsilon is charged to the store's ledger only if the file
    was written."""
    from edgefair.files import refuse_overwriting_inputs, write_text
    from edgefair.runtime.store import open_store

    refuse_overwriting_inputs([output], [store])
    opened, table = open_store(store)
    try:
        if raw:
            write_text(output, table.to_json() + "\n")
            return ExportSummary(Path(output), 0, None, None, budget, True)
        doc = private_export(table, min_cell, epsilon)

        def release() -> None:
            write_text(output, json.dumps(doc) + "\n")

        if epsilon is None:
            release()
            return ExportSummary(Path(output), min_cell, None, None, budget, False)
        spent = opened.spend(epsilon, budget, f"export to {output}", release)
        return ExportSummary(Path(output), min_cell, epsilon, spent, budget, False)
    finally:
        opened.close()
