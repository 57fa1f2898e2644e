"""edgefair's metrics equal fairlearn's MetricFrame (the oracle) to 1e-12."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import sklearn.metrics as skm
from fairlearn import metrics as flm
from hypothesis import given, settings
from hypothesis import strategies as st

import edgefair
from edgefair.core import metrics as m

FAIRLEARN = {
    "count": flm.count,
    "selection_rate": flm.selection_rate,
    "true_positive_rate": flm.true_positive_rate,
    "false_positive_rate": flm.false_positive_rate,
    "true_negative_rate": flm.true_negative_rate,
    "false_negative_rate": flm.false_negative_rate,
    "accuracy": skm.accuracy_score,
    "positive_predictive_value": lambda y, p: skm.precision_score(y, p, zero_division=0),
}


def close(a: float, b: float) -> bool:
    return (np.isnan(a) and np.isnan(b)) or abs(a - b) <= 1e-12


def assert_equal_to_fairlearn(y_true, y_pred, sensitive) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        oracle = flm.MetricFrame(metrics=FAIRLEARN, y_true=y_true, y_pred=y_pred, sensitive_features=sensitive)
        ours = edgefair.metric_frame(y_true, y_pred, sensitive_features=sensitive)
        for metric in FAIRLEARN:
            assert close(ours.overall[metric], float(oracle.overall[metric])), metric
            for key, row in oracle.by_group.iterrows():
                k = tuple(str(v) for v in key) if isinstance(key, tuple) else str(key)
                assert close(ours.by_group[k][metric], float(row[metric])), (metric, key)
            for method in ("between_groups", "to_overall"):
                assert close(ours.difference(method)[metric], float(oracle.difference(method=method)[metric])), (
                    metric,
                    method,
                )
                assert close(ours.ratio(method)[metric], float(oracle.ratio(method=method)[metric])), (
                    metric,
                    method,
                )
        for method in ("between_groups", "to_overall"):
            t = ours.table
            sf = sensitive
            assert close(
                m.demographic_parity_difference(t, method),
                flm.demographic_parity_difference(y_true, y_pred, sensitive_features=sf, method=method),
            )
            assert close(
                m.demographic_parity_ratio(t, method),
                flm.demographic_parity_ratio(y_true, y_pred, sensitive_features=sf, method=method),
            )
            for agg in ("worst_case", "mean"):
                assert close(
                    m.equalized_odds_difference(t, method, agg),
                    flm.equalized_odds_difference(y_true, y_pred, sensitive_features=sf, method=method, agg=agg),
                )
                assert close(
                    m.equalized_odds_ratio(t, method, agg),
                    flm.equalized_odds_ratio(y_true, y_pred, sensitive_features=sf, method=method, agg=agg),
                )


def test_adult_simple_model_single_and_intersectional(adult_test):
    c = adult_test.columns
    # a simple, deterministic model: degree or large capital gain predicts >50K
    y_pred = ((c["education_num"] >= 13) | (c["capital_gain"] > 5000)).astype(int)
    y_true = c["income"]
    assert_equal_to_fairlearn(y_true, y_pred, pd.Series(c["race"], name="race"))
    assert_equal_to_fairlearn(y_true, y_pred, pd.DataFrame({"race": c["race"], "sex": c["sex"]}))


def test_random_data_with_tiny_groups():
    rng = np.random.default_rng(7)
    n = 400
    groups = rng.choice(["big", "mid", "tiny1", "tiny2"], size=n, p=[0.7, 0.29, 0.005, 0.005])
    groups[:2] = ["tiny1", "tiny2"]
    y_true = rng.integers(0, 2, n)
    y_pred = rng.integers(0, 2, n)
    # tiny groups with only one label and one decision: empty denominators
    y_true[groups == "tiny1"] = 0
    y_pred[groups == "tiny1"] = 0
    y_true[groups == "tiny2"] = 1
    assert_equal_to_fairlearn(y_true, y_pred, groups)
    ours = edgefair.metric_frame(y_true, y_pred, sensitive_features=groups)
    assert "true_positive_rate" in ours.undefined["tiny1"]
    assert "positive_predictive_value" in ours.undefined["tiny1"]


def test_all_zero_rates_give_nan_ratios_like_fairlearn():
    y_true = np.array([0, 0, 0, 0])
    y_pred = np.array([0, 0, 0, 0])
    assert_equal_to_fairlearn(y_true, y_pred, np.array(["a", "a", "b", "b"]))
    ours = edgefair.metric_frame(y_true, y_pred, sensitive_features=np.array(["a", "a", "b", "b"]))
    assert np.isnan(ours.ratio()["selection_rate"])


@given(st.data())
@settings(max_examples=40, deadline=None)
def test_hypothesis_inputs(data):
    n = data.draw(st.integers(2, 40))  # fairlearn squeezes a 1-row feature to 0-d
    ints = st.lists(st.integers(0, 1), min_size=n, max_size=n)
    y_true = np.array(data.draw(ints))
    y_pred = np.array(data.draw(ints))
    g = np.array(data.draw(st.lists(st.sampled_from(["p", "q", "r"]), min_size=n, max_size=n)))
    assert_equal_to_fairlearn(y_true, y_pred, g)


def test_unknown_metric_is_named():
    with pytest.raises(edgefair.InputError, match="unknown metric 'recal'"):
        edgefair.metric_frame([0, 1], [0, 1], sensitive_features=["a", "b"], metrics=["recal"])
