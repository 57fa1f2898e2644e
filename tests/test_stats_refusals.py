"""stats refuses inputs that have no meaning instead of computing from them: successes out
of zero rows (or more successes than rows) for Newcombe's interval, and count tables of the
wrong shape, type or sign for the bootstrap."""

from __future__ import annotations

import numpy as np
import pytest
from statsmodels.stats.proportion import confint_proportions_2indep

from edgefair.core import stats
from edgefair.errors import InputError


@pytest.mark.parametrize(
    ("x1", "n1", "x2", "n2"),
    [(3, 0, 1, 10), (1, 10, 2, 0), (11, 10, 1, 10), (1, 10, -1, 10), (np.nan, 10, 1, 10), ([1, 4], [5, 3], 1, 4)],
)
def test_newcombe_refuses_successes_outside_the_rows(x1, n1, x2, n2):
    with pytest.raises(InputError) as info:
        stats.newcombe_interval(x1, n1, x2, n2)
    assert str(info.value) == "newcombe_interval: successes must lie in [0, rows] (no successes out of 0 rows)"


def test_newcombe_still_matches_statsmodels_and_allows_empty_groups():
    low, high = stats.newcombe_interval(7, 20, 3, 25, 0.95)
    want = confint_proportions_2indep(7, 20, 3, 25, method="newcomb", compare="diff", alpha=0.05)
    assert (float(low), float(high)) == pytest.approx(want)
    low, high = stats.newcombe_interval(0, 0, 0, 0)  # no rows: the uninformative [-1, 1]
    assert (float(low), float(high)) == (-1.0, 1.0)
    low, high = stats.newcombe_interval([10, 0], [10, 5], [0, 5], [10, 5])
    assert low.shape == (2,) and float(high[0]) == 1.0 and float(low[1]) == -1.0


@pytest.mark.parametrize(
    ("counts", "message"),
    [
        (
            np.zeros((2, 12), np.int64),
            "bootstrap_counts: counts must be integers of shape (groups, 3, 2, 2), got (2, 12)",
        ),
        (np.zeros((2, 3, 2), np.int64), "got (2, 3, 2)"),
        (np.zeros((2, 2, 2, 2), np.int64), "got (2, 2, 2, 2)"),
        (np.zeros((1, 2, 3, 2, 2), np.int64), "got (1, 2, 3, 2, 2)"),
        (np.zeros((2, 3, 2, 2)), "got (2, 3, 2, 2)"),  # floats are not counts
        (-np.ones((1, 3, 2, 2), np.int64), "bootstrap_counts: counts must be non-negative"),
    ],
)
def test_bootstrap_refuses_malformed_tables(counts, message):
    with pytest.raises(InputError) as info:
        stats.bootstrap_counts(counts, 5)
    assert message in str(info.value)


def test_bootstrap_keeps_group_sizes_for_a_list_input():
    counts = [[[[3, 1], [0, 2]], [[1, 0], [0, 4]], [[0, 0], [0, 0]]]]
    reps = stats.bootstrap_counts(counts, 7, seed=1)  # type: ignore[arg-type]
    assert reps.shape == (7, 1, 3, 2, 2) and reps.dtype == np.int64
    assert (reps.sum(axis=(2, 3, 4)) == 11).all()
