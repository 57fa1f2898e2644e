"""Latency of the packaged adult_mlp.onnx's variants as ratios to fp32, one thread; and
edgefair's int8 against the best of onnxruntime's own quantisers (24 variants).

    python tools/bench/convert.py          (about 3-5 minutes: 16 static variants calibrate)
Whole model and its MLP core alone (the subgraph after the preprocessing), at batch 1
and 256. Targets on the core: int8 >= 2.5x fp32 at batch 256; structured 50% + int8
>= 3x at batch 1. Ratios are speed-ups (fp32 time / variant time), measured in one run.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnx.utils

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from edgefair import convert as conv  # noqa: E402
from edgefair import modelio  # noqa: E402
from edgefair.convert.common import dedupe_opsets, load_model, model_bytes  # noqa: E402
from edgefair.convert.quantize import QuantizeOptions, QuantMode  # noqa: E402
from edgefair.data import load_adult  # noqa: E402

MODEL = ROOT / "edgefair" / "demo" / "models" / "adult_mlp.onnx"


def timed(session, feeds, repeats):
    session.run(None, feeds)
    best = []
    for _ in range(5):  # median of 5 rounds of `repeats` calls: robust to a noisy neighbour
        t0 = time.perf_counter()
        for _ in range(repeats):
            session.run(None, feeds)
        best.append((time.perf_counter() - t0) / repeats)
    return float(np.median(best))


def declare(model: onnx.ModelProto, tensor: str, width: int) -> onnx.ModelProto:
    """Give the cut tensor a value_info (ML-domain ops leave it uninferred)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    if not any(v.name == tensor for v in copy.graph.value_info):
        copy.graph.value_info.append(onnx.helper.make_tensor_value_info(tensor, onnx.TensorProto.FLOAT, ["N", width]))
    return copy


def core_of(model: onnx.ModelProto, core_input: str, tmp: Path, name: str, width: int) -> onnx.ModelProto:
    src, dst = tmp / f"{name}.full.onnx", tmp / f"{name}.core.onnx"
    onnx.save(declare(model, core_input, width), src)
    onnx.utils.extract_model(str(src), str(dst), [core_input], ["probabilities"], check_model=False)
    return onnx.load(dst)


def main() -> None:
    source = load_model(MODEL)
    train, test = load_adult("train"), load_adult("test")
    calibration = conv.calibration_sample(train.columns, 2000, None, "adult:train")
    q = QuantizeOptions
    variants = {
        "fp32": None,
        "dynamic int8": conv.ConvertOptions(quantize=q(mode=QuantMode.DYNAMIC_INT8)),
        "static int8": conv.ConvertOptions(quantize=q(mode=QuantMode.STATIC_INT8)),
        "fp16": conv.ConvertOptions(quantize=q(mode=QuantMode.FP16)),
        "structured 50%": conv.ConvertOptions(prune_structured=0.5),
        "structured 50% + int8": conv.ConvertOptions(prune_structured=0.5, quantize=q(mode=QuantMode.DYNAMIC_INT8)),
    }
    models = {
        name: source if opts is None else conv.convert(source, opts, None, calibration).model
        for name, opts in variants.items()
    }
    first = next(n for n in source.graph.node if n.op_type in ("Gemm", "MatMul"))
    core_input = first.input[0]
    weight = next(t for t in source.graph.initializer if t.name == first.input[1])
    transposed = any(a.name == "transB" and a.i == 1 for a in first.attribute)
    width = int(weight.dims[1] if transposed else weight.dims[0])
    whole_feeds = {
        b: modelio.build_feeds(
            modelio.signature(modelio.open_session(model_bytes(source))), {k: v[:b] for k, v in test.columns.items()}
        )
        for b in (1, 256)
    }
    pre = modelio.open_session(model_bytes(source))
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        pre_only = tmp / "pre.onnx"
        onnx.save(declare(source, core_input, width), tmp / "src.onnx")
        onnx.utils.extract_model(
            str(tmp / "src.onnx"),
            str(pre_only),
            [i.name for i in source.graph.input],
            [core_input],
            check_model=False,
        )
        pre = modelio.open_session(pre_only.read_bytes())
        core_feeds = {b: {core_input: pre.run(None, whole_feeds[b])[0].astype(np.float32)} for b in (1, 256)}
        cores = {
            name: core_of(m, core_input, tmp, name.replace(" ", "_").replace("%", ""), width)
            for name, m in models.items()
        }
        rows = []
        for name in variants:
            whole = modelio.open_session(model_bytes(models[name]), threads=1)
            core = modelio.open_session(model_bytes(cores[name]), threads=1)
            dtype = modelio.signature(core).inputs[0].numpy_dtype  # fp16 cores take float16 at the cut
            feeds = {b: {k: v.astype(dtype) for k, v in core_feeds[b].items()} for b in (1, 256)}
            rows.append(
                (
                    name,
                    len(model_bytes(models[name])),
                    timed(whole, whole_feeds[1], 300),
                    timed(whole, whole_feeds[256], 30),
                    timed(core, feeds[1], 1000),
                    timed(core, feeds[256], 100),
                )
            )
    base = rows[0]
    print(
        f"{'variant':24s} {'size':>9s}  {'whole b1':>9s} {'whole b256':>10s}  {'core b1':>8s} {'core b256':>9s}"
        "   (speed-up vs fp32; fp32 times in us)"
    )
    for name, size, w1, w256, c1, c256 in rows:
        if name == "fp32":
            print(
                f"{name:24s} {size:9,d}  {w1 * 1e6:7.0f}us {w256 * 1e6:8.0f}us  {c1 * 1e6:6.1f}us {c256 * 1e6:7.0f}us"
            )
        else:
            print(
                f"{name:24s} {size:9,d}  {base[2] / w1:8.2f}x {base[3] / w256:9.2f}x  "
                f"{base[4] / c1:7.2f}x {base[5] / c256:8.2f}x"
            )
    print("targets (core): dynamic int8 >= 2.5x at b256; structured 50% + int8 >= 3x at b1")
    against_onnxruntime(source, models, whole_feeds, calibration)


