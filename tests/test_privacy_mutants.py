"""In-process oracles for edgefair/runtime/privacy.py (mutation testing sees only in-process calls).

Every expected value here is written out by hand or computed independently of the module:
the export document field by field, the discrete Laplace law (variance 2q/(1-q)^2 and
P(0) = (1-q)/(1+q) with q = exp(-epsilon/2)), the noise stream re-drawn from numpy's
generator, the exact one-line messages, and the store's ledger read back with sqlite3.
"""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from edgefair.core.tables import CountsTable
from edgefair.errors import InputError, PrivacyBudgetError
from edgefair.runtime.privacy import (
    ExportSummary,
    check_epsilon,
    discrete_laplace,
    private_export,
    write_private_export,
)
from edgefair.runtime.session import FairSession
from edgefair.runtime.store import load_counters, open_store

FLOOR_MESSAGE = (
    "epsilon (--epsilon) must be a finite number of at least 0.001 (noise scale 2/epsilon at most 2000), got "
)


# -- tables built by hand --------------------------------------------------------------------


def table_of(counts: np.ndarray, hist0: np.ndarray, hist1: np.ndarray | None = None, keys=(("a",),)) -> CountsTable:
    """A table from per-group counts (g, 3, 2, 2) and model-0 / model-1 histograms (g, 3, bins)."""
    counts = np.asarray(counts, np.int64)
    hist0 = np.asarray(hist0, np.int64)
    hist1 = hist0 + 1000 if hist1 is None else np.asarray(hist1, np.int64)  # model 1 never exported
    hist = np.stack([hist0, hist1], axis=2)
    return CountsTable(("g",), tuple(keys), counts, hist, False)


def two_groups() -> CountsTable:
    counts = np.stack([np.arange(5, 17).reshape(3, 2, 2), np.arange(100, 112).reshape(3, 2, 2)])
    hist0 = np.stack([np.array([[10, 11], [0, 12], [3, 40]]), np.array([[11, 11], [11, 11], [1, 2]])])
    hist1 = np.full((2, 3, 2), 50)
    return table_of(counts, hist0, hist1, keys=(("a",), ("b",)))


def noise_oracle(seed: int, epsilon: float, *shapes: tuple[int, ...]) -> list[np.ndarray]:
    """The noise re-drawn independently: two geometric draws per shape, p = 1 - exp(-1/scale)."""
    rng = np.random.default_rng(seed)
    p = -math.expm1(-1.0 / (2.0 / epsilon))
    return [rng.geometric(p, s) - rng.geometric(p, s) for s in shapes]


# -- check_epsilon ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", [1e-3, 1, 2.5, 1e6])
def test_check_epsilon_accepts_the_floor_and_above_as_float(value):
    got = check_epsilon(value)
    assert got == value and type(got) is float


@pytest.mark.parametrize(
    "value, shown",
    [
        (math.nan, "nan"),
        (math.inf, "inf"),
        (-math.inf, "-inf"),
        (0, "0"),
        (0.0, "0.0"),
        (-1.0, "-1.0"),
        (9.99e-4, "0.000999"),
        (1e-4, "0.0001"),
    ],
)
def test_check_epsilon_refuses_non_finite_non_positive_and_below_the_floor(value, shown):
    with pytest.raises(InputError) as exc:
        check_epsilon(value)
    assert str(exc.value) == FLOOR_MESSAGE + shown


@pytest.mark.parametrize("value, shown", [(True, "True"), (False, "False"), ("1", "'1'"), (None, "None")])
def test_check_epsilon_refuses_non_numbers(value, shown):
    with pytest.raises(InputError) as exc:
        check_epsilon(value)
    assert str(exc.value) == f"epsilon must be a number, got {shown}"


