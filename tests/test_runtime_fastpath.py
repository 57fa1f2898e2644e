"""The runtime's fast counting paths (one row, a few rows, numpy batches) against independent oracles.

A model trained here (scikit-learn -> skl2onnx), three sensitive attributes (strings with more
distinct values than the learning cap, integers, numpy unicode), missing and unseen values, batch 1
and large batches. The expected table is recounted row by row in plain Python from a bare
onnxruntime session's scores, and again with ``core.tables.from_arrays`` on the mapped labels.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from edgefair.core.tables import DEFAULT_BINS, CountsTable, from_arrays
from edgefair.errors import InputError
from edgefair.runtime.counters import MAX_VALUES_PER_ATTRIBUTE, Counters
from edgefair.runtime.session import FairSession
from tests.models import sklearn_onnx

ROWS = 700


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, np.ndarray, np.ndarray]:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(7)
    x = rng.normal(size=(2000, 4)).astype(np.float32)
    y = (x @ np.array([1.5, -1.0, 0.5, 0.0]) + rng.normal(0, 0.5, 2000) > 0).astype(np.int64)
    model = LogisticRegression().fit(x, y)
    path = tmp_path_factory.mktemp("fast") / "lr.onnx"
    path.write_bytes(sklearn_onnx(model, x))
    feed = rng.normal(size=(ROWS, 4)).astype(np.float32)
    bare = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    probs = bare.run(["probabilities"], {bare.get_inputs()[0].name: feed})[0]
    return str(path), feed, probs[:, 1].astype(np.float64)


def sensitive_columns() -> dict[str, list[Any]]:
    """Raw per-row values: more colours than the cap, missing ones, ints in a shuffled order."""
    rng = np.random.default_rng(11)
    colours = [f"c{i}" for i in range(MAX_VALUES_PER_ATTRIBUTE + 6)]
    colour: list[Any] = [colours[i] for i in rng.integers(0, len(colours), ROWS)]
    for i in rng.choice(ROWS, 25, replace=False):
        colour[i] = [None, "", float("nan")][i % 3]
    colour[ROWS - 1] = "never-seen-before"  # past the cap: 'other'
    site = rng.permutation(np.repeat(np.arange(30) * 7 % 31, ROWS // 30 + 1))[:ROWS].tolist()
    sex = ["F" if v else "M" for v in rng.integers(0, 2, ROWS)]
    return {"colour": colour, "site": site, "sex": sex}


def oracle_labels(columns: dict[str, list[Any]], known: dict[str, list[str]] | None = None) -> dict[str, list[str]]:
    """Each row's group value as the runtime documents it, recomputed in plain Python."""
    out = {}
    for name, values in columns.items():
        given = (known or {}).get(name) or []
        learned: dict[str, None] = dict.fromkeys(given)
        labels = []
        for v in values:
            if v is None or v == "" or (isinstance(v, float) and v != v):
                labels.append("unknown")
                continue
            key = str(v)
            if key in learned or key in ("other", "unknown"):
                labels.append(key)
            elif not given and len(learned) < MAX_VALUES_PER_ATTRIBUTE:
                learned[key] = None
                labels.append(key)
            else:
                labels.append("other")
        out[name] = labels
    return out


def recount(labels: dict[str, list[str]], scores: np.ndarray, threshold: float) -> dict[tuple[str, ...], Any]:
    """Row by row: label unknown, decision on both decision axes, the score's bin."""
    expected: dict[tuple[str, ...], Any] = {}
    names = list(labels)
    for i, s in enumerate(scores.tolist()):
        key = tuple(labels[n][i] for n in names)
        counts, hist = expected.setdefault(key, (np.zeros((3, 2, 2), np.int64), np.zeros((3, DEFAULT_BINS), np.int64)))
        d = int(s >= threshold)
        counts[2, d, d] += 1
        hist[2, min(int(s * DEFAULT_BINS), DEFAULT_BINS - 1)] += 1
    return expected


def assert_table(table: CountsTable, labels: dict[str, list[str]], scores: np.ndarray, threshold: float) -> None:
    expected = recount(labels, scores, threshold)
    assert table.groups == tuple(sorted(expected))
    for key, counts, hist in zip(table.groups, table.counts, table.score_hist, strict=True):
        assert np.array_equal(counts, expected[key][0]), key
        assert np.array_equal(hist[:, 0, :], expected[key][1]), key
        assert np.array_equal(hist[:, 1, :], expected[key][1]), key
    decisions = (scores >= threshold).astype(np.int64)
    other = from_arrays({k: np.array(v, object) for k, v in labels.items()}, decisions, reference_score=scores)
    assert other.groups == table.groups
    assert np.array_equal(other.counts, table.counts)
    assert np.array_equal(other.score_hist, table.score_hist)


def as_given(name: str, values: list[Any], style: int) -> Any:
    """The same values as a list, an object array, or (when they allow it) an int / unicode array."""
    if style == 1:
        return np.array(values, dtype=object)
    if style == 2 and name == "site":
        return np.array(values, dtype=np.int64)
    if style == 2 and name == "sex":
        return np.array(values, dtype="U1")
    return list(values)


