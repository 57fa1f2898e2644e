"""Intervals and tests agree with statsmodels; simulated coverage is near nominal."""

from __future__ import annotations

import numpy as np
import pytest
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import confint_proportions_2indep, proportion_confint

from edgefair.core import metrics, stats, tables


@pytest.mark.parametrize(("x", "n"), [(0, 10), (3, 10), (10, 10), (57, 1000), (1, 3)])
@pytest.mark.parametrize("conf", [0.9, 0.95, 0.99])
def test_wilson_matches_statsmodels(x, n, conf):
    low, high = stats.wilson_interval(x, n, conf)
    ref = proportion_confint(x, n, alpha=1 - conf, method="wilson")
    assert abs(float(low) - ref[0]) < 1e-9 and abs(float(high) - ref[1]) < 1e-9


@pytest.mark.parametrize(("x1", "n1", "x2", "n2"), [(56, 70, 48, 80), (9, 10, 3, 10), (5, 56, 0, 29)])
def test_newcombe_matches_statsmodels(x1, n1, x2, n2):
    low, high = stats.newcombe_interval(x1, n1, x2, n2, 0.95)
    ref = confint_proportions_2indep(x1, n1, x2, n2, method="newcomb", compare="diff")
    assert abs(float(low) - ref[0]) < 1e-9 and abs(float(high) - ref[1]) < 1e-9


def test_newcombe_matches_the_published_example():
    # Newcombe (1998), Table II, example (a): 56/70 vs 48/80 -> 0.0524 to 0.3339
    low, high = stats.newcombe_interval(56, 70, 48, 80, 0.95)
    assert round(float(low), 4) == 0.0524 and round(float(high), 4) == 0.3339


@pytest.mark.parametrize(("b", "c"), [(0, 0), (1, 9), (12, 3), (50, 70), (400, 455)])
def test_exact_mcnemar_matches_statsmodels(b, c):
    ref = mcnemar([[10, b], [c, 10]], exact=True).pvalue
    assert abs(stats.mcnemar_exact(b, c) - ref) < 1e-9


def test_holm_and_bh_match_statsmodels():
    p = np.array([0.001, 0.04, 0.03, 0.5, 0.012, 0.2])
    assert np.allclose(stats.holm(p), multipletests(p, method="holm")[1])
    assert np.allclose(stats.benjamini_hochberg(p), multipletests(p, method="fdr_bh")[1])


def test_wilson_coverage_is_near_nominal():
    rng = np.random.default_rng(11)
    true_rate, n, trials = 0.13, 80, 4000
    x = rng.binomial(n, true_rate, trials)
    low, high = stats.wilson_interval(x, n, 0.95)
    coverage = np.mean((low <= true_rate) & (true_rate <= high))
    assert 0.93 <= coverage <= 0.97, coverage


def test_bootstrap_coverage_of_a_difference_is_near_nominal():
    rng = np.random.default_rng(5)
    rates, sizes, trials, covered = (0.30, 0.22), (600, 400), 300, 0
    for t in range(trials):
        g = np.repeat(["a", "b"], sizes)
        y = np.concatenate([rng.binomial(1, r, s) for r, s in zip(rates, sizes, strict=True)])
        table = tables.from_arrays({"g": g}, y)
        reps = stats.bootstrap_counts(table.counts, 400, seed=t)
        sr = metrics.compute(reps, "selection_rate")
        iv = stats.percentile_interval(sr[:, 0] - sr[:, 1], 0.95)
        covered += iv.contains(rates[0] - rates[1])
    assert 0.92 <= covered / trials <= 0.98, covered / trials


def test_bootstrap_keeps_group_sizes_and_pairing():
    rng = np.random.default_rng(1)
    g = rng.integers(0, 4, 5000)
    r = rng.integers(0, 2, 5000)
    table = tables.from_arrays({"g": g}, r, r.copy(), rng.integers(0, 2, 5000))
    reps = stats.bootstrap_counts(table.counts, 200)
    assert (reps.sum(axis=(2, 3, 4)) == table.group_sizes()).all()
    # identical models stay identical in every replicate: no flips appear from nowhere
    assert metrics.compute(reps, "flip_rate").max() == 0.0


def test_rate_test_is_consistent_with_its_direction():
    above, below = stats.rate_test_pvalues(30, 100, 0.1)
    assert above < 1e-6 and below > 0.99
