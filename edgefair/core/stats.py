"""Intervals, tests and a bootstrap that works on counts tables, not rows.

- Wilson score interval for one rate; Newcombe's hybrid score interval (method 10 of
  Newcombe 1998) for a difference of two independent rates.
- Exact McNemar test for paired decision changes.
- A paired, group-stratified bootstrap: each replicate draws every group's cells from a
  multinomial with that group's size and observed cell frequencies. The cost depends on
  the table's size (groups x 12 cells), not on the number of rows.
- Holm and Benjamini-Hochberg adjustment of p-values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

from edgefair.errors import InputError

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    @property
    def width(self) -> float:
        return self.high - self.low


def z_value(confidence: float, two_sided: bool = True) -> float:
    if not 0.0 < confidence < 1.0:
        raise InputError(f"confidence must be between 0 and 1, got {confidence}")
    tail = (1.0 - confidence) / (2.0 if two_sided else 1.0)
    return NormalDist().inv_cdf(1.0 - tail)


def wilson_interval(
    successes: npt.ArrayLike, n: npt.ArrayLike, confidence: float = 0.95
) -> tuple[FloatArray, FloatArray]:
    """Wilson score interval; n == 0 gives the uninformative [0, 1]."""
    x = np.asarray(successes, np.float64)
    m = np.asarray(n, np.float64)
    z = z_value(confidence)
    safe = np.where(m > 0, m, 1.0)
    p = x / safe
    denom = 1.0 + z * z / safe
    centre = (p + z * z / (2 * safe)) / denom
    half = z * np.sqrt(p * (1 - p) / safe + z * z / (4 * safe * safe)) / denom
    low = np.where(m > 0, np.clip(centre - half, 0.0, 1.0), 0.0)
    high = np.where(m > 0, np.clip(centre + half, 0.0, 1.0), 1.0)
    # exact endpoints at the boundaries (removes float dust)
    low = np.where((m > 0) & (x == 0), 0.0, low)
    high = np.where((m > 0) & (x == m), 1.0, high)
    return low, high


def newcombe_interval(
    x1: npt.ArrayLike,
    n1: npt.ArrayLike,
    x2: npt.ArrayLike,
    n2: npt.ArrayLike,
    confidence: float = 0.95,
) -> tuple[FloatArray, FloatArray]:
    """Interval for p1 - p2 of two independent rates (Newcombe's hybrid score)."""
    a1, m1 = np.asarray(x1, np.float64), np.asarray(n1, np.float64)
    a2, m2 = np.asarray(x2, np.float64), np.asarray(n2, np.float64)
    for a, m in ((a1, m1), (a2, m2)):
        if not np.all((a >= 0) & (a <= m)):  # also refuses NaN, and successes out of no rows
            raise InputError("newcombe_interval: successes must lie in [0, rows] (no successes out of 0 rows)")
    p1 = a1 / np.where(m1 > 0, m1, 1.0)
    p2 = a2 / np.where(m2 > 0, m2, 1.0)
    l1, u1 = wilson_interval(a1, m1, confidence)
    l2, u2 = wilson_interval(a2, m2, confidence)
    d = p1 - p2
    low = d - np.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = d + np.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return np.clip(low, -1.0, 1.0), np.clip(high, -1.0, 1.0)


def _binom_cdf_half(k: int, n: int) -> float:
    """P(X <= k) for X ~ Binomial(n, 1/2), summed in log space (stable for large n)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) for i in range(k + 1)]
    top = max(logs)
    return min(1.0, math.exp(top + math.log(sum(math.exp(v - top) for v in logs)) - n * math.log(2)))


def mcnemar_exact(changed_to_positive: int, changed_to_negative: int) -> float:
    """Two-sided exact McNemar p-value from the two discordant counts."""
    b, c = int(changed_to_positive), int(changed_to_negative)
    if b < 0 or c < 0:
        raise InputError("McNemar counts must be non-negative")
    if b + c == 0:
        return 1.0
    return min(1.0, 2.0 * _binom_cdf_half(min(b, c), b + c))


DISCORDANT = np.zeros((3, 2, 2), bool)
DISCORDANT[:, 0, 1] = DISCORDANT[:, 1, 0] = True  # reference and candidate decided differently


def bootstrap_counts(
    counts: npt.NDArray[np.int64], replicates: int = 1000, seed: int | None = 0, discordance_prior: float = 0.0
) -> npt.NDArray[np.int64]:
    """Replicates of a (G, 3, 2, 2) table, shape (R, G, 3, 2, 2): paired and stratified.

    Each group keeps its size; its 12 cells (label x reference x candidate) are drawn
    together, so the pairing of the two models' decisions on a row is preserved.

    ``discordance_prior`` adds that many pseudo-rows to each discordant cell (the two
    models disagree) of every label a group has rows of, before resampling. With few or no
    observed disagreements the plain bootstrap has (almost) no spread and would "prove"
    that two models agree from 40 identical rows; a Jeffreys-style 0.5 keeps the spread
    honest for small groups and is negligible for large ones.
    """
    if replicates < 1:
        raise InputError(f"replicates must be at least 1, got {replicates}")
    if discordance_prior < 0:
        raise InputError(f"discordance_prior must be non-negative, got {discordance_prior}")
    counts = np.asarray(counts)
    if counts.ndim != 4 or counts.shape[1:] != (3, 2, 2) or counts.dtype.kind not in "iu":
        raise InputError(f"bootstrap_counts: counts must be integers of shape (groups, 3, 2, 2), got {counts.shape}")
    if (counts < 0).any():
        raise InputError("bootstrap_counts: counts must be non-negative")
    g = counts.shape[0]
    flat = counts.reshape(g, -1)
    sizes = flat.sum(axis=1)
    has_label = counts.sum(axis=(-2, -1)) > 0  # (G, 3)
    prior = (discordance_prior * (has_label[:, :, None, None] & DISCORDANT)).reshape(g, -1)
    weights = flat + prior
    totals = weights.sum(axis=1)
    probs = weights / np.where(totals > 0, totals, 1)[:, None]
    probs[sizes == 0, 0] = 1.0  # an empty group stays empty: all of its 0 rows in one cell
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(sizes, probs, size=(replicates, g))
    return draws.reshape((replicates, *counts.shape)).astype(np.int64)


def percentile_interval(samples: npt.ArrayLike, confidence: float) -> Interval:
    s = np.asarray(samples, np.float64)
    s = s[~np.isnan(s)]
    if s.size == 0:
        return Interval(float("nan"), float("nan"))
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(s, [tail, 1.0 - tail])
    return Interval(float(low), float(high))


def holm(pvalues: npt.ArrayLike) -> FloatArray:
    """Holm step-down adjusted p-values (controls the family-wise error rate)."""
    p = np.asarray(pvalues, np.float64)
    m = p.size
    order = np.argsort(p, kind="stable")
    adjusted = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adjusted
    return out


def benjamini_hochberg(pvalues: npt.ArrayLike) -> FloatArray:
    """Benjamini-Hochberg adjusted p-values (controls the false discovery rate)."""
    p = np.asarray(pvalues, np.float64)
    m = p.size
    if m == 0:
        return p
    order = np.argsort(p, kind="stable")
    scaled = p[order] * m / np.arange(1, m + 1)
    adjusted = np.minimum.accumulate(scaled[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(1.0, adjusted)
    return out


def adjust(pvalues: npt.ArrayLike, method: str) -> FloatArray:
    if method == "holm":
        return holm(pvalues)
    if method in ("bh", "benjamini-hochberg", "fdr_bh"):
        return benjamini_hochberg(pvalues)
    if method == "bonferroni":
        p = np.asarray(pvalues, np.float64)
        return np.minimum(1.0, p * p.size)
    if method == "none":
        return np.asarray(pvalues, np.float64)
    raise InputError(f"unknown adjustment {method!r}; use holm, bh, bonferroni or none")


EXACT_BINOMIAL_MAX_N = 5_000_000  # beyond this the score test is accurate and the exact sum costs memory


def rate_test_pvalues(successes: float, n: float, threshold: float) -> tuple[float, float]:
    """One-sided exact binomial p-values for a rate against a threshold.

    Returns (p_above, p_below): P(X >= successes) and P(X <= successes) for X ~ Binomial(n,
    threshold). Small p_above is evidence the rate exceeds the threshold, small p_below that
    it is under it. Exact, because the normal score test rejects too often when
    n * threshold is small (a 2% cap on 30 rows). Above ``EXACT_BINOMIAL_MAX_N`` rows the
    score test (continuity-corrected) is used, where it is accurate.
    """
    if n <= 0:
        return 1.0, 1.0
    x, m = round(successes), round(n)
    t = min(max(threshold, 1e-300), 1.0)
    if t >= 1.0:
        return (1.0 if x >= m else 0.0), 1.0
    if m > EXACT_BINOMIAL_MAX_N:
        sd = math.sqrt(t * (1 - t) * m)
        dist = NormalDist()
        return 1.0 - dist.cdf((x - 0.5 - m * t) / sd), dist.cdf((x + 0.5 - m * t) / sd)
    log_pmf = _binomial_log_pmf(m, t)
    top = float(log_pmf.max())
    pmf = np.exp(log_pmf - top)
    total = float(pmf.sum())
    p_above = float(pmf[x:].sum() / total)
    p_below = float(pmf[: x + 1].sum() / total)
    return min(1.0, p_above), min(1.0, p_below)


def _binomial_log_pmf(n: int, p: float) -> FloatArray:
    """log P(X = k), k = 0..n, by the ratio recursion (no factorials, no scipy)."""
    k = np.arange(n, dtype=np.float64)
    steps = np.log((n - k) / (k + 1)) + math.log(p) - math.log1p(-p)
    return np.concatenate([[n * math.log1p(-p)], n * math.log1p(-p) + np.cumsum(steps)])
