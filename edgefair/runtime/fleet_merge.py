"""``counters merge``: device exports added up one file at a time (see ``runtime.fleet``).

Stores and exact tables (``--raw``) add up exactly into a counts table; private exports add
up into a fleet table. Every file must share the first file's layout, attributes, score
bins and privacy parameters, or it is refused, naming it. Only the running sums are kept.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgefair.core import tables
from edgefair.core.tables import CountsTable
from edgefair.errors import InputError, StoreError
from edgefair.runtime.fleet import EXPORT_KIND, SCHEMA_VERSION, FleetTable, fleet_metrics


def _privacy(doc: dict[str, Any], where: str) -> tuple[int, float | None, float | None]:
    p = doc.get("privacy")
    if not isinstance(p, dict):
        raise InputError(f"{where}: an edgefair counters export needs a 'privacy' object")
    min_cell, epsilon, scale = p.get("min_cell"), p.get("epsilon"), p.get("scale")
    if isinstance(min_cell, bool) or not isinstance(min_cell, int) or min_cell < 0:
        raise InputError(f"{where}: privacy.min_cell must be a non-negative integer, got {min_cell!r}")
    for name, value in (("epsilon", epsilon), ("scale", scale)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0):
            raise InputError(f"{where}: privacy.{name} must be a positive number or null, got {value!r}")
    if (epsilon is None) != (scale is None):
        raise InputError(f"{where}: privacy.epsilon and privacy.scale must both be given or both be null")
    return min_cell, epsilon, scale


def _header(doc: Any, where: str) -> tuple[str, tuple[str, ...], int]:
    if not isinstance(doc, dict):
        raise InputError(f"{where}: expected a JSON object (a counters export or counts table)")
    kind = doc.get("kind")
    if kind not in (EXPORT_KIND, "edgefair.counts_table"):
        raise InputError(f"{where}: not an edgefair counters export or counts table (kind {kind!r})")
    if doc.get("schema_version") != SCHEMA_VERSION or isinstance(doc.get("schema_version"), bool):
        raise InputError(f"{where}: schema_version {doc.get('schema_version')!r}, expected {SCHEMA_VERSION}")
    attrs, bins = doc.get("attributes"), doc.get("bins")
    if not isinstance(attrs, list) or not all(isinstance(a, str) for a in attrs):
        raise InputError(f"{where}: 'attributes' must be a list of names")
    if isinstance(bins, bool) or not isinstance(bins, int) or not 1 <= bins <= tables.MAX_BINS:
        raise InputError(f"{where}: 'bins' must be an integer in [1, {tables.MAX_BINS}], got {bins!r}")
    if not isinstance(doc.get("groups"), list):
        raise InputError(f"{where}: 'groups' must be a list")
    for i, g in enumerate(doc["groups"]):
        key = g.get("key") if isinstance(g, dict) else None
        if not isinstance(key, list) or len(key) != len(attrs) or not all(isinstance(v, str) for v in key):
            raise InputError(f"{where}: groups[{i}] needs a 'key' of {len(attrs)} strings")
    return kind, tuple(attrs), bins


@dataclass(frozen=True)
class MergeResult:
    """What a merge made: an exact counts table, or a fleet table of private exports."""

    files: int
    exact: CountsTable | None = None
    fleet: FleetTable | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.exact is not None:
            return self.exact.to_dict()
        assert self.fleet is not None
        return {**self.fleet.to_dict(), "metrics": fleet_metrics(self.fleet)}

    def to_json(self) -> str:
        if self.exact is not None:
            return self.exact.to_json()
        return json.dumps(self.to_dict(), sort_keys=True, allow_nan=False)

    def summary_lines(self, output: str) -> list[str]:
        """What the merge made, what privacy withheld, and the fleet's rates with intervals."""
        if self.exact is not None:
            return [f"merged {self.files} tables: {self.exact.rows:,} predictions -> {output}"]
        fleet = self.fleet
        assert fleet is not None
        _, counts, _, suppressed = fleet.arrays()
        noise = f", discrete Laplace noise at epsilon {fleet.epsilon:g}" if fleet.epsilon else ", no noise"
        lines = [
            f"merged {self.files} private exports (cells under {fleet.min_cell} suppressed{noise}) -> {output}",
            f"  released {int(counts.sum()):,} rows; {int(suppressed.sum()):,} cells suppressed across exports, "
            f"hiding at most {int(suppressed.sum()) * max(fleet.min_cell - 1, 0):,} rows (intervals below include them"
            + (" and the noise)" if fleet.epsilon else ")"),
        ]
        metrics = fleet_metrics(fleet)
        for attr, block in metrics["by_attribute"].items():
            for group, entry in block["groups"].items():
                parts = []
                for name, short in (("selection_rate", "sel"), ("true_positive_rate", "tpr")):
                    e = entry[name]
                    shown = "n/a" if e["value"] is None else f"{e['value']:.3f}"
                    parts.append(f"{short} {shown} [{e['interval'][0]:.3f}, {e['interval'][1]:.3f}]")
                lines.append(
                    f"  {attr}={group}: " + "  ".join(parts) + f"  ({entry['suppressed_cells']:,} cells suppressed)"
                )
        return lines


