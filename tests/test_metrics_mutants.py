"""core/metrics, against a recomputation from the definitions: each metric's numerator and
denominator written out here by hand as sums over the (label, reference, candidate) cells,
fairlearn's aggregation rules worked by hand, and the error messages spelled out."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgefair.core import metrics as M
from edgefair.core.tables import CountsTable
from edgefair.errors import InputError


def oracle(c: np.ndarray, metric: str, model: str) -> tuple[int, int]:
    """Numerator and denominator of one group's (3, 2, 2) block, from the metric's definition.
    Axis 0 is the label (0, 1, unknown); axes 1 and 2 the reference and candidate decisions."""
    d = c.sum(axis=2) if model == "reference" else c.sum(axis=1)  # (label, this model's decision)
    labelled = d[:2]
    if metric == "count":
        return int(c.sum()), 1
    if metric == "selection_rate":
        return int(d[:, 1].sum()), int(d.sum())
    if metric == "true_positive_rate":
        return int(d[1, 1]), int(d[1].sum())
    if metric == "false_positive_rate":
        return int(d[0, 1]), int(d[0].sum())
    if metric == "true_negative_rate":
        return int(d[0, 0]), int(d[0].sum())
    if metric == "false_negative_rate":
        return int(d[1, 0]), int(d[1].sum())
    if metric == "accuracy":
        return int(d[0, 0] + d[1, 1]), int(labelled.sum())
    if metric == "positive_predictive_value":
        return int(d[1, 1]), int(d[0, 1] + d[1, 1])
    if metric == "flip_rate":
        return int(c[:, 0, 1].sum() + c[:, 1, 0].sum()), int(c.sum())
    if metric == "negative_flip_rate":  # right before, wrong after
        return int(c[0, 0, 1] + c[1, 1, 0]), int(c[:2].sum())
    if metric == "positive_flip_rate":  # wrong before, right after
        return int(c[0, 1, 0] + c[1, 0, 1]), int(c[:2].sum())
    raise AssertionError(metric)


NAMES = [
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
]


def test_the_declared_names_and_groups_of_metrics():
    assert list(M.METRICS) == NAMES and [m.name for m in M.DECLARATIONS] == NAMES
    assert tuple(NAMES[:8]) == M.BASE_METRICS
    assert M.PAIRED_METRICS == ("flip_rate", "negative_flip_rate", "positive_flip_rate")
    assert tuple(NAMES[1:8]) == M.RATE_METRICS
    assert [m.is_rate for m in M.DECLARATIONS] == [False] + [True] * 10
    assert [m.paired for m in M.DECLARATIONS] == [False] * 8 + [True] * 3
    assert M.LABELS == (0, 1, 2) and M.LABELLED == (0, 1)
    described = {m.name: m.description for m in M.DECLARATIONS}
    assert described == {
        "count": "rows",
        "selection_rate": "decision 1 over all rows",
        "true_positive_rate": "decision 1 over label-1 rows",
        "false_positive_rate": "decision 1 over label-0 rows",
        "true_negative_rate": "decision 0 over label-0 rows",
        "false_negative_rate": "decision 0 over label-1 rows",
        "accuracy": "decision equals label, over labelled rows",
        "positive_predictive_value": "label 1 over decision-1 labelled rows",
        "flip_rate": "decision changed, over all rows",
        "negative_flip_rate": "reference right, candidate wrong, over labelled rows",
        "positive_flip_rate": "reference wrong, candidate right, over labelled rows",
    }


@pytest.mark.parametrize("metric", NAMES)
@pytest.mark.parametrize("model", ["reference", "candidate"])
def test_parts_denominator_and_value_match_the_definition(metric, model):
    rng = np.random.default_rng(len(metric) * 7 + len(model))
    counts = rng.integers(0, 50, (4, 5, 3, 2, 2)).astype(np.int64)
    counts[0, 0] = 0  # an empty group
    counts[1, 1, 1] = 0  # no label-1 rows
    counts[2, 2, :, :, 1] = 0  # candidate never decides 1
    counts[3, 3, :, 1, :] = 0  # reference never decides 1
    counts[1, 2, :2] = 0  # only unlabelled rows
    num, den = M.parts(counts, metric, model)
    assert num.shape == den.shape == (4, 5) and num.dtype == den.dtype == np.int64
    want = np.array([[oracle(counts[i, j], metric, model) for j in range(5)] for i in range(4)])
    assert np.array_equal(num, want[..., 0]) and np.array_equal(den, want[..., 1])
    value = M.compute(counts, metric, model)
    assert value.dtype == np.float64 and value.shape == (4, 5)
    for i in range(4):
        for j in range(5):
            n, d = want[i, j]
            expected = n / d if d else 0.0
            assert value[i, j] == expected, (i, j)
    denominator = M.denominator(counts, metric, model)
    assert denominator.dtype == np.float64
    rows = counts.sum(axis=(-1, -2, -3))
    assert np.array_equal(denominator, rows if metric == "count" else want[..., 1])


def test_one_group_block_gives_scalars():
    c = np.zeros((3, 2, 2), np.int64)
    c[1, 1, 0] = 3  # label 1, reference 1, candidate 0
    c[0, 0, 0] = 1
    c[2, 1, 1] = 2
    assert M.parts(c, "true_positive_rate") == (3, 3)
    assert M.parts(c, "true_positive_rate", "candidate") == (0, 3)
    assert M.compute(c, "selection_rate").shape == () and M.compute(c, "selection_rate") == 5 / 6
    assert M.compute(c, "negative_flip_rate") == 3 / 4 and M.compute(c, "flip_rate") == 3 / 6
    assert M.compute(c, "count") == 6.0 and M.compute(c, "count").dtype == np.float64
    assert M.parts(c, "count") == (6, 1) and M.denominator(c, "count") == 6.0


def test_mask_spells_out_the_cells():
    tpr = M.METRICS["true_positive_rate"]
    # cell index = label*4 + reference*2 + candidate
    assert np.flatnonzero(M.mask(tpr, tpr.numerator, "reference")).tolist() == [6, 7]
    assert np.flatnonzero(M.mask(tpr, tpr.numerator, "candidate")).tolist() == [5, 7]
    assert np.flatnonzero(M.mask(tpr, tpr.denominator, "reference")).tolist() == [4, 5, 6, 7]
    nfr = M.METRICS["negative_flip_rate"]
    assert np.flatnonzero(M.mask(nfr, nfr.numerator, "candidate")).tolist() == [1, 6]
    assert np.flatnonzero(M.mask(nfr, nfr.numerator, "reference")).tolist() == [1, 6]
    assert M.mask(nfr, nfr.numerator, "reference").dtype == np.int64
    assert np.flatnonzero(M._mask([(2, 1, 1)])).tolist() == [11]
    assert M.ALL == ((0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1))
    assert len(M.EVERY_LABELLED_CELL) == 8 and set(M.EVERY_LABELLED_CELL) == {
        (y, r, c) for y in (0, 1) for r in (0, 1) for c in (0, 1)
    }


def test_unknown_metric_and_model_messages():
    with pytest.raises(InputError) as info:
        M.get("recall")
    assert str(info.value) == "unknown metric 'recall'; known: " + ", ".join(NAMES)
    with pytest.raises(InputError):
        M.check_metric("recall")
    M.check_metric("accuracy")
    assert M.get("accuracy") is M.METRICS["accuracy"]
    for bad in ("Reference", "", "both"):
        with pytest.raises(InputError) as info:
            M.parts(np.zeros((3, 2, 2), np.int64), "accuracy", bad)  # type: ignore[arg-type]
        assert str(info.value) == f"model must be 'reference' or 'candidate', got {bad!r}"
    assert M._model("reference") == "reference" and M._model("candidate") == "candidate"


def table(blocks: list[np.ndarray], groups: list[str]) -> CountsTable:
    counts = np.array(blocks, np.int64)
    return CountsTable(("g",), tuple((g,) for g in groups), counts, np.zeros((len(groups), 3, 2, 2), np.int64))


def block(**cells: int) -> np.ndarray:
    """cells named yLrRcC, e.g. y1r1c0=3."""
    c = np.zeros((3, 2, 2), np.int64)
    for name, v in cells.items():
        c[int(name[1]), int(name[3]), int(name[5])] = v
    return c


def test_by_group_overall_and_undefined_by_hand():
    a = block(y1r1c1=3, y1r0c0=1, y0r0c0=2)  # TPR 3/4, FPR 0/2, sel 3/6
    b = block(y2r1c0=4)  # unlabelled only: TPR, FPR, TNR, FNR, accuracy, PPV undefined
    c = block(y0r1c1=1, y0r0c1=1)  # label 0 only; reference selects 1, candidate 2
    t = table([a, b, c], ["a", "b", "c"])
    got = M.by_group(t, ["selection_rate", "true_positive_rate", "count"])
    assert got == {
        ("a",): {"selection_rate": 0.5, "true_positive_rate": 0.75, "count": 6.0},
        ("b",): {"selection_rate": 1.0, "true_positive_rate": 0.0, "count": 4.0},
        ("c",): {"selection_rate": 0.5, "true_positive_rate": 0.0, "count": 2.0},
    }
    assert M.by_group(t, ["selection_rate"], "candidate")[("c",)] == {"selection_rate": 1.0}
    assert M.by_group(t, ["selection_rate"], "candidate")[("b",)] == {"selection_rate": 0.0}
    assert set(M.by_group(t)[("a",)]) == set(M.BASE_METRICS)
    assert M.overall(t, ["selection_rate", "true_positive_rate", "count"]) == {
        "selection_rate": 8 / 12,
        "true_positive_rate": 0.75,
        "count": 12.0,
    }
    assert M.overall(t, ["selection_rate"], "candidate") == {"selection_rate": 5 / 12}
    assert set(M.overall(t)) == set(M.BASE_METRICS)
    undefined = M.undefined_metrics(t)
    assert undefined == {
        ("b",): [
            "true_positive_rate",
            "false_positive_rate",
            "true_negative_rate",
            "false_negative_rate",
            "accuracy",
            "positive_predictive_value",
        ],
        ("c",): ["true_positive_rate", "false_negative_rate"],
    }
    # the same from the oracle's denominators
    assert undefined == {
        g: [m for m in M.BASE_METRICS if M.METRICS[m].is_rate and oracle(blk, m, "reference")[1] == 0]
        for g, blk in zip(t.groups, t.counts, strict=True)
        if any(M.METRICS[m].is_rate and oracle(blk, m, "reference")[1] == 0 for m in M.BASE_METRICS)
    }
    cand = M.undefined_metrics(t, ["positive_predictive_value", "count"], "candidate")
    want = {
        g
        for g, blk in zip(t.groups, t.counts, strict=True)
        if oracle(blk, "positive_predictive_value", "candidate")[1] == 0
    }
    assert set(cand) == want and all(v == ["positive_predictive_value"] for v in cand.values())
    assert M.undefined_metrics(t, ["count"]) == {}
    assert M.undefined_metrics(t, ["negative_flip_rate"]) == {("b",): ["negative_flip_rate"]}


def test_aggregate_difference_by_hand():
    v = np.array([[0.2, np.nan, 0.5, 0.4], [0.1, 0.1, 0.1, 0.1]])
    whole = np.array([0.3, 0.15])
    assert M.aggregate_difference(v, whole, "between_groups").tolist() == pytest.approx([0.3, 0.0])
    assert M.aggregate_difference(v, whole, "to_overall").tolist() == pytest.approx([0.2, 0.05])
    one = M.aggregate_difference(np.array([0.9, 0.1]), np.array(0.7), "to_overall")
    assert one.shape == () and float(one) == pytest.approx(0.6)
    assert math.isnan(float(M.aggregate_difference(np.array([np.nan, np.nan]), np.array(0.1), "between_groups")))
    with pytest.raises(InputError) as info:
        M.aggregate_difference(v, whole, "largest")  # type: ignore[arg-type]
    assert str(info.value) == "method must be 'between_groups' or 'to_overall', got 'largest'"


def test_aggregate_ratio_by_hand():
    v = np.array([[0.2, np.nan, 0.5, 0.4], [0.3, 0.6, 0.6, 0.6]])
    whole = np.array([0.25, 0.4])
    assert M.aggregate_ratio(v, whole, "between_groups").tolist() == pytest.approx([0.4, 0.5])
    # to overall: each ratio folded into (0, 1]: 0.2/0.25=0.8, 0.5/0.25=2 -> 0.5, 0.4/0.25=1.6 -> 0.625
    assert M.aggregate_ratio(v, whole, "to_overall").tolist() == pytest.approx([0.5, 0.4 / 0.6])
    assert float(M.aggregate_ratio(np.array([0.5, 0.5]), np.array(0.5), "to_overall")) == 1.0
    assert float(M.aggregate_ratio(np.array([0.0, 0.5]), np.array(0.25), "between_groups")) == 0.0
    assert math.isnan(float(M.aggregate_ratio(np.array([0.0, 0.0]), np.array(0.0), "between_groups")))
    with pytest.raises(InputError) as info:
        M.aggregate_ratio(v, whole, "")  # type: ignore[arg-type]
    assert str(info.value) == "method must be 'between_groups' or 'to_overall', got ''"


def two_groups() -> CountsTable:
    # a: TPR 3/4, FPR 1/4, sel 4/8 ; b: TPR 1/4, FPR 2/4 (candidate: TPR 2/4, FPR 0/4)
    a = block(y1r1c1=3, y1r0c0=1, y0r1c1=1, y0r0c0=3)
    b = block(y1r1c1=1, y1r0c1=1, y1r0c0=2, y0r1c0=2, y0r0c0=2)
    return table([a, b], ["a", "b"])


def test_differences_and_ratios_by_hand():
    t = two_groups()
    # reference: sel a 4/8, b 3/8, overall 7/16
    assert M.demographic_parity_difference(t) == pytest.approx(1 / 8)
    assert M.demographic_parity_difference(t, "to_overall") == pytest.approx(1 / 16)
    assert M.demographic_parity_ratio(t) == pytest.approx(3 / 4)
    assert M.demographic_parity_ratio(t, "to_overall") == pytest.approx((3 / 8) / (7 / 16))
    # candidate: sel a 4/8, b 2/8
    assert M.demographic_parity_difference(t, model="candidate") == pytest.approx(2 / 8)
    assert M.demographic_parity_ratio(t, model="candidate") == pytest.approx(1 / 2)
    assert M.difference(t, "true_positive_rate") == pytest.approx(0.5)
    assert M.ratio(t, "true_positive_rate") == pytest.approx(1 / 3)
    assert M.difference(t, "true_positive_rate", "to_overall") == pytest.approx(0.25)
    assert M.ratio(t, "false_positive_rate", "to_overall") == pytest.approx(0.25 / 0.375)
    assert M.difference(t, "true_positive_rate", model="candidate") == pytest.approx(0.25)


def test_equalized_odds_by_hand():
    t = two_groups()
    # reference: TPR diff 0.5, FPR diff 0.25; TPR ratio 1/3, FPR ratio 1/2
    assert M.equalized_odds_difference(t) == pytest.approx(0.5)
    assert M.equalized_odds_difference(t, agg="mean") == pytest.approx(0.375)
    assert M.equalized_odds_ratio(t) == pytest.approx(1 / 3)
    assert M.equalized_odds_ratio(t, agg="mean") == pytest.approx((1 / 3 + 1 / 2) / 2)
    # to overall: TPR overall 4/8 -> gaps 0.25 and 0.25; FPR overall 3/8 -> gaps 0.125, 0.125
    assert M.equalized_odds_difference(t, "to_overall") == pytest.approx(0.25)
    assert M.equalized_odds_ratio(t, "to_overall") == pytest.approx(min(0.25 / 0.5, 0.25 / 0.375))  # TPR b 0.25 / 0.5
    # candidate: TPR a 3/4, b 2/4 -> 0.25; FPR a 1/4, b 0 -> 0.25 ; ratios 2/3 and 0
    assert M.equalized_odds_difference(t, model="candidate") == pytest.approx(0.25)
    assert M.equalized_odds_ratio(t, model="candidate") == 0.0
    for fn in (M.equalized_odds_difference, M.equalized_odds_ratio):
        with pytest.raises(InputError) as info:
            fn(t, agg="median")
        assert str(info.value) == "agg must be 'worst_case' or 'mean', got 'median'"


def test_worst_or_mean_keeps_builtin_nan_order():
    nan = float("nan")
    assert math.isnan(M._worst_or_mean(nan, 0.3, "worst_case", max))
    assert M._worst_or_mean(0.3, nan, "worst_case", max) == 0.3  # max(0.3, nan) is 0.3
    assert M._worst_or_mean(0.3, nan, "mean", max) == 0.3
    assert M._worst_or_mean(0.2, 0.4, "worst_case", min) == 0.2
    assert isinstance(M._worst_or_mean(0.2, 0.4, "mean", min), float)
    assert math.isnan(M._worst_or_mean(nan, nan, "mean", min))


def test_the_model_argument_reaches_every_helper():
    c = block(y1r1c0=3, y0r0c0=2)  # reference decides 1 on 3 label-1 rows; candidate never
    assert M.denominator(c, "positive_predictive_value") == 3.0  # the default model is the reference
    assert M.denominator(c, "positive_predictive_value", "candidate") == 0.0
    t = table([c, block(y1r1c1=2, y0r0c0=1)], ["p", "q"])
    assert M.undefined_metrics(t, ["positive_predictive_value"], "candidate") == {("p",): ["positive_predictive_value"]}
    assert M.undefined_metrics(t, ["positive_predictive_value"]) == {}
    # to overall, candidate: selection a 4/8, b 2/8, overall 6/16 -> gaps 0.125 (reference overall 7/16 gives 0.1875)
    assert M.difference(two_groups(), "selection_rate", "to_overall", "candidate") == pytest.approx(0.125)
    assert M.ratio(two_groups(), "selection_rate", "to_overall", "candidate") == pytest.approx(0.25 / 0.375)


def test_equalized_odds_of_the_candidate_read_both_rates_of_the_candidate():
    # reference: TPR 0.5 and 0.5, FPR 0 and 0.25; candidate: TPR 0.5 and 0.25, FPR 0 and 0.5
    a = block(y1r1c1=4, y1r0c0=4, y0r0c0=8)
    b = block(y1r1c0=2, y1r1c1=2, y1r0c0=4, y0r1c1=2, y0r0c1=2, y0r0c0=4)
    t = table([a, b], ["a", "b"])
    assert M.equalized_odds_difference(t) == pytest.approx(0.25)
    assert M.equalized_odds_difference(t, model="candidate") == pytest.approx(0.5)
    # candidate TPR ratio 0.125 / 0.5, FPR ratio 0.25 / 0.5; reference TPR ratio 1, FPR ratio 1
    a = block(y1r1c1=4, y1r0c0=4, y0r1c1=2, y0r0c0=6)
    b = block(y1r1c0=3, y1r1c1=1, y1r0c0=4, y0r1c1=2, y0r0c1=2, y0r0c0=4)
    t = table([a, b], ["a", "b"])
    assert M.equalized_odds_ratio(t) == pytest.approx(1.0)
    assert M.equalized_odds_ratio(t, model="candidate") == pytest.approx(0.25)


def test_counts_beyond_float_precision_are_summed_exactly():
    c = np.zeros((3, 2, 2), np.int64)
    c[0, 0, 0], c[0, 0, 1], c[0, 1, 0] = 2**53, 1, 1  # a float64 sum would round 2**53 + 1 down twice
    assert M.denominator(c, "count") == float(2**53 + 2)
    assert M.parts(c, "count")[0] == 2**53 + 2


def test_parts_are_int64_whatever_the_integer_type_of_the_counts():
    c = block(y1r1c1=3, y0r0c0=2).astype(np.int32)
    num, den = M.parts(c, "accuracy")
    assert num.dtype == den.dtype == np.int64 and (int(num), int(den)) == (5, 5)
    assert M.parts(c.astype(np.uint16), "selection_rate")[0].dtype == np.int64
    assert M.parts(c.astype(np.uint64), "selection_rate")[0].dtype == np.int64  # uint64 @ int64 is float64 in numpy
    assert M.parts(c.astype(np.float64), "selection_rate")[1].dtype == np.int64


def test_aggregates_do_not_raise_under_a_strict_numpy_error_state():
    """A caller running numpy with every floating-point error raised still gets NaN or 0, as fairlearn."""
    with np.errstate(all="raise"):
        assert math.isnan(float(M.aggregate_ratio(np.array([0.0, 0.0]), np.array(0.0), "between_groups")))
        assert (
            float(M.aggregate_ratio(np.array([0.5, 0.25]), np.array(0.0), "to_overall")) == 0.0
        )  # x / 0 = inf -> 1/inf
        assert math.isnan(float(M.aggregate_ratio(np.array([0.0]), np.array(0.0), "to_overall")))
        assert math.isnan(float(M.aggregate_difference(np.array([np.inf]), np.array(np.inf), "to_overall")))
