"""The ``edgefair`` command: parses arguments, calls the library, formats results.

The only module that imports typer and the only place that prints for humans. Every
EdgefairError (and OS error on a named file) becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from edgefair import __version__
from edgefair.cli_format import SHORT, fmt, format_compare, format_table
from edgefair.errors import EdgefairError, InputError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Take a model to a CPU or edge device without letting subgroup fairness break.",
)
counters_app = typer.Typer(no_args_is_help=True, help="On-device fairness counters.")
app.add_typer(counters_app, name="counters")

EXIT_USAGE = 2  # 0 pass, 1 fail (verify, compare, counters drift), 2 bad usage or input


def emit_json(doc: Any) -> None:
    """Strict JSON: NaN (an undefined rate or ratio) becomes null, as in the reports."""
    from edgefair.report import json_safe

    typer.echo(json.dumps(json_safe(doc), indent=2, allow_nan=False))


def split_columns(value: str | None) -> list[str]:
    return [c.strip() for c in (value or "").split(",") if c.strip()]


def version_callback(value: bool) -> None:
    if value:
        typer.echo(f"edgefair {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=version_callback, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """edgefair: convert, verify and serve models with subgroup fairness checked."""


@app.command()
def metrics(
    predictions: Annotated[Path, typer.Argument(help="CSV with labels, predictions and groups.")],
    label: Annotated[str, typer.Option(help="Column of 0/1 true labels.")],
    sensitive: Annotated[str, typer.Option(help="Sensitive column(s), comma-separated.")],
    prediction: Annotated[str | None, typer.Option(help="Column of 0/1 decisions.")] = None,
    score: Annotated[str | None, typer.Option(help="Column of scores in [0,1].")] = None,
    threshold: Annotated[float, typer.Option(help="Decision = score >= threshold.")] = 0.5,
    confidence: Annotated[float, typer.Option(help="Interval confidence level.")] = 0.95,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Per-group metrics of a CSV of predictions (a fast fairlearn MetricFrame)."""
    from edgefair.predictions import metrics_from_csv

    frame = metrics_from_csv(predictions, label, split_columns(sensitive), prediction, score, threshold)
    doc = frame.to_dict(confidence)
    if as_json:
        emit_json(doc)
        return
    names = list(frame.metrics)
    rows = [[g, *(fmt(v[m]) if m != "count" else str(int(v[m])) for m in names)] for g, v in doc["by_group"].items()]
    rows.append(["overall", *(fmt(doc["overall"][m]) if m != "count" else str(int(doc["overall"][m])) for m in names)])
    typer.echo(format_table(rows, ["group", *(SHORT.get(m, m) for m in names)]))
    typer.echo("")
    gaps = doc["difference"]
    ivs = doc["intervals"]["difference"]
    for m in names[1:]:
        lo, hi = ivs[m]
        typer.echo(f"{m:28s} difference {fmt(gaps[m])}  [{fmt(lo)}, {fmt(hi)}]  ratio {fmt(doc['ratio'][m])}")
    for group, which in doc["undefined"]["by_group"].items():
        typer.echo(
            f"note: {group}: {', '.join(which)} undefined (no rows in the denominator; shown as 0.0, as fairlearn does)"
        )


def _load_columns(source: str | None, rows: int | None = None) -> dict[str, Any] | None:
    if source is None:
        return None
    from edgefair import data

    ds = data.load(source)
    return {k: v[:rows] if rows else v for k, v in ds.columns.items()}