# -- discrete_laplace ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "scale, shown", [(0.0, "0.0"), (-1.0, "-1.0"), (math.nan, "nan"), (math.inf, "inf"), (-math.inf, "-inf")]
)
def test_discrete_laplace_refuses_a_bad_scale(scale, shown):
    with pytest.raises(InputError) as exc:
        discrete_laplace(np.random.default_rng(0), scale, (3,))
    assert str(exc.value) == f"noise scale must be a positive, finite number, got {shown}"


@pytest.mark.parametrize("scale, shown", [(2000.5, "2000.5"), (1e6, "1e+06"), (1e300, "1e+300")])
def test_discrete_laplace_refuses_a_scale_over_the_largest(scale, shown):
    with pytest.raises(InputError) as exc:
        discrete_laplace(np.random.default_rng(0), scale, (3,))
    assert str(exc.value) == f"noise scale {shown} is too large to draw (at most 2000)"


def test_discrete_laplace_draws_at_the_largest_scale():
    noise = discrete_laplace(np.random.default_rng(0), 2000.0, (4000,))
    assert noise.dtype == np.int64 and noise.shape == (4000,)
    assert 1500 < noise.std() < 4500  # sqrt(2q)/(1-q) ~ 2828 at q = exp(-1/2000)


def test_discrete_laplace_with_a_tiny_scale_is_exactly_zero():
    """q = exp(-1/scale) underflows to 0: p = 1, P(0) = 1."""
    noise = discrete_laplace(np.random.default_rng(0), 1e-3, (2, 5))
    assert noise.dtype == np.int64 and noise.shape == (2, 5)
    assert np.array_equal(noise, np.zeros((2, 5), np.int64))


@pytest.mark.parametrize("epsilon", [1.0, 0.25])
def test_discrete_laplace_has_the_textbook_law(epsilon):
    scale = 2.0 / epsilon
    q = math.exp(-epsilon / 2)
    n = 200_000
    noise = discrete_laplace(np.random.default_rng(12345), scale, (n,))
    assert noise.dtype == np.int64 and noise.shape == (n,)
    var = 2 * q / (1 - q) ** 2
    assert abs(noise.mean()) < 5 * math.sqrt(var / n)
    assert noise.var() == pytest.approx(var, rel=0.03)
    p0 = (1 - q) / (1 + q)
    assert np.mean(noise == 0) == pytest.approx(p0, abs=5 * math.sqrt(p0 * (1 - p0) / n))
    for k in (1, 2, 3):
        pk = p0 * q**k
        tol = 5 * math.sqrt(pk / n)
        assert np.mean(noise == k) == pytest.approx(pk, abs=tol)
        assert np.mean(noise == -k) == pytest.approx(pk, abs=tol)


def test_discrete_laplace_is_the_difference_of_two_geometric_draws():
    got = discrete_laplace(np.random.default_rng(7), 4.0, (3, 4))
    rng = np.random.default_rng(7)
    p = 1 - math.exp(-0.25)
    want = rng.geometric(p, (3, 4)) - rng.geometric(p, (3, 4))
    assert np.array_equal(got, want)


# -- private_export: the document ------------------------------------------------------------


def test_private_export_without_noise_is_the_exact_document():
    doc = private_export(two_groups(), min_cell=11)
    assert doc == {
        "kind": "edgefair.counters_export",
        "schema_version": 1,
        "attributes": ["g"],
        "bins": 2,
        "privacy": {
            "min_cell": 11,
            "epsilon": None,
            "mechanism": None,
            "scale": None,
            "note": "cells under min_cell (after noise) are null",
        },
        "groups": [
            {
                "key": ["a"],
                "counts": [None] * 6 + [11, 12, 13, 14, 15, 16],
                "score_hist": [None, 11, None, 12, None, 40],
            },
            {"key": ["b"], "counts": list(range(100, 112)), "score_hist": [11, 11, 11, 11, None, None]},
        ],
    }
    assert list(doc) == ["kind", "schema_version", "attributes", "bins", "privacy", "groups"]
    assert json.loads(json.dumps(doc)) == doc


