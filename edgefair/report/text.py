"""Plain text for terminals: tables and summaries of report documents (CLI and demo)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

SHORT = {
    "count": "count",
    "selection_rate": "sel",
    "true_positive_rate": "tpr",
    "false_positive_rate": "fpr",
    "true_negative_rate": "tnr",
    "false_negative_rate": "fnr",
    "accuracy": "acc",
    "positive_predictive_value": "ppv",
}


def fmt(x: float) -> str:
    return "nan" if x != x else f"{x:.4f}"


def format_table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def format_compare(doc: dict[str, Any]) -> str:
    metrics_ = sorted({m for c in doc["candidates"] for m in c["worst_gap"]})
    header = [
        "candidate",
        "size",
        "lat b1",
        "lat b256",
        "accuracy",
        *(f"{SHORT.get(m, m)} gap (+grew)" for m in metrics_),
        "worst nfr",
        "verdict",
    ]
    rows = []
    for c in doc["candidates"]:
        lat = c["latency_ratio"] or {}
        gaps = [
            f"{c['worst_gap'][m]['gap']:.3f} ({c['worst_gap'][m]['increase']:+.3f})" if m in c["worst_gap"] else "-"
            for m in metrics_
        ]
        nfr = c["worst_negative_flip_rate"]
        rows.append(
            [
                Path(c["candidate"]).name,
                f"{c['size_ratio']:.0%}",
                f"{lat['batch_1']:.2f}x" if lat else "-",
                f"{lat['batch_256']:.2f}x" if lat else "-",
                "-" if c["accuracy"] is None else f"{c['accuracy']:.4f}",
                *gaps,
                "-" if nfr["value"] is None else f"{nfr['value']:.3f} {nfr['group']}",
                c["verdict"].upper(),
            ]
        )
    ref_acc = doc["candidates"][0]["reference_accuracy"] if doc["candidates"] else float("nan")
    if ref_acc is None:  # a regression model: its error instead
        quality = f"mean absolute error {doc['candidates'][0]['reference_mean_absolute_error']:.4f}"
    else:
        quality = f"accuracy {ref_acc:.4f}"
    lines = [
        f"reference {doc['reference']['path']}: {quality}; {doc['data']['rows']:,} rows of {doc['data']['source']}",
        format_table(rows, header),
    ]
    for report in doc["reports"]:
        lines += reasons(report, f"  {Path(report['candidate']['path']).name}: ", limit=2, brief=True)
    return "\n".join([*lines, "", LEGEND])


LEGEND = (
    "size: candidate bytes as a share of the reference's; lat b1 / b256: time per call at batch 1 / 256 "
    "as a ratio to the reference (one thread); X gap (+grew): the largest difference of rate X between "
    "two groups, and how much it grew; worst nfr: the highest negative flip rate (rows the reference got "
    "right and the candidate wrong) and its group, among groups of at least min_group_size rows"
)


def reasons(doc: dict[str, Any], prefix: str, limit: int = 5, brief: bool = False) -> list[str]:
    """Why a verify document is not a pass (its failing checks, or what would settle it), and
    what a pass did not decide (``brief``: in one line); the batch size a dynamic-int8 verdict
    holds for (compare's rows too: a verdict that holds for one batch size says so everywhere)."""
    lines = []
    if "batch_note" in doc["summary"]:
        lines.append(f"{prefix}batch size: {doc['summary']['batch_note']}")
    failing = [c for c in doc["checks"] if c["verdict"] == "fail"]
    for c in failing[:limit]:
        lo, hi = c["interval"]
        lines.append(
            f"{prefix}FAIL {c['metric']} {c['kind']} in {c['group'] or c['scope']}: {c['estimate']:+.4f} "
            f"[{lo:+.4f}, {hi:+.4f}] > {c['tolerance']}  {c['note']}".rstrip()
        )
    if len(failing) > limit:
        lines.append(f"{prefix}... and {len(failing) - limit} more failing checks")
    unsettled = doc["summary"]["unsettled"]
    if doc["verdict"] != "pass" and not failing:
        lines.append(f"{prefix}INCONCLUSIVE: {doc['summary']['note']}")
    elif doc["verdict"] == "pass" and unsettled:  # a pass still says what it did not decide
        n = len(unsettled)
        said = f"{prefix}not decided ({n} inconclusive check{'s' * (n != 1)}; the pass rests on the others)"
        if brief:  # a compare row: one line, the rest is in the reports
            return [*lines, f"{said}, e.g. {unsettled[0]}"]
        lines.append(f"{said}:")
    else:
        return lines
    lines += [f"{prefix}  {u}" for u in unsettled[:limit]]
    if len(unsettled) > limit:
        lines.append(f"{prefix}  ... and {len(unsettled) - limit} more unsettled checks")
    return lines


def format_metrics(doc: dict[str, Any], names: list[str]) -> str:
    """``edgefair metrics``: a by-group table, the gaps with intervals, undefined cells."""

    def cell(values: dict[str, Any], metric: str) -> str:
        return str(int(values[metric])) if metric == "count" else fmt(values[metric])

    rows = [[g, *(cell(v, m) for m in names)] for g, v in doc["by_group"].items()]
    rows.append(["overall", *(cell(doc["overall"], m) for m in names)])
    lines = [format_table(rows, ["group", *(SHORT.get(m, m) for m in names)]), ""]
    gaps, ivs = doc["difference"], doc["intervals"]["difference"]
    for m in names:
        if m in ivs:
            lo, hi = ivs[m]
            lines.append(f"{m:28s} difference {fmt(gaps[m])}  [{fmt(lo)}, {fmt(hi)}]  ratio {fmt(doc['ratio'][m])}")
    for group, which in doc["undefined"]["by_group"].items():
        lines.append(
            f"note: {group}: {', '.join(which)} undefined (no rows in the denominator; shown as 0.0, as fairlearn does)"
        )
    return "\n".join(lines)


def format_verify(doc: dict[str, Any], candidate: str, reference: str) -> str:
    """``edgefair verify``: the verdict line, then why it is not a pass."""
    s = doc["summary"]
    lines = [
        f"{doc['verdict'].upper()}: {candidate} vs {reference} on {doc['data']['rows']:,} rows; "
        f"{s['checks']} check{'s' * (s['checks'] != 1)}: {s['pass']} pass, {s['fail']} fail, "
        f"{s['inconclusive']} inconclusive"
    ]
    if "weighted" in doc:
        lines.append(f"  weights: column {doc['weighted']['weight']!r}; {doc['weighted']['note']}")
    if "task" in doc:  # say which output and how decisions were read
        t = doc["task"]
        lines.append(f"  task: {t['kind']}; decisions from {t['decisions']}")
    return "\n".join(lines + reasons(doc, "  ", limit=20))
