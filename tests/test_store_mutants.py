"""The counters store, in process: cell layout, meta and row checks, failing flushes, the
privacy ledger. Oracles: the raw SQLite rows read with a separate connection and cell
numbers worked out by hand from the rows counted; failures are real SQLite failures
(a trigger that aborts, a second writer holding the lock), not mocks."""

from __future__ import annotations

import json
import math
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from edgefair.core import tables
from edgefair.core.tables import MAX_COUNT
from edgefair.errors import PrivacyBudgetError, StoreError
from edgefair.runtime import store as st
from edgefair.runtime.store import CounterStore, check_budget, load_counters, open_store

BINS = 4
ATTRS = ("g", "h")


def table(rows: list[tuple[str, str, int, int, float]]) -> tables.CountsTable:
    """rows: (g, h, label, decision, score); unpaired, as a session counts."""
    g, h, y, d, s = zip(*rows, strict=True)
    return tables.from_arrays(
        {"g": np.array(g), "h": np.array(h)}, np.array(d), None, np.array(y), reference_score=np.array(s), bins=BINS
    )


ROWS = [("a", "x", 1, 1, 0.9), ("a", "x", 0, 1, 0.6), ("a", "x", 0, 0, 0.1), ("b", "y", 1, 0, 0.3)]


def raw(path: Path) -> dict[tuple[str, int], int]:
    con = sqlite3.connect(path)
    try:
        return {(g, c): v for g, c, v in con.execute("SELECT grp, cell, value FROM cells")}
    finally:
        con.close()


def sql(path: Path, *statements: str) -> None:
    con = sqlite3.connect(path, isolation_level=None)
    try:
        for s in statements:
            con.execute(s)
    finally:
        con.close()


def test_flush_writes_the_hand_worked_cells_and_counts_changes(tmp_path):
    db = tmp_path / "c.db"
    s = CounterStore(db, ATTRS, BINS)
    assert s.flush(tables.empty(ATTRS, BINS)) == 0 and raw(db) == {}
    assert s.flush(table(ROWS)) == 8
    # cell = label*4 + ref*2 + cand (unpaired: cand = ref); histogram at 12 + label*bins + bin
    a, b = '["a", "x"]', '["b", "y"]'
    want = {(a, 7): 1, (a, 3): 1, (a, 0): 1, (a, 12 + 4 + 3): 1, (a, 12 + 2): 1, (a, 12 + 0): 1}
    want |= {(b, 4): 1, (b, 12 + 4 + 1): 1}
    assert raw(db) == want
    assert s.flush(table(ROWS)) == 0  # nothing new since the last flush
    more = table([*ROWS, ("a", "x", 1, 1, 0.95)])
    before = s.last_flush
    assert s.flush(more) == 2 and s.last_flush >= before
    want[(a, 7)] = 2
    want[(a, 12 + 4 + 3)] = 2
    assert raw(db) == want and s.flushed == more
    s.close()
    again = CounterStore(db, ATTRS, BINS)
    assert again.flushed == more and again.load() == more
    assert again.integrity_check() == "ok"
    again.close()


def test_load_sorts_groups_and_resumes_all_cells(tmp_path):
    db = tmp_path / "c.db"
    s = CounterStore(db, ATTRS, BINS)
    sql(db, """INSERT INTO cells VALUES ('["z", "q"]', 1, 5), ('["b", "c"]', 15, 2), ('["b", "c"]', 0, 3)""")
    t = s.load()
    assert t.groups == (("b", "c"), ("z", "q")) and t.attributes == ATTRS and not t.paired
    assert t.counts.dtype == np.int64 and t.counts[0].reshape(-1).tolist() == [3] + [0] * 11
    assert t.counts[1].reshape(-1).tolist() == [0, 5] + [0] * 10
    assert t.score_hist.shape == (2, 3, 2, BINS)
    assert t.score_hist[0, 0, 0].tolist() == [0, 0, 0, 2] and t.score_hist[0, 0, 1].tolist() == [0, 0, 0, 2]
    assert t.score_hist[1].sum() == 0
    s.close()


