"""The runtime part of the demo (filled in by the runtime stage)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


def runtime_demo(reference: Path, out: Path, echo: Callable[[str], None]) -> None:
    """Placeholder until the runtime lands: says nothing."""
