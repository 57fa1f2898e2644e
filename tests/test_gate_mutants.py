"""verification/gate, piece by piece, against hand-worked tables and independent recomputation:
rates written out from the cells here, bootstrap p-values counted by hand, Holm from
statsmodels, exact binomial tails from scipy, Wilson intervals from statsmodels, percentile
intervals from numpy. Replicates are given by hand (a Scope), so each check kind's evidence
is a known number, not whatever the code under test produced."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

from edgefair.core import stats
from edgefair.core.tables import CountsTable
from edgefair.errors import InputError
from edgefair.verification import gate as G
from edgefair.verification import gate_kinds as GK
from edgefair.verification.policy import Check, CheckKind, Policy

K = CheckKind


def blk(**cells: int) -> np.ndarray:
    """One group's (3, 2, 2) block; cells named yLrRcC (label, reference, candidate)."""
    c = np.zeros((3, 2, 2), np.int64)
    for name, v in cells.items():
        c[int(name[1]), int(name[3]), int(name[5])] = v
    return c


def ptable(blocks: list[np.ndarray], groups: list[tuple[str, ...]], attrs: tuple[str, ...] = ("g",)) -> CountsTable:
    counts = np.array(blocks, np.int64)
    return CountsTable(attrs, tuple(groups), counts, np.zeros((len(groups), 3, 2, 1), np.int64), True)


def tpr(c: np.ndarray, model: str) -> np.ndarray:
    """TPR of (..., 3, 2, 2) counts, from the definition; 0 where there are no label-1 rows."""
    d = c.sum(axis=-1) if model == "reference" else c.sum(axis=-2)
    pos = d[..., 1, :].sum(axis=-1)
    return np.where(pos > 0, d[..., 1, 1] / np.where(pos > 0, pos, 1), 0.0)


def acc(c: np.ndarray, model: str) -> np.ndarray:
    d = c.sum(axis=-1) if model == "reference" else c.sum(axis=-2)
    n = d[..., :2, :].sum(axis=(-1, -2))
    return np.where(n > 0, (d[..., 0, 0] + d[..., 1, 1]) / np.where(n > 0, n, 1), 0.0)


# a: TPR 5/10 -> 5/10; b: 5/10 -> 3/10; c: 4/10 -> 5/10; d: 2 rows (too few)
A = blk(y1r1c1=5, y1r0c0=5)
B = blk(y1r1c1=3, y1r1c0=2, y1r0c0=5)
C = blk(y1r1c1=4, y1r0c1=1, y1r0c0=5)
D = blk(y1r1c1=1, y1r0c1=1)
THREE = ptable([A, B, C, D], [("a",), ("b",), ("c",), ("d",)])
POLICY = Policy((), min_group_size=10, bootstrap_replicates=9)


def replicates(table: CountsTable, r: int = 6, seed: int = 3) -> np.ndarray:
    """Hand-made 'replicates': each group's cells moved around at random, sizes kept."""
    rng = np.random.default_rng(seed)
    out = np.repeat(table.counts[None], r, axis=0).copy()
    for i in range(r):
        for g in range(len(table.groups)):
            flat = out[i, g].reshape(-1)
            n = int(flat.sum())
            flat[:] = rng.multinomial(n, np.full(12, 1 / 12)) if n else 0
    return out


def scope(table: CountsTable = THREE, reps: np.ndarray | None = None) -> G.Scope:
    return G.Scope("g", table, replicates(table) if reps is None else reps)


def test_scopes_lists_each_attribute_then_the_intersection():
    assert G.scopes(("a",), True) == [(("a",), True)]
    assert G.scopes(("a", "b"), False) == [(("a",), True), (("b",), True), (("a", "b"), False)]
    assert G.scopes(("a", "b", "c"), True)[-1] == (("a", "b", "c"), True) and len(G.scopes(("a", "b", "c"), True)) == 4
    assert G.scopes((), True) == []


def test_a_scope_sums_replicates_over_its_marginal():
    t = ptable([A, B, C, D], [("x", "1"), ("x", "2"), ("y", "1"), ("y", "2")], ("s", "t"))
    reps = replicates(t)
    s = G._scope(t, reps, ("t",))
    assert s.name == "t" and s.table.groups == (("1",), ("2",))
    assert s.replicates.dtype == np.int64  # counts, not floats: exact however many rows
    assert np.array_equal(s.replicates[:, 0], reps[:, 0] + reps[:, 2])
    assert np.array_equal(s.replicates[:, 1], reps[:, 1] + reps[:, 3])
    both = G._scope(t, reps, ("s", "t"))
    assert both.name == "s, t" and np.array_equal(both.replicates, reps)
    first = G._scope(t, reps, ("s",))
    assert np.array_equal(first.replicates[:, 1], reps[:, 2] + reps[:, 3])


def test_too_small_results_are_reported_with_their_sign(tmp_path):
    check = Check(K.GROUP_DROP, "true_positive_rate", 0.05)
    r = G._too_small(check, "g", "d", 7, 0.5, 0.3, POLICY)
    assert r.check is check and (r.scope, r.group, r.rows) == ("g", "d", 7)
    assert r.estimate == pytest.approx(0.2)  # a drop: reference minus candidate, as gated groups report it
    assert all(math.isnan(x) for x in r.interval) and (r.reference_value, r.candidate_value) == (0.5, 0.3)
    assert (r.p_fail, r.p_pass, r.verdict, r.gated, r.rows_needed) == (1.0, 1.0, "inconclusive", False, 10)
    assert r.note == "7 rows under the rate's denominator; groups under 10 are reported, not gated"
    assert G._too_small(Check(K.GROUP_MAX, "flip_rate", 0.1), "g", "d", 7, 0.5, 0.3, POLICY).estimate == 0.3
    assert G._too_small(Check(K.OVERALL_DROP, "accuracy", 0.1), "o", "all rows", 7, 0.5, 0.3, POLICY).estimate == (
        pytest.approx(0.2)
    )


