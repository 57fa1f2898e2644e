"""FairSession against bare onnxruntime on models/adult_mlp.onnx, one thread, one run.

    python tools/bench/runtime.py
Targets: run() <= 1.10x bare at batch 1 and <= 1.02x at batch 256; `import edgefair.runtime`
(with FairSession) <= 1.2x `import onnxruntime`; counter update <= 1 us per row;
resident memory of a FairSession <= +10 MB over a bare session.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
MODEL = ROOT / "edgefair" / "demo" / "models" / "adult_mlp.onnx"

from edgefair import modelio  # noqa: E402
from edgefair.data import ADULT_FEATURES, load_adult  # noqa: E402
from edgefair.runtime.coding import Coded  # noqa: E402
from edgefair.runtime.counters import Counters  # noqa: E402
from edgefair.runtime.session import FairSession  # noqa: E402


def feeds_for(rows: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    d = load_adult("test")
    feeds = {
        k: d.columns[k][:rows].reshape(-1, 1).astype(np.float32 if d.columns[k].dtype.kind == "f" else object)
        for k in ADULT_FEATURES
    }
    return feeds, {"race": d.columns["race"][:rows], "sex": d.columns["sex"][:rows]}


def coded(sens: dict[str, np.ndarray]) -> dict[str, Coded]:
    """The same columns dictionary-encoded, as an app holding pandas Categoricals has them."""
    out = {}
    for name, column in sens.items():
        categories, codes = np.unique(column.astype(str), return_inverse=True)
        out[name] = Coded(tuple(categories.tolist()), codes.reshape(-1))
    return out


def paired_rounds(
    a: Callable[[], object], b: Callable[[], object], calls: int, rounds: int, after_a: Callable[[], object]
) -> tuple[float, float, float, float]:
    """Per-round ratio of a's time to b's: (median, lower quartile, upper quartile, median
    seconds of b per call). The two alternate within every round (which goes first alternates
    too), so the host's drift hits both alike; ``after_a`` runs inside a's timed region at the
    end of each round (the counters' deferred rows added in, so their cost is counted)."""
    ratios, tb_all = [], []
    for r in range(rounds):
        times = {}
        for which in (0, 1) if r % 2 == 0 else (1, 0):
            fn = (a, b)[which]
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            if which == 0:
                after_a()
            times[which] = (time.perf_counter() - t0) / calls
        ratios.append(times[0] / times[1])
        tb_all.append(times[1])
    q1, med, q3 = np.quantile(ratios, [0.25, 0.5, 0.75])
    return float(med), float(q1), float(q3), statistics.median(tb_all)


def fresh_pair(codes: tuple[str, str], repeats: int = 21, bytecode: bool = True) -> tuple[float, float]:
    """Median wall time of each snippet in a fresh interpreter, the two interleaved run by run.

    ``bytecode``: modules load from cached bytecode (in a private PYTHONPYCACHEPREFIX, warmed
    once), as an installed package does; without it every edgefair module is compiled from
    source on each start (a checkout run with PYTHONDONTWRITEBYTECODE=1), onnxruntime's and
    numpy's still come from their installed bytecode."""
    env = dict(os.environ)
    with tempfile.TemporaryDirectory() as cache:
        if bytecode:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = cache
        else:
            env["PYTHONDONTWRITEBYTECODE"] = "1"
        for code in codes:  # warm the bytecode cache and the file system
            subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env=env)
        times: tuple[list[float], list[float]] = ([], [])
        for _ in range(repeats):
            for code, out in zip(codes, times, strict=True):
                t0 = time.perf_counter()
                subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env=env)
                out.append(time.perf_counter() - t0)
    return statistics.median(times[0]), statistics.median(times[1])