def expand(sources: Iterable[str | Path]) -> Iterator[Path]:
    """Each path as given; a folder gives its ``*.json`` files in sorted order."""
    for s in sources:
        p = Path(s)
        if p.is_dir():
            found = sorted(p.glob("*.json"))
            if not found:
                raise InputError(f"{p}: a folder with no .json exports")
            yield from found
        else:
            yield p


def merge_files(sources: Iterable[str | Path]) -> MergeResult:
    """Add device exports, one file at a time. Stores and exact tables (``--raw``) add up
    exactly; private exports add up into a fleet table. A file whose layout, attributes,
    bins or privacy parameters differ from the first file's is refused, naming it."""
    from edgefair.runtime.store import load_counters

    first: tuple[Path, str, tuple[str, ...], int, Any] | None = None
    exact: CountsTable | None = None
    fleet: FleetTable | None = None
    count = 0
    seen = Repeats()
    for path in expand(sources):
        count += 1
        seen.refuse_same_file(path)
        if path.suffix != ".json":  # a store (SQLite): exact counts
            table = load_counters(path)
            kind, attrs, bins, doc = "edgefair.counts_table", table.attributes, table.bins, None
            content = table.to_json().encode() if table.rows >= COPY_MIN_ROWS else None
        else:
            doc = _read(path)
            kind, attrs, bins = _header(doc, str(path))
            content = path.read_bytes() if _released_rows(doc) >= COPY_MIN_ROWS else None
        if content is not None:
            seen.refuse_same_content(path, content)
        privacy = _privacy(doc, str(path)) if kind == EXPORT_KIND and doc is not None else None
        if first is None:
            first = (path, kind, attrs, bins, privacy)
        else:
            _same(first, path, kind, attrs, bins, privacy)
        if kind == EXPORT_KIND:
            assert privacy is not None and doc is not None
            if fleet is None:
                fleet = FleetTable(attrs, bins, *privacy)
            fleet.add(doc, str(path))
        else:
            if doc is not None:
                try:
                    table = tables.from_dict(doc)
                except InputError as exc:
                    raise InputError(f"{path}: {exc}") from None
            exact = table if exact is None else exact + table
    if first is None:
        raise InputError("counters merge needs at least one export file")
    return MergeResult(count, exact, fleet)


COPY_MIN_ROWS = 100
"""Inputs with identical content are refused as copies from this many rows up. Below it,
distinct small devices' exports often coincide (one released cell of 12 in the same group:
seen in a 200-device fleet with noise), and a copy doubles fewer rows than that."""


def _released_rows(doc: dict[str, Any]) -> int:
    """The rows an export (private or exact) releases: its count cells that are numbers."""
    total = 0
    for g in doc["groups"]:
        cells = g.get("counts") if isinstance(g, dict) else None
        if isinstance(cells, list):
            total += sum(v for v in cells if type(v) is int and v > 0)  # a bad cell is refused when added
    return total


class Repeats:
    """Inputs already merged, by resolved path and by content: the same export or store given
    twice (a path repeated, a link, a folder and a file in it, a copy) would count every
    device row twice and narrow every fleet interval."""

    def __init__(self) -> None:  # strings and digests, not Paths: ~200 bytes a file
        self.paths: dict[str, str] = {}
        self.contents: dict[bytes, str] = {}

    def refuse_same_file(self, path: Path) -> None:
        real = str(path.resolve())
        if real in self.paths:
            raise InputError(
                f"{path}: the same file as {self.paths[real]}, given twice; merging it again would double-count it"
            )
        self.paths[real] = str(path)

    def refuse_same_content(self, path: Path, content: bytes) -> None:
        """``content``: an export's bytes, or a store's counts as table JSON (a copied store's
        file may differ from its original in its write-ahead log, never in its counts)."""
        digest = hashlib.sha256(content).digest()
        if digest in self.contents:
            raise InputError(
                f"{path}: the same content (SHA-256 {digest.hex()[:12]}...) as {self.contents[digest]}; a copy of "
                "one export or store would be counted twice: give each device's file once"
            )
        self.contents[digest] = str(path)


def _read(path: Path) -> Any:
    if not path.exists():
        raise StoreError(f"{path}: no such file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InputError(f"{path}: not valid JSON ({str(exc).splitlines()[0][:100]})") from None
    except OSError as exc:
        raise StoreError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _same(
    first: tuple[Path, str, tuple[str, ...], int, Any], path: Path, kind: str, attrs: Any, bins: int, privacy: Any
) -> None:
    base, kind0, attrs0, bins0, privacy0 = first
    layout = {EXPORT_KIND: "a private export", "edgefair.counts_table": "exact counts"}
    if kind != kind0:
        raise InputError(f"{path}: {layout[kind]}, but {base} is {layout[kind0]}; merge one kind at a time")
    if attrs != attrs0:
        raise InputError(f"{path}: attributes {list(attrs)}, but {base} has {list(attrs0)}")
    if bins != bins0:
        raise InputError(f"{path}: {bins} score bins, but {base} has {bins0}")
    if privacy != privacy0:
        names = ("min_cell", "epsilon", "scale")
        diff = next(n for n, a, b in zip(names, privacy, privacy0, strict=True) if a != b)
        got, want = privacy[names.index(diff)], privacy0[names.index(diff)]
        raise InputError(f"{path}: privacy {diff} {got}, but {base} has {want}; merge one set of parameters at a time")
