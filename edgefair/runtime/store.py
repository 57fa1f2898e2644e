"""A SQLite (WAL) store for counters: deltas flushed in one transaction, totals resumed.

A crash loses at most the rows since the last flush and never double-counts: each flush
adds exactly the difference between the in-memory table and what was last committed, in
one transaction, and that snapshot only advances after the commit. The store also keeps
the privacy ledger (epsilon spent per export).
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgefair.core import tables
from edgefair.core.tables import CELLS_PER_GROUP, CountsTable
from edgefair.errors import InputError, PrivacyBudgetError, StoreError

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


class CounterStore:
    def __init__(self, path: str | Path, attributes: tuple[str, ...], bins: int):
        self.path = Path(path)
        self.attributes, self.bins = tuple(attributes), bins
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # WAL: safe against process crashes
            self._db.executescript(SCHEMA)
            self._check_meta()
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot open the counters store ({exc})") from None
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot open the counters store ({exc.strerror})") from None
        self._flushed = self.load()
        self.last_flush = time.monotonic()

    def _check_meta(self) -> None:
        want = {"attributes": json.dumps(list(self.attributes)), "bins": str(self.bins), "schema": "1"}
        have = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        if not have:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("INSERT INTO meta VALUES (?, ?)", want.items())
            self._db.execute("COMMIT")
            return
        for key, value in want.items():
            if have.get(key) != value:
                raise StoreError(f"{self.path}: store was made for {key} {have.get(key)}, not {value}")

    def load(self) -> CountsTable:
        """The committed totals."""
        rows = self._db.execute("SELECT grp, cell, value FROM cells").fetchall()
        width = CELLS_PER_GROUP + 3 * self.bins
        by_group: dict[tuple[str, ...], np.ndarray] = {}
        for grp, cell, value in rows:
            key = tuple(json.loads(grp))
            by_group.setdefault(key, np.zeros(width, np.int64))[cell] = value
        keys = sorted(by_group)
        counts = np.array([by_group[k][:CELLS_PER_GROUP] for k in keys], np.int64).reshape(-1, 3, 2, 2)
        hist = np.array([by_group[k][CELLS_PER_GROUP:] for k in keys], np.int64).reshape(len(keys), 3, 1, self.bins)
        return CountsTable(self.attributes, tuple(keys), counts, np.repeat(hist, 2, axis=2), False)

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

    def spend(
        self, epsilon: float, budget: float | None, note: str, release: Callable[[], object] | None = None
    ) -> float:
        """Record an export's epsilon; refuse (and record nothing) past the budget.

        ``release`` (the export itself) runs inside the ledger's transaction: the epsilon is
        charged if and only if it succeeds, and no two exports race past the budget."""
        if not (epsilon > 0 and math.isfinite(epsilon)):
            raise PrivacyBudgetError(f"epsilon must be a positive, finite number, got {epsilon}")
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                spent = float(self._db.execute("SELECT COALESCE(SUM(epsilon), 0) FROM ledger").fetchone()[0])
                if budget is not None and spent + epsilon > budget + 1e-12:
                    raise PrivacyBudgetError(
                        f"{self.path}: exporting with epsilon {epsilon} would spend "
                        f"{spent + epsilon:.4g} of a budget of {budget:.4g}"
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


def load_counters(path: str | Path) -> CountsTable:
    """Counters from a store (SQLite) or a table JSON file (an export with ``--raw``)."""
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
    store, table = open_store(p)
    store.close()
    return table


def open_store(path: str | Path) -> tuple[CounterStore, CountsTable]:
    """Open an existing store without knowing its attributes (for the CLI)."""
    p = Path(path)
    if not p.exists():
        raise StoreError(f"{p}: no such counters store")
    try:
        db = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        db.close()
    except sqlite3.Error as exc:
        raise StoreError(f"{p}: not an edgefair counters store ({exc})") from None
    if "attributes" not in meta:
        raise StoreError(f"{p}: not an edgefair counters store (no metadata)")
    store = CounterStore(p, tuple(json.loads(meta["attributes"])), int(meta["bins"]))
    return store, store.load()