def test_private_export_default_min_cell_is_11():
    assert private_export(two_groups())["privacy"]["min_cell"] == 11
    assert private_export(two_groups())["groups"][0]["counts"][5:7] == [None, 11]


def test_private_export_at_min_cell_is_shown_and_below_is_null():
    counts = np.array([[[[2, 1], [0, 3]], [[2, 2], [2, 2]], [[1, 2], [3, 4]]]])
    doc = private_export(table_of(counts, np.array([[[2, 1], [0, 2], [5, 1]]])), min_cell=2)
    assert doc["groups"][0]["counts"] == [2, None, None, 3, 2, 2, 2, 2, None, 2, 3, 4]
    assert doc["groups"][0]["score_hist"] == [2, None, None, 2, 5, None]


def test_private_export_exports_model_zero_histogram_only():
    counts = np.full((1, 3, 2, 2), 20)
    hist0 = np.array([[[20, 30], [40, 50], [60, 70]]])
    hist1 = np.array([[[1, 2], [3, 4], [5, 6]]])
    doc = private_export(table_of(counts, hist0, hist1), min_cell=2)
    assert doc["groups"][0]["score_hist"] == [20, 30, 40, 50, 60, 70]


def test_private_export_keeps_counts_beyond_float_precision():
    big = 2**53 + 1  # a float64 cannot hold it
    counts = np.full((1, 3, 2, 2), big, np.int64)
    hist0 = np.full((1, 3, 2), big + 2, np.int64)
    doc = private_export(table_of(counts, hist0), min_cell=2)
    assert doc["groups"][0]["counts"] == [big] * 12
    assert doc["groups"][0]["score_hist"] == [big + 2] * 6
    assert all(type(v) is int for v in doc["groups"][0]["counts"] + doc["groups"][0]["score_hist"])
    noisy = private_export(table_of(counts, hist0), min_cell=2, epsilon=1e6, seed=0)  # scale 2e-6: zero noise
    assert noisy["groups"][0]["counts"] == [big] * 12
    assert noisy["groups"][0]["score_hist"] == [big + 2] * 6


def test_private_export_with_noise_labels_the_mechanism():
    doc = private_export(two_groups(), min_cell=0, epsilon=0.5, seed=3)
    assert doc["privacy"] == {
        "min_cell": 0,
        "epsilon": 0.5,
        "mechanism": "discrete Laplace",
        "scale": 4.0,
        "note": "cells under min_cell (after noise) are null",
    }
    assert doc["kind"] == "edgefair.counters_export" and doc["schema_version"] == 1
    assert doc["attributes"] == ["g"] and doc["bins"] == 2
    assert [g["key"] for g in doc["groups"]] == [["a"], ["b"]]
    one = private_export(two_groups(), min_cell=0, epsilon=1, seed=3)["privacy"]
    assert one["epsilon"] == 1.0 and type(one["epsilon"]) is float and one["scale"] == 2.0


@pytest.mark.parametrize("seed", [0, 1, 2024])
@pytest.mark.parametrize("epsilon", [0.5, 2.0])
def test_private_export_adds_the_seeded_noise_then_suppresses(seed, epsilon):
    table = two_groups()
    counts = table.counts.astype(np.int64)
    hist = table.score_hist[:, :, 0, :].astype(np.int64)
    nc, nh = noise_oracle(seed, epsilon, counts.shape, hist.shape)
    doc = private_export(table, min_cell=11, epsilon=epsilon, seed=seed)
    for i, group in enumerate(doc["groups"]):
        want_c = [int(v) if v >= 11 else None for v in (counts[i] + nc[i]).reshape(-1)]
        want_h = [int(v) if v >= 11 else None for v in (hist[i] + nh[i]).reshape(-1)]
        assert group["counts"] == want_c
        assert group["score_hist"] == want_h


