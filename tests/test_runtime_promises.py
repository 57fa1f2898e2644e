"""Runtime promises, each checked against an oracle of its own (never the code against itself).

Bundles refuse unlisted files; a failed flush loses nothing; exports carry discrete Laplace
noise of the stated scale and respect the budget; pending outcomes expire; drift exits 1 on a
shift; store errors are one line even as root; the store is in WAL mode; missing and
unexpected sensitive values have their own groups; show and merge are exact.
"""

from __future__ import annotations

import collections
import json
import shutil
import sqlite3
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edgefair.bundling import build_bundle
from edgefair.core import tables
from edgefair.core.tables import CountsTable
from edgefair.data import ADULT_FEATURES
from edgefair.errors import BundleError, StoreError
from edgefair.runtime import CounterStore, FairSession, load_bundle  # wherever they live
from edgefair.runtime.counters import Counters
from edgefair.runtime.privacy import private_export
from tests.conftest import MODELS, assert_one_line_error, run_cli

BINS = tables.DEFAULT_BINS


def features(adult, s=0, e=None):
    return {
        k: adult.columns[k][s:e].reshape(-1, 1).astype(np.float32 if adult.columns[k].dtype.kind == "f" else object)
        for k in ADULT_FEATURES
    }


def sensitive(adult, s=0, e=None):
    return {"race": adult.columns["race"][s:e], "sex": adult.columns["sex"][s:e]}


def stored_cells(db: Path) -> dict[tuple[str, ...], np.ndarray]:
    """Per group, the stored vector (12 count cells, then 3 x bins histogram), read with a
    connection of our own: the oracle does not go through CounterStore."""
    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT grp, cell, value FROM cells").fetchall()
    finally:
        con.close()
    out: dict[tuple[str, ...], np.ndarray] = {}
    for grp, cell, value in rows:
        out.setdefault(tuple(json.loads(grp)), np.zeros(12 + 3 * BINS, np.int64))[cell] = value
    return out


def ledger_total(db: Path) -> tuple[int, float]:
    con = sqlite3.connect(db)
    try:
        n, total = con.execute("SELECT COUNT(*), COALESCE(SUM(epsilon), 0) FROM ledger").fetchone()
    finally:
        con.close()
    return int(n), float(total)


@pytest.fixture(scope="module")
def plain_bundle(tmp_path_factory):
    return build_bundle(
        MODELS / "adult_sklearn.onnx", tmp_path_factory.mktemp("pb") / "bundle", sensitive=["race", "sex"]
    )


@pytest.fixture(scope="module")
def cert_bundle(tmp_path_factory):
    """adult_sklearn bundled with a real, passing certificate (verified against itself)."""
    import edgefair
    from edgefair import report

    where = tmp_path_factory.mktemp("cb")
    result = edgefair.verify(MODELS / "adult_sklearn.onnx", MODELS / "adult_sklearn.onnx", "adult")
    assert result.gate.verdict == "pass"
    cert = where / "cert.json"
    cert.write_text(report.build(result).to_json())
    return build_bundle(MODELS / "adult_sklearn.onnx", where / "bundle", certificate=cert)


# -- 1. bundles refuse files their manifest does not list ----------------------------------


