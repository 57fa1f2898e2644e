"""Counting stays exact and idempotent across restarts, whatever the number of writers."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from edgefair.runtime.session import FairSession
from edgefair.runtime.store import load_counters
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    w = numpy_helper.from_array(np.array([[1.0]], np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["z"]), helper.make_node("Sigmoid", ["z"], ["score"])],
        "one",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 1])],
        [helper.make_tensor_value_info("score", onnx.TensorProto.FLOAT, ["N", 1])],
        [w],
    )
    path = tmp_path_factory.mktemp("m") / "one.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def count(session: FairSession, values: list[str], per_value: int) -> None:
    x = np.linspace(-2, 2, per_value * len(values), dtype=np.float32).reshape(-1, 1)
    session.run({"x": x}, {"g": np.repeat(values, per_value)})


def stored_rows(store) -> dict[str, int]:
    table = load_counters(store)
    return {k[0]: int(c.sum()) for k, c in zip(table.groups, table.counts, strict=True)}


def test_two_writers_learning_different_values_merge_exactly(tmp_path, model):
    store = tmp_path / "c.db"
    a = FairSession(model, sensitive=["g"], store=store, flush_seconds=0)
    b = FairSession(model, sensitive=["g"], store=store, flush_seconds=0)
    count(a, [f"a{i}" for i in range(16)], 100)
    count(b, [f"b{i}" for i in range(16)], 100)
    a.close()
    b.close()
    expected = {**{f"a{i}": 100 for i in range(16)}, **{f"b{i}": 100 for i in range(16)}}
    assert stored_rows(store) == expected
    for _ in range(3):  # a session that counts nothing changes nothing, however often it reopens
        FairSession(model, sensitive=["g"], store=store, flush_seconds=0).close()
        assert stored_rows(store) == expected
    with FairSession(model, sensitive=["g"], store=store, flush_seconds=0) as c:
        count(c, ["a0", "b15"], 5)
        assert c.table().rows == 3210
    assert sum(stored_rows(store).values()) == 3210


def test_two_processes_writing_one_store_add_up(tmp_path, model):
    store = tmp_path / "p.db"
    script = textwrap.dedent(
        f"""
        import sys, numpy as np
        from edgefair.runtime.session import FairSession
        prefix = sys.argv[1]
        with FairSession({str(model)!r}, sensitive=["g"], store={str(store)!r}, flush_rows=50) as s:
            for i in range(20):
                s.run({{"x": np.zeros((25, 1), np.float32)}}, {{"g": [f"{{prefix}}{{i % 16}}"] * 25}})
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, p], cwd=ROOT) for p in ("p", "q")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    rows = stored_rows(store)
    # exact totals whatever the timing; each writer learns at most 16 values (a writer that
    # starts after the other's flush finds the cap full and counts its new values as 'other')
    assert sum(rows.values()) == 1000 and len(set(rows) - {"other"}) <= 32
    for _ in range(2):  # reopening changes nothing
        FairSession(model, sensitive=["g"], store=store, flush_seconds=0).close()
        assert stored_rows(store) == rows
    with sqlite3.connect(store) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_a_writer_starts_from_the_snapshot_its_deltas_are_taken_from(tmp_path, model, monkeypatch):
    """Another writer flushes between this store's first read and the session's start: its rows
    must not be counted again in this writer's first delta (found by the 50-kill campaign)."""
    from edgefair.runtime import store as store_module

    path = tmp_path / "race.db"
    with FairSession(model, sensitive=["g"], store=path, flush_seconds=0) as seed:
        count(seed, ["x"], 1)  # the store exists, with its meta
    original = store_module.CounterStore.load
    calls = []

    def load_then_let_another_writer_flush(self):
        table = original(self)
        calls.append(1)
        if len(calls) == 1:
            with FairSession(model, sensitive=["g"], store=path, flush_seconds=0) as other:
                count(other, ["b"], 100)
        return table

    monkeypatch.setattr(store_module.CounterStore, "load", load_then_let_another_writer_flush)
    with FairSession(model, sensitive=["g"], store=path, flush_seconds=0) as mine:
        count(mine, ["a"], 50)
    monkeypatch.undo()
    assert stored_rows(path) == {"x": 1, "b": 100, "a": 50}