def test_private_export_suppresses_after_noise():
    """True zeros that noise lifts over min_cell are shown; large counts noise drops under it are null."""
    bins = 200
    counts = np.zeros((1, 3, 2, 2))
    hist0 = np.zeros((1, 3, bins))
    hist0[0, 1, :] = 12
    doc = private_export(table_of(counts, hist0), min_cell=12, epsilon=0.01, seed=5)  # scale 200
    _, nh = noise_oracle(5, 0.01, (1, 3, 2, 2), (1, 3, bins))
    shown = doc["groups"][0]["score_hist"]
    assert any(v is not None for v in shown[:bins])  # a true 0 shown: noise came first
    assert any(v is None for v in shown[bins : 2 * bins])  # a true 12 hidden: noise came first
    assert shown == [int(v) if v >= 12 else None for v in (hist0[0] + nh[0]).reshape(-1)]


def test_private_export_seeds_reproduce_and_differ():
    bins = 50
    table = table_of(np.full((1, 3, 2, 2), 500), np.full((1, 3, bins), 500))
    a = private_export(table, min_cell=0, epsilon=1.0, seed=11)
    assert a == private_export(table, min_cell=0, epsilon=1.0, seed=11)
    b = private_export(table, min_cell=0, epsilon=1.0, seed=12)
    assert a["groups"][0]["score_hist"] != b["groups"][0]["score_hist"]
    assert a["groups"][0]["counts"] != b["groups"][0]["counts"]
    free = [private_export(table, min_cell=0, epsilon=1.0)["groups"][0]["score_hist"] for _ in range(2)]
    assert free[0] != free[1]  # no seed: fresh noise every time


def test_private_export_noise_has_the_discrete_laplace_law():
    bins = 20_000
    true = 1000
    table = table_of(np.full((1, 3, 2, 2), true), np.full((1, 3, bins), true))
    doc = private_export(table, min_cell=0, epsilon=1.0, seed=99)
    noise = np.array(doc["groups"][0]["score_hist"] + doc["groups"][0]["counts"], np.int64) - true
    q = math.exp(-0.5)
    n = noise.size
    assert noise.var() == pytest.approx(2 * q / (1 - q) ** 2, rel=0.05)
    p0 = (1 - q) / (1 + q)
    assert np.mean(noise == 0) == pytest.approx(p0, abs=5 * math.sqrt(p0 / n))
    assert abs(np.mean(noise == 1) - np.mean(noise == -1)) < 5 * math.sqrt(2 * p0 * q / n)


# -- private_export: refusals ----------------------------------------------------------------


@pytest.mark.parametrize("min_cell", [0, 1])
def test_private_export_refuses_no_suppression_without_noise(min_cell):
    with pytest.raises(InputError) as exc:
        private_export(two_groups(), min_cell=min_cell)
    assert str(exc.value) == (
        f"min_cell must be at least 2 (got {min_cell}): suppressing cells under {min_cell} is an exact export; "
        "ask for exact counts with raw (--raw)"
    )


def test_private_export_takes_min_cell_2_without_noise_and_0_with_noise():
    assert private_export(two_groups(), min_cell=2)["privacy"]["min_cell"] == 2
    assert private_export(two_groups(), min_cell=0, epsilon=1.0, seed=0)["privacy"]["min_cell"] == 0


@pytest.mark.parametrize("epsilon", [None, 1.0])
@pytest.mark.parametrize(
    "min_cell, shown", [(-1, "-1"), (2.5, "2.5"), (True, "True"), (False, "False"), ("3", "'3'"), (None, "None")]
)
def test_private_export_refuses_a_bad_min_cell(min_cell, shown, epsilon):
    with pytest.raises(InputError) as exc:
        private_export(two_groups(), min_cell=min_cell, epsilon=epsilon, seed=0)
    assert str(exc.value) == f"min_cell must be a non-negative integer, got {shown}"


@pytest.mark.parametrize("epsilon, shown", [(0.0, "0.0"), (math.inf, "inf"), (1e-4, "0.0001")])
def test_private_export_refuses_a_bad_epsilon(epsilon, shown):
    with pytest.raises(InputError) as exc:
        private_export(two_groups(), min_cell=11, epsilon=epsilon)
    assert str(exc.value) == FLOOR_MESSAGE + shown


