"""Gate: a paired table and a policy in, a verdict per check out. Pure functions of tables.

Each check kind has one function that turns a scope's table into evidence: an estimate and
either bootstrap replicates of it or (for per-group rate caps) the exact successes and rows
of a score test. ``_decide`` does what every kind shares: one-sided p-values for "outside the
tolerance" (fail) and "inside it" (pass), adjusted for the number m of tested checks (Holm by
default); intervals at the simultaneous confidence 1 - alpha/m for Holm and Bonferroni (the
plain confidence with BH or none); ``fail`` when the adjusted evidence says outside, ``pass``
when it says inside, ``inconclusive`` otherwise. ``difference_increase`` is gated on the worst
pair of gated groups, the widening |c_g - c_h| - |r_g - r_h|: paired row by row, and a bound
on the growth of fairlearn's between-groups difference. One paired, group-stratified bootstrap
of the intersection table serves every scope (marginals summed per replicate). Groups under
``min_group_size`` rows, and a between-groups check on a single group, are reported as
inconclusive, never silently passed or dropped, and are not counted among the tested checks.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from edgefair.core import metrics as m
from edgefair.core import stats
from edgefair.core.tables import CountsTable
from edgefair.errors import InputError
from edgefair.verification.policy import Check, CheckKind, KindTable, Policy
from edgefair.verification.policy import small_estimate as _small_estimate

Counts = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]
DISCORDANCE_PRIOR = 0.5  # pseudo-disagreements per cell: no evidence of agreement from a few rows


@dataclass(frozen=True, kw_only=True)
class CheckResult:
    check: Check
    scope: str  # the sensitive attribute(s), or "overall"
    group: str | None  # one group for per-group checks
    estimate: float
    interval: tuple[float, float]
    reference_value: float
    candidate_value: float
    rows: int
    p_fail: float
    p_pass: float
    verdict: str = "inconclusive"
    rows_needed: int | None = None
    note: str = ""
    gated: bool = True  # False: too few rows to test; reported as inconclusive
    leans_fail: bool = False  # inconclusive, with the evidence on the failing side of the tolerance

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.check.name,
            "kind": self.check.kind.value,
            "metric": self.check.metric,
            "tolerance": self.check.tolerance,
            "scope": self.scope,
            "group": self.group,
            "estimate": _num(self.estimate),
            "interval": [_num(self.interval[0]), _num(self.interval[1])],
            "reference_value": _num(self.reference_value),
            "candidate_value": _num(self.candidate_value),
            "rows": self.rows,
            "p_value_fail": self.p_fail,
            "p_value_pass": self.p_pass,
            "verdict": self.verdict,
            "rows_needed": self.rows_needed,
            "note": self.note,
            "gated": self.gated,
            **({"leans_fail": True} if self.leans_fail else {}),
        }


def _num(x: float) -> float | None:
    return None if x != x else float(x)


@dataclass(frozen=True)
class GateResult:
    results: tuple[CheckResult, ...]
    verdict: str  # "pass", "fail" or "inconclusive" (no check failed, and none passed)
    confidence: float  # the simultaneous level of every interval

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"

    def unsettled(self) -> list[CheckResult]:
        return [r for r in self.results if r.verdict == "inconclusive"]

    def counts(self) -> dict[str, int]:
        verdicts = [r.verdict for r in self.results]
        return {"checks": len(verdicts), **{v: verdicts.count(v) for v in ("pass", "fail", "inconclusive")}}

    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if r.verdict == "fail"]


@dataclass(frozen=True)
class Scope:
    """One way of grouping rows: its name, its table and the table's bootstrap replicates."""

    name: str
    table: CountsTable
    replicates: Counts


@dataclass(frozen=True, kw_only=True)
class Evidence:
    """One tested quantity before adjustment: bootstrap replicates or score-test counts."""

    check: Check
    scope: str
    group: str | None
    estimate: float
    reference_value: float
    candidate_value: float
    rows: int
    samples: Floats | None = None
    successes: int | None = None
    note: str = ""


def scopes(attributes: tuple[str, ...], gate_intersections: bool) -> list[tuple[tuple[str, ...], bool]]:
    """Every grouping a report shows and whether the gate tests it: each attribute alone
    (tested) and, with several attributes, their intersection (tested if the policy says)."""
    out: list[tuple[tuple[str, ...], bool]] = [((a,), True) for a in attributes]
    if len(attributes) > 1:
        out.append((tuple(attributes), gate_intersections))
    return out