@pytest.mark.parametrize(
    ("grp", "cell", "value", "fragment"),
    [
        ("'not json'", "0", "1", "bad group 'not json'"),
        ("'[\"a\"]'", "0", "1", "bad group '[\"a\"]'"),
        ("'[\"a\", 1]'", "0", "1", "bad group"),
        ("'{\"a\": 1}'", "0", "1", "bad group"),
        ("x'00'", "0", "1", "bad group"),
        ("7", "0", "1", "bad group"),
        ("'" + "[" * 5000 + "'", "0", "1", "bad group '" + "[" * 60 + "'"),
        ('\'["a", "b"]\'', "-1", "1", "bad cell (-1, 1); expected a cell in [0, 24)"),
        ('\'["a", "b"]\'', "24", "1", "bad cell (24, 1)"),
        ('\'["a", "b"]\'', "1.5", "1", "bad cell (1.5, 1)"),
        ('\'["a", "b"]\'', "0", "-1", "group ['a', 'b'] has a bad cell (0, -1)"),
        ('\'["a", "b"]\'', "0", str(MAX_COUNT + 1), f"bad cell (0, {MAX_COUNT + 1})"),
        ('\'["a", "b"]\'', "0", "2.5", "bad cell (0, 2.5)"),
        ('\'["a", "b"]\'', "0", "'x'", "bad cell (0, 'x')"),
    ],
)
def test_load_refuses_each_bad_row(tmp_path, grp, cell, value, fragment):
    db = tmp_path / "c.db"
    CounterStore(db, ATTRS, BINS).close()
    sql(db, f"INSERT INTO cells VALUES ({grp}, {cell}, {value})")
    with pytest.raises(StoreError) as info:
        CounterStore(db, ATTRS, BINS)
    assert str(info.value).startswith(f"{db}: counters store ") and fragment in str(info.value), str(info.value)


def test_load_accepts_the_edges(tmp_path):
    db = tmp_path / "c.db"
    CounterStore(db, ATTRS, BINS).close()
    sql(db, f"""INSERT INTO cells VALUES ('["a", "b"]', 23, {MAX_COUNT}), ('["a", "b"]', 0, 0)""")
    s = CounterStore(db, ATTRS, BINS)
    assert s.flushed.score_hist[0, 2, 0, 3] == MAX_COUNT and s.flushed.counts.sum() == 0
    s.close()


def test_a_new_store_records_its_meta_and_settings(tmp_path):
    db = tmp_path / "sub" / "dir" / "c.db"  # missing folders are made
    s = CounterStore(db, ATTRS, BINS)
    con = sqlite3.connect(db)
    meta = dict(con.execute("SELECT key, value FROM meta"))
    assert meta == {"attributes": '["g", "h"]', "bins": "4", "schema": "1"}
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()
    assert s._db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert not s._db.in_transaction and s.budget() is None and s.spent() == 0.0
    s.close()
    same = CounterStore(db, ATTRS, BINS)  # reopening checks, and writes nothing
    same.close()
    with pytest.raises(StoreError) as info:
        CounterStore(db, ("g",), BINS)
    assert str(info.value) == f"{db}: store was made for attributes ['g', 'h'], not ['g']"
    with pytest.raises(StoreError) as info:
        CounterStore(db, ATTRS, 5)
    assert str(info.value) == f"{db}: store was made for 4 score bins, not 5"


@pytest.mark.parametrize("name", ["a?b.db", "a#b.db", "a%41b.db", "a b.db"])
def test_the_store_is_exactly_the_named_file(tmp_path, name):
    s = CounterStore(tmp_path / name, ATTRS, BINS)
    s.flush(table(ROWS))
    s.close()
    assert {p.name for p in tmp_path.iterdir()} <= {name, name + "-wal", name + "-shm"}
    assert name in {p.name for p in tmp_path.iterdir()}
    assert load_counters(tmp_path / name) == table(ROWS)


