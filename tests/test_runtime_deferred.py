"""FairSession's deferred counting (seen string values, probability outputs) against a plain-Python recount.

The serving hot path codes seen values before the model runs and adds the rows in bulk later
(``Counters.defer`` / ``_fold``). Every reader must see exactly the rows the careful path would
have counted: the table, the live arrays, outcomes joined later, a store flushed to disk, four
threads at once, folds forced every few rows. Scores come from a model built here whose output
is its input, so the test chooses them: the threshold itself, bin edges, 0 and 1, values just
outside [0, 1] (clipped or refused by the careful path).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import edgefair.runtime.counters as counters_module
from edgefair.core.tables import DEFAULT_BINS
from edgefair.errors import ModelError
from edgefair.runtime.session import FairSession
from edgefair.runtime.store import CounterStore
from tests.test_runtime_fastpath import assert_table, oracle_labels, recount


@pytest.fixture(scope="module")
def echo(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A model whose probabilities are (1 - x, x): the test picks every score."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1])
    out = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2])
    one = helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])
    nodes = [
        helper.make_node("Sub", ["one", "x"], ["y"]),
        helper.make_node("Concat", ["y", "x"], ["probabilities"], axis=1),
    ]
    model = helper.make_model(
        helper.make_graph(nodes, "echo", [x], [out], [one]), opset_imports=[helper.make_opsetid("", 17)]
    )
    path = tmp_path_factory.mktemp("echo") / "echo.onnx"
    path.write_bytes(model.SerializeToString())
    onnx.checker.check_model(str(path))
    return str(path)


def identity_model(tmp_path_factory: pytest.TempPathFactory, kind: int) -> str:
    """A model whose one score column is its input (float or double)."""
    x = helper.make_tensor_value_info("x", kind, ["N", 1])
    out = helper.make_tensor_value_info("score", kind, ["N", 1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["score"])], "identity", [x], [out])
    path = tmp_path_factory.mktemp("identity") / f"identity{kind}.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    return str(path)


@pytest.fixture(scope="module")
def identity(tmp_path_factory: pytest.TempPathFactory) -> str:
    return identity_model(tmp_path_factory, TensorProto.FLOAT)


@pytest.fixture(scope="module")
def identity64(tmp_path_factory: pytest.TempPathFactory) -> str:
    return identity_model(tmp_path_factory, TensorProto.DOUBLE)


def scores_and_columns(rows: int, seed: int) -> tuple[np.ndarray, dict[str, list[Any]]]:
    rng = np.random.default_rng(seed)
    edges = np.array([0.0, 1.0, 0.3, 0.5, 0.7, 0.02, 0.98, 0.999999, 1e-9], np.float32)  # thresholds, bin edges, ends
    scores = np.where(rng.random(rows) < 0.2, rng.choice(edges, rows), rng.random(rows)).astype(np.float32)
    columns = {
        "colour": [["red", "green", "blue", "teal"][i] for i in rng.integers(0, 4, rows)],
        "sex": [["F", "M", "X"][i] for i in rng.integers(0, 3, rows)],
    }
    return scores, columns


def feed_in(fs: FairSession, scores: np.ndarray, columns: dict[str, list[Any]], batches: list[int]) -> None:
    start = 0
    for size in batches:
        part = slice(start, start + size)
        fs.run({"x": scores[part].reshape(-1, 1)}, {k: np.array(v[part], dtype=object) for k, v in columns.items()})
        start += size
    assert start == len(scores)


@pytest.mark.parametrize("threshold", [0.5, 0.3, 0.7])
@pytest.mark.parametrize("batches", [[1] * 50 + [950], [256] * 3 + [232], [3, 1, 500, 1, 495]])
def test_deferred_rows_equal_a_recount(echo: str, threshold: float, batches: list[int]) -> None:
    scores, columns = scores_and_columns(1000, 1)
    with FairSession(echo, sensitive=list(columns), threshold=threshold) as fs:
        feed_in(fs, scores, columns, batches)
        assert fs.counters._deferred_rows > 0  # the deferred path was taken (the first call learns)
        live = fs.counters.counts.copy()  # the live arrays include the deferred rows too
        table = fs.table()
    # the float32 score is compared as a float64: float32(0.7) < 0.7 is negative at threshold 0.7
    assert_table(table, oracle_labels(columns), scores.astype(np.float64), threshold)
    assert live.sum() == 1000


def test_folds_every_few_rows_keep_every_row(echo: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(counters_module, "FOLD_ROWS", 5)
    scores, columns = scores_and_columns(600, 2)
    with FairSession(echo, sensitive=list(columns)) as fs:
        feed_in(fs, scores, columns, [1, 1, 1, 4, 9, 1, 300, 2, 1, 280])
        assert fs.counters._deferred_rows < 5  # folded as it went
        table = fs.table()
    assert_table(table, oracle_labels(columns), scores.astype(np.float64), 0.5)


@pytest.mark.parametrize("model", ["echo", "identity", "identity64"])
def test_scores_outside_the_unit_interval_take_the_careful_path(model: str, request: pytest.FixtureRequest) -> None:
    """Within the slack they are clipped (as the careful path does), beyond it refused, and the
    refused call counts nothing, whichever batch size."""
    scores, columns = scores_and_columns(300, 3)
    with FairSession(request.getfixturevalue(model), sensitive=list(columns)) as fs:
        feed_in(fs, scores, columns, [1, 299])
        before = fs.table()
        slack = np.array([1.0 + 2.0**-22, -(2.0**-22)], np.float32)  # inside SCORE_SLACK: clipped to 1 and 0
        for rows in (1, 2):
            fs.run({"x": slack[:rows].reshape(-1, 1)}, {"colour": ["red"] * rows, "sex": ["F"] * rows})
        for bad in (np.float32(1.5), np.float32(np.nan), np.float32(-0.25)):
            for rows in (1, 40):
                with pytest.raises(ModelError, match="outside"):
                    fs.run({"x": np.full((rows, 1), bad)}, {"colour": ["red"] * rows, "sex": ["F"] * rows})
        after = fs.table()
    added = recount({"colour": ["red"] * 3, "sex": ["F"] * 3}, np.array([1.0, 1.0, 0.0]), 0.5)
    ((key, (counts, hist)),) = added.items()
    i, j = before.groups.index(key), after.groups.index(key)
    assert np.array_equal(after.counts[j] - before.counts[i], counts)
    assert np.array_equal(after.score_hist[j, :, 0] - before.score_hist[i, :, 0], hist)
    assert after.counts.sum() - before.counts.sum() == 3


def test_outcomes_and_store_see_deferred_rows(echo: str, tmp_path: Path) -> None:
    """Rows counted without ids (deferred), then rows with ids (counted at once, in a batch and one
    by one) and their labels:
    the joined labels move only the id'd rows; the store on disk holds every row after a flush."""
    scores, columns = scores_and_columns(400, 4)
    scores[390:396] = [0.5, 0.5, 0.0, 1.0, 0.5, np.float32(0.5) - np.float32(2.0**-24)]  # at the threshold
    store = tmp_path / "counters.db"
    with FairSession(echo, sensitive=list(columns), store=store, flush_seconds=0) as fs:
        feed_in(fs, scores[:300], {k: v[:300] for k, v in columns.items()}, [1, 299])
        ids = [f"r{i}" for i in range(100)]
        fs.run({"x": scores[300:390].reshape(-1, 1)}, {k: v[300:390] for k, v in columns.items()}, ids=ids[:90])
        for i in range(390, 400):  # one row with its id: counted at once (the server's case)
            fs.run(
                {"x": scores[i : i + 1].reshape(-1, 1)}, {k: v[i : i + 1] for k, v in columns.items()}, [ids[i - 300]]
            )
        labels = (np.arange(100) % 2).tolist()
        assert fs.record_outcomes(ids, labels).joined == 100
        fs.flush()
        table = fs.table()
    stored = CounterStore(store, tuple(columns), DEFAULT_BINS).flushed
    assert stored.groups == table.groups and np.array_equal(stored.counts, table.counts)
    assert table.counts.sum() == 400
    names = list(columns)
    expected: dict[tuple[str, ...], np.ndarray] = {}
    for i, s in enumerate(scores.astype(np.float64).tolist()):
        key = tuple(columns[n][i] for n in names)
        d = int(s >= 0.5)
        y = labels[i - 300] if i >= 300 else 2
        expected.setdefault(key, np.zeros((3, 2, 2), np.int64))[y, d, d] += 1
    assert table.groups == tuple(sorted(expected))
    for key, counts in zip(table.groups, table.counts, strict=True):
        assert np.array_equal(counts, expected[key]), key