@pytest.mark.parametrize("kind", [K.GROUP_DROP, K.GROUP_INCREASE])
def test_small_and_gated_groups_report_the_same_direction(kind):
    """A group too small to gate and a gated one with the same change report the same signed estimate."""
    small = blk(y1r1c1=3, y1r1c0=2, y1r0c0=5)  # TPR 0.5 -> 0.3, 10 rows
    t = ptable([small, small * 3], [("s",), ("big",)])
    found = GK.CHECKS[kind](Check(kind, "true_positive_rate", 0.05), scope(t), Policy((), min_group_size=20))
    by_group = {f.group: f.estimate for f in found}
    assert by_group["s"] == pytest.approx(by_group["big"])
    assert by_group["big"] == pytest.approx(0.2 if kind is K.GROUP_DROP else -0.2)


def test_values_take_the_smaller_denominator():
    t = ptable([blk(y1r1c1=2, y1r1c0=3, y0r0c1=4)], [("a",)])  # PPV: reference 5 decided 1, candidate 6
    v = G._values(Check(K.GROUP_DROP, "positive_predictive_value", 0.1), G.Scope("g", t, t.counts[None]))
    assert v.rows.tolist() == [5] and v.reference.tolist() == [1.0] and v.candidate.tolist() == [2 / 6]
    assert v.names == ["a"]
    swapped = ptable([blk(y1r1c1=2, y1r0c1=3, y0r1c0=4)], [("a",)])  # PPV: reference 6 decided 1, candidate 5
    v = G._values(Check(K.GROUP_DROP, "positive_predictive_value", 0.1), G.Scope("g", swapped, swapped.counts[None]))
    assert v.rows.tolist() == [5] and v.reference.tolist() == [2 / 6] and v.candidate.tolist() == [1.0]
    two = ptable([A], [("x", "y")], ("s", "t"))
    assert G._values(Check(K.GROUP_DROP, "accuracy", 0.1), G.Scope("s, t", two, two.counts[None])).names == ["x, y"]


def test_split_small_at_the_boundary():
    check = Check(K.GROUP_DROP, "true_positive_rate", 0.05)
    s = scope()
    v = G._values(check, s)
    small, gated = G._split_small(check, s, v, Policy((), min_group_size=10))
    assert gated.tolist() == [True, True, True, False] and [r.group for r in small] == ["d"]
    assert small[0].scope == "g" and small[0].check is check
    assert small[0].rows == 2 and small[0].reference_value == 0.5 and small[0].candidate_value == 1.0
    small, gated = G._split_small(check, s, v, Policy((), min_group_size=11))
    assert gated.tolist() == [False] * 4 and len(small) == 4


def test_difference_increase_by_hand():
    check = Check(K.DIFFERENCE_INCREASE, "true_positive_rate", 0.05)
    s = scope()
    found = G.difference_increase(check, s, POLICY)
    assert [type(f).__name__ for f in found] == ["CheckResult", "Evidence"]
    small, e = found
    assert small.group == "d" and small.estimate == 0.5 and not small.gated  # D: 0.5 -> 1.0
    # pairs (a,b): 0.2 - 0; (a,c): 0 - 0.1; (b,c): 0.2 - 0.1: the worst is a vs b
    assert e.estimate == pytest.approx(0.2) and e.group is None and e.scope == "g" and e.check is check
    assert (e.reference_value, e.candidate_value) == (pytest.approx(0.1), pytest.approx(0.2))
    assert e.rows == 10
    assert e.note == "a vs b: difference 0.0000 -> 0.2000; between-groups difference 0.1000 -> 0.2000"
    cr, rr = tpr(s.replicates[:, :3], "candidate"), tpr(s.replicates[:, :3], "reference")
    want = np.max([abs(cr[:, i] - cr[:, j]) - abs(rr[:, i] - rr[:, j]) for i, j in ((0, 1), (0, 2), (1, 2))], axis=0)
    assert e.samples is not None and np.allclose(e.samples, want) and e.samples.shape == (6,)


def test_difference_increase_worst_pair_not_first():
    # a: 0.5 -> 0.5; b: 0.5 -> 0.5; c: 0.4 -> 0.1: worst pairs involve c
    c = blk(y1r1c1=1, y1r1c0=3, y1r0c0=6)
    t = ptable([A, A, c], [("a",), ("b",), ("c",)])
    e = G.difference_increase(Check(K.DIFFERENCE_INCREASE, "true_positive_rate", 0.05), scope(t), POLICY)[0]
    assert e.estimate == pytest.approx(0.3) and e.note.startswith("a vs c: difference 0.1000 -> 0.4000;")
    assert (e.reference_value, e.candidate_value) == (pytest.approx(0.1), pytest.approx(0.4))


def test_difference_increase_needs_two_gated_groups():
    check = Check(K.DIFFERENCE_INCREASE, "true_positive_rate", 0.05)
    t = ptable([A, D], [("a",), ("d",)])
    found = G.difference_increase(check, scope(t), POLICY)
    assert [f.group for f in found] == ["d"] and isinstance(found[0], G.CheckResult)
    (one,) = G.difference_increase(check, scope(ptable([A], [("a",)])), POLICY)  # said, never dropped
    assert isinstance(one, G.CheckResult) and not one.gated and one.verdict == "inconclusive"
    assert one.group is None and "1 group in the data (a)" in one.note and one.rows == 10
    two = G.difference_increase(check, scope(ptable([A, B], [("a",), ("b",)])), POLICY)
    assert len(two) == 1 and isinstance(two[0], G.Evidence)