def test_bundle_dir_with_an_unlisted_file_is_refused(plain_bundle, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(plain_bundle, copy)
    load_bundle(copy)  # the untouched copy loads
    (copy / "payload.py").write_text("import os\n")
    with pytest.raises(BundleError, match=r"payload\.py"):
        load_bundle(copy)
    with pytest.raises(BundleError, match=r"payload\.py"):
        FairSession(copy)
    assert_one_line_error(run_cli("bundle", "check", str(copy)), "payload.py")


def test_zip_bundle_with_an_unlisted_file_is_refused(plain_bundle, tmp_path):
    names = sorted(p.name for p in Path(plain_bundle).iterdir())
    good = tmp_path / "good.zip"
    with zipfile.ZipFile(good, "w") as z:
        for n in names:
            z.write(Path(plain_bundle) / n, n)
    assert load_bundle(good).manifest["files"].keys() == {"model.onnx"}
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as z:
        for n in names:
            z.write(Path(plain_bundle) / n, n)
        z.writestr("smuggled.bin", b"\x00" * 10)
    with pytest.raises(BundleError, match=r"smuggled\.bin"):
        load_bundle(bad)
    with pytest.raises(BundleError, match=r"smuggled\.bin"):
        FairSession(bad)


def test_bundle_dir_with_an_unlisted_subdirectory_is_refused(plain_bundle, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(plain_bundle, copy)
    (copy / "plugins").mkdir()
    (copy / "plugins" / "evil.py").write_text("import os\n")
    with pytest.raises(BundleError, match="plugins"):
        load_bundle(copy)


# -- 2. a failed flush is retried whole: no delta lost ------------------------------------


class FailOnce:
    """A sqlite3 connection that raises OperationalError once, at the first statement
    starting with ``when`` (INSERT via executemany, or COMMIT via execute)."""

    def __init__(self, con: sqlite3.Connection, when: str):
        self._con, self._when, self.failed = con, when, 0

    def _maybe_fail(self, sql: str) -> None:
        if not self.failed and sql.lstrip().upper().startswith(self._when):
            self.failed += 1
            raise sqlite3.OperationalError("disk I/O error (injected)")

    def execute(self, sql, *args):
        self._maybe_fail(sql)
        return self._con.execute(sql, *args)

    def executemany(self, sql, rows):
        self._maybe_fail(sql)
        return self._con.executemany(sql, rows)

    def __getattr__(self, name):
        return getattr(self._con, name)


@pytest.mark.parametrize("when", ["INSERT", "COMMIT"])
def test_failed_flush_loses_no_delta(plain_bundle, adult_test, tmp_path, when):
    db = tmp_path / "c.db"
    sent: collections.Counter[tuple[str, str]] = collections.Counter()

    def run(fs, s, e):
        fs.run(features(adult_test, s, e), sensitive(adult_test, s, e))
        sent.update(zip(adult_test.columns["race"][s:e].tolist(), adult_test.columns["sex"][s:e].tolist(), strict=True))

    with FairSession(plain_bundle, store=db, flush_rows=10**9, flush_seconds=0) as fs:
        run(fs, 0, 60)
        fs.flush()
        run(fs, 60, 100)  # this delta meets the failing flush
        real = fs.store._db
        fs.store._db = FailOnce(real, when)
        with pytest.raises(StoreError) as info:
            fs.flush()
        assert fs.store._db.failed == 1
        assert str(db) in str(info.value) and "\n" not in str(info.value)
        fs.store._db = real
        assert not real.in_transaction  # rolled back
        assert sum(v[:12].sum() for v in stored_cells(db).values()) == 60  # nothing of the failed flush
        run(fs, 100, 130)  # inference goes on after a failed flush
        fs.flush()
        stored = stored_cells(db)
        memory = fs.table()
        assert sum(v[:12].sum() for v in stored.values()) == 130
        assert {k: int(v[:12].sum()) for k, v in stored.items()} == dict(sent)
        assert set(stored) == set(memory.groups)
        for i, key in enumerate(memory.groups):
            assert np.array_equal(stored[key][:12], memory.counts[i].reshape(-1)), key
            assert np.array_equal(stored[key][12:], memory.score_hist[i, :, 0, :].reshape(-1)), key
        fs.flush()  # nothing new: nothing added twice
        assert sum(v[:12].sum() for v in stored_cells(db).values()) == 130


def test_failed_last_flush_is_written_by_the_next(plain_bundle, adult_test, tmp_path):
    db = tmp_path / "c.db"
    fs = FairSession(plain_bundle, store=db, flush_rows=10**9, flush_seconds=0)
    fs.run(features(adult_test, 0, 40), sensitive(adult_test, 0, 40))
    real = fs.store._db
    fs.store._db = FailOnce(real, "INSERT")
    with pytest.raises(StoreError):
        fs.flush()
    fs.store._db = real
    fs.close()  # the closing flush, with no new rows, must still write the 40
    assert sum(v[:12].sum() for v in stored_cells(db).values()) == 40


# -- 3. exports carry discrete Laplace noise of scale 2/epsilon; the budget holds ----------


def _flat_table(value: int = 1000, groups: int = 4) -> CountsTable:
    keys = tuple((f"g{i}",) for i in range(groups))
    return CountsTable(
        ("g",),
        keys,
        np.full((groups, 3, 2, 2), value, np.int64),
        np.full((groups, 3, 2, BINS), value, np.int64),
        False,
    )


@pytest.mark.parametrize("epsilon", [0.5, 2.0])
def test_private_export_noise_has_the_discrete_laplace_variance(epsilon):
    value, table = 1000, _flat_table(1000)
    seeds = 250
    noise = []
    for seed in range(seeds):
        doc = private_export(table, min_cell=0, epsilon=epsilon, seed=seed)
        cells = [v for g in doc["groups"] for v in g["counts"] + g["score_hist"]]
        assert None not in cells
        noise.append(np.array(cells, np.int64) - value)
    draws = np.array(noise)  # seeds x cells
    assert draws.shape[1] == 4 * (12 + 3 * BINS)
    assert (draws != 0).any(axis=1).all()  # every export differs from the exact counts somewhere
    scale = 2 / epsilon
    q = np.exp(-1 / scale)
    expected_var = 2 * q / (1 - q) ** 2
    assert abs(draws.mean()) < 0.05 * np.sqrt(expected_var)
    assert abs(draws.var() / expected_var - 1) < 0.05, (draws.var(), expected_var)
    # the shape too, not only the variance: P(0) of a two-sided geometric is (1-q)/(1+q)
    assert abs((draws == 0).mean() - (1 - q) / (1 + q)) < 0.01
    # independent per cell: the same noise everywhere would correlate cells perfectly
    for a, b in [(0, 1), (0, 12), (5, 300), (12, 13)]:
        assert abs(np.corrcoef(draws[:, a], draws[:, b])[0, 1]) < 0.3
    assert private_export(table, min_cell=0, epsilon=epsilon, seed=0)["privacy"]["scale"] == pytest.approx(scale)


def test_private_export_without_epsilon_is_exact_after_suppression():
    table = _flat_table(7, groups=1)
    assert all(v is None for v in private_export(table, min_cell=8)["groups"][0]["counts"])
    assert private_export(table, min_cell=7)["groups"][0]["counts"] == [7] * 12


@pytest.fixture
def field_store(plain_bundle, adult_test, tmp_path):
    db = tmp_path / "field.db"
    with FairSession(plain_bundle, store=db) as fs:
        fs.run(features(adult_test, 0, 3000), sensitive(adult_test, 0, 3000), ids=[f"r{i}" for i in range(3000)])
        fs.record_outcomes([f"r{i}" for i in range(1000)], adult_test.columns["income"][:1000].tolist())
    return db


def test_cli_export_noises_and_enforces_the_budget(field_store, tmp_path):
    exact = stored_cells(field_store)
    out1, out2, out3 = (tmp_path / f"out{i}.json" for i in range(1, 4))
    first = run_cli("counters", "export", str(field_store), "-o", str(out1), "--epsilon", "1", "--budget", "1.5")
    assert first.returncode == 0, first.stderr
    assert ledger_total(field_store) == (1, pytest.approx(1.0))
    doc = json.loads(out1.read_text())
    assert doc["privacy"]["epsilon"] == 1 and doc["privacy"]["scale"] == 2
    differs = 0
    for g in doc["groups"]:
        truth = exact[tuple(g["key"])]
        shown = g["counts"] + g["score_hist"]
        assert len(shown) == len(truth)
        for v, t in zip(shown, truth.tolist(), strict=True):
            assert v is None or v >= 11
            differs += v is not None and v != t
    assert differs > 0  # noise was added

    second = run_cli("counters", "export", str(field_store), "-o", str(out2), "--epsilon", "1", "--budget", "1.5")
    assert_one_line_error(second, "budget")
    assert not out2.exists()
    assert ledger_total(field_store) == (1, pytest.approx(1.0))

    third = run_cli("counters", "export", str(field_store), "-o", str(out3), "--epsilon", "0.5", "--budget", "1.5")
    assert third.returncode == 0, third.stderr  # exactly at the budget is allowed
    assert ledger_total(field_store) == (2, pytest.approx(1.5))


# -- 4. pending outcomes expire after the TTL ---------------------------------------------


def test_expired_ids_are_not_joined():
    c = Counters(["g"], {"g": ["a", "b"]}, ttl_seconds=0.05)
    ids = [f"x{i}" for i in range(20)]
    c.update(c.group_codes({"g": ["a", "b"] * 10}, 20), np.array([0, 1] * 10), None, ids)
    time.sleep(0.2)
    stats = c.record_outcomes(ids, [1] * 20)
    assert stats.joined == 0 and stats.unknown_id == 20
    assert c.outcomes.expired == 20 and c.outcomes.joined == 0
    t = c.table()
    assert t.counts[:, :2].sum() == 0  # labelled cells stay empty
    assert t.counts[:, tables.UNKNOWN_LABEL].sum() == 20


def test_session_joins_fresh_ids_and_expires_old_ones(plain_bundle, adult_test):
    with FairSession(plain_bundle, ttl_seconds=0.3) as fs:
        old = [f"old{i}" for i in range(5)]
        fs.run(features(adult_test, 0, 5), sensitive(adult_test, 0, 5), ids=old)
        time.sleep(0.6)
        new = [f"new{i}" for i in range(5)]
        fs.run(features(adult_test, 5, 10), sensitive(adult_test, 5, 10), ids=new)
        stats = fs.record_outcomes(old + new, [1] * 10)
        assert stats.joined == 5 and stats.unknown_id == 5
        assert fs.counters.outcomes.expired == 5
        t = fs.table()
        assert t.counts[:, 1].sum() == 5 and t.counts[:, 0].sum() == 0
        assert t.counts[:, tables.UNKNOWN_LABEL].sum() == 5


# -- 5. drift exits 1 on a shift, 0 on the baseline ---------------------------------------


def _field_like(baseline: CountsTable, shift_race: str | None = None, moved: float = 0.0) -> CountsTable:
    """An unpaired field table with the baseline's candidate decisions and scores; with
    ``shift_race``, that race's groups have ``moved`` of their negative decisions flipped."""
    cand = baseline.counts.sum(axis=2)  # (G, label, candidate decision)
    counts = np.zeros_like(baseline.counts)
    for d in (0, 1):
        counts[:, :, d, d] = cand[:, :, d]
    if shift_race is not None:
        r = baseline.attributes.index("race")
        for i, key in enumerate(baseline.groups):
            if key[r] == shift_race:
                flip = (counts[i, :, 0, 0] * moved).astype(np.int64)
                counts[i, :, 0, 0] -= flip
                counts[i, :, 1, 1] += flip
    hist = np.repeat(baseline.score_hist[:, :, 1:2, :], 2, axis=2)
    return CountsTable(baseline.attributes, baseline.groups, counts, hist, False)


def test_cli_drift_exit_codes(cert_bundle, tmp_path):
    baseline = load_bundle(cert_bundle).baseline()
    assert baseline is not None and baseline.attributes == ("race", "sex")
    same = tmp_path / "same.json"
    same.write_text(_field_like(baseline).to_json())
    proc = run_cli("counters", "drift", str(same), "--bundle", str(cert_bundle))
    # no drift: PASS (0), or INCONCLUSIVE (3) where small groups cannot be decided; never FAIL
    expected = 3 if proc.stdout.startswith("drift verdict: INCONCLUSIVE") else 0
    assert proc.returncode == expected, (proc.stdout, proc.stderr)
    assert "FAIL" not in proc.stdout

    white = _field_like(baseline, "White", 0.6)
    rows = [i for i, k in enumerate(baseline.groups) if k[baseline.attributes.index("race")] == "White"]

    def white_selection(t: CountsTable) -> float:
        return float(t.counts[rows][:, :, :, 1].sum() / t.counts[rows].sum())

    # the oracle: a large shift in White's selection rate, computed here from the cells
    assert white_selection(white) - white_selection(_field_like(baseline)) > 0.3
    shifted = tmp_path / "shifted.json"
    shifted.write_text(white.to_json())
    proc = run_cli("counters", "drift", str(shifted), "--bundle", str(cert_bundle))
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "FAIL" in proc.stdout.splitlines()[0]
    failing = {tuple(line.split()[1:3]) for line in proc.stdout.splitlines()[1:] if line.split()[0] == "fail"}
    assert ("selection_rate", "race=White:") in failing, proc.stdout
    assert ("selection_rate", "race=Black:") not in failing, proc.stdout


def test_cli_drift_without_a_certificate_is_one_line(plain_bundle, tmp_path):
    field = tmp_path / "f.json"
    field.write_text(tables.empty(("race", "sex")).to_json())
    assert_one_line_error(run_cli("counters", "drift", str(field), "--bundle", str(plain_bundle)), "certificate")


# -- 6. store errors are one line, even as root --------------------------------------------


@pytest.mark.parametrize("where", ["under_a_file", "proc"])
def test_unopenable_store_is_a_one_line_error_as_root(plain_bundle, tmp_path, where):
    if where == "under_a_file":
        blocker = tmp_path / "file"
        blocker.write_text("x")
        path = blocker / "sub" / "c.db"
    else:
        path = Path("/proc/edgefair-no-such-dir/c.db")
    for attempt in (lambda: CounterStore(path, ("race", "sex"), BINS), lambda: FairSession(plain_bundle, store=path)):
        with pytest.raises(StoreError) as info:
            attempt()
        message = str(info.value)
        assert str(path) in message and "cannot open the counters store" in message and "\n" not in message
    assert not path.exists()


def test_cli_show_on_things_that_are_not_stores(tmp_path):
    folder = tmp_path / "folder.db"
    folder.mkdir()
    text = tmp_path / "text.db"
    text.write_text("not sqlite\n")
    empty_sqlite = tmp_path / "other.db"
    sqlite3.connect(empty_sqlite).execute("CREATE TABLE t (x)").connection.close()
    for path in (folder, text, empty_sqlite):
        assert_one_line_error(run_cli("counters", "show", str(path)), str(path), "not an edgefair counters store")


# -- 7. WAL ---------------------------------------------------------------------------------


def test_store_is_in_wal_mode(plain_bundle, adult_test, tmp_path):
    db = tmp_path / "w.db"
    with FairSession(plain_bundle, store=db) as fs:
        fs.run(features(adult_test, 0, 20), sensitive(adult_test, 0, 20))
        fs.flush()
        con = sqlite3.connect(db)
        try:
            assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        finally:
            con.close()
    con = sqlite3.connect(db)
    try:  # WAL is a property of the file: it stays after the session closed
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        con.close()


# -- 8. missing sensitive values -> unknown, unexpected -> other ---------------------------


@pytest.mark.parametrize("rows", [10, 40])  # the small-batch (list) and numpy paths
def test_missing_and_unexpected_sensitive_values(cert_bundle, adult_test, rows):
    with FairSession(cert_bundle) as fs:
        known = fs.describe().sensitive["race"]
        assert "White" in known and "Martian" not in known
        race = adult_test.columns["race"][:rows].tolist()
        n_missing, n_odd = rows // 5, rows // 5
        for i in range(n_missing):
            race[i] = "unknown"  # what the server passes for an attribute a request left out
        for i in range(n_missing, n_missing + n_odd):
            race[i] = ["Martian", "Klingon"][i % 2]
        fs.run(features(adult_test, 0, rows), {"race": race, "sex": adult_test.columns["sex"][:rows]})
        by_race = fs.table().marginal(["race"])
    sizes = dict(zip(by_race.groups, by_race.group_sizes().tolist(), strict=True))
    expected = collections.Counter(
        ("unknown",) if i < n_missing else ("other",) if i < n_missing + n_odd else (v,) for i, v in enumerate(race)
    )
    assert sizes == dict(expected)
    assert ("Martian",) not in sizes and ("Klingon",) not in sizes


def test_a_missing_attribute_in_a_direct_call_is_refused_not_guessed(cert_bundle, adult_test):
    from edgefair.errors import InputError

    with FairSession(cert_bundle) as fs, pytest.raises(InputError, match="sex"):
        fs.run(features(adult_test, 0, 3), {"race": adult_test.columns["race"][:3]})


# -- 9. show and merge on the CLI ------------------------------------------------------------


def _make_store(bundle, adult, db, s, e, labelled):
    with FairSession(bundle, store=db) as fs:
        ids = [f"{s}-{i}" for i in range(s, e)]
        fs.run(features(adult, s, e), sensitive(adult, s, e), ids=ids)
        fs.record_outcomes(ids[:labelled], adult.columns["income"][s : s + labelled].tolist())


def test_cli_show_and_merge_are_exact(plain_bundle, adult_test, tmp_path):
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    _make_store(plain_bundle, adult_test, a, 0, 700, 300)
    _make_store(plain_bundle, adult_test, b, 700, 1200, 100)
    cells_a, cells_b = stored_cells(a), stored_cells(b)

    proc = run_cli("counters", "show", str(a))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "700 predictions, 300 with outcomes, over race, sex"
    white = sum(int(v[:12].sum()) for k, v in cells_a.items() if k[0] == "White")
    white_selected = sum(int(v[[3, 7, 11]].sum()) for k, v in cells_a.items() if k[0] == "White")  # decision 1
    female = sum(int(v[:12].sum()) for k, v in cells_a.items() if k[1] == "Female")
    lines = [line.split() for line in proc.stdout.splitlines()]
    assert ["White", str(white), f"{white_selected / white:.4f}"] in [line[:3] for line in lines], proc.stdout
    assert ["Female", str(female)] in [line[:2] for line in lines], proc.stdout

    proc = run_cli("counters", "show", str(a), "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    shown = {tuple(g["key"]): np.array(g["counts"]) for g in doc["groups"]}
    assert shown.keys() == cells_a.keys()
    for k, v in shown.items():
        assert np.array_equal(v, cells_a[k][:12]), k

    merged = tmp_path / "m.json"
    proc = run_cli("counters", "merge", str(a), str(b), "-o", str(merged))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(merged.read_text())
    got = {tuple(g["key"]): g for g in doc["groups"]}
    want_keys = set(cells_a) | set(cells_b)
    assert set(got) == want_keys
    zero = np.zeros(12 + 3 * BINS, np.int64)
    for k in want_keys:
        total = cells_a.get(k, zero) + cells_b.get(k, zero)
        assert np.array_equal(np.array(got[k]["counts"]), total[:12]), k
        hist = np.array(got[k]["score_hist"]).reshape(3, 2, BINS)[:, 0, :].reshape(-1)
        assert np.array_equal(hist, total[12:]), k
    assert sum(sum(g["counts"]) for g in doc["groups"]) == 1200

    before = a.read_bytes()
    assert_one_line_error(run_cli("counters", "merge", str(a), str(b), "-o", str(a)), "is one of the inputs")
    (tmp_path / "x").mkdir()
    spelled = tmp_path / "x" / ".." / "b.db"  # the same file, spelled another way
    assert_one_line_error(run_cli("counters", "merge", str(a), str(b), "-o", str(spelled)), "is one of the inputs")
    assert a.read_bytes() == before
    assert {k: v.tolist() for k, v in stored_cells(b).items()} == {k: v.tolist() for k, v in cells_b.items()}