META = {"attributes": '["g", "h"]', "bins": "4", "schema": "1"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"attributes": None}, "not an edgefair counters store (meta has no 'attributes')"),
        ({"bins": None}, "not an edgefair counters store (meta has no 'bins')"),
        ({"schema": None}, "not an edgefair counters store (meta has no 'schema')"),
        ({"schema": "2"}, "counters store schema '2', expected '1'"),
        ({"attributes": "[1"}, "counters store meta 'attributes' is '[1', expected a JSON list of names"),
        ({"attributes": '"g"'}, "meta 'attributes' is '\"g\"'"),
        ({"attributes": '["g", ""]'}, "meta 'attributes' is '[\"g\", \"\"]'"),
        ({"attributes": '["g", 2]'}, "meta 'attributes' is '[\"g\", 2]'"),
        ({"attributes": "[" * 100}, f"meta 'attributes' is '{'[' * 60}', expected"),
        ({"bins": "0"}, "counters store meta 'bins' is '0', expected an integer in [1, 100000]"),
        ({"bins": "100001"}, "meta 'bins' is '100001'"),
        ({"bins": "-3"}, "meta 'bins' is '-3'"),
        ({"bins": "\u00b2"}, "meta 'bins' is '\u00b2'"),
        ({"bins": "\u0664"}, "meta 'bins' is '\u0664'"),
        ({"bins": "9" * 80}, f"meta 'bins' is '{'9' * 60}', expected"),
    ],
)
def test_meta_values_name_the_bad_field(tmp_path, change, message):
    meta = {k: v for k, v in (META | change).items() if v is not None}
    with pytest.raises(StoreError) as info:
        st._meta_values(tmp_path, meta)
    assert str(info.value).startswith(f"{tmp_path}: ") and message in str(info.value), str(info.value)


def test_meta_values_accept_the_edges(tmp_path):
    assert st._meta_values(tmp_path, META) == (("g", "h"), 4)
    assert st._meta_values(tmp_path, META | {"bins": "1"}) == (("g", "h"), 1)
    assert st._meta_values(tmp_path, META | {"bins": "100000", "attributes": '["x"]'}) == (("x",), 100000)


def test_open_store_reads_what_was_written_and_refuses_non_stores(tmp_path):
    db = tmp_path / "c.db"
    s = CounterStore(db, ATTRS, BINS)
    s.flush(table(ROWS))
    s.close()
    store, t = open_store(db)
    assert store.attributes == ATTRS and store.bins == BINS and not store.read_only and t == table(ROWS)
    store.close()
    ro, t = open_store(db, read_only=True)
    assert ro.read_only and t == table(ROWS)
    with pytest.raises(StoreError) as info:
        ro.flush(table(ROWS + ROWS))
    assert str(info.value).startswith(f"{db}: flush failed (") and not ro._db.in_transaction
    ro.close()
    assert load_counters(db) == table(ROWS)
    missing = tmp_path / "none.db"
    for fn in (open_store, load_counters):
        with pytest.raises(StoreError) as info:
            fn(missing)
        assert str(info.value) == f"{missing}: no such counters store"
    assert not missing.exists()
    with pytest.raises(StoreError) as info:
        open_store(tmp_path)
    assert str(info.value) == f"{tmp_path}: not an edgefair counters store (a folder)"
    text = tmp_path / "t.db"
    text.write_text("not sqlite at all, not at all\n" * 10)
    with pytest.raises(StoreError) as info:
        open_store(text)
    assert str(info.value).startswith(f"{text}: not an edgefair counters store (") and "\n" not in str(info.value)
    other = tmp_path / "o.db"
    sql(other, "CREATE TABLE meta (key TEXT, value TEXT)")
    with pytest.raises(StoreError) as info:
        open_store(other)
    assert str(info.value) == f"{other}: not an edgefair counters store (no metadata)"
    assert {p.name for p in tmp_path.iterdir()} >= {"c.db", "t.db", "o.db"}
    assert not (tmp_path / "o.db-wal").exists()  # read only: not converted to WAL


