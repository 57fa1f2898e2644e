"""``metrics``, ``verify``, ``compare`` and ``schema``: parse, one library call, format."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from edgefair.cli.common import (
    AsJsonOpt,
    DataOpt,
    FeaturesOpt,
    HtmlOpt,
    JsonOutOpt,
    LabelOpt,
    MarkdownOpt,
    PolicyOpt,
    PositiveOpt,
    ScoreOutputOpt,
    SensOpt,
    ThresholdOpt,
    emit_json,
    end_progress,
    row_progress,
    split_columns,
)
from edgefair.report import text


def metrics(
    predictions: Annotated[Path, typer.Argument(help="CSV with labels, predictions and groups.")],
    label: Annotated[str, typer.Option(help="Column of 0/1 true labels.")],
    sensitive: Annotated[str, typer.Option(help="Sensitive column(s), comma-separated.")],
    prediction: Annotated[str | None, typer.Option(help="Column of 0/1 decisions.")] = None,
    score: Annotated[str | None, typer.Option(help="Column of scores in [0,1].")] = None,
    threshold: ThresholdOpt = 0.5,
    confidence: Annotated[float, typer.Option(help="Interval confidence level.")] = 0.95,
    as_json: AsJsonOpt = False,
    weight: Annotated[str | None, typer.Option(help="Column of sample weights (fairlearn's sample_weight).")] = None,
    task: Annotated[
        str | None, typer.Option(help="multiclass (class indices) or regression (values); default binary.")
    ] = None,
) -> None:
    """Per-group metrics of a CSV of predictions (a fast fairlearn MetricFrame)."""
    from edgefair.verification.predictions import metrics_from_csv

    if task not in (None, "binary"):
        from edgefair.report.tasks import metrics_document
        from edgefair.verification.task_predictions import task_table_from_csv

        if weight is not None or score is not None:
            from edgefair.errors import InputError

            raise InputError(f"--task {task} reads --prediction only (no --score, no --weight)")
        doc = metrics_document(
            task_table_from_csv(predictions, label, split_columns(sensitive), prediction, task), confidence
        )
        names = list(next(iter(doc["by_group"].values()), {}))
    else:
        frame = metrics_from_csv(
            predictions, label, split_columns(sensitive), prediction, score, threshold, weight=weight
        )
        doc, names = frame.to_dict(confidence), list(frame.metrics)
    if as_json:
        emit_json(doc)
        return
    typer.echo(text.format_metrics(doc, names))


DaskOpt = Annotated[str | None, typer.Option(help="Score on a Dask cluster: local:N or tcp://host:port.")]
DaskTimeoutOpt = Annotated[float, typer.Option(help="Seconds to wait for the Dask scheduler.")]
BatchSizeOpt = Annotated[
    int | None, typer.Option(help="Rows per model call, as deployed (dynamic int8 depends on it); default 65536.")
]


TaskOpt = Annotated[
    str | None,
    typer.Option(help="binary, multiclass or regression (default: detected; a [N, 1] output is binary unless told)."),
]
WeightOpt = Annotated[str | None, typer.Option(help="Column of sample weights (non-negative numbers).")]
CutOpt = Annotated[
    float | None, typer.Option("--threshold", help="Decision = score >= threshold (default 0.5; regression: optional).")
]


def _gate(
    reference: Path,
    candidates: list[Path],
    data: str,
    policy: Path | None,
    options: dict[str, Any],
    dask: str | None,
    dask_timeout: float,
    outputs: tuple[Path | None, Path | None, Path | None],
    single: bool,
) -> tuple[Any, list[Path]]:
    """verify and compare share this: one library call (here or on a Dask cluster), reports written.
    ``single``: verify's one candidate, reported as a verify report."""
    from edgefair import report as reports
    from edgefair.files import refuse_missing_folders, refuse_overwriting_inputs
    from edgefair.verification.api import compare as run_compare

    inputs = [p for p in (reference, *candidates, Path(data), policy) if p is not None]
    refuse_overwriting_inputs([p for p in outputs if p], inputs)
    refuse_missing_folders([p for p in outputs if p])
    label = "verifying" if single else "comparing"
    args = (reference, [str(c) for c in candidates], data, policy)
    if dask:
        from edgefair import distributed
        from edgefair.errors import InputError

        if options.get("task") or options.get("weight"):
            raise InputError("--dask scores binary classifiers without weights; drop --dask for --task or --weight")
        options = {**options, "threshold": 0.5 if options["threshold"] is None else options["threshold"]}
        with distributed.connect(dask, timeout=dask_timeout) as client:
            result = distributed.compare(*args, client=client, **options, progress=row_progress(label))
    else:
        result = run_compare(*args, **options, progress=row_progress(label))
    end_progress()
    rendered = reports.build(result.reports[0] if single else result)
    json_out, markdown, html = outputs
    return rendered, reports.write(rendered, json=json_out, markdown=markdown, html=html, inputs=inputs)