def _fields(r: G.CheckResult) -> tuple:
    return (r.check, r.scope, r.group, r.rows, r.p_fail, r.p_pass, r.gated, r.verdict, r.rows_needed, r.note)


def test_untested_results_carry_every_field():
    # a group under min_group_size: its estimate signed as a gated one would be, NaN interval
    drop = Check(K.GROUP_DROP, "true_positive_rate", 0.05)
    small = G._too_small(drop, "g", "d", 7, 0.5, 0.3, POLICY)
    note = "7 rows under the rate's denominator; groups under 10 are reported, not gated"
    assert _fields(small) == (drop, "g", "d", 7, 1.0, 1.0, False, "inconclusive", 10, note)
    assert small.estimate == pytest.approx(0.2) and (small.reference_value, small.candidate_value) == (0.5, 0.3)
    assert isinstance(small.interval, tuple) and all(math.isnan(x) for x in small.interval)
    # a between-groups check on one group: no estimate at all, the reason in the note
    check = Check(K.DIFFERENCE_INCREASE, "true_positive_rate", 0.05)
    (one,) = G.difference_increase(check, scope(ptable([A], [("a",)])), POLICY)
    says = "g has 1 group in the data (a): a between-groups check needs two"
    assert _fields(one) == (check, "g", None, 10, 1.0, 1.0, False, "inconclusive", None, says)
    assert all(math.isnan(x) for x in (one.estimate, one.reference_value, one.candidate_value, *one.interval))
    assert isinstance(one.interval, tuple)
    empty = CountsTable(("g",), (), np.zeros((0, 3, 2, 2), np.int64), np.zeros((0, 3, 2, 1), np.int64), True)
    (none,) = G.difference_increase(check, scope(empty), POLICY)
    assert none.note == "g has 0 group in the data: a between-groups check needs two" and none.rows == 0
    # the ratio kind says the same, with its own check
    ratio = Check(K.RATIO, "selection_rate", 0.8)
    (r,) = GK.ratio(ratio, scope(ptable([A], [("a",)])), POLICY)
    assert r.verdict == "inconclusive" and not r.gated and r.check.kind is K.RATIO and "needs two" in r.note
    # and two groups are evidence, not a note
    assert isinstance(GK.ratio(ratio, scope(ptable([A, B], [("a",), ("b",)])), POLICY)[0], G.Evidence)


def test_group_max_counts_the_candidate():
    check = Check(K.GROUP_MAX, "true_positive_rate", 0.4)
    found = G.group_max(check, scope(), POLICY)
    assert [f.group for f in found] == ["d", "a", "b", "c"]
    a, b, c = found[1:]
    assert (b.successes, b.rows, b.estimate, b.reference_value, b.candidate_value) == (3, 10, 0.3, 0.5, 0.3)
    assert (c.successes, c.rows, c.samples) == (5, 10, None) and a.check is check and a.scope == "g"


def test_group_drop_and_increase_by_hand():
    check = Check(K.GROUP_DROP, "true_positive_rate", 0.05)
    s = scope()
    found = G.group_drop(check, s, POLICY)
    assert [f.group for f in found] == ["d", "a", "b", "c"]
    for i, e in enumerate(found[1:]):
        want = tpr(s.replicates[:, i], "reference") - tpr(s.replicates[:, i], "candidate")
        assert np.allclose(e.samples, want) and e.rows == 10 and e.scope == "g"
    assert [e.estimate for e in found[1:]] == pytest.approx([0.0, 0.2, -0.1])
    assert (found[2].reference_value, found[2].candidate_value) == (0.5, 0.3)
    up = GK.group_increase(Check(K.GROUP_INCREASE, "true_positive_rate", 0.05), s, POLICY)
    assert [e.estimate for e in up[1:]] == pytest.approx([0.0, -0.2, 0.1])
    for e, d in zip(up[1:], found[1:], strict=True):
        assert np.allclose(e.samples, -d.samples) and (e.reference_value, e.candidate_value, e.rows) == (
            d.reference_value,
            d.candidate_value,
            d.rows,
        )
    assert up[0].estimate == -found[0].estimate and not up[0].gated


def test_overall_drop_and_increase_by_hand():
    check = Check(K.OVERALL_DROP, "accuracy", 0.05)
    t = ptable([blk(y1r1c1=6, y1r1c0=2, y0r0c0=4), blk(y0r0c1=3, y0r0c0=5)], [("a",), ("b",)])
    s = scope(t)
    (e,) = G.overall_drop(check, s, Policy((), min_group_size=20))
    # reference accuracy 20/20, candidate 15/20
    assert (e.reference_value, e.candidate_value) == (1.0, 0.75) and e.estimate == pytest.approx(0.25)
    assert e.scope == "overall" and e.group is None and e.rows == 20
    total = s.replicates.sum(axis=1)
    assert np.allclose(e.samples, acc(total, "reference") - acc(total, "candidate"))
    (small,) = G.overall_drop(check, s, Policy((), min_group_size=21))
    assert (small.scope, small.group, small.rows, small.gated) == ("overall", "all rows", 20, False)
    assert small.estimate == pytest.approx(0.25)
    (up,) = GK.overall_increase(Check(K.OVERALL_INCREASE, "accuracy", 0.05), s, Policy((), min_group_size=20))
    assert up.estimate == pytest.approx(-0.25) and np.allclose(up.samples, -e.samples)
    unlabelled = ptable([blk(y2r1c1=30), blk(y1r1c1=5)], [("a",), ("b",)])
    (few,) = G.overall_drop(check, scope(unlabelled), Policy((), min_group_size=6))
    assert few.rows == 5 and not few.gated  # the denominator, not all 35 rows


