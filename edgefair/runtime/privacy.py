"""What leaves the device: small cells suppressed, optional discrete Laplace noise.

A row adds one to one count cell and one histogram bin, so an export's L1 sensitivity is
2 and the noise scale is 2 / epsilon. Noise is added first and small cells suppressed
after (post-processing keeps the guarantee). Exact raw counts leave only on request.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from edgefair.errors import InputError
from edgefair.tables import CountsTable

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
    if epsilon is not None and epsilon <= 0:
        raise InputError(f"epsilon must be positive, got {epsilon}")
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
