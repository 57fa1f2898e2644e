"""The import graph follows DESIGN.md's layers (checked in fresh interpreters)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "edgefair"


def loaded_after_import(module: str) -> set[str]:
    code = f"import sys, {module}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


@pytest.mark.parametrize(
    "module", ["edgefair.tables", "edgefair.metrics", "edgefair.stats", "edgefair.frame", "edgefair"]
)
def test_core_imports_no_onnx_runtime_or_typer(module):
    loaded = loaded_after_import(module)
    assert not loaded & {"onnx", "onnxruntime", "typer", "click", "pandas"}, module


def test_runtime_imports_only_numpy_onnxruntime_and_stdlib():
    if not (PACKAGE / "runtime").exists():
        pytest.skip("runtime not built yet")
    loaded = loaded_after_import("edgefair.runtime")
    assert not loaded & {"onnx", "typer", "click", "pandas", "sklearn", "torch"}


def test_only_cli_imports_typer():
    offenders = [
        p.relative_to(PACKAGE).as_posix()
        for p in PACKAGE.rglob("*.py")
        if p.name != "cli.py" and ("import typer" in p.read_text() or "from typer" in p.read_text())
    ]
    assert offenders == []
