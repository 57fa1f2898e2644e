"""The import graph is the layer tree of docs/ARCHITECTURE.md: checked from the source (every
import, lazy ones included) and in fresh interpreters (what a device really loads)."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "edgefair"

# Lowest first. A module may import its own unit and the units of lower layers only; the
# units of one layer (convert, verification, runtime) never import one another.
LAYERS: list[tuple[str, ...]] = [
    ("edgefair.errors", "edgefair.version"),
    ("edgefair.files",),
    ("edgefair.core",),
    ("edgefair.data",),
    ("edgefair.modelio",),
    ("edgefair.convert", "edgefair.verification", "edgefair.runtime"),
    ("edgefair.distributed", "edgefair.bundling"),
    ("edgefair.report",),
    ("edgefair.tune",),
    ("edgefair.serve",),
    ("edgefair.demo",),
    ("edgefair.cli",),
    ("edgefair.__main__",),
]
FACADE = "edgefair"  # edgefair/__init__.py: the public names, loaded lazily; above every layer


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    """Every edgefair module ``path`` imports: at the top, in functions, through
    ``import_module("...")`` and through lazy maps (dicts whose values are module names)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            for alias in node.names:  # ``from edgefair import convert`` imports edgefair.convert
                full = f"{base}.{alias.name}"
                found.add(full if full in known else base)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module":
            found.update(a.value for a in node.args[:1] if isinstance(a, ast.Constant) and isinstance(a.value, str))
        elif isinstance(node, ast.Dict) and node.values:
            names = [v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str)]
            if len(names) == len(node.values) and all(n in known for n in names):
                found.update(names)
    return {f for f in found if f == FACADE or f.startswith("edgefair.")}


def graph(root: Path) -> dict[str, set[str]]:
    files = {module_name(p, root): p for p in root.rglob("*.py")}
    known = set(files)
    return {name: {i for i in imports_of(p, name, known) if i != name} for name, p in files.items()}


def unit_of(module: str) -> tuple[int, str]:
    for level, units in enumerate(LAYERS):
        for unit in units:
            if module == unit or module.startswith(unit + "."):
                return level, unit
    if module == FACADE:
        return len(LAYERS), FACADE
    raise AssertionError(f"{module} belongs to no layer; add it to LAYERS and docs/ARCHITECTURE.md")


def violations(root: Path) -> list[str]:
    g = graph(root)
    out = []
    for module, targets in sorted(g.items()):
        level, unit = unit_of(module)
        for target in sorted(targets):
            t_level, t_unit = unit_of(target)
            if t_unit != unit and t_level >= level:
                out.append(f"{module} -> {target} ({'sideways' if t_level == level else 'upward'})")
    return out + [f"cycle: {' -> '.join(c)}" for c in cycles(g)]


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (iterative DFS)."""
    found, state = [], dict.fromkeys(g, 0)  # 0 new, 1 on the stack, 2 done
    for start in sorted(g):
        if state[start]:
            continue
        stack = [(start, iter(sorted(g[start] & g.keys())))]
        path = [start]
        state[start] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                path.pop()
                state[node] = 2
            elif state[child] == 1:
                found.append([*path[path.index(child) :], child])
            elif state[child] == 0:
                state[child] = 1
                path.append(child)
                stack.append((child, iter(sorted(g[child] & g.keys()))))
    return found


def test_the_package_follows_its_layers():
    assert violations(PACKAGE) == []


@pytest.mark.parametrize(
    ("file", "planted", "expected"),
    [
        ("core/tables.py", "from edgefair.cli import app\n", "edgefair.core.tables -> edgefair.cli (upward)"),
        ("verification/gate.py", "def f():\n    from edgefair.report import build\n", "-> edgefair.report (upward)"),
        (
            "runtime/drift.py",
            "import importlib\nX = importlib.import_module('edgefair.convert.prune')\n",
            "edgefair.runtime.drift -> edgefair.convert.prune (sideways)",
        ),
        ("modelio/feeds.py", "from edgefair import runtime\n", "edgefair.modelio.feeds -> edgefair.runtime (upward)"),
        ("data/columns.py", "import edgefair\n", "edgefair.data.columns -> edgefair (upward)"),
        ("core/stats.py", "from edgefair.core import frame\n", "cycle: "),
    ],
)
def test_the_checker_catches_a_planted_import(tmp_path, file, planted, expected):
    copy = tmp_path / "edgefair"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "*.onnx", "*.gz"))
    target = copy / file
    target.write_text(target.read_text() + "\n" + planted)
    assert any(expected in v for v in violations(copy)), violations(copy)


def loaded_after_import(module: str) -> set[str]:
    code = f"import sys, {module}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


@pytest.mark.parametrize(
    "module",
    ["edgefair.core.tables", "edgefair.core.metrics", "edgefair.core.stats", "edgefair.core.frame", "edgefair"],
)
def test_core_imports_no_onnx_runtime_or_typer(module):
    loaded = loaded_after_import(module)
    assert not loaded & {"onnx", "onnxruntime", "typer", "click", "pandas"}, module


@pytest.mark.parametrize(
    "module", ["edgefair.runtime", "edgefair.runtime.session", "edgefair.modelio", "edgefair.data"]
)
def test_device_path_imports_only_numpy_onnxruntime_and_stdlib(module):
    loaded = loaded_after_import(module)
    assert not loaded & {"onnx", "typer", "click", "pandas", "sklearn", "torch", "edgefair.convert"}, module


def test_only_cli_imports_typer():
    g = graph(PACKAGE)
    offenders = []
    for p in PACKAGE.rglob("*.py"):
        tree = ast.parse(p.read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        if any(x.split(".")[0] in ("typer", "click") for x in names) and not module_name(p, PACKAGE).startswith(
            "edgefair.cli"
        ):
            offenders.append(module_name(p, PACKAGE))
    assert offenders == [] and g


def test_no_module_is_over_about_400_lines():
    long = {
        p.relative_to(PACKAGE).as_posix(): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 420
    }
    assert long == {}
