"""Field checks for a served model: the gate on the shadow's paired table, drift of the
serving version, and what /fairness and /metrics show of them.

The gate is ``verification.gate.gate`` with the policy verify uses; a look runs it at the
watch's per-look level (alpha / max_looks, see ``runtime.incidents``). Drift has one row
per group and metric and no adjustment of its own, so a look runs it at the per-look
level divided by its number of decided rows (Bonferroni again). Shown results respect the
server's ``min_cell``: a check resting on fewer rows is withheld.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from edgefair.core.tables import CountsTable
from edgefair.errors import EdgefairError
from edgefair.runtime.drift import DriftTolerances, drift
from edgefair.runtime.incidents import FieldVerdict
from edgefair.runtime.session import FairSession
from edgefair.verification.gate import gate
from edgefair.verification.policy import Policy


def gate_check(table: Callable[[], CountsTable], policy: Policy) -> Callable[[float], FieldVerdict]:
    """The policy's gate on the current paired table, at a look's level."""

    def check(level: float) -> FieldVerdict:
        return gate_verdict(table(), policy, level)

    return check


def gate_verdict(table: CountsTable, policy: Policy, level: float) -> FieldVerdict:
    if not table.groups or not table.counts[:, :2].any():
        return FieldVerdict("inconclusive", (), level, {}, "no labelled rows yet: nothing to decide")
    try:
        result = gate(table, dataclasses.replace(policy, confidence=level))
    except EdgefairError as exc:
        return FieldVerdict("inconclusive", (), level, {}, str(exc))
    failing = tuple(_check_row(r.to_dict()) for r in result.failures())
    return FieldVerdict(result.verdict, failing, result.confidence, result.counts())


def _check_row(doc: dict[str, Any]) -> dict[str, Any]:
    keys = ("check", "scope", "group", "estimate", "interval", "tolerance", "rows", "p_value_fail", "note")
    return {k: doc[k] for k in keys}


def drift_check(session: FairSession) -> Callable[[float], FieldVerdict]:
    """Drift of ``session``'s counters against its certificate's baseline, at a look's level."""

    def check(level: float) -> FieldVerdict:
        baseline = session.bundle.baseline() if session.bundle else None
        if baseline is None:
            return FieldVerdict("inconclusive", (), level, {})
        field = session.table()
        first = drift(field, baseline, DriftTolerances(confidence=level))
        decided = max(1, sum(1 for r in first["rows"] if "interval" in r))
        corrected = 1.0 - (1.0 - level) / decided
        result = drift(field, baseline, DriftTolerances(confidence=corrected))
        failing = tuple(
            {
                "check": f"{r['metric']}:drift",
                "scope": r["group"].split("=", 1)[0],
                "group": r["group"],
                "estimate": r.get("difference", r.get("value")),
                "interval": r["interval"],
                "tolerance": r["tolerance"],
                "rows": r["field_rows"],
                "note": f"field vs the certificate's baseline at confidence {corrected:.6f}",
            }
            for r in result["rows"]
            if r["verdict"] == "fail"
        )
        counts = {v: sum(1 for r in result["rows"] if r["verdict"] == v) for v in ("pass", "fail", "inconclusive")}
        return FieldVerdict(result["verdict"], failing, corrected, counts)

    return check


def shown(verdict: FieldVerdict | None, min_cell: int) -> dict[str, Any] | None:
    """A verdict as /fairness shows it: failing checks on fewer than ``min_cell`` rows withheld."""
    if verdict is None:
        return None
    rows = [r for r in verdict.failing if (r.get("rows") or 0) >= min_cell]
    return {
        "verdict": verdict.verdict,
        "level": verdict.level,
        "counts": verdict.counts,
        "failing": rows,
        "withheld": len(verdict.failing) - len(rows),
        "note": verdict.note,
    }


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def pair_lines(model: str, candidate: int, table: CountsTable, min_cell: int) -> list[str]:
    """Paired decisions per attribute and group (cells under ``min_cell`` left out)."""
    out = []
    for attr in table.attributes:
        marginal = table.marginal([attr])
        for key, counts in zip(marginal.groups, marginal.counts, strict=True):
            by_pair = counts.sum(axis=0)  # over labels: reference x candidate decisions
            for r in (0, 1):
                for c in (0, 1):
                    n = int(by_pair[r, c])
                    if n >= min_cell:
                        out.append(
                            f'edgefair_field_pairs_total{{model="{_label(model)}",candidate="{candidate}",'
                            f'attribute="{_label(attr)}",group="{_label(key[0])}",reference_decision="{r}",'
                            f'candidate_decision="{c}"}} {n}'
                        )
    return out
