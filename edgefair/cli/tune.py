"""``edgefair tune``: parse, one library call (``edgefair.tune``), write, format."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from edgefair.cli.common import FeaturesOpt, LabelOpt, PolicyOpt, PositiveOpt, ScoreOutputOpt, SensOpt, split_columns

if TYPE_CHECKING:
    from edgefair.tune import Progress


def _progress() -> Callable[[Progress], None] | None:
    """One line on stderr, rewritten in place, only on a terminal."""
    if not sys.stderr.isatty():
        return None

    def update(p: Progress) -> None:
        shown = f"{p.best} ({p.best_value:.2f}x)" if p.best and p.best_value is not None else "none passing yet"
        left = int(p.seconds_left)
        sys.stderr.write(
            f"\r\x1b[Ktune: {p.tried} variants tried ({p.cached} cached), "
            f"best so far: {shown}, {left // 60}:{left % 60:02d} left"
        )
        sys.stderr.flush()

    return update


def tune(
    model: Annotated[Path, typer.Argument(help="Source ONNX model (fp32).")],
    data: Annotated[str, typer.Option("--data", help="Labelled CSV (or Parquet, or 'adult').")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output folder (report, page, model, certificate).")],
    label: LabelOpt = None,
    sensitive: SensOpt = None,
    features: FeaturesOpt = None,
    policy: PolicyOpt = None,
    objective: Annotated[str, typer.Option(help="latency or size (gzip-compressed bytes).")] = "latency",
    batch: Annotated[int, typer.Option(help="Deployment batch: variants are scored and timed at it.")] = 1,
    budget_minutes: Annotated[float, typer.Option(help="Stop starting new variants after this.")] = 5.0,
    max_variants: Annotated[int | None, typer.Option(help="Stop after this many variants.")] = None,
    holdout: Annotated[float, typer.Option(help="Fraction of rows held out to certify the choice.")] = 0.3,
    seed: Annotated[int, typer.Option(help="Seed of the split and the calibration rows.")] = 0,
    threshold: Annotated[float, typer.Option(help="Decision = score >= threshold.")] = 0.5,
    positive_label: PositiveOpt = None,
    score_output: ScoreOutputOpt = None,
) -> None:
    """Search compressed variants for the fastest (or smallest) that passes the policy; certify it
    on held-out rows. Exit 0 chosen and certified, 1 nothing passes and beats the source (or the
    certificate fails), 2 bad input, 3 certificate inconclusive."""
    from edgefair.files import refuse_missing_folders, refuse_overwriting_inputs
    from edgefair.tune import TuneOptions
    from edgefair.tune import tune as run_tune
    from edgefair.tune.output import certificate_document, check_out_dir, format_table, summary_line, tune_document
    from edgefair.tune.output import write as write_outputs

    inputs = [p for p in (model, Path(data), policy) if p is not None]
    check_out_dir(out)
    refuse_overwriting_inputs([out], inputs)
    refuse_missing_folders([out])  # OUT_DIR itself tune may create; not its parents
    options = TuneOptions(
        label=label,
        sensitive=tuple(split_columns(sensitive)) or None,
        feature_columns=tuple(split_columns(features)) or None,
        threshold=threshold,
        positive_label=positive_label,
        score_output=score_output,
        objective=objective,
        batch=batch,
        budget_minutes=budget_minutes,
        max_variants=max_variants,
        holdout=holdout,
        seed=seed,
    )
    result = run_tune(model, data, policy, options, cache_dir=out / "cache", progress=_progress())
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    written = write_outputs(result, out, inputs)
    doc = tune_document(result)
    typer.echo(format_table(doc))
    typer.echo(summary_line(doc, certificate_document(result)))
    for path in written:
        typer.echo(f"wrote {path}")
    raise typer.Exit(result.exit_code)
