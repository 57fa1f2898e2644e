"""Check kinds beyond the four of ``gate``: ``group_increase`` and ``overall_increase``
(lower is better: a drop's evidence negated) and ``ratio`` (the candidate's smallest
between-groups ratio, min over max as fairlearn's ``<metric>_ratio``, must be at least
tolerance: the four-fifths rule). ``gate`` here gates every kind; verify and compare use
it. ``gate.gate`` (tune, counters, the field gate) gates the original four and refuses
these in one line.

A ratio is decided as its negation against -tolerance, so the shared one-sided tests and
adjustment of ``gate._decide`` apply unchanged; ``restore_ratios`` puts each result back
on the ratio's own scale (the policy's check, the ratio and its interval).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from edgefair.core import metrics as m
from edgefair.core import stats
from edgefair.core.tables import CountsTable
from edgefair.errors import InputError
from edgefair.verification import gate as base
from edgefair.verification.gate import Evidence, Floats, Found, GateResult, Scope, _decide, _split_small, _values
from edgefair.verification.policy import Check, CheckKind, Policy


def _negated(found: Found) -> Found:
    """Evidence of a drop read as evidence of an increase: every estimate and sample negated."""
    out: Found = []
    for e in found:
        if isinstance(e, Evidence):
            samples = None if e.samples is None else -e.samples
            out.append(dataclasses.replace(e, estimate=-e.estimate, samples=samples))
        else:
            out.append(dataclasses.replace(e, estimate=-e.estimate))
    return out


def group_increase(check: Check, scope: Scope, policy: Policy) -> Found:
    """No group's metric may grow by more than tolerance (for rates where lower is better)."""
    return _negated(base.group_drop(check, scope, policy))


def overall_increase(check: Check, scope: Scope, policy: Policy) -> Found:
    return _negated(base.overall_drop(check, scope, policy))


def ratio(check: Check, scope: Scope, policy: Policy) -> Found:
    """The candidate's between-groups ratio (smallest rate over largest, over gated groups)
    must be at least tolerance. Decided as its negation against -tolerance, so the shared
    one-sided tests apply; ``restore_ratios`` turns the results back."""
    v = _values(check, scope)
    found, gated = _split_small(check, scope, v, policy, between=True)
    if gated.sum() < 2:
        return found
    idx = np.flatnonzero(gated)

    def ratio_of(values: Floats) -> Floats:
        part = values[..., idx]
        top = part.max(axis=-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(top > 0, part.min(axis=-1) / np.where(top > 0, top, 1.0), np.nan)

    cand = float(ratio_of(v.candidate))
    samples = ratio_of(m.compute(scope.replicates, check.metric, "candidate"))
    low, high = idx[int(np.argmin(v.candidate[idx]))], idx[int(np.argmax(v.candidate[idx]))]
    note = (
        f"{v.names[low]} {v.candidate[low]:.4f} over {v.names[high]} {v.candidate[high]:.4f}; "
        f"reference ratio {float(ratio_of(v.reference)):.4f}"
    )
    flipped = dataclasses.replace(check, tolerance=-check.tolerance)
    found.append(
        Evidence(
            check=flipped,
            scope=scope.name,
            group=None,
            estimate=-cand,
            reference_value=float(ratio_of(v.reference)),
            candidate_value=cand,
            rows=int(v.rows[gated].min()),
            samples=-samples,
            note=note,
        )
    )
    return found


def restore_ratios(result: GateResult, policy: Policy) -> GateResult:
    """Ratio checks back on their own scale: the policy's check, the ratio and its interval."""
    checks = {c.name: c for c in policy.checks}
    out = []
    for r in result.results:
        if r.check.kind is CheckKind.RATIO and r.gated:  # decided on the negated scale
            lo, hi = r.interval
            r = dataclasses.replace(r, check=checks[r.check.name], estimate=-r.estimate, interval=(-hi, -lo))
        elif r.check.kind is CheckKind.RATIO:
            r = dataclasses.replace(r, estimate=r.candidate_value)
        out.append(r)
    return GateResult(tuple(out), result.verdict, result.confidence)


def decide(found: Found, policy: Policy) -> GateResult:
    """Adjusted verdicts of every piece of evidence, ratios on their own scale (every
    task's gate shares this)."""
    return restore_ratios(_decide(found, policy), policy)


CHECKS: dict[CheckKind, Callable[[Check, Scope, Policy], Found]] = {
    **base.CHECKS,
    CheckKind.GROUP_INCREASE: group_increase,
    CheckKind.OVERALL_INCREASE: overall_increase,
    CheckKind.RATIO: ratio,
}
OVERALL_KINDS = (CheckKind.OVERALL_DROP, CheckKind.OVERALL_INCREASE)


def gate(table: CountsTable, policy: Policy) -> GateResult:
    """``gate.gate`` for every check kind: the same bootstrap, scopes and decisions."""
    if not table.paired:
        raise InputError("gating needs a paired table (reference and candidate decisions)")
    if all(c.kind in base.CHECKS for c in policy.checks):
        return base.gate(table, policy)  # the four original kinds: exactly gate.gate
    reps = stats.bootstrap_counts(table.counts, policy.bootstrap_replicates, policy.seed, base.DISCORDANCE_PRIOR)
    tested = [
        base._scope(table, reps, attrs)
        for attrs, gated in base.scopes(table.attributes, policy.gate_intersections)
        if gated
    ]
    overall = Scope("overall", table, reps)
    found: Found = []
    for check in policy.checks:
        for scope in [overall] if check.kind in OVERALL_KINDS else tested:
            found.extend(CHECKS[check.kind](check, scope, policy))
    return decide(found, policy)