def _options(
    label: str | None,
    sensitive: str | None,
    threshold: float | None,
    positive_label: str | None,
    score_output: str | None,
    features: str | None,
    latency: bool,
    batch_size: int | None = None,
    task: str | None = None,
    weight: str | None = None,
) -> dict[str, Any]:
    """The library keyword arguments verify and compare share (task and weight only when set)."""
    extra = {k: v for k, v in (("task", task), ("weight", weight)) if v is not None}
    return {
        **extra,
        "batch_size": batch_size,
        "label": label,
        "sensitive": split_columns(sensitive) or None,
        "threshold": threshold,
        "positive_label": positive_label,
        "score_output": score_output,
        "feature_columns": split_columns(features) or None,
        "measure_latency": latency,
    }


def verify(
    reference: Annotated[Path, typer.Argument(help="Reference ONNX model (e.g. fp32).")],
    candidate: Annotated[Path, typer.Argument(help="Candidate ONNX model (e.g. int8).")],
    data: DataOpt = "adult",
    label: LabelOpt = None,
    sensitive: SensOpt = None,
    policy: PolicyOpt = None,
    threshold: CutOpt = None,
    positive_label: PositiveOpt = None,
    score_output: ScoreOutputOpt = None,
    features: FeaturesOpt = None,
    task: TaskOpt = None,
    weight: WeightOpt = None,
    json_out: JsonOutOpt = None,
    markdown: MarkdownOpt = None,
    html: HtmlOpt = None,
    dask: DaskOpt = None,
    dask_timeout: DaskTimeoutOpt = 10.0,
    batch_size: BatchSizeOpt = None,
) -> None:
    """Gate a candidate against the reference: exit 0 pass, 1 fail, 2 bad input, 3 inconclusive."""
    options = _options(
        label, sensitive, threshold, positive_label, score_output, features, False, batch_size, task, weight
    )
    outputs = (json_out, markdown, html)
    rendered, written = _gate(reference, [candidate], data, policy, options, dask, dask_timeout, outputs, True)
    typer.echo(text.format_verify(rendered.doc, str(candidate), str(reference)))
    for path in written:
        typer.echo(f"wrote {path}")
    raise typer.Exit(rendered.doc["exit_code"])


def compare(
    reference: Annotated[Path, typer.Argument(help="Reference ONNX model.")],
    candidates: Annotated[list[Path], typer.Argument(help="Candidate ONNX models.")],
    data: DataOpt = "adult",
    label: LabelOpt = None,
    sensitive: SensOpt = None,
    policy: PolicyOpt = None,
    threshold: CutOpt = None,
    positive_label: PositiveOpt = None,
    score_output: ScoreOutputOpt = None,
    features: FeaturesOpt = None,
    task: TaskOpt = None,
    weight: WeightOpt = None,
    latency: Annotated[bool, typer.Option(help="Time each model (1 thread).")] = True,
    json_out: JsonOutOpt = None,
    markdown: MarkdownOpt = None,
    html: HtmlOpt = None,
    dask: DaskOpt = None,
    dask_timeout: DaskTimeoutOpt = 10.0,
    batch_size: BatchSizeOpt = None,
) -> None:
    """Verify many candidates in one pass over the data; one row per candidate."""
    options = _options(
        label, sensitive, threshold, positive_label, score_output, features, latency, batch_size, task, weight
    )
    outputs = (json_out, markdown, html)
    rendered, written = _gate(reference, candidates, data, policy, options, dask, dask_timeout, outputs, False)
    typer.echo(text.format_compare(rendered.doc))
    for path in written:
        typer.echo(f"wrote {path}")
    raise typer.Exit(rendered.doc["exit_code"])


def schema() -> None:
    """Print the JSON Schema of verify and compare reports."""
    from edgefair.report import schema as report_schema

    emit_json(report_schema())
