"""Model cards from a bundle: what edgefair knows, in the headings users know.

The sections follow the Hugging Face model card template (Model Details, Uses, Bias, Risks,
and Limitations, Evaluation with Testing Data, Factors, Metrics and Results, How to Get
Started, Model Card Authors, Contact, Citation). Every number comes from the bundle's
manifest or its certificate (the verify report it was built with), printed the way the
certificate holds it (rates and intervals to 4 decimals); checks the certificate left
inconclusive are named as caveats with the rows that would settle them. The user's own
words (intended use, limitations, authors, ...) come from ``about.toml``; an unknown key
there is an error, not ignored.

    card = build_card("bundle/", about="about.toml")
    card.to_markdown(), card.to_html()        # writing a file is the caller's step
"""

from __future__ import annotations

import html
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgefair.errors import InputError
from edgefair.runtime.bundle import load_bundle

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ABOUT_KEYS = {
    "name": "the model's name",
    "description": "one paragraph: what the model does",
    "intended_use": "who should use it, for what",
    "out_of_scope_use": "uses it is not meant for",
    "limitations": "known limitations, in the authors' words",
    "authors": "a string or a list of strings",
    "contact": "where to report problems",
    "license": "the model's licence",
    "citation": "how to cite it",
}
SHOWN_METRICS = ("accuracy", "selection_rate", "true_positive_rate", "false_positive_rate")


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


Block = str | Table | list[str]  # a paragraph, a table, or a bulleted list


@dataclass(frozen=True)
class Section:
    title: str
    level: int
    blocks: tuple[Block, ...]


@dataclass(frozen=True)
class Card:
    title: str
    sections: tuple[Section, ...]

    def to_markdown(self) -> str:
        out = [f"# {self.title}", ""]
        for s in self.sections:
            out += [f"{'#' * s.level} {s.title}", ""]
            for b in s.blocks:
                if isinstance(b, Table):
                    out.append("| " + " | ".join(_md(h) for h in b.header) + " |")
                    out.append("|" + "---|" * len(b.header))
                    out += ["| " + " | ".join(_md(c) for c in row) + " |" for row in b.rows]
                elif isinstance(b, list):
                    out += [f"- {item}" for item in b]
                else:
                    out.append(b)
                out.append("")
        return "\n".join(out)

    def to_html(self) -> str:
        e = html.escape
        body = [f"<h1>{e(self.title)}</h1>"]
        for s in self.sections:
            body.append(f"<h{s.level}>{e(s.title)}</h{s.level}>")
            for b in s.blocks:
                if isinstance(b, Table):
                    cells = "".join(f"<th>{e(h)}</th>" for h in b.header)
                    head = f"<thead><tr>{cells}</tr></thead>" if any(b.header) else ""  # key-value tables: none
                    rows = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in b.rows)
                    body.append(f'<div class="wide"><table>{head}<tbody>{rows}</tbody></table></div>')
                elif isinstance(b, list):
                    body.append("<ul>" + "".join(f"<li>{e(i)}</li>" for i in b) + "</ul>")
                else:
                    body.append(f"<p>{e(b)}</p>")
        style = (
            "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}"
            "table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ccc;padding:.25rem .5rem;"
            "text-align:left;font-variant-numeric:tabular-nums}th{background:#f3f3f3}code{background:#f3f3f3}"
            ".wide{overflow-x:auto}"
        )
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{e(self.title)}</title><style>{style}</style></head><body>\n"
            + "\n".join(body)
            + "\n</body></html>\n"
        )


def _shape(shape: Any) -> str:
    dims = shape if isinstance(shape, list) else []
    return "[" + ", ".join("N" if d is None else str(d) for d in dims) + "]"


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def rate(x: Any) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def signed(x: Any) -> str:
    return "n/a" if x is None else f"{x:+.4f}"


def interval(iv: Any, sign: bool = True) -> str:
    if not isinstance(iv, list) or len(iv) != 2 or None in iv:
        return "n/a"
    f = signed if sign else rate
    return f"[{f(iv[0])}, {f(iv[1])}]"


def read_about(path: str | Path | None) -> dict[str, Any]:
    """The user's words for the card; an unknown key or a non-string value is one line."""
    if path is None:
        return {}
    p = Path(path)
    try:
        doc = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{p}: no such file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{p}: not valid TOML ({str(exc).splitlines()[0]})") from None
    for key, value in doc.items():
        if key not in ABOUT_KEYS:
            raise InputError(f"{p}: unknown key {key!r}; expected one of {sorted(ABOUT_KEYS)}")
        ok = isinstance(value, str) or (
            key == "authors" and isinstance(value, list) and all(isinstance(v, str) for v in value)
        )
        if not ok:
            raise InputError(f"{p}: {key!r} must be {ABOUT_KEYS[key] if key == 'authors' else 'a string'}")
    return doc


