"""What every command shares: strict JSON output, column lists, options, progress."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from edgefair.report import json_safe

EXIT_USAGE = 2  # 0 pass, 1 fail, 2 bad usage or input


class ReaderGone:
    """stdout that outlives its reader: once the pipe is closed (``edgefair verify | head``),
    writes are dropped and the command goes on, so its files are written and its exit code is
    its verdict (click would exit 1, which reads as FAIL)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return int(self._stream.write(text))
        except BrokenPipeError:
            self._gone()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._gone()

    def _gone(self) -> None:
        # what the Python docs advise: point the descriptor at /dev/null, so that the
        # interpreter's last flush finds nowhere to fail
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, self._stream.fileno())
        os.close(devnull)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def emit_json(doc: Any) -> None:
    """Strict JSON: NaN (an undefined rate or ratio) becomes null, as in the reports."""
    typer.echo(json.dumps(json_safe(doc), indent=2, allow_nan=False))


def split_columns(value: str | None) -> list[str]:
    return [c.strip() for c in (value or "").split(",") if c.strip()]


def row_progress(label: str) -> Any:
    """A rows-read counter on stderr, only on a terminal (the total is unknown up front)."""
    if not sys.stderr.isatty():
        return None
    seen = [0]

    def update(rows: int) -> None:
        seen[0] += rows
        sys.stderr.write(f"\r{label}: {seen[0]:,} rows")
        sys.stderr.flush()

    return update


def end_progress() -> None:
    if sys.stderr.isatty():
        sys.stderr.write("\n")


DataOpt = Annotated[str, typer.Option("--data", help="Labelled CSV, or 'adult' (bundled test split).")]
LabelOpt = Annotated[str | None, typer.Option(help="Label column (0/1, or see --positive-label).")]
SensOpt = Annotated[str | None, typer.Option(help="Sensitive column(s), comma-separated.")]
PolicyOpt = Annotated[Path | None, typer.Option(help="Policy TOML (default policy if omitted).")]
ThresholdOpt = Annotated[float, typer.Option(help="Decision = score >= threshold.")]
PositiveOpt = Annotated[str | None, typer.Option(help="Label value that means 1.")]
ScoreOutputOpt = Annotated[str | None, typer.Option(help="Model output holding the score.")]
FeaturesOpt = Annotated[
    str | None, typer.Option(help="Columns for [N, k] inputs, in order: f0:f7, a,b,c; several inputs: x=f0:f7,t=t0:t3.")
]
JsonOutOpt = Annotated[Path | None, typer.Option("--json", help="Write the JSON report here.")]
MarkdownOpt = Annotated[Path | None, typer.Option(help="Write a Markdown report here.")]
HtmlOpt = Annotated[Path | None, typer.Option(help="Write an HTML report here.")]
AsJsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