def test_negated_keeps_everything_but_the_sign():
    check = Check(K.GROUP_DROP, "accuracy", 0.1)
    e = G.Evidence(check=check, scope="s", group="g", estimate=0.25, reference_value=0.5, candidate_value=0.25, rows=9)
    with_samples = G.Evidence(
        check=check,
        scope="s",
        group="h",
        estimate=-1.0,
        reference_value=0,
        candidate_value=1,
        rows=3,
        samples=np.array([1.0, -2.0]),
        successes=None,
        note="n",
    )
    r = G._too_small(check, "s", "t", 3, 0.5, 0.25, POLICY)
    out = GK._negated([e, with_samples, r])
    assert out[0].estimate == -0.25 and out[0].samples is None and out[0].rows == 9
    assert out[1].samples.tolist() == [-1.0, 2.0] and out[1].estimate == 1.0 and out[1].note == "n"
    assert isinstance(out[2], G.CheckResult) and out[2].estimate == -r.estimate and out[2].note == r.note


def test_ratio_by_hand_and_restored():
    check = Check(K.RATIO, "true_positive_rate", 0.8)
    s = scope()
    found = GK.ratio(check, s, POLICY)
    small, e = found
    assert small.group == "d" and not small.gated
    # candidate TPR a 0.5, b 0.3, c 0.5: ratio 0.3 / 0.5; reference 0.4 / 0.5
    assert e.estimate == pytest.approx(-0.6) and e.check.tolerance == -0.8 and e.check.metric == check.metric
    assert (e.reference_value, e.candidate_value) == (pytest.approx(0.8), pytest.approx(0.6))
    assert e.rows == 10 and e.group is None
    assert e.note == "b 0.3000 over a 0.5000; reference ratio 0.8000"
    c = tpr(s.replicates[:, :3], "candidate")
    top = c.max(axis=1)
    want = np.where(top > 0, c.min(axis=1) / np.where(top > 0, top, 1), np.nan)
    assert np.allclose(e.samples, -want, equal_nan=True)
    zero = ptable([blk(y1r0c0=10), blk(y1r0c0=10)], [("a",), ("b",)])
    z = GK.ratio(check, scope(zero, np.repeat(zero.counts[None], 3, axis=0)), POLICY)[0]
    assert math.isnan(z.estimate) and np.isnan(z.samples).all()
    assert GK.ratio(check, scope(ptable([A, D], [("a",), ("d",)])), POLICY)[0].group == "d"
    assert len(GK.ratio(check, scope(ptable([A, D], [("a",), ("d",)])), POLICY)) == 1
    policy = Policy((check,), min_group_size=10, bootstrap_replicates=9)
    result = GK.decide(found, policy)
    small_r, gated_r = result.results
    assert gated_r.check is check and gated_r.estimate == pytest.approx(0.6)
    iv = stats.percentile_interval(-e.samples, G.simultaneous_level(policy, 1))  # of the ratio itself
    assert gated_r.interval == (pytest.approx(iv.low), pytest.approx(iv.high)) and iv.low < iv.high
    assert gated_r.interval[0] <= gated_r.interval[1]
    assert small_r.estimate == small_r.candidate_value == 1.0  # a ratio reported as the group's candidate rate
    assert small_r.check is check


def test_pvalues_count_by_hand():
    s = np.array([0.1, 0.2, 0.3, np.nan, 0.4])
    assert G._pvalues(s, 0.2) == (3 / 5, 4 / 5)  # (1 + #<=0.2) / (4 + 1), (1 + #>=0.2) / 5
    assert G._pvalues(s, 0.25) == (3 / 5, 3 / 5)
    assert G._pvalues(s, 1.0) == (1.0, 1 / 5)
    assert G._pvalues(np.array([np.nan]), 0.0) == (1.0, 1.0)
    assert G._pvalues(np.array([]), 0.0) == (1.0, 1.0)


def test_test_of_samples_and_of_counts():
    check = Check(K.GROUP_DROP, "accuracy", 0.1)
    samples = np.linspace(-0.2, 0.4, 101)
    e = G.Evidence(
        check=check, scope="s", group="g", estimate=0.1, reference_value=0, candidate_value=0, rows=5, samples=samples
    )
    (low, high), pf, pp = G._test(e, 0.9)
    assert (low, high) == pytest.approx(tuple(np.quantile(samples, [0.05, 0.95])))
    assert pf == (1 + np.sum(samples <= 0.1)) / 102 and pp == (1 + np.sum(samples >= 0.1)) / 102
    cap = Check(K.GROUP_MAX, "negative_flip_rate", 0.05)
    e = G.Evidence(
        check=cap, scope="s", group="g", estimate=0.1, reference_value=0, candidate_value=0.1, rows=40, successes=4
    )
    (low, high), pf, pp = G._test(e, 0.9)
    assert (low, high) == pytest.approx(proportion_confint(4, 40, alpha=0.1, method="wilson"))
    assert pf == pytest.approx(sps.binom.sf(3, 40, 0.05)) and pp == pytest.approx(sps.binom.cdf(4, 40, 0.05))


def evidence(samples: list[float], tolerance: float = 0.0, note: str = "", group: str = "g") -> G.Evidence:
    return G.Evidence(
        check=Check(K.GROUP_DROP, "accuracy", tolerance),
        scope="s",
        group=group,
        estimate=float(np.mean(samples)),
        reference_value=0.5,
        candidate_value=0.4,
        rows=100,
        samples=np.array(samples, np.float64),
        note=note,
    )


