"""The ``edgefair`` command: the only package that imports typer.

Each command parses its arguments, makes one library call and formats the result. Every
EdgefairError (and OS error on a named file) becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from edgefair.cli import convert, deploy, evaluate, runtime, tune
from edgefair.cli.common import EXIT_USAGE, ReaderGone
from edgefair.errors import EdgefairError
from edgefair.version import __version__

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Take a model to a CPU or edge device without letting subgroup fairness break.",
)
for command in (evaluate.metrics, convert.export, convert.convert, evaluate.verify, evaluate.compare, evaluate.schema):
    app.command()(command)
app.command()(runtime.demo)
app.command()(tune.tune)
app.add_typer(runtime.bundle_app, name="bundle")
app.add_typer(runtime.counters_app, name="counters")
app.command()(runtime.serve)
app.add_typer(deploy.incidents_app, name="incidents")
app.command()(deploy.card)


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


def main() -> None:
    """Entry point: typer plus one-line errors and exit code 2 for bad input."""
    if not isinstance(sys.stdout, ReaderGone):
        sys.stdout = ReaderGone(sys.stdout)  # type: ignore[assignment]
    try:
        # without standalone mode click returns a command's typer.Exit code instead of raising
        code = app(standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)
    except EdgefairError as exc:
        typer.echo(f"edgefair: error: {' '.join(str(exc).split())}", err=True)  # always one line
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
            message = exc.format_message()  # type: ignore[attr-defined]
            if message:  # empty when no arguments printed the help
                typer.echo(f"edgefair: error: {message} (see edgefair --help)", err=True)
            sys.exit(EXIT_USAGE)
        raise


def _is_usage_error(exc: Exception) -> bool:
    """click's exceptions, whether from click itself or the copy typer vendors (typer._click)."""
    return any(
        cls.__name__ == "ClickException" and cls.__module__.endswith("click.exceptions") for cls in type(exc).__mro__
    )
