"""The rules of tune's final measurement, its structured refinement and its scaler fold,
on planted values (no timing is asserted).

Oracles: numpy's median and quantile over the planted per-round seconds; the refinement's
documented bisection worked by hand; numpy's forward pass of the scaled network.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import onnx.parser
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from edgefair.convert.prune import prune_structured
from edgefair.tune import TuneOptions, fold, measure, result, space, stages, tune
from edgefair.tune.measure import Latency


def _rounds(ratios: list[float], source: float = 1e-4) -> np.ndarray:
    """Per-round seconds: the source at ``source``, one model at ``ratio`` times it."""
    return np.array([[source, source * r] for r in ratios])


def test_latency_is_the_median_and_upper_quartile_of_per_round_ratios() -> None:
    rng = np.random.default_rng(0)
    per_round = rng.uniform(0.8e-4, 1.2e-4, (31, 4))
    got = measure.latencies(per_round, batch=1)
    ratios = per_round[:, 1:] / per_round[:, :1]
    for j, lat in enumerate(got):
        assert lat.ratio == pytest.approx(np.median(ratios[:, j]))
        assert lat.ratio_high == pytest.approx(np.quantile(ratios[:, j], 0.75))
        assert lat.seconds == pytest.approx(np.median(per_round[:, j + 1]))
        assert lat.faster == (np.quantile(ratios[:, j], 0.75) < 1.0) and lat.rounds == 31
    # the ratio is per round, not of medians: a source slow in the rounds where the model was slow
    paired = np.array([[1.0, 0.9], [2.0, 1.8], [3.0, 2.7], [1.5, 1.35]])
    assert measure.latencies(paired, 1)[0].ratio == pytest.approx(0.9)


def test_one_lucky_timing_does_not_make_a_variant_faster_when_pooled() -> None:
    lucky = [_rounds([0.80] * 30), _rounds([1.05] * 30), _rounds([1.04] * 30), _rounds([1.06] * 30)]
    steady = [_rounds([0.95, 0.96, 0.97] * 10) for _ in range(4)]
    lucky_pooled = measure.pooled(lucky, batch=1)[0]
    steady_pooled = measure.pooled(steady, batch=1)[0]
    everything = np.concatenate([t[:, 1] / t[:, 0] for t in lucky])
    assert lucky_pooled.ratio_high == pytest.approx(np.quantile(everything, 0.75)) and lucky_pooled.rounds == 120
    assert not lucky_pooled.faster  # its best timing alone would say 0.80x
    assert measure.latencies(lucky[0], 1)[0].faster
    assert steady_pooled.faster and steady_pooled.ratio == pytest.approx(0.96)


def _variant(name: str, ratio: float, high: float, verdict: str = "pass") -> result.VariantResult:
    fairness = result.Fairness(verdict, -0.01, "x", {}, 0.8, 0.8, 0.0, ())
    latency = Latency(1, ratio * 1e-4, 1e-4, ratio, high, 120)
    return result.VariantResult(name, "base", "structured", {}, sha256=name * 64, latency=latency, fairness=fairness)


def test_the_choice_takes_only_finalists_and_only_a_pooled_faster_one() -> None:
    variants = [
        _variant("a", 0.80, 0.85),  # a lucky search timing, not re-timed: not a finalist
        _variant("b", 0.93, 0.97),
        _variant("c", 0.91, 1.01),  # lower median, but its pooled upper quartile is not below 1
        _variant("d", 0.90, 0.95, verdict="fail"),
    ]
    assert result.choose(variants, "latency", 1, among={1, 2, 3}) == 1
    assert result.choose(variants, "latency", 1) == 0  # without the rule, the lucky one
    assert result.choose(variants, "latency", 1, among={2, 3}) is None


@pytest.mark.parametrize(
    ("levels", "expected"),
    [
        ({0.1: True, 0.2: True, 0.3: False, 0.4: False}, [0.25]),
        ({0.1: True, 0.2: True, 0.25: True, 0.3: False}, [0.275]),
        ({0.1: True, 0.2: True, 0.25: False, 0.3: False}, [0.225]),
        ({0.1: False, 0.2: False}, [0.05]),
        ({0.1: True, 0.2: True}, []),  # nothing fails: no boundary to find
        ({0.2: True, 0.205: False}, []),  # under 1% apart
        ({0.1: True, 0.3: True, 0.2: False, 0.5: False}, [0.4]),  # from the largest passing level
    ],
)
def test_refinement_bisects_between_the_largest_passing_and_next_failing_level(
    levels: dict[float, bool], expected: list[float]
) -> None:
    specs = space.refine_specs(levels)
    assert [s.prune_structured for s in specs] == expected
    assert all(s.stage == "refine" and s.family == "structured" for s in specs)


OFFSET = [10.0, -3.0, 0.5]
SCALE = [0.1, 2.0, 4.0]


def scaled_model(
    *, shared_scaler: bool = False, matmul: bool = False, bias: bool = True
) -> tuple[onnx.ModelProto, np.ndarray]:
    """numeric x[N, 3] -> Scaler; onehot-like y[N, 2]; Concat(y, scaled) -> Gemm/MatMul+Add -> Sigmoid."""
    rng = np.random.default_rng(1)
    w = rng.normal(0, 1, (5, 4)).astype(np.float32)  # [K, N]
    layer = (
        f"h = Gemm <transB = 1> (c, wt{', b' if bias else ''})"
        if not matmul
        else "m = MatMul (c, w)\n    h = Add (m, b)"
    )
    extra = "\n    t = Relu (s)" if shared_scaler else ""
    outputs = ", float[N, 3] t" if shared_scaler else ""
    model = onnx.parser.parse_model(f"""
    <ir_version: 8, opset_import: ["" : 17, "ai.onnx.ml" : 1]>
    scaled (float[N, 3] x, float[N, 2] y) => (float[N, 4] score{outputs}) {{
    s = ai.onnx.ml.Scaler <offset = {OFFSET}, scale = {SCALE}> (x)
    c = Concat <axis = 1> (y, s)
    {layer}
    score = Sigmoid (h){extra}
    }}""")
    weight = numpy_helper.from_array(np.ascontiguousarray(w.T), "wt") if not matmul else numpy_helper.from_array(w, "w")
    b = rng.normal(0, 1, 4).astype(np.float32)
    model.graph.initializer.extend([weight, *([numpy_helper.from_array(b, "b")] if bias else [])])
    model.graph.value_info.append(helper.make_tensor_value_info("s", onnx.TensorProto.FLOAT, ["N", 3]))
    onnx.checker.check_model(model, full_check=True)
    return model, w


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(["score"], feeds)[0]


@pytest.mark.parametrize(("matmul", "bias"), [(False, True), (True, True), (False, False)])
def test_scaler_fold_computes_numpys_network_with_one_node_fewer(matmul: bool, bias: bool) -> None:
    model, w = scaled_model(matmul=matmul, bias=bias)
    rng = np.random.default_rng(2)
    feeds = {"x": rng.normal(5, 3, (200, 3)).astype(np.float32), "y": rng.integers(0, 2, (200, 2)).astype(np.float32)}
    b = next((numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer if t.name == "b"), 0.0)
    scaled = (feeds["x"].astype(np.float64) - OFFSET) * SCALE
    expected = 1 / (1 + np.exp(-(np.hstack([feeds["y"], scaled]) @ w.astype(np.float64) + b)))
    folded, count = fold.fold_scalers(model)
    assert count == 1 and len(folded.graph.node) == len(model.graph.node) - 1
    assert "Scaler" not in [n.op_type for n in folded.graph.node]
    onnx.checker.check_model(folded, full_check=True)
    np.testing.assert_allclose(_run(folded, feeds), expected, atol=1e-5)
    np.testing.assert_allclose(_run(model, feeds), expected, atol=1e-5)


def test_a_scaler_read_elsewhere_is_not_folded() -> None:
    model, _ = scaled_model(shared_scaler=True)
    folded, count = fold.fold_scalers(model)
    assert count == 0 and [n.op_type for n in folded.graph.node] == [n.op_type for n in model.graph.node]


def test_structured_search_refines_at_the_boundary_and_refits_on_search_rows_only(tmp_path: Path) -> None:
    from tests.test_tune import FEATURES, POLICY, ROWS, SEED, held_out, near_rows, near_threshold_model, write_csv

    model = near_threshold_model(extra=5)  # 10 units, 5 of them decide: the plain cut fails from 60%
    onnx.save(model, tmp_path / "near.onnx")
    rows = near_rows(ROWS)
    options = TuneOptions(
        label="y",
        sensitive=("group", "region"),
        feature_columns=FEATURES,
        batch=256,
        objective="size",
        families=("structured",),
        timing_rounds=1,
        seed=SEED,
        calibration_rows=300,
    )
    tuned = tune(tmp_path / "near.onnx", write_csv(tmp_path / "near.csv", rows), POLICY, options=options)

    def passed(v: result.VariantResult) -> bool:
        return v.fairness is not None and v.fairness.verdict == "pass"

    for kind in (False, True):
        base = {
            v.spec["prune_structured"]: passed(v)
            for v in tuned.variants
            if v.stage == "base" and v.spec["refit"] is kind and v.evaluated
        }
        refined = [v for v in tuned.variants if v.stage == "refine" and v.spec["refit"] is kind]
        levels, expected = dict(base), []
        for _ in range(space.REFINE_STEPS):  # the documented bisection, worked here
            lo = max([f for f, ok in levels.items() if ok], default=0.0)
            hi = min([f for f, ok in levels.items() if not ok and f > lo], default=None)
            if hi is None or hi - lo < 0.01:
                break
            expected.append(round((lo + hi) / 2, 4))
            levels[expected[-1]] = next(passed(v) for v in refined if v.spec["prune_structured"] == expected[-1])
        assert [v.spec["prune_structured"] for v in refined] == expected, (kind, base)
        assert expected and not base[0.6] and base[0.5], (kind, base)  # a boundary was there to refine
    # a refit variant is prune_structured refitted on calibration rows drawn from the search rows only
    held = set(held_out(ROWS, 0.3, SEED))
    search_rows = [r for i, r in enumerate(rows) if i not in held]
    pick = np.sort(np.random.default_rng(SEED).choice(len(search_rows), size=300, replace=False))
    x = np.array([[float(search_rows[i][f]) for f in FEATURES] for i in pick], np.float32)
    refitted = next(
        v for v in tuned.variants if v.stage == "base" and v.spec["refit"] and v.spec["prune_structured"] == 0.5
    )
    plain = next(
        v for v in tuned.variants if v.stage == "base" and not v.spec["refit"] and v.spec["prune_structured"] == 0.5
    )
    expected_model = prune_structured(model, 0.5, refit={"x": x}).model
    assert refitted.sha256 == hashlib.sha256(expected_model.SerializeToString()).hexdigest() != plain.sha256


def test_structured_levels_are_read_per_kind_from_structured_only_variants() -> None:
    from edgefair.convert.quantize import QuantizeOptions

    def tried(spec: space.VariantSpec, verdict: str) -> tuple[space.VariantSpec, result.VariantResult]:
        v = _variant(spec.name, 0.9, 0.95, verdict)
        return spec, v

    S = space.VariantSpec
    rows = [
        tried(S(prune_structured=0.5), "pass"),
        tried(S(prune_structured=0.6), "fail"),
        tried(S(prune_structured=0.6, refit=True), "pass"),
        tried(S(prune_structured=0.7, refit=True), "inconclusive"),
        tried(S(prune_structured=0.8, quantize=QuantizeOptions()), "pass"),  # a combination: not a level
        tried(S(prune_structured=0.8, prune_magnitude=0.5), "pass"),
        tried(S(quantize=QuantizeOptions()), "pass"),
    ]
    assert stages.structured_levels(rows, refit=False) == {0.5: True, 0.6: False}
    assert stages.structured_levels(rows, refit=True) == {0.6: True, 0.7: False}
