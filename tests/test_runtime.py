"""Runtime: FairSession counts, bundles, a real SQLite store, crashes, fleet merge, privacy."""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edgefair import modelio
from edgefair.bundling import build_bundle
from edgefair.core import tables
from edgefair.data import ADULT_FEATURES
from edgefair.errors import BundleError, EdgefairError, InputError, PrivacyBudgetError
from edgefair.runtime.bundle import load_bundle
from edgefair.runtime.drift import drift
from edgefair.runtime.privacy import discrete_laplace, private_export
from edgefair.runtime.session import FairSession
from edgefair.runtime.store import CounterStore
from tests.conftest import MODELS, ROOT, assert_one_line_error, run_cli

WORKER = ROOT / "tests" / "edge_worker.py"


def features(adult, s=0, e=None):
    return {
        k: adult.columns[k][s:e].reshape(-1, 1).astype(np.float32 if adult.columns[k].dtype.kind == "f" else object)
        for k in ADULT_FEATURES
    }


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    return build_bundle(
        MODELS / "adult_sklearn.onnx", tmp_path_factory.mktemp("b") / "bundle", sensitive=["race", "sex"]
    )


def test_counts_equal_a_table_of_the_same_decisions(bundle_dir, adult_test):
    with FairSession(bundle_dir) as fs:
        for s in range(0, adult_test.rows, 100):
            e = min(s + 100, adult_test.rows)
            fs.run(
                features(adult_test, s, e),
                {"race": adult_test.columns["race"][s:e], "sex": adult_test.columns["sex"][s:e]},
                ids=[f"r{i}" for i in range(s, e)],
            )
        stats = fs.record_outcomes(
            [f"r{i}" for i in range(adult_test.rows)] + ["nope"], [*adult_test.columns["income"].tolist(), 1]
        )
        assert stats.joined == adult_test.rows and stats.unknown_id == 1
        field = fs.table()
    sess = modelio.open_session(MODELS / "adult_sklearn.onnx")
    sig = modelio.signature(sess)
    choice = modelio.choose_output(sig)
    scores, dec = modelio.decisions(
        sess.run([choice.name], modelio.build_feeds(sig, adult_test.columns))[0], choice, 0.5
    )
    expected = tables.from_arrays(
        {"race": adult_test.columns["race"], "sex": adult_test.columns["sex"]},
        dec,
        None,
        adult_test.columns["income"],
        reference_score=scores,
    )
    assert np.array_equal(field.counts, expected.counts) and field.groups == expected.groups


def test_unknown_values_go_to_other():
    from edgefair.runtime.counters import Counters

    known = Counters(["race"], {"race": ["White"]})
    known.update(known.group_codes({"race": ["Martian", "White"]}, 2), np.array([1, 0]), None)
    assert known.table().groups == (("White",), ("other",))
    learned = Counters(["race"], None, max_values=3)  # no known values: learn up to a cap
    values = ["a", "b", "c", "d", "e"]
    learned.update(learned.group_codes({"race": values}, 5), np.zeros(5, np.int64), None)
    assert learned.table().groups == (("a",), ("b",), ("c",), ("other",))


@pytest.mark.parametrize("case", ["names", "dtype", "sensitive_length", "missing_sensitive", "ids"])
def test_bad_calls_raise_and_leave_counters_unchanged(bundle_dir, adult_test, case):
    with FairSession(bundle_dir) as fs:
        fs.run(
            features(adult_test, 0, 5),
            {"race": adult_test.columns["race"][:5], "sex": adult_test.columns["sex"][:5]},
        )
        before = fs.table()
        feats = features(adult_test, 0, 5)
        sens = {"race": adult_test.columns["race"][:5], "sex": adult_test.columns["sex"][:5]}
        ids = None
        if case == "names":
            feats["agee"] = feats.pop("age")
        elif case == "dtype":
            feats["age"] = np.array([["x"]] * 5, dtype=object)
        elif case == "sensitive_length":
            sens["race"] = sens["race"][:3]
        elif case == "missing_sensitive":
            del sens["sex"]
        else:
            ids = ["a"]
        with pytest.raises(EdgefairError) as info:
            fs.run(feats, sens, ids)
        assert "\n" not in str(info.value)
        assert fs.table() == before