def test_floor_note_when_replicates_not_rows_are_missing():
    policy = Policy((), bootstrap_replicates=19, confidence=0.75)  # alpha 0.25, exact in binary
    e = evidence([1.0] * 19)
    assert G._floor_note(e, (0.05, 1.0), policy, 3) == (
        "the bootstrap cannot decide 3 checks at bootstrap_replicates 19; use >= 12"
    )
    assert G._floor_note(evidence([1.0], note="pre"), (1.0, 0.05), policy, 4).startswith("pre; the bootstrap cannot")
    assert G._floor_note(evidence([1.0], note="pre"), (0.0501, 1.0), policy, 4) == "pre"
    assert G._floor_note(e, (0.05 * (1 + 1e-10), 1.0), policy, 3).startswith("the bootstrap")
    assert G._floor_note(e, (0.05 * (1 + 1e-8), 1.0), policy, 3) == ""
    counted = G.Evidence(
        check=e.check,
        scope="s",
        group="g",
        estimate=0,
        reference_value=0,
        candidate_value=0,
        rows=5,
        successes=1,
        note="k",
    )
    assert G._floor_note(counted, (0.0, 0.0), policy, 3) == "k"
    assert "use >= 67" in G._floor_note(e, (0.05, 1.0), Policy((), bootstrap_replicates=19, confidence=0.97), 2)


def test_simultaneous_level():
    for adjustment in ("holm", "bonferroni"):
        p = Policy((), confidence=0.9, adjustment=adjustment)
        assert G.simultaneous_level(p, 4) == pytest.approx(1 - 0.1 / 4)
        assert G.simultaneous_level(p, 0) == pytest.approx(0.9) and G.simultaneous_level(p, 1) == pytest.approx(0.9)
    for adjustment in ("bh", "none"):
        assert G.simultaneous_level(Policy((), confidence=0.9, adjustment=adjustment), 4) == 0.9


def test_overall_verdict_table():
    assert G.overall_verdict([], False) == "inconclusive"
    assert G.overall_verdict(["pass", "inconclusive"], False) == "pass"
    assert G.overall_verdict(["pass", "inconclusive"], True) == "fail"
    assert G.overall_verdict(["pass", "fail"], False) == "fail"
    assert G.overall_verdict(["inconclusive"], False) == "inconclusive"
    assert G.overall_verdict(["pass", "pass"], True) == "pass"
    assert G.overall_verdict(["fail"], False) == "fail"


def result(estimate: float, interval: tuple[float, float], rows: int, tolerance: float) -> G.CheckResult:
    return G.CheckResult(
        check=Check(K.GROUP_DROP, "accuracy", tolerance),
        scope="s",
        group="g",
        estimate=estimate,
        interval=interval,
        reference_value=0,
        candidate_value=0,
        rows=rows,
        p_fail=1,
        p_pass=1,
    )


def test_rows_needed_by_hand():
    # half-width 0.1, distance 0.05: rows * (0.1/0.05)^2 = 4 * rows
    assert G._rows_needed(result(0.05, (-0.05, 0.15), 100, 0.1)) == 400
    assert G._rows_needed(result(0.375, (0.125, 0.625), 100, 0.25)) == 400  # |estimate - tolerance|
    assert G._rows_needed(result(0.0, (-0.03, 0.03), 100, 0.1)) is None  # already enough: 9 rows
    assert G._rows_needed(result(0.0, (-0.1, 0.1), 100, 0.1)) is None  # exactly as many: not more
    assert G._rows_needed(result(0.0, (-0.1, 0.1), 99, 0.1 - 1e-12)) == 100
    assert G._rows_needed(result(0.1, (0.0, 0.2), 100, 0.1)) is None  # on the tolerance: no rows decide it
    assert G._rows_needed(result(0.0, (0.0, 0.0), 100, 0.1)) is None
    assert G._rows_needed(result(0.0, (math.nan, math.nan), 100, 0.1)) is None
    assert G._rows_needed(result(0.0, (0.1, -0.1), 100, 0.1)) is None
    assert G._rows_needed(result(0.05, (-0.05, 0.15), 7, 0.1)) == 28
    assert G._rows_needed(result(0.05, (-0.0501, 0.15), 7, 0.1)) == math.ceil(7 * (0.10005 / 0.05) ** 2)


def test_decide_adjusts_with_holm_and_reads_both_sides():
    policy = Policy((), confidence=0.9, bootstrap_replicates=19)
    found = [
        evidence([1.0] * 19, group="fails"),  # every sample above tolerance 0: p_fail 1/20
        evidence([-1.0] * 19, group="passes"),  # every sample below: p_pass 1/20
        evidence([-1.0] * 10 + [1.0] * 9, group="unsure"),
        G._too_small(Check(K.GROUP_DROP, "accuracy", 0.0), "s", "tiny", 3, 0.5, 0.5, policy),
    ]
    raw = [G._pvalues(e.samples, 0.0) for e in found[:3]]
    out = G._decide(found, policy)
    assert [r.group for r in out.results] == ["fails", "passes", "unsure", "tiny"]
    holm_fail = multipletests([p[0] for p in raw], method="holm")[1]
    holm_pass = multipletests([p[1] for p in raw], method="holm")[1]
    for r, pf, pp in zip(out.results[:3], holm_fail, holm_pass, strict=True):
        assert (r.p_fail, r.p_pass) == (pytest.approx(pf), pytest.approx(pp))
    # 3 * 1/20 = 0.15 > alpha 0.1 after Holm: nothing decided; the note says replicates are missing
    assert [r.verdict for r in out.results] == ["inconclusive"] * 4 and out.verdict == "inconclusive"
    assert out.confidence == pytest.approx(1 - 0.1 / 3)
    note = out.results[0].note.removeprefix("the bootstrap cannot decide 3 checks at bootstrap_replicates 19; use >= ")
    assert note in ("30", "31")  # 3 / (1 - 0.9): 30, or 31 when 1 - 0.9 rounds below 0.1
    assert out.results[2].note == "" and out.results[3] is found[3]
    lo, hi = np.quantile(found[0].samples, [0.1 / 6, 1 - 0.1 / 6])
    assert out.results[0].interval == (pytest.approx(lo), pytest.approx(hi))
    plain = G._decide(found, Policy((), confidence=0.9, bootstrap_replicates=19, adjustment="none"))
    assert [r.verdict for r in plain.results] == ["fail", "pass", "inconclusive", "inconclusive"]
    assert plain.verdict == "fail" and plain.confidence == 0.9
    assert plain.results[0].rows_needed is None and plain.results[0].note == ""
    assert plain.failures() == [plain.results[0]] and plain.unsettled() == list(plain.results[2:])
    assert plain.counts() == {"checks": 4, "pass": 1, "fail": 1, "inconclusive": 2} and not plain.passed
    strict = G._decide(
        found[1:], Policy((), confidence=0.9, bootstrap_replicates=19, adjustment="none", inconclusive_fails=True)
    )
    assert strict.verdict == "fail"
    ok = G._decide(found[1:2], Policy((), confidence=0.9, bootstrap_replicates=19, adjustment="none"))
    assert ok.verdict == "pass" and ok.passed and ok.results[0].p_pass == 0.05


