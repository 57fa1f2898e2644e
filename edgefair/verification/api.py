"""``edgefair.verify`` and ``edgefair.compare``: the CLI's verify and compare as calls.

They return report objects; writing JSON, Markdown or HTML is a separate, explicit step
(``report.to_dict()``, ``to_markdown()``, ``to_html()`` and ``edgefair.report.write``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgefair.data import Dataset
from edgefair.errors import InputError
from edgefair.verification import evaluate as ev
from edgefair.verification.gate import GateResult, gate
from edgefair.verification.policy import Policy, load_policy

ADULT_DEFAULTS = {"label": "income", "sensitive": ("race", "sex")}


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
    def table(self) -> Any:
        return self.evaluation.tables[self.index]

    @property
    def passed(self) -> bool:
        return self.gate.passed

    @property
    def exit_code(self) -> int:
        return 0 if self.gate.passed else 1

    def to_dict(self) -> dict[str, Any]:
        from edgefair.report.document import verify_document

        return verify_document(self)

    def to_markdown(self) -> str:
        from edgefair.report.markdown import verify_markdown

        return verify_markdown(self.to_dict())

    def to_html(self) -> str:
        from edgefair.report.html import verify_html

        return verify_html(self.to_dict())


@dataclass(frozen=True)
class CompareReport:
    reports: tuple[VerifyReport, ...]

    @property
    def exit_code(self) -> int:
        return 0 if all(r.passed for r in self.reports) else 1

    def to_dict(self) -> dict[str, Any]:
        from edgefair.report.document import compare_document

        return compare_document(self)

    def to_html(self) -> str:
        from edgefair.report.html import compare_html

        return compare_html(self.to_dict())

    def to_markdown(self) -> str:
        from edgefair.report.markdown import compare_markdown

        return compare_markdown(self.to_dict())


def _options(
    data: str | Path | Dataset, policy: Policy, label: str | None, sensitive: Sequence[str] | None, **kw: Any
) -> ev.EvaluateOptions:
    adult = not isinstance(data, Dataset) and str(data).startswith("adult")
    label = label or (ADULT_DEFAULTS["label"] if adult else None)  # type: ignore[assignment]
    if not label:
        raise InputError("name the label column (--label)")
    sens = tuple(sensitive or policy.sensitive or (ADULT_DEFAULTS["sensitive"] if adult else ()))
    if not sens:
        raise InputError("name the sensitive column(s) (--sensitive, or 'sensitive' in the policy)")
    return ev.EvaluateOptions(label=label, sensitive=sens, **kw)


def compare(
    reference: str | Path,
    candidates: Sequence[str | Path],
    data: str | Path | Dataset = "adult",
    policy: Policy | str | Path | None = None,
    *,
    label: str | None = None,
    sensitive: Sequence[str] | None = None,
    threshold: float = 0.5,
    positive_label: str | None = None,
    score_output: str | None = None,
    feature_columns: Sequence[str] | None = None,
    measure_latency: bool = True,
    progress: ev.Progress | None = None,
) -> CompareReport:
    """Verify many candidates in one pass over the data; optionally time each model."""
    pol = policy if isinstance(policy, Policy) else load_policy(policy)
    options = _options(
        data,
        pol,
        label,
        sensitive,
        threshold=threshold,
        positive_label=positive_label,
        score_output=score_output,
        feature_columns=feature_columns,
    )
    evaluation = ev.evaluate(reference, candidates, data, options, progress)
    created = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    reports = []
    ref_latency = _latencies(reference, evaluation.sample) if measure_latency else None
    for i, cand in enumerate(candidates):
        ratio = None
        if ref_latency is not None:
            own = _latencies(cand, evaluation.sample)
            ratio = {k: own[k] / ref_latency[k] for k in own}
        reports.append(VerifyReport(evaluation, i, gate(evaluation.tables[i], pol), pol, created, ratio))
    return CompareReport(tuple(reports))


def verify(
    reference: str | Path,
    candidate: str | Path,
    data: str | Path | Dataset = "adult",
    policy: Policy | str | Path | None = None,
    **kwargs: Any,
) -> VerifyReport:
    """Does ``candidate`` keep the reference's subgroup fairness on ``data``, per ``policy``?"""
    kwargs.setdefault("measure_latency", False)
    return compare(reference, [candidate], data, policy, **kwargs).reports[0]


def _latencies(model: str | Path, feeds: dict[str, Any]) -> dict[str, float]:
    return {f"batch_{b}": ev.latency(model, feeds, b, repeats=300 if b == 1 else 40) for b in (1, 256)}
