"""A SQLite (WAL) store for counters: deltas flushed in one transaction, totals resumed.

A crash loses at most the rows since the last flush and never double-counts: each flush
adds exactly the difference between the in-memory table and what was last committed, in
one transaction, and that snapshot only advances after the commit. The store also keeps
the privacy ledger (epsilon spent per export).
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import numpy as np

from edgefair.core import tables
from edgefair.core.tables import CELLS_PER_GROUP, MAX_COUNT, CountsTable
from edgefair.errors import InputError, PrivacyBudgetError, StoreError

SCHEMA_VERSION = "1"
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cells (grp TEXT NOT NULL, cell INTEGER NOT NULL, value INTEGER NOT NULL,
                                  PRIMARY KEY (grp, cell)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ledger (id INTEGER PRIMARY KEY, at REAL NOT NULL, epsilon REAL NOT NULL,
                                   note TEXT NOT NULL);
"""


def _cells(table: CountsTable) -> dict[tuple[str, ...], np.ndarray]:
    """Per group: the 12 count cells then the score histogram of model 0 (3 x bins), as
    stored (cell numbers are positions in this vector)."""
    return {
        k: np.concatenate([table.counts[i].reshape(-1), table.score_hist[i, :, 0, :].reshape(-1)])
        for i, k in enumerate(table.groups)
    }


MAX_BINS = 100_000


def _connect(path: Path, mode: str) -> sqlite3.Connection:
    """A connection to exactly ``path``: a URI with the path percent-quoted, so a '?', '#' or
    '%' in a file name is part of the name, never a query or an escape (no stray files)."""
    uri = f"file:{quote(str(path.absolute()))}?mode={mode}"
    return sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)


def _connect_read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection. A WAL store in a folder nobody may write (a read-only file
    system) cannot get its shared-memory file, so it is read as immutable, unless a
    write-ahead log with content is beside it (that would be ignored: refused instead)."""
    db = _connect(path, "ro")
    try:
        db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        return db
    except sqlite3.OperationalError:
        db.close()
        wal = path.with_name(path.name + "-wal")
        if (wal.exists() and wal.stat().st_size > 0) or os.access(path.parent, os.W_OK):
            raise
    return _connect(path, "ro&immutable=1")


def _meta_values(path: Path, meta: dict[str, str]) -> tuple[tuple[str, ...], int]:
    """The attributes and bins a store's meta table records, each value checked."""
    for key in ("attributes", "bins", "schema"):
        if key not in meta:
            raise StoreError(f"{path}: not an edgefair counters store (meta has no {key!r})")
    if meta["schema"] != SCHEMA_VERSION:
        raise StoreError(f"{path}: counters store schema {meta['schema']!r}, expected {SCHEMA_VERSION!r}")
    try:
        attributes = json.loads(meta["attributes"])
    except (ValueError, RecursionError):
        attributes = None
    if not isinstance(attributes, list) or not all(isinstance(a, str) and a for a in attributes):
        raise StoreError(
            f"{path}: counters store meta 'attributes' is {meta['attributes'][:60]!r}, expected a JSON list of names"
        )
    bins = meta["bins"]
    if not (bins.isascii() and bins.isdigit() and 1 <= int(bins) <= MAX_BINS):
        raise StoreError(f"{path}: counters store meta 'bins' is {bins[:60]!r}, expected an integer in [1, {MAX_BINS}]")
    return tuple(attributes), int(bins)


def _read_meta(db: sqlite3.Connection) -> dict[str, str]:
    rows = db.execute("SELECT key, value FROM meta").fetchall()
    return {str(k): str(v) for k, v in rows}


