"""The whole tune of the bundled Adult MLP by size (slow: about three minutes on 2 busy cores).

Oracles: a fresh ``edgefair.verify`` on the held-out rows selected here by the documented
rule; the policy's verdict on structured 50% pruning computed by verify on the search rows.
Latency ratios are printed, never asserted (they are this machine's, now).
"""

from __future__ import annotations

import numpy as np
import pytest

import edgefair
from edgefair import convert as conv
from edgefair.data import Dataset, load_adult
from edgefair.tune import TuneOptions, tune
from tests.conftest import MODELS

pytestmark = pytest.mark.slow


def test_adult_mlp_tune_end_to_end(tmp_path):  # type: ignore[no-untyped-def]
    source = MODELS / "adult_mlp.onnx"
    # objective size: the choice must not rest on this machine's timings (tools/bench/tune.py
    # shows the latency search); variants are still scored and timed at batch 1
    result = tune(source, "adult", options=TuneOptions(batch=1, seed=0, objective="size"), cache_dir=tmp_path / "cache")
    adult = load_adult("test")
    perm = np.random.default_rng(0).permutation(adult.rows)
    k = round(adult.rows * 0.3)
    held, search = np.sort(perm[:k]), np.sort(perm[k:])

    def rows(idx: np.ndarray, name: str) -> Dataset:
        return Dataset({c: v[idx] for c, v in adult.columns.items()}, name, name, len(idx))

    chosen = result.chosen_variant
    assert chosen is not None and result.chosen_model is not None, result.note
    (tmp_path / "chosen.onnx").write_bytes(result.chosen_model)
    columns = {"label": "income", "sensitive": ["race", "sex"], "batch_size": 1}
    independent = edgefair.verify(source, tmp_path / "chosen.onnx", rows(held, "held"), **columns)  # type: ignore[arg-type]
    assert result.certificate is not None
    assert result.certificate.verdict == independent.verdict
    assert np.array_equal(result.certificate.table.counts, independent.table.counts)

    s50 = next(v for v in result.variants if v.name == "structured 50%")
    pruned = conv.prune_structured(conv.load_model(source), 0.5).model
    conv.save_model(pruned, tmp_path / "s50.onnx")
    on_search = edgefair.verify(source, tmp_path / "s50.onnx", rows(search, "search"), **columns)  # type: ignore[arg-type]
    assert s50.fairness is not None and s50.fairness.verdict == on_search.verdict == "fail"
    assert chosen.name != s50.name
    print(
        f"\n{len(result.variants)} variants in {result.search['elapsed_seconds']:.0f} s; chosen {chosen.name} "
        f"(gz size {chosen.objective('size', result.source['compressed_bytes']):.3f}x), held-out "
        f"{result.verdict}; structured 50% on the frontier: {s50.on_frontier}"
    )
