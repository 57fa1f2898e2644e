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
from edgefair.verification.api import CompareReport, VerifyReport
from edgefair.verification.gate import scopes
from edgefair.version import __version__

SCHEMA_VERSION = 2  # 2: verdict "inconclusive" (exit 3), summary.unsettled and .note
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


def verify_document(report: VerifyReport) -> dict[str, Any]:
    ev, g = report.evaluation, report.gate
    table = report.table
    shown = [attrs for attrs, _ in scopes(table.attributes, report.policy.gate_intersections)]
    failing = [f"{r.check.metric} ({r.check.kind.value}) in {r.group or r.scope}" for r in g.failures()]
    unsettled = [
        f"{r.check.metric} ({r.check.kind.value}) in {r.group or r.scope}: "
        + (f"~{r.rows_needed:,} rows would settle it" if r.rows_needed else "more rows would settle it")
        + ("" if r.gated else f" (under min_group_size {report.policy.min_group_size}, not tested)")
        for r in g.unsettled()
    ]
    doc = {
        "schema_version": SCHEMA_VERSION,
        "kind": "edgefair.verify_report",
        "edgefair_version": __version__,
        "created": report.created,
        "verdict": g.verdict,
        "exit_code": report.exit_code,
        "summary": {**g.counts(), "failing": failing, "unsettled": unsettled, "note": _verdict_note(g.verdict)},
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
        "by_group": {", ".join(s): by_group_section(table, s, report.policy.confidence) for s in shown},
        "latency_ratio": report.latency_ratio,
        "table": table.to_dict(),
    }
    return json_safe(doc)  # type: ignore[no-any-return]


def _verdict_note(verdict: str) -> str:
    return {
        "pass": "every tested check passed or was inconclusive, and at least one passed",
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
    nfr = [
        (v["negative_flip_rate"], scope, g) for scope, sec in doc["by_group"].items() for g, v in sec["flips"].items()
    ]
    worst_nfr = max(nfr) if nfr else (None, None, None)
    overall = doc["by_group"][doc["data"]["sensitive"][0]]["overall"]
    return {
        "candidate": doc["candidate"]["path"],
        "size_bytes": doc["candidate"]["size_bytes"],
        "size_ratio": doc["candidate"]["size_bytes"] / doc["reference"]["size_bytes"],
        "latency_ratio": doc["latency_ratio"],
        "accuracy": overall["candidate"]["accuracy"],
        "reference_accuracy": overall["reference"]["accuracy"],
        "worst_gap": gaps,
        "worst_negative_flip_rate": {"value": worst_nfr[0], "scope": worst_nfr[1], "group": worst_nfr[2]},
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
