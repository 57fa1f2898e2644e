"""Policy parsing, pinned message by message: bad input gets ONE line naming the file, the field
or the value, and what was expected. These tests also keep the mutation score of
edgefair/verification/policy.py up, so they compare whole messages, not fragments."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edgefair.errors import PolicyError
from edgefair.verification.policy import (
    DEFAULT_CHECKS,
    DEFAULT_POLICY,
    MAX_MIN_GROUP_SIZE,
    MAX_SEED,
    Check,
    CheckKind,
    Policy,
    load_policy,
    policy_from_dict,
)

KNOWN_KEYS = (
    "confidence, adjustment, min_group_size, inconclusive_fails, gate_intersections, "
    "bootstrap_replicates, seed, sensitive, checks"
)
KINDS = "difference_increase, group_max, group_drop, overall_drop, group_increase, overall_increase, ratio"
RATES = (
    "selection_rate, true_positive_rate, false_positive_rate, true_negative_rate, false_negative_rate, "
    "accuracy, positive_predictive_value, flip_rate, negative_flip_rate, positive_flip_rate, "
    "mean_prediction, mean_error, mean_absolute_error, root_mean_squared_error, mean_absolute_change"
)


def error(fn: Callable[..., Any], *args: Any) -> str:
    """The one-line message of the PolicyError that ``fn(*args)`` raises."""
    with pytest.raises(PolicyError) as info:
        fn(*args)
    message = str(info.value)
    assert "\n" not in message, message
    return message


def check(**entry: Any) -> dict[str, Any]:
    return {"kind": "group_drop", "metric": "accuracy", "tolerance": 0.05, **entry}


def one_check(entry: Any) -> dict[str, Any]:
    return {"checks": [entry]}


# -- defaults and round trip ------------------------------------------------------------


def test_an_empty_document_is_the_default_policy() -> None:
    p = policy_from_dict({})
    assert p == DEFAULT_POLICY
    assert p.checks == DEFAULT_CHECKS
    assert (p.confidence, p.adjustment, p.min_group_size) == (0.95, "holm", 30)
    assert (p.inconclusive_fails, p.gate_intersections) == (False, False)
    assert (p.bootstrap_replicates, p.seed, p.sensitive) == (2000, 0, ())


def test_load_policy_none_is_the_default_policy() -> None:
    assert load_policy(None) is DEFAULT_POLICY


def test_check_to_dict_and_name() -> None:
    c = Check(CheckKind.GROUP_MAX, "negative_flip_rate", 0.03)
    assert c.to_dict() == {"kind": "group_max", "metric": "negative_flip_rate", "tolerance": 0.03}
    assert list(c.to_dict()) == ["kind", "metric", "tolerance"]
    assert c.name == "negative_flip_rate:group_max"


def test_policy_to_dict_is_exact_and_round_trips() -> None:
    p = Policy(
        (Check(CheckKind.OVERALL_DROP, "accuracy", 0.01), Check(CheckKind.GROUP_MAX, "flip_rate", 0.2)),
        confidence=0.9,
        adjustment="bh",
        min_group_size=5,
        inconclusive_fails=True,
        gate_intersections=True,
        bootstrap_replicates=500,
        seed=42,
        sensitive=("race", "sex"),
    )
    doc = p.to_dict()
    assert doc == {
        "checks": [
            {"kind": "overall_drop", "metric": "accuracy", "tolerance": 0.01},
            {"kind": "group_max", "metric": "flip_rate", "tolerance": 0.2},
        ],
        "confidence": 0.9,
        "adjustment": "bh",
        "min_group_size": 5,
        "inconclusive_fails": True,
        "gate_intersections": True,
        "bootstrap_replicates": 500,
        "seed": 42,
        "sensitive": ["race", "sex"],
    }
    assert list(doc) == [
        "checks",
        "confidence",
        "adjustment",
        "min_group_size",
        "inconclusive_fails",
        "gate_intersections",
        "bootstrap_replicates",
        "seed",
        "sensitive",
    ]
    assert type(doc["sensitive"]) is list and type(doc["checks"]) is list
    assert policy_from_dict(doc) == p
    assert policy_from_dict(DEFAULT_POLICY.to_dict()) == DEFAULT_POLICY


def test_every_key_is_read() -> None:
    p = policy_from_dict(
        {
            "confidence": 0.99,
            "adjustment": "none",
            "min_group_size": 7,
            "inconclusive_fails": True,
            "gate_intersections": True,
            "bootstrap_replicates": 300,
            "seed": 3,
            "sensitive": [" race ", "sex"],
            "checks": [check()],
        }
    )
    assert p == Policy(
        (Check(CheckKind.GROUP_DROP, "accuracy", 0.05),),
        confidence=0.99,
        adjustment="none",
        min_group_size=7,
        inconclusive_fails=True,
        gate_intersections=True,
        bootstrap_replicates=300,
        seed=3,
        sensitive=("race", "sex"),
    )
    assert type(p.sensitive) is tuple


@pytest.mark.parametrize("adjustment", ["holm", "bh", "bonferroni", "none"])
def test_every_adjustment_is_accepted(adjustment: str) -> None:
    assert policy_from_dict({"adjustment": adjustment}).adjustment == adjustment


# -- types ------------------------------------------------------------------------------


def test_an_int_is_a_float_for_float_fields() -> None:
    p = policy_from_dict({"checks": [check(tolerance=1)], "confidence": 0.9})
    assert p.checks[0].tolerance == 1.0 and type(p.checks[0].tolerance) is float
    z = policy_from_dict({"checks": [check(tolerance=0)]})
    assert z.checks[0].tolerance == 0.0 and type(z.checks[0].tolerance) is float
    # and the coerced value is what a range check shows
    assert error(policy_from_dict, {"confidence": 1}) == "policy: 'confidence' must be in [0.5, 1), got 1.0"
    assert error(policy_from_dict, {"checks": [check(tolerance=2)]}) == (
        "policy: checks[0]: tolerance must be in [0, 1], got 2.0"
    )


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"confidence": True}, "policy: 'confidence' must be float, got True"),
        ({"confidence": False}, "policy: 'confidence' must be float, got False"),
        ({"confidence": "high"}, "policy: 'confidence' must be float, got 'high'"),
        ({"adjustment": 1}, "policy: 'adjustment' must be str, got 1"),
        ({"min_group_size": True}, "policy: 'min_group_size' must be int, got True"),
        ({"min_group_size": 3.0}, "policy: 'min_group_size' must be int, got 3.0"),
        ({"inconclusive_fails": 1}, "policy: 'inconclusive_fails' must be bool, got 1"),
        ({"gate_intersections": "yes"}, "policy: 'gate_intersections' must be bool, got 'yes'"),
        ({"bootstrap_replicates": False}, "policy: 'bootstrap_replicates' must be int, got False"),
        ({"seed": True}, "policy: 'seed' must be int, got True"),
        ({"seed": "0"}, "policy: 'seed' must be int, got '0'"),
        ({"sensitive": "race"}, "policy: 'sensitive' must be list, got 'race'"),
        ({"checks": {"kind": "x"}}, "policy: 'checks' must be list, got {'kind': 'x'}"),
    ],
)
def test_top_level_types(doc: dict[str, Any], message: str) -> None:
    assert error(policy_from_dict, doc) == message


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (check(kind=1), "policy: checks[0]: 'kind' must be str, got 1"),
        (check(metric=["accuracy"]), "policy: checks[0]: 'metric' must be str, got ['accuracy']"),
        (check(tolerance="0.1"), "policy: checks[0]: 'tolerance' must be float, got '0.1'"),
        (check(tolerance=True), "policy: checks[0]: 'tolerance' must be float, got True"),
    ],
)
def test_check_field_types(entry: dict[str, Any], message: str) -> None:
    assert error(policy_from_dict, one_check(entry)) == message


def test_long_values_are_cut_to_57_characters_and_dots() -> None:
    # repr of a string of n characters is n + 2 long
    at_60 = "a" * 58
    assert len(repr(at_60)) == 60
    assert error(policy_from_dict, {"confidence": at_60}) == f"policy: 'confidence' must be float, got {at_60!r}"
    at_61 = "b" * 59
    assert len(repr(at_61)) == 61
    assert error(policy_from_dict, {"confidence": at_61}) == (
        "policy: 'confidence' must be float, got '" + "b" * 56 + "..."
    )
    long = "c" * 500
    assert error(policy_from_dict, {"seed": long}) == "policy: 'seed' must be int, got '" + "c" * 56 + "..."
    assert error(policy_from_dict, one_check(check(metric=list(range(40))))) == (
        "policy: checks[0]: 'metric' must be str, got " + repr(list(range(40)))[:57] + "..."
    )


# -- top-level keys and ranges ----------------------------------------------------------


def test_unknown_top_level_key() -> None:
    assert error(policy_from_dict, {"confidenc": 0.9}) == (f"policy: unknown key 'confidenc'; known keys: {KNOWN_KEYS}")
    # the first one in sorted order is named
    assert error(policy_from_dict, {"zeta": 1, "alpha": 2, "seed": 1}) == (
        f"policy: unknown key 'alpha'; known keys: {KNOWN_KEYS}"
    )


def test_where_names_the_source() -> None:
    assert error(policy_from_dict, {"seed": -1}, "my.toml").startswith("my.toml: 'seed'")
    assert error(policy_from_dict, {"seed": "x"}, "my.toml") == "my.toml: 'seed' must be int, got 'x'"
    assert error(policy_from_dict, one_check(check(kind="x")), "my.toml").startswith("my.toml: checks[0]: kind")
    assert error(policy_from_dict, {"sensitive": [""]}, "my.toml").startswith("my.toml: sensitive[0]")


@pytest.mark.parametrize("value", [0.5, 0.75, 0.95, 0.999999])
def test_confidence_in_range(value: float) -> None:
    p = policy_from_dict({"confidence": value})
    assert p.confidence == value
    assert p.alpha == pytest.approx(1.0 - value)


@pytest.mark.parametrize(
    ("value", "shown"),
    [(0.4999, "0.4999"), (1.0, "1.0"), (1.5, "1.5"), (0, "0.0"), (math.nan, "nan"), (-math.inf, "-inf")],
)
def test_confidence_out_of_range(value: float, shown: str) -> None:
    assert error(policy_from_dict, {"confidence": value}) == f"policy: 'confidence' must be in [0.5, 1), got {shown}"


def test_adjustment_out_of_range() -> None:
    assert error(policy_from_dict, {"adjustment": "sidak"}) == (
        "policy: 'adjustment' must be one of holm, bh, bonferroni, none, got 'sidak'"
    )
    assert error(policy_from_dict, {"adjustment": "HOLM"}) == (
        "policy: 'adjustment' must be one of holm, bh, bonferroni, none, got 'HOLM'"
    )


@pytest.mark.parametrize("value", [1, 2, 30, MAX_MIN_GROUP_SIZE - 1, MAX_MIN_GROUP_SIZE])
def test_min_group_size_in_range(value: int) -> None:
    assert policy_from_dict({"min_group_size": value}).min_group_size == value


@pytest.mark.parametrize("value", [0, -1, MAX_MIN_GROUP_SIZE + 1, 2**62])
def test_min_group_size_out_of_range(value: int) -> None:
    assert MAX_MIN_GROUP_SIZE == 10**9
    assert error(policy_from_dict, {"min_group_size": value}) == (
        f"policy: 'min_group_size' must be between 1 and 1000000000, got {value}"
    )


@pytest.mark.parametrize("value", [100, 101, 2000, 99_999, 100_000])
def test_bootstrap_replicates_in_range(value: int) -> None:
    assert policy_from_dict({"bootstrap_replicates": value}).bootstrap_replicates == value


@pytest.mark.parametrize("value", [99, 0, -5, 100_001, 10**6])
def test_bootstrap_replicates_out_of_range(value: int) -> None:
    assert error(policy_from_dict, {"bootstrap_replicates": value}) == (
        f"policy: 'bootstrap_replicates' must be between 100 and 100000, got {value}"
    )


@pytest.mark.parametrize("value", [0, 1, 12345, MAX_SEED - 1, MAX_SEED])
def test_seed_in_range(value: int) -> None:
    assert policy_from_dict({"seed": value}).seed == value


@pytest.mark.parametrize("value", [-1, MAX_SEED + 1, 2**63])
def test_seed_out_of_range(value: int) -> None:
    assert MAX_SEED == 4294967295
    assert error(policy_from_dict, {"seed": value}) == (
        f"policy: 'seed' must be an integer between 0 and 4294967295 (2**32 - 1), got {value}"
    )


@pytest.mark.parametrize("value", [True, False])
def test_booleans_are_read(value: bool) -> None:
    p = policy_from_dict({"inconclusive_fails": value, "gate_intersections": not value})
    assert p.inconclusive_fails is value and p.gate_intersections is (not value)


# -- sensitive --------------------------------------------------------------------------


def test_sensitive_names_are_stripped_and_kept_in_order() -> None:
    assert policy_from_dict({"sensitive": ["sex", "  race\t"]}).sensitive == ("sex", "race")
    assert policy_from_dict({"sensitive": []}).sensitive == ()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([1, 2], "policy: sensitive[0] must be a non-empty column name (a string), got 1"),
        (["race", " "], "policy: sensitive[1] must be a non-empty column name (a string), got ' '"),
        (["race", "sex", ""], "policy: sensitive[2] must be a non-empty column name (a string), got ''"),
        (["race", None], "policy: sensitive[1] must be a non-empty column name (a string), got None"),
        (["race", "race"], "policy: sensitive column 'race' is listed twice"),
        (["sex", "race", " race"], "policy: sensitive column 'race' is listed twice"),
        (["a", "b", "c", "b"], "policy: sensitive column 'b' is listed twice"),
    ],
)
def test_sensitive_errors(value: list[Any], message: str) -> None:
    assert error(policy_from_dict, {"sensitive": value}) == message


# -- checks -----------------------------------------------------------------------------


def test_checks_in_order() -> None:
    p = policy_from_dict(
        {
            "checks": [
                {"kind": "difference_increase", "metric": "true_positive_rate", "tolerance": 0.0},
                {"kind": "group_max", "metric": "negative_flip_rate", "tolerance": 1.0},
                {"kind": "overall_drop", "metric": "accuracy", "tolerance": 0.5},
            ]
        }
    )
    assert p.checks == (
        Check(CheckKind.DIFFERENCE_INCREASE, "true_positive_rate", 0.0),
        Check(CheckKind.GROUP_MAX, "negative_flip_rate", 1.0),
        Check(CheckKind.OVERALL_DROP, "accuracy", 0.5),
    )


def test_check_not_a_table() -> None:
    assert error(policy_from_dict, {"checks": ["accuracy"]}) == (
        "policy: checks[0] must be a table with kind, metric and tolerance"
    )
    assert error(policy_from_dict, {"checks": [check(), 3]}) == (
        "policy: checks[1] must be a table with kind, metric and tolerance"
    )


def test_check_unknown_key() -> None:
    assert error(policy_from_dict, one_check(check(extra=1))) == (
        "policy: checks[0]: unknown key 'extra'; expected kind, metric, tolerance"
    )
    assert error(policy_from_dict, one_check(check(zz=1, aa=2))) == (
        "policy: checks[0]: unknown key 'aa'; expected kind, metric, tolerance"
    )
    assert error(policy_from_dict, {"checks": [check(), check(kind="group_max", metric="flip_rate", tol=1)]}) == (
        "policy: checks[1]: unknown key 'tol'; expected kind, metric, tolerance"
    )


@pytest.mark.parametrize("key", ["kind", "metric", "tolerance"])
def test_check_missing_key(key: str) -> None:
    entry = check()
    del entry[key]
    assert error(policy_from_dict, one_check(entry)) == f"policy: checks[0]: missing {key!r}"


def test_check_missing_keys_are_named_in_order() -> None:
    assert error(policy_from_dict, one_check({})) == "policy: checks[0]: missing 'kind'"
    assert error(policy_from_dict, one_check({"tolerance": 0.1})) == "policy: checks[0]: missing 'kind'"
    assert error(policy_from_dict, one_check({"kind": "group_max"})) == "policy: checks[0]: missing 'metric'"


def test_check_bad_kind_and_metric() -> None:
    assert error(policy_from_dict, one_check(check(kind="nope"))) == (
        f"policy: checks[0]: kind 'nope' is not one of {KINDS}"
    )
    assert error(policy_from_dict, one_check(check(metric="count"))) == (
        f"policy: checks[0]: metric 'count' is not one of {RATES}"
    )
    assert error(policy_from_dict, one_check(check(metric="auc"))) == (
        f"policy: checks[0]: metric 'auc' is not one of {RATES}"
    )


@pytest.mark.parametrize("metric", ["flip_rate", "negative_flip_rate", "positive_flip_rate"])
@pytest.mark.parametrize("kind", ["difference_increase", "group_drop", "overall_drop"])
def test_paired_metrics_only_with_group_max(metric: str, kind: str) -> None:
    assert error(policy_from_dict, one_check(check(kind=kind, metric=metric))) == (
        f"policy: checks[0]: {metric!r} compares the two models already; use it with kind 'group_max'"
    )
    ok = policy_from_dict(one_check(check(kind="group_max", metric=metric)))
    assert ok.checks == (Check(CheckKind.GROUP_MAX, metric, 0.05),)


@pytest.mark.parametrize("tolerance", [0.0, 1e-12, 0.5, 1.0, 0, 1])
def test_tolerance_in_range(tolerance: float) -> None:
    assert policy_from_dict(one_check(check(tolerance=tolerance))).checks[0].tolerance == tolerance


@pytest.mark.parametrize(
    ("tolerance", "shown"),
    [(-0.01, "-0.01"), (1.0000001, "1.0000001"), (1.5, "1.5"), (2.0, "2.0"), (math.inf, "inf"), (math.nan, "nan")],
)
def test_tolerance_out_of_range(tolerance: float, shown: str) -> None:
    assert error(policy_from_dict, one_check(check(tolerance=tolerance))) == (
        f"policy: checks[0]: tolerance must be in [0, 1], got {shown}"
    )


def test_empty_checks() -> None:
    assert error(policy_from_dict, {"checks": []}) == "policy: 'checks' is empty; give at least one check"


def test_duplicate_checks() -> None:
    a = check(kind="overall_drop")
    b = check(kind="group_drop")
    assert error(policy_from_dict, {"checks": [b, b]}) == (
        "policy: check 'accuracy:group_drop' is listed twice; give each kind and metric once"
    )
    # the first name that repeats, not the first name
    assert error(policy_from_dict, {"checks": [a, b, check(kind="group_drop", tolerance=0.2)]}) == (
        "policy: check 'accuracy:group_drop' is listed twice; give each kind and metric once"
    )
    # same metric, different kinds, are different checks
    assert len(policy_from_dict({"checks": [a, b]}).checks) == 2


# -- files ------------------------------------------------------------------------------


def test_load_policy_file(tmp_path: Path) -> None:
    pol = tmp_path / "p.toml"
    pol.write_text(
        'seed = 9\nsensitive = ["sex"]\n[[checks]]\nkind = "group_max"\nmetric = "flip_rate"\ntolerance = 1\n'
    )
    p = load_policy(pol)
    assert p == Policy((Check(CheckKind.GROUP_MAX, "flip_rate", 1.0),), seed=9, sensitive=("sex",))
    assert load_policy(str(pol)) == p


def test_bom_is_accepted(tmp_path: Path) -> None:
    pol = tmp_path / "bom.toml"
    pol.write_bytes(b"\xef\xbb\xbfseed = 7\n")
    assert load_policy(pol).seed == 7


def test_missing_file(tmp_path: Path) -> None:
    pol = tmp_path / "nope.toml"
    assert error(load_policy, pol) == f"{pol}: no such policy file"
    assert error(load_policy, str(pol)) == f"{pol}: no such policy file"


def test_folder(tmp_path: Path) -> None:
    assert error(load_policy, tmp_path) == f"{tmp_path}: is a folder, expected a policy TOML file"


def test_bad_utf8(tmp_path: Path) -> None:
    pol = tmp_path / "latin.toml"
    pol.write_bytes(b"seed = 1 # caf\xe9\n")
    assert (
        error(load_policy, pol) == f"{pol}: not UTF-8 text (byte 14: invalid continuation byte); expected a TOML file"
    )


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pol = tmp_path / "p.toml"
    pol.write_text("seed = 1\n")

    def fail(self: Path, *args: Any, **kwargs: Any) -> str:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_text", fail)
    assert error(load_policy, pol) == f"{pol}: cannot read the policy (Permission denied)"

    def fail_without_strerror(self: Path, *args: Any, **kwargs: Any) -> str:
        raise OSError("disk on fire")

    monkeypatch.setattr(Path, "read_text", fail_without_strerror)
    assert error(load_policy, pol) == f"{pol}: cannot read the policy (disk on fire)"


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    pol = tmp_path / "bad.toml"
    pol.write_text("seed = = 1\n")
    message = error(load_policy, pol)
    assert message.startswith(f"{pol}: not valid TOML (") and message.endswith(")")
    assert message == f"{pol}: not valid TOML (Invalid value (at line 1, column 8))"


def test_errors_in_a_file_name_the_file(tmp_path: Path) -> None:
    pol = tmp_path / "p.toml"
    pol.write_text("seed = -1\n")
    assert error(load_policy, pol) == (f"{pol}: 'seed' must be an integer between 0 and 4294967295 (2**32 - 1), got -1")
    pol.write_text("seed = 'x'\n")
    assert error(load_policy, pol) == f"{pol}: 'seed' must be int, got 'x'"
    pol.write_text('[[checks]]\nkind = "group_drop"\nmetric = "flip_rate"\ntolerance = 0.1\n')
    assert error(load_policy, pol) == (
        f"{pol}: checks[0]: 'flip_rate' compares the two models already; use it with kind 'group_max'"
    )


def test_small_estimate_signs_by_kind():
    from edgefair.verification.policy import DROP_KINDS, CheckKind, KindTable, small_estimate

    k = CheckKind
    assert DROP_KINDS == (k.GROUP_DROP, k.OVERALL_DROP, k.GROUP_INCREASE, k.OVERALL_INCREASE)
    assert small_estimate(k.GROUP_MAX, 0.25, 0.75) == 0.75  # a cap: the candidate's rate
    for kind in DROP_KINDS:  # reference minus candidate (the increase kinds negate it afterwards)
        assert small_estimate(kind, 0.75, 0.25) == 0.5
    for kind in (k.DIFFERENCE_INCREASE, k.RATIO):
        assert small_estimate(kind, 0.25, 0.75) == 0.5
    table = KindTable({k.GROUP_MAX: 1})
    assert table[k.GROUP_MAX] == 1
    with pytest.raises(PolicyError) as info:
        table[k.RATIO]
    assert str(info.value) == (
        "check kind 'ratio' is gated by verify and compare (edgefair.verification.gate_kinds), not here"
    )


def test_regression_metrics_take_tolerances_in_label_units():
    from edgefair.verification.policy import policy_from_dict

    for metric in ("mean_prediction", "mean_error", "mean_absolute_error", "root_mean_squared_error"):
        got = policy_from_dict(one_check(check(kind="group_increase", metric=metric, tolerance=2.5))).checks[0]
        assert (got.metric, got.tolerance) == (metric, 2.5)  # over 1: a label's units, not a rate's
    assert policy_from_dict(one_check(check(kind="group_increase", metric="mean_error", tolerance=0.0))).checks
    for bad in (-0.5, math.inf):
        message = error(policy_from_dict, one_check(check(kind="group_increase", metric="mean_error", tolerance=bad)))
        assert message.endswith(f"tolerance of 'mean_error' must be a finite number >= 0, got {bad}"), message
    assert error(policy_from_dict, one_check(check(metric="count", tolerance=1))).endswith(
        "metric 'count' is not one of selection_rate, true_positive_rate, false_positive_rate, true_negative_rate, "
        "false_negative_rate, accuracy, positive_predictive_value, flip_rate, negative_flip_rate, positive_flip_rate, "
        "mean_prediction, mean_error, mean_absolute_error, root_mean_squared_error, mean_absolute_change"
    )
    assert policy_from_dict(one_check(check(kind="group_max", metric="mean_absolute_change", tolerance=3.0))).checks