def _scope(table: CountsTable, reps: Counts, attrs: tuple[str, ...]) -> Scope:
    marginal = table.marginal(list(attrs))
    pos = [table.attributes.index(a) for a in attrs]
    index = {k: i for i, k in enumerate(marginal.groups)}
    of = np.array([index[tuple(key[p] for p in pos)] for key in table.groups], np.int64)
    # each replicate's counts summed into the scope's groups: one pass over the rows of the
    # replicates, linear in groups (a 0/1 membership product was quadratic: minutes at 4,000 groups)
    order = np.argsort(of, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(of[order]) != 0])  # every scope group has a member
    return Scope(", ".join(attrs), marginal, np.add.reduceat(reps[:, order], starts, axis=1))


def _untested(
    check: Check, scope: str, group: str | None, rows: int, ref: float, cand: float, note: str
) -> CheckResult:
    nan, estimate = math.nan, math.nan if group is None else _small_estimate(check.kind, ref, cand)
    return CheckResult(
        check=check, scope=scope, group=group, estimate=estimate, interval=(nan, nan), reference_value=ref,
        candidate_value=cand, rows=rows, p_fail=1.0, p_pass=1.0, note=note, gated=False,
    )  # fmt: skip


def _too_small(check: Check, scope: str, group: str, rows: int, ref: float, cand: float, policy: Policy) -> CheckResult:
    note = f"{rows} rows under the rate's denominator; groups under {policy.min_group_size} are reported, not gated"
    return dataclasses.replace(_untested(check, scope, group, rows, ref, cand, note), rows_needed=policy.min_group_size)


@dataclass(frozen=True)
class _Values:
    reference: Floats
    candidate: Floats
    rows: Counts  # the smaller of the two models' denominators, per group
    names: list[str]


def _values(check: Check, scope: Scope) -> _Values:
    counts = scope.table.counts
    rows = np.minimum(m.parts(counts, check.metric, "reference")[1], m.parts(counts, check.metric, "candidate")[1])
    return _Values(
        m.compute(counts, check.metric, "reference"),
        m.compute(counts, check.metric, "candidate"),
        rows,
        [", ".join(k) for k in scope.table.groups],
    )


Found = list[Evidence | CheckResult]


def _split_small(
    check: Check, scope: Scope, v: _Values, policy: Policy, between: bool = False
) -> tuple[Found, npt.NDArray[np.bool_]]:
    gated = v.rows >= policy.min_group_size
    small: Found = [
        _too_small(check, scope.name, v.names[i], int(v.rows[i]), float(v.reference[i]), float(v.candidate[i]), policy)
        for i in np.flatnonzero(~gated).tolist()
    ]
    if between and len(v.names) < 2:  # a between-groups check on one group is said, never dropped
        only = f" ({v.names[0]})" if v.names else ""
        says = f"{scope.name} has {len(v.names)} group in the data{only}: a between-groups check needs two"
        small.append(_untested(check, scope.name, None, int(v.rows.sum()), math.nan, math.nan, says))
    return small, gated


def difference_increase(check: Check, scope: Scope, policy: Policy) -> Found:
    v = _values(check, scope)
    found, gated = _split_small(check, scope, v, policy, between=True)
    if gated.sum() < 2:
        return found
    idx = np.flatnonzero(gated)
    i_pair, j_pair = np.triu_indices(len(idx), k=1)

    def widening(cand: Floats, ref: Floats) -> Floats:
        c, r = cand[..., idx], ref[..., idx]
        return np.abs(c[..., i_pair] - c[..., j_pair]) - np.abs(r[..., i_pair] - r[..., j_pair])

    observed = widening(v.candidate, v.reference)
    worst = int(np.argmax(observed))
    reps = scope.replicates
    samples = widening(m.compute(reps, check.metric, "candidate"), m.compute(reps, check.metric, "reference"))
    r_gap = float(np.max(v.reference[gated]) - np.min(v.reference[gated]))
    c_gap = float(np.max(v.candidate[gated]) - np.min(v.candidate[gated]))
    g, h = idx[i_pair[worst]], idx[j_pair[worst]]
    note = (
        f"{v.names[g]} vs {v.names[h]}: difference {abs(v.reference[g] - v.reference[h]):.4f} -> "
        f"{abs(v.candidate[g] - v.candidate[h]):.4f}; between-groups difference {r_gap:.4f} -> {c_gap:.4f}"
    )
    found.append(
        Evidence(
            check=check,
            scope=scope.name,
            group=None,
            estimate=float(observed[worst]),
            reference_value=r_gap,
            candidate_value=c_gap,
            rows=int(v.rows[gated].min()),
            samples=samples.max(axis=-1),
            note=note,
        )
    )
    return found