def ort_variants(source: onnx.ModelProto, calibration: dict, tmp: Path) -> dict[str, onnx.ModelProto | str]:
    """onnxruntime's own quantisers over their options: 8 dynamic, 16 static (minmax calibration
    on the same rows edgefair calibrates on); a variant that fails says why."""
    import logging

    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    logging.getLogger().setLevel(logging.ERROR)  # the quantiser's advice on every call drowns the table
    src = tmp / "fp32.onnx"
    fixed = onnx.ModelProto()
    fixed.CopyFrom(source)
    dedupe_opsets(fixed)  # skl2onnx's duplicate opset imports stop onnxruntime's quantiser, as a user would find
    onnx.save(fixed, src)
    sig = modelio.signature(modelio.open_session(model_bytes(source)))
    rows = len(next(iter(calibration.values())))
    batches = [
        modelio.build_feeds(sig, {k: v[i : i + 100] for k, v in calibration.items()}) for i in range(0, rows, 100)
    ]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.left = iter(batches)

        def get_next(self):
            return next(self.left, None)

    out: dict[str, onnx.ModelProto | str] = {}
    flags = [(pc, rr) for pc in (False, True) for rr in (False, True)]
    for wt in (QuantType.QInt8, QuantType.QUInt8):
        for pc, rr in flags:
            name = f"ort dynamic {wt.name} per_channel={pc} reduce_range={rr}"
            dst = tmp / f"d{len(out)}.onnx"
            try:
                quantize_dynamic(src, dst, weight_type=wt, per_channel=pc, reduce_range=rr)
                out[name] = onnx.load(dst)
            except Exception as exc:  # a variant onnxruntime cannot build is reported, not hidden
                out[name] = f"failed: {str(exc).splitlines()[0][:100]}"
    for fmt in (QuantFormat.QDQ, QuantFormat.QOperator):
        for at in (QuantType.QUInt8, QuantType.QInt8):
            for pc, rr in flags:
                name = f"ort static {fmt.name} act={at.name} per_channel={pc} reduce_range={rr}"
                dst = tmp / f"s{len(out)}.onnx"
                try:
                    quantize_static(
                        src, dst, Reader(), quant_format=fmt, activation_type=at, weight_type=QuantType.QInt8,
                        per_channel=pc, reduce_range=rr,
                    )  # fmt: skip
                    out[name] = onnx.load(dst)
                except Exception as exc:
                    out[name] = f"failed: {str(exc).splitlines()[0][:100]}"
    return out


AGREEMENT = 0.98  # decisions kept on 256 rows, for a variant to count as a candidate


def against_onnxruntime(source, ours: dict, feeds: dict, calibration: dict) -> None:
    """Speed-up over fp32 of each onnxruntime variant and of edgefair's int8 (whole model), and
    edgefair's best as a share of onnxruntime's best, per batch; decisions agreement too."""
    with tempfile.TemporaryDirectory() as d:
        variants = ort_variants(source, calibration, Path(d))
    base = modelio.open_session(model_bytes(source), threads=1)
    reference = {b: base.run(None, feeds[b])[0] for b in (1, 256)}
    fp32 = {1: timed(base, feeds[1], 300), 256: timed(base, feeds[256], 30)}
    table = {}
    int8 = {f"edgefair {k}": v for k, v in ours.items() if k in ("dynamic int8", "static int8")}
    for name, model in {**int8, **variants}.items():
        if isinstance(model, str):
            print(f"{name:66s} {model}")
            continue
        session = modelio.open_session(model_bytes(model), threads=1)
        out = session.run(None, feeds[256])[0]
        agree = float(np.mean((out[:, -1] >= 0.5) == (reference[256][:, -1] >= 0.5))) if out.ndim == 2 else float("nan")
        table[name] = (fp32[1] / timed(session, feeds[1], 300), fp32[256] / timed(session, feeds[256], 30), agree)
    print(f"{'variant (whole model, 1 thread)':66s} {'b1':>7s} {'b256':>7s}  decisions agree (256 rows)")
    for name, (s1, s256, agree) in table.items():
        print(f"{name:66s} {s1:6.2f}x {s256:6.2f}x  {agree:.4f}")
    # a variant counts only if it keeps decisions (>= 98% agreement with fp32 on 256 rows)
    theirs = {k: v for k, v in table.items() if k.startswith("ort ") and v[2] >= AGREEMENT}
    mine = {k: v for k, v in table.items() if k.startswith("edgefair ") and v[2] >= AGREEMENT}
    if not theirs or not mine:
        print(f"no comparison: a side has no variant keeping {AGREEMENT:.0%} of decisions")
        return
    for i, batch in ((0, 1), (1, 256)):
        best_theirs = max(theirs.items(), key=lambda kv: kv[1][i])
        best_mine = max(mine.items(), key=lambda kv: kv[1][i])
        print(
            f"batch {batch}: edgefair's best {best_mine[0]!r} {best_mine[1][i]:.2f}x vs onnxruntime's best "
            f"{best_theirs[0]!r} {best_theirs[1][i]:.2f}x -> {best_mine[1][i] / best_theirs[1][i]:.1%} "
            f"(target >= 95%; variants keeping >= {AGREEMENT:.0%} of decisions)"
        )


if __name__ == "__main__":
    main()
