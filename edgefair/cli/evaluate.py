"""``metrics``, ``verify``, ``compare`` and ``schema``: parse, one library call, format."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

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
) -> None:
    """Per-group metrics of a CSV of predictions (a fast fairlearn MetricFrame)."""
    from edgefair.verification.predictions import metrics_from_csv

    frame = metrics_from_csv(predictions, label, split_columns(sensitive), prediction, score, threshold)
    doc = frame.to_dict(confidence)
    if as_json:
        emit_json(doc)
        return
    typer.echo(text.format_metrics(doc, list(frame.metrics)))


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
    from edgefair import report as reports
    from edgefair.files import refuse_overwriting_inputs
    from edgefair.verification.api import verify as run_verify

    inputs = [p for p in (reference, candidate, Path(data), policy) if p is not None]
    refuse_overwriting_inputs([p for p in (json_out, markdown, html) if p], inputs)
    result = run_verify(
        reference,
        candidate,
        data,
        policy,
        label=label,
        sensitive=split_columns(sensitive) or None,
        threshold=threshold,
        positive_label=positive_label,
        score_output=score_output,
        feature_columns=split_columns(features) or None,
        progress=row_progress("verifying"),
    )
    end_progress()
    rendered = reports.build(result)
    written = reports.write(rendered, json=json_out, markdown=markdown, html=html, inputs=inputs)
    typer.echo(text.format_verify(rendered.doc, str(candidate), str(reference)))
    for path in written:
        typer.echo(f"wrote {path}")
    raise typer.Exit(result.exit_code)


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
    from edgefair import report as reports
    from edgefair.files import refuse_overwriting_inputs
    from edgefair.verification.api import compare as run_compare

    inputs = [p for p in (reference, *candidates, Path(data), policy) if p is not None]
    refuse_overwriting_inputs([p for p in (json_out, markdown, html) if p], inputs)
    result = run_compare(
        reference,
        [str(c) for c in candidates],
        data,
        policy,
        label=label,
        sensitive=split_columns(sensitive) or None,
        threshold=threshold,
        positive_label=positive_label,
        score_output=score_output,
        feature_columns=split_columns(features) or None,
        measure_latency=latency,
        progress=row_progress("comparing"),
    )
    end_progress()
    rendered = reports.build(result)
    typer.echo(text.format_compare(rendered.doc))
    for path in reports.write(rendered, json=json_out, markdown=markdown, html=html, inputs=inputs):
        typer.echo(f"wrote {path}")
    raise typer.Exit(result.exit_code)


def schema() -> None:
    """Print the JSON Schema of verify and compare reports."""
    from edgefair.report import schema as report_schema

    emit_json(report_schema())
