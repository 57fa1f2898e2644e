"""The gate for multi-class and regression models: the same checks, verdicts and
adjustment as ``gate`` (its ``decide``), over a K-class table or a moments table.

A scope gives, per group, a value with a class axis (K classes for per-class rates, one
otherwise) for each model, the same for every replicate, and the rows under each value.
Replicates are the paired multinomial bootstrap of the K-class table (as the binary gate)
or normal draws of the moments (regression: the CLT, paired). Per-class checks take the
worst class: the largest widening over classes and pairs of groups, the largest drop
over a group's classes.

Which checks apply depends on the task (``check_policy``): multi-class checks use
accuracy, selection_rate, true_positive_rate (per class) and the flip rates; regression
checks use the error metrics of ``core.regression``. A check that has no meaning for the
model's task is refused before any data is read, in one line.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from edgefair.core import multiclass, regression
from edgefair.errors import PolicyError
from edgefair.verification.gate import CheckResult, Evidence, GateResult, _untested, scopes
from edgefair.verification.gate_kinds import decide, gate
from edgefair.verification.policy import Check, CheckKind, Policy

Floats = npt.NDArray[np.float64]
Found = list[Evidence | CheckResult]
QUALITY_DROP = (CheckKind.GROUP_DROP, CheckKind.OVERALL_DROP)
# A regression check's replicates are normal draws from the group's moments (the CLT): with a
# handful of rows that interval is far too narrow, so such groups are reported, not gated,
# whatever min_group_size says (the binary gate's exact tests and pseudo-counts need no floor)
NORMAL_MIN_ROWS = 30
MAX_REPLICATE_CELLS = 30_000_000  # 240 MB of int64 replicates, a few copies of it per scope


def check_policy(policy: Policy, task: str, positive_class: int | None = None) -> None:
    """Refuse, in one line, a check with no meaning for the task (before the data pass)."""
    for i, c in enumerate(policy.checks):
        at = f"policy: checks[{i}] ({c.name})"
        is_regression_metric = c.metric in regression.METRICS
        if task == "binary" or (task == "multiclass" and positive_class is not None):
            if is_regression_metric:
                raise PolicyError(f"{at}: {c.metric!r} is a regression metric; this model is a binary classifier")
            continue
        if task == "multiclass" and c.metric not in multiclass.METRICS:
            raise PolicyError(
                f"{at}: {c.metric!r} has no multi-class meaning; use accuracy, selection_rate, "
                "true_positive_rate or a flip rate, or --positive-label CLASS for one-vs-rest metrics"
            )
        if task == "multiclass" and c.kind is CheckKind.RATIO:
            raise PolicyError(f"{at}: ratio checks apply to binary metrics; give --positive-label CLASS")
        if task == "regression":
            if not is_regression_metric:
                raise PolicyError(
                    f"{at}: {c.metric!r} is a classifier metric; regression checks use "
                    f"{', '.join(regression.METRICS[1:])}"
                )
            if c.metric in regression.ERROR_METRICS and c.kind in QUALITY_DROP:
                kind = "group_increase" if c.kind is CheckKind.GROUP_DROP else "overall_increase"
                raise PolicyError(f"{at}: {c.metric!r} is an error (lower is better); use kind {kind!r}")
            if c.kind is CheckKind.RATIO:
                raise PolicyError(f"{at}: ratio checks apply to rates of classifiers")


def regression_policy_needed(policy: Policy) -> bool:
    """A policy with no regression check (e.g. the default) cannot gate a regression model."""
    return not any(c.metric in regression.METRICS for c in policy.checks)


@dataclass(frozen=True)
class TaskScope:
    """One grouping of rows: values per group and class, for each model and replicate."""

    name: str
    names: list[str]
    value: Callable[[str, str], Floats]  # (metric, model) -> (G, C)
    sampled: Callable[[str, str], Floats]  # (metric, model) -> (R, G, C)
    rows: Callable[[str], Floats]  # metric -> (G, C) rows under each value (the smaller model's)
    exact: Callable[[str], tuple[Any, Any] | None]  # candidate successes and trials, (G, C), or None
    floor: int = 0  # rows the scope's intervals need whatever the policy says (regression's CLT draws)

    def min_rows(self, policy: Policy) -> int:
        return max(policy.min_group_size, self.floor)


def _multiclass_scope(name: str, names: list[str], counts: Any, reps: Any) -> TaskScope:
    def shaped(a: Any, lead: int) -> Floats:
        arr = np.asarray(a, np.float64)
        return arr if arr.ndim == lead + 1 else arr[..., None]

    def rows(metric: str) -> Floats:
        ref = multiclass.parts(counts, metric, "reference")[1]
        cand = multiclass.parts(counts, metric, "candidate")[1]
        return shaped(np.minimum(ref, cand), 1)

    def exact(metric: str) -> tuple[Any, Any] | None:
        num, den = multiclass.parts(counts, metric, "candidate")
        return shaped(num, 1), shaped(den, 1)

    return TaskScope(
        name,
        names,
        lambda m, model: shaped(multiclass.compute(counts, m, model), 1),
        lambda m, model: shaped(multiclass.compute(reps, m, model), 2),
        rows,
        exact,
    )


def _regression_scope(name: str, names: list[str], sums: Any, reps: Any) -> TaskScope:
    n = np.asarray(sums[..., 0], np.float64)[..., None]
    return TaskScope(
        name,
        names,
        lambda m, model: regression.compute_from_sums(sums, m, model)[..., None],
        lambda m, model: regression.compute_from_sums(reps, m, model)[..., None],
        lambda m: n,
        lambda m: None,
        NORMAL_MIN_ROWS,
    )


def _too_small(
    check: Check, scope: TaskScope, group: str, rows: int, ref: float, cand: float, policy: Policy
) -> CheckResult:
    floor = scope.min_rows(policy)
    why = f" (a normal interval needs {scope.floor})" if floor > policy.min_group_size else ""
    note = f"{rows} rows under the value; groups under {floor}{why} are reported, not gated"
    estimate = cand if check.kind is CheckKind.GROUP_MAX else cand - ref  # task kinds: an increase is cand - ref
    untested = _untested(check, scope.name, group, rows, ref, cand, note)
    return dataclasses.replace(untested, estimate=estimate, rows_needed=floor)


def _label(scope: TaskScope, g: int, c: int, classes: int) -> str:
    return scope.names[g] + (f" (class {c})" if classes > 1 else "")


def _small(
    check: Check, scope: TaskScope, gated: Any, ref: Floats, cand: Floats, rows: Floats, policy: Policy
) -> Found:
    k = ref.shape[-1]
    return [
        _too_small(check, scope, _label(scope, g, c, k), int(rows[g, c]), ref[g, c], cand[g, c], policy)
        for g, c in zip(*np.nonzero(~gated), strict=True)
    ]


def difference_increase(check: Check, scope: TaskScope, policy: Policy) -> Found:
    ref, cand = scope.value(check.metric, "reference"), scope.value(check.metric, "candidate")
    rows = scope.rows(check.metric)
    gated = rows >= scope.min_rows(policy)
    found = _small(check, scope, gated, ref, cand, rows, policy)
    s_ref, s_cand = scope.sampled(check.metric, "reference"), scope.sampled(check.metric, "candidate")
    observed, samples, where = [], [], []
    for c in range(ref.shape[-1]):
        idx = np.flatnonzero(gated[:, c])
        if len(idx) < 2:
            continue
        i, j = np.triu_indices(len(idx), k=1)
        gi, gj = idx[i], idx[j]

        def widen(a: Floats, b: Floats, gi: Any = gi, gj: Any = gj, c: int = c) -> Floats:
            return np.abs(a[..., gi, c] - a[..., gj, c]) - np.abs(b[..., gi, c] - b[..., gj, c])

        observed.append(widen(cand, ref))
        samples.append(widen(s_cand, s_ref))
        where += [(c, g, h) for g, h in zip(gi.tolist(), gj.tolist(), strict=True)]
    if not observed:
        if len(scope.names) < 2:  # a between-groups check on one group is said, never dropped
            says = f"{scope.name} has {len(scope.names)} group in the data: a between-groups check needs two"
            found.append(_untested(check, scope.name, None, int(np.sum(rows)), math.nan, math.nan, says))
        return found
    obs = np.concatenate(observed)
    worst = int(np.argmax(obs))
    c, g, h = where[worst]
    k = ref.shape[-1]
    cls = f" (class {c})" if k > 1 else ""
    note = (
        f"{scope.names[g]} vs {scope.names[h]}{cls}: difference {abs(ref[g, c] - ref[h, c]):.4f} -> "
        f"{abs(cand[g, c] - cand[h, c]):.4f}" + ("; worst over classes and pairs" if k > 1 else "")
    )
    gap = [np.ptp(v[gated[:, c], c]) if gated[:, c].sum() else 0.0 for v in (ref, cand)]
    found.append(
        Evidence(
            check=check,
            scope=scope.name,
            group=None,
            estimate=float(obs[worst]),
            reference_value=float(gap[0]),
            candidate_value=float(gap[1]),
            rows=int(rows[gated].min()),
            samples=np.concatenate(samples, axis=-1).max(axis=-1),
            note=note,
        )
    )
    return found


def _per_group(check: Check, scope: TaskScope, policy: Policy, overall: bool) -> Found:
    """group_drop, group_increase, group_max (and the overall kinds on a one-group scope)."""
    ref, cand = scope.value(check.metric, "reference"), scope.value(check.metric, "candidate")
    rows = scope.rows(check.metric)
    gated = rows >= scope.min_rows(policy)
    found = _small(check, scope, gated, ref, cand, rows, policy)
    s_ref, s_cand = scope.sampled(check.metric, "reference"), scope.sampled(check.metric, "candidate")
    kind = check.kind
    if kind is CheckKind.GROUP_MAX:
        observed, samples = cand, s_cand
    elif kind in QUALITY_DROP:
        observed, samples = ref - cand, s_ref - s_cand
    else:
        observed, samples = cand - ref, s_cand - s_ref
    exact = scope.exact(check.metric) if kind is CheckKind.GROUP_MAX and ref.shape[-1] == 1 else None
    for g in range(len(scope.names)):
        cls = np.flatnonzero(gated[g])
        if not len(cls):
            continue
        c = int(cls[np.argmax(observed[g, cls])])
        common = dict(
            check=check,
            scope="overall" if overall else scope.name,
            group=None if overall else scope.names[g],
            estimate=float(observed[g, c]),
            reference_value=float(ref[g, c]),
            candidate_value=float(cand[g, c]),
            note=f"worst class: {c}" if ref.shape[-1] > 1 else "",
        )
        if exact is not None:
            found.append(Evidence(**common, rows=int(exact[1][g, 0]), successes=int(exact[0][g, 0])))  # type: ignore[arg-type]
        else:
            worst = samples[:, g, cls].max(axis=-1)
            found.append(Evidence(**common, rows=int(rows[g, c]), samples=worst))  # type: ignore[arg-type]
    return found


def _group(check: Check, scope: TaskScope, policy: Policy) -> Found:
    return _per_group(check, scope, policy, overall=False)


def _overall(check: Check, scope: TaskScope, policy: Policy) -> Found:
    return _per_group(check, scope, policy, overall=True)


CHECKS: dict[CheckKind, Callable[[Check, TaskScope, Policy], Found]] = {
    CheckKind.DIFFERENCE_INCREASE: difference_increase,
    CheckKind.GROUP_MAX: _group,
    CheckKind.GROUP_DROP: _group,
    CheckKind.GROUP_INCREASE: _group,
    CheckKind.OVERALL_DROP: _overall,
    CheckKind.OVERALL_INCREASE: _overall,
}
OVERALL_KINDS = (CheckKind.OVERALL_DROP, CheckKind.OVERALL_INCREASE)


def _membership(groups: tuple[Any, ...], attributes: tuple[str, ...], attrs: tuple[str, ...]) -> tuple[Any, list[str]]:
    pos = [attributes.index(a) for a in attrs]
    keys = sorted({tuple(k[p] for p in pos) for k in groups})
    index = {k: i for i, k in enumerate(keys)}
    member = np.zeros((len(groups), len(keys)))
    for i, key in enumerate(groups):
        member[i, index[tuple(key[p] for p in pos)]] = 1
    return member, [", ".join(k) for k in keys]


def gate_for(evaluation: Any, index: int, policy: Policy) -> GateResult:
    """The gate of one candidate of an evaluation: binary tables (a binary classifier, a
    one-vs-rest class, thresholded regression) take ``gate.gate``, the rest ``gate_task``."""
    if evaluation.tables:
        return gate(evaluation.tables[index], policy)
    return gate_task(evaluation.task_tables[index], policy)


def gate_task(table: Any, policy: Policy) -> GateResult:
    """Verdicts for every check of ``policy`` on a paired ClassTable or MomentsTable."""
    if not table.paired:
        raise PolicyError("gating needs a paired table (reference and candidate)")
    classes = isinstance(table, multiclass.ClassTable)
    if classes:
        base = table.counts
        cells = policy.bootstrap_replicates * base.size
        if cells > MAX_REPLICATE_CELLS:  # replicates are kept whole: refuse rather than exhaust memory
            raise PolicyError(
                f"{table.classes} classes x {len(table.groups)} groups x {policy.bootstrap_replicates} replicates "
                f"is {cells:,} bootstrap cells (over {MAX_REPLICATE_CELLS:,}); give --positive-label CLASS "
                "or fewer bootstrap_replicates"
            )
        reps: Any = multiclass.bootstrap(base, policy.bootstrap_replicates, policy.seed)
    else:
        base = table.gram[:, 0, :]
        reps = regression.normal_replicates(table.gram, policy.bootstrap_replicates, policy.seed)
    make = _multiclass_scope if classes else _regression_scope

    def scope_of(attrs: tuple[str, ...]) -> TaskScope:
        member, names = _membership(table.groups, table.attributes, attrs)
        counts = np.einsum("g...,gh->h...", base, member)
        sampled = np.einsum("rg...,gh->rh...", reps, member)
        if classes:
            counts, sampled = counts.astype(np.int64), sampled.astype(np.int64)
        return make(", ".join(attrs), names, counts, sampled)

    tested = [scope_of(attrs) for attrs, gated in scopes(table.attributes, policy.gate_intersections) if gated]
    overall = dataclasses.replace(scope_of(()), name="overall", names=["all rows"])
    found: Found = []
    for check in policy.checks:
        for scope in [overall] if check.kind in OVERALL_KINDS else tested:
            found.extend(CHECKS[check.kind](check, scope, policy))
    return decide(found, policy)


__all__ = ["check_policy", "gate_for", "gate_task", "regression_policy_needed"]
