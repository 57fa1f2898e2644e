"""verify on 1M synthetic Adult-shaped rows against bare onnxruntime inference on them.

    python tools/bench/verify.py
Targets: verify <= 1.3x the inference it must run anyway (reference + candidate over
the same rows, 65,536-row chunks, default threads); the paired table bootstrap (1000
replicates, 1M rows) well under a second.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from edgefair import convert as conv  # noqa: E402
from edgefair import modelio  # noqa: E402
from edgefair.convert.common import load_model, save_model  # noqa: E402
from edgefair.convert.quantize import QuantizeOptions, QuantMode  # noqa: E402
from edgefair.core import stats  # noqa: E402
from edgefair.data import ADULT_COLUMNS, Dataset, load_adult  # noqa: E402
from edgefair.verification import evaluate as ev  # noqa: E402
from edgefair.verification.gate import gate  # noqa: E402
from edgefair.verification.policy import DEFAULT_POLICY  # noqa: E402

ROWS = 1_000_000


def synthetic(rows: int) -> Dataset:
    """Adult-shaped: rows resampled from the test split (same columns, types, groups)."""
    test = load_adult("test")
    idx = np.random.default_rng(0).integers(0, test.rows, rows)
    return Dataset({c: test.columns[c][idx] for c in ADULT_COLUMNS}, "synthetic", "0" * 64, rows)


def main() -> None:
    reference = ROOT / "models" / "adult_mlp.onnx"
    with tempfile.TemporaryDirectory() as d:
        candidate = save_model(
            conv.convert(
                load_model(reference),
                conv.ConvertOptions(quantize=QuantizeOptions(mode=QuantMode.DYNAMIC_INT8)),
            ).model,
            Path(d) / "int8.onnx",
        )
        data = synthetic(ROWS)
        # anchor: bare inference of both models over the same chunks, feeds built once
        sessions = [modelio.open_session(reference), modelio.open_session(candidate)]
        sig = modelio.signature(sessions[0])
        chunks = list(data.chunks(65536))
        feeds = [modelio.build_feeds(sig, c.columns) for c in chunks]
        t0 = time.perf_counter()
        for f in feeds:
            for s in sessions:
                s.run(None, f)
        t_bare = time.perf_counter() - t0
        # verify: feeds, both models, decisions, paired table, gate (bootstrap included)
        t0 = time.perf_counter()  # in memory, like the anchor: no CSV parsing in either
        evaluation = ev.evaluate(
            reference, [candidate], data, ev.EvaluateOptions(label="income", sensitive=["race", "sex"])
        )
        result = gate(evaluation.tables[0], DEFAULT_POLICY)
        t_verify = time.perf_counter() - t0
        t0 = time.perf_counter()
        stats.bootstrap_counts(evaluation.tables[0].counts, 1000, seed=0)
        t_boot = time.perf_counter() - t0
    print(
        f"verify on {ROWS:,} rows: {t_verify:.2f} s vs bare inference of both models {t_bare:.2f} s "
        f"-> {t_verify / t_bare:.3f}x (target <= 1.3x); verdict {result.verdict}"
    )
    print(f"paired table bootstrap, 1000 replicates of the {ROWS:,}-row table: {t_boot * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
