"""A fleet's counters: device exports added up, one file at a time, with what privacy cost.

Exact exports (``counters export --raw`` tables, or stores) add up exactly into a counts
table. Private exports (``counters export``: cells under ``min_cell`` suppressed, optionally
discrete Laplace noise) add up into a **fleet table** that records, per cell of each group,

- ``counts``: the sum of the released values (a suppressed cell adds nothing);
- ``noise_variance``: the variance of the noise between that sum and the true rows,
  ``exports x var(scale)`` over the exports that list the group, where the discrete Laplace
  noise of scale ``b`` (P(k) ~ exp(-|k|/b)) has variance ``2 a / (1 - a)**2`` with
  ``a = exp(-1/b)``. A suppressed cell counts too: its noisy value was under ``min_cell``,
  its true count is that value less the noise;
- ``suppressed``: in how many exports the cell was suppressed, each hiding at most
  ``min_cell - 1`` rows (exactly so without noise; with noise, up to the noise above), so
  ``suppressed_rows_max = suppressed x (min_cell - 1)``.

Fleet metrics (``fleet_metrics``) read rates off those sums with intervals that stay honest:
the noisy values of all listed cells add up to the true rows plus the noise (whose variance
is known), and a suppressed cell's noisy value lies under ``min_cell`` and (its true count
being at least 0) above a noise floor. So the numerator's and the rest's true rows lie in
known bounds, and the rate's interval runs from the Wilson lower end at the worst case of
both to the upper end at the other. Noise released only when it crossed ``min_cell`` biases
the released sums upward; the bounds cover that, which is why heavy noise with suppression
gives wide intervals: the data do not say more.

All exports of one merge must share a layout, attributes, score bins and privacy
parameters: anything else is refused, naming the file. Files are read one at a time and
only the running sums are kept, so memory grows with the groups, not with the files.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgefair.core import metrics as m
from edgefair.core import stats, tables
from edgefair.core.tables import MAX_COUNT, CountsTable
from edgefair.errors import InputError, StoreError

FLEET_KIND = "edgefair.fleet_table"
EXPORT_KIND = "edgefair.counters_export"
SCHEMA_VERSION = 1
FLEET_METRICS = ("selection_rate", "true_positive_rate")
CELLS = tables.CELLS_PER_GROUP
ONE_MODEL = np.array([r == c for _ in range(3) for r in (0, 1) for c in (0, 1)])  # cells (label, d, d)


def noise_variance(scale: float | None) -> float:
    """Variance of one discrete Laplace draw of ``scale`` (0 without noise)."""
    if scale is None:
        return 0.0
    a = math.exp(-1.0 / scale)
    return 2.0 * a / (1.0 - a) ** 2


@dataclass
class _Sums:
    """One group's running sums (released values, noise variance, suppressions)."""

    counts: np.ndarray
    variance: np.ndarray
    suppressed: np.ndarray
    hist: np.ndarray
    hist_suppressed: np.ndarray