def test_read_only_open_of_a_missing_file_creates_nothing(tmp_path):
    path = tmp_path / "nothing.db"
    with pytest.raises(StoreError) as info:
        CounterStore(path, ATTRS, BINS, read_only=True)
    assert str(info.value).startswith(f"{path}: cannot open the counters store (") and not path.exists()


def test_read_only_open_of_a_store_without_meta_writes_none(tmp_path):
    db = tmp_path / "c.db"
    sql(db, *[s for s in st.SCHEMA.split(";") if s.strip()])
    with pytest.raises(StoreError) as info:
        CounterStore(db, ATTRS, BINS, read_only=True)
    assert "meta has no 'attributes'" in str(info.value)
    con = sqlite3.connect(db)
    assert con.execute("SELECT COUNT(*) FROM meta").fetchone()[0] == 0
    con.close()


def test_load_counters_of_json_files(tmp_path):
    good = tmp_path / "t.json"
    good.write_text(table(ROWS).to_json(), encoding="utf-8")
    assert load_counters(good) == table(ROWS)
    missing = tmp_path / "none.json"
    with pytest.raises(StoreError) as info:
        load_counters(missing)
    assert str(info.value) == f"{missing}: no such file"
    bad = tmp_path / "bad.json"
    bad.write_text("{}", encoding="utf-8")
    with pytest.raises(StoreError) as info:
        load_counters(bad)
    assert str(info.value).startswith(f"{bad}: ") and len(str(info.value)) > len(f"{bad}: ") + 5
    binary = tmp_path / "bin.json"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(StoreError) as info:
        load_counters(binary)
    assert str(info.value).startswith(f"{binary}: cannot read (")
    folder = tmp_path / "f.json"
    folder.mkdir()
    with pytest.raises(StoreError) as info:
        load_counters(folder)
    assert str(info.value).startswith(f"{folder}: cannot read (")


def test_a_failing_flush_leaves_the_snapshot_and_is_retried_whole(tmp_path):
    db = tmp_path / "c.db"
    s = CounterStore(db, ATTRS, BINS)
    first = table(ROWS[:2])
    s.flush(first)
    stored = raw(db)
    sql(db, "CREATE TRIGGER boom BEFORE INSERT ON cells BEGIN SELECT RAISE(ABORT, 'planted failure'); END")
    second = table(ROWS)
    with pytest.raises(StoreError) as info:
        s.flush(second)
    assert str(info.value) == f"{db}: flush failed (planted failure)"
    assert not s._db.in_transaction and s.flushed == first and raw(db) == stored
    sql(db, "DROP TRIGGER boom")
    assert s.flush(second) == 4  # the whole delta of the failed flush: group b (2 cells), a's 0-0 cell and bin
    s.close()
    assert load_counters(db) == second


def test_a_locked_store_fails_the_flush_without_advancing(tmp_path):
    db = tmp_path / "c.db"
    s = CounterStore(db, ATTRS, BINS)
    s._db.execute("PRAGMA busy_timeout = 0")  # fail at once instead of waiting 5 s
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    with pytest.raises(StoreError) as info:
        s.flush(table(ROWS))
    assert str(info.value) == f"{db}: flush failed (database is locked)" and s.flushed.rows == 0
    other.execute("ROLLBACK")
    other.close()
    assert s.flush(table(ROWS)) == 8 and s.flushed == table(ROWS)
    s.close()


def test_a_budget_is_set_lowered_never_raised(tmp_path):
    db = tmp_path / "c.db"
    s = CounterStore(db, ATTRS, BINS)
    assert s.set_budget(2) == 2.0 and isinstance(s.set_budget(2), float) and s.budget() == 2.0
    assert s.set_budget(1.5) == 1.5 and s.budget() == 1.5
    with pytest.raises(PrivacyBudgetError) as info:
        s.set_budget(1.75)
    assert (
        str(info.value)
        == f"{db}: the store's privacy budget is 1.5 epsilon; it can only be lowered, not raised to 1.75"
    )
    assert s.budget() == 1.5 and not s._db.in_transaction
    s.set_budget(1.5)  # the same: allowed
    con = sqlite3.connect(db)
    assert con.execute("SELECT value FROM meta WHERE key = 'budget'").fetchone()[0] == "1.5"
    con.close()
    for bad in (0, -1, math.inf, math.nan):
        with pytest.raises(PrivacyBudgetError) as info:
            s.set_budget(bad)
        assert str(info.value) == f"budget (--budget) must be a positive, finite total epsilon, got {bad}"
    check_budget(1e-9)
    s.close()


