"""Markdown reports, sized for a pull-request comment.

Every string that comes from the data or the command line (group and column names, notes
naming groups, paths) goes through ``text`` or ``code``: a group called
``<img src=x onerror=...>`` or ``a|b`` shows as itself, never as HTML or a broken table.
"""

from __future__ import annotations

import html
import re
from typing import Any

from edgefair.report import tasks

MARK = {"pass": "✅ pass", "fail": "❌ fail", "inconclusive": "❔ inconclusive"}
_SPECIAL = re.compile(r"([\\`*_\[\]()#!~|])")  # what CommonMark/GFM would read as markup here


def text(value: Any) -> str:
    """Data as Markdown text: markup characters backslash-escaped, HTML's as entities, one line."""
    one_line = " ".join(str(value).splitlines())
    return html.escape(_SPECIAL.sub(r"\\\1", one_line), quote=True)


def code(value: Any, in_table: bool = False) -> str:
    """Data as a code span (HTML in it is shown, not run): fenced by more backticks than it
    holds; in a table a pipe is escaped, as GFM splits cells before reading code spans."""
    one_line = " ".join(str(value).splitlines())
    if in_table:
        one_line = one_line.replace("|", "\\|")
    fence = "`" * (max((len(run) for run in re.findall("`+", one_line)), default=0) + 1)
    pad = " " if one_line[:1] == "`" or one_line[-1:] == "`" else ""
    return f"{fence}{pad}{one_line}{pad}{fence}"


def f4(x: Any) -> str:
    return "–" if x is None else f"{x:.4f}"


def interval(iv: list[Any]) -> str:
    return "–" if iv[0] is None else f"[{iv[0]:+.4f}, {iv[1]:+.4f}]"


def check_rows(doc: dict[str, Any], limit: int = 40) -> list[str]:
    rows = [
        "| verdict | check | scope / group | estimate | interval | tolerance | note |",
        "|---|---|---|---|---|---|---|",
    ]
    order = {"fail": 0, "inconclusive": 1, "pass": 2}
    checks = sorted(doc["checks"], key=lambda c: order[c["verdict"]])
    for c in checks[:limit]:
        where = text(c["scope"]) + (f" / {text(c['group'])}" if c["group"] else "")
        note = text(c["note"]) + (
            f" (~{c['rows_needed']} rows would settle it)" if c["rows_needed"] and c["gated"] else ""
        )
        rows.append(
            f"| {MARK[c['verdict']]} | {c['metric']} {c['kind']} | {where} | "
            f"{f4(c['estimate'])} | {interval(c['interval'])} | {c['tolerance']} | {note} |"
        )
    if len(checks) > limit:
        rows.append(f"| | … {len(checks) - limit} more checks in the JSON report | | | | | |")
    return rows


def verify_markdown(doc: dict[str, Any]) -> str:
    s = doc["summary"]
    lines = [
        f"## edgefair verify: {MARK[doc['verdict']].upper()}",
        "",
        f"{code(doc['candidate']['path'])} against {code(doc['reference']['path'])} on "
        f"{doc['data']['rows']:,} rows of {code(doc['data']['source'])} "
        f"(sensitive: {', '.join(text(c) for c in doc['data']['sensitive'])}).",
        f"{s['checks']} checks: {s['pass']} pass, {s['fail']} fail, {s['inconclusive']} inconclusive; "
        f"intervals at {doc['interval_confidence']:.4f} (adjusted: {doc['policy']['adjustment']}).",
        "",
    ]
    if s["failing"]:
        lines += ["**Failing:** " + "; ".join(text(f) for f in s["failing"]), ""]
    if doc["verdict"] == "inconclusive":
        lines += [f"**Inconclusive:** {text(s['note'])}.", ""]
    if "batch_note" in s:
        lines += [f"**Batch size:** {text(s['batch_note'])}.", ""]
    if s["unsettled"]:
        shown = [text(u) for u in s["unsettled"][:10]]
        more = f"; … {len(s['unsettled']) - 10} more" if len(s["unsettled"]) > 10 else ""
        lines += ["**Unsettled:** " + "; ".join(shown) + more, ""]
    if "task" in doc:
        lines += [tasks.task_line(doc), ""]
    if "weighted" in doc:
        lines += [f"Weights: column {code(doc['weighted']['weight'])}; {text(doc['weighted']['note'])}.", ""]
    lines += check_rows(doc)
    if tasks.has_sections(doc):
        lines += tasks.markdown_sections(doc, cell=text)
    for scope, sec in () if tasks.has_sections(doc) else doc["by_group"].items():
        lines += [
            "",
            f"### By {text(scope)}",
            "",
            "| group | rows | TPR ref → cand | selection ref → cand | accuracy ref → cand | negative flips |",
            "|---|---|---|---|---|---|",
        ]
        for group, ref in sec["reference"].items():
            cand, flips = sec["candidate"][group], sec["flips"][group]
            lines.append(
                f"| {text(group)} | {int(ref['count'])} | {f4(ref['true_positive_rate'])} → "
                f"{f4(cand['true_positive_rate'])} | {f4(ref['selection_rate'])} → "
                f"{f4(cand['selection_rate'])} "
                f"| {f4(ref['accuracy'])} → {f4(cand['accuracy'])} | {f4(flips['negative_flip_rate'])} |"
            )
    lines += [
        "",
        f"<sub>edgefair {doc['edgefair_version']} · reference sha256 "
        f"`{doc['reference']['sha256'][:12]}` · candidate sha256 `{doc['candidate']['sha256'][:12]}` · "
        f"data sha256 `{doc['data']['sha256'][:12]}`</sub>",
    ]
    return "\n".join(lines) + "\n"


def compare_markdown(doc: dict[str, Any]) -> str:
    metrics = sorted({m for c in doc["candidates"] for m in c["worst_gap"]})
    head = [
        "candidate",
        "size",
        "latency b1 / b256",
        "accuracy",
        *(f"worst {m} gap (Δ)" for m in metrics),
        "worst neg. flip",
        "verdict",
    ]
    lines = [
        f"## edgefair compare against {code(doc['reference']['path'])}",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for c in doc["candidates"]:
        lat = c["latency_ratio"]
        lat_s = f"{lat['batch_1']:.2f}x / {lat['batch_256']:.2f}x" if lat else "–"
        gaps = [
            f"{f4(c['worst_gap'][m]['gap'])} ({c['worst_gap'][m]['increase']:+.4f})" if m in c["worst_gap"] else "–"
            for m in metrics
        ]
        nfr = c["worst_negative_flip_rate"]
        lines.append(
            f"| {code(c['candidate'], in_table=True)} | {c['size_ratio']:.0%} | {lat_s} | {f4(c['accuracy'])} | "
            + " | ".join(gaps)
            + f" | {f4(nfr['value'])} ({text(nfr['group'])}) | {MARK[c['verdict']]} |"
        )
    notes = [(r["candidate"]["path"], r["summary"].get("batch_note")) for r in doc["reports"]]
    notes = [(path, note) for path, note in notes if note]
    if notes:  # a verdict that holds for one batch size says so beside its row
        lines += ["", *(f"- {code(path)}: **Batch size:** {text(note)}." for path, note in notes)]
    return "\n".join(lines) + "\n"