@dataclass
class FleetTable:
    """Private exports added up: per group and cell, released sums, their noise variance
    and how often the cell was suppressed (see the module docstring)."""

    attributes: tuple[str, ...]
    bins: int
    min_cell: int
    epsilon: float | None
    scale: float | None
    exports: int = 0
    groups: dict[tuple[str, ...], _Sums] = field(default_factory=dict)

    @property
    def cell_variance(self) -> float:
        return noise_variance(self.scale)

    def add(self, doc: dict[str, Any], where: str) -> None:
        """Add one export (already checked against this table's parameters)."""
        var = self.cell_variance
        seen: set[tuple[str, ...]] = set()
        for i, entry in enumerate(doc["groups"]):
            key = tuple(entry["key"])
            if key in seen:
                raise InputError(f"{where}: groups[{i}] lists group {list(key)} twice")
            seen.add(key)
            counts, shown = _cells(entry.get("counts"), CELLS, f"{where}: groups[{i}] counts", self.min_cell)
            hist, hist_shown = _cells(
                entry.get("score_hist"), 3 * self.bins, f"{where}: groups[{i}] score_hist", self.min_cell
            )
            sums = self.groups.get(key)
            if sums is None:
                sums = _Sums(
                    np.zeros(CELLS, np.int64),
                    np.zeros(CELLS),
                    np.zeros(CELLS, np.int64),
                    np.zeros(3 * self.bins, np.int64),
                    np.zeros(3 * self.bins, np.int64),
                )
                self.groups[key] = sums
            sums.counts += counts
            sums.variance += var  # released or not, the cell's truth is off by one draw
            sums.suppressed += ~shown
            sums.hist += hist
            sums.hist_suppressed += ~hist_shown
        self.exports += 1

    def arrays(self) -> tuple[list[tuple[str, ...]], np.ndarray, np.ndarray, np.ndarray]:
        """Groups (sorted), counts, noise variance and suppressions, each (G, 3, 2, 2)."""
        keys = sorted(self.groups)
        shape = (len(keys), 3, 2, 2)
        counts = np.array([self.groups[k].counts for k in keys], np.int64).reshape(shape)
        variance = np.array([self.groups[k].variance for k in keys], np.float64).reshape(shape)
        suppressed = np.array([self.groups[k].suppressed for k in keys], np.int64).reshape(shape)
        return keys, counts, variance, suppressed

    def to_dict(self) -> dict[str, Any]:
        keys = sorted(self.groups)
        return {
            "kind": FLEET_KIND,
            "schema_version": SCHEMA_VERSION,
            "attributes": list(self.attributes),
            "bins": self.bins,
            "exports": self.exports,
            "privacy": {
                "min_cell": self.min_cell,
                "epsilon": self.epsilon,
                "mechanism": "discrete Laplace" if self.scale else None,
                "scale": self.scale,
                "cell_noise_variance": self.cell_variance,
                "note": (
                    "counts are sums of released (noisy) values; noise_variance is the variance of the noise between "
                    "each sum and the true rows; suppressed counts the exports that withheld the cell, each "
                    f"hiding at most {self.min_cell - 1} rows (suppressed_rows_max) plus its noise"
                ),
            },
            "groups": [
                {
                    "key": list(k),
                    "counts": self.groups[k].counts.tolist(),
                    "noise_variance": self.groups[k].variance.tolist(),
                    "suppressed": self.groups[k].suppressed.tolist(),
                    "suppressed_rows_max": (self.groups[k].suppressed * (self.min_cell - 1)).tolist(),
                    "score_hist": self.groups[k].hist.tolist(),
                    "score_hist_suppressed": self.groups[k].hist_suppressed.tolist(),
                }
                for k in keys
            ],
        }


def _cells(values: Any, expected: int, where: str, min_cell: int) -> tuple[np.ndarray, np.ndarray]:
    """Released values (suppressed as 0) and which were released; refuses what no export writes."""
    if not isinstance(values, list) or len(values) != expected:
        raise InputError(f"{where}: expected a list of {expected} cells")
    out = np.zeros(expected, np.int64)
    shown = np.zeros(expected, bool)
    for j, v in enumerate(values):
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int) or abs(v) > MAX_COUNT:
            raise InputError(f"{where}[{j}] is {v!r}, expected a whole count or null (suppressed)")
        if v < min_cell:
            raise InputError(f"{where}[{j}] is {v}, under the export's min_cell {min_cell}: it would have been null")
        out[j], shown[j] = v, True
    return out, shown


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
    for path in expand(sources):
        count += 1
        if path.suffix != ".json":  # a store (SQLite): exact counts
            table = load_counters(path)
            kind, attrs, bins, doc = "edgefair.counts_table", table.attributes, table.bins, None
        else:
            doc = _read(path)
            kind, attrs, bins = _header(doc, str(path))
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


def positive_part_moments(scale: float | None) -> tuple[float, float]:
    """Mean and variance of max(noise, 0) for one discrete Laplace draw (0, 0 without noise)."""
    if scale is None:
        return 0.0, 0.0
    a = math.exp(-1.0 / scale)  # P(noise = k) = (1 - a) / (1 + a) * a**|k|
    mean = a / ((1 + a) * (1 - a))
    return mean, a / (1 - a) ** 2 - mean**2


def noise_floor(scale: float | None, cells: int, tail: float) -> int:
    """A k with P(noise <= -k) at most ``tail / cells`` for one draw: all of ``cells`` draws
    lie above -k but for ``tail``. 0 without noise or cells."""
    if scale is None or cells == 0:
        return 0
    a = math.exp(-1.0 / scale)  # P(noise <= -k) = a**k / (1 + a)
    return max(0, math.ceil(math.log(tail * (1 + a) / cells) / math.log(a)))


def _bounds(
    released: float, suppressed: int, listed: float, fleet: FleetTable, z: float, tail: float
) -> tuple[float, float]:
    """Where the true rows of some cells lie, given their released sum, how many of them were
    suppressed and how many were listed (noised) over the exports; each bound holds but for
    ``tail`` (``z`` is its one-sided normal quantile).

    The truth is the noisy values of every listed cell less all their noise (a sum of
    independent draws of known variance, whichever cells were released); a suppressed noisy
    value lies under min_cell and, its true count being at least 0, above its own noise, so
    above the noise floor. A second lower bound: released cells hold their value less their
    noise and suppressed ones at least 0, so the truth is at least the released sum less every
    listed cell's positive noise part. The tighter of the two is taken (each at half the tail)."""
    spread = z * math.sqrt(listed * fleet.cell_variance)
    high = released + suppressed * max(fleet.min_cell - 1, 0) + spread
    mean, var = positive_part_moments(fleet.scale)
    by_floor = released - suppressed * noise_floor(fleet.scale, suppressed, tail / 2) - spread
    by_parts = released - (listed * mean + z * math.sqrt(listed * var))
    return max(0.0, by_floor, by_parts), max(0.0, high)


