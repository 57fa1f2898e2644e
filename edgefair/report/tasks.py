"""Report sections of multi-class and regression models: by-group metrics of both models
with intervals, read from the K-class or moments table, and their Markdown and HTML.

Multi-class sections hold, per group, accuracy, each class's selection and true positive
rates (``selection_rate[k]``), the macro true positive rate, and the flip rates, with
Wilson intervals; ``gaps`` gives each per-class metric's between-groups difference per
class, the worst class and the macro average. Regression sections hold the mean
prediction, mean error, MAE and RMSE with normal intervals, the mean absolute change as
the "flip" of a regression, and the paired differences (candidate - reference) with
paired normal intervals.
"""

from __future__ import annotations

from collections.abc import Callable
from html import escape
from typing import Any

import numpy as np

from edgefair.core import multiclass, regression, stats
from edgefair.core.frame import group_name


def f4(x: Any) -> str:
    return "–" if x is None else f"{x:.4f}"


REGRESSION_SHOWN = ("mean_prediction", "mean_error", "mean_absolute_error", "root_mean_squared_error")
DIFFERENCES = ("mean_error", "mean_absolute_error", "root_mean_squared_error")


def _names(attrs: tuple[str, ...], groups: tuple[Any, ...]) -> list[str]:
    return [group_name(attrs, k) for k in groups]