def test_store_resumes_totals_after_restart(bundle_dir, adult_test, tmp_path):
    db = tmp_path / "c.db"
    sens = {"race": adult_test.columns["race"][:50], "sex": adult_test.columns["sex"][:50]}
    with FairSession(bundle_dir, store=db) as fs:
        fs.run(features(adult_test, 0, 50), sens)
    with FairSession(bundle_dir, store=db) as fs:
        assert fs.table().rows == 50
        fs.run(features(adult_test, 0, 50), sens)
    with FairSession(bundle_dir, store=db) as fs:
        assert fs.table().rows == 100


def test_read_only_store_as_root(bundle_dir, tmp_path):
    """Root ignores permissions; a store path under a regular file still cannot be created."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(EdgefairError, match="cannot open the counters store"):
        FairSession(bundle_dir, store=blocker / "c.db")


def test_tampering_with_any_byte_of_any_file_is_refused(bundle_dir, tmp_path):
    import shutil

    for name in sorted(p.name for p in Path(bundle_dir).iterdir()):
        for position in (0, -1):
            copy = tmp_path / f"copy-{name}-{position}"
            shutil.copytree(bundle_dir, copy)
            blob = bytearray((copy / name).read_bytes())
            blob[position] ^= 0x01
            (copy / name).write_bytes(bytes(blob))
            with pytest.raises(BundleError) as info:
                load_bundle(copy)
            assert name in str(info.value)
    missing = tmp_path / "missing"
    shutil.copytree(bundle_dir, missing)
    (missing / "model.onnx").unlink()
    with pytest.raises(BundleError, match=r"model\.onnx"):
        FairSession(missing)


def test_foreign_operator_domain_is_refused(tmp_path):
    import onnx

    from tests import models

    path = tmp_path / "evil.onnx"
    onnx.save(models.with_domain("com.evil"), path)
    with pytest.raises(EdgefairError, match=r"com\.evil"):
        build_bundle(path, tmp_path / "b", sensitive=["g"])


def _kill_once(bundle_dir: Path, db: Path, rng: random.Random, flush_rows: int, batch: int) -> int:
    proc = subprocess.Popen(
        [sys.executable, str(WORKER), str(bundle_dir), str(db), "0", "16000", str(batch), str(flush_rows)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    target = rng.randint(5, 60)
    acked = 0
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    for line in proc.stdout:
        acked = int(line.split()[1])
        target -= 1
        if target <= 0 or time.monotonic() > deadline:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    for line in proc.stdout:  # acks the child printed before it died but we had not read yet
        if line.startswith("ack "):
            acked = int(line.split()[1])
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    return acked


def _stored_rows(db: Path) -> int:
    store = CounterStore(db, ("race", "sex"), tables.DEFAULT_BINS)
    try:
        return store.load().rows
    finally:
        store.close()


def _crash_rounds(bundle_dir, tmp_path, rounds: int) -> None:
    rng = random.Random(7)
    batch, flush_rows = 40, 200
    for r in range(rounds):
        db = tmp_path / f"crash{r}.db"
        acked = _kill_once(bundle_dir, db, rng, flush_rows, batch)
        stored = _stored_rows(db)
        # never above what was sent (at most one batch in flight past the last ack) ...
        assert stored <= acked + batch, (stored, acked)
        # ... and within one flush window (rows or the 0.2 s timer) of what was acknowledged
        assert stored >= acked - flush_rows - batch, (stored, acked)


def test_sigkill_twenty_times_loses_at_most_one_flush_window(bundle_dir, tmp_path):
    _crash_rounds(bundle_dir, tmp_path, 20)


def _start(bundle_dir: Path, db: Path, batch: int, flush_rows: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WORKER), str(bundle_dir), str(db), "0", "16000", str(batch), str(flush_rows)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def _acks(proc: subprocess.Popen[str], wanted: int) -> int:
    """Read acks until ``wanted`` more arrived (or the process ended); the last acked total."""
    acked = 0
    assert proc.stdout is not None
    for line in proc.stdout:
        acked = int(line.split()[1])
        wanted -= 1
        if wanted <= 0:
            break
    return acked


@pytest.mark.slow
def test_fifty_kills_of_two_writers_sharing_a_store(bundle_dir, tmp_path):
    """Two processes count into one store; each round SIGKILLs one or both at random moments.
    The store stays intact, its total never falls, never exceeds what was sent and trails the
    acknowledged rows by at most one flush window per writer."""
    rng = random.Random(11)
    batch, flush_rows = 40, 200
    db = tmp_path / "shared.db"
    acknowledged, previous = 0, 0
    for _ in range(25):  # 25 rounds x 2 writers = 50 kills
        before = _stored_rows(db) if db.exists() else 0
        procs = [_start(bundle_dir, db, batch, flush_rows) for _ in range(2)]
        acked = [_acks(p, rng.randint(3, 30)) for p in procs]
        for p in procs:
            p.send_signal(signal.SIGKILL)
            p.wait(timeout=30)
        for k, p in enumerate(procs):
            assert p.stdout is not None
            for line in p.stdout:
                acked[k] = int(line.split()[1]) if line.startswith("ack ") else acked[k]
        with sqlite3.connect(db) as con:
            assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stored = _stored_rows(db)
        acknowledged += sum(acked)
        assert stored >= previous  # counts never decrease
        assert stored - before <= sum(acked) + 2 * batch  # never double-counted
        assert stored - before >= sum(acked) - 2 * (flush_rows + batch)  # at most a window per writer lost
        previous = stored
    assert acknowledged > 0


def test_fleet_merge_equals_one_device(bundle_dir, tmp_path):
    shards = [(0, 5000), (5000, 11000), (11000, 16281)]
    exports = []
    for i, (s, e) in enumerate(shards):
        db = tmp_path / f"d{i}.db"
        subprocess.run(
            [sys.executable, str(WORKER), str(bundle_dir), str(db), str(s), str(e), "500", "200", "--once"],
            check=True,
            capture_output=True,
            cwd=ROOT,
            timeout=120,
        )
        out = tmp_path / f"d{i}.json"
        proc = run_cli("counters", "export", str(db), "-o", str(out), "--raw")
        assert proc.returncode == 0, proc.stderr
        exports.append(str(out))
    single = tmp_path / "all.db"
    subprocess.run(
        [sys.executable, str(WORKER), str(bundle_dir), str(single), "0", "16281", "500", "200", "--once"],
        check=True,
        capture_output=True,
        cwd=ROOT,
        timeout=120,
    )
    merged = tmp_path / "merged.json"
    proc = run_cli("counters", "merge", *reversed(exports), "-o", str(merged))
    assert proc.returncode == 0, proc.stderr
    store = CounterStore(single, ("race", "sex"), tables.DEFAULT_BINS)
    assert tables.from_json(merged.read_text()) == store.load()
    store.close()


def test_private_export_suppresses_and_noises(bundle_dir, adult_test, tmp_path):
    with FairSession(bundle_dir) as fs:
        fs.run(
            features(adult_test, 0, 3000),
            {"race": adult_test.columns["race"][:3000], "sex": adult_test.columns["sex"][:3000]},
        )
        table = fs.table()
    doc = private_export(table, min_cell=11)
    shown = [v for g in doc["groups"] for v in g["counts"] + g["score_hist"] if v is not None]
    assert shown and min(shown) >= 11
    assert any(v is None for g in doc["groups"] for v in g["counts"])  # small cells exist here
    noisy = private_export(table, min_cell=0, epsilon=0.5, seed=1)
    assert noisy["privacy"]["scale"] == 4.0


def test_noise_has_the_stated_scale():
    rng = np.random.default_rng(0)
    scale = 4.0
    draws = discrete_laplace(rng, scale, (200_000,))
    q = np.exp(-1 / scale)
    expected_var = 2 * q / (1 - q) ** 2
    assert abs(draws.mean()) < 0.05
    assert abs(draws.var() / expected_var - 1) < 0.03


def test_ledger_enforces_the_budget(tmp_path):
    store = CounterStore(tmp_path / "l.db", ("g",), 10)
    assert store.spend(0.4, 1.0, "a") == pytest.approx(0.4)
    assert store.spend(0.5, 1.0, "b") == pytest.approx(0.9)
    with pytest.raises(PrivacyBudgetError, match="budget"):
        store.spend(0.2, 1.0, "c")
    assert store.spent() == pytest.approx(0.9)
    store.close()


def test_drift_passes_on_the_baseline_and_fails_on_a_shift(tmp_path):
    rng = np.random.default_rng(0)
    n = 20000
    g = rng.choice(["a", "b"], n)
    y = rng.integers(0, 2, n)
    s = rng.random(n)
    base = tables.from_arrays(
        {"g": g}, (s > 0.5).astype(int), (s > 0.5).astype(int), y, reference_score=s, candidate_score=s
    )
    s2 = rng.random(n)
    same = tables.from_arrays({"g": g}, (s2 > 0.5).astype(int), None, y, reference_score=s2)
    assert drift(same, base)["verdict"] != "fail"
    shifted_scores = np.where(g == "a", np.clip(s2 + 0.3, 0, 1), s2)
    shifted = tables.from_arrays({"g": g}, (shifted_scores > 0.5).astype(int), None, y, reference_score=shifted_scores)
    result = drift(shifted, base)
    assert result["verdict"] == "fail"
    failing = {(r["group"], r["metric"]) for r in result["rows"] if r["verdict"] == "fail"}
    assert ("g=a", "selection_rate") in failing and ("g=b", "selection_rate") not in failing


def test_cli_runtime_errors_are_one_line(tmp_path, bundle_dir):
    assert_one_line_error(run_cli("bundle", "check", str(tmp_path / "nope")), "no such bundle")
    assert_one_line_error(run_cli("counters", "show", str(tmp_path / "nope.db")), "no such counters store")
    proc = run_cli("bundle", "check", str(bundle_dir))
    assert proc.returncode == 0 and "no certificate" in proc.stdout
    assert json.loads(run_cli("bundle", "check", str(bundle_dir), "--json").stdout)["kind"] == "edgefair.bundle"


def test_runtime_input_types_helper_rejects_strings_for_floats(bundle_dir, adult_test):
    with FairSession(bundle_dir) as fs, pytest.raises(InputError, match="dtype"):
        fs.run(
            {**features(adult_test, 0, 1), "age": np.array([["old"]], dtype=object)},
            {"race": ["White"], "sex": ["Male"]},
        )


def test_a_model_that_fails_at_run_time_says_so_once(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """onnxruntime's own error log stays quiet: the failure is one ModelError line."""
    import onnx
    from onnx import TensorProto, helper

    from edgefair.errors import ModelError

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1])
    out = helper.make_tensor_value_info("score", TensorProto.FLOAT, [3])
    shape = helper.make_tensor("shape", TensorProto.INT64, [1], [3])
    graph = helper.make_graph([helper.make_node("Reshape", ["x", "shape"], ["score"])], "g", [x], [out], [shape])
    path = tmp_path / "reshape3.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    with FairSession(path, sensitive=["g"]) as fs:
        fs.run({"x": np.full((3, 1), 0.5, np.float32)}, {"g": ["a"] * 3})
        capfd.readouterr()
        with pytest.raises(ModelError, match="onnxruntime failed"):
            fs.run({"x": np.full((2, 1), 0.5, np.float32)}, {"g": ["a"] * 2})
    assert "onnxruntime" not in capfd.readouterr().err