def test_private_export_takes_the_epsilon_floor():
    doc = private_export(two_groups(), min_cell=0, epsilon=1e-3, seed=0)
    assert doc["privacy"]["scale"] == 2000.0 and doc["privacy"]["epsilon"] == 1e-3


# -- write_private_export --------------------------------------------------------------------


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """score = Sigmoid(x): x >= 0 decides 1."""
    graph = helper.make_graph(
        [helper.make_node("Sigmoid", ["x"], ["score"])],
        "sigmoid",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 1])],
        [helper.make_tensor_value_info("score", onnx.TensorProto.FLOAT, ["N", 1])],
    )
    path = tmp_path_factory.mktemp("model") / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.fixture
def store(model, tmp_path) -> Path:
    path = tmp_path / "s.db"
    with FairSession(model, sensitive=["g"], store=path, flush_seconds=0) as s:
        for group, pos, neg in (("a", 30, 25), ("b", 3, 40), ("c", 1, 1)):
            x = np.array([1.0] * pos + [-1.0] * neg, np.float32).reshape(-1, 1)
            s.run({"x": x}, {"g": [group] * len(x)})
    return path


def ledger(path: Path) -> list[tuple[float, str]]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return db.execute("SELECT epsilon, note FROM ledger ORDER BY id").fetchall()
    finally:
        db.close()


def stored_budget(path: Path) -> float | None:
    opened, _ = open_store(path, read_only=True)
    try:
        return opened.budget()
    finally:
        opened.close()


def test_raw_export_writes_the_exact_table(store, tmp_path):
    out = tmp_path / "raw.json"
    summary = write_private_export(store, str(out), raw=True)
    table = load_counters(store)
    assert out.read_text(encoding="utf-8") == table.to_json() + "\n"
    assert summary == ExportSummary(out, 0, None, None, None, True)
    assert isinstance(summary.output, Path) and summary.raw is True and summary.min_cell == 0
    assert summary.budget is None and summary.epsilon is None and summary.epsilon_spent is None
    assert ledger(store) == []


def test_raw_export_reports_the_stored_budget_and_ignores_min_cell(store, tmp_path):
    write_private_export(store, tmp_path / "first.json", budget=3.0)
    out = tmp_path / "raw.json"
    summary = write_private_export(store, out, raw=True, min_cell=1)
    assert summary == ExportSummary(out, 0, None, None, 3.0, True)
    assert out.read_text(encoding="utf-8") == load_counters(store).to_json() + "\n"
    zero = write_private_export(store, tmp_path / "raw0.json", raw=True, min_cell=0, budget=2.0)
    assert zero == ExportSummary(tmp_path / "raw0.json", 0, None, None, 2.0, True)
    assert stored_budget(store) == 2.0 and ledger(store) == []


def test_raw_with_epsilon_is_refused(store, tmp_path):
    out = tmp_path / "x.json"
    with pytest.raises(InputError) as exc:
        write_private_export(store, out, raw=True, epsilon=1.0, budget=5.0)
    assert str(exc.value) == "raw exports exact counts: give either raw (--raw) or epsilon (--epsilon), not both"
    assert not out.exists() and ledger(store) == [] and stored_budget(store) is None


def test_default_export_is_suppressed_not_raw(store, tmp_path):
    out = tmp_path / "d.json"
    summary = write_private_export(store, out)
    assert summary == ExportSummary(out, 11, None, None, None, False)
    assert summary.raw is False and isinstance(summary.output, Path)
    written = out.read_text(encoding="utf-8")
    assert written.endswith("}\n") and written.count("\n") == 1
    assert json.loads(written) == private_export(load_counters(store), 11)