def test_decide_fail_wins_over_pass_and_inconclusive_gets_rows_needed():
    policy = Policy((), confidence=0.9, bootstrap_replicates=99, adjustment="none")
    # a distribution straddling the tolerance on both sides: p_fail and p_pass both large
    e = evidence(list(np.linspace(-0.1, 0.1, 99)), tolerance=0.05)
    (r,) = G._decide([e], policy).results
    assert r.verdict == "inconclusive" and r.rows_needed is not None and r.rows_needed > r.rows
    half = (r.interval[1] - r.interval[0]) / 2
    assert r.rows_needed == math.ceil(100 * (half / abs(r.estimate - 0.05)) ** 2)
    # both one-sided p-values under alpha cannot happen with samples; with counts, fail is read first
    cap = Check(K.GROUP_MAX, "negative_flip_rate", 0.5)
    counted = G.Evidence(
        check=cap, scope="s", group="g", estimate=0.9, reference_value=0, candidate_value=0.9, rows=100, successes=90
    )
    (r,) = G._decide([counted], policy).results
    assert r.verdict == "fail" and r.p_fail < 0.1 and r.rows_needed is None
    under = dataclasses_replace(counted, successes=10, estimate=0.1)
    (r,) = G._decide([under], policy).results
    assert r.verdict == "pass" and r.p_pass < 0.1


def dataclasses_replace(e: G.Evidence, **changes: object) -> G.Evidence:
    import dataclasses

    return dataclasses.replace(e, **changes)  # type: ignore[arg-type]


def test_check_result_to_dict():
    r = G.CheckResult(
        check=Check(K.GROUP_MAX, "flip_rate", 0.02),
        scope="s",
        group=None,
        estimate=math.nan,
        interval=(math.nan, 0.5),
        reference_value=0.25,
        candidate_value=math.nan,
        rows=3,
        p_fail=0.5,
        p_pass=0.75,
        verdict="pass",
        rows_needed=9,
        note="n",
        gated=True,
    )
    assert r.to_dict() == {
        "check": "flip_rate:group_max",
        "kind": "group_max",
        "metric": "flip_rate",
        "tolerance": 0.02,
        "scope": "s",
        "group": None,
        "estimate": None,
        "interval": [None, 0.5],
        "reference_value": 0.25,
        "candidate_value": None,
        "rows": 3,
        "p_value_fail": 0.5,
        "p_value_pass": 0.75,
        "verdict": "pass",
        "rows_needed": 9,
        "note": "n",
        "gated": True,
    }
    default = G.CheckResult(
        check=Check(K.GROUP_MAX, "flip_rate", 0.02),
        scope="s",
        group="g",
        estimate=0.0,
        interval=(0.0, 1.0),
        reference_value=0,
        candidate_value=0,
        rows=3,
        p_fail=1,
        p_pass=1,
    )
    assert (default.verdict, default.rows_needed, default.note, default.gated) == ("inconclusive", None, "", True)
    assert G._num(np.float32(0.5)) == 0.5 and type(G._num(np.float32(0.5))) is float and G._num(math.nan) is None


def rows_block(n: int, rng: np.random.Generator, flip: float) -> np.ndarray:
    """n labelled rows, reference right 80% of the time, candidate flipping a share ``flip`` of them."""
    y = rng.integers(0, 2, n)
    ref = np.where(rng.random(n) < 0.8, y, 1 - y)
    cand = np.where(rng.random(n) < flip, 1 - ref, ref)
    c = np.zeros((3, 2, 2), np.int64)
    np.add.at(c, (y, ref, cand), 1)
    return c


def test_gate_end_to_end_against_a_recomputed_bootstrap():
    rng = np.random.default_rng(5)
    t = ptable([rows_block(400, rng, 0.0), rows_block(300, rng, 0.0)], [("a", "x"), ("b", "y")], ("s", "t"))
    check = Check(K.OVERALL_DROP, "accuracy", 0.02)
    policy = Policy((check,), bootstrap_replicates=199, seed=11, confidence=0.9)
    out = G.gate(t, policy)
    (r,) = out.results
    assert r.verdict == "pass" and out.verdict == "pass" and r.estimate == 0.0 and r.scope == "overall"
    noisy = ptable([rows_block(400, rng, 0.04), rows_block(300, rng, 0.04)], [("a", "x"), ("b", "y")], ("s", "t"))
    (r,) = G.gate(noisy, policy).results  # the bootstrap is the policy's: its replicates and its seed
    reps = stats.bootstrap_counts(noisy.counts, 199, 11, 0.5).sum(axis=1)
    samples = acc(reps, "reference") - acc(reps, "candidate")
    assert np.ptp(samples) > 0
    assert r.interval == (pytest.approx(np.quantile(samples, 0.05)), pytest.approx(np.quantile(samples, 0.95)))
    assert r.p_pass == pytest.approx((1 + np.sum(samples >= 0.02)) / 200)
    assert r.p_fail == pytest.approx((1 + np.sum(samples <= 0.02)) / 200)
    worse = ptable([rows_block(400, rng, 0.3), rows_block(300, rng, 0.3)], [("a", "x"), ("b", "y")], ("s", "t"))
    assert G.gate(worse, policy).verdict == "fail"