class CounterStore:
    """A counters store. ``read_only`` opens it without writing a byte (``counters show``)."""

    def __init__(self, path: str | Path, attributes: tuple[str, ...], bins: int, *, read_only: bool = False):
        self.path = Path(path)
        self.attributes, self.bins = tuple(attributes), bins
        self.read_only = read_only
        self._lock = threading.Lock()
        try:
            if read_only:
                self._db = _connect_read_only(self.path)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._db = _connect(self.path, "rwc")
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot open the counters store ({exc})") from None
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot open the counters store ({exc.strerror})") from None
        try:
            if not read_only:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")  # WAL: safe against process crashes
                self._db.executescript(SCHEMA)
                self._db.execute("BEGIN IMMEDIATE")  # a read-only file or folder fails here, not at the first flush
                # a read-only file in a writable folder passes BEGIN IMMEDIATE: only a write fails
                self._db.execute("UPDATE meta SET value = value WHERE key = 'schema'")
                self._db.execute("ROLLBACK")
            self._check_meta()
            self._flushed = self.load()
        except sqlite3.Error as exc:
            self._db.close()
            hint = ""
            if not read_only and (not os.access(self.path, os.W_OK) or not os.access(self.path.parent, os.W_OK)):
                hint = "; the store or its folder is read-only: it can only be read (counters show, export --raw)"
            raise StoreError(f"{self.path}: cannot open the counters store ({exc}){hint}") from None
        except BaseException:
            self._db.close()
            raise
        self.last_flush = time.monotonic()

    def _check_meta(self) -> None:
        want = {"attributes": json.dumps(list(self.attributes)), "bins": str(self.bins), "schema": SCHEMA_VERSION}
        have = _read_meta(self._db)
        if not have and not self.read_only:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("INSERT INTO meta VALUES (?, ?)", want.items())
            self._db.execute("COMMIT")
            return
        attributes, bins = _meta_values(self.path, have)
        if attributes != self.attributes:
            raise StoreError(
                f"{self.path}: store was made for attributes {list(attributes)}, not {list(self.attributes)}"
            )
        if bins != self.bins:
            raise StoreError(f"{self.path}: store was made for {bins} score bins, not {self.bins}")
        self.budget()  # a bad stored budget is an error now, not at the first export

    def load(self) -> CountsTable:
        """The committed totals; every stored row is checked (a store may have been edited)."""
        rows = self._db.execute("SELECT grp, cell, value FROM cells").fetchall()
        width = CELLS_PER_GROUP + 3 * self.bins
        by_group: dict[tuple[str, ...], np.ndarray] = {}
        for grp, cell, value in rows:
            try:
                key = json.loads(grp) if isinstance(grp, str) else None
            except (ValueError, RecursionError):
                key = None
            if (
                not isinstance(key, list)
                or len(key) != len(self.attributes)
                or not all(isinstance(v, str) for v in key)
            ):
                raise StoreError(f"{self.path}: counters store has a bad group {str(grp)[:60]!r} in table 'cells'")
            if not (type(cell) is int and 0 <= cell < width) or not (type(value) is int and 0 <= value <= MAX_COUNT):
                raise StoreError(
                    f"{self.path}: counters store group {key} has a bad cell ({cell!r}, {value!r}); "
                    f"expected a cell in [0, {width}) holding a count"
                )
            by_group.setdefault(tuple(key), np.zeros(width, np.int64))[cell] = value
        keys = sorted(by_group)
        counts = np.array([by_group[k][:CELLS_PER_GROUP] for k in keys], np.int64).reshape(-1, 3, 2, 2)
        hist = np.array([by_group[k][CELLS_PER_GROUP:] for k in keys], np.int64).reshape(len(keys), 3, 1, self.bins)
        return CountsTable(self.attributes, tuple(keys), counts, np.repeat(hist, 2, axis=2), False)

    @property
    def flushed(self) -> CountsTable:
        """The totals as this store last read or wrote them. A writer must start from this
        snapshot, not from a fresh ``load()``: rows another writer flushed in between would
        otherwise be counted again in this one's first delta."""
        return self._flushed

    def flush(self, table: CountsTable) -> int:
        """Commit the difference since the last flush; returns how many cells changed."""
        with self._lock:
            delta = (table - self._flushed).nonzero_groups()
            updates = []
            for key, cells in _cells(delta).items():
                grp = json.dumps(list(key))
                updates += [(grp, int(c), int(cells[c])) for c in np.flatnonzero(cells).tolist()]
            if updates:
                try:
                    self._db.execute("BEGIN IMMEDIATE")
                    self._db.executemany(
                        "INSERT INTO cells VALUES (?, ?, ?) ON CONFLICT (grp, cell) "
                        "DO UPDATE SET value = value + excluded.value",
                        updates,
                    )
                    self._db.execute("COMMIT")
                except sqlite3.Error as exc:
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    raise StoreError(f"{self.path}: flush failed ({exc})") from None
                self._flushed = table  # only after the commit: a failed flush is retried whole
            self.last_flush = time.monotonic()
            return len(updates)

    def spent(self) -> float:
        return float(self._db.execute("SELECT COALESCE(SUM(epsilon), 0) FROM ledger").fetchone()[0])

    def budget(self) -> float | None:
        """The store's privacy budget (total epsilon over every export), or None if none was set."""
        row = self._db.execute("SELECT value FROM meta WHERE key = 'budget'").fetchone()
        if row is None:
            return None
        try:
            value = float(row[0])
        except (TypeError, ValueError):
            value = math.nan
        if not (value > 0 and math.isfinite(value)):
            raise StoreError(
                f"{self.path}: counters store meta 'budget' is {str(row[0])[:60]!r}, expected a number > 0"
            )
        return value

    def set_budget(self, budget: float) -> float:
        """Set the privacy budget if none is set, or lower it; raising it is refused."""
        check_budget(budget)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                stored = self.budget()
                if stored is not None and budget > stored:
                    raise PrivacyBudgetError(
                        f"{self.path}: the store's privacy budget is {stored:.4g} epsilon; it can only be lowered, "
                        f"not raised to {budget:.4g}"
                    )
                if stored != budget:
                    self._db.execute("INSERT OR REPLACE INTO meta VALUES ('budget', ?)", (repr(float(budget)),))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return float(budget)

    def spend(
        self, epsilon: float, budget: float | None, note: str, release: Callable[[], object] | None = None
    ) -> float:
        """Record an export's epsilon; refuse (and record nothing) past the store's budget.

        ``budget``, if given, is first set as the store's budget (or lowers it; raising it is
        refused). Every export is charged against the budget stored in the store, so leaving
        ``budget`` out later does not lift it; a store with no budget refuses to spend.
        ``release`` (the export itself) runs inside the ledger's transaction: the epsilon is
        charged if and only if it succeeds, and no two exports race past the budget."""
        if not (epsilon > 0 and math.isfinite(epsilon)):
            raise PrivacyBudgetError(f"epsilon must be a positive, finite number, got {epsilon}")
        if budget is not None:
            self.set_budget(budget)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                limit = self.budget()
                if limit is None:
                    raise PrivacyBudgetError(
                        f"{self.path}: the store has no privacy budget; set one (counters export --budget B, "
                        "the total epsilon every export together may spend) before exporting with epsilon"
                    )
                spent = float(self._db.execute("SELECT COALESCE(SUM(epsilon), 0) FROM ledger").fetchone()[0])
                if spent + epsilon > limit + 1e-12:
                    raise PrivacyBudgetError(
                        f"{self.path}: exporting with epsilon {epsilon} would spend "
                        f"{spent + epsilon:.4g} of the store's budget of {limit:.4g}"
                    )
                if release is not None:
                    release()
                self._db.execute(
                    "INSERT INTO ledger (at, epsilon, note) VALUES (?, ?, ?)", (time.time(), epsilon, note)
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return spent + epsilon

    def integrity_check(self) -> str:
        return str(self._db.execute("PRAGMA integrity_check").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


def check_budget(budget: float) -> None:
    if not (budget > 0 and math.isfinite(budget)):
        raise PrivacyBudgetError(f"budget (--budget) must be a positive, finite total epsilon, got {budget}")


def load_counters(path: str | Path) -> CountsTable:
    """Counters from a store (SQLite, opened read-only) or a table JSON file (an export with ``--raw``)."""
    p = Path(path)
    if p.suffix == ".json":
        if not p.exists():
            raise StoreError(f"{p}: no such file")
        try:
            return tables.from_json(p.read_text(encoding="utf-8"))
        except InputError as exc:
            raise StoreError(f"{p}: {exc}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise StoreError(f"{p}: cannot read ({exc})") from None
    store, table = open_store(p, read_only=True)
    store.close()
    return table


def open_store(path: str | Path, *, read_only: bool = False) -> tuple[CounterStore, CountsTable]:
    """Open an existing store without knowing its attributes (for the CLI)."""
    p = Path(path)
    if not p.exists():
        raise StoreError(f"{p}: no such counters store")
    if p.is_dir():
        raise StoreError(f"{p}: not an edgefair counters store (a folder)")
    try:
        db = _connect_read_only(p)
        try:
            meta = _read_meta(db)
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise StoreError(f"{p}: not an edgefair counters store ({exc})") from None
    if not meta:
        raise StoreError(f"{p}: not an edgefair counters store (no metadata)")
    attributes, bins = _meta_values(p, meta)
    store = CounterStore(p, attributes, bins, read_only=read_only)
    return store, store.flushed