def test_a_failing_budget_write_is_rolled_back(tmp_path):
    db = tmp_path / "c.db"
    s = CounterStore(db, ATTRS, BINS)
    sql(db, "CREATE TRIGGER boom BEFORE INSERT ON meta BEGIN SELECT RAISE(ABORT, 'no'); END")
    with pytest.raises(sqlite3.Error):
        s.set_budget(1.0)
    assert not s._db.in_transaction and s.budget() is None
    sql(db, "DROP TRIGGER boom")
    assert s.set_budget(1.0) == 1.0
    s.close()


def ledger(db: Path) -> list[tuple[float, float, str]]:
    con = sqlite3.connect(db)
    try:
        return list(con.execute("SELECT at, epsilon, note FROM ledger ORDER BY id"))
    finally:
        con.close()


def test_spend_charges_the_ledger_up_to_the_budget(tmp_path):
    db = tmp_path / "c.db"
    s = CounterStore(db, ATTRS, BINS)
    with pytest.raises(PrivacyBudgetError) as info:
        s.spend(0.5, None, "first")
    assert str(info.value).startswith(f"{db}: the store has no privacy budget; set one (counters export --budget B")
    assert ledger(db) == [] and not s._db.in_transaction
    t0 = time.time()
    assert s.spend(0.5, 1.0, "first") == 0.5
    assert s.budget() == 1.0
    calls: list[int] = []
    assert s.spend(0.25, None, "second", release=lambda: calls.append(1)) == 0.75 and calls == [1]
    rows = ledger(db)
    assert [(e, n) for _, e, n in rows] == [(0.5, "first"), (0.25, "second")]
    assert all(t0 - 1 <= at <= time.time() + 1 for at, _, _ in rows)
    assert s.spent() == 0.75
    with pytest.raises(PrivacyBudgetError) as info:
        s.spend(0.3, None, "third", release=lambda: calls.append(2))
    assert str(info.value) == f"{db}: exporting with epsilon 0.3 would spend 1.05 of the store's budget of 1"
    assert calls == [1] and s.spent() == 0.75 and not s._db.in_transaction
    assert s.spend(0.25, None, "exact") == 1.0  # exactly up to the budget is allowed
    with pytest.raises(PrivacyBudgetError):
        s.spend(1e-9, None, "over")
    with pytest.raises(PrivacyBudgetError) as info:
        s.spend(0.1, 5.0, "raise")  # the budget cannot be lifted through spend either
    assert "can only be lowered" in str(info.value)
    s.close()


def test_spend_tolerates_float_rounding_only(tmp_path):
    db = tmp_path / "c.db"
    s = CounterStore(db, ATTRS, BINS)
    s.set_budget(0.3)
    for _ in range(3):
        s.spend(0.1, None, "tenth")  # 0.1 + 0.1 + 0.1 = 0.30000000000000004 > 0.3
    assert s.spent() == pytest.approx(0.3)
    s.close()
    s = CounterStore(tmp_path / "d.db", ATTRS, BINS)
    s.set_budget(1.0)
    with pytest.raises(PrivacyBudgetError):
        s.spend(1.0 + 1e-9, None, "over by 1e-9")
    s.close()


@pytest.mark.parametrize("epsilon", [0.0, -0.5, math.inf, math.nan])
def test_spend_refuses_a_bad_epsilon(tmp_path, epsilon):
    s = CounterStore(tmp_path / "c.db", ATTRS, BINS)
    with pytest.raises(PrivacyBudgetError) as info:
        s.spend(epsilon, 1.0, "x")
    assert str(info.value) == f"epsilon must be a positive, finite number, got {epsilon}"
    assert s.budget() is None  # refused before the budget was touched
    s.close()