def test_gate_tests_each_attribute_and_the_intersection_if_asked():
    rng = np.random.default_rng(2)
    groups = [("a", "x"), ("a", "y"), ("b", "x"), ("b", "y")]
    t = ptable([rows_block(100, rng, 0.0) for _ in groups], groups, ("s", "t"))
    check = Check(K.GROUP_DROP, "accuracy", 0.5)
    plain = G.gate(t, Policy((check,), bootstrap_replicates=49))
    assert [(r.scope, r.group) for r in plain.results] == [("s", "a"), ("s", "b"), ("t", "x"), ("t", "y")]
    assert all(r.rows == 200 for r in plain.results)
    both = G.gate(t, Policy((check,), bootstrap_replicates=49, gate_intersections=True))
    assert [r.scope for r in both.results][-4:] == ["s, t"] * 4 and [r.group for r in both.results][-1] == "b, y"
    assert both.confidence == pytest.approx(1 - 0.05 / 8)
    overall = GK.gate(t, Policy((Check(K.OVERALL_INCREASE, "accuracy", 0.5),), bootstrap_replicates=49))
    assert [r.scope for r in overall.results] == ["overall"]
    unpaired = CountsTable(t.attributes, t.groups, t.counts, t.score_hist, False)
    with pytest.raises(InputError) as info:
        G.gate(unpaired, Policy((check,)))
    assert str(info.value) == "gating needs a paired table (reference and candidate decisions)"


def test_every_kind_has_its_function():
    base = {K.DIFFERENCE_INCREASE, K.GROUP_MAX, K.GROUP_DROP, K.OVERALL_DROP}
    assert set(G.CHECKS) == base and set(GK.CHECKS) == set(CheckKind)
    assert G.CHECKS[K.GROUP_MAX] is G.group_max and GK.CHECKS[K.RATIO] is GK.ratio
    assert G.CHECKS[K.DIFFERENCE_INCREASE] is G.difference_increase and G.CHECKS[K.GROUP_DROP] is G.group_drop
    assert G.CHECKS[K.OVERALL_DROP] is G.overall_drop and GK.CHECKS[K.GROUP_INCREASE] is GK.group_increase
    assert GK.CHECKS[K.OVERALL_INCREASE] is GK.overall_increase
    assert GK.OVERALL_KINDS == (K.OVERALL_DROP, K.OVERALL_INCREASE) and G.DISCORDANCE_PRIOR == 0.5


def test_difference_increase_when_every_pair_narrows():
    # a: 0.5 -> 0.5; b: 0.3 -> 0.4: the gap narrows from 0.2 to 0.1; no pair of a group with itself counts
    b = blk(y1r1c1=3, y1r0c1=1, y1r0c0=6)
    t = ptable([A, b], [("a",), ("b",)])
    (e,) = G.difference_increase(Check(K.DIFFERENCE_INCREASE, "true_positive_rate", 0.05), scope(t), POLICY)
    assert e.estimate == pytest.approx(-0.1) and e.note.startswith("a vs b: difference 0.2000 -> 0.1000;")
    s = scope(t)
    (e,) = G.difference_increase(Check(K.DIFFERENCE_INCREASE, "true_positive_rate", 0.05), s, POLICY)
    cr, rr = tpr(s.replicates, "candidate"), tpr(s.replicates, "reference")
    assert np.allclose(e.samples, abs(cr[:, 0] - cr[:, 1]) - abs(rr[:, 0] - rr[:, 1]))


def test_overall_drop_rows_are_the_smaller_denominator():
    # PPV: the reference decides 1 on 30 labelled rows, the candidate on 5
    t = ptable([blk(y1r1c1=5, y1r1c0=25, y0r0c0=10)], [("a",)])
    check = Check(K.OVERALL_DROP, "positive_predictive_value", 0.05)
    (small,) = G.overall_drop(check, scope(t), Policy((), min_group_size=6))
    assert (small.rows, small.gated) == (5, False)
    (gated,) = G.overall_drop(check, scope(t), Policy((), min_group_size=5))
    assert isinstance(gated, G.Evidence) and gated.rows == 40  # gated: all rows, as overall checks report


def test_pvalues_of_one_sample():
    assert G._pvalues(np.array([0.5]), 0.0) == (0.5, 1.0)
    assert G._pvalues(np.array([-0.5, np.nan]), 0.0) == (1.0, 0.5)


def test_floor_note_exactly_at_the_allowance():
    policy = Policy((), bootstrap_replicates=19, confidence=0.75)
    floor = 1.0 / 20
    e = evidence([1.0] * 19)
    assert G._floor_note(e, (floor * (1 + 1e-9), 1.0), policy, 3).startswith("the bootstrap cannot decide")


def test_a_p_value_equal_to_alpha_decides_nothing():
    policy = Policy((), confidence=0.75, bootstrap_replicates=19, adjustment="none")  # alpha 0.25 exactly
    at_fail = evidence([-1.0] * 4 + [1.0] * 15)  # p_fail = (1 + 4) / 20 = 0.25
    at_pass = evidence([1.0] * 4 + [-1.0] * 15)  # p_pass = (1 + 4) / 20 = 0.25
    out = G._decide([at_fail, at_pass], policy)
    assert [(r.p_fail, r.p_pass) for r in out.results] == [(0.25, 0.8), (0.8, 0.25)]
    assert [r.verdict for r in out.results] == ["inconclusive", "inconclusive"]
    assert [(r.reference_value, r.candidate_value, r.rows) for r in out.results] == [(0.5, 0.4, 100)] * 2


