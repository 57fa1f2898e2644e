"""Plain-text tables for humans: shared by the CLI and the demo (no typer here)."""

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
                f"{c['accuracy']:.4f}",
                *gaps,
                f"{nfr['value']:.3f} {nfr['group']}",
                c["verdict"].upper(),
            ]
        )
    ref_acc = doc["candidates"][0]["reference_accuracy"] if doc["candidates"] else float("nan")
    return (
        f"reference {doc['reference']['path']}: accuracy {ref_acc:.4f}; "
        f"{doc['data']['rows']:,} rows of {doc['data']['source']}\n" + format_table(rows, header)
    )
