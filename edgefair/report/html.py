"""Self-contained HTML reports: inline SVG plots and CSS, nothing fetched, works offline."""

from __future__ import annotations

from html import escape
from typing import Any

from edgefair.report import tasks
from edgefair.report.markdown import f4
from edgefair.report.text import LEGEND

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;
color:#1d2433;padding:0 1rem}h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem}
.badge{display:inline-block;padding:.15rem .55rem;border-radius:.6rem;font-weight:600;font-size:.85rem}
.pass{background:#dcf5e3;color:#136c2e}.fail{background:#fde0df;color:#a31a14}
.inconclusive{background:#fff1c9;color:#7a5600}table{border-collapse:collapse;width:100%;margin:.5rem 0}
td,th{border-bottom:1px solid #e3e7ee;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#f5f7fa;font-weight:600}.num{text-align:right;font-variant-numeric:tabular-nums}
.muted{color:#6b7385;font-size:.85rem}.plots{display:flex;flex-wrap:wrap;gap:1rem}
svg text{font:11px system-ui,sans-serif;fill:#1d2433}
"""
REF, CAND = "#8a94a6", "#d9480f"


def short(group: str) -> str:
    """'race=White, sex=Female' -> 'White · Female' for plot labels (the heading names the attributes)."""
    return " · ".join(part.split("=", 1)[-1] for part in group.split(", "))


def margin(groups: list[str]) -> int:
    return min(320, max(90, 7 * max((len(short(g)) for g in groups), default=10) + 16))


PLOT_METRICS = ("true_positive_rate", "selection_rate", "accuracy")


def badge(verdict: str) -> str:
    return f'<span class="badge {verdict}">{escape(verdict)}</span>'


def page(title: str, body: str) -> str:
    return (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{escape(title)}</title>"
        f"<style>{CSS}</style></head><body>{body}</body></html>\n"
    )


def dot_plot(section: dict[str, Any], metric: str) -> str:
    """Per group: reference and candidate rate with Wilson whiskers, on one shared axis."""
    groups = list(section["reference"])
    ivs = section["intervals"]
    lows = [
        v
        for side in ("reference", "candidate")
        for g in groups
        for v in [ivs[side].get(g, {}).get(metric, [None])[0]]
        if v is not None
    ]
    highs = [
        v
        for side in ("reference", "candidate")
        for g in groups
        for v in [ivs[side].get(g, {}).get(metric, [None, None])[1]]
        if v is not None
    ]
    lo, hi = (min(lows, default=0.0), max(highs, default=1.0))
    lo, hi = max(0.0, lo - 0.02), min(1.0, hi + 0.02)
    left, width, row = margin(groups), 330, 24
    height = 40 + row * len(groups)

    def x(v: float) -> float:
        return left + (v - lo) / max(hi - lo, 1e-9) * width

    parts = [
        f'<svg width="{left + width + 20}" height="{height}" role="img" aria-label="{escape(metric)} by group">',
        f'<text x="{left}" y="14" font-weight="600">{escape(metric)}</text>',
    ]
    for tick in (lo, (lo + hi) / 2, hi):
        parts.append(
            f'<line x1="{x(tick):.1f}" x2="{x(tick):.1f}" y1="22" y2="{height - 12}" stroke="#e3e7ee"/>'
            f'<text x="{x(tick):.1f}" y="{height - 1}" text-anchor="middle">{tick:.2f}</text>'
        )
    for i, g in enumerate(groups):
        y = 34 + i * row
        parts.append(f'<text x="{left - 8}" y="{y + 4}" text-anchor="end">{escape(short(g))}</text>')
        for side, colour, dy in (("reference", REF, -4), ("candidate", CAND, 4)):
            value = section[side][g].get(metric)
            iv = ivs[side].get(g, {}).get(metric)
            if value is None:
                continue
            if iv and iv[0] is not None:
                parts.append(
                    f'<line x1="{x(iv[0]):.1f}" x2="{x(iv[1]):.1f}" y1="{y + dy}" y2="{y + dy}" '
                    f'stroke="{colour}" stroke-width="2" opacity=".55"/>'
                )
            parts.append(
                f'<circle cx="{x(value):.1f}" cy="{y + dy}" r="4" fill="{colour}">'
                f"<title>{escape(side)} {escape(g)}: {value:.4f}</title></circle>"
            )
    parts.append("</svg>")
    return "".join(parts)


def flip_bars(section: dict[str, Any]) -> str:
    """Negative (harmful) and positive flip rates per group."""
    groups = list(section["flips"])
    top = max(
        [section["flips"][g][k] or 0.0 for g in groups for k in ("negative_flip_rate", "positive_flip_rate")] + [0.01]
    )
    left, width, row = 170, 330, 24
    height = 40 + row * len(groups)
    parts = [
        f'<svg width="{left + width + 70}" height="{height}" role="img" aria-label="flip rates">',
        f'<text x="{left}" y="14" font-weight="600">flip rates (red: right before, wrong after)</text>',
    ]
    for i, g in enumerate(groups):
        y = 26 + i * row
        parts.append(f'<text x="{left - 8}" y="{y + 12}" text-anchor="end">{escape(short(g))}</text>')
        for k, colour, dy in (("negative_flip_rate", "#c92a2a", 0), ("positive_flip_rate", "#2b8a3e", 9)):
            v = section["flips"][g][k] or 0.0
            w = v / top * width
            parts.append(
                f'<rect x="{left}" y="{y + dy}" width="{w:.1f}" height="8" fill="{colour}">'
                f"<title>{escape(k)} {escape(g)}: {v:.4f}</title></rect>"
                f'<text x="{left + w + 4:.1f}" y="{y + dy + 8}">{v:.3f}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def checks_table(doc: dict[str, Any]) -> str:
    order = {"fail": 0, "inconclusive": 1, "pass": 2}
    rows = []
    for c in sorted(doc["checks"], key=lambda c: order[c["verdict"]]):
        iv = c["interval"]
        where = escape(c["scope"] + (f" / {c['group']}" if c["group"] else ""))
        ivs = "–" if iv[0] is None else f"[{iv[0]:+.4f}, {iv[1]:+.4f}]"
        needed = (
            f"<br><span class=muted>~{c['rows_needed']:,} rows would settle it</span>"
            if c["rows_needed"] and c["gated"]
            else ""
        )
        rows.append(
            f"<tr><td>{badge(c['verdict'])}</td><td>{escape(c['metric'])}<br>"
            f"<span class=muted>{escape(c['kind'])} ≤ {c['tolerance']}</span></td><td>{where}</td>"
            f"<td class=num>{f4(c['estimate'])}</td><td class=num>{ivs}</td>"
            f"<td>{escape(c['note'])}{needed}</td></tr>"
        )
    return (
        "<table><tr><th>verdict</th><th>check</th><th>scope / group</th><th>estimate</th>"
        f"<th>interval</th><th>detail</th></tr>{''.join(rows)}</table>"
    )


def verify_body(doc: dict[str, Any]) -> str:
    s = doc["summary"]
    failing = "".join(f"<li>fail: {escape(f)}</li>" for f in s["failing"])
    failing += "".join(f"<li>inconclusive: {escape(u)}</li>" for u in s["unsettled"][:10])
    parts = [
        f"<h1 id='{anchor(doc)}'>edgefair verify {badge(doc['verdict'])}</h1>",
        f"<p><b>{escape(s['note'])}</b></p>" if doc["verdict"] != "pass" else "",
        f"<p><b>{escape(doc['candidate']['path'])}</b> against <b>{escape(doc['reference']['path'])}</b> "
        f"on {doc['data']['rows']:,} rows of {escape(doc['data']['source'])}; sensitive: "
        f"{escape(', '.join(doc['data']['sensitive']))}. {s['checks']} checks: {s['pass']} pass, "
        f"{s['fail']} fail, {s['inconclusive']} inconclusive (intervals at "
        f"{doc['interval_confidence']:.4f}, {escape(doc['policy']['adjustment'])}-adjusted verdicts).</p>",
        f"<ul>{failing}</ul>" if failing else "",
        f"<p><b>Batch size:</b> {escape(s['batch_note'])}.</p>" if "batch_note" in s else "",
    ]
    if tasks.has_sections(doc):
        parts.append(tasks.html_sections(doc))
    elif "task" in doc:
        parts.append(f"<p>{escape(tasks.task_line(doc))}</p>")
    for scope, sec in () if tasks.has_sections(doc) else doc["by_group"].items():
        parts.append(
            f"<h2>By {escape(scope)}</h2><p class=muted>grey: reference, orange: candidate; "
            "whiskers: Wilson intervals</p><div class=plots>"
        )
        parts += [dot_plot(sec, m) for m in PLOT_METRICS]
        parts.append(flip_bars(sec) + "</div>")
    parts += [
        "<h2>Checks</h2>",
        checks_table(doc),
        f"<p class=muted>edgefair {escape(doc['edgefair_version'])} · {escape(doc['created'])} · "
        f"reference sha256 {doc['reference']['sha256']} · candidate sha256 {doc['candidate']['sha256']}"
        f" · data sha256 {doc['data']['sha256']}</p>",
    ]
    return "".join(parts)


def anchor(doc: dict[str, Any]) -> str:
    """A stable id for a candidate's section: the first 12 hex digits of its SHA-256."""
    return "c-" + str(doc["candidate"]["sha256"])[:12]


def verify_html(doc: dict[str, Any]) -> str:
    return page("edgefair verify report", verify_body(doc))


def compare_html(doc: dict[str, Any]) -> str:
    metrics = sorted({m for c in doc["candidates"] for m in c["worst_gap"]})
    head = "".join(f"<th>worst {escape(m)} gap (Δ vs reference)</th>" for m in metrics)
    rows = []
    for c in doc["candidates"]:
        lat = c["latency_ratio"]
        lat_s = f"{lat['batch_1']:.2f}x / {lat['batch_256']:.2f}x" if lat else "–"
        gaps = "".join(
            f"<td class=num>{f4(c['worst_gap'][m]['gap'])} ({c['worst_gap'][m]['increase']:+.4f})<br>"
            f"<span class=muted>{escape(c['worst_gap'][m]['scope'])}</span></td>"
            if m in c["worst_gap"]
            else "<td>–</td>"
            for m in metrics
        )
        nfr = c["worst_negative_flip_rate"]
        rows.append(
            f"<tr><td>{escape(c['candidate'])}</td><td class=num>{c['size_ratio']:.0%}</td>"
            f"<td class=num>{lat_s}</td><td class=num>{f4(c['accuracy'])}</td>{gaps}"
            f"<td class=num>{f4(nfr['value'])}<br><span class=muted>{escape(str(nfr['group']))}"
            f"</span></td><td>{badge(c['verdict'])}</td></tr>"
        )
    verdicts = []
    for c, r in zip(doc["candidates"], doc["reports"], strict=True):
        why = []  # a pass lists nothing, the rest their failing or else their unsettled checks
        if c["verdict"] != "pass":
            why = [f"fail: {f}" for f in c["failing"][:3]] or [f"inconclusive: {u}" for u in c["unsettled"][:3]]
        if "batch_note" in r["summary"]:  # the verdict holds for one batch size
            why.append(f"batch size: {r['summary']['batch_note']}")
        items = "".join(f"<li>{escape(w)}</li>" for w in why)
        verdicts.append(
            f"<li>{badge(c['verdict'])} <a href='#{anchor(r)}'>{escape(c['candidate'])}</a><ul>{items}</ul></li>"
        )
    summary = (
        f"<h1>edgefair compare {badge(doc['verdict'])}</h1><ul class=verdicts>{''.join(verdicts)}</ul>"
        f"<p>Reference <b>{escape(doc['reference']['path'])}</b>, "
        f"{doc['data']['rows']:,} rows of {escape(doc['data']['source'])}.</p>"
        f"<table><tr><th>candidate</th><th>size</th><th>latency b1 / b256</th><th>accuracy</th>{head}"
        f"<th>worst negative flip rate</th><th>verdict</th></tr>{''.join(rows)}</table>"
        f"<p class=muted>{escape(LEGEND)}</p>"
    )
    details = "".join(f"<hr>{verify_body(r)}" for r in doc["reports"])
    return page("edgefair compare report", summary + details)
