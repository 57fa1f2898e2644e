"""Reports: the JSON certificate and its schema, Markdown for pull requests, HTML to look at."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgefair.files import write_atomic


def json_safe(x: Any) -> Any:
    """NaN is not JSON: it becomes null (reports say why in their 'undefined' sections)."""
    if isinstance(x, float) and x != x:
        return None
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    return x


def write_text(path: str | Path, text: str) -> Path:
    """Write atomically (temp file beside the target, then rename): never a half report."""
    return write_atomic(path, text.encode("utf-8"))
