"""Drift of field counters against the verified baseline (the certificate's table).

Per group of each sensitive attribute: the selection rate (Newcombe interval of the
difference, field minus baseline), the score distribution (population stability index
with a multinomial bootstrap interval) and, once labels arrive, the true positive rate.
Each gets a verdict against its tolerance: pass, fail or inconclusive.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgefair.core import metrics as m
from edgefair.core import stats
from edgefair.core.tables import CountsTable
from edgefair.errors import InputError

PSI_SMOOTHING = 0.5  # pseudo-rows per bin, so an empty bin has a finite log ratio
PSI_REPLICATES = 1000


@dataclass(frozen=True)
class DriftTolerances:
    selection_rate: float = 0.05
    true_positive_rate: float = 0.05
    psi: float = 0.2  # the usual "significant shift" threshold
    min_rows: int = 30
    confidence: float = 0.95


def _verdict(low: float, high: float, tol: float, two_sided: bool = True) -> str:
    if two_sided:
        if -tol <= low and high <= tol:
            return "pass"
        return "fail" if low > tol or high < -tol else "inconclusive"
    return "pass" if high <= tol else "fail" if low > tol else "inconclusive"


def psi(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Population stability index between histograms (last axis = bins), smoothed."""
    p = (a + PSI_SMOOTHING) / (a + PSI_SMOOTHING).sum(axis=-1, keepdims=True)
    q = (b + PSI_SMOOTHING) / (b + PSI_SMOOTHING).sum(axis=-1, keepdims=True)
    return np.asarray(((p - q) * np.log(p / q)).sum(axis=-1))


def _rate_row(
    name: str, metric: str, field: np.ndarray, base: np.ndarray, tol: float, t: DriftTolerances
) -> dict[str, Any] | None:
    num_f, den_f = (int(x) for x in m.parts(field, metric))
    num_b, den_b = (int(x) for x in m.parts(base, metric, "candidate"))
    if den_f < t.min_rows or den_b < t.min_rows:
        return {
            "metric": metric,
            "group": name,
            "verdict": "inconclusive",
            "field_rows": int(den_f),
            "note": f"fewer than {t.min_rows} rows",
        }
    f, b = num_f / den_f, num_b / den_b
    low, high = stats.newcombe_interval(num_f, den_f, num_b, den_b, t.confidence)
    return {
        "metric": metric,
        "group": name,
        "field": f,
        "baseline": b,
        "difference": f - b,
        "interval": [float(low), float(high)],
        "tolerance": tol,
        "field_rows": int(den_f),
        "verdict": _verdict(float(low), float(high), tol),
    }


def _smoothed(hist: np.ndarray) -> np.ndarray:
    s = hist + PSI_SMOOTHING
    return np.asarray(s / s.sum(axis=-1, keepdims=True))


def psi_interval(
    field_hist: np.ndarray, base_hist: np.ndarray, confidence: float, rng: np.random.Generator
) -> tuple[float, float, float, float]:
    """(estimate, raw PSI, low, high) for the PSI between the field's and the baseline's
    score distributions, from their two histograms.

    The plug-in PSI is biased upward (sampling noise and empty bins), so each bound is the
    more cautious of two for the verdict it decides:

    * high (decides pass): the percentile bound of the PSI of both histograms resampled
      (multinomial) from their smoothed proportions, never below the raw PSI. No bias is
      taken out here: a bias correction must not turn noise into a pass.
    * low (decides fail): the raw PSI less the larger of two upward errors, the basic
      bootstrap's (its upper quantile less the raw PSI) and the one a PSI of 0 would show (the same quantile of
      the PSI of both histograms drawn from the pooled proportions), clipped at 0. The first
      misses the bias of bins left empty by a small sample, the second covers it.

    The estimate is the raw PSI less the median PSI under no drift (clipped at 0); it and
    the raw PSI both lie in [low, high].
    """
    nf, nb = int(field_hist.sum()), int(base_hist.sum())
    raw = float(psi(field_hist, base_hist))
    size = PSI_REPLICATES
    boot = psi(
        rng.multinomial(nf, _smoothed(field_hist), size=size), rng.multinomial(nb, _smoothed(base_hist), size=size)
    )
    pooled = _smoothed(field_hist + base_hist)
    null = psi(rng.multinomial(nf, pooled, size=size), rng.multinomial(nb, pooled, size=size))
    upper = 1.0 - (1.0 - confidence) / 2.0
    boot_high = float(np.quantile(boot, upper))
    null_high, null_median = (float(x) for x in np.quantile(null, [upper, 0.5]))
    high = max(boot_high, raw)
    low = max(0.0, min(raw - null_high, 2.0 * raw - boot_high))
    return max(0.0, raw - null_median), raw, low, high


