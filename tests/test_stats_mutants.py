"""edgefair.core.stats against independent oracles, at the edges the main tests leave open.

Written against the survivors of a mutation run (tools/mutation.py): every test states a property
of the function's contract and checks it with scipy, statsmodels or hand-worked numbers, never with
the function under test. Keep the whole file fast (a few seconds): mutmut runs it hundreds of times.
"""

from __future__ import annotations

import math
import warnings
from decimal import Decimal

import numpy as np
import pytest
from scipy.stats import binom, norm
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import confint_proportions_2indep, proportion_confint

from edgefair.core import stats
from edgefair.errors import InputError

# ---------------------------------------------------------------------------------------- Interval


def test_interval_contains_its_endpoints():
    iv = stats.Interval(0.1, 0.3)
    assert iv.contains(0.1) and iv.contains(0.3) and iv.contains(0.2)
    assert not iv.contains(np.nextafter(0.1, 0)) and not iv.contains(np.nextafter(0.3, 1))
    assert stats.Interval(0.5, 0.5).contains(0.5) and iv.width == pytest.approx(0.2, abs=1e-15)


# ----------------------------------------------------------------------------------------- z_value


@pytest.mark.parametrize("confidence", [0.0, 1.0, -0.5, 1.5, 2.5, float("nan")])
def test_z_value_refuses_confidences_outside_the_open_unit_interval(confidence):
    with pytest.raises(InputError, match=r"^confidence must be between 0 and 1, got "):
        stats.z_value(confidence)


@pytest.mark.parametrize("confidence", [0.5, 0.8, 0.9, 0.95, 0.99, 0.999])
def test_z_value_two_and_one_sided_match_scipy(confidence):
    assert stats.z_value(confidence) == pytest.approx(norm.ppf(1 - (1 - confidence) / 2), abs=1e-12)
    assert stats.z_value(confidence, two_sided=True) == pytest.approx(norm.ppf(1 - (1 - confidence) / 2), abs=1e-12)
    assert stats.z_value(confidence, two_sided=False) == pytest.approx(norm.ppf(confidence), abs=1e-12)
    assert stats.z_value(confidence, False) < stats.z_value(confidence, True)


# ------------------------------------------------------------------------------------- wilson


def _wilson_ref(x, n, conf=0.95):
    return proportion_confint(x, n, alpha=1 - conf, method="wilson")


@pytest.mark.parametrize(("x", "n"), [(0, 1), (1, 1), (0, 2), (1, 2), (2, 2), (7, 40), (999, 1000)])
def test_wilson_default_confidence_and_tiny_samples_match_statsmodels(x, n):
    low, high = stats.wilson_interval(x, n)  # the default is 95%
    ref = _wilson_ref(x, n, 0.95)
    assert float(low) == pytest.approx(ref[0], abs=1e-12) and float(high) == pytest.approx(ref[1], abs=1e-12)


@pytest.mark.parametrize(("x", "n"), [(0.25, 0.5), (0.0, 0.3), (0.3, 0.3), (0.1, 0.9), (2.5, 7.5), (0.5, 1.0)])
def test_wilson_weighted_fractional_counts_match_statsmodels(x, n):
    low, high = stats.wilson_interval(x, n, 0.95)
    ref = _wilson_ref(x, n, 0.95)
    assert float(low) == pytest.approx(ref[0], abs=1e-12) and float(high) == pytest.approx(ref[1], abs=1e-12)


@pytest.mark.parametrize("confidence", [0.8, 0.95, 0.99])
def test_wilson_endpoints_are_exactly_0_and_1_at_the_boundaries(confidence):
    n = np.concatenate([np.arange(1, 80, dtype=float), [0.3, 0.6, 0.9, 2.5, 1e6]])
    low0, _ = stats.wilson_interval(np.zeros_like(n), n, confidence)
    _, high_n = stats.wilson_interval(n, n, confidence)
    assert (low0 == 0.0).all(), n[low0 != 0.0]
    assert (high_n == 1.0).all(), n[high_n != 1.0]


