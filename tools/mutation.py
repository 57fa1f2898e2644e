"""Mutation testing (mutmut 3.8) of the modules where a silent bug does the most harm.

Each module in pyproject's [tool.edgefair.mutation.modules] is mutated on its own, against only the
test files listed for it, in .mutation/<module>-<hash of the tests>/ (mutmut caches its results there:
a rerun tests only the mutants of functions that changed). [tool.mutmut] holds the shared options.

    python tools/mutation.py                          # every configured module, then the scores
    python tools/mutation.py edgefair/core/stats.py        # some of them
    python tools/mutation.py edgefair/x.py:tests/test_x.py,tests/test_y.py   # ad hoc module and tests
    python tools/mutation.py --score-only --survivors # scores of the cached results, and what survived

[tool.edgefair.mutation.functions] may name, for a module, the only functions to mutate and score
("name" or "Class.method"): a module of which only some functions are in scope (the server's limits).

Score = killed (timeouts count as killed) / (mutants - survivors known to be equivalent), the latter
listed in tools/mutation-equivalent.txt as "<mutant name>  <reason>" lines.
Exit status 1 if a module scores under --threshold, 2 if mutmut failed.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".mutation"
EQUIVALENT = ROOT / "tools" / "mutation-equivalent.txt"
COLUMNS = ("total", "killed", "timeout", "survived", "equivalent", "no tests", "other", "score")


def toml_table(name: str, table: dict[str, Any]) -> str:
    """A flat TOML table; JSON spells strings, numbers, booleans and lists of them the same way."""
    return f"[{name}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in table.items()) + "\n"


def prepare(module: str, tests: list[str], tool: dict[str, Any], fresh: bool) -> Path:
    """A work directory linking to the sources, with a pyproject that mutates ``module`` only."""
    digest = hashlib.sha256(json.dumps(tests).encode()).hexdigest()[:8]  # other tests: other results
    work = WORK / f"{module.removesuffix('.py').replace('/', '.')}-{digest}"
    if fresh:
        shutil.rmtree(work / "mutants", ignore_errors=True)
    base = tool.get("mutmut", {})
    (work / "mutants").mkdir(parents=True, exist_ok=True)  # must exist when Python starts (PYTHONPATH)
    for name in {Path(p).parts[0] for p in base.get("source_paths", [module])} | {"tests", *base.get("also_copy", [])}:
        if not (work / name).exists():
            (work / name).symlink_to(ROOT / name)
    mutmut = {**base, "only_mutate": [module], "pytest_add_cli_args_test_selection": tests}
    mutmut["use_git_change_detection"] = False  # the work directory is not the checkout
    pytest = toml_table("tool.pytest.ini_options", tool.get("pytest", {}).get("ini_options", {}))
    (work / "pyproject.toml").write_text(pytest + toml_table("tool.mutmut", mutmut))
    return work


def statuses(work: Path, module: str) -> dict[str, str]:
    from mutmut.stats import status_by_exit_code

    meta = work / "mutants" / f"{module}.meta"
    codes = json.loads(meta.read_text())["exit_code_by_key"] if meta.exists() else {}
    return {name: status_by_exit_code[code] for name, code in codes.items()}


def one_line_diff(work: Path, module: str, name: str) -> str:
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    os.chdir(work)  # mutmut reads mutants/<module> relative to the working directory
    lines = get_diff_for_mutant(name, path=module).splitlines()[2:]
    return " | ".join(line.strip() for line in lines if line[:1] in "-+")


def patterns(module: str, functions: list[str]) -> list[str]:
    """mutmut's names for the mutants of ``functions`` ("name" or "Class.method") of ``module``."""
    prefix = module.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
    out = []
    for f in functions:
        cls, _, name = f.rpartition(".")
        out.append(f"{prefix}.x\u01c1{cls}\u01c1{name}__mutmut_*" if cls else f"{prefix}.x_{name}__mutmut_*")
    return out


def score(status: dict[str, str], equivalent: set[str]) -> dict[str, float]:
    count = Counter(status.values())
    row: dict[str, float] = {"total": len(status), "killed": count["killed"] + count["timeout"]}
    row["timeout"] = count["timeout"]
    row |= {"survived": count["survived"], "no tests": count["no tests"]}
    row["equivalent"] = sum(1 for n, s in status.items() if s == "survived" and n in equivalent)
    row["other"] = row["total"] - row["killed"] - row["survived"] - row["no tests"]
    row["score"] = 100.0 * row["killed"] / max(1, row["total"] - row["equivalent"])
    return row


