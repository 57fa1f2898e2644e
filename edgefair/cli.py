"""The ``edgefair`` command: parses arguments, calls the library, formats results.

The only module that imports typer and the only place that prints for humans. Every
EdgefairError (and OS error on a named file) becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from edgefair import __version__
from edgefair.errors import EdgefairError, InputError

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="Take a model to a CPU or edge device without letting subgroup fairness break.",
)
counters_app = typer.Typer(no_args_is_help=True, help="On-device fairness counters.")
bundle_app = typer.Typer(no_args_is_help=True, invoke_without_command=True,
                         help="Build or check a deployable bundle.")
app.add_typer(counters_app, name="counters")

EXIT_PASS, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def fail(message: str) -> NoReturn:
    typer.echo(f"edgefair: error: {message}", err=True)
    raise typer.Exit(EXIT_USAGE)


def emit_json(doc: Any) -> None:
    typer.echo(json.dumps(doc, indent=2, sort_keys=False, allow_nan=True))


def split_columns(value: str | None) -> list[str]:
    return [c.strip() for c in (value or "").split(",") if c.strip()]


def version_callback(value: bool) -> None:
    if value:
        typer.echo(f"edgefair {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[bool, typer.Option("--version", callback=version_callback,
                                          is_eager=True, help="Print the version.")] = False,
) -> None:
    """edgefair: convert, verify and serve models with subgroup fairness checked."""


def format_table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def fmt(x: float) -> str:
    return "nan" if x != x else f"{x:.4f}"


SHORT = {
    "count": "count", "selection_rate": "sel", "true_positive_rate": "tpr",
    "false_positive_rate": "fpr", "true_negative_rate": "tnr", "false_negative_rate": "fnr",
    "accuracy": "acc", "positive_predictive_value": "ppv",
}


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

    frame = metrics_from_csv(predictions, label, split_columns(sensitive), prediction, score,
                             threshold)
    doc = frame.to_dict(confidence)
    if as_json:
        emit_json(doc)
        return
    names = list(frame.metrics)
    rows = [[g, *(fmt(v[m]) if m != "count" else str(int(v[m])) for m in names)]
            for g, v in doc["by_group"].items()]
    rows.append(["overall", *(fmt(doc["overall"][m]) if m != "count"
                              else str(int(doc["overall"][m])) for m in names)])
    typer.echo(format_table(rows, ["group", *(SHORT.get(m, m) for m in names)]))
    typer.echo("")
    gaps = doc["difference"]
    ivs = doc["intervals"]["difference"]
    for m in names[1:]:
        lo, hi = ivs[m]
        typer.echo(f"{m:28s} difference {fmt(gaps[m])}  [{fmt(lo)}, {fmt(hi)}]  "
                   f"ratio {fmt(doc['ratio'][m])}")
    for group, which in doc["undefined"]["by_group"].items():
        typer.echo(f"note: {group}: {', '.join(which)} undefined (no rows in the denominator; "
                   "shown as 0.0, as fairlearn does)")


def main() -> None:
    """Entry point: typer plus one-line errors and exit code 2 for bad input."""
    _register_optional_commands()
    try:
        app(standalone_mode=False)
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
    except Exception as exc:  # click usage errors and the like
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(EXIT_USAGE)
        raise


def _register_optional_commands() -> None:
    """Commands of later stages live in cli_* sections below; kept as plain functions."""


def run_demo_header(title: str) -> None:
    typer.echo(f"\n== {title}")


__all__ = ["app", "bundle_app", "counters_app", "fail", "main"]


def _ensure(condition: bool, message: str) -> None:
    if not condition:
        raise InputError(message)
