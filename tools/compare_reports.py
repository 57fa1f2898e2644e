"""Compare two edgefair report JSON files, ignoring what may differ between runs.

    python tools/compare_reports.py BEFORE.json AFTER.json [--ignore KEY ...]

Always ignored: ``created`` (a timestamp), ``latency_ratio`` (timings) and model ``path``
(where the file lay; its ``sha256`` is compared). Prints every other difference with its
JSON path and exits 1 if there is one, 0 if the documents agree.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

ALWAYS_IGNORED = {"created", "latency_ratio", "path"}


def differences(a: Any, b: Any, where: str, ignored: set[str]) -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            if key in ignored:
                continue
            if key not in a or key not in b:
                out.append(f"{where}.{key}: only in {'after' if key in b else 'before'}")
                continue
            out += differences(a[key], b[key], f"{where}.{key}", ignored)
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{where}: {len(a)} items before, {len(b)} after"]
        return [
            d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in differences(x, y, f"{where}[{i}]", ignored)
        ]
    same = a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))
    return [] if same else [f"{where}: {a!r} before, {b!r} after"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--ignore", nargs="*", default=[], help="more keys to ignore wherever they occur")
    args = parser.parse_args()
    with open(args.before, encoding="utf-8") as f:
        before = json.load(f)
    with open(args.after, encoding="utf-8") as f:
        after = json.load(f)
    found = differences(before, after, "$", ALWAYS_IGNORED | set(args.ignore))
    for line in found[:200]:
        print(line)
    print(f"{len(found)} differences" if found else "identical (timestamps, latencies and paths aside)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
