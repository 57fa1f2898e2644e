"""The search's cache in OUT_DIR/cache: a rerun (with a larger budget) resumes.

    cache/models/<sha256>.onnx           every variant built, by the SHA-256 of its bytes
    cache/<context>/builds.json          spec key -> model SHA-256 (or the build's error)
    cache/<context>/tables/<sha256>.json its paired table on the search split

``context`` hashes what a build and a table depend on: the source model, the data, the
split (holdout, seed), the batch, the columns, the threshold and the calibration rows. The
policy is not in it: verdicts are recomputed from the tables, so a rerun with another policy
reuses every table. Latencies are never cached: a ratio is only meaningful against the
source timed in the same run.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from edgefair.core import tables
from edgefair.core.tables import CountsTable
from edgefair.errors import InputError
from edgefair.files import write_atomic, write_text


def context_key(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


class Cache:
    """Models, builds and tables on disk; a cache of None keeps models in a temp folder only."""

    def __init__(self, root: Path, context: str, persistent: bool) -> None:
        self.root = root
        self.persistent = persistent
        self.models = root / "models"
        self.here = root / context
        self._builds: dict[str, dict[str, Any]] = {}
        self._dirty = False
        builds = self.here / "builds.json"
        if persistent and builds.is_file():
            try:
                self._builds = json.loads(builds.read_text(encoding="utf-8"))
            except ValueError:
                raise InputError(f"{builds}: not a tune cache file; delete the cache folder to start afresh") from None

    def model_path(self, sha: str) -> Path:
        return self.models / f"{sha}.onnx"

    def put_model(self, blob: bytes) -> str:
        sha = hashlib.sha256(blob).hexdigest()
        path = self.model_path(sha)
        if not path.is_file():
            write_atomic(path, blob)
        return sha

    def build(self, key: str) -> dict[str, Any] | None:
        """What building this spec gave before: {"sha256": ...} or {"error": ...}."""
        found = self._builds.get(key)
        if found and found.get("sha256") and not self.model_path(found["sha256"]).is_file():
            return None  # the model file is gone: build again
        return found

    def record_build(self, key: str, entry: dict[str, Any]) -> None:
        self._builds[key] = entry
        self._dirty = True

    def flush(self) -> None:
        """Write the build map (once per stage: a stopped run keeps what it built)."""
        if self.persistent and self._dirty:
            write_text(self.here / "builds.json", json.dumps(self._builds, indent=1, sort_keys=True))
        self._dirty = False

    def table(self, sha: str) -> tuple[CountsTable, str] | None:
        """A model's paired table on the search split and how it was scored."""
        path = self.here / "tables" / f"{sha}.json"
        if not self.persistent or not path.is_file():
            return None
        doc = json.loads(path.read_text(encoding="utf-8"))
        return tables.from_dict(doc["table"]), str(doc["scored"])

    def put_table(self, sha: str, table: CountsTable, scored: str) -> None:
        if self.persistent:
            write_text(self.here / "tables" / f"{sha}.json", json.dumps({"scored": scored, "table": table.to_dict()}))
