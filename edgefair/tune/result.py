"""What a tune found: one record per variant tried, the Pareto frontier, the choice and its
held-out certificate. Pure values; ``output`` renders and writes them.

The fairness axis is a variant's **worst excess**: over every tested check of the policy on
the search split, the largest ``estimate - tolerance`` (all checks bound rates or rate
differences, so they share units; above 0 the estimate is outside the tolerance). The
objective axis is the latency ratio to the source at the deployment batch (``latency``) or
the gzip-compressed size over the source's (``size``: what a download costs; magnitude
pruning only saves size after compression).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from edgefair.core import metrics as m
from edgefair.core.tables import CountsTable
from edgefair.tune.measure import Latency
from edgefair.verification.api import EXIT_CODES, VerifyReport
from edgefair.verification.gate import GateResult
from edgefair.verification.policy import CheckKind, Policy

OBJECTIVES = ("latency", "size")


@dataclass(frozen=True)
class Fairness:
    """A variant's gate on the search split, boiled down to what the table shows."""

    verdict: str
    worst_excess: float  # max over tested checks of estimate - tolerance
    worst_check: str  # which check and group that was
    worst_gap: dict[str, Any]  # the largest difference_increase: metric, scope, estimate, interval
    accuracy: float
    reference_accuracy: float
    worst_negative_flip_rate: float
    failing: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "worst_excess": self.worst_excess,
            "worst_check": self.worst_check,
            "worst_gap_increase": self.worst_gap,
            "accuracy": self.accuracy,
            "reference_accuracy": self.reference_accuracy,
            "worst_negative_flip_rate": self.worst_negative_flip_rate,
            "failing": list(self.failing),
        }


def summarise(table: CountsTable, result: GateResult) -> Fairness:
    tested = [r for r in result.results if r.gated and r.estimate == r.estimate]
    worst = max(tested, key=lambda r: r.estimate - r.check.tolerance, default=None)
    gaps = [r for r in tested if r.check.kind is CheckKind.DIFFERENCE_INCREASE]
    gap = max(gaps, key=lambda r: r.estimate, default=None)
    total = table.counts.sum(axis=0)
    flips = m.compute(table.counts, "negative_flip_rate", "candidate")
    return Fairness(
        verdict=result.verdict,
        worst_excess=(worst.estimate - worst.check.tolerance) if worst else math.nan,
        worst_check=f"{worst.check.name} in {worst.group or worst.scope}" if worst else "none tested",
        worst_gap={}
        if gap is None
        else {
            "metric": gap.check.metric,
            "scope": gap.scope,
            "estimate": gap.estimate,
            "interval": list(gap.interval),
            "tolerance": gap.check.tolerance,
        },
        accuracy=float(m.compute(total, "accuracy", "candidate")),
        reference_accuracy=float(m.compute(total, "accuracy", "reference")),
        worst_negative_flip_rate=float(max((f for f in flips.tolist() if f == f), default=math.nan)),
        failing=tuple(f"{r.check.name} in {r.group or r.scope}" for r in result.failures()),
    )


@dataclass(frozen=True)
class VariantResult:
    name: str
    stage: str
    family: str
    spec: dict[str, Any]
    sha256: str | None = None
    size_bytes: int | None = None
    compressed_bytes: int | None = None
    latency: Latency | None = None
    fairness: Fairness | None = None
    cached: bool = False  # built and scored in an earlier run
    error: str | None = None  # could not be built (e.g. nothing of that kind to quantise)
    on_frontier: bool = False
    scored: str | None = None  # how its search-split table was scored (see splits.SplitScorer)

    @property
    def evaluated(self) -> bool:
        return self.fairness is not None and self.error is None

    def objective(self, objective: str, source_compressed: int) -> float:
        if objective == "latency":
            return self.latency.ratio if self.latency else math.nan
        return (self.compressed_bytes or 0) / source_compressed

    def beats_source(self, objective: str, source_compressed: int) -> bool:
        if objective == "latency":
            return bool(self.latency and self.latency.faster)
        return self.objective(objective, source_compressed) < 1.0

    def to_dict(self, objective: str, source_compressed: int) -> dict[str, Any]:
        return {
            "name": self.name,
            "stage": self.stage,
            "family": self.family,
            "spec": self.spec,
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "compressed_bytes": self.compressed_bytes,
            "latency": self.latency.to_dict() if self.latency else None,
            "objective_value": None if not self.evaluated else _num(self.objective(objective, source_compressed)),
            "beats_source": self.evaluated and self.beats_source(objective, source_compressed),
            "fairness": self.fairness.to_dict() if self.fairness else None,
            "cached": self.cached,
            "error": self.error,
            "on_frontier": self.on_frontier,
            "scored": self.scored,
        }


def _num(x: float) -> float | None:
    return None if x != x else float(x)


def frontier(variants: list[VariantResult], objective: str, source_compressed: int) -> set[int]:
    """Indices of the evaluated variants no other evaluated variant beats on both the
    objective and the worst excess (lower is better on each)."""
    points = [
        (v.objective(objective, source_compressed), v.fairness.worst_excess, i)
        for i, v in enumerate(variants)
        if v.evaluated and v.fairness is not None
    ]
    points = [p for p in points if p[0] == p[0] and p[1] == p[1]]
    out: set[int] = set()
    best = math.inf
    for _value, excess, i in sorted(points):
        if excess < best:
            out.add(i)
            best = excess
    return out


def choose(
    variants: list[VariantResult], objective: str, source_compressed: int, among: set[int] | None = None
) -> int | None:
    """The passing variant (of ``among``, when given) that beats the source by most on the
    objective (ties: the smaller worst excess, then the name), or None."""
    eligible = [
        (v.objective(objective, source_compressed), v.fairness.worst_excess, v.name, i)
        for i, v in enumerate(variants)
        if v.evaluated and v.fairness is not None and v.fairness.verdict == "pass"
        if v.beats_source(objective, source_compressed) and (among is None or i in among)
    ]
    return min(eligible)[3] if eligible else None


@dataclass(frozen=True)
class TuneResult:
    """The search (every variant, on the search split), the choice, and its certificate
    (a fresh verify on the held-out split only)."""

    source: dict[str, Any]  # path, sha256, size_bytes, compressed_bytes
    objective: str
    batch: int
    policy: Policy
    variants: tuple[VariantResult, ...]
    chosen: int | None
    certificate: VerifyReport | None
    chosen_model: bytes | None
    split: dict[str, Any]
    search: dict[str, Any]  # budget, elapsed, variants tried, cached, stopped early
    data: dict[str, Any]  # source name, label, sensitive, threshold
    note: str
    holdout_rows: Any = field(default=None, repr=False)  # the held-out row indices (numpy)

    @property
    def chosen_variant(self) -> VariantResult | None:
        return None if self.chosen is None else self.variants[self.chosen]

    @property
    def verdict(self) -> str:
        """The certificate's verdict, or "none" when nothing was chosen."""
        return self.certificate.verdict if self.certificate else "none"

    @property
    def exit_code(self) -> int:
        """0: chosen and certified; 1: nothing passes and beats the source, or the certificate
        fails; 3: the certificate is inconclusive."""
        return EXIT_CODES[self.certificate.verdict] if self.certificate else 1
