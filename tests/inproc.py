"""The real ``edgefair`` entry point run in this process (no subprocess start-up: ~3 s each
on a loaded machine), with its exit code and what it printed."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import pytest

from edgefair.cli import main


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str


def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> Ran:
    """``edgefair ARGS...`` through ``edgefair.cli.main`` (errors to one line, exit 2)."""
    capsys.readouterr()  # drop what came before
    saved = sys.argv
    sys.argv = ["edgefair", *args]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = saved
    out = capsys.readouterr()
    return Ran(code, out.out, out.err)
