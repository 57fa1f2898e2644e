"""Metrics, p-value adjustment and the gate checked against independent oracles.

Every expectation here is recomputed from raw rows with numpy, taken from statsmodels /
scipy, or worked by hand; nothing compares edgefair with itself. Each test targets one
plausible bug (a swapped metric cell, a denominator counting unknown labels, Holm without
its running maximum, a verdict on the unadjusted p-value, the wrong simultaneous level,
tiny groups being gated, an always-pass or always-fail gate, a wrong ``rows_needed``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.stats import binom
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

from edgefair.core import metrics, stats, tables
from edgefair.core.tables import CountsTable
from edgefair.errors import InputError
from edgefair.verification.gate import gate
from edgefair.verification.policy import Check, CheckKind, Policy

UNKNOWN = 2
ALPHA = 0.05

# ----------------------------------------------------------------------------- helpers


def names(n_groups):
    return [f"g{i:02d}" for i in range(n_groups)]


def table_from_rows(g, y, ref, cand, n_groups=None):
    """A paired table counted with np.add.at (independent of tables.from_arrays); labels may be 2."""
    g, y, ref, cand = (np.asarray(a, np.int64) for a in (g, y, ref, cand))
    n_groups = int(g.max()) + 1 if n_groups is None else n_groups
    counts = np.zeros((n_groups, 3, 2, 2), np.int64)
    np.add.at(counts, (g, y, ref, cand), 1)
    groups = tuple((k,) for k in names(n_groups))
    return CountsTable(("g",), groups, counts, np.zeros((n_groups, 3, 2, 1), np.int64), paired=True)


def oracle_masks(metric, model, y, ref, cand):
    """(numerator rows, denominator rows or None) of ``metric``, straight from the definitions."""
    d = ref if model == "reference" else cand
    lab = y != UNKNOWN
    every = np.ones(len(y), bool)
    table = {
        "count": (every, None),
        "selection_rate": (d == 1, every),
        "true_positive_rate": ((y == 1) & (d == 1), y == 1),
        "false_positive_rate": ((y == 0) & (d == 1), y == 0),
        "true_negative_rate": ((y == 0) & (d == 0), y == 0),
        "false_negative_rate": ((y == 1) & (d == 0), y == 1),
        "accuracy": (lab & (d == y), lab),
        "positive_predictive_value": ((y == 1) & (d == 1), lab & (d == 1)),
        "flip_rate": (ref != cand, every),
        # reference right and candidate wrong, over labelled rows (and the reverse)
        "negative_flip_rate": (lab & (ref == y) & (cand != y), lab),
        "positive_flip_rate": (lab & (ref != y) & (cand == y), lab),
    }
    return table[metric]


def oracle_parts(metric, model, g, y, ref, cand, n_groups):
    num_rows, den_rows = oracle_masks(metric, model, y, ref, cand)
    num = np.bincount(g[num_rows], minlength=n_groups)
    den = np.ones(n_groups, np.int64) if den_rows is None else np.bincount(g[den_rows], minlength=n_groups)
    return num, den


def oracle_value(metric, model, g, y, ref, cand, n_groups):
    if metric == "count":
        return np.bincount(g, minlength=n_groups).astype(float)
    # per group, as a plain mean over rows; 0.0 for an empty denominator (fairlearn's convention)
    out = []
    num_rows, den_rows = oracle_masks(metric, model, y, ref, cand)
    for k in range(n_groups):
        sel = (g == k) & den_rows
        out.append(float(np.mean(num_rows[sel])) if sel.any() else 0.0)
    return np.array(out)


def random_rows(rng, n=3000, n_groups=5, p_unknown=0.25):
    g = rng.integers(0, n_groups, n)
    y = rng.binomial(1, 0.4, n)
    y[rng.random(n) < p_unknown] = UNKNOWN
    ref = np.where(y == 1, rng.binomial(1, 0.7, n), rng.binomial(1, 0.2, n))
    cand = ref.copy()
    flip = rng.random(n) < 0.15
    cand[flip] = 1 - cand[flip]
    return g, y, ref, cand


def by_group(result, kind, metric=None):
    return {r.group: r for r in result.results if r.check.kind is kind and (metric is None or r.check.metric == metric)}


def wilson(x, n, level):
    return proportion_confint(x, n, alpha=1 - level, method="wilson")


# ----------------------------------------------------------------- 1, 2: metric cells


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_metric_matches_a_row_level_recomputation(seed):
    rng = np.random.default_rng(seed)
    n_groups = 7
    g, y, ref, cand = random_rows(rng, n_groups=n_groups - 2)
    # group 5: only unlabelled rows (labelled denominators are empty); group 6: labelled rows only
    extra = 40
    g = np.concatenate([g, np.full(extra, 5), np.full(extra, 6)])
    y = np.concatenate([y, np.full(extra, UNKNOWN), rng.integers(0, 2, extra)])
    ref = np.concatenate([ref, rng.integers(0, 2, 2 * extra)])
    cand = np.concatenate([cand, rng.integers(0, 2, 2 * extra)])
    assert (y == UNKNOWN).sum() > 500, "the oracle data must contain unknown-label rows"

    table = table_from_rows(g, y, ref, cand, n_groups)
    missing = set(metrics.METRICS) - {
        "count",
        "selection_rate",
        "true_positive_rate",
        "false_positive_rate",
        "true_negative_rate",
        "false_negative_rate",
        "accuracy",
        "positive_predictive_value",
        "flip_rate",
        "negative_flip_rate",
        "positive_flip_rate",
    }
    assert not missing, f"no row-level oracle for {missing}: add one to this test"
    for name in metrics.METRICS:
        for model in ("reference", "candidate"):
            num, den = metrics.parts(table.counts, name, model)
            want_num, want_den = oracle_parts(name, model, g, y, ref, cand, n_groups)
            assert num.dtype.kind == "i" and den.dtype.kind == "i", (name, model)
            assert num.tolist() == want_num.tolist(), (name, model, "numerator")
            assert den.tolist() == want_den.tolist(), (name, model, "denominator")
            got = metrics.compute(table.counts, name, model)
            want = oracle_value(name, model, g, y, ref, cand, n_groups)
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-12, err_msg=f"{name} ({model})")


def test_labelled_denominators_ignore_unknown_labels_hand_worked():
    # one group, 6 rows; the last three are unlabelled and must not count in label-based rates
    y = np.array([1, 1, 0, 2, 2, 2])
    ref = np.array([1, 1, 0, 1, 0, 1])
    cand = np.array([0, 1, 1, 1, 1, 0])
    t = table_from_rows(np.zeros(6, int), y, ref, cand)
    c = t.counts
    expect = {
        # (metric, model): (numerator, denominator)
        ("accuracy", "reference"): (3, 3),
        ("accuracy", "candidate"): (1, 3),
        ("true_positive_rate", "candidate"): (1, 2),
        ("false_positive_rate", "candidate"): (1, 1),
        ("positive_predictive_value", "reference"): (2, 2),
        ("positive_predictive_value", "candidate"): (1, 2),
        ("selection_rate", "reference"): (4, 6),
        ("negative_flip_rate", "reference"): (2, 3),  # rows 0 (1: 1 -> 0) and 2 (0: 0 -> 1)
        ("positive_flip_rate", "reference"): (0, 3),
        ("flip_rate", "reference"): (4, 6),  # rows 0, 2, 4 and 5 (two unlabelled)
    }
    for (name, model), (num, den) in expect.items():
        got = metrics.parts(c, name, model)
        assert (int(got[0][0]), int(got[1][0])) == (num, den), (name, model)


def test_flip_rates_distinguish_the_label_one_cells():
    """Label-1 rows 1 -> 0 are negative flips, 0 -> 1 positive; label-0 rows the reverse."""
    cases = {
        (1, 1, 0): ("negative_flip_rate",),
        (1, 0, 1): ("positive_flip_rate",),
        (0, 0, 1): ("negative_flip_rate",),
        (0, 1, 0): ("positive_flip_rate",),
        (1, 1, 1): (),
        (0, 0, 0): (),
        (2, 0, 1): (),  # unlabelled: a flip, but neither a negative nor a positive one
    }
    for (label, r, c), hits in cases.items():
        t = table_from_rows([0], [label], [r], [c])
        for name in ("negative_flip_rate", "positive_flip_rate"):
            num = int(metrics.parts(t.counts, name)[0][0])
            assert num == (1 if name in hits else 0), ((label, r, c), name)
        assert int(metrics.parts(t.counts, "flip_rate")[0][0]) == int(r != c), (label, r, c)


def test_from_arrays_counts_match_np_add_at():
    rng = np.random.default_rng(9)
    g, y, ref, cand = random_rows(rng, n=2000, p_unknown=0.0)
    t = tables.from_arrays({"g": [f"g{k:02d}" for k in g]}, ref, cand, y)
    mine = table_from_rows(g, y, ref, cand)
    assert t.paired and t.groups == mine.groups
    assert np.array_equal(t.counts, mine.counts)
    unlabelled = tables.from_arrays({"g": g}, ref, cand, None)
    assert unlabelled.counts[:, :2].sum() == 0 and unlabelled.counts[:, 2].sum() == len(g)
    np.testing.assert_array_equal(metrics.parts(unlabelled.counts, "accuracy")[1], 0)
    np.testing.assert_array_equal(metrics.parts(unlabelled.counts, "negative_flip_rate")[1], 0)


# -------------------------------------------------------------- 3: p-value adjustment

VECTORS = [
    [0.01, 0.04, 0.03, 0.005],  # Holm's running max matters (0.04*1 < 0.03*2); BH differs
    [0.001, 0.002, 0.0021, 0.9, 0.5],
    [0.02, 0.02, 0.02],  # ties
    [0.3, 0.6, 0.2],  # scaled values above 1 get capped
    [0.04],
    [0.012, 0.011, 0.2, 0.013, 0.5, 0.0005, 0.049],
]


@pytest.mark.parametrize("p", VECTORS)
@pytest.mark.parametrize(("ours", "theirs"), [("holm", "holm"), ("bh", "fdr_bh"), ("bonferroni", "bonferroni")])
def test_adjust_matches_statsmodels(p, ours, theirs):
    want = multipletests(p, method=theirs)[1]
    np.testing.assert_allclose(stats.adjust(p, ours), want, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("p", VECTORS)
def test_adjust_none_and_aliases(p):
    np.testing.assert_array_equal(stats.adjust(p, "none"), np.asarray(p, float))
    bh = multipletests(p, method="fdr_bh")[1]
    for alias in ("benjamini-hochberg", "fdr_bh"):
        np.testing.assert_allclose(stats.adjust(p, alias), bh, rtol=1e-12)
    with pytest.raises(InputError):
        stats.adjust(p, "hochberg")


def test_holm_hand_worked_running_maximum():
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04; running max -> 0.06 for 0.04
    holm = stats.adjust(p, "holm")
    np.testing.assert_allclose(holm, [0.03, 0.06, 0.06, 0.02], rtol=1e-12)
    # BH: 0.005*4/1, 0.01*4/2, 0.03*4/3, 0.04*4/4 = 0.02, 0.02, 0.04, 0.04 (running min from the top)
    bh = stats.adjust(p, "bh")
    np.testing.assert_allclose(bh, [0.02, 0.04, 0.04, 0.02], rtol=1e-12)
    assert not np.allclose(holm, bh), "the vector must tell Holm from BH"


# ------------------------------------------------ 4: verdicts use adjusted p-values


def one_flipped_group_table(n_groups=5, n=400, flips=14):
    """Every group has n labelled rows and a reference that is always right; group g00's
    candidate gets ``flips`` of its decisions wrong. Built with tables.from_arrays."""
    rng = np.random.default_rng(4)
    g = np.repeat(np.arange(n_groups), n)
    y = rng.integers(0, 2, n * n_groups)
    ref = y.copy()
    cand = ref.copy()
    cand[:flips] = 1 - cand[:flips]
    x = np.bincount(g[(ref == y) & (cand != y)], minlength=n_groups)
    sizes = np.bincount(g, minlength=n_groups)
    return tables.from_arrays({"g": [f"g{k:02d}" for k in g]}, ref, cand, y), x, sizes


def raw_score_pvalue(x, n, t):
    """One-sided exact binomial test of 'rate > t': P(X >= x) for X ~ Binomial(n, t) (scipy)."""
    return binom.sf(x - 1, n, t)


NFR_CAP = Check(CheckKind.GROUP_MAX, "negative_flip_rate", 0.02)


def test_gate_fails_on_adjusted_not_raw_pvalue():
    table, x, n = one_flipped_group_table()
    raw = np.array([raw_score_pvalue(xi, ni, 0.02) for xi, ni in zip(x, n, strict=True)])
    assert 0.03 < raw[0] < ALPHA, raw  # just under alpha before adjustment ...
    holm = multipletests(raw, method="holm")[1]
    assert holm[0] > ALPHA, holm  # ... and over it after Holm over the 5 groups

    adjusted = gate(table, Policy(checks=(NFR_CAP,), adjustment="holm", bootstrap_replicates=200))
    results = by_group(adjusted, CheckKind.GROUP_MAX)
    assert sorted(results) == names(5) and all(r.gated for r in results.values())
    assert results["g00"].verdict != "fail", "failed on the unadjusted p-value"
    assert results["g00"].verdict == "inconclusive"
    # ... and it is no pass either: its estimate is over the cap, so the other four groups'
    # passes do not make the whole a pass
    assert results["g00"].leans_fail and results["g00"].estimate > 0.02
    assert adjusted.verdict == "inconclusive"
    assert not any(r.leans_fail for name, r in results.items() if name != "g00")
    for k, name in enumerate(names(5)):
        assert results[name].p_fail == pytest.approx(holm[k], rel=1e-9, abs=1e-12), name

    unadjusted = gate(table, Policy(checks=(NFR_CAP,), adjustment="none", bootstrap_replicates=200))
    results = by_group(unadjusted, CheckKind.GROUP_MAX)
    assert results["g00"].verdict == "fail"
    assert results["g00"].p_fail == pytest.approx(raw[0], rel=1e-9)
    assert not unadjusted.passed


# --------------------------------------------------- 5: the simultaneous level


def mixed_size_rows(rng):
    """Groups g00-g02 large; g03 has 12 rows; g04 has 400 rows but only 20 labelled;
    g05 has exactly 30 labelled rows (the boundary) and 10 unlabelled."""
    sizes = {0: 500, 1: 400, 2: 300, 3: 12, 4: 400, 5: 40}
    g = np.concatenate([np.full(s, k) for k, s in sizes.items()])
    n = len(g)
    y = rng.integers(0, 2, n)
    y[(g < 3) & (rng.random(n) < 0.2)] = UNKNOWN
    y[np.flatnonzero(g == 4)[20:]] = UNKNOWN
    y[np.flatnonzero(g == 5)[30:]] = UNKNOWN
    ref = np.where(rng.random(n) < 0.8, np.where(y == UNKNOWN, 1, y), 1 - np.where(y == UNKNOWN, 1, y))
    cand = ref.copy()
    flip = rng.random(n) < 0.05
    cand[flip] = 1 - cand[flip]
    return g, y, ref, cand


LEVEL_CHECKS = (
    Check(CheckKind.GROUP_MAX, "negative_flip_rate", 0.02),
    Check(CheckKind.GROUP_DROP, "accuracy", 0.02),
    Check(CheckKind.DIFFERENCE_INCREASE, "accuracy", 0.02),
    Check(CheckKind.DIFFERENCE_INCREASE, "selection_rate", 0.02),
    Check(CheckKind.OVERALL_DROP, "accuracy", 0.01),
)


@pytest.mark.parametrize("adjustment", ["holm", "bonferroni"])
def test_confidence_is_simultaneous_over_gated_checks_only(adjustment):
    rng = np.random.default_rng(5)
    g, y, ref, cand = mixed_size_rows(rng)
    table = table_from_rows(g, y, ref, cand)
    min_size = 30
    labelled = np.bincount(g[y != UNKNOWN], minlength=6)
    everyone = np.bincount(g, minlength=6)
    gated_labelled = int((labelled >= min_size).sum())
    assert gated_labelled == 4 and labelled[5] == min_size  # g00-g02 and the boundary group g05
    m_checks = (
        gated_labelled  # group_max negative_flip_rate: one test per gated group
        + gated_labelled  # group_drop accuracy
        + int(gated_labelled >= 2)  # difference_increase accuracy: one test per scope
        + int((everyone >= min_size).sum() >= 2)  # difference_increase selection_rate
        + 1  # overall_drop
    )
    all_results = 2 * 6 + 1 + 2 + 1  # counting the ungated groups too would give a different level
    assert m_checks != all_results
    policy = Policy(LEVEL_CHECKS, adjustment=adjustment, min_group_size=min_size, bootstrap_replicates=300)
    result = gate(table, policy)
    level = 1 - ALPHA / m_checks
    assert result.confidence == pytest.approx(level, abs=1e-12)
    assert sum(r.gated for r in result.results) == m_checks

    # group_max intervals are Wilson intervals of the candidate's negative flips at that level
    nfr = by_group(result, CheckKind.GROUP_MAX)
    x = np.bincount(g[(y != UNKNOWN) & (ref == y) & (cand != y)], minlength=6)
    for k, name in enumerate(names(6)):
        r = nfr[name]
        assert r.gated == (labelled[k] >= min_size), name
        if not r.gated:
            assert r.rows == labelled[k] and r.rows_needed == min_size and r.verdict == "inconclusive"
            continue
        assert r.rows == labelled[k]
        low, high = wilson(int(x[k]), int(labelled[k]), level)
        assert r.interval[0] == pytest.approx(low, abs=1e-9), name
        assert r.interval[1] == pytest.approx(high, abs=1e-9), name


# ---------------------------------------- 6: tiny groups are reported, never gated


def tiny_extreme_group_rows(rng, big=300):
    """g00 and g01 large with an identical candidate; g02 is one labelled row the reference
    gets right and the candidate wrong (accuracy 1 -> 0)."""
    g = np.concatenate([np.full(big, 0), np.full(big, 1), [2]])
    y = np.concatenate([rng.integers(0, 2, 2 * big), [1]])
    ref = np.where(rng.random(2 * big + 1) < 0.8, y, 1 - y)
    ref[-1] = 1
    cand = ref.copy()
    cand[-1] = 0
    return g, y, ref, cand


def worst_widening(g, y, ref, cand, groups):
    """max over pairs of groups of |c_i - c_j| - |r_i - r_j| for accuracy, from the rows."""
    acc = {k: (np.mean(ref[g == k] == y[g == k]), np.mean(cand[g == k] == y[g == k])) for k in groups}
    return max(abs(acc[i][1] - acc[j][1]) - abs(acc[i][0] - acc[j][0]) for i in groups for j in groups if i < j)


def test_difference_increase_does_not_gate_a_one_row_group():
    g, y, ref, cand = tiny_extreme_group_rows(np.random.default_rng(6))
    table = table_from_rows(g, y, ref, cand)
    check = Check(CheckKind.DIFFERENCE_INCREASE, "accuracy", 0.02)
    result = gate(table, Policy((check,), min_group_size=30, bootstrap_replicates=300))
    gated = [r for r in result.results if r.gated]
    assert len(gated) == 1 and gated[0].group is None
    assert gated[0].verdict != "fail"
    assert gated[0].estimate == worst_widening(g, y, ref, cand, [0, 1]) == 0.0  # g00 vs g01 only
    assert gated[0].verdict == "pass"  # the two large groups have an identical candidate
    tiny = [r for r in result.results if not r.gated]
    assert [r.group for r in tiny] == ["g02"]
    assert tiny[0].verdict == "inconclusive" and tiny[0].rows == 1 and tiny[0].rows_needed == 30
    assert math.isnan(tiny[0].interval[0]) and math.isnan(tiny[0].interval[1])
    assert result.verdict != "fail"

    # gating the one-row group would put its widening (far over the tolerance) into the check
    with_tiny = worst_widening(g, y, ref, cand, [0, 1, 2])
    assert with_tiny > 0.5
    loose = gate(table, Policy((check,), min_group_size=1, bootstrap_replicates=300))
    assert [(r.gated, r.verdict != "pass") for r in loose.results] == [(True, True)]
    assert loose.results[0].estimate == pytest.approx(with_tiny, abs=1e-12)


def boundary_rows(rng, small):
    """g00: 300 labelled rows; g01: ``small`` labelled rows plus 25 unlabelled ones."""
    g = np.concatenate([np.full(300, 0), np.full(small + 25, 1)])
    y = rng.integers(0, 2, len(g))
    y[300 + small :] = UNKNOWN
    ref = np.where(rng.random(len(g)) < 0.8, np.where(y == UNKNOWN, 0, y), 1 - np.where(y == UNKNOWN, 0, y))
    return g, y, ref, ref.copy()


@pytest.mark.parametrize(("small", "gated"), [(30, True), (29, False)])
def test_min_group_size_boundary_is_inclusive(small, gated):
    g, y, ref, cand = boundary_rows(np.random.default_rng(7), small)
    table = table_from_rows(g, y, ref, cand)
    checks = (
        Check(CheckKind.GROUP_DROP, "accuracy", 0.02),
        Check(CheckKind.GROUP_MAX, "negative_flip_rate", 0.02),
        Check(CheckKind.DIFFERENCE_INCREASE, "accuracy", 0.02),
    )
    result = gate(table, Policy(checks, min_group_size=30, bootstrap_replicates=300))
    for kind in (CheckKind.GROUP_DROP, CheckKind.GROUP_MAX):
        r = by_group(result, kind)["g01"]
        assert r.gated is gated, (kind, small)
        assert r.rows == small  # the labelled denominator, not the 25 unlabelled rows on top
    diff = [r for r in result.results if r.check.kind is CheckKind.DIFFERENCE_INCREASE]
    if gated:
        assert [(r.group, r.gated) for r in diff] == [(None, True)]
    else:
        assert [(r.group, r.gated, r.rows_needed) for r in diff] == [("g01", False, 30)]


# ---------------------------------------------------- 7: the gate is two-sided


TWO_SIDED_CHECKS = (
    Check(CheckKind.DIFFERENCE_INCREASE, "accuracy", 0.02),
    Check(CheckKind.DIFFERENCE_INCREASE, "true_positive_rate", 0.02),
    Check(CheckKind.DIFFERENCE_INCREASE, "selection_rate", 0.02),
    Check(CheckKind.GROUP_MAX, "negative_flip_rate", 0.02),
    Check(CheckKind.GROUP_DROP, "accuracy", 0.02),
    Check(CheckKind.OVERALL_DROP, "accuracy", 0.02),
)


def decent_rows(rng, n_groups=3, per_group=2000):
    g = np.repeat(np.arange(n_groups), per_group)
    n = len(g)
    y = rng.binomial(1, 0.3 + 0.1 * g)
    ref = np.where(rng.random(n) < 0.82, y, 1 - y)
    return g, y, ref


def test_identical_candidate_passes_every_check():
    g, y, ref = decent_rows(np.random.default_rng(8))
    result = gate(table_from_rows(g, y, ref, ref.copy()), Policy(TWO_SIDED_CHECKS, bootstrap_replicates=1000))
    assert len(result.results) == 3 + 3 + 3 + 1
    for r in result.results:
        assert r.gated and r.verdict == "pass", (r.check.name, r.scope, r.group, r.verdict, r.p_pass)
    assert result.passed and result.counts()["pass"] == len(result.results)


def test_candidate_flipping_thirty_percent_of_one_group_fails():
    rng = np.random.default_rng(10)
    g, y, ref = decent_rows(rng)
    cand = ref.copy()
    correct = np.flatnonzero((g == 1) & (ref == y))
    hit = rng.choice(correct, size=int(0.3 * len(correct)), replace=False)
    cand[hit] = 1 - cand[hit]
    result = gate(table_from_rows(g, y, ref, cand), Policy(TWO_SIDED_CHECKS, bootstrap_replicates=1000))
    assert by_group(result, CheckKind.GROUP_MAX)["g01"].verdict == "fail"
    assert by_group(result, CheckKind.GROUP_DROP)["g01"].verdict == "fail"
    for kind in (CheckKind.GROUP_MAX, CheckKind.GROUP_DROP):
        for name in ("g00", "g02"):
            assert by_group(result, kind)[name].verdict == "pass", (kind, name)
    assert not result.passed and result.verdict == "fail"


def test_only_tiny_groups():
    rng = np.random.default_rng(12)
    g = np.repeat(np.arange(3), 8)
    y = rng.integers(0, 2, len(g))
    ref = rng.integers(0, 2, len(g))
    table = table_from_rows(g, y, ref, ref.copy())
    group_checks = TWO_SIDED_CHECKS[:5]  # overall_drop has no min_group_size, so leave it out
    strict = gate(table, Policy(group_checks, inconclusive_fails=True, bootstrap_replicates=200))
    assert all(not r.gated and r.verdict == "inconclusive" for r in strict.results)
    assert strict.verdict == "fail" and not strict.passed
    lenient = gate(table, Policy(group_checks, inconclusive_fails=False, bootstrap_replicates=200))
    assert not any(r.verdict == "pass" for r in lenient.results), "no single check can claim a pass"
    assert lenient.verdict == "inconclusive", "inconclusive_fails=False: no evidence is neither a fail ..."
    assert not lenient.passed, "... nor a pass"


# ------------------------------------------------------------------ 8: rows_needed


def test_rows_needed_of_a_score_test_check_hand_computed():
    table, x, n = one_flipped_group_table()
    result = gate(table, Policy(checks=(NFR_CAP,), adjustment="holm", bootstrap_replicates=200))
    r = by_group(result, CheckKind.GROUP_MAX)["g00"]
    assert r.verdict == "inconclusive"
    level = 1 - ALPHA / 5
    low, high = wilson(int(x[0]), int(n[0]), level)
    estimate = x[0] / n[0]
    assert r.estimate == pytest.approx(estimate, abs=1e-15)
    want = math.ceil(n[0] * ((high - low) / 2 / abs(estimate - 0.02)) ** 2)
    assert r.rows_needed == want
    assert all(q.rows_needed is None for q in result.results if q.verdict != "inconclusive")


def test_rows_needed_recomputed_from_reported_intervals():
    rng = np.random.default_rng(13)
    g, y, ref, cand = random_rows(rng, n=1500, n_groups=4, p_unknown=0.1)
    cand = ref.copy()
    flip = rng.random(len(g)) < 0.03
    cand[flip] = 1 - cand[flip]
    result = gate(table_from_rows(g, y, ref, cand), Policy(TWO_SIDED_CHECKS, bootstrap_replicates=400))
    unsure = [r for r in result.results if r.gated and r.verdict == "inconclusive"]
    assert len(unsure) >= 3, "the data must give some inconclusive checks"
    for r in unsure:
        half = (r.interval[1] - r.interval[0]) / 2
        want = math.ceil(r.rows * (half / abs(r.estimate - r.check.tolerance)) ** 2)
        assert r.rows_needed == want, (r.check.name, r.group)


# ------------------------------------------------------------ property: consistency


@st.composite
def small_tables(draw):
    n_groups = draw(st.integers(2, 4))
    cells = draw(st.lists(st.integers(0, 9), min_size=12 * n_groups, max_size=12 * n_groups))
    counts = np.array(cells, np.int64).reshape(n_groups, 3, 2, 2)
    groups = tuple((k,) for k in names(n_groups))
    return CountsTable(("g",), groups, counts, np.zeros((n_groups, 3, 2, 1), np.int64), paired=True)


@settings(max_examples=100, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    table=small_tables(),
    adjustment=st.sampled_from(["holm", "bonferroni", "bh", "none"]),
    min_size=st.integers(1, 25),
)
def test_verdicts_are_consistent_with_adjusted_pvalues(table, adjustment, min_size):
    policy = Policy(TWO_SIDED_CHECKS, adjustment=adjustment, min_group_size=min_size, bootstrap_replicates=200)
    result = gate(table, policy)
    alpha = policy.alpha
    n_gated = sum(r.gated for r in result.results)
    if adjustment in ("holm", "bonferroni"):
        assert result.confidence == pytest.approx(1 - alpha / max(1, n_gated), abs=1e-12)
    for r in result.results:
        assert 0.0 <= r.p_fail <= 1.0 and 0.0 <= r.p_pass <= 1.0
        if not r.gated:
            assert r.verdict == "inconclusive" and r.rows_needed == min_size and r.rows < min_size
            continue
        low, high = r.interval
        assert not (math.isnan(low) or math.isnan(high)), r
        assert low <= high
        if r.check.kind is CheckKind.GROUP_MAX:
            assert low - 1e-12 <= r.estimate <= high + 1e-12, r  # a Wilson interval holds its estimate
        fail = r.p_fail < alpha
        assert (r.verdict == "fail") == fail, r
        assert (r.verdict == "pass") == (not fail and r.p_pass < alpha), r
    verdicts = {r.verdict for r in result.results}
    want = "fail" if "fail" in verdicts else "pass" if "pass" in verdicts else "inconclusive"
    assert result.verdict == want, verdicts
    assert result.passed == (want == "pass")


def test_group_max_caps_the_candidate_rate_not_the_reference():
    """For a single-model metric the cap applies to the candidate: a reference selecting 80%
    and a candidate selecting 20% of 1000 rows pass a 0.5 cap on selection_rate."""
    n = 1000
    y = np.zeros(n, int)
    ref = (np.arange(n) < 800).astype(int)
    cand = (np.arange(n) < 200).astype(int)
    table = table_from_rows(np.zeros(n, int), y, ref, cand)
    cap = Check(CheckKind.GROUP_MAX, "selection_rate", 0.5)
    r = gate(table, Policy((cap,), bootstrap_replicates=100)).results[0]
    assert r.estimate == pytest.approx(0.2) and r.verdict == "pass"
    low, high = wilson(200, n, 1 - ALPHA)  # one gated check: the level is 1 - alpha
    assert r.interval == pytest.approx((low, high), abs=1e-9)


@pytest.mark.parametrize("n", [30, 50])
def test_group_max_false_fail_rate_at_the_tolerance_is_at_most_alpha(n):
    """If a group's true negative flip rate equals the tolerance, the gate may fail it with
    probability at most alpha. Exact: P(X >= smallest failing x) under Binomial(n, t)."""
    t = 0.02
    policy = Policy((Check(CheckKind.GROUP_MAX, "negative_flip_rate", t),), adjustment="none", bootstrap_replicates=100)
    y = np.ones(n, int)
    failing = []
    for x in range(n // 4):
        cand = np.ones(n, int)
        cand[:x] = 0
        if gate(table_from_rows(np.zeros(n, int), y, y, cand), policy).results[0].verdict == "fail":
            failing.append(x)
    assert failing, "the gate must fail some count"
    x_min = min(failing)
    assert failing == list(range(x_min, n // 4))
    size = binom.sf(x_min - 1, n, t)
    assert size <= ALPHA, f"n={n}: fails from {x_min} negative flips, a false-fail rate of {size:.3f}"


def test_a_pass_needs_rows():
    """Three rows with no disagreement cannot show that the accuracy drop is within 0.02:
    the exact 95% upper bound on the share of disagreeing rows is 1 - 0.05**(1/3) = 0.63."""
    y, ref = np.array([0, 1, 1]), np.array([0, 1, 0])
    table = table_from_rows(np.zeros(3, int), y, ref, ref.copy())
    result = gate(table, Policy((Check(CheckKind.OVERALL_DROP, "accuracy", 0.02),), bootstrap_replicates=200))
    assert result.results[0].verdict != "pass", result.results[0]