@app.command()
def export(
    src: Annotated[Path, typer.Argument(help="Model: .onnx, .pt2, TorchScript .pt, or .pkl/.joblib.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the ONNX model.")],
    sample_data: Annotated[str | None, typer.Option(help="CSV (or 'adult') for input types/shapes.")] = None,
    trust_pickle: Annotated[bool, typer.Option(help="Allow loading a pickle (runs its code).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Export a PyTorch or scikit-learn model (or check an ONNX file) to ONNX."""
    from edgefair.convert.check import check
    from edgefair.convert.common import save_model
    from edgefair.convert.export import export_file

    sample = _load_columns(sample_data, 2000)
    if trust_pickle:
        typer.echo(f"warning: unpickling {src} runs code from that file", err=True)
    model = export_file(src, sample, trust_pickle)
    report = check(model, model, sample if src.suffix == ".onnx" else None)
    save_model(model, output)
    doc = {"output": str(output), **report.to_dict()}
    if as_json:
        emit_json(doc)
    else:
        typer.echo(
            f"wrote {output} ({report.size_bytes:,} bytes); checked: onnx.checker full check, onnxruntime loads it"
        )


@app.command()
def convert(
    model: Annotated[Path, typer.Argument(help="Source ONNX model.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the result.")],
    quantize: Annotated[str | None, typer.Option(help="dynamic | static | fp16")] = None,
    calibration_data: Annotated[str | None, typer.Option(help="CSV (or 'adult:train') for static.")] = None,
    calibration_method: Annotated[str, typer.Option(help="minmax | entropy | percentile")] = "minmax",
    calibration_rows: Annotated[int, typer.Option(help="Rows used to calibrate.")] = 2000,
    per_channel: Annotated[bool, typer.Option(help="Per-channel weight scales.")] = False,
    balance_by: Annotated[str | None, typer.Option(help="Calibrate on equal rows per group of COL.")] = None,
    prune: Annotated[float | None, typer.Option(help="Unstructured magnitude sparsity, e.g. 0.5.")] = None,
    prune_structured: Annotated[float | None, typer.Option(help="Fraction of hidden units to remove.")] = None,
    sample_data: Annotated[str | None, typer.Option(help="CSV (or 'adult') to compare outputs on.")] = None,
    threshold: Annotated[float, typer.Option(help="Decision threshold for agreement.")] = 0.5,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Quantise and/or prune an ONNX model; check it; write it atomically."""
    from edgefair.convert import check as conv
    from edgefair.convert.common import load_model, save_model
    from edgefair.convert.quantize import CalibrationMethod, QuantizeOptions, QuantMode

    qopts = None
    if quantize is not None:
        modes = {m.value: m for m in QuantMode}
        methods = {m.value: m for m in CalibrationMethod}
        if quantize not in modes:
            raise InputError(f"--quantize must be one of {', '.join(modes)}, got {quantize!r}")
        if calibration_method not in methods:
            raise InputError(f"--calibration-method must be one of {', '.join(methods)}, got {calibration_method!r}")
        qopts = QuantizeOptions(
            mode=modes[quantize],
            per_channel=per_channel,
            calibration_method=methods[calibration_method],
            calibration_rows=calibration_rows,
        )
    for name, value in (("--prune", prune), ("--prune-structured", prune_structured)):
        if value is not None and not 0.0 < value < 1.0:
            raise InputError(f"{name} must be between 0 and 1 (exclusive), got {value}")
    source = load_model(model)
    calibration = None
    if qopts is not None and qopts.mode is QuantMode.STATIC_INT8:
        if calibration_data is None:
            raise InputError("--quantize static needs --calibration-data (a CSV, or adult:train)")
        calibration = conv.calibration_sample(
            _load_columns(calibration_data) or {}, calibration_rows, balance_by, calibration_data
        )
    sample = _load_columns(sample_data or calibration_data, 5000)
    options = conv.ConvertOptions(quantize=qopts, prune=prune, prune_structured=prune_structured, threshold=threshold)
    with typer.progressbar(
        length=calibration_rows,
        label="calibrating",
        file=sys.stderr,
        hidden=calibration is None or not sys.stderr.isatty(),
    ) as bar:
        last = [0]

        def progress(done: int, total: int) -> None:
            bar.update(done - last[0])
            last[0] = done

        result = conv.convert(source, options, sample, calibration, progress)
    save_model(result.model, output)
    doc = {"output": str(output), **result.to_dict()}
    if as_json:
        emit_json(doc)
        return
    typer.echo(format_conversion(doc))


def format_conversion(doc: dict[str, Any]) -> str:
    before, after = doc["size_before"], doc["size_after"]
    lines = [f"wrote {doc['output']}: {before:,} -> {after:,} bytes ({after / before:.0%})"]
    for step in doc["steps"]:
        if "nodes_quantised" in step:
            ops = ", ".join(f"{k} x{v}" for k, v in step["nodes_quantised"].items())
            lines.append(f"  quantised ({step['mode']}): {ops}")
        if step.get("mode") == "fp16":
            lines.append(f"  fp16: {step['initializers_converted']} initializers; {step['note']}")
        for layer, sparsity in step.get("sparsity_by_layer", {}).items():
            lines.append(f"  pruned {layer}: {sparsity:.1%} zeros")
        for layer, units in step.get("units_by_layer", {}).items():
            lines.append(f"  pruned {layer}: {units['hidden_before']} -> {units['hidden_after']} units")
        if "compressed_size_after" in step:
            lines.append(f"  gzip size {step['compressed_size_before']:,} -> {step['compressed_size_after']:,}")
    check = doc["check"]
    if check and check["rows_compared"]:
        diffs = ", ".join(f"{k} {v:.4g}" for k, v in check["max_abs_difference"].items())
        agree = check["decision_agreement"]
        lines.append(
            f"  vs source on {check['rows_compared']} rows: max abs diff {diffs}"
            + (f"; decisions agree {agree:.2%}" if agree is not None else "")
        )
    return "\n".join(lines)


def _write_reports(report: Any, json_out: Path | None, markdown: Path | None, html: Path | None) -> list[str]:
    from edgefair.report import write_text

    written = []
    if json_out:
        written.append(str(write_text(json_out, json.dumps(report.to_dict(), indent=2) + "\n")))
    if markdown:
        written.append(str(write_text(markdown, report.to_markdown())))
    if html:
        written.append(str(write_text(html, report.to_html())))
    return written


DataOpt = Annotated[str, typer.Option("--data", help="Labelled CSV, or 'adult' (bundled test split).")]
LabelOpt = Annotated[str | None, typer.Option(help="Label column (0/1, or see --positive-label).")]
SensOpt = Annotated[str | None, typer.Option(help="Sensitive column(s), comma-separated.")]
PolicyOpt = Annotated[Path | None, typer.Option(help="Policy TOML (default policy if omitted).")]
ThresholdOpt = Annotated[float, typer.Option(help="Decision = score >= threshold.")]
PositiveOpt = Annotated[str | None, typer.Option(help="Label value that means 1.")]
ScoreOutputOpt = Annotated[str | None, typer.Option(help="Model output holding the score.")]
FeaturesOpt = Annotated[str | None, typer.Option(help="Feature columns for a single 2-D input.")]
JsonOutOpt = Annotated[Path | None, typer.Option("--json", help="Write the JSON report here.")]
MarkdownOpt = Annotated[Path | None, typer.Option(help="Write a Markdown report here.")]
HtmlOpt = Annotated[Path | None, typer.Option(help="Write an HTML report here.")]


def _row_progress(label: str) -> Any:
    """A rows-read counter on stderr, only on a terminal (the total is unknown up front)."""
    if not sys.stderr.isatty():
        return None
    seen = [0]

    def update(rows: int) -> None:
        seen[0] += rows
        sys.stderr.write(f"\r{label}: {seen[0]:,} rows")
        sys.stderr.flush()

    return update


def _evaluation_options(
    label: str | None,
    sensitive: str | None,
    threshold: float,
    positive_label: str | None,
    score_output: str | None,
    features: str | None,
) -> dict[str, Any]:
    """The options verify and compare share, as library keyword arguments."""
    return {
        "label": label,
        "sensitive": split_columns(sensitive) or None,
        "threshold": threshold,
        "positive_label": positive_label,
        "score_output": score_output,
        "feature_columns": split_columns(features) or None,
    }


@app.command()
def verify(
    reference: Annotated[Path, typer.Argument(help="Reference ONNX model (e.g. fp32).")],
    candidate: Annotated[Path, typer.Argument(help="Candidate ONNX model (e.g. int8).")],
    data: DataOpt = "adult",
    label: LabelOpt = None,
    sensitive: SensOpt = None,
    policy: PolicyOpt = None,
    threshold: ThresholdOpt = 0.5,
    positive_label: PositiveOpt = None,
    score_output: ScoreOutputOpt = None,
    features: FeaturesOpt = None,
    json_out: JsonOutOpt = None,
    markdown: MarkdownOpt = None,
    html: HtmlOpt = None,
) -> None:
    """Gate a candidate against the reference: exit 0 pass, 1 fail, 2 bad input."""
    from edgefair.verification.api import verify as run_verify

    report = run_verify(
        reference,
        candidate,
        data,
        policy,
        **_evaluation_options(label, sensitive, threshold, positive_label, score_output, features),
        progress=_row_progress("verifying"),
    )
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    written = _write_reports(report, json_out, markdown, html)
    doc = report.to_dict()
    s = doc["summary"]
    typer.echo(
        f"{doc['verdict'].upper()}: {candidate} vs {reference} on {doc['data']['rows']:,} rows; "
        f"{s['checks']} checks: {s['pass']} pass, {s['fail']} fail, {s['inconclusive']} inconclusive"
    )
    for c in doc["checks"]:
        if c["verdict"] == "fail":
            lo, hi = c["interval"]
            typer.echo(
                f"  FAIL {c['metric']} {c['kind']} in {c['group'] or c['scope']}: {c['estimate']:+.4f} "
                f"[{lo:+.4f}, {hi:+.4f}] > {c['tolerance']}  {c['note']}"
            )
    for path in written:
        typer.echo(f"wrote {path}")
    raise typer.Exit(report.exit_code)


@app.command()
def compare(
    reference: Annotated[Path, typer.Argument(help="Reference ONNX model.")],
    candidates: Annotated[list[Path], typer.Argument(help="Candidate ONNX models.")],
    data: DataOpt = "adult",
    label: LabelOpt = None,
    sensitive: SensOpt = None,
    policy: PolicyOpt = None,
    threshold: ThresholdOpt = 0.5,
    positive_label: PositiveOpt = None,
    score_output: ScoreOutputOpt = None,
    features: FeaturesOpt = None,
    latency: Annotated[bool, typer.Option(help="Time each model (1 thread).")] = True,
    json_out: JsonOutOpt = None,
    markdown: MarkdownOpt = None,
    html: HtmlOpt = None,
) -> None:
    """Verify many candidates in one pass over the data; one row per candidate."""
    from edgefair.verification.api import compare as run_compare

    report = run_compare(
        reference,
        [str(c) for c in candidates],
        data,
        policy,
        **_evaluation_options(label, sensitive, threshold, positive_label, score_output, features),
        measure_latency=latency,
        progress=_row_progress("comparing"),
    )
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    typer.echo(format_compare(report.to_dict()))
    for path in _write_reports(report, json_out, markdown, html):
        typer.echo(f"wrote {path}")
    raise typer.Exit(report.exit_code)


@app.command()
def schema() -> None:
    """Print the JSON Schema of verify and compare reports."""
    from edgefair.report.document import schema as report_schema

    emit_json(report_schema())


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="Folder for the demo's models and reports.")] = Path(
        "edgefair-demo"
    ),
) -> None:
    """The whole story on the bundled Adult data and reference models."""
    from edgefair.demo import run_demo

    run_demo(out, typer.echo)


@app.command()
def bundle(
    args: Annotated[list[str], typer.Argument(help="MODEL.onnx to build a bundle, or: check DIR")],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Bundle directory to write.")] = None,
    certificate: Annotated[Path | None, typer.Option(help="verify --json report of this model.")] = None,
    sensitive: SensOpt = None,
    threshold: Annotated[float | None, typer.Option(help="Decision threshold.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
) -> None:
    """Build a deployable bundle (model, manifest, certificate), or `bundle check DIR`."""
    from edgefair.runtime.bundle import build_bundle, load_bundle

    if args and args[0] == "check":
        if len(args) != 2:
            raise InputError("usage: edgefair bundle check DIR")
        loaded = load_bundle(args[1])
        cert = loaded.manifest.get("certificate")
        if as_json:
            emit_json(loaded.manifest)
            return
        typer.echo(
            f"ok: {args[1]}: {len(loaded.manifest['files'])} files match their SHA-256; "
            f"sensitive {', '.join(loaded.sensitive)}; certificate: "
            + (f"verdict {cert['verdict']}" if cert else "no certificate, so drift has no baseline")
        )
        return
    if len(args) != 1 or output is None:
        raise InputError("usage: edgefair bundle MODEL.onnx -o DIR [--certificate REPORT.json]")
    path = build_bundle(
        args[0],
        output,
        certificate=certificate,
        sensitive=split_columns(sensitive) or None,
        threshold=threshold,
    )
    note = "" if certificate else " (no certificate: drift has no baseline)"
    typer.echo(f"wrote bundle {path}{note}")


def _load_table(source: Path) -> Any:
    from edgefair import tables
    from edgefair.runtime.store import open_store

    if source.suffix == ".json":
        if not source.exists():
            raise InputError(f"{source}: no such file")
        return tables.from_json(source.read_text())
    store, table = open_store(source)
    store.close()
    return table


@counters_app.command("show")
def counters_show(
    source: Annotated[Path, typer.Argument(help="Counters store (SQLite) or table JSON.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (exact counts, stays local).")] = False,
) -> None:
    """Show counters as per-group metrics."""
    from edgefair.frame import MetricFrame, group_name

    table = _load_table(source)
    if as_json:
        emit_json(table.to_dict())
        return
    labelled = int(table.counts[:, :2].sum())
    typer.echo(f"{table.rows:,} predictions, {labelled:,} with outcomes, over {', '.join(table.attributes)}")
    for attr in table.attributes:
        frame = MetricFrame(table.marginal([attr]), ("count", "selection_rate", "true_positive_rate", "accuracy"))
        rows = [
            [
                group_name((attr,), (g,) if isinstance(g, str) else g),
                str(int(v["count"])),
                fmt(v["selection_rate"]),
                fmt(v["true_positive_rate"]),
                fmt(v["accuracy"]),
            ]
            for g, v in frame.by_group.items()
        ]
        typer.echo(format_table(rows, [attr, "count", "sel", "tpr", "acc"]))


@counters_app.command("merge")
def counters_merge(
    sources: Annotated[list[Path], typer.Argument(help="Table JSON files (raw exports) or stores.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Merged table JSON.")],
) -> None:
    """Add counters from many devices: exact, order-free."""
    from edgefair import tables
    from edgefair.report import write_text

    merged = tables.merge(_load_table(s) for s in sources)
    write_text(output, merged.to_json() + "\n")
    typer.echo(f"merged {len(sources)} tables: {merged.rows:,} predictions -> {output}")


@counters_app.command("export")
def counters_export(
    store: Annotated[Path, typer.Argument(help="Counters store (SQLite).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Export JSON.")],
    min_cell: Annotated[int, typer.Option(help="Suppress cells under this count.")] = 11,
    epsilon: Annotated[float | None, typer.Option(help="Add discrete Laplace noise at this epsilon.")] = None,
    budget: Annotated[float | None, typer.Option(help="Refuse exports past this total epsilon.")] = None,
    raw: Annotated[bool, typer.Option(help="Exact counts (no suppression): the owner's choice.")] = False,
) -> None:
    """Export counters for upload: small cells suppressed, optional noise, ledger kept."""
    from edgefair.report import write_text
    from edgefair.runtime.privacy import private_export
    from edgefair.runtime.store import open_store

    opened, table = open_store(store)
    try:
        if raw:
            write_text(output, table.to_json() + "\n")
            typer.echo(f"wrote exact counts to {output} (raw: no suppression, no noise)")
            return
        if epsilon is not None:
            spent = opened.spend(epsilon, budget, f"export to {output}")
            typer.echo(f"privacy ledger: {spent:.4g} epsilon spent" + (f" of {budget:.4g}" if budget else ""))
        doc = private_export(table, min_cell, epsilon)
        write_text(output, json.dumps(doc) + "\n")
        typer.echo(
            f"wrote {output}: cells under {min_cell} suppressed"
            + (f", discrete Laplace noise at epsilon {epsilon}" if epsilon else "")
        )
    finally:
        opened.close()


@counters_app.command("drift")
def counters_drift(
    store: Annotated[Path, typer.Argument(help="Counters store or table JSON.")],
    bundle_dir: Annotated[Path, typer.Option("--bundle", help="Bundle with a certificate.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Field counters against the verified baseline: exit 0 pass, 1 drift found."""
    from edgefair.runtime.bundle import load_bundle
    from edgefair.runtime.drift import drift

    baseline = load_bundle(bundle_dir).baseline()
    if baseline is None:
        raise InputError(f"{bundle_dir}: the bundle has no certificate, so no baseline to compare with")
    result = drift(_load_table(store), baseline)
    if as_json:
        emit_json(result)
    else:
        typer.echo(
            f"drift verdict: {result['verdict'].upper()} ({result['field_rows']:,} field rows vs "
            f"{result['baseline_rows']:,} baseline rows)"
        )
        for r in result["rows"]:
            if r["verdict"] != "pass":
                detail = r.get("note") or f"interval {r['interval']}"
                typer.echo(f"  {r['verdict']:12s} {r['metric']:20s} {r['group']}: {detail}")
    raise typer.Exit(1 if result["verdict"] == "fail" else 0)


@app.command()
def serve(
    bundle_dir: Annotated[Path, typer.Argument(help="Bundle directory or zip.")],
    host: Annotated[str, typer.Option(help="Address to bind (default loopback only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0 picks a free one).")] = 8000,
    threads: Annotated[int, typer.Option(help="onnxruntime intra-op threads.")] = 1,
    store: Annotated[Path | None, typer.Option(help="SQLite counters store.")] = None,
    token_file: Annotated[Path | None, typer.Option(help="File with the bearer token for admin endpoints.")] = None,
    max_body_bytes: Annotated[int, typer.Option(help="Largest request body accepted.")] = 8 * 1024 * 1024,
    require_sensitive: Annotated[bool, typer.Option(help="Reject requests without sensitive inputs.")] = False,
    name: Annotated[str | None, typer.Option(help="Model name in URLs (default: bundle folder name).")] = None,
) -> None:
    """Serve a bundle over the Open Inference Protocol (KServe v2 REST) with fairness counters."""
    from edgefair.serve.server import ServeConfig
    from edgefair.serve.server import serve as run_server

    token = None
    if token_file is not None:
        if not token_file.exists():
            raise InputError(f"{token_file}: no such token file")
        token = token_file.read_text().strip()
        if not token:
            raise InputError(f"{token_file}: the token file is empty")
    config = ServeConfig(
        host=host,
        port=port,
        threads=threads,
        store=str(store) if store else None,
        token=token,
        max_body_bytes=max_body_bytes,
        require_sensitive=require_sensitive,
        model_name=name,
    )
    run_server(bundle_dir, config, typer.echo)


def main() -> None:
    """Entry point: typer plus one-line errors and exit code 2 for bad input."""
    try:
        # without standalone mode click returns a command's typer.Exit code instead of raising
        code = app(standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)
    except EdgefairError as exc:
        typer.echo(f"edgefair: error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    except OSError as exc:
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        typer.echo(f"edgefair: error: {where}{exc.strerror or exc}", err=True)
        sys.exit(EXIT_USAGE)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("edgefair: aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        if _is_usage_error(exc):  # missing argument, unknown option or command, bad value
            typer.echo(f"edgefair: error: {exc.format_message()} (see edgefair --help)", err=True)  # type: ignore[attr-defined]
            sys.exit(EXIT_USAGE)
        raise


def _is_usage_error(exc: Exception) -> bool:
    """click's exceptions, whether from click itself or the copy typer vendors (typer._click)."""
    return any(
        cls.__name__ == "ClickException" and cls.__module__.endswith("click.exceptions") for cls in type(exc).__mro__
    )