def group_max(check: Check, scope: Scope, policy: Policy) -> Found:
    v = _values(check, scope)
    found, gated = _split_small(check, scope, v, policy)
    successes, trials = m.parts(scope.table.counts, check.metric, "candidate")  # a cap on the candidate's rate
    for i in np.flatnonzero(gated).tolist():
        found.append(
            Evidence(
                check=check,
                scope=scope.name,
                group=v.names[i],
                estimate=float(v.candidate[i]),
                reference_value=float(v.reference[i]),
                candidate_value=float(v.candidate[i]),
                rows=int(trials[i]),
                successes=int(successes[i]),
            )
        )
    return found


def group_drop(check: Check, scope: Scope, policy: Policy) -> Found:
    v = _values(check, scope)
    found, gated = _split_small(check, scope, v, policy)
    for i in np.flatnonzero(gated).tolist():
        reps = scope.replicates[:, i]
        found.append(
            Evidence(
                check=check,
                scope=scope.name,
                group=v.names[i],
                estimate=float(v.reference[i] - v.candidate[i]),
                reference_value=float(v.reference[i]),
                candidate_value=float(v.candidate[i]),
                rows=int(v.rows[i]),
                samples=m.compute(reps, check.metric, "reference") - m.compute(reps, check.metric, "candidate"),
            )
        )
    return found


def overall_drop(check: Check, scope: Scope, policy: Policy) -> Found:
    total, reps = scope.table.counts.sum(axis=0), scope.replicates.sum(axis=1)
    ref_v = float(m.compute(total, check.metric, "reference"))
    cand_v = float(m.compute(total, check.metric, "candidate"))
    rows = int(min(m.parts(total, check.metric, "reference")[1], m.parts(total, check.metric, "candidate")[1]))
    if rows < policy.min_group_size:
        return [_too_small(check, "overall", "all rows", rows, ref_v, cand_v, policy)]
    samples = m.compute(reps, check.metric, "reference") - m.compute(reps, check.metric, "candidate")
    return [
        Evidence(
            check=check,
            scope="overall",
            group=None,
            estimate=ref_v - cand_v,
            reference_value=ref_v,
            candidate_value=cand_v,
            rows=scope.table.rows,
            samples=samples,
        )
    ]


CHECKS: dict[CheckKind, Callable[[Check, Scope, Policy], Found]] = {
    CheckKind.DIFFERENCE_INCREASE: difference_increase,
    CheckKind.GROUP_MAX: group_max,
    CheckKind.GROUP_DROP: group_drop,
    CheckKind.OVERALL_DROP: overall_drop,
}
CHECKS = KindTable(CHECKS)  # gate_kinds' kinds (increase, ratio) are refused in one line here, not a KeyError


def gate(table: CountsTable, policy: Policy) -> GateResult:
    """Verdicts for every check of ``policy`` on a paired table."""
    if not table.paired:
        raise InputError("gating needs a paired table (reference and candidate decisions)")
    reps = stats.bootstrap_counts(table.counts, policy.bootstrap_replicates, policy.seed, DISCORDANCE_PRIOR)
    tested = [
        _scope(table, reps, attrs) for attrs, gated in scopes(table.attributes, policy.gate_intersections) if gated
    ]
    overall = Scope("overall", table, reps)
    found: Found = []
    for check in policy.checks:
        for scope in [overall] if check.kind is CheckKind.OVERALL_DROP else tested:
            found.extend(CHECKS[check.kind](check, scope, policy))
    return _decide(found, policy)


def _pvalues(samples: Floats, tolerance: float) -> tuple[float, float]:
    """Bootstrap p-values: fail (H0: within tolerance) and pass (H0: beyond it)."""
    s = samples[~np.isnan(samples)]
    n = s.size
    if n == 0:
        return 1.0, 1.0
    return float((1 + np.sum(s <= tolerance)) / (n + 1)), float((1 + np.sum(s >= tolerance)) / (n + 1))


