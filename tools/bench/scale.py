"""Scale: verify on generated Parquet rows, one process against a Dask LocalCluster of 2
worker processes; and merging many private device exports into a fleet table.

    python tools/bench/scale.py                       (10M rows, 10,000 exports: ~15-30 min, 2 cores)
    python tools/bench/scale.py --rows 200000 --exports 500     (a smoke run, about a minute)

Everything is generated here, in a temporary folder removed at the end: rows with four
numeric features, two sensitive attributes and a label, written in 65,536-row row groups
(constant memory); a small MLP and its dynamic int8 copy (batch-dependent: both paths score
the same 65,536-row batches). Each measurement runs in a fresh interpreter.

Measured:
- verify: wall seconds of ``edgefair.verify`` (one process, one onnxruntime thread) and of
  ``edgefair.distributed.verify`` on ``local:2`` (cluster started beforehand, not timed), their
  ratio (target <= 1.15x), peak resident memory of the single process, of the Dask client and
  of each worker (VmHWM; target: flat in rows), and whether the two tables are identical;
- merge: wall seconds and peak resident memory of ``edgefair counters merge`` over the
  export files (private: suppressed under 11, discrete Laplace noise at epsilon 1).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

ROW_GROUP = 65536
FEATURES = ["f0", "f1", "f2", "f3"]

PEAK = """
def peak_mb():  # this process's high-water resident memory
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmHWM")) / 1024
"""

SINGLE = (
    PEAK
    + """
import json, sys, time
import edgefair
ref, cand, data = sys.argv[1:4]
t0 = time.perf_counter()
r = edgefair.verify(ref, cand, data, label="y", sensitive=["sex", "region"], feature_columns=["f0", "f1", "f2", "f3"])
wall = time.perf_counter() - t0
print(json.dumps({"wall": wall, "peak_mb": peak_mb(), "rows": r.evaluation.rows, "table": r.table.to_json()}))
"""
)

DASK = (
    PEAK
    + """
import json, sys, time
from edgefair import distributed
ref, cand, data = sys.argv[1:4]
with distributed.connect("local:2", timeout=120) as client:
    client.wait_for_workers(2, timeout=120)
    t0 = time.perf_counter()
    r = distributed.verify(ref, cand, data, client=client, label="y", sensitive=["sex", "region"],
                           feature_columns=["f0", "f1", "f2", "f3"])
    wall = time.perf_counter() - t0
    workers = sorted(client.run(peak_mb).values())
print(json.dumps({"wall": wall, "client_peak_mb": peak_mb(), "worker_peak_mb": workers,
                  "rows": r.evaluation.rows, "table": r.table.to_json()}))
"""
)

MERGE = (
    PEAK
    + """
import json, sys, time
from edgefair.runtime.fleet_merge import merge_files
folder = sys.argv[1]
t0 = time.perf_counter()
merged = merge_files([folder])
text = merged.to_json()
print(json.dumps({"wall": time.perf_counter() - t0, "peak_mb": peak_mb(), "files": merged.files, "bytes": len(text)}))
"""
)


def write_rows(path: Path, rows: int, seed: int = 0) -> None:
    """``rows`` generated rows in row groups of 65,536, one group in memory at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    schema = pa.schema(
        [*((f, pa.float64()) for f in FEATURES), ("sex", pa.string()), ("region", pa.string()), ("y", pa.int64())]
    )
    with pq.ParquetWriter(str(path), schema) as writer:
        for start in range(0, rows, ROW_GROUP):
            n = min(ROW_GROUP, rows - start)
            x = rng.normal(0, 1, (n, 4))
            sex = rng.choice(["F", "M"], n)
            region = rng.choice(["north", "south", "east", "west"], n, p=[0.4, 0.3, 0.2, 0.1])
            y = (x[:, 0] + 0.5 * x[:, 1] - 0.3 * (sex == "F") + rng.normal(0, 1, n) > 0).astype(np.int64)
            cols = {f: x[:, i] for i, f in enumerate(FEATURES)} | {"sex": sex, "region": region, "y": y}
            writer.write_table(pa.table(cols, schema=schema), row_group_size=ROW_GROUP)


def write_models(folder: Path) -> tuple[Path, Path]:
    import onnx

    from edgefair.convert import QuantizeOptions, quantize
    from edgefair.convert.quantize import QuantMode
    from tests import models

    fp32 = models.mlp(inputs=4, hidden=32, seed=1)
    ref, cand = folder / "fp32.onnx", folder / "int8.onnx"
    onnx.save(fp32, str(ref))
    onnx.save(quantize(fp32, QuantizeOptions(mode=QuantMode.DYNAMIC_INT8)).model, str(cand))
    return ref, cand


def write_exports(folder: Path, count: int, seed: int = 0) -> None:
    """``count`` private exports of small device tables (50-500 rows, 3 x 2 groups)."""
    from edgefair.core import tables
    from edgefair.runtime.privacy import private_export

    folder.mkdir()
    rng = np.random.default_rng(seed)
    for i in range(count):
        n = int(rng.integers(50, 500))
        sex, region = rng.choice(["F", "M"], n), rng.choice(["north", "south", "east"], n)
        decision, y = rng.integers(0, 2, n), rng.integers(0, 2, n)
        table = tables.from_arrays({"region": region, "sex": sex}, decision, y_true=y, reference_score=rng.random(n))
        doc = private_export(table, min_cell=11, epsilon=1.0, seed=i)
        (folder / f"device-{i:05d}.json").write_text(json.dumps(doc))


def run(script: str, *args: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark step failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000, help="generated rows (default 10M)")
    parser.add_argument("--exports", type=int, default=10_000, help="device exports to merge (default 10,000)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgefair-scale-") as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        data = folder / "rows.parquet"
        write_rows(data, args.rows)
        ref, cand = write_models(folder)
        size = data.stat().st_size / 1e6
        print(f"generated {args.rows:,} rows ({size:.0f} MB Parquet) in {time.perf_counter() - t0:.0f} s")
        single = run(SINGLE, str(ref), str(cand), str(data))
        dask = run(DASK, str(ref), str(cand), str(data))
        same = single["table"] == dask["table"] and single["rows"] == dask["rows"] == args.rows
        print(f"verify, one process:        {single['wall']:8.1f} s   peak {single['peak_mb']:.0f} MB")
        print(
            f"verify, LocalCluster(2):    {dask['wall']:8.1f} s   client peak {dask['client_peak_mb']:.0f} MB, "
            f"workers {', '.join(f'{m:.0f}' for m in dask['worker_peak_mb'])} MB"
        )
        ratio = dask["wall"] / single["wall"]
        print(f"  wall ratio {ratio:.2f}x (target <= 1.15x); tables identical: {'yes' if same else 'NO'}")
        t0 = time.perf_counter()
        write_exports(folder / "exports", args.exports)
        print(f"generated {args.exports:,} private exports in {time.perf_counter() - t0:.0f} s")
        merge = run(MERGE, str(folder / "exports"))
        print(f"counters merge of {merge['files']:,} exports: {merge['wall']:.1f} s, peak {merge['peak_mb']:.0f} MB")
        if not same:
            raise SystemExit(1)


if __name__ == "__main__":
    main()
