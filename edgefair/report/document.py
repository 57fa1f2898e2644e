"""The JSON report: a deployment certificate that validates against ``schema.json``.

It carries the schema version, edgefair's version, both models' SHA-256, the data's
SHA-256 and row count, the full policy, every check (estimate, interval, verdict), the
by-group metrics of both models in fairlearn's names, and the paired counts table itself
(so a bundle can take its baseline from the certificate).
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from edgefair.core import metrics as m
from edgefair.core.frame import MetricFrame, group_name
from edgefair.core.weighted import WeightedMetricFrame
from edgefair.data.columns import DEFAULT_CHUNK_ROWS
from edgefair.report.tasks import task_section
from edgefair.verification.api import CompareReport, VerifyReport
from edgefair.verification.gate import scopes
from edgefair.version import __version__

SCHEMA_VERSION = 3  # 2: verdict "inconclusive" (exit 3), summary.unsettled and .note
# 3: multi-class and regression reports ("task", class and moments tables, task sections),
#    check kinds group_increase, overall_increase and ratio
FLIP_METRICS = m.PAIRED_METRICS


def json_safe(x: Any) -> Any:
    """NaN is not JSON: it becomes null (reports say why in their 'undefined' sections)."""
    if isinstance(x, float) and x != x:
        return None
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    return x


def schema() -> dict[str, Any]:
    """The published JSON Schema of verify and compare reports."""
    text = resources.files("edgefair").joinpath("report", "schema.json").read_text()
    doc: dict[str, Any] = json.loads(text)
    return doc


def by_group_section(table: Any, attrs: tuple[str, ...], confidence: float) -> dict[str, Any]:
    """Reference and candidate metrics per group of ``attrs`` (fairlearn names) plus flips."""
    t = table.marginal(list(attrs))
    ref = MetricFrame(t, m.BASE_METRICS, "reference")
    cand = MetricFrame(t, m.BASE_METRICS, "candidate")
    flips = m.by_group(t, FLIP_METRICS, "candidate")

    def named(values: dict[Any, Any]) -> dict[str, Any]:
        return {group_name(attrs, k if isinstance(k, tuple) else (k,)): v for k, v in values.items()}

    return {
        "reference": named(ref.by_group),
        "candidate": named(cand.by_group),
        "flips": {group_name(attrs, k): v for k, v in flips.items()},
        "intervals": {
            "reference": named(ref.group_intervals(confidence)),
            "candidate": named(cand.group_intervals(confidence)),
        },
        "undefined": {"reference": named(ref.undefined), "candidate": named(cand.undefined)},
        "overall": {
            "reference": ref.overall,
            "candidate": cand.overall,
            "flips": m.overall(t, FLIP_METRICS, "candidate"),
        },
    }


def _what_settles(r: Any, min_group_size: int) -> str:
    """Why a check is unsettled: the rows that would settle it, the floor an untested group sits
    under (the policy's, or the higher one its interval needs), or, for a check untested for
    another reason than rows (a between-groups check on one group), its note."""
    if not r.gated and r.rows_needed is None:
        return str(r.note)
    rows = f"~{r.rows_needed:,} rows would settle it" if r.rows_needed else "more rows would settle it"
    if r.gated:
        return rows
    floor = r.rows_needed
    under = f"min_group_size {min_group_size}" if floor <= min_group_size else f"the {floor} rows its interval needs"
    return f"{rows} (under {under}, not tested)"


def verify_document(report: VerifyReport) -> dict[str, Any]:
    ev, g = report.evaluation, report.gate
    task_table = report.task_table
    table = report.table if ev.tables else task_table
    shown = [attrs for attrs, _ in scopes(table.attributes, report.policy.gate_intersections)]
    failing = [f"{r.check.metric} ({r.check.kind.value}) in {r.group or r.scope}" for r in g.failures()]
    unsettled = [
        f"{r.check.metric} ({r.check.kind.value}) in {r.group or r.scope}: "
        + _what_settles(r, report.policy.min_group_size)
        + ("; its estimate is beyond the tolerance" if r.leans_fail else "")
        for r in sorted(g.unsettled(), key=lambda r: not r.leans_fail)  # what stops a pass first
    ]
    counts = g.counts()
    leaning = sum(r.leans_fail for r in g.results)
    summary: dict[str, Any] = {
        **counts,
        "failing": failing,
        "unsettled": unsettled,
        "note": _verdict_note(g.verdict, leaning, counts["pass"]),
    }
    batch = batch_note(report)
    if batch is not None:
        summary["batch_note"] = batch
    doc = {
        "schema_version": SCHEMA_VERSION,
        "kind": "edgefair.verify_report",
        "edgefair_version": __version__,
        "created": report.created,
        "verdict": g.verdict,
        "exit_code": report.exit_code,
        "summary": summary,
        "reference": ev.reference.to_dict(),
        "candidate": report.candidate.to_dict(),
        "data": {
            "source": ev.data_source,
            "sha256": ev.data_sha256,
            "rows": ev.rows,
            "label": ev.label,
            "sensitive": list(ev.sensitive),
            "threshold": ev.threshold,
            "score_output": ev.score_output,
        },
        "policy": report.policy.to_dict(),
        "interval_confidence": g.confidence,
        "checks": [r.to_dict() for r in g.results],
        "by_group": {", ".join(s): _section(report, s) for s in shown},
        "latency_ratio": report.latency_ratio,
        "table": table.to_dict(),
    }
    if ev.weighted_tables:
        doc["weighted"] = _weighted(report, shown)
    if ev.task_info is not None:  # beyond binary classification (a binary report has no "task")
        sections = "binary" if task_table is None else ev.task
        doc["task"] = {**ev.task_info.to_dict(), "sections": sections}
        if ev.tables and task_table is not None:  # one-vs-rest checks of a multi-class model
            doc["task_table"] = task_table.to_dict()
            doc["one_vs_rest"] = {", ".join(s): by_group_section(table, s, report.policy.confidence) for s in shown}
    return json_safe(doc)  # type: ignore[no-any-return]


def _weighted(report: VerifyReport, shown: list[tuple[str, ...]]) -> dict[str, Any]:
    """By-group metrics of both models weighted by the weight column (fairlearn's weighted
    MetricFrame); the verdicts above rest on the unweighted counts, and this says so."""
    summed = report.evaluation.weighted_tables[report.index]
    sections = {}
    for attrs in shown:
        t = summed.marginal(list(attrs))
        frames = {model: WeightedMetricFrame(t, m.BASE_METRICS, model) for model in ("reference", "candidate")}  # type: ignore[arg-type]
        sections[", ".join(attrs)] = {
            model: {group_name(attrs, k if isinstance(k, tuple) else (k,)): v for k, v in f.by_group.items()}
            for model, f in frames.items()
        }
        sections[", ".join(attrs)]["overall"] = {model: f.overall for model, f in frames.items()}
    return {
        "weight": report.evaluation.weight,
        "total_weight": float(summed.sums.sum()),
        "note": "weighted metrics are reported; the checks' verdicts rest on the unweighted counts (the exact "
        "tests and the bootstrap resample rows, and a weight is not a row)",
        "by_group": sections,
    }


def _section(report: VerifyReport, attrs: tuple[str, ...]) -> dict[str, Any]:
    if report.task_table is not None:
        return task_section(report.task_table, attrs, report.policy.confidence)
    return by_group_section(report.table, attrs, report.policy.confidence)


def batch_note(report: VerifyReport) -> str | None:
    """What the verdict holds for when a model quantises activations per call (dynamic int8):
    its decisions depend on the rows scored with it, so the verdict is for this batch size."""
    ev = report.evaluation
    which = [m.path for m in (ev.reference, report.candidate) if m.batch_dependent]
    if not which:
        return None
    said = f"{' and '.join(which)} quantise{'s' * (len(which) == 1)} activations per call (dynamic int8): "
    said += "decisions depend on the rows scored together; "
    if ev.batch_size:
        rows = f"{ev.batch_size:,} row{'s' * (ev.batch_size != 1)}"
        return said + f"this verdict is for calls of {rows} (--batch-size); other batch sizes may decide differently"
    return (
        said + f"this verdict is for calls of up to {DEFAULT_CHUNK_ROWS:,} rows (the default); "
        "verify with --batch-size as deployed (1 on a device that scores one row at a time)"
    )


def _verdict_note(verdict: str, leaning: int = 0, passed: int = 0) -> str:
    if verdict == "inconclusive" and leaning and passed:
        n = f"{leaning} tested check{'s' * (leaning != 1)}"
        return (
            f"no check failed and {passed} passed, but {n} lean{'s' * (leaning == 1)} towards failing (the "
            "estimate is beyond the tolerance, the interval does not settle it): a pass would rest on the other "
            "checks while these point the other way; the unsettled checks say how many rows would decide"
        )
    return {
        "pass": "every tested check passed or was inconclusive with its estimate within the tolerance, and at least "
        "one passed",
        "fail": "at least one check failed (or was inconclusive, and the policy counts that as a failure)",
        "inconclusive": "no check failed and none passed: this shows neither that the candidate keeps "
        "fairness nor that it breaks it; the unsettled checks say how many rows would decide",
    }[verdict]


def compare_row(doc: dict[str, Any]) -> dict[str, Any]:
    """One candidate's line in the compare table, from its verify document."""
    watched = sorted({c["metric"] for c in doc["checks"] if c["kind"] == "difference_increase"})
    gaps = {}
    for metric in watched:
        rows = [
            c
            for c in doc["checks"]
            if c["metric"] == metric and c["kind"] == "difference_increase" and c["group"] is None
        ]
        if rows:
            worst = max(rows, key=lambda c: c["candidate_value"] or 0.0)
            gaps[metric] = {
                "scope": worst["scope"],
                "gap": worst["candidate_value"],
                "reference_gap": worst["reference_value"],
                "increase": worst["estimate"],
                "increase_interval": worst["interval"],
            }
    regression = doc.get("task", {}).get("sections") == "regression"
    flip = "mean_absolute_change" if regression else "negative_flip_rate"
    # among groups the gate would test (min_group_size rows): one flip in a 6-row intersection
    # is a rate of 0.17 that says nothing, and beside a 0.02 tolerance it would alarm
    least = doc["policy"]["min_group_size"]
    nfr = [
        (v[flip], scope, g, int(sec["reference"][g]["count"]))
        for scope, sec in doc["by_group"].items()
        for g, v in sec["flips"].items()
        if sec["reference"][g]["count"] >= least and v[flip] == v[flip]  # NaN: no rows to flip
    ]
    worst_nfr = max(nfr) if nfr else (None, None, None, None)
    overall = doc["by_group"][doc["data"]["sensitive"][0]]["overall"]
    if regression:
        return _regression_row(doc, overall, gaps, worst_nfr)
    return {
        "candidate": doc["candidate"]["path"],
        "size_bytes": doc["candidate"]["size_bytes"],
        "size_ratio": doc["candidate"]["size_bytes"] / doc["reference"]["size_bytes"],
        "latency_ratio": doc["latency_ratio"],
        "accuracy": overall["candidate"]["accuracy"],
        "reference_accuracy": overall["reference"]["accuracy"],
        "worst_gap": gaps,
        "worst_negative_flip_rate": dict(zip(("value", "scope", "group", "rows"), worst_nfr, strict=True)),
        "verdict": doc["verdict"],
        "summary": doc["summary"],
        "failing": doc["summary"]["failing"],
        "unsettled": doc["summary"]["unsettled"],
    }


def _regression_row(doc: dict[str, Any], overall: dict[str, Any], gaps: dict[str, Any], worst: Any) -> dict[str, Any]:
    """A regression candidate's compare line: MAE where a classifier has accuracy, and the
    largest mean absolute change of predictions where it has negative flips."""
    return {
        "candidate": doc["candidate"]["path"],
        "size_bytes": doc["candidate"]["size_bytes"],
        "size_ratio": doc["candidate"]["size_bytes"] / doc["reference"]["size_bytes"],
        "latency_ratio": doc["latency_ratio"],
        "accuracy": None,
        "reference_accuracy": None,
        "mean_absolute_error": overall["candidate"]["mean_absolute_error"],
        "reference_mean_absolute_error": overall["reference"]["mean_absolute_error"],
        "worst_gap": gaps,
        "worst_negative_flip_rate": {"value": None, "scope": None, "group": None, "rows": None},
        "worst_mean_absolute_change": dict(zip(("value", "scope", "group", "rows"), worst, strict=True)),
        "verdict": doc["verdict"],
        "summary": doc["summary"],
        "failing": doc["summary"]["failing"],
        "unsettled": doc["summary"]["unsettled"],
    }


def compare_document(report: CompareReport) -> dict[str, Any]:
    docs = [verify_document(r) for r in report.reports]
    first = docs[0]
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": "edgefair.compare_report",
        "edgefair_version": __version__,
        "created": first["created"],
        "exit_code": report.exit_code,
        "verdict": report.verdict,
        "reference": first["reference"],
        "data": first["data"],
        "policy": first["policy"],
        "candidates": [compare_row(d) for d in docs],
        "reports": docs,
    }