def _wilson(num: float, den: float, confidence: float) -> tuple[float, float]:
    if den <= 0:
        return 0.0, 1.0
    low, high = stats.wilson_interval(min(num, den), den, confidence)
    return float(low), float(high)


def fleet_metrics(fleet: FleetTable, confidence: float = 0.95) -> dict[str, Any]:
    """Per attribute and group: selection rate and TPR from the released sums, with intervals
    that hold whatever the noise and the suppressed cells hid. The numerator's and the rest's
    true rows each lie in ``_bounds``; the interval runs from the Wilson lower end at the
    fewest numerator and most other rows to the upper end at the reverse."""
    tail = (1 - confidence) / 8  # each of the four count bounds gets an eighth of the miss
    z_count = stats.z_value(1 - tail, two_sided=False)
    keys, counts, variance, suppressed = fleet.arrays()
    listed = variance / fleet.cell_variance if fleet.cell_variance > 0 else np.zeros_like(variance)
    out: dict[str, Any] = {"confidence": confidence, "by_attribute": {}}
    for a, attr in enumerate(fleet.attributes):
        values = sorted({k[a] for k in keys})
        per: dict[str, Any] = {}
        for value in values:
            rows = [i for i, k in enumerate(keys) if k[a] == value]
            c = counts[rows].sum(axis=0).reshape(-1)
            v = variance[rows].sum(axis=0).reshape(-1)
            n = listed[rows].sum(axis=0).reshape(-1)
            h = suppressed[rows].sum(axis=0).reshape(-1)
            entry: dict[str, Any] = {
                "released_rows": int(c.sum()),
                "suppressed_cells": int(h.sum()),
                "suppressed_rows_max": int(h.sum()) * max(fleet.min_cell - 1, 0),
            }
            for name in FLEET_METRICS:
                declared = m.get(name)
                assert declared.denominator is not None
                # device counters count one model: a cell whose two decisions differ holds no rows
                num_mask = m.mask(declared, declared.numerator, "reference").astype(bool) & ONE_MODEL
                rest_mask = m.mask(declared, declared.denominator, "reference").astype(bool) & ~num_mask & ONE_MODEL
                num, rest = float(c[num_mask].sum()), float(c[rest_mask].sum())
                vn, vr = float(v[num_mask].sum()), float(v[rest_mask].sum())
                hn, hr = int(h[num_mask].sum()), int(h[rest_mask].sum())
                num_lo, num_hi = _bounds(num, hn, float(n[num_mask].sum()), fleet, z_count, tail)
                rest_lo, rest_hi = _bounds(rest, hr, float(n[rest_mask].sum()), fleet, z_count, tail)
                den = num + rest
                value_ = num / den if den > 0 else None
                p = min(1.0, max(0.0, value_ or 0.0))
                noise = math.sqrt((1 - p) ** 2 * vn + p**2 * vr) / den if den > 0 else None  # delta method
                entry[name] = {
                    "value": value_,
                    "interval": [
                        _wilson(num_lo, num_lo + rest_hi, confidence)[0],
                        _wilson(num_hi, num_hi + rest_lo, confidence)[1],
                    ],
                    "noise_sd": noise,
                    "released": [int(num), int(den)],
                    "suppressed_cells": [hn, hn + hr],
                }
            per[value] = entry
        gaps = {}
        for name in FLEET_METRICS:
            shown = [(g, e[name]) for g, e in per.items() if e[name]["value"] is not None]
            if len(shown) >= 2:
                top = max(shown, key=lambda t: t[1]["value"])
                bottom = min(shown, key=lambda t: t[1]["value"])
                gaps[name] = {
                    "value": top[1]["value"] - bottom[1]["value"],
                    "groups": [top[0], bottom[0]],
                    "bounds": [
                        max(0.0, max(e["interval"][0] for _, e in shown) - min(e["interval"][1] for _, e in shown)),
                        max(e["interval"][1] for _, e in shown) - min(e["interval"][0] for _, e in shown),
                    ],
                    "note": "bounds from the per-group intervals (each at the confidence, not simultaneous)",
                }
        out["by_attribute"][attr] = {"groups": per, "gaps": gaps}
    return out
