"""Gate: a paired table and a policy in, a verdict per check out. Pure functions of tables.

Each check gets an estimate, one-sided p-values for "outside the tolerance" (fail) and
"inside it" (pass), both adjusted for the number of checks (Holm by default), an interval
at the simultaneous confidence 1 - alpha/m, and a verdict: ``fail`` when the adjusted
evidence says outside, ``pass`` when it says inside, ``inconclusive`` otherwise.

``difference_increase`` is gated on the worst pair of groups: the largest widening
|c_g - c_h| - |r_g - r_h| over gated pairs. It is paired row by row (so it is tight) and
bounds the growth of fairlearn's between-groups difference from above (a pass on it means
that difference did not grow by more than the tolerance either).

Intervals come from one paired, group-stratified bootstrap of the intersection table
(marginals are summed per replicate, so every scope sees the same resamples); per-group
rate caps use the score test behind the Wilson interval. Groups whose rate rests on fewer
rows than ``min_group_size`` are reported as inconclusive, never silently passed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from edgefair import metrics as m
from edgefair import stats
from edgefair.tables import CountsTable
from edgefair.verification.policy import Check, Policy

Counts = npt.NDArray[np.int64]


@dataclass(frozen=True)
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

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.check.name,
            "kind": self.check.kind,
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
        }


def _num(x: float) -> float | None:
    return None if x != x else float(x)


@dataclass(frozen=True)
class GateResult:
    results: tuple[CheckResult, ...]
    passed: bool
    confidence: float

    @property
    def verdict(self) -> str:
        return "pass" if self.passed else "fail"

    def counts(self) -> dict[str, int]:
        out = {"checks": len(self.results), "pass": 0, "fail": 0, "inconclusive": 0}
        for r in self.results:
            out[r.verdict] += 1
        return out

    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if r.verdict == "fail"]


def scopes(table: CountsTable, policy: Policy) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = [(a,) for a in table.attributes]
    if policy.gate_intersections and len(table.attributes) > 1:
        out.append(tuple(table.attributes))
    return out


def _marginal_replicates(table: CountsTable, reps: Counts, attrs: tuple[str, ...]) -> tuple[CountsTable, Counts]:
    marginal = table.marginal(list(attrs))
    pos = [table.attributes.index(a) for a in attrs]
    index = {k: i for i, k in enumerate(marginal.groups)}
    member = np.zeros((len(table.groups), len(marginal.groups)), np.int64)
    for i, key in enumerate(table.groups):
        member[i, index[tuple(key[p] for p in pos)]] = 1
    return marginal, np.einsum("rgabc,gh->rhabc", reps, member)


def _pvalues(samples: npt.NDArray[np.float64], tolerance: float) -> tuple[float, float]:
    """Bootstrap p-values: fail (H0: within tolerance) and pass (H0: beyond it)."""
    s = samples[~np.isnan(samples)]
    n = s.size
    if n == 0:
        return 1.0, 1.0
    return (1 + np.sum(s <= tolerance)) / (n + 1), (1 + np.sum(s >= tolerance)) / (n + 1)


def _bootstrap_result(
    check: Check,
    scope: str,
    group: str | None,
    estimate: float,
    samples: Any,
    ref: float,
    cand: float,
    rows: int,
    level: float,
) -> CheckResult:
    p_fail, p_pass = _pvalues(np.asarray(samples, np.float64), check.tolerance)
    iv = stats.percentile_interval(samples, level)
    return CheckResult(check, scope, group, estimate, (iv.low, iv.high), ref, cand, rows, p_fail, p_pass)


def _too_small(check: Check, scope: str, group: str, rows: int, ref: float, cand: float, policy: Policy) -> CheckResult:
    return CheckResult(
        check,
        scope,
        group,
        cand - ref if check.kind != "group_max" else cand,
        (math.nan, math.nan),
        ref,
        cand,
        rows,
        1.0,
        1.0,
        "inconclusive",
        policy.min_group_size,
        f"{rows} rows under the rate's denominator; groups under {policy.min_group_size} are reported, not gated",
        gated=False,
    )


def _run_check(
    check: Check, attrs: tuple[str, ...], table: CountsTable, reps: Counts, policy: Policy, level: float
) -> list[CheckResult]:
    scope = ", ".join(attrs)
    metric = check.metric
    ref_model: m.Model = "candidate" if metric in m.PAIRED_METRICS else "reference"
    ref_v = m.compute(table.counts, metric, ref_model)
    cand_v = m.compute(table.counts, metric, "candidate")
    den = np.minimum(m.denominator(table.counts, metric, "reference"), m.denominator(table.counts, metric, "candidate"))
    names = [", ".join(k) for k in table.groups]
    results: list[CheckResult] = []
    if check.kind == "difference_increase":
        gated = den >= policy.min_group_size
        for i in np.flatnonzero(~gated).tolist():
            results.append(_too_small(check, scope, names[i], int(den[i]), float(ref_v[i]), float(cand_v[i]), policy))
        if gated.sum() < 2:
            return results
        idx = np.flatnonzero(gated)
        i_pair, j_pair = np.triu_indices(len(idx), k=1)

        def widening(cand: npt.NDArray[np.float64], ref: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
            c, r = cand[..., idx], ref[..., idx]
            grown = np.abs(c[..., i_pair] - c[..., j_pair]) - np.abs(r[..., i_pair] - r[..., j_pair])
            return grown

        observed = widening(cand_v, ref_v)
        worst = int(np.argmax(observed))
        samples = widening(m.compute(reps, metric, "candidate"), m.compute(reps, metric, ref_model)).max(axis=-1)
        r_gap = float(np.max(ref_v[gated]) - np.min(ref_v[gated]))
        c_gap = float(np.max(cand_v[gated]) - np.min(cand_v[gated]))
        g, h = idx[i_pair[worst]], idx[j_pair[worst]]
        res = _bootstrap_result(
            check, scope, None, float(observed[worst]), samples, r_gap, c_gap, int(den[gated].min()), level
        )
        note = (
            f"{names[g]} vs {names[h]}: difference {abs(ref_v[g] - ref_v[h]):.4f} -> "
            f"{abs(cand_v[g] - cand_v[h]):.4f}; between-groups difference {r_gap:.4f} -> {c_gap:.4f}"
        )
        results.append(_with(res, note=note))
        return results
    for i, name in enumerate(names):
        if den[i] < policy.min_group_size:
            results.append(_too_small(check, scope, name, int(den[i]), float(ref_v[i]), float(cand_v[i]), policy))
            continue
        if check.kind == "group_max":
            successes = float(np.rint(cand_v[i] * den[i]))
            p_fail, p_pass = stats.rate_test_pvalues(successes, float(den[i]), check.tolerance)
            low, high = stats.wilson_interval(successes, den[i], level)
            results.append(
                CheckResult(
                    check,
                    scope,
                    name,
                    float(cand_v[i]),
                    (float(low), float(high)),
                    float(ref_v[i]),
                    float(cand_v[i]),
                    int(den[i]),
                    p_fail,
                    p_pass,
                )
            )
        else:  # group_drop
            samples = m.compute(reps[:, i], metric, ref_model) - m.compute(reps[:, i], metric, "candidate")
            results.append(
                _bootstrap_result(
                    check,
                    scope,
                    name,
                    float(ref_v[i] - cand_v[i]),
                    samples,
                    float(ref_v[i]),
                    float(cand_v[i]),
                    int(den[i]),
                    level,
                )
            )
    return results


def _with(result: CheckResult, **changes: Any) -> CheckResult:
    values = {**result.__dict__, **changes}
    return CheckResult(**values)


def _overall(check: Check, table: CountsTable, reps: Counts, level: float) -> CheckResult:
    metric = check.metric
    ref_model: m.Model = "candidate" if metric in m.PAIRED_METRICS else "reference"
    total, total_reps = table.counts.sum(axis=0), reps.sum(axis=1)
    ref_v, cand_v = float(m.compute(total, metric, ref_model)), float(m.compute(total, metric, "candidate"))
    samples = m.compute(total_reps, metric, ref_model) - m.compute(total_reps, metric, "candidate")
    return _bootstrap_result(check, "overall", None, ref_v - cand_v, samples, ref_v, cand_v, table.rows, level)


def gate(table: CountsTable, policy: Policy) -> GateResult:
    """Verdicts for every check of ``policy`` on a paired table."""
    if not table.paired:
        from edgefair.errors import InputError

        raise InputError("gating needs a paired table (reference and candidate decisions)")
    reps = stats.bootstrap_counts(table.counts, policy.bootstrap_replicates, policy.seed)
    provisional: list[CheckResult] = []
    n_checks = _count_checks(table, policy)
    simultaneous = policy.adjustment in ("holm", "bonferroni")
    level = 1.0 - policy.alpha / max(1, n_checks) if simultaneous else policy.confidence
    for check in policy.checks:
        if check.kind == "overall_drop":
            provisional.append(_overall(check, table, reps, level))
            continue
        for attrs in scopes(table, policy):
            scope_table, scope_reps = _marginal_replicates(table, reps, attrs)
            provisional.extend(_run_check(check, attrs, scope_table, scope_reps, policy, level))
    return _decide(provisional, policy, level)


def _count_checks(table: CountsTable, policy: Policy) -> int:
    n = 0
    for check in policy.checks:
        if check.kind in ("overall_drop", "difference_increase"):
            n += 1 if check.kind == "overall_drop" else len(scopes(table, policy))
        else:
            n += sum(len(table.marginal(list(a)).groups) for a in scopes(table, policy))
    return n


def _decide(provisional: list[CheckResult], policy: Policy, level: float) -> GateResult:
    testable = [i for i, r in enumerate(provisional) if r.gated]
    adj_fail = stats.adjust([provisional[i].p_fail for i in testable], policy.adjustment)
    adj_pass = stats.adjust([provisional[i].p_pass for i in testable], policy.adjustment)
    final = list(provisional)
    for j, i in enumerate(testable):
        r = provisional[i]
        if adj_fail[j] < policy.alpha:
            verdict = "fail"
        elif adj_pass[j] < policy.alpha:
            verdict = "pass"
        else:
            verdict = "inconclusive"
        needed = _rows_needed(r) if verdict == "inconclusive" else None
        final[i] = _with(r, p_fail=float(adj_fail[j]), p_pass=float(adj_pass[j]), verdict=verdict, rows_needed=needed)
    fails = any(r.verdict == "fail" for r in final)
    unsure = any(r.verdict == "inconclusive" for r in final)
    passed = not fails and not (unsure and policy.inconclusive_fails)
    return GateResult(tuple(final), passed, level)


def _rows_needed(r: CheckResult) -> int | None:
    """Rows (per group, for group checks) at which the interval would clear the tolerance,
    assuming the estimate holds and the width shrinks as 1/sqrt(rows)."""
    half = (r.interval[1] - r.interval[0]) / 2.0
    distance = abs(r.estimate - r.check.tolerance)
    if not (half > 0 and distance > 0) or half != half:
        return None
    return math.ceil(r.rows * (half / distance) ** 2)