@pytest.mark.parametrize("batches", [[1] * 60 + [ROWS - 60], [7] * 100, [ROWS], [300, 1, 16, 17, 2, 364]])
def test_session_counts_equal_two_recounts(trained: tuple[str, np.ndarray, np.ndarray], batches: list[int]) -> None:
    path, feed, scores = trained
    columns = sensitive_columns()
    assert sum(batches) == ROWS
    with FairSession(path, sensitive=list(columns)) as fs:
        start = 0
        for j, size in enumerate(batches):
            part = slice(start, start + size)
            sens = {k: as_given(k, v[part], j % 3) for k, v in columns.items()}
            fs.run({"X": feed[part]}, sens)
            start += size
        assert_table(fs.table(), oracle_labels(columns), scores, fs.threshold)


def test_batchings_agree_row_for_row(trained: tuple[str, np.ndarray, np.ndarray]) -> None:
    """One row at a time and one big batch: the same table (first appearance decides learning)."""
    path, feed, _ = trained
    columns = sensitive_columns()
    tables = []
    for step in (1, 13, ROWS):
        with FairSession(path, sensitive=list(columns)) as fs:
            for start in range(0, ROWS, step):
                part = slice(start, start + step)
                fs.run({"X": feed[part]}, {k: np.array(v[part], dtype=object) for k, v in columns.items()})
            tables.append(fs.table())
    for t in tables[1:]:
        assert t.groups == tables[0].groups
        assert np.array_equal(t.counts, tables[0].counts)
        assert np.array_equal(t.score_hist, tables[0].score_hist)


@pytest.mark.parametrize("size", [1, 5, 400])
def test_known_values_fold_unseen_into_other(size: int) -> None:
    """With known values (a bundle's), unseen values count as 'other' on every path."""
    rng = np.random.default_rng(3)
    known = {"race": ["A", "B", "C"], "region": ["north", "south"]}
    n = 1200
    columns: dict[str, list[Any]] = {
        "race": [["A", "B", "C", "D", "E"][i] for i in rng.integers(0, 5, n)],
        "region": [["north", "south", "west", ""][i] for i in rng.integers(0, 4, n)],
    }
    scores = rng.random(n)
    counters = Counters(list(known), known)
    for start in range(0, n, size):
        part = slice(start, start + size)
        sens = {k: np.array(v[part], dtype=object) for k, v in columns.items()}
        if size == 1:
            groups: Any = [counters.group_code(sens)]
        elif size <= 16:
            groups = counters.group_code_list(sens, size)
        else:
            groups = counters.group_codes(sens, size)
        s = scores[part]
        decisions = (s >= 0.5).astype(np.int64)
        counters.update(
            groups if size > 16 else list(groups),
            decisions if size > 16 else decisions.tolist(),
            s if size > 16 else s.tolist(),
        )
    assert_table(counters.table(), oracle_labels(columns, known), scores, 0.5)


def test_bad_sensitive_values_are_refused_before_counting() -> None:
    counters = Counters(["a", "b"])
    for bad, words in (
        ({"a": ["x"]}, "'b' is missing"),
        ({"a": ["x"], "b": ["y"], "c": ["z"]}, "unexpected sensitive attribute 'c'"),
        ({"a": ["x", "y"], "b": ["y"]}, "'a' has 2 values for 1 rows"),
        ({"a": "xy", "b": ["y"]}, "'a' must be a list or array"),
        ({"a": [["x"]], "b": ["y"]}, "'a' holds lists"),
    ):
        with pytest.raises(InputError, match=words):
            counters.group_code(bad)
    with pytest.raises(InputError, match="'a' holds lists"):
        counters.group_codes({"a": [["x"]] * 20, "b": ["y"] * 20}, 20)
    assert counters.table().groups == ()


@pytest.mark.parametrize("step", [ROWS, 40])
def test_typed_arrays_learn_in_order_of_first_appearance(
    trained: tuple[str, np.ndarray, np.ndarray], step: int
) -> None:
    """Integer and unicode arrays from the first call on: the first 16 values seen are the ones learned."""
    path, feed, scores = trained
    columns = sensitive_columns()
    with FairSession(path, sensitive=list(columns)) as fs:
        for start in range(0, ROWS, step):
            part = slice(start, start + step)
            fs.run({"X": feed[part]}, {k: as_given(k, v[part], 2) for k, v in columns.items()})
        assert_table(fs.table(), oracle_labels(columns), scores, fs.threshold)


def test_threads_counting_at_once_lose_no_row(trained: tuple[str, np.ndarray, np.ndarray]) -> None:
    """Four threads learning values and counting together (values under the cap, so the result
    does not depend on who saw a value first): every row counted once, in its group."""
    import threading

    path, feed, scores = trained
    rng = np.random.default_rng(5)
    columns: dict[str, list[Any]] = {
        "colour": [[f"c{i}" for i in range(12)][i] for i in rng.integers(0, 12, ROWS)],
        "site": rng.integers(0, 9, ROWS).tolist(),
    }
    with FairSession(path, sensitive=list(columns)) as fs:

        def work(k: int) -> None:
            for start in range(k * 25, ROWS, 100):  # each thread: every fourth slice of 25 rows
                for a, b in ((start, start + 1), (start + 1, start + 5), (start + 5, start + 25)):
                    fs.run({"X": feed[a:b]}, {n: np.array(v[a:b], dtype=object) for n, v in columns.items()})

        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert_table(fs.table(), oracle_labels(columns), scores, fs.threshold)