def test_a_failing_release_charges_nothing(tmp_path):
    db = tmp_path / "c.db"
    s = CounterStore(db, ATTRS, BINS)

    def release() -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        s.spend(0.5, 1.0, "x", release=release)
    assert ledger(db) == [] and not s._db.in_transaction and s.spend(1.0, None, "all") == 1.0
    s.close()


@pytest.mark.parametrize("value", ["0", "-1", "inf", "nan", "abc", "x" * 100])
def test_a_bad_stored_budget_is_refused_at_open(tmp_path, value):
    db = tmp_path / "c.db"
    CounterStore(db, ATTRS, BINS).close()
    sql(db, f"INSERT INTO meta VALUES ('budget', '{value}')")
    with pytest.raises(StoreError) as info:
        CounterStore(db, ATTRS, BINS)
    want = f"{db}: counters store meta 'budget' is {value[:60]!r}, expected a number > 0"
    assert str(info.value) == want


def test_a_null_stored_budget_is_refused(tmp_path):
    db = tmp_path / "c.db"
    s = CounterStore(db, ATTRS, BINS)
    s._db.execute("CREATE TABLE m2 AS SELECT * FROM meta")  # meta's value is NOT NULL: use a looser copy
    s._db.execute("DROP TABLE meta")
    s._db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
    s._db.execute("INSERT INTO meta SELECT * FROM m2")
    s._db.execute("INSERT INTO meta VALUES ('budget', NULL)")
    with pytest.raises(StoreError) as info:
        s.budget()
    assert str(info.value) == f"{db}: counters store meta 'budget' is 'None', expected a number > 0"
    s.close()


@pytest.fixture
def public(tmp_path):
    """A folder another user can reach (pytest's tmp_path is under a 0700 folder)."""
    import shutil
    import tempfile

    where = Path(tempfile.mkdtemp(prefix="edgefair-store-"))
    os.chmod(where, 0o755)
    yield where
    for p in where.rglob("*"):
        if p.is_dir():
            os.chmod(p, 0o755)
    shutil.rmtree(where)


