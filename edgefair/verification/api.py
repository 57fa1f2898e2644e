"""``edgefair.verify`` and ``edgefair.compare``: the CLI's verify and compare as calls.

They return result objects. Turning one into JSON, Markdown or HTML is the report layer's
job (``edgefair.report.document``, ``markdown``, ``html``), and writing files is a
separate, explicit step (``edgefair.report.write``): results never import their printers.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgefair.core.tables import CountsTable
from edgefair.data import Dataset, Source, resolve
from edgefair.errors import InputError
from edgefair.verification import evaluate as ev
from edgefair.verification import task_evaluate, tasks
from edgefair.verification.gate import GateResult
from edgefair.verification.policy import Policy, load_policy

EXIT_CODES = {"pass": 0, "fail": 1, "inconclusive": 3}  # 2 is bad input (the CLI's)


@dataclass(frozen=True)
class VerifyReport:
    """One candidate against the reference: the paired table, the policy, the verdicts."""

    evaluation: ev.Evaluation
    index: int  # which candidate of the evaluation
    gate: GateResult
    policy: Policy
    created: str
    latency_ratio: dict[str, float] | None = None

    @property
    def candidate(self) -> ev.ModelInfo:
        return self.evaluation.candidates[self.index]

    @property
    def table(self) -> CountsTable:
        return self.evaluation.tables[self.index]

    @property
    def task(self) -> str:
        return self.evaluation.task

    @property
    def task_table(self) -> Any:
        """The candidate's ClassTable or MomentsTable (None for a binary classifier)."""
        tables = self.evaluation.task_tables
        return tables[self.index] if tables else None

    @property
    def passed(self) -> bool:
        return self.gate.passed

    @property
    def verdict(self) -> str:
        return self.gate.verdict

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.gate.verdict]


@dataclass(frozen=True)
class CompareReport:
    reports: tuple[VerifyReport, ...]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.reports)

    @property
    def verdict(self) -> str:
        """fail if any candidate failed, else inconclusive if any was, else pass."""
        verdicts = {r.verdict for r in self.reports}
        return "fail" if "fail" in verdicts else "inconclusive" if "inconclusive" in verdicts else "pass"

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]


def options_for(
    source: Source,
    policy: Policy,
    label: str | None,
    sensitive: Sequence[str] | None,
    threshold: float,
    positive_label: str | None,
    score_output: str | None,
    feature_columns: Sequence[str] | None,
) -> ev.EvaluateOptions:
    """The evaluate options of a call: label and sensitive columns from the arguments, the
    policy or the data's defaults (each missing one an InputError naming the source)."""
    label = label or source.defaults.label
    if not label:
        raise InputError(f"{source.name}: name the label column (--label)")
    if isinstance(sensitive, str):  # one column's name, not its letters
        sensitive = [sensitive]
    sens = tuple(sensitive or policy.sensitive or source.defaults.sensitive)
    if not sens:
        raise InputError(f"{source.name}: name the sensitive column(s) (--sensitive, or 'sensitive' in the policy)")
    for i, name in enumerate(sens):
        if not isinstance(name, str) or not name:
            raise InputError(f"sensitive column names must be non-empty strings, got {name!r}")
        if name == label:  # its groups would be the outcome itself: every rate per group is 0 or 1
            raise InputError(f"{source.name}: sensitive column {name!r} is also the label column")
        if name in sens[:i]:
            raise InputError(f"{source.name}: sensitive column {name!r} is named twice")
    return ev.EvaluateOptions(
        label=label,
        sensitive=sens,
        threshold=threshold,
        positive_label=positive_label,
        score_output=score_output,
        feature_columns=feature_columns,
    )


def compare(
    reference: str | Path,
    candidates: Sequence[str | Path],
    data: str | Path | Dataset | Source = "adult",
    policy: Policy | str | Path | None = None,
    *,
    label: str | None = None,
    sensitive: Sequence[str] | None = None,
    threshold: float | None = None,
    positive_label: str | None = None,
    score_output: str | None = None,
    feature_columns: Sequence[str] | None = None,
    measure_latency: bool = True,
    progress: ev.Progress | None = None,
    batch_size: int | None = None,
    task: str | None = None,
    weight: str | None = None,
) -> CompareReport:
    """Verify many candidates in one pass over the data; optionally time each model.

    ``data`` is a registered name (``adult``, ``adult:test``, ``adult:train``: these bring
    their label and sensitive columns), a CSV path or an in-memory ``Dataset``.
    ``batch_size``: rows per model call (default: a whole chunk of 65536); a model whose
    outputs depend on the batch (dynamic int8) must be judged at its deployment batch.
    ``task``: "binary", "multiclass" or "regression" (None: detected; a [N, 1] score is
    binary unless told); ``threshold`` (default 0.5) on a regression model turns its
    predictions into decisions. ``weight``: a column of sample weights (binary).
    """
    pol = policy if isinstance(policy, Policy) else load_policy(policy)
    source = resolve(data)
    cut = 0.5 if threshold is None else threshold
    options = options_for(source, pol, label, sensitive, cut, positive_label, score_output, feature_columns)
    options = dataclasses.replace(options, batch_size=batch_size)
    options = task_evaluate.prepare(reference, options, pol, threshold=threshold, task=task, weight=weight)
    evaluation = task_evaluate.evaluate_any(reference, candidates, source, options, progress)
    ev.require_positive(evaluation, options.positive_label)
    created = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    reports = []
    ref_latency = latencies(reference, evaluation.sample) if measure_latency else None
    for i, cand in enumerate(candidates):
        ratio = None
        if ref_latency is not None:
            own = latencies(cand, evaluation.sample)
            ratio = {k: own[k] / ref_latency[k] for k in own}
        reports.append(VerifyReport(evaluation, i, tasks.gate_for(evaluation, i, pol), pol, created, ratio))
    return CompareReport(tuple(reports))


def verify(
    reference: str | Path,
    candidate: str | Path,
    data: str | Path | Dataset | Source = "adult",
    policy: Policy | str | Path | None = None,
    *,
    label: str | None = None,
    sensitive: Sequence[str] | None = None,
    threshold: float | None = None,
    positive_label: str | None = None,
    score_output: str | None = None,
    feature_columns: Sequence[str] | None = None,
    measure_latency: bool = False,
    progress: ev.Progress | None = None,
    batch_size: int | None = None,
    task: str | None = None,
    weight: str | None = None,
) -> VerifyReport:
    """Does ``candidate`` keep the reference's subgroup fairness on ``data``, per ``policy``?"""
    return compare(
        reference,
        [candidate],
        data,
        policy,
        label=label,
        sensitive=sensitive,
        threshold=threshold,
        positive_label=positive_label,
        score_output=score_output,
        feature_columns=feature_columns,
        measure_latency=measure_latency,
        progress=progress,
        batch_size=batch_size,
        task=task,
        weight=weight,
    ).reports[0]


def latencies(model: str | Path, feeds: dict[str, Any]) -> dict[str, float]:
    """Seconds per call at batch 1 and 256 (one thread), on ``feeds`` cycled."""
    return {f"batch_{b}": ev.latency(model, feeds, b, repeats=300 if b == 1 else 40) for b in (1, 256)}


_options = options_for  # the old private names, kept while their callers move to the public ones
_latencies = latencies