def test_wilson_with_no_rows_is_the_uninformative_unit_interval():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no 0/0 along the way
        low, high = stats.wilson_interval([0, 0], [0, 0])
    assert low.dtype == np.float64 and high.dtype == np.float64
    assert low.tolist() == [0.0, 0.0] and high.tolist() == [1.0, 1.0]
    # "n == 0 gives [0, 1]" whatever the successes field says, and next to real groups
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 5 successes of 0 rows: nan in the masked-out arithmetic
        low, high = stats.wilson_interval([0, 1, 3, 5], [0, 0, 10, 0], 0.9)
    assert low[[0, 1, 3]].tolist() == [0.0, 0.0, 0.0] and high[[0, 1, 3]].tolist() == [1.0, 1.0, 1.0]
    ref = _wilson_ref(3, 10, 0.9)
    assert low[2] == pytest.approx(ref[0], abs=1e-12) and high[2] == pytest.approx(ref[1], abs=1e-12)


def test_wilson_stays_inside_the_unit_interval_next_to_its_boundaries():
    # successes a hair above 0 or below n (weighted counts): float dust must not leave [0, 1]
    n = np.arange(1, 120, dtype=float)
    for x in (np.full_like(n, 1e-300), n * (1 - 2**-52), np.nextafter(n, 0), np.nextafter(np.nextafter(n, 0), 0)):
        low, high = stats.wilson_interval(x, n, 0.95)
        assert (low >= 0.0).all() and (high <= 1.0).all() and (low <= high).all()


def test_wilson_accepts_object_arrays_like_float_arrays():
    # counts from an object column (pandas, JSON) are converted to float first
    x, n = [0, 3, 7], [10, 10, 7]
    ref = stats.wilson_interval(np.array(x, float), np.array(n, float), 0.9)
    for xs, ns in [(np.array(x, object), np.array(n, float)), (np.array(x, float), np.array(n, object))]:
        got = stats.wilson_interval(xs, ns, 0.9)
        assert got[0].dtype == np.float64 and got[1].dtype == np.float64
        assert np.array_equal(got[0], ref[0]) and np.array_equal(got[1], ref[1])


# ----------------------------------------------------------------------------------- newcombe


def _newcombe_by_hand(x1, n1, x2, n2, conf):
    """Newcombe's method 10 composed from statsmodels' Wilson intervals ([0, 1] when n == 0)."""
    p1, p2 = (x1 / n1 if n1 else 0.0), (x2 / n2 if n2 else 0.0)
    l1, u1 = _wilson_ref(x1, n1, conf) if n1 else (0.0, 1.0)
    l2, u2 = _wilson_ref(x2, n2, conf) if n2 else (0.0, 1.0)
    d = p1 - p2
    return d - math.hypot(p1 - l1, u2 - p2), d + math.hypot(u1 - p1, p2 - l2)


@pytest.mark.parametrize(("x1", "n1", "x2", "n2"), [(56, 70, 48, 80), (0, 12, 12, 12), (3, 10, 0, 5)])
def test_newcombe_default_and_other_confidences_match_statsmodels(x1, n1, x2, n2):
    low, high = stats.newcombe_interval(x1, n1, x2, n2)  # the default is 95%
    ref = confint_proportions_2indep(x1, n1, x2, n2, method="newcomb", compare="diff", alpha=0.05)
    assert float(low) == pytest.approx(ref[0], abs=1e-12) and float(high) == pytest.approx(ref[1], abs=1e-12)
    for conf in (0.8, 0.99):
        low, high = stats.newcombe_interval(x1, n1, x2, n2, conf)
        ref = confint_proportions_2indep(x1, n1, x2, n2, method="newcomb", compare="diff", alpha=1 - conf)
        assert float(low) == pytest.approx(ref[0], abs=1e-12) and float(high) == pytest.approx(ref[1], abs=1e-12)


@pytest.mark.parametrize(("x1", "n1", "x2", "n2"), [(0, 0, 3, 10), (2, 9, 0, 0), (0, 0, 0, 0), (0, 0, 5, 5)])
def test_newcombe_with_an_empty_side_uses_the_uninformative_wilson_interval(x1, n1, x2, n2):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        low, high = stats.newcombe_interval(x1, n1, x2, n2, 0.95)
    ref = _newcombe_by_hand(x1, n1, x2, n2, 0.95)
    assert float(low) == pytest.approx(max(-1.0, ref[0]), abs=1e-12)
    assert float(high) == pytest.approx(min(1.0, ref[1]), abs=1e-12)


@pytest.mark.parametrize(("x1", "n1", "x2", "n2"), [(0.25, 0.5, 0.3, 0.9), (0.5, 0.75, 2.5, 7.5), (3, 10, 0.2, 0.4)])
def test_newcombe_weighted_fractional_counts_match_the_hand_composition(x1, n1, x2, n2):
    low, high = stats.newcombe_interval(x1, n1, x2, n2, 0.9)
    ref = _newcombe_by_hand(x1, n1, x2, n2, 0.9)
    assert float(low) == pytest.approx(ref[0], abs=1e-12) and float(high) == pytest.approx(ref[1], abs=1e-12)


