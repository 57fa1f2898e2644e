"""Reports: the JSON certificate and its schema, Markdown for pull requests, HTML to look at."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any


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
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