def test_a_decided_result_keeps_its_evidence_note():
    policy = Policy((), confidence=0.75, bootstrap_replicates=19, adjustment="none")
    (r,) = G._decide([evidence([-1.0] * 19, note="a vs b: difference 0.1 -> 0.2")], policy).results
    assert r.verdict == "pass" and r.note == "a vs b: difference 0.1 -> 0.2"


def test_gate_kinds_gate_runs_every_kind_and_delegates_the_original_four():
    rng = np.random.default_rng(4)
    groups = [("a", "x"), ("a", "y"), ("b", "x"), ("b", "y")]
    t = ptable([rows_block(120, rng, 0.05) for _ in groups], groups, ("s", "t"))
    base_policy = Policy(
        (Check(K.GROUP_DROP, "accuracy", 0.1), Check(K.OVERALL_DROP, "accuracy", 0.1)), bootstrap_replicates=49, seed=3
    )
    assert GK.gate(t, base_policy) == G.gate(t, base_policy)  # the original kinds: exactly gate.gate
    mixed = Policy(
        (
            Check(K.GROUP_INCREASE, "false_positive_rate", 0.2),
            Check(K.RATIO, "selection_rate", 0.5),
            Check(K.OVERALL_INCREASE, "false_positive_rate", 0.2),
            Check(K.GROUP_DROP, "accuracy", 0.2),
        ),
        bootstrap_replicates=49,
        seed=3,
        gate_intersections=True,
    )
    out = GK.gate(t, mixed)
    kinds = [(r.check.kind, r.scope) for r in out.results]
    assert kinds.count((K.GROUP_INCREASE, "s, t")) == 4 and kinds.count((K.RATIO, "s, t")) == 1
    assert kinds.count((K.OVERALL_INCREASE, "overall")) == 1 and kinds.count((K.RATIO, "s")) == 1
    assert len(out.results) == 2 * 2 + 4 + 3 + 1 + 2 * 2 + 4  # per scope s, t, "s, t"; overall once
    assert out.confidence == pytest.approx(1 - 0.05 / len(out.results))
    # each result recomputed from the same bootstrap
    reps = stats.bootstrap_counts(t.counts, 49, 3, 0.5)
    overall = next(r for r in out.results if r.check.kind is K.OVERALL_INCREASE)
    total = reps.sum(axis=1)

    def fpr(c, model):
        d = c.sum(axis=-1) if model == "reference" else c.sum(axis=-2)
        return d[..., 0, 1] / d[..., 0, :].sum(axis=-1)

    samples = fpr(total, "candidate") - fpr(total, "reference")
    level = 1 - 0.05 / len(out.results)
    assert overall.interval == (
        pytest.approx(np.quantile(samples, (1 - level) / 2)),
        pytest.approx(np.quantile(samples, 1 - (1 - level) / 2)),
    )
    ratio = next(r for r in out.results if r.check.kind is K.RATIO and r.scope == "s")
    assert ratio.check.tolerance == 0.5 and ratio.interval[0] <= ratio.estimate <= ratio.interval[1] + 1e-12
    with pytest.raises(InputError) as info:
        GK.gate(CountsTable(t.attributes, t.groups, t.counts, t.score_hist, False), mixed)
    assert str(info.value) == "gating needs a paired table (reference and candidate decisions)"


def test_restore_ratios_leaves_other_results_alone():
    check = Check(K.GROUP_DROP, "accuracy", 0.1)
    r = result(0.05, (-0.05, 0.15), 100, 0.1)
    out = GK.restore_ratios(G.GateResult((r,), "inconclusive", 0.9), Policy((check,)))
    assert out.results == (r,) and out.verdict == "inconclusive" and out.confidence == 0.9


def test_ratio_note_names_the_lowest_and_highest_groups_wherever_they_are():
    t = ptable([B, C, A, D], [("b",), ("c",), ("a",), ("d",)])  # candidate TPR 0.3, 0.5, 0.5 (and d too small)
    (_, e) = GK.ratio(Check(K.RATIO, "true_positive_rate", 0.8), scope(t), POLICY)
    assert e.note == "b 0.3000 over c 0.5000; reference ratio 0.8000"
    t = ptable([A, B], [("a",), ("b",)])
    (e,) = GK.ratio(Check(K.RATIO, "true_positive_rate", 0.8), scope(t), POLICY)
    assert e.note == "b 0.3000 over a 0.5000; reference ratio 1.0000"
    t = ptable([B, C], [("b",), ("c",)])
    (e,) = GK.ratio(Check(K.RATIO, "true_positive_rate", 0.8), scope(t), POLICY)
    assert e.note.startswith("b 0.3000 over c 0.5000;")


def test_a_restored_ratio_interval_is_the_ratio_s_own_percentiles():
    t = ptable([A * 20, B * 20, C * 20], [("a",), ("b",), ("c",)])  # 200 label-1 rows each: ratios far from 0
    reps = stats.bootstrap_counts(t.counts, 99, 1, 0.5)
    check = Check(K.RATIO, "true_positive_rate", 0.8)
    policy = Policy((check,), min_group_size=10, bootstrap_replicates=99)
    found = GK.ratio(check, G.Scope("g", t, reps), policy)
    (r,) = GK.decide(found, policy).results
    c = tpr(reps, "candidate")
    ratios = c.min(axis=1) / c.max(axis=1)
    tail = (1 - G.simultaneous_level(policy, 1)) / 2
    low, high = np.quantile(ratios, [tail, 1 - tail])
    assert low > 0.3 and r.interval == (pytest.approx(low), pytest.approx(high))
    assert r.estimate == pytest.approx(0.6) and r.check is check