def test_newcombe_refuses_inconsistent_counts_rather_than_clipping_them():
    # successes above the row count or below 0 (a corrupt table) are refused: unclipped these ran
    # from -1.01 to -0.61 ... 5.42 to 32.2, and clipping them to [-1, 1] only hid the corruption.
    # (For consistent counts the interval lies within [-1, 1] without clipping: see the refusals below.)
    cases = [(0, 10, 10.05, 10), (0, 1, 1.3, 1), (0, 1, 0.6, 0.25), (0.6, 0.25, -0.35, 0.25), (0.1, 0.01, -0.09, 0.01)]
    for x1, n1, x2, n2 in cases:
        for args in ((x1, n1, x2, n2), (x2, n2, x1, n1)):
            with pytest.raises(InputError, match="successes must lie in"):
                stats.newcombe_interval(*args, 0.95)


def test_newcombe_accepts_object_arrays_like_float_arrays():
    args = [[56, 0, 3], [70, 12, 10], [48, 12, 0], [80, 12, 5]]
    ref = stats.newcombe_interval(*(np.array(a, float) for a in args), 0.9)
    for i in range(4):
        mixed = [np.array(a, object if j == i else float) for j, a in enumerate(args)]
        got = stats.newcombe_interval(*mixed, 0.9)
        assert got[0].dtype == np.float64 and got[1].dtype == np.float64
        assert np.array_equal(got[0], ref[0]) and np.array_equal(got[1], ref[1])


# --------------------------------------------------------------------------- binomial / mcnemar


def test_binom_cdf_half_outside_and_at_the_support():
    assert stats._binom_cdf_half(-1, 5) == 0.0
    assert stats._binom_cdf_half(-3, 0) == 0.0
    for n in range(1, 40):
        assert stats._binom_cdf_half(n, n) == 1.0
        assert stats._binom_cdf_half(n + 3, n) == 1.0
    assert stats._binom_cdf_half(0, 0) == 1.0