def test_suppressed_export_writes_the_document(store, tmp_path):
    out = tmp_path / "s.json"
    summary = write_private_export(store, str(out), min_cell=2)
    assert summary == ExportSummary(out, 2, None, None, None, False)
    doc = json.loads(out.read_text(encoding="utf-8"))
    table = load_counters(store)
    assert doc["kind"] == "edgefair.counters_export" and doc["privacy"]["min_cell"] == 2
    assert doc["privacy"]["epsilon"] is None and doc["privacy"]["mechanism"] is None
    assert doc["attributes"] == ["g"] and [g["key"] for g in doc["groups"]] == [["a"], ["b"], ["c"]]
    # unlabelled rows: label 'unknown' (2), decision 1 for x = 1, 0 for x = -1
    for group, (pos, neg) in zip(doc["groups"], ((30, 25), (3, 40), (1, 1)), strict=True):
        want = [None] * 12
        want[8] = neg if neg >= 2 else None
        want[11] = pos if pos >= 2 else None
        assert group["counts"] == want
    assert doc == private_export(table, 2)
    assert ledger(store) == []


@pytest.mark.parametrize(
    "min_cell, shown", [(1, "1"), (0, "0"), (-3, "-3"), (2.5, "2.5"), (True, "True"), ("5", "'5'"), (None, "None")]
)
def test_export_refuses_a_min_cell_under_two(store, tmp_path, min_cell, shown):
    out = tmp_path / "m.json"
    with pytest.raises(InputError) as exc:
        write_private_export(store, out, min_cell=min_cell)
    assert str(exc.value) == (
        f"min_cell (--min-cell) must be at least 2, got {shown}: a smaller one suppresses nothing; "
        "exact counts are the explicit raw export (--raw)"
    )
    assert not out.exists()


def test_export_refuses_a_small_min_cell_even_with_epsilon(store, tmp_path):
    with pytest.raises(InputError, match=r"^min_cell \(--min-cell\) must be at least 2, got 1: "):
        write_private_export(store, tmp_path / "m.json", min_cell=1, epsilon=1.0, budget=2.0)
    assert ledger(store) == [] and stored_budget(store) is None


def test_export_refuses_a_bad_epsilon_before_touching_the_store(store, tmp_path):
    for epsilon, shown in ((math.nan, "nan"), (1e-4, "0.0001"), (0, "0")):
        with pytest.raises(InputError) as exc:
            write_private_export(store, tmp_path / "e.json", epsilon=epsilon, budget=2.0)
        assert str(exc.value) == FLOOR_MESSAGE + shown
    with pytest.raises(PrivacyBudgetError, match=r"^budget \(--budget\) must be a positive, finite total epsilon"):
        write_private_export(store, tmp_path / "e.json", epsilon=1.0, budget=-1.0)
    assert not (tmp_path / "e.json").exists() and ledger(store) == [] and stored_budget(store) is None


def test_noisy_export_is_charged_and_summarised(store, tmp_path):
    out = tmp_path / "n.json"
    summary = write_private_export(store, str(out), min_cell=5, epsilon=0.5, budget=2.0)
    assert summary == ExportSummary(out, 5, 0.5, 0.5, 2.0, False)
    assert summary.raw is False and isinstance(summary.output, Path)
    assert ledger(store) == [(0.5, f"export to {out}")]
    assert stored_budget(store) == 2.0
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert doc["privacy"] == {
        "min_cell": 5,
        "epsilon": 0.5,
        "mechanism": "discrete Laplace",
        "scale": 4.0,
        "note": "cells under min_cell (after noise) are null",
    }
    assert doc["kind"] == "edgefair.counters_export" and [g["key"] for g in doc["groups"]] == [["a"], ["b"], ["c"]]
    assert all(v is None or v >= 5 for g in doc["groups"] for v in g["counts"] + g["score_hist"])