def test_threads_deferring_at_once_lose_no_row(echo: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(counters_module, "FOLD_ROWS", 64)  # folds race with appends
    scores, columns = scores_and_columns(2000, 5)
    with FairSession(echo, sensitive=list(columns)) as fs:
        fs.run({"x": scores[:1].reshape(-1, 1)}, {k: v[:1] for k, v in columns.items()})

        def work(k: int) -> None:
            for start in range(1 + k * 37, 2000, 4 * 37):
                for a, b in ((start, start + 1), (start + 1, start + 37)):
                    b = min(b, 2000)
                    if a < b:
                        fs.run({"x": scores[a:b].reshape(-1, 1)}, {n: v[a:b] for n, v in columns.items()})
                    if k == 0:
                        fs.table()  # a reader folding while others append

        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        table = fs.table()
    assert_table(table, oracle_labels(columns), scores.astype(np.float64), 0.5)


def test_single_rows_at_two_thresholds_keep_their_own() -> None:
    """Rows deferred at one threshold are added at that threshold when the next row brings
    another (the session's threshold is fixed, but Counters takes it per call)."""
    counters = counters_module.Counters(["g"], {"g": ["a"]})
    (code, _), (codes, _) = counters.known_codes({"g": ["a"]}), counters.known_codes({"g": ["a", "a"]})
    counters.defer_one(code, 0.6, 0.5)
    counters.defer_one(code, 0.6, 0.7)
    counters.defer(codes, np.array([0.6, 0.6], np.float32), 0.5)
    table = counters.table()
    i = table.groups.index(("a",))
    assert table.counts[i, 2, 1, 1] == 3 and table.counts[i, 2, 0, 0] == 1  # >= 0.5 three times; < 0.7 once
    assert table.counts[i].sum() == 4


def test_one_id_for_a_batch_of_seen_values_is_refused(identity: str) -> None:
    """Seen values, plain scores, but one id for five rows: refused, nothing counted."""
    from edgefair.errors import InputError

    with FairSession(identity, sensitive=["g"]) as fs:
        fs.run({"x": np.full((5, 1), 0.3, np.float32)}, {"g": ["a"] * 5})
        with pytest.raises(InputError, match="1 ids for 5 rows"):
            fs.run({"x": np.full((5, 1), 0.3, np.float32)}, {"g": ["a"] * 5}, ids=["one"])
        assert fs.table().counts.sum() == 5
