"""The counts table's cell layout: labels, decisions and score bins, stated once.

Kept apart from ``core.tables`` so that code which only counts into the layout (the device
runtime's counters) imports these constants without the table class, its factorisation and
its merges: the runtime loads those when it first builds a table.
"""

from __future__ import annotations

from typing import Any

UNKNOWN_LABEL = 2
CELLS_PER_GROUP = 12  # 3 labels x 2 reference decisions x 2 candidate decisions
DEFAULT_BINS = 50


def cell_index(label: Any, reference: Any, candidate: Any) -> Any:
    """Position of (label, reference decision, candidate decision) among a group's 12 cells.

    The one statement of the cell layout: works on ints and on numpy arrays alike."""
    return label * 4 + reference * 2 + candidate