@pytest.mark.parametrize("n", [1, 2, 5, 17, 49, 50, 52, 55, 200, 1001])
def test_binom_cdf_half_matches_scipy_and_never_exceeds_one(n):
    for k in sorted({0, 1, n // 3, n // 2, n - 2, n - 1} - {-1}):
        got = stats._binom_cdf_half(k, n)
        assert got <= 1.0
        assert got == pytest.approx(binom.cdf(k, n, 0.5), rel=1e-10, abs=1e-300)
    assert stats._binom_cdf_half(0, n) == pytest.approx(0.5**n, rel=1e-12)


@pytest.mark.parametrize(("b", "c"), [(-1, 3), (3, -1), (-2, -2), (-1, 0)])
def test_mcnemar_refuses_negative_counts_on_either_side(b, c):
    with pytest.raises(InputError, match=r"^McNemar counts must be non-negative$"):
        stats.mcnemar_exact(b, c)


@pytest.mark.parametrize(("b", "c"), [(0, 5), (5, 0), (0, 1), (1, 0), (3, 3), (2, 2), (1, 2), (7, 7), (10, 11)])
def test_mcnemar_small_and_balanced_counts_match_statsmodels(b, c):
    ref = mcnemar([[4, b], [c, 4]], exact=True).pvalue
    got = stats.mcnemar_exact(b, c)
    assert got <= 1.0 and got == pytest.approx(ref, abs=1e-12)
    if b == c:
        assert got == 1.0


def test_mcnemar_hand_worked_values():
    assert stats.mcnemar_exact(0, 5) == pytest.approx(2 / 32, rel=1e-12)  # 2 * P(X <= 0), X ~ B(5, 1/2)
    assert stats.mcnemar_exact(1, 4) == pytest.approx(2 * 6 / 32, rel=1e-12)
    assert stats.mcnemar_exact(0, 0) == 1.0


# ---------------------------------------------------------------------------------- bootstrap


def _table():
    c = np.zeros((3, 3, 2, 2), np.int64)
    c[0, 0] = [[5, 0], [0, 3]]  # label 0: no disagreement
    c[0, 1, 1, 1] = 1  # label 1: exactly one row
    c[2, 2] = [[2, 1], [0, 4]]  # group 1 is empty
    return c


def test_bootstrap_defaults_and_shape():
    c = _table()
    reps = stats.bootstrap_counts(c)
    assert reps.shape == (1000, *c.shape) and reps.dtype == np.int64
    assert np.array_equal(stats.bootstrap_counts(c, 7), stats.bootstrap_counts(c, 7, seed=0))
    assert not np.array_equal(stats.bootstrap_counts(c, 7), stats.bootstrap_counts(c, 7, seed=1))
    assert np.array_equal(stats.bootstrap_counts(c, 7, 5), stats.bootstrap_counts(c, 7, seed=5))


def test_bootstrap_single_replicate_and_refused_counts():
    c = _table()
    one = stats.bootstrap_counts(c, 1, seed=3)
    assert one.shape == (1, *c.shape) and one.dtype == np.int64
    for bad in (0, -1):
        with pytest.raises(InputError, match=r"^replicates must be at least 1, got "):
            stats.bootstrap_counts(c, bad)
    with pytest.raises(InputError, match=r"^discordance_prior must be non-negative, got "):
        stats.bootstrap_counts(c, 5, discordance_prior=-0.5)


def test_bootstrap_seeds_are_reproducible_and_distinct():
    c = _table()
    a, b = stats.bootstrap_counts(c, 50, seed=123), stats.bootstrap_counts(c, 50, seed=123)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, stats.bootstrap_counts(c, 50, seed=124))


@pytest.mark.parametrize("prior", [0.0, 0.5, 2.0])
def test_bootstrap_sizes_empty_groups_and_prior_expectation(prior):
    c = _table()
    reps = stats.bootstrap_counts(c, 20000, seed=7, discordance_prior=prior)
    assert reps.dtype == np.int64
    sizes = c.reshape(3, -1).sum(axis=1)
    assert (reps.reshape(20000, 3, -1).sum(axis=2) == sizes).all()  # every replicate keeps group sizes
    assert (reps[:, 1] == 0).all()  # the empty group stays empty
    assert (reps[:, 0, 2] == 0).all()  # no pseudo-rows for a label the group has no rows of
    # the prior: `prior` pseudo-rows in each discordant cell (0,1) and (1,0) of the labels present
    has = c.sum(axis=(2, 3)) > 0
    w = c.astype(float)
    w[:, :, 0, 1] += prior * has
    w[:, :, 1, 0] += prior * has
    totals = w.reshape(3, -1).sum(axis=1)
    expected = w * np.divide(sizes, totals, out=np.zeros(3), where=totals > 0)[:, None, None, None]
    assert np.abs(reps.mean(axis=0) - expected).max() < 0.05, reps.mean(axis=0) - expected
    if prior:
        assert reps[:, 0, 1, 0, 1].max() > 0 and reps[:, 0, 0, 1, 0].max() > 0  # flips out of no flips


# ------------------------------------------------------------------------------ percentiles


def test_percentile_interval_ignores_nans_and_matches_numpy():
    rng = np.random.default_rng(2)
    s = rng.normal(size=501)
    with_nans = np.concatenate([s[:200], [np.nan] * 17, s[200:]])
    for conf in (0.5, 0.9, 0.95):
        iv = stats.percentile_interval(with_nans, conf)
        tail = (1 - conf) / 2
        lo, hi = np.quantile(s, [tail, 1 - tail])
        assert iv.low == lo and iv.high == hi


def test_percentile_interval_of_a_single_sample_and_of_no_samples():
    iv = stats.percentile_interval([0.25, np.nan], 0.9)
    assert (iv.low, iv.high) == (0.25, 0.25)
    for empty in ([], [np.nan, np.nan]):
        iv = stats.percentile_interval(empty, 0.95)
        assert isinstance(iv.low, float) and isinstance(iv.high, float)
        assert math.isnan(iv.low) and math.isnan(iv.high)


def test_percentile_interval_works_in_double_precision_whatever_the_input():
    s32 = np.random.default_rng(4).normal(size=999).astype(np.float32)
    iv = stats.percentile_interval(s32, 0.9)
    tail = (1 - 0.9) / 2
    lo, hi = np.quantile(s32.astype(np.float64), [tail, 1 - tail])
    assert iv.low == lo and iv.high == hi
    obj = np.array([0.1, 0.7, None, 0.4], dtype=object)  # a column with a missing value
    iv = stats.percentile_interval(obj, 0.5)
    lo, hi = np.quantile([0.1, 0.7, 0.4], [0.25, 0.75])
    assert iv.low == lo and iv.high == hi


# --------------------------------------------------------------------------- multiple testing


def _decimals(p):
    return [Decimal(repr(float(v))) for v in p]


P = [0.1, 0.7, 0.3, 0.03, 0.9, 0.3, 0.011]
Q = [0.1, 0.07, 0.3, 0.03, 0.9, 0.011, 0.013]  # 3 * 0.1 in floats is not 3 * Decimal("0.1")


def test_holm_and_bh_match_statsmodels_with_ties_and_singletons():
    for p in (P, [0.04], [0.5, 0.5, 0.5], [0.0, 0.2, 0.0]):
        assert np.allclose(stats.holm(p), multipletests(p, method="holm")[1], rtol=0, atol=1e-15)
        assert np.allclose(stats.benjamini_hochberg(p), multipletests(p, method="fdr_bh")[1], rtol=0, atol=1e-15)
    assert stats.holm([]).shape == (0,) and stats.benjamini_hochberg([]).shape == (0,)


def test_adjusted_pvalues_never_exceed_one_even_with_float_dust_above_one():
    dusty = 1.0 + 2**-40
    for p in ([dusty], [0.5, dusty], [dusty, dusty, 0.01]):
        for method in ("holm", "bh", "bonferroni"):
            out = stats.adjust(p, method)
            assert out.max() <= 1.0 and out.dtype == np.float64
    assert stats.benjamini_hochberg([dusty]).tolist() == [1.0]


def test_bh_of_one_pvalue_is_a_new_array():
    p = np.array([0.2])
    out = stats.benjamini_hochberg(p)
    out[0] = 0.9
    assert p[0] == 0.2


def test_adjustment_converts_decimal_pvalues_to_float_first():
    # p-values from a database column: the same answers as the float list, bit for bit
    for method, fn in (("holm", stats.holm), ("bh", stats.benjamini_hochberg)):
        for p in (P, Q):
            ref = fn(np.array(p))
            assert np.array_equal(fn(_decimals(p)), ref) and fn(_decimals(p)).dtype == np.float64
            assert np.array_equal(stats.adjust(_decimals(p), method), ref)
    ref = np.minimum(1.0, np.array(P) * len(P))
    assert np.array_equal(stats.adjust(_decimals(P), "bonferroni"), ref)
    assert stats.adjust(_decimals(P), "none").dtype == np.float64


@pytest.mark.parametrize("method", ["bonferroni", "none"])
def test_bonferroni_and_none_return_float64(method):
    for p in ([0, 1, 0], np.array([0.011, 0.3, 0.07], np.float32)):
        out = stats.adjust(p, method)
        assert out.dtype == np.float64
        factor = 3 if method == "bonferroni" else 1
        assert np.array_equal(out, np.minimum(1.0, np.asarray(p, np.float64) * factor))


def test_adjust_refuses_unknown_methods_with_the_choices():
    with pytest.raises(InputError, match=r"^unknown adjustment 'sidak'; use holm, bh, bonferroni or none$"):
        stats.adjust([0.1], "sidak")


# ------------------------------------------------------------------------------ rate tests


def _binom_ref(x, n, t):
    return float(binom.sf(x - 1, n, t)), float(binom.cdf(x, n, t))


@pytest.mark.parametrize("successes", [0, 1, 5, -1])
@pytest.mark.parametrize("threshold", [0.0, 0.3, 1.0])
def test_rate_test_without_rows_gives_no_evidence(successes, threshold):
    for n in (0, -3, 0.0):
        assert stats.rate_test_pvalues(successes, n, threshold) == (1.0, 1.0)


@pytest.mark.parametrize(
    ("x", "n", "t"),
    [
        (0, 1, 0.3),
        (1, 1, 0.3),
        (1, 1, 0.5),
        (0, 2, 0.5),
        (3, 10, 0.5),
        (2, 30, 0.02),
        (0, 30, 0.02),
        (30, 30, 0.5),
        (7, 12, 0.9),
    ],
)
def test_rate_test_exact_branch_matches_scipy(x, n, t):
    got = stats.rate_test_pvalues(x, n, t)
    ref = _binom_ref(x, n, t)
    assert got[0] == pytest.approx(ref[0], rel=1e-10, abs=1e-15)
    assert got[1] == pytest.approx(ref[1], rel=1e-10, abs=1e-15)


def test_rate_test_pvalues_never_exceed_one():
    # cases where the summed pmf is a hair above its total in floating point
    for x, n, t in [(2, 17, 0.99), (1, 18, 0.9), (3, 21, 0.9), (10, 23, 0.01), (11, 23, 0.01), (14, 23, 0.01)]:
        above, below = stats.rate_test_pvalues(x, n, t)
        assert above <= 1.0 and below <= 1.0
        assert above == pytest.approx(_binom_ref(x, n, t)[0], abs=1e-12)
        assert below == pytest.approx(_binom_ref(x, n, t)[1], abs=1e-12)


def test_rate_test_extreme_tail_does_not_underflow_early():
    above, below = stats.rate_test_pvalues(1070, 1070, 0.5)  # P(X >= n) = 2**-1070, a subnormal float
    assert above > 0.0 and above == pytest.approx(0.5**1070, rel=0.1)
    assert below == 1.0


def test_rate_test_at_threshold_one_and_above():
    for t in (1.0, 1.5):
        assert stats.rate_test_pvalues(10, 10, t) == (1.0, 1.0)  # every row a success: consistent with 1
        assert stats.rate_test_pvalues(11, 10, t) == (1.0, 1.0)
        assert stats.rate_test_pvalues(9, 10, t) == (0.0, 1.0)  # one failure rules a rate of 1 out
        assert stats.rate_test_pvalues(0, 10, t) == (0.0, 1.0)
    assert stats.rate_test_pvalues(9.6, 10.2, 1.0) == (1.0, 1.0)  # rounded: 10 of 10


def test_rate_test_at_threshold_zero():
    above, below = stats.rate_test_pvalues(0, 50, 0.0)
    assert above == 1.0 and below == pytest.approx(1.0, abs=1e-12)
    above, below = stats.rate_test_pvalues(1, 50, 0.0)
    assert above == pytest.approx(0.0, abs=1e-250) and below == pytest.approx(1.0, abs=1e-12)
    above, below = stats.rate_test_pvalues(50, 50, 0.0)
    assert above == pytest.approx(0.0, abs=1e-250) and below == 1.0


def test_rate_test_exact_branch_up_to_its_limit():
    n, t = stats.EXACT_BINOMIAL_MAX_N, 1e-4  # n * t = 500: the normal approximation is off by ~1e-3 here
    for x in (450, 500, 560):
        got = stats.rate_test_pvalues(x, n, t)
        ref = _binom_ref(x, n, t)
        assert got[0] == pytest.approx(ref[0], rel=1e-9) and got[1] == pytest.approx(ref[1], rel=1e-9)


@pytest.mark.parametrize(("t", "tol"), [(0.5, 1e-7), (0.3, 1e-4), (0.02, 1e-3)])
def test_rate_test_large_n_branch_matches_scipy(t, tol):
    n = stats.EXACT_BINOMIAL_MAX_N + 1
    sd = math.sqrt(n * t * (1 - t))
    for k in (-3, -1, 0, 0.5, 1, 2, 3):
        x = round(n * t + k * sd)
        above, below = stats.rate_test_pvalues(x, n, t)
        ref = _binom_ref(x, n, t)
        assert above == pytest.approx(ref[0], abs=tol), (x, above, ref)
        assert below == pytest.approx(ref[1], abs=tol), (x, below, ref)
        assert 0.0 <= above <= 1.0 and 0.0 <= below <= 1.0
    # far beyond the limit, and the branch's extremes
    n = 40_000_000
    x = round(0.3 * n) + 5000
    assert stats.rate_test_pvalues(x, n, 0.3)[0] == pytest.approx(float(binom.sf(x - 1, n, 0.3)), abs=1e-4)
    assert stats.rate_test_pvalues(0, n, 0.3) == pytest.approx((1.0, 0.0), abs=1e-12)
    assert stats.rate_test_pvalues(n, n, 0.3) == pytest.approx((0.0, 1.0), abs=1e-12)


# --------------------------------------------------------------------------- refusals
# stats refuses inputs with no meaning instead of computing from them: successes out of zero rows (or
# more successes than rows) for Newcombe's interval, count tables of the wrong shape, type or sign.


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
    text = str(info.value)
    assert text.startswith("bootstrap_counts: counts must ") and text.endswith(message), text


def test_bootstrap_keeps_group_sizes_for_a_list_input():
    counts = [[[[3, 1], [0, 2]], [[1, 0], [0, 4]], [[0, 0], [0, 0]]]]
    reps = stats.bootstrap_counts(counts, 7, seed=1)  # type: ignore[arg-type]
    assert reps.shape == (7, 1, 3, 2, 2) and reps.dtype == np.int64
    assert (reps.sum(axis=(2, 3, 4)) == 11).all()