def build_card(
    bundle: str | Path, about: str | Path | None = None, store: str | Path | None = None, min_cell: int = 11
) -> Card:
    """The model card of ``bundle`` (checked as ``load_bundle`` checks it) and ``about.toml``;
    with ``store`` (the bundle's counters), a Field Counters section."""
    words = read_about(about)
    loaded = load_bundle(bundle)
    manifest, cert = loaded.manifest, loaded.certificate
    name = words.get("name") or Path(bundle).name
    sections = [_details(loaded.path, manifest, cert, words), _uses(words), _risks(cert, words)]
    sections += _evaluation(cert)
    if store is not None:
        sections.append(_field(store, loaded.baseline(), min_cell))
    sections.append(
        Section(
            "How to Get Started with the Model",
            2,
            (f"edgefair serve {Path(bundle).name}  (Open Inference Protocol; fairness counters on /metrics)",),
        )
    )
    for title, key in (("Model Card Authors", "authors"), ("Model Card Contact", "contact"), ("Citation", "citation")):
        if key in words:
            value = words[key]
            sections.append(Section(title, 2, (", ".join(value) if isinstance(value, list) else value,)))
    return Card(f"Model card for {name}", tuple(sections))


def _details(path: Path, manifest: dict[str, Any], cert: dict[str, Any] | None, words: dict[str, Any]) -> Section:
    model = manifest["files"][manifest["model"]]
    rows = [
        ("Model file", manifest["model"]),
        ("SHA-256", model["sha256"]),
        ("Size (bytes)", f"{model['size_bytes']:,}"),
        ("Task", "binary classification: decision = score >= threshold"),
        ("Score output", manifest["score_output"]),
        ("Threshold", f"{manifest['threshold']}"),
        ("Inputs", "; ".join(f"{t['name']} {t['type']} {_shape(t.get('shape'))}" for t in manifest.get("inputs", []))),
        (
            "Sensitive attributes",
            "; ".join(
                f"{a} ({', '.join(v) or 'values learned in the field'})" for a, v in manifest["sensitive"].items()
            ),
        ),
        ("Bundle created", str(manifest.get("created", "not recorded"))),
        ("Certificate verdict", (cert or {}).get("verdict", "none: nothing was verified").upper()),
    ]
    if "license" in words:
        rows.append(("License", words["license"]))
    blocks: list[Block] = [
        words.get("description") or "A binary classifier bundled by edgefair.",
        Table(("", ""), tuple(rows)),
    ]
    if cert:
        ref, cand = cert["reference"], cert["candidate"]
        same = "is this model (SHA-256 matches)" if cand["sha256"] == model["sha256"] else "is NOT this model's SHA-256"
        blocks.append(
            f"Lineage: verified by edgefair {cert['edgefair_version']} as a candidate against the reference "
            f"{Path(ref['path']).name} (SHA-256 {ref['sha256']}, {ref['size_bytes']:,} bytes); the certificate's "
            f"candidate {Path(cand['path']).name} {same}. Conversion steps before that are not recorded in the bundle."
        )
        if ref["sha256"] == cand["sha256"]:
            blocks.append(
                "The reference and the candidate are the same model: the certificate is a baseline for drift, "
                "and its checks are no evidence that compression kept subgroup fairness."
            )
    return Section("Model Details", 2, tuple(blocks))


def _uses(words: dict[str, Any]) -> Section:
    missing = "Not stated by the model's authors (about.toml: {key})."
    return Section(
        "Uses",
        2,
        (
            "Direct use: " + words.get("intended_use", missing.format(key="intended_use")),
            "Out-of-scope use: " + words.get("out_of_scope_use", missing.format(key="out_of_scope_use")),
        ),
    )


def _risks(cert: dict[str, Any] | None, words: dict[str, Any]) -> Section:
    blocks: list[Block] = [words.get("limitations", "The authors stated no limitations (about.toml: limitations).")]
    if cert is None:
        blocks.append("The bundle has no certificate: no subgroup fairness was verified.")
        return Section("Bias, Risks, and Limitations", 2, tuple(blocks))
    summary = cert["summary"]
    blocks.append(f"Certificate verdict {cert['verdict'].upper()}: {summary['note']}.")
    if summary["failing"]:
        blocks += ["Failing checks:", list(summary["failing"])]
    if summary["unsettled"]:
        blocks += ["Caveats: checks the certificate could not decide (inconclusive), and what would settle them:"]
        blocks.append(list(summary["unsettled"]))
    return Section("Bias, Risks, and Limitations", 2, tuple(blocks))