def as_nobody(fn: Callable[[], object]) -> object:
    """``fn()`` in a forked child that dropped root to nobody; its JSON result (or its error)."""
    if os.getuid() != 0:
        pytest.skip("needs root to drop to another user")  # pragma: no cover
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        code = 1
        try:
            os.setgid(65534)
            os.setuid(65534)
            try:
                out: object = {"ok": fn()}
            except Exception as exc:  # reported to the parent, which asserts on it
                out = {"error": f"{type(exc).__name__}: {exc}"}
            os.write(write, json.dumps(out).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    got = json.loads(os.read(read, 1 << 16) or b"{}")
    os.close(read)
    assert status == 0, got
    return got


def made(folder: Path, wal: bytes | None = None, file_mode: int = 0o444, folder_mode: int = 0o555) -> Path:
    """A store with ROWS in ``folder`` as a crash or a copy might leave it: no -shm, an optional -wal."""
    db = folder / "c.db"
    s = CounterStore(db, ATTRS, BINS)
    s.flush(table(ROWS))
    s.close()
    con = st._connect_read_only(db)  # in process too (as root: an ordinary read-only connection)
    assert con.execute("SELECT COUNT(*) FROM cells").fetchone()[0] == 8
    con.close()
    for p in (folder / "c.db-wal", folder / "c.db-shm"):
        p.unlink(missing_ok=True)
    if wal is not None:
        (folder / "c.db-wal").write_bytes(wal)
    os.chmod(db, file_mode)
    os.chmod(folder, folder_mode)
    return db


HINT = "; the store or its folder is read-only: it can only be read (counters show, export --raw)"


def writer_error(db: Path) -> str:
    try:
        CounterStore(db, ATTRS, BINS).close()
    except StoreError as exc:
        return str(exc)
    return "opened"


def test_unwritable_stores_as_another_user(public):
    """Dropping root: a store in a folder nobody may write is read as immutable; a writer is
    refused with the read-only hint whether the file, the folder or both are unwritable."""
    both = made(public / "both")
    folder_only = made(public / "folder", file_mode=0o666)
    file_only = made(public / "file", folder_mode=0o777)
    empty_log = made(public / "empty", wal=b"")
    got = as_nobody(
        lambda: (
            [load_counters(both) == table(ROWS), load_counters(empty_log) == table(ROWS)]
            + [writer_error(p) for p in (both, folder_only, file_only)]
        )
    )
    assert got["ok"][:2] == [True, True], got
    for db, message in zip((both, folder_only, file_only), got["ok"][2:], strict=True):
        assert message.startswith(f"{db}: cannot open the counters store (") and message.endswith(HINT), message


@pytest.mark.parametrize("wal", [b"x", None])
def test_a_write_ahead_log_with_content_in_an_unwritable_folder_is_refused(public, wal):
    folder = public / "ro"
    db = folder / "c.db"
    if wal is None:  # a real log, left by a writer that did not checkpoint
        s = CounterStore(db, ATTRS, BINS)
        s._db.execute("PRAGMA wal_autocheckpoint = 0")
        s.flush(table(ROWS))
        keep = sqlite3.connect(db)  # a second connection keeps the -wal when the store closes
        keep.execute("SELECT 1 FROM cells").fetchall()
        s.close()
        assert (folder / "c.db-wal").stat().st_size > 0
        saved = {p.name: p.read_bytes() for p in folder.iterdir()}
        keep.close()
        for name, data in saved.items():  # the folder as a crash left it: a log with content
            (folder / name).write_bytes(data)
        (folder / "c.db-shm").unlink(missing_ok=True)
        st._connect_read_only(db).close()  # in process (as root it opens)
        (folder / "c.db-shm").unlink(missing_ok=True)
        os.chmod(folder, 0o555)
    else:
        made(folder, wal=wal)

    def attempt() -> str:
        try:
            st._connect_read_only(db).close()
        except sqlite3.OperationalError as exc:
            return f"refused: {exc}"
        return "opened"

    got = as_nobody(attempt)
    assert str(got["ok"]).startswith("refused: "), got


def test_a_file_that_is_not_a_store_is_refused_without_the_read_only_hint(tmp_path):
    text = tmp_path / "t.db"
    text.write_bytes(b"not sqlite at all, not at all\n" * 10)
    with pytest.raises(StoreError) as info:
        CounterStore(text, ATTRS, BINS)
    assert str(info.value) == f"{text}: cannot open the counters store (file is not a database)"


def test_a_store_under_a_file_is_refused_by_its_os_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError) as info:
        CounterStore(blocker / "sub" / "c.db", ATTRS, BINS)
    assert str(info.value) == f"{blocker / 'sub' / 'c.db'}: cannot open the counters store (Not a directory)"


def test_the_histogram_stored_is_the_reference_model_s(tmp_path):
    db = tmp_path / "c.db"
    t = tables.from_arrays(
        {"g": np.array(["a", "a"]), "h": np.array(["x", "x"])},
        np.array([1, 0]),
        np.array([1, 1]),
        np.array([1, 0]),
        reference_score=np.array([0.9, 0.1]),
        candidate_score=np.array([0.3, 0.6]),
        bins=BINS,
    )
    s = CounterStore(db, ATTRS, BINS)
    s.flush(t)
    s.close()
    hist = {c - 12: v for (_, c), v in raw(db).items() if c >= 12}
    assert hist == {4 + 3: 1, 0 + 0: 1}  # reference bins: label 1 at 0.9 -> bin 3, label 0 at 0.1 -> bin 0


def test_a_store_is_usable_from_another_thread(tmp_path):
    import threading

    s = CounterStore(tmp_path / "c.db", ATTRS, BINS)
    assert isinstance(s.last_flush, float) and s.last_flush <= time.monotonic()
    errors: list[BaseException] = []

    def work() -> None:
        try:
            s.flush(table(ROWS))
        except BaseException as exc:  # reported below
            errors.append(exc)

    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    assert errors == [] and load_counters(tmp_path / "c.db") == table(ROWS)
    s.close()


