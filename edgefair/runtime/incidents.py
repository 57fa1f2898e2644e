"""Field checks on a schedule, and incidents: what failed, when, and what was done about it.

A ``Watch`` looks at a field check (the shadow/canary gate, or drift against the
certificate) every ``check_every`` newly labelled rows, at most ``max_looks`` times.
Looking again and again at growing data and stopping at the first "fail" would fail an
unchanged candidate far more often than alpha, so every look runs at level alpha /
max_looks (a Bonferroni bound over looks: the chance that any of the looks fails a
candidate that keeps the policy is at most max_looks x alpha / max_looks = alpha). After
the last look the watch stops and says so: the budget of looks is spent, nothing more is
decided. Only ``fail`` acts; ``inconclusive`` never does. A failure is written as an
``Incident`` to a SQLite (WAL) store in one transaction, so it survives restarts; the
caller switches traffic (or, with rollback off, only alerts).

The check itself is a callable (the gate lives in ``verification``, above this layer's
siblings): given the look's level it returns a ``FieldVerdict``.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from edgefair.errors import InputError, StoreError

CHECKS = ("field_gate", "drift")
ACTIONS = ("rolled_back", "alert")


@dataclass(frozen=True)
class FieldVerdict:
    """One look's outcome: the verdict and, for a failure, the failing checks."""

    verdict: str  # pass | fail | inconclusive
    failing: tuple[dict[str, Any], ...] = ()  # each: check, scope, group, estimate, interval, rows
    level: float = 0.95  # the confidence every interval of this look is at
    counts: dict[str, int] = field(default_factory=dict)
    note: str = ""  # why nothing was decided, when nothing could be


@dataclass(frozen=True, kw_only=True)
class WatchOptions:
    check_every: int = 200  # labelled rows between looks
    max_looks: int = 20  # looks in all; each at alpha / max_looks
    alpha: float = 0.05  # the family-wise rate of false failures over every look
    rollback: bool = True  # False: alert only (the incident is recorded, traffic stays)

    def __post_init__(self) -> None:
        if self.check_every < 1 or self.max_looks < 1:
            raise InputError(f"check_every and max_looks must be at least 1, got {self.check_every}, {self.max_looks}")
        if not 0.0 < self.alpha < 1.0:
            raise InputError(f"alpha must be in (0, 1), got {self.alpha}")

    @property
    def look_alpha(self) -> float:
        return self.alpha / self.max_looks


@dataclass(frozen=True, kw_only=True)
class Incident:
    model: str
    check: str  # field_gate | drift
    mode: str  # shadow | canary | serving (drift of the serving version)
    reference_version: int | None
    candidate_version: int | None
    from_version: int | None  # what answered unversioned requests before
    to_version: int | None  # what answers them now (None: nothing to roll back to)
    action: str  # rolled_back | alert
    failing: tuple[dict[str, Any], ...]
    labelled_rows: int
    look: int
    max_looks: int
    level: float
    table: dict[str, Any]  # a snapshot of the table the check ran on (table JSON)
    note: str = ""
    at: str = ""
    id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


class Watch:
    """Looks at one field check on a schedule; at most one incident per watch."""

    def __init__(self, check: Callable[[float], FieldVerdict], options: WatchOptions):
        self.check, self.options = check, options
        self.looks = 0
        self.next_at = options.check_every
        self.last: FieldVerdict | None = None
        self.done = False  # failed, or every look spent

    def observe(self, labelled_rows: int) -> FieldVerdict | None:
        """Look if ``labelled_rows`` reached the next look; the verdict when one was taken."""
        if self.done or labelled_rows < self.next_at:
            return None
        self.looks += 1
        self.next_at = labelled_rows + self.options.check_every
        self.last = self.check(1.0 - self.options.look_alpha)
        if self.last.verdict == "fail" or self.looks >= self.options.max_looks:
            self.done = True
        return self.last

    def describe(self) -> dict[str, Any]:
        return {
            "looks": self.looks,
            "max_looks": self.options.max_looks,
            "check_every": self.options.check_every,
            "level_per_look": 1.0 - self.options.look_alpha,
            "alpha": self.options.alpha,
            "next_look_at_labelled_rows": None if self.done else self.next_at,
            "last_verdict": None if self.last is None else self.last.verdict,
            "done": self.done,
            "note": "each look at alpha/max_looks (Bonferroni over looks); only fail acts, never inconclusive",
        }


SCHEMA = """
CREATE TABLE IF NOT EXISTS incidents (
    id INTEGER PRIMARY KEY, at TEXT NOT NULL, model TEXT NOT NULL, doc TEXT NOT NULL);
"""


class IncidentStore:
    """Incidents in SQLite (WAL): each written whole in one transaction, read back after restarts."""

    def __init__(self, path: str | Path, *, read_only: bool = False):
        self.path = Path(path)
        self._lock = threading.Lock()
        if read_only and not self.path.is_file():
            raise StoreError(f"{self.path}: no such incidents store")
        mode = "ro" if read_only else "rwc"
        try:
            if not read_only:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            uri = f"file:{quote(str(self.path.absolute()))}?mode={mode}"
            self._db = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
            names = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not read_only and not names:  # a new store; never add a table to someone else's file
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.executescript(SCHEMA)
            columns = [r[1] for r in self._db.execute("PRAGMA table_info(incidents)").fetchall()]
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"{self.path}: cannot open the incidents store ({exc})") from None
        if columns != ["id", "at", "model", "doc"]:
            self._db.close()
            raise StoreError(f"{self.path}: not an edgefair incidents store (no incidents table)")

    def record(self, incident: Incident) -> Incident:
        """Write ``incident`` (time stamped now, in UTC) in one transaction; the stored copy."""
        at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")
        doc = {**incident.to_dict(), "at": at, "id": None}
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                cursor = self._db.execute(
                    "INSERT INTO incidents (at, model, doc) VALUES (?, ?, ?)",
                    (at, incident.model, json.dumps(doc, allow_nan=False, sort_keys=True)),
                )
                self._db.execute("COMMIT")
            except (sqlite3.Error, ValueError) as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise StoreError(f"{self.path}: cannot record the incident ({exc})") from None
        return _incident({**doc, "id": cursor.lastrowid})

    def list(self, model: str | None = None) -> list[Incident]:
        query = "SELECT id, doc FROM incidents" + (" WHERE model = ?" if model else "") + " ORDER BY id"
        with self._lock:
            rows = self._db.execute(query, (model,) if model else ()).fetchall()
        return [_incident({**json.loads(doc), "id": i}) for i, doc in rows]

    def get(self, incident_id: int) -> Incident:
        with self._lock:
            row = self._db.execute("SELECT id, doc FROM incidents WHERE id = ?", (incident_id,)).fetchone()
        if row is None:
            raise StoreError(f"{self.path}: no incident {incident_id}")
        return _incident({**json.loads(row[1]), "id": row[0]})

    def rolled_back(self, model: str) -> set[int]:
        """Versions of ``model`` traffic was rolled back from (kept off after a restart)."""
        out = set()
        for i in self.list(model):
            if i.action == "rolled_back":
                bad = i.candidate_version if i.check == "field_gate" else i.from_version
                if bad is not None:
                    out.add(bad)
        return out

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _incident(doc: dict[str, Any]) -> Incident:
    try:
        doc = {**doc, "failing": tuple(doc["failing"])}
        return Incident(**doc)
    except (TypeError, KeyError) as exc:
        raise StoreError(f"incident {doc.get('id')}: not an edgefair incident record ({exc})") from None