def _psi_row(
    name: str, field_hist: np.ndarray, base_hist: np.ndarray, t: DriftTolerances, rng: np.random.Generator
) -> dict[str, Any]:
    nf, nb = int(field_hist.sum()), int(base_hist.sum())
    if nf < t.min_rows or nb < t.min_rows:
        return {
            "metric": "score_psi",
            "group": name,
            "verdict": "inconclusive",
            "field_rows": nf,
            "note": f"fewer than {t.min_rows} scored rows",
        }
    value, raw, low, high = psi_interval(field_hist, base_hist, t.confidence, rng)
    return {
        "metric": "score_psi",
        "group": name,
        "value": value,
        "raw_psi": raw,
        "interval": [low, high],
        "tolerance": t.psi,
        "field_rows": nf,
        "verdict": _verdict(low, high, t.psi, False),
    }


def drift(
    field: CountsTable, baseline: CountsTable, tolerances: DriftTolerances | None = None, seed: int = 0
) -> dict[str, Any]:
    """Drift rows per attribute and group, and an overall verdict (fail if any row fails)."""
    t = tolerances or DriftTolerances()
    rng = np.random.default_rng(seed)
    if not set(field.attributes) & set(baseline.attributes):
        raise InputError(
            f"the field counters are over {list(field.attributes)} and the baseline over "
            f"{list(baseline.attributes)}: nothing to compare"
        )
    rows = []
    for attr in field.attributes:
        if attr not in baseline.attributes:
            continue
        f, b = field.marginal([attr]), baseline.marginal([attr])
        for key in sorted(set(f.groups) & set(b.groups)):
            fi, bi = f.groups.index(key), b.groups.index(key)
            name = f"{attr}={key[0]}"
            for metric, tol in (
                ("selection_rate", t.selection_rate),
                ("true_positive_rate", t.true_positive_rate),
            ):
                row = _rate_row(name, metric, f.counts[fi], b.counts[bi], tol, t)
                if row:
                    rows.append(row)
            if f.bins == b.bins and f.bins:
                rows.append(
                    _psi_row(
                        name,
                        f.score_hist[fi, :, 0, :].sum(axis=0),
                        b.score_hist[bi, :, 1, :].sum(axis=0),
                        t,
                        rng,
                    )
                )
    verdicts = [r["verdict"] for r in rows]
    overall = (
        "fail" if "fail" in verdicts else "pass" if verdicts and all(v == "pass" for v in verdicts) else "inconclusive"
    )
    return {
        "verdict": overall,
        "field_rows": field.rows,
        "baseline_rows": baseline.rows,
        "tolerances": t.__dict__,
        "rows": rows,
    }


def drift_against_bundle(
    field: CountsTable, bundle: str | Path, tolerances: DriftTolerances | None = None
) -> dict[str, Any]:
    """``drift`` of ``field`` against the certificate's baseline in ``bundle``."""
    from edgefair.runtime.bundle import load_bundle

    baseline = load_bundle(bundle).baseline()
    if baseline is None:
        raise InputError(f"{bundle}: the bundle has no certificate, so no baseline to compare with")
    return drift(field, baseline, tolerances)
