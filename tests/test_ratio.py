"""The ratio check kind (the four-fifths rule: the candidate's selection-rate ratio between
groups >= 0.8): its estimate equals fairlearn's between-groups ratio (the oracle), verdicts
follow the evidence, and its interval is on the ratio's own scale; the increase kinds mirror
the drop kinds; the policy refuses what cannot be gated, in one line."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from fairlearn.metrics import MetricFrame, selection_rate, true_positive_rate

from edgefair.core import tables
from edgefair.errors import PolicyError
from edgefair.verification import gate as base
from edgefair.verification import gate_kinds
from edgefair.verification.policy import Check, CheckKind, Policy, policy_from_dict

FOUR_FIFTHS = Check(CheckKind.RATIO, "selection_rate", 0.8)


def paired(rates: dict[str, float], n: int, seed: int = 0) -> tuple[tables.CountsTable, dict[str, Any]]:
    """A paired table where group g's candidate selects at rates[g] (the reference at 0.5)."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(list(rates), n)
    cand = np.concatenate([(rng.random(n) < r).astype(int) for r in rates.values()])
    ref = (rng.random(len(groups)) < 0.5).astype(int)
    y = (rng.random(len(groups)) < 0.5).astype(int)
    return tables.from_arrays({"g": groups}, ref, cand, y), {"g": groups, "cand": cand, "ref": ref, "y": y}


def ratio_result(table: tables.CountsTable, check: Check = FOUR_FIFTHS) -> base.CheckResult:
    result = gate_kinds.gate(table, Policy((check,), bootstrap_replicates=1000))
    (only,) = result.results
    return only


@pytest.mark.parametrize(
    ("rates", "verdict"), [({"a": 0.5, "b": 0.48}, "pass"), ({"a": 0.5, "b": 0.3}, "fail"), ({"a": 0.5, "b": 0.4}, "?")]
)
def test_ratio_estimate_is_fairlearns_and_verdicts_follow_evidence(rates: dict[str, float], verdict: str) -> None:
    table, rows = paired(rates, 3000 if verdict != "?" else 200)
    r = ratio_result(table)
    frame = MetricFrame(metrics=selection_rate, y_true=rows["y"], y_pred=rows["cand"], sensitive_features=rows["g"])
    assert r.estimate == pytest.approx(float(frame.ratio(method="between_groups")), abs=1e-12)
    assert r.check == FOUR_FIFTHS and r.check.tolerance == 0.8  # reported on its own scale
    low, high = r.interval
    assert low <= r.estimate <= high and low >= 0.0 and high <= 1.0 + 1e-9
    reference = MetricFrame(metrics=selection_rate, y_true=rows["y"], y_pred=rows["ref"], sensitive_features=rows["g"])
    assert r.reference_value == pytest.approx(float(reference.ratio()), abs=1e-12)
    if verdict == "pass":
        assert r.verdict == "pass" and low > 0.8
    elif verdict == "fail":
        assert r.verdict == "fail" and high < 0.8
    else:
        assert r.verdict == "inconclusive" and low < 0.8 < high


def test_ratio_of_tpr_and_small_groups() -> None:
    table, rows = paired({"a": 0.6, "b": 0.55, "c": 0.58}, 2000, seed=4)
    r = ratio_result(table, Check(CheckKind.RATIO, "true_positive_rate", 0.8))
    frame = MetricFrame(metrics=true_positive_rate, y_true=rows["y"], y_pred=rows["cand"], sensitive_features=rows["g"])
    assert r.estimate == pytest.approx(float(frame.ratio()), abs=1e-12)
    assert r.verdict == "pass"
    small, _ = paired({"a": 0.5, "b": 0.5}, 10)
    results = gate_kinds.gate(small, Policy((FOUR_FIFTHS,))).results
    assert all(not x.gated and x.verdict == "inconclusive" for x in results)  # under min_group_size: not tested


def test_increase_kinds_mirror_drop_kinds() -> None:
    table, _ = paired({"a": 0.5, "b": 0.3}, 500, seed=2)
    pairs = ((CheckKind.GROUP_DROP, CheckKind.GROUP_INCREASE), (CheckKind.OVERALL_DROP, CheckKind.OVERALL_INCREASE))
    for drop, increase in pairs:
        d = gate_kinds.gate(table, Policy((Check(drop, "selection_rate", 0.05),), bootstrap_replicates=500)).results
        i = gate_kinds.gate(table, Policy((Check(increase, "selection_rate", 0.05),), bootstrap_replicates=500)).results
        assert [x.estimate for x in i] == pytest.approx([-x.estimate for x in d], abs=1e-15)
        assert [x.interval for x in i] != [x.interval for x in d]
    ref = table.counts.sum(axis=0)
    overall = gate_kinds.gate(table, Policy((Check(CheckKind.OVERALL_INCREASE, "selection_rate", 0.05),))).results[0]
    cand_rate, ref_rate = ref[:, :, 1].sum() / ref.sum(), ref[:, 1, :].sum() / ref.sum()
    assert overall.estimate == pytest.approx(cand_rate - ref_rate, abs=1e-12)


def test_policy_and_gate_refusals() -> None:
    doc = {"checks": [{"kind": "ratio", "metric": "selection_rate", "tolerance": 0.8}]}
    assert policy_from_dict(doc).checks == (FOUR_FIFTHS,)
    with pytest.raises(PolicyError, match="compares the two models already; use it with kind 'group_max'"):
        policy_from_dict({"checks": [{"kind": "ratio", "metric": "flip_rate", "tolerance": 0.8}]})
    table, _ = paired({"a": 0.5, "b": 0.45}, 100)
    with pytest.raises(PolicyError, match="check kind 'ratio' is gated by verify and compare"):
        base.gate(table, Policy((FOUR_FIFTHS,)))
    # the four original kinds: gate_kinds.gate is gate.gate, result for result
    plain = Policy((Check(CheckKind.GROUP_DROP, "accuracy", 0.05),), bootstrap_replicates=300)
    assert gate_kinds.gate(table, plain) == base.gate(table, plain)
