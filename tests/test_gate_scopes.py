"""Each scope's bootstrap replicates are the sums of its member groups' replicates.

The gate draws one set of replicates over the finest groups (every attribute's intersection)
and sums them into each attribute's groups. The oracle here is a plain loop over group keys;
the table has three attributes whose group orders differ (the finest order is by the first).
"""

from __future__ import annotations

import numpy as np

from edgefair.core import tables
from edgefair.verification import gate


def test_scope_replicates_are_member_sums() -> None:
    rng = np.random.default_rng(4)
    n = 4000
    sens = {
        "site": rng.choice([f"s{i}" for i in range(9)], n),
        "band": rng.choice(["a", "b", "c", "d"], n),
        "sex": rng.choice(["F", "M", "X"], n, p=[0.5, 0.45, 0.05]),
    }
    y = rng.integers(0, 2, n)
    table = tables.from_arrays(sens, rng.integers(0, 2, n), rng.integers(0, 2, n), y)
    reps = rng.integers(0, 50, (7, len(table.groups), 3, 2, 2))
    for attrs in (("site",), ("band",), ("sex",), ("band", "sex"), ("site", "band", "sex")):
        scope = gate._scope(table, reps, attrs)
        pos = [table.attributes.index(a) for a in attrs]
        assert scope.table.groups == tuple(sorted({tuple(k[p] for p in pos) for k in table.groups}))
        for h, key in enumerate(scope.table.groups):
            members = [i for i, k in enumerate(table.groups) if tuple(k[p] for p in pos) == key]
            assert np.array_equal(scope.replicates[:, h], reps[:, members].sum(axis=1)), (attrs, key)