def _multiclass_values(counts: Any, model: str, confidence: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Per group (rows of ``counts``): {metric: value} and {metric: [low, high]}."""
    g, k = counts.shape[0], counts.shape[-1]
    values: list[dict[str, Any]] = [{"count": float(c)} for c in multiclass.compute(counts, "count", model)]
    ivs: list[dict[str, Any]] = [{} for _ in range(g)]
    for metric in ("accuracy", *multiclass.PER_CLASS):
        num, den = multiclass.parts(counts, metric, model)
        low, high = stats.wilson_interval(num, den, confidence)
        value = multiclass.compute(counts, metric, model)
        for i in range(g):
            if metric == "accuracy":
                values[i][metric], ivs[i][metric] = float(value[i]), [float(low[i]), float(high[i])]
                continue
            for c in range(k):
                key = f"{metric}[{c}]"
                values[i][key], ivs[i][key] = float(value[i, c]), [float(low[i, c]), float(high[i, c])]
            if metric == "true_positive_rate":
                values[i]["true_positive_rate_macro"] = float(value[i].mean())
    return values, ivs


def _gaps(counts: Any, model: str) -> dict[str, Any]:
    out = {}
    for metric in multiclass.PER_CLASS:
        values = multiclass.compute(counts, metric, model)  # (G, K)
        per_class = (values.max(axis=0) - values.min(axis=0)).tolist() if len(values) else []
        out[metric] = {
            "by_class": per_class,
            "worst_class": int(np.argmax(per_class)) if per_class else None,
            "worst": max(per_class, default=0.0),
            "macro": float(np.mean(per_class)) if per_class else 0.0,
        }
    acc = multiclass.compute(counts, "accuracy", model)
    out["accuracy"] = {"difference": float(acc.max() - acc.min()) if len(acc) else 0.0}
    return out


def multiclass_section(table: multiclass.ClassTable, attrs: tuple[str, ...], confidence: float) -> dict[str, Any]:
    t = table.marginal(list(attrs))
    names = _names(attrs, t.groups)
    whole = t.counts.sum(axis=0, keepdims=True)
    section: dict[str, Any] = {"intervals": {}, "undefined": {"reference": {}, "candidate": {}}, "overall": {}}
    for model in ("reference", "candidate"):
        values, ivs = _multiclass_values(t.counts, model, confidence)
        section[model] = dict(zip(names, values, strict=True))
        section["intervals"][model] = dict(zip(names, ivs, strict=True))
        section["overall"][model] = _multiclass_values(whole, model, confidence)[0][0]
    flips = {m: multiclass.compute(t.counts, m) for m in multiclass.PAIRED}
    section["flips"] = {n: {m: float(flips[m][i]) for m in multiclass.PAIRED} for i, n in enumerate(names)}
    section["overall"]["flips"] = {m: float(multiclass.compute(whole, m)[0]) for m in multiclass.PAIRED}
    section["gaps"] = {model: _gaps(t.counts, model) for model in ("reference", "candidate")}
    return section


def regression_section(table: regression.MomentsTable, attrs: tuple[str, ...], confidence: float) -> dict[str, Any]:
    section: dict[str, Any] = {"intervals": {}, "undefined": {"reference": {}, "candidate": {}}, "overall": {}}
    for scope, t in (("groups", table.marginal(list(attrs))), ("overall", table.overall())):
        names = _names(attrs, t.groups) if scope == "groups" else ["overall"]
        sides = {}
        for model in ("reference", "candidate"):
            values = {m: regression.compute(t, m, model) for m in ("count", *REGRESSION_SHOWN)}
            ivs = {m: regression.interval(t, m, model, confidence) for m in REGRESSION_SHOWN}
            sides[model] = [{m: float(values[m][i]) for m in values} for i in range(len(names))]
            if scope == "groups":
                section[model] = dict(zip(names, sides[model], strict=True))
                section["intervals"][model] = {
                    n: {m: ivs[m][i].tolist() for m in REGRESSION_SHOWN} for i, n in enumerate(names)
                }
            else:
                section["overall"][model] = sides[model][0]
        change = regression.compute(t, "mean_absolute_change")
        diffs = {m: regression.difference(t, m, confidence) for m in DIFFERENCES}
        paired = [
            {m: {"estimate": float(diffs[m][0][i]), "interval": diffs[m][1][i].tolist()} for m in DIFFERENCES}
            for i in range(len(names))
        ]
        if scope == "groups":
            section["flips"] = {n: {"mean_absolute_change": float(change[i])} for i, n in enumerate(names)}
            section["differences"] = dict(zip(names, paired, strict=True))
        else:
            section["overall"]["flips"] = {"mean_absolute_change": float(change[0])}
            section["overall"]["differences"] = paired[0]
    return section


def task_section(task_table: Any, attrs: tuple[str, ...], confidence: float) -> dict[str, Any]:
    if isinstance(task_table, multiclass.ClassTable):
        return multiclass_section(task_table, attrs, confidence)
    return regression_section(task_table, attrs, confidence)


# -- renderings ------------------------------------------------------------------------------


def has_sections(doc: dict[str, Any]) -> bool:
    """Whether the by-group sections are a task's (not a binary classifier's)."""
    return doc.get("task", {}).get("sections", "binary") != "binary"


def _rows(doc: dict[str, Any], sec: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """A heading and one row per group: reference -> candidate of the task's main metrics."""
    if doc["task"]["kind"] == "regression":
        head = ["group", "rows", "MAE ref → cand", "RMSE ref → cand", "mean error ref → cand", "Δ MAE [interval]"]
        rows = []
        for group, ref in sec["reference"].items():
            cand, diff = sec["candidate"][group], sec["differences"][group]["mean_absolute_error"]
            iv = diff["interval"]
            ivs = "–" if iv[0] is None else f"[{iv[0]:+.4f}, {iv[1]:+.4f}]"
            rows.append(
                [
                    group,
                    str(int(ref["count"])),
                    f"{f4(ref['mean_absolute_error'])} → {f4(cand['mean_absolute_error'])}",
                    f"{f4(ref['root_mean_squared_error'])} → {f4(cand['root_mean_squared_error'])}",
                    f"{f4(ref['mean_error'])} → {f4(cand['mean_error'])}",
                    f"{diff['estimate']:+.4f} {ivs}",
                ]
            )
        return head, rows
    head = ["group", "rows", "accuracy ref → cand", "macro TPR ref → cand", "flips", "negative flips"]
    rows = []
    for group, ref in sec["reference"].items():
        cand, flips = sec["candidate"][group], sec["flips"][group]
        rows.append(
            [
                group,
                str(int(ref["count"])),
                f"{f4(ref['accuracy'])} → {f4(cand['accuracy'])}",
                f"{f4(ref['true_positive_rate_macro'])} → {f4(cand['true_positive_rate_macro'])}",
                f4(flips["flip_rate"]),
                f4(flips["negative_flip_rate"]),
            ]
        )
    return head, rows


