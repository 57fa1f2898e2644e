"""verify on Adult-shaped CSV files (1M and 5M rows) against reading them with pandas and
running both models; and in memory against bare inference.

    python tools/bench/verify.py                 (about 4-6 minutes on a quiet 2-core machine)
    python tools/bench/verify.py --rows 1000000  (one size, about 1-2 minutes)

Anchor (same run, same files, fresh interpreters): pandas' C reader in 65,536-row chunks,
each chunk's feeds built and both models run (reference fp32 and its dynamic int8), one
onnxruntime thread. Measured: ``edgefair.verify`` on the same CSV (its fast reader when
pyarrow is installed: the ``fast`` extra), default policy, in a fresh interpreter; peak
resident memory of each. Targets: verify <= 1.3x the anchor at 1M and 5M rows; peak
memory flat in rows (5M within 1.2x of 1M); the report's data SHA-256 is the file's.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
MODEL = ROOT / "edgefair" / "demo" / "models" / "adult_mlp.onnx"

from edgefair import convert as conv  # noqa: E402
from edgefair import modelio  # noqa: E402
from edgefair.convert.common import load_model, save_model  # noqa: E402
from edgefair.convert.quantize import QuantizeOptions, QuantMode  # noqa: E402
from edgefair.core import stats  # noqa: E402
from edgefair.data import ADULT_COLUMNS, Dataset, load_adult, resolve  # noqa: E402
from edgefair.verification import evaluate as ev  # noqa: E402
from edgefair.verification.gate import gate  # noqa: E402
from edgefair.verification.policy import DEFAULT_POLICY  # noqa: E402

CHUNK = 65536

ANCHOR = """
import json, sys, time
import numpy as np, onnxruntime as ort, pandas as pd
def peak_mb():  # this process's high-water resident memory (ru_maxrss would count the parent's)
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmHWM")) / 1024
csv, models = sys.argv[1], sys.argv[2:]
opts = ort.SessionOptions(); opts.intra_op_num_threads = 1; opts.inter_op_num_threads = 1
sessions = [ort.InferenceSession(m, opts, providers=["CPUExecutionProvider"]) for m in models]
kinds = {i.name: i.type for i in sessions[0].get_inputs()}
t0 = time.perf_counter()
rows = 0
for frame in pd.read_csv(csv, chunksize=__CHUNK__, skipinitialspace=True):
    feeds = {}
    for name, kind in kinds.items():
        column = frame[name].to_numpy()
        if kind == "tensor(string)":
            feeds[name] = column.astype(object).reshape(-1, 1)
        else:
            feeds[name] = column.astype(np.float32).reshape(-1, 1)
    for s in sessions:
        s.run(None, feeds)
    rows += len(frame)
print(json.dumps({"seconds": time.perf_counter() - t0, "rows": rows,
                  "peak_mb": peak_mb()}))
""".replace("__CHUNK__", str(CHUNK))

VERIFY = """
import json, sys, time
sys.path.insert(0, __ROOT__)
def peak_mb():  # this process's high-water resident memory (ru_maxrss would count the parent's)
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmHWM")) / 1024
import edgefair
csv, reference, candidate = sys.argv[1:4]
t0 = time.perf_counter()
report = edgefair.verify(reference, candidate, csv, label="income", sensitive=["race", "sex"])
seconds = time.perf_counter() - t0
from edgefair.data import csvfile
print(json.dumps({"seconds": seconds, "rows": report.evaluation.rows, "sha256": report.evaluation.data_sha256,
                  "verdict": str(report.gate.verdict), "arrow": csvfile.arrow_available(),
                  "peak_mb": peak_mb()}))
