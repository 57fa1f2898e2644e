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

``runtime.fleet_merge`` reads the files: all exports of one merge must share a layout,
attributes, score bins and privacy parameters; anything else is refused, naming the file.
Files are read one at a time and only the running sums are kept, so memory grows with the
groups, not with the files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgefair.core import metrics as m
from edgefair.core import stats, tables
from edgefair.core.tables import MAX_COUNT
from edgefair.errors import InputError

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