def task_line(doc: dict[str, Any]) -> str:
    t = doc["task"]
    extra = f"; one-vs-rest checks for class {t['positive_class']}" if t.get("positive_class") is not None else ""
    return f"Task: {t['kind']}, decisions from {t['decisions']}; labels: {t['labels']}{extra}."


def markdown_sections(doc: dict[str, Any], cell: Callable[[str], str] = str) -> list[str]:
    """The sections as Markdown lines; ``cell`` escapes a group or scope name (markdown.text)."""
    lines: list[str] = []
    for scope, sec in doc["by_group"].items():
        head, rows = _rows(doc, sec)
        lines += ["", f"### By {cell(scope)}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join([cell(r[0]), *r[1:]]) + " |" for r in rows]
        if doc["task"]["kind"] == "multiclass":
            gaps = sec["gaps"]
            lines += [
                "",
                "Worst-class between-groups gaps (reference → candidate): "
                + "; ".join(_worst(gaps, m) for m in multiclass.PER_CLASS),
            ]
    return lines


def _worst(gaps: dict[str, Any], metric: str) -> str:
    """The candidate's worst class for ``metric``, with the reference's gap of that same class."""
    cand, ref = gaps["candidate"][metric], gaps["reference"][metric]
    k = cand["worst_class"]
    before = ref["by_class"][k] if k is not None else None
    return f"{metric} class {k}: {f4(before)} → {f4(cand['worst'])} (macro {f4(ref['macro'])} → {f4(cand['macro'])})"


def html_sections(doc: dict[str, Any]) -> str:
    parts = [f"<p>{escape(task_line(doc))}</p>"]
    for scope, sec in doc["by_group"].items():
        head, rows = _rows(doc, sec)
        cells = "".join(f"<th>{escape(h)}</th>" for h in head)
        body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>" for r in rows)
        parts.append(f"<h2>By {escape(scope)}</h2><table><tr>{cells}</tr>{body}</table>")
        if "gaps" in sec:
            worst = "; ".join(_worst(sec["gaps"], m) for m in multiclass.PER_CLASS)
            parts.append(f"<p class=muted>Worst-class between-groups gaps (reference → candidate): {escape(worst)}</p>")
    return "".join(parts)


def metrics_document(table: Any, confidence: float = 0.95) -> dict[str, Any]:
    """``edgefair metrics --task ...``: one model's by-group metrics, intervals and gaps."""
    attrs = table.attributes
    sec = task_section(table, attrs, confidence)
    by_group, overall = sec["reference"], sec["overall"]["reference"]
    names = list(next(iter(by_group.values()), {}))
    difference = {}
    for metric in names:
        values = [v[metric] for v in by_group.values() if v[metric] is not None]
        difference[metric] = (max(values) - min(values)) if values and metric != "count" else 0.0
    kind = "multiclass" if isinstance(table, multiclass.ClassTable) else "regression"
    doc: dict[str, Any] = {
        "task": kind,
        "sensitive": list(attrs),
        "rows": table.rows,
        "confidence": confidence,
        "overall": overall,
        "by_group": by_group,
        "difference": difference,
        "ratio": {},
        "intervals": {
            "method": "wilson" if kind == "multiclass" else "normal (CLT, from the moments)",
            "by_group": sec["intervals"]["reference"],
            "difference": {},
        },
        "undefined": {"note": "empty denominator: reported as 0.0", "by_group": {}},
    }
    if kind == "multiclass":
        doc["classes"] = table.classes
        doc["gaps"] = sec["gaps"]["reference"]
    return doc