""".replace("__ROOT__", repr(str(ROOT)))


def write_csv(path: Path, rows: int) -> str:
    """Adult-shaped rows resampled from the test split, written line by line; its SHA-256."""
    test = load_adult("test")
    cells = [np.asarray(test.columns[c]).tolist() for c in ADULT_COLUMNS]
    lines = [
        (",".join(_cell(col[i]) for col in cells) + "\n").encode() for i in range(test.rows)
    ]  # each source row's line once
    idx = np.random.default_rng(0).integers(0, test.rows, rows)
    digest = hashlib.sha256()
    with path.open("wb") as f:
        for part in (
            (",".join(ADULT_COLUMNS) + "\n").encode(),
            *(b"".join(lines[i] for i in idx[s : s + 100_000].tolist()) for s in range(0, rows, 100_000)),
        ):
            f.write(part)
            digest.update(part)
    return digest.hexdigest()


def _cell(value: object) -> str:
    if isinstance(value, float):
        return "" if value != value else repr(value)
    return str(value)


def fresh(code: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def in_memory(reference: Path, candidate: Path, rows: int) -> None:
    """verify on rows already in memory vs bare inference of both models on the same chunks."""
    test = load_adult("test")
    idx = np.random.default_rng(0).integers(0, test.rows, rows)
    data = Dataset({c: test.columns[c][idx] for c in ADULT_COLUMNS}, "synthetic", "0" * 64, rows)
    sessions = [modelio.open_session(reference), modelio.open_session(candidate)]
    sig = modelio.signature(sessions[0])
    feeds = [modelio.build_feeds(sig, c.columns) for c in data.chunks(CHUNK)]
    t0 = time.perf_counter()
    for f in feeds:
        for s in sessions:
            s.run(None, f)
    t_bare = time.perf_counter() - t0
    t0 = time.perf_counter()
    evaluation = ev.evaluate(
        reference, [candidate], resolve(data), ev.EvaluateOptions(label="income", sensitive=["race", "sex"])
    )
    result = gate(evaluation.tables[0], DEFAULT_POLICY)
    t_verify = time.perf_counter() - t0
    t0 = time.perf_counter()
    stats.bootstrap_counts(evaluation.tables[0].counts, 1000, seed=0)
    t_boot = time.perf_counter() - t0
    print(
        f"in memory, {rows:,} rows: verify {t_verify:.2f} s vs bare inference of both models {t_bare:.2f} s "
        f"-> {t_verify / t_bare:.3f}x (target <= 1.3x); verdict {result.verdict}"
    )
    print(f"paired table bootstrap, 1000 replicates of the {rows:,}-row table: {t_boot * 1e3:.1f} ms (target < 1000)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="1000000,5000000", help="comma-separated CSV sizes")
    args = parser.parse_args()
    sizes = [int(r) for r in args.rows.split(",")]
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        candidate = save_model(
            conv.convert(
                load_model(MODEL), conv.ConvertOptions(quantize=QuantizeOptions(mode=QuantMode.DYNAMIC_INT8))
            ).model,
            tmp / "int8.onnx",
        )
        in_memory(MODEL, candidate, sizes[0])
        peaks = {}
        for rows in sizes:
            csv = tmp / f"adult{rows}.csv"
            sha = write_csv(csv, rows)
            anchor = fresh(ANCHOR, str(csv), str(MODEL), str(candidate))
            ours = fresh(VERIFY, str(csv), str(MODEL), str(candidate))
            assert anchor["rows"] == ours["rows"] == rows, (anchor, ours)
            peaks[rows] = ours["peak_mb"]
            print(
                f"CSV, {rows:,} rows ({csv.stat().st_size / 1e6:.0f} MB): verify {ours['seconds']:.2f} s "
                f"(fast reader: {ours['arrow']}; verdict {ours['verdict']}) vs anchor pandas read_csv in "
                f"{CHUNK:,}-row chunks + both models {anchor['seconds']:.2f} s -> "
                f"{ours['seconds'] / anchor['seconds']:.3f}x (target <= 1.3x); peak memory "
                f"{ours['peak_mb']:.0f} MB vs anchor {anchor['peak_mb']:.0f} MB; "
                f"data SHA-256 is the file's: {ours['sha256'] == sha}"
            )
            csv.unlink()
        if len(peaks) > 1:
            small, large = min(peaks), max(peaks)
            print(
                f"peak memory of verify: {peaks[small]:.0f} MB at {small:,} rows, {peaks[large]:.0f} MB at "
                f"{large:,} rows -> {peaks[large] / peaks[small]:.2f}x (target: flat, <= 1.2x)"
            )


if __name__ == "__main__":
    main()