def import_self_times(code: str, after: str = "onnxruntime", repeats: int = 11) -> tuple[int, list[tuple[int, str]]]:
    """``-X importtime``: the summed self time (us) of the modules imported after ``after``
    (what edgefair adds to onnxruntime + numpy), minimum over fresh runs, and the largest."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    best: dict[str, int] = {}
    totals = []
    with tempfile.TemporaryDirectory() as cache:
        env["PYTHONPYCACHEPREFIX"] = cache
        for _ in range(repeats + 1):  # the first run fills the bytecode cache
            err = subprocess.run(
                [sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, cwd=ROOT, env=env
            ).stderr
            lines = [line for line in err.splitlines() if line.startswith("import time:")]
            rows = [line.split("|") for line in lines if "self [us]" not in line]
            names = [r[2].rstrip() for r in rows]
            start = names.index(f" {after}") + 1 if f" {after}" in names else 0
            added = {r[2].strip(): int(r[0].split(":")[1]) for r in rows[start:]}
            totals.append(sum(added.values()))
            for name, us in added.items():
                best[name] = min(best.get(name, us), us)
    return min(totals[1:]), sorted(((us, name) for name, us in best.items()), reverse=True)[:8]


RSS = """
import sys, numpy as np
sys.path.insert(0, {root!r})
from edgefair.data import ADULT_FEATURES, load_adult
d = load_adult("test")
feeds = {{k: d.columns[k][:256].reshape(-1, 1).astype(np.float32 if d.columns[k].dtype.kind == "f" else object)
         for k in ADULT_FEATURES}}
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4  # resident pages -> KiB
before = rss()
if {fair}:
    from edgefair.runtime.session import FairSession
    s = FairSession({model!r}, sensitive=["race", "sex"])
    for _ in range(20):
        s.run(feeds, {{"race": d.columns["race"][:256], "sex": d.columns["sex"][:256]}})
else:
    from edgefair import modelio
    s = modelio.open_session({model!r})
    for _ in range(20):
        s.run(None, feeds)
print(rss() - before)
"""


def main() -> None:
    fair = FairSession(MODEL, sensitive=["race", "sex"])
    bare = modelio.open_session(MODEL, threads=1)
    for batch, calls in ((1, 400), (256, 40)):
        feeds, strings = feeds_for(batch)
        # sensitive values as strings (a lookup per row), then dictionary-encoded (``Coded``)
        for how, sens in (("strings", strings), ("Coded", coded(strings))):
            fair.run(feeds, sens)  # the first call learns the values (the careful path); later calls are the hot path
            ratio, low, high, t_bare = paired_rounds(
                partial(fair.run, feeds, sens), partial(bare.run, None, feeds), calls, 41, lambda: fair.counters.counts
            )
            target = 1.10 if batch == 1 else 1.02
            print(
                f"FairSession.run / InferenceSession.run, batch {batch}, sensitive {how}: {ratio:.3f}x (quartiles "
                f"{low:.3f}-{high:.3f} over 41 paired rounds; bare {t_bare * 1e6:.0f} us; target <= {target}x)"
            )
    pair = ("import onnxruntime; from edgefair.runtime import FairSession", "import onnxruntime")
    for bytecode in (True, False):
        t_ef, t_ort = fresh_pair(pair, bytecode=bytecode)
        how = "cached bytecode, as installed" if bytecode else "no bytecode cache, PYTHONDONTWRITEBYTECODE=1"
        print(
            f"import edgefair.runtime (FairSession) / import onnxruntime: {t_ef / t_ort:.3f}x "
            f"({t_ef * 1e3:.0f} vs {t_ort * 1e3:.0f} ms, fresh interpreters, interleaved, {how}; target <= 1.2x)"
        )
    # the import statement, not importlib.import_module (the lazy __getattr__), is what -X importtime logs
    added, largest = import_self_times("import onnxruntime; import edgefair.runtime.session; " + pair[0])
    print(
        f"  -X importtime: modules imported after onnxruntime sum to {added / 1e3:.1f} ms self time; largest "
        + ", ".join(f"{name} {us / 1e3:.1f}" for us, name in largest)
    )
    counters = Counters(["race", "sex"], {"race": ["White", "Black"], "sex": ["Female", "Male"]})
    _, sens = feeds_for(256)
    rng = np.random.default_rng(0)
    decisions, scores = rng.integers(0, 2, 256), rng.random(256)
    t0 = time.perf_counter()
    for _ in range(2000):
        groups = counters.group_codes(sens, 256)
        counters.update(groups, decisions, scores)
    per_row = (time.perf_counter() - t0) / (2000 * 256)
    print(f"counter update (group codes + counts + histogram): {per_row * 1e9:.0f} ns per row (target <= 1000 ns)")
    rss = {}
    for name, flag in (("bare", False), ("fair", True)):
        code = RSS.format(root=str(ROOT), fair=flag, model=str(MODEL))
        rss[name] = statistics.median(
            int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
            for _ in range(3)
        )
    print(
        f"resident memory: FairSession +{rss['fair'] / 1024:.1f} MB vs bare session +{rss['bare'] / 1024:.1f} MB "
        f"-> {(rss['fair'] - rss['bare']) / 1024:+.1f} MB (target <= +10 MB)"
    )
    fair.close()


if __name__ == "__main__":
    main()