def _test(e: Evidence, level: float) -> tuple[tuple[float, float], float, float]:
    """Interval at ``level`` and the unadjusted (p_fail, p_pass) of one piece of evidence."""
    if e.samples is not None:
        iv = stats.percentile_interval(e.samples, level)
        return (iv.low, iv.high), *_pvalues(np.asarray(e.samples, np.float64), e.check.tolerance)
    assert e.successes is not None
    low, high = stats.wilson_interval(e.successes, e.rows, level)
    p_fail, p_pass = stats.rate_test_pvalues(e.successes, e.rows, e.check.tolerance)
    return (float(low), float(high)), p_fail, p_pass


def _floor_note(e: Evidence, raw: tuple[float, float], policy: Policy, tested: int) -> str:
    """Say so when replicates, not rows, are missing: every sample lies on one side (the p-value
    at its floor 1/(R+1)) and the adjustment for m checks still keeps it above alpha."""
    floor = 1.0 / (policy.bootstrap_replicates + 1)
    if e.samples is None or min(raw) > floor * (1 + 1e-9):
        return e.note
    needed = math.ceil(tested / policy.alpha)
    replicates = policy.bootstrap_replicates
    hint = f"the bootstrap cannot decide {tested} checks at bootstrap_replicates {replicates}; use >= {needed}"
    return f"{e.note}; {hint}" if e.note else hint


def simultaneous_level(policy: Policy, tested: int) -> float:
    """The level of each interval: 1 - alpha/m for the family-wise adjustments, over the
    same m checks the p-values are adjusted for."""
    if policy.adjustment in ("holm", "bonferroni"):
        return 1.0 - policy.alpha / max(1, tested)
    return policy.confidence


def _decide(found: Found, policy: Policy) -> GateResult:
    evidence = [e for e in found if isinstance(e, Evidence)]
    level = simultaneous_level(policy, len(evidence))
    tests = [_test(e, level) for e in evidence]
    adj_fail = stats.adjust([t[1] for t in tests], policy.adjustment)
    adj_pass = stats.adjust([t[2] for t in tests], policy.adjustment)
    decided: dict[int, CheckResult] = {}
    for j, (e, (interval, _, _)) in enumerate(zip(evidence, tests, strict=True)):
        p_fail, p_pass = float(adj_fail[j]), float(adj_pass[j])
        verdict = "fail" if p_fail < policy.alpha else "pass" if p_pass < policy.alpha else "inconclusive"
        result = CheckResult(
            check=e.check,
            scope=e.scope,
            group=e.group,
            estimate=e.estimate,
            interval=interval,
            reference_value=e.reference_value,
            candidate_value=e.candidate_value,
            rows=e.rows,
            p_fail=p_fail,
            p_pass=p_pass,
            verdict=verdict,
            note=e.note,
        )
        if verdict == "inconclusive":
            note = _floor_note(e, (tests[j][1], tests[j][2]), policy, len(evidence))
            leans = bool(e.estimate > e.check.tolerance)  # evidence scale: beyond the tolerance is failing
            result = dataclasses.replace(result, rows_needed=_rows_needed(result), note=note, leans_fail=leans)
        decided[id(e)] = result
    final = tuple(decided[id(x)] if isinstance(x, Evidence) else x for x in found)
    leaning = sum(r.leans_fail for r in final)
    return GateResult(final, overall_verdict([r.verdict for r in final], policy.inconclusive_fails, leaning), level)


def overall_verdict(verdicts: list[str], inconclusive_fails: bool, leaning: int = 0) -> str:
    """Fail if a check failed (or was inconclusive, if the policy says so); pass if one passed and
    none leans towards failing (estimate beyond tolerance); else inconclusive: no evidence is no pass."""
    if "fail" in verdicts or (inconclusive_fails and "inconclusive" in verdicts):
        return "fail"
    return "pass" if "pass" in verdicts and not leaning else "inconclusive"


def _rows_needed(r: CheckResult) -> int | None:
    """Rows (per group check: per group) at which the interval would clear the tolerance if the estimate
    held and the width shrank as 1/sqrt(rows); None if no more than it has (rows are not what is missing)."""
    half = (r.interval[1] - r.interval[0]) / 2.0
    distance = abs(r.estimate - r.check.tolerance)
    if not (half > 0 and distance > 0) or half != half:
        return None
    needed = math.ceil(r.rows * (half / distance) ** 2)
    return needed if needed > r.rows else None
