"""A tune's outputs: the JSON document (``edgefair/report/tune.schema.json``), the terminal
Pareto table, the HTML page, and the files in OUT_DIR.

    OUT_DIR/tune.json         every variant tried, the frontier, the choice (schema'd)
    OUT_DIR/tune.html         the frontier plotted (inline SVG), the table
    OUT_DIR/model.onnx        the chosen variant
    OUT_DIR/certificate.json  verify on the held-out split only, plus a "tune" section:
                              the split, the seed, the search and the variant
    OUT_DIR/bundle/           a ready bundle (only when the certificate passes)
    OUT_DIR/cache/            builds and tables (``cache``), so a rerun resumes
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from edgefair import report
from edgefair.bundling import build_bundle
from edgefair.errors import InputError
from edgefair.files import refuse_overwriting_inputs, write_atomic, write_text
from edgefair.tune.html import tune_html
from edgefair.tune.result import TuneResult
from edgefair.version import __version__

SCHEMA_VERSION = 2  # 2: the refine stage
KIND = "edgefair.tune_report"
NAMES = ("tune.json", "tune.html", "model.onnx", "certificate.json", "bundle", "cache")


def schema() -> dict[str, Any]:
    """The published JSON Schema of tune reports."""
    doc: dict[str, Any] = json.loads(resources.files("edgefair").joinpath("report", "tune.schema.json").read_text())
    return doc


def tune_document(result: TuneResult) -> dict[str, Any]:
    """The JSON-ready record of a tune (NaN as null)."""
    compressed = int(result.source["compressed_bytes"])
    chosen = result.chosen_variant
    doc = {
        "schema_version": SCHEMA_VERSION,
        "kind": KIND,
        "edgefair_version": __version__,
        "objective": result.objective,
        "batch": result.batch,
        "source": result.source,
        "data": result.data,
        "policy": result.policy.to_dict(),
        "split": result.split,
        "search": result.search,
        "variants": [v.to_dict(result.objective, compressed) for v in result.variants],
        "frontier": [i for i, v in enumerate(result.variants) if v.on_frontier],
        "chosen": None
        if chosen is None
        else {
            "index": result.chosen,
            "name": chosen.name,
            "sha256": chosen.sha256,
            "certificate_verdict": result.verdict,
        },
        "verdict": result.verdict,
        "exit_code": result.exit_code,
        "note": result.note,
    }
    return report.json_safe(doc)  # type: ignore[no-any-return]


def certificate_document(result: TuneResult) -> dict[str, Any] | None:
    """The held-out verify report with the search that produced it."""
    if result.certificate is None or result.chosen_variant is None:
        return None
    doc = dict(report.build(result.certificate).doc)
    # the same bytes (its SHA-256 is checked), as written beside the certificate
    doc["candidate"] = {**doc["candidate"], "path": "model.onnx"}
    doc["tune"] = report.json_safe(
        {
            "split": result.split,
            "search": result.search,
            "objective": result.objective,
            "batch": result.batch,
            "variant": {"name": result.chosen_variant.name, "spec": result.chosen_variant.spec},
            "certified_on": "the held-out split only; the search never scored these rows",
        }
    )
    return doc


def _ratio(v: dict[str, Any]) -> str:
    lat = v.get("latency")
    return f"{lat['ratio']:.2f}x" if lat else "-"


def format_table(doc: dict[str, Any]) -> str:
    """The Pareto table for a terminal: evaluated variants by objective, frontier marked."""
    src = doc["source"]
    rows = [(i, v) for i, v in enumerate(doc["variants"]) if v["fairness"] is not None]
    rows.sort(key=lambda iv: (iv[1]["objective_value"] is None, iv[1]["objective_value"] or 0.0, iv[0]))
    head = (
        f"{'':2} {'variant':58} {'size KB':>8} {'gz KB':>7} {'latency':>8} {'accuracy':>8} "
        f"{'worst gap change [interval]':>30} {'verdict':>8}"
    )
    lines = [
        f"tune: {doc['search']['variants_tried']} variants tried ({doc['search']['variants_cached']} cached) in "
        f"{doc['search']['elapsed_seconds']:.0f} s; objective {doc['objective']} at batch {doc['batch']}; "
        f"source {src['size_bytes'] / 1024:.0f} KB, gz {src['compressed_bytes'] / 1024:.0f} KB",
        head,
    ]
    chosen = doc["chosen"]["index"] if doc["chosen"] else None
    for i, v in rows:
        f = v["fairness"]
        gap = f["worst_gap_increase"]
        iv = gap.get("interval") or [None, None]
        shown = (
            f"{gap['estimate']:+.3f} [{iv[0]:+.3f}, {iv[1]:+.3f}]"
            if gap and gap.get("estimate") is not None and iv[0] is not None
            else "-"
        )
        mark = ("*" if i == chosen else " ") + ("P" if v["on_frontier"] else " ")
        acc = f["accuracy"]
        lines.append(
            f"{mark:2} {v['name'][:58]:58} {v['size_bytes'] / 1024:8.1f} {v['compressed_bytes'] / 1024:7.1f} "
            f"{_ratio(v):>8} {acc if acc is None else f'{acc:.4f}':>8} {shown:>30} {f['verdict']:>8}"
        )
    failed = [v for v in doc["variants"] if v["error"]]
    if failed:
        lines.append(f"   not built: {len(failed)} ({'; '.join(sorted({v['error'][:80] for v in failed}))[:300]})")
    lines.append("   * chosen, P on the Pareto frontier (objective vs worst excess over the policy's tolerances)")
    return "\n".join(lines)


def summary_line(doc: dict[str, Any], certificate: dict[str, Any] | None) -> str:
    if doc["chosen"] is None:
        return f"tune: nothing chosen: {doc['note']}; the frontier is in tune.json and tune.html (exit 1)"
    c = doc["chosen"]
    v = doc["variants"][c["index"]]
    rows = certificate["data"]["rows"] if certificate else "?"
    value = f"latency {_ratio(v)}" if doc["objective"] == "latency" else f"gz size {v['objective_value']:.2f}x"
    return (
        f"tune: chose {c['name']} ({value} of the source at batch {doc['batch']}); held-out certificate on "
        f"{rows} rows: {c['certificate_verdict'].upper()}" + (f" ({doc['note']})" if doc["note"] else "")
    )


def check_out_dir(out_dir: Path) -> None:
    """OUT_DIR must be new, empty, or hold only what tune writes: never overwrite what
    edgefair did not create."""
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir}: exists and is not a folder; choose a folder for -o")
    if out_dir.is_dir():
        foreign = sorted(p.name for p in out_dir.iterdir() if p.name not in NAMES and not p.name.startswith("."))
        if foreign:
            raise InputError(
                f"{out_dir}: holds {foreign[0]!r}, which tune did not write; choose a new or empty folder for -o"
            )


def write(result: TuneResult, out_dir: str | Path, inputs: Sequence[str | Path] = ()) -> list[Path]:
    """Write the report, the page, and (when something was chosen) the model, its
    certificate and (when that passes) a bundle. Returns what was written."""
    out = Path(out_dir)
    check_out_dir(out)
    targets = [out / n for n in NAMES[:4]]
    refuse_overwriting_inputs(targets, [*inputs, result.source["path"]])
    doc = tune_document(result)
    written = [
        write_text(out / "tune.json", json.dumps(doc, indent=2, allow_nan=False) + "\n"),
        write_text(out / "tune.html", tune_html(doc)),
    ]
    cert = certificate_document(result)
    chosen = cert is not None and result.chosen_model is not None
    _clear_stale(out, model=not chosen, bundle=not (chosen and cert is not None and cert["verdict"] == "pass"))
    if cert is not None and result.chosen_model is not None:
        written.append(write_atomic(out / "model.onnx", result.chosen_model))
        written.append(write_text(out / "certificate.json", json.dumps(cert, indent=2, allow_nan=False) + "\n"))
        if cert["verdict"] == "pass":
            written.append(build_bundle(out / "model.onnx", out / "bundle", certificate=out / "certificate.json"))
    return written


def _clear_stale(out: Path, *, model: bool, bundle: bool) -> None:
    """A rerun that chooses nothing (or certifies nothing) must not leave an earlier run's
    model, certificate or bundle beside its report: removed, but only when they are a
    tune's (the certificate has a "tune" section, the bundle an edgefair manifest)."""
    cert = out / "certificate.json"
    if model and cert.is_file():
        try:
            ours = "tune" in json.loads(cert.read_text(encoding="utf-8"))
        except (OSError, ValueError, TypeError):
            ours = False
        if ours:
            cert.unlink()
            (out / "model.onnx").unlink(missing_ok=True)
    folder = out / "bundle"
    if bundle and (folder / "manifest.json").is_file():
        try:
            doc = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
            listed = set(doc["files"]) if doc.get("kind") == "edgefair.bundle" else set()
            listed = {n for n in listed if isinstance(n, str) and Path(n).name == n and not n.startswith(".")}
        except (OSError, ValueError, AttributeError, KeyError, TypeError):
            listed = set()
        if listed:
            for name in [*sorted(listed), "model.sig", "manifest.sha256", "manifest.json"]:
                (folder / name).unlink(missing_ok=True)
            if not any(folder.iterdir()):
                folder.rmdir()