def test_epsilon_one_as_int_is_charged_as_float(store, tmp_path):
    summary = write_private_export(store, tmp_path / "i.json", epsilon=1, budget=4)
    assert summary == ExportSummary(tmp_path / "i.json", 11, 1.0, 1.0, 4.0, False)
    assert type(summary.epsilon) is float


def test_budget_is_stored_first_then_only_lowered(store, tmp_path):
    first = write_private_export(store, tmp_path / "1.json", epsilon=0.5, budget=2.0)
    assert (first.epsilon_spent, first.budget) == (0.5, 2.0)
    second = write_private_export(store, tmp_path / "2.json", epsilon=0.25)  # the stored budget holds
    assert second == ExportSummary(tmp_path / "2.json", 11, 0.25, 0.75, 2.0, False)
    third = write_private_export(store, tmp_path / "3.json", epsilon=0.25, budget=1.5)  # lowered
    assert third == ExportSummary(tmp_path / "3.json", 11, 0.25, 1.0, 1.5, False)
    with pytest.raises(PrivacyBudgetError, match="can only be lowered"):
        write_private_export(store, tmp_path / "4.json", epsilon=0.25, budget=100.0)
    assert not (tmp_path / "4.json").exists()
    with pytest.raises(PrivacyBudgetError, match="would spend"):
        write_private_export(store, tmp_path / "5.json", epsilon=0.6)
    assert not (tmp_path / "5.json").exists()
    plain = write_private_export(store, tmp_path / "6.json", min_cell=3)
    assert plain == ExportSummary(tmp_path / "6.json", 3, None, None, 1.5, False)
    assert [e for e, _ in ledger(store)] == [0.5, 0.25, 0.25]
    assert stored_budget(store) == 1.5


def test_budget_alone_sets_it_without_spending(store, tmp_path):
    summary = write_private_export(store, tmp_path / "b.json", min_cell=4, budget=1.0)
    assert summary == ExportSummary(tmp_path / "b.json", 4, None, None, 1.0, False)
    assert stored_budget(store) == 1.0 and ledger(store) == []
    last = write_private_export(store, tmp_path / "c.json", epsilon=1.0)
    assert last == ExportSummary(tmp_path / "c.json", 11, 1.0, 1.0, 1.0, False)


def test_epsilon_without_a_budget_is_refused(store, tmp_path):
    out = tmp_path / "x.json"
    with pytest.raises(PrivacyBudgetError, match="no privacy budget"):
        write_private_export(store, out, epsilon=1.0)
    assert not out.exists() and ledger(store) == []


def test_a_failed_write_charges_nothing(store, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    out = blocker / "x.json"  # inside a FILE: the write fails
    with pytest.raises(OSError):
        write_private_export(store, out, epsilon=0.5, budget=2.0)
    assert ledger(store) == [] and stored_budget(store) == 2.0  # the budget was given: it holds
    ok = write_private_export(store, tmp_path / "ok.json", epsilon=0.5)
    assert ok.epsilon_spent == 0.5 and ledger(store) == [(0.5, f"export to {tmp_path / 'ok.json'}")]


@pytest.mark.parametrize("raw", [False, True])
def test_export_over_the_store_is_refused(store, raw):
    before = store.read_bytes()
    with pytest.raises(InputError, match="is one of the inputs"):
        write_private_export(store, store, raw=raw)
    with pytest.raises(InputError, match="is one of the inputs"):
        write_private_export(store, str(store), epsilon=None if raw else 1.0, budget=2.0, raw=raw)
    assert store.read_bytes() == before and stored_budget(store) is None


def test_plain_exports_only_read_the_store(store, tmp_path):
    """Without budget or epsilon nothing is written to the store: it works while another writer holds the lock."""
    writer = sqlite3.connect(str(store), isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        raw = write_private_export(store, tmp_path / "r.json", raw=True)
        plain = write_private_export(store, tmp_path / "p.json", min_cell=2)
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert raw.raw and not plain.raw
    assert (tmp_path / "r.json").read_text(encoding="utf-8") == load_counters(store).to_json() + "\n"
