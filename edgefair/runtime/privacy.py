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
MIN_SUPPRESSED_CELL = 2  # suppressing only cells under 1 (or 0) would release exact counts
SENSITIVITY = 2
# The smallest epsilon an export takes. Its noise scale 2 / epsilon = 2000 gives every cell a
# standard deviation of about 2800: already nothing but noise for a device's counts, while
# every export still spends budget. Far below it the draw itself breaks: with the textbook
# p = 1 - exp(-epsilon / 2), p is exactly 0 in float64 once epsilon < ~2.2e-16 (numpy refuses),
# and geometric draws near 1 / p overflow int64 long before expm1 runs out of precision.
MIN_EPSILON = 1e-3


def check_epsilon(epsilon: float) -> float:
    """Epsilon as a finite number in [MIN_EPSILON, inf); anything else is an InputError."""
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)):
        raise InputError(f"epsilon must be a number, got {epsilon!r}")
    if not (math.isfinite(epsilon) and epsilon >= MIN_EPSILON):
        raise InputError(
            f"epsilon (--epsilon) must be a finite number of at least {MIN_EPSILON:g} (noise scale 2/epsilon at most "
            f"{SENSITIVITY / MIN_EPSILON:g}), got {epsilon}"
        )
    return float(epsilon)


def discrete_laplace(rng: np.random.Generator, scale: float, shape: tuple[int, ...]) -> np.ndarray:
    """Two-sided geometric noise: P(k) proportional to exp(-|k| / scale)."""
    if not (scale > 0 and math.isfinite(scale)):
        raise InputError(f"noise scale must be a positive, finite number, got {scale}")
    p = -math.expm1(-1.0 / scale)  # 1 - exp(-1/scale), without cancellation for large scales
    if not 0.0 < p <= 1.0 or scale > SENSITIVITY / MIN_EPSILON:
        raise InputError(f"noise scale {scale:g} is too large to draw (at most {SENSITIVITY / MIN_EPSILON:g})")
    return (rng.geometric(p, shape) - rng.geometric(p, shape)).astype(np.int64)


def private_export(
    table: CountsTable,
    min_cell: int = DEFAULT_MIN_CELL,
    epsilon: float | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    """A JSON document of the table with noisy (optional) and suppressed cells (null).

    Without noise, ``min_cell`` must be at least 2: suppressing nothing is an exact export,
    which is ``raw``'s job (``write_private_export``), never one labelled "suppressed"."""
    if isinstance(min_cell, bool) or not isinstance(min_cell, int) or min_cell < 0:
        raise InputError(f"min_cell must be a non-negative integer, got {min_cell!r}")
    if epsilon is None and min_cell < MIN_SUPPRESSED_CELL:
        raise InputError(
            f"min_cell must be at least {MIN_SUPPRESSED_CELL} (got {min_cell}): suppressing cells under "
            f"{min_cell} is an exact export; ask for exact counts with raw (--raw)"
        )
    if epsilon is not None:
        epsilon = check_epsilon(epsilon)
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
    was written.

    The privacy budget lives in the store: ``budget`` sets it the first time (later it can
    only be lowered), and every export with ``epsilon`` is charged against the stored budget,
    given again or not. A store without a budget refuses exports with epsilon. A non-raw
    export suppresses cells under ``min_cell`` >= 2."""
    from edgefair.files import refuse_overwriting_inputs, write_text
    from edgefair.runtime.store import check_budget, open_store

    if raw and epsilon is not None:
        raise InputError("raw exports exact counts: give either raw (--raw) or epsilon (--epsilon), not both")
    if not raw and (isinstance(min_cell, bool) or not isinstance(min_cell, int) or min_cell < MIN_SUPPRESSED_CELL):
        raise InputError(
            f"min_cell (--min-cell) must be at least {MIN_SUPPRESSED_CELL}, got {min_cell!r}: a smaller one suppresses "
            "nothing; exact counts are the explicit raw export (--raw)"
        )
    if epsilon is not None:
        epsilon = check_epsilon(epsilon)
    if budget is not None:
        check_budget(budget)
    refuse_overwriting_inputs([output], [store])
    opened, table = open_store(store, read_only=budget is None and epsilon is None)
    try:
        if budget is not None:
            opened.set_budget(budget)
        stored = opened.budget()
        if raw:
            write_text(output, table.to_json() + "\n")
            return ExportSummary(Path(output), 0, None, None, stored, True)
        doc = private_export(table, min_cell, epsilon)

        def release() -> None:
            write_text(output, json.dumps(doc) + "\n")

        if epsilon is None:
            release()
            return ExportSummary(Path(output), min_cell, None, None, stored, False)
        spent = opened.spend(epsilon, None, f"export to {output}", release)
        return ExportSummary(Path(output), min_cell, epsilon, spent, opened.budget(), False)
    finally:
        opened.close()