def _evaluation(cert: dict[str, Any] | None) -> list[Section]:
    if cert is None:
        return [Section("Evaluation", 2, ("No certificate: nothing was evaluated.",))]
    data, policy = cert["data"], cert["policy"]
    out = [
        Section("Evaluation", 2, ()),
        Section(
            "Testing Data",
            3,
            (
                Table(
                    ("", ""),
                    (
                        ("Source", str(data["source"])),
                        ("SHA-256", str(data["sha256"])),
                        ("Rows", f"{data['rows']:,}"),
                        ("Label", str(data["label"])),
                    ),
                ),
            ),
        ),
        Section("Factors", 3, (f"Sensitive attributes: {', '.join(data['sensitive'])}.",)),
        Section(
            "Metrics",
            3,
            (
                f"Policy: confidence {policy['confidence']}, adjustment {policy['adjustment']}, groups under "
                f"{policy['min_group_size']} rows reported, not gated; every interval at the simultaneous level "
                f"{cert['interval_confidence']:.6f}.",
                Table(
                    ("check", "tolerance"),
                    tuple((f"{c['metric']} {c['kind']}", f"{c['tolerance']}") for c in policy["checks"]),
                ),
            ),
        ),
    ]
    checks = tuple(
        (
            c["check"],
            c["group"] or c["scope"],
            signed(c["estimate"]),
            interval(c["interval"]),
            f"{c['tolerance']}",
            f"{c['rows']:,}",
            c["verdict"],
        )
        for c in cert["checks"]
    )
    out.append(
        Section(
            "Results",
            3,
            (Table(("check", "group", "estimate", "interval", "tolerance", "rows", "verdict"), checks),),
        )
    )
    for scope, section in cert["by_group"].items():
        out.append(Section(f"Results by group: {scope}", 4, (_group_table(section),)))
    return out


def _group_table(section: dict[str, Any]) -> Table:
    header = ["group", "count"]
    for metric in SHOWN_METRICS:
        header += [metric, f"{metric} interval"]
    header.append("negative_flip_rate")
    rows = []
    for group, values in section["candidate"].items():
        ivs = section["intervals"]["candidate"].get(group, {})
        undefined = section["undefined"]["candidate"].get(group, ())
        row = [group, f"{int(values['count']):,}"]
        for metric in SHOWN_METRICS:
            if metric in undefined:  # an empty denominator: fairlearn's 0.0 is no measurement
                row += ["undefined", "n/a"]
                continue
            row += [rate(values.get(metric)), interval(ivs.get(metric), sign=False)]
        row.append(rate(section["flips"].get(group, {}).get("negative_flip_rate")))
        rows.append(tuple(row))
    return Table(tuple(header), tuple(rows))


def _field(store: str | Path, baseline: Any, min_cell: int) -> Section:
    """What the device counted, under the rule /fairness follows: totals, and drift rows only
    for groups holding at least ``min_cell`` field rows (the verdict covers every group)."""
    from edgefair.runtime.drift import drift
    from edgefair.runtime.store import load_counters

    table = load_counters(store)
    labelled = int(table.counts[:, :2].sum())
    blocks: list[Block] = [
        f"{table.rows:,} predictions counted in the field, {labelled:,} with outcomes ({Path(store).name})."
    ]
    if baseline is None:
        blocks.append("No certificate baseline: field counters were not compared with anything.")
        return Section("Field Counters", 2, tuple(blocks))
    result = drift(table, baseline)
    rows = [r for r in result["rows"] if r.get("field_rows", 0) >= min_cell and "interval" in r]
    blocks.append(
        f"Drift against the certificate's baseline: {result['verdict'].upper()} over {len(result['rows'])} group "
        f"checks; {len(result['rows']) - len(rows)} on groups under {min_cell} field rows, or undecided for lack "
        "of rows, are not shown."
    )
    blocks.append(
        Table(
            ("metric", "group", "field", "baseline", "difference", "interval", "field rows", "verdict"),
            tuple(
                (
                    r["metric"],
                    r["group"],
                    rate(r.get("field", r.get("value"))),
                    rate(r.get("baseline")),
                    signed(r.get("difference")),
                    interval(r["interval"]),
                    f"{r['field_rows']:,}",
                    r["verdict"],
                )
                for r in rows
            ),
        )
    )
    return Section("Field Counters", 2, tuple(blocks))