def main() -> int:
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]
    config = tool.get("edgefair", {}).get("mutation", {})
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("modules", nargs="*", help="module paths, each optionally :test,test (default: configured)")
    parser.add_argument("--threshold", type=float, default=config.get("threshold", 90.0), help="percent")
    parser.add_argument("-j", "--jobs", type=int, default=2, help="mutants tested at once")
    parser.add_argument("--score-only", action="store_true", help="do not run mutmut; score the cached results")
    parser.add_argument("--fresh", action="store_true", help="forget the cached results first")
    parser.add_argument("--retest-survivors", action="store_true", help="test cached survivors again (new tests)")
    parser.add_argument("--survivors", action="store_true", help="list each survivor not known to be equivalent")
    args = parser.parse_args()
    configured: dict[str, list[str]] = config.get("modules", {})
    selected: dict[str, list[str]] = config.get("functions", {})
    asked = {m.partition(":")[0]: m.partition(":")[2].split(",") if ":" in m else None for m in args.modules}
    plan = {m: tests or configured.get(m, []) for m, tests in (asked or dict.fromkeys(configured)).items()}
    lines = EQUIVALENT.read_text().splitlines() if EQUIVALENT.exists() else []
    equivalent = {line.split()[0] for line in lines if line.strip() and not line.startswith("#")}
    rows: dict[str, dict[str, float]] = {}
    everything: dict[str, str] = {}
    failed = False
    for module, tests in plan.items():
        if not tests:
            sys.exit(f"{module}: no tests; list them in [tool.edgefair.mutation.modules] or give module:tests")
        work = prepare(module, tests, tool, args.fresh)
        only = patterns(module, selected[module]) if module in selected else []
        if not args.score_only:
            again = [n for n, s in statuses(work, module).items() if s == "survived"] if args.retest_survivors else []
            if only:  # mutmut reruns every mutant it is given by name; without names, only the untested ones
                again = [n for n in again if any(fnmatch.fnmatchcase(n, p) for p in only)] or only
            env = {**os.environ, "PYTHONPATH": str(work / "mutants")}  # tests' subprocesses import the mutants
            mutmut_bin = Path(sys.executable).with_name("mutmut")  # the one beside this interpreter (a venv)
            cmd = [
                str(mutmut_bin) if mutmut_bin.exists() else shutil.which("mutmut") or "mutmut",
                "run",
                f"--max-children={args.jobs}",
                *again,
            ]
            print(f"== {module}: mutmut run, log in {work / 'mutmut.log'}", flush=True)
            with open(work / "mutmut.log", "w") as log:
                failed |= subprocess.run(cmd, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT).returncode != 0
        status = statuses(work, module)
        if only:
            status = {n: s for n, s in status.items() if any(fnmatch.fnmatchcase(n, p) for p in only)}
        rows[module] = score(status, equivalent)
        everything |= status
        prefix = module.removesuffix(".py").replace("/", ".") + ".x"
        for name in sorted(n for n in equivalent if n.startswith(prefix) and status.get(n) != "survived"):
            print(f"   stale line in {EQUIVALENT.name}: {name} is {status.get(name, 'no longer a mutant')}")
        for name in (n for n, s in status.items() if args.survivors and s == "survived" and n not in equivalent):
            print(f"   {name}: {one_line_diff(work, module, name)}")
    if len(rows) > 1:
        rows["overall"] = score(everything, equivalent)
    print(f"\n{'module':36}" + "".join(f"{c:>11}" for c in COLUMNS))
    for module, row in rows.items():
        print(f"{module:36}" + "".join(f"{row[c]:>11.0f}" for c in COLUMNS[:-1]) + f"{row['score']:>10.1f}%")
    if failed:
        print("mutmut failed: see the log(s) named above")
        return 2
    low = [m for m, row in rows.items() if row["score"] < args.threshold]
    print(f"threshold {args.threshold:.0f}%: " + (f"FAIL {', '.join(low)}" if low else "OK"))
    return 1 if low else 0


if __name__ == "__main__":
    sys.exit(main())