def test_large_counts_are_read_exactly(tmp_path):
    db = tmp_path / "c.db"
    CounterStore(db, ATTRS, BINS).close()
    big = MAX_COUNT - 1  # not representable in float64
    sql(db, f"""INSERT INTO cells VALUES ('["a", "b"]', 5, {big}), ('["a", "b"]', 13, {2**53 + 1})""")
    t = load_counters(db)
    assert int(t.counts[0].reshape(-1)[5]) == big and int(t.score_hist[0, 0, 0, 1]) == 2**53 + 1


def test_an_empty_store_loads_integer_arrays(tmp_path):
    s = CounterStore(tmp_path / "c.db", ATTRS, BINS)
    t = s.load()
    assert t.counts.dtype == np.int64 and t.score_hist.dtype == np.int64
    assert t.counts.shape == (0, 3, 2, 2) and t.score_hist.shape == (0, 3, 2, BINS) and t.groups == ()
    s.close()


def test_a_blob_group_is_refused(tmp_path):
    db = tmp_path / "c.db"
    CounterStore(db, ATTRS, BINS).close()
    sql(db, """INSERT INTO cells VALUES (CAST('["a", "b"]' AS BLOB), 0, 1)""")
    with pytest.raises(StoreError) as info:
        CounterStore(db, ATTRS, BINS)
    assert "has a bad group" in str(info.value)


def test_bad_meta_is_named_with_the_path_by_every_opener(tmp_path):
    db = tmp_path / "c.db"
    CounterStore(db, ATTRS, BINS).close()
    sql(db, "UPDATE meta SET value = '2' WHERE key = 'schema'")
    message = f"{db}: counters store schema '2', expected '1'"
    for attempt in (lambda: CounterStore(db, ATTRS, BINS), lambda: open_store(db), lambda: load_counters(db)):
        with pytest.raises(StoreError) as info:
            attempt()
        assert str(info.value) == message


def test_reading_does_not_wait_for_a_writer(tmp_path):
    db = tmp_path / "c.db"
    s = CounterStore(db, ATTRS, BINS)
    s.flush(table(ROWS))
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # a writer holds the lock: readers still read (WAL)
    try:
        assert load_counters(db) == table(ROWS)
    finally:
        other.execute("ROLLBACK")
        other.close()
        s.close()


def test_spend_exactly_at_the_rounding_allowance(tmp_path):
    s = CounterStore(tmp_path / "c.db", ATTRS, BINS)
    s.set_budget(1.0)
    assert s.spend(1.0 + 1e-12, None, "at the allowance") == 1.0 + 1e-12
    s.close()


def test_spend_without_a_budget_names_how_to_set_one(tmp_path):
    db = tmp_path / "c.db"
    s = CounterStore(db, ATTRS, BINS)
    with pytest.raises(PrivacyBudgetError) as info:
        s.spend(0.5, None, "first")
    assert str(info.value) == (
        f"{db}: the store has no privacy budget; set one (counters export --budget B, "
        "the total epsilon every export together may spend) before exporting with epsilon"
    )
    s.close()


def test_json_counters_are_read_as_utf8_whatever_the_locale(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "t.json"
    t = tables.from_arrays({"g": np.array(["caf\u00e9", "na\u00efve"])}, np.array([1, 0]))
    path.write_text(json.dumps(t.to_dict(), ensure_ascii=False), encoding="utf-8")  # raw UTF-8 bytes, not escapes
    assert "caf\u00e9".encode() in path.read_bytes()
    assert load_counters(path) == t  # in process, and under an ASCII locale:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LC_", "LANG"))}
    env |= {"LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)  # the same edgefair as this process imports
    code = f"from edgefair.runtime.store import load_counters; print(ascii(load_counters({str(path)!r}).groups))"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "(('caf\\xe9',), ('na\\xefve',))"
