"""The tune page: the frontier plotted (objective against worst excess, inline SVG, passing
and failing variants coloured, the frontier joined, the choice ringed) and the table.
Self-contained: nothing fetched, no scripts."""

from __future__ import annotations

from html import escape
from typing import Any

from edgefair.report.html import badge, page

COLOURS = {"pass": "#2b8a3e", "fail": "#c92a2a", "inconclusive": "#e67700"}


def _points(doc: dict[str, Any]) -> list[tuple[int, float, float, str, str]]:
    out = []
    for i, v in enumerate(doc["variants"]):
        f = v["fairness"]
        if f is None or v["objective_value"] is None or f["worst_excess"] is None:
            continue
        out.append((i, float(v["objective_value"]), float(f["worst_excess"]), f["verdict"], v["name"]))
    return out


def frontier_plot(doc: dict[str, Any]) -> str:
    points = _points(doc)
    axis = "latency ratio to the source" if doc["objective"] == "latency" else "gzip size ratio to the source"
    if not points:
        return "<p class=muted>No variant was evaluated.</p>"
    xs = [p[1] for p in points] + [1.0]
    ys = [p[2] for p in points] + [0.0]
    x_lo, x_hi = min(xs) * 0.95, max(xs) * 1.05
    y_lo, y_hi = min(ys) - 0.01, max(ys) + 0.01
    left, top, width, height = 60, 20, 620, 340

    def sx(v: float) -> float:
        return left + (v - x_lo) / max(x_hi - x_lo, 1e-9) * width

    def sy(v: float) -> float:
        return top + (y_hi - v) / max(y_hi - y_lo, 1e-9) * height

    parts = [
        f'<svg width="{left + width + 30}" height="{top + height + 50}" role="img" aria-label="Pareto frontier">',
        f'<rect x="{left}" y="{top}" width="{width}" height="{height}" fill="none" stroke="#c5ccd8"/>',
        f'<line x1="{left}" x2="{left + width}" y1="{sy(0):.1f}" y2="{sy(0):.1f}" stroke="#8a94a6" '
        'stroke-dasharray="4 3"><title>0: every estimate within its tolerance</title></line>',
        f'<line x1="{sx(1):.1f}" x2="{sx(1):.1f}" y1="{top}" y2="{top + height}" stroke="#8a94a6" '
        'stroke-dasharray="4 3"><title>1: as fast (or as large) as the source</title></line>',
        f'<text x="{left + width / 2}" y="{top + height + 36}" text-anchor="middle">{escape(axis)}</text>',
        f'<text x="14" y="{top + height / 2}" transform="rotate(-90 14 {top + height / 2})" text-anchor="middle">'
        "worst excess over tolerance</text>",
    ]
    for k in range(5):
        xv = x_lo + (x_hi - x_lo) * k / 4
        yv = y_lo + (y_hi - y_lo) * k / 4
        parts.append(f'<text x="{sx(xv):.1f}" y="{top + height + 16}" text-anchor="middle">{xv:.2f}</text>')
        parts.append(f'<text x="{left - 6}" y="{sy(yv) + 4:.1f}" text-anchor="end">{yv:+.3f}</text>')
    on = sorted((p for p in points if doc["variants"][p[0]]["on_frontier"]), key=lambda p: p[1])
    if len(on) > 1:
        path = " ".join(f"{sx(p[1]):.1f},{sy(p[2]):.1f}" for p in on)
        parts.append(f'<polyline points="{path}" fill="none" stroke="#1d2433" stroke-width="1.2" opacity=".6"/>')
    chosen = doc["chosen"]["index"] if doc["chosen"] else None
    for i, x, y, verdict, name in points:
        colour = COLOURS.get(verdict, "#8a94a6")
        parts.append(
            f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="5" fill="{colour}" opacity=".85">'
            f"<title>{escape(name)}: {x:.3f}, worst excess {y:+.4f}, {escape(verdict)}</title></circle>"
        )
        if i == chosen:
            parts.append(
                f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="9" fill="none" stroke="#1d2433" stroke-width="2"/>'
            )
    parts.append(
        f'<rect x="{sx(1) - 4:.1f}" y="{sy(0) - 4:.1f}" width="8" height="8" fill="#8a94a6">'
        "<title>source</title></rect>"
    )
    parts.append("</svg>")
    return "".join(parts)


def _fmt(value: Any, spec: str) -> str:
    return "" if value is None or value == "" else format(value, spec)


def _gap(gap: dict[str, Any]) -> str:
    iv = gap.get("interval") or [None, None]
    if gap.get("estimate") is None or iv[0] is None:
        return ""
    return f"{gap['estimate']:+.4f} [{iv[0]:+.4f}, {iv[1]:+.4f}]"


def tune_html(doc: dict[str, Any]) -> str:
    chosen = doc["chosen"]
    head = (
        f"<h1>edgefair tune {badge(doc['verdict']) if chosen else badge('fail')}</h1>"
        f"<p>{escape(doc['source']['path'])}: {doc['search']['variants_tried']} variants, objective "
        f"<b>{escape(doc['objective'])}</b> at batch {doc['batch']}, searched on {doc['split']['search_rows']} rows, "
        f"certified on {doc['split']['holdout_rows']} held-out rows (seed {doc['split']['seed']}).</p>"
        + (
            f"<p>Chosen: <b>{escape(chosen['name'])}</b>; held-out certificate: "
            f"{badge(chosen['certificate_verdict'])}</p>"
            if chosen
            else f"<p>Nothing chosen: {escape(doc['note'])}.</p>"
        )
        + "<p class=muted>Green passes the policy on the search split, red fails, amber is inconclusive; the "
        "line joins the Pareto frontier; the ring is the choice; the grey square is the source.</p>"
    )
    rows = []
    for i, v in enumerate(doc["variants"]):
        f = v["fairness"]
        lat = v["latency"]
        gap = (f or {}).get("worst_gap_increase") or {}
        rows.append(
            "<tr>"
            f"<td>{'&#9733; ' if chosen and chosen['index'] == i else ''}{escape(v['name'])}</td>"
            f"<td>{escape(v['stage'])}</td>"
            f"<td class=num>{_fmt(v['size_bytes'] and v['size_bytes'] / 1024, '.1f')}</td>"
            f"<td class=num>{_fmt(lat and lat['ratio'], '.3f')}</td>"
            f"<td class=num>{_fmt(f and f['accuracy'], '.4f')}</td>"
            f"<td class=num>{_gap(gap)}</td>"
            f"<td class=num>{_fmt(f and f['worst_excess'], '+.4f')}</td>"
            f"<td>{badge(f['verdict']) if f else escape(v['error'] or '')}</td>"
            f"<td>{'yes' if v['on_frontier'] else ''}</td></tr>"
        )
    table = (
        "<table><tr><th>variant</th><th>stage</th><th>KB</th><th>latency ratio</th><th>accuracy</th>"
        "<th>worst gap change [interval]</th><th>worst excess</th><th>verdict (search split)</th><th>frontier</th></tr>"
        + "".join(rows)
        + "</table>"
    )
    return page("edgefair tune", head + frontier_plot(doc) + "<h2>Variants</h2>" + table)
