"""Writing files so a reader never sees half of one, and never over one of the inputs.

A temp file beside the target, then rename; an output that is one of the command's inputs
(the same file, after resolving links) is refused before anything is written.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from edgefair.errors import InputError


def write_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (fsync, then rename); readable by all (0644)."""
    target = Path(path)
    if target.is_dir():
        raise InputError(f"{target}: is a folder, expected a file path")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; models and reports are meant to be shared
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def write_text(path: str | Path, text: str) -> Path:
    """``write_atomic`` for text (UTF-8)."""
    return write_atomic(path, text.encode("utf-8"))


def same_file(a: str | Path, b: str | Path) -> bool:
    """Do two paths name one file (links resolved; a missing path is nobody's twin)?"""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()


def refuse_missing_folders(outputs: Iterable[str | Path]) -> None:
    """InputError if an output's folder does not exist: a typo in a path must not create a
    tree of folders (``/nonexistent/dir/x.onnx``). Every command calls it for the paths its
    user named (``write_atomic`` still makes the folders edgefair itself lays out inside them)."""
    for out in (Path(o) for o in outputs):
        folder = out.parent
        if not folder.is_dir():
            what = "not a folder" if folder.exists() else "no such folder (create it first)"
            raise InputError(f"{folder}: {what}")


def refuse_overwriting_inputs(outputs: Iterable[str | Path], inputs: Iterable[str | Path]) -> None:
    """InputError if an output path is one of the inputs (or two outputs are one file)."""
    ins = [Path(i) for i in inputs]
    outs = [Path(o) for o in outputs]
    for i, out in enumerate(outs):
        for source in ins:
            if same_file(out, source):
                raise InputError(f"{out}: is one of the inputs ({source}); choose another output path")
        for other in outs[i + 1 :]:
            if same_file(out, other):
                raise InputError(f"{out}: named twice as an output ({other})")
