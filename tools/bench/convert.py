"""Latency of the packaged adult_mlp.onnx's variants as ratios to fp32, one thread; and
edgefair's int8 against the best of onnxruntime's own quantisers (24 variants).

    python tools/bench/convert.py          (about 1 minute)
Whole model and its MLP core alone (the subgraph after the preprocessing), at batch 1
and 256. Targets on the core: int8 >= 2.5x fp32 at batch 256; structured 50% + int8
>= 3x at batch 1. Ratios are speed-ups (fp32 time / variant time). Every variant is timed in
one interleaved run per batch (each round runs every model in a shuffled order), never one
after another: on a shared machine a sequential run credits whichever variant ran while the
neighbour was idle (the previous version of this benchmark showed two identical graphs, edgefair's
and onnxruntime's dynamic int8, 1.09x and 2.2x apart at batch 1).
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
from edgefair.tune.measure import time_models  # noqa: E402

MODEL = ROOT / "edgefair" / "demo" / "models" / "adult_mlp.onnx"


def speedups(source: bytes, models: list[bytes], feeds: dict, batch: int, rounds: int = 21) -> list[float]:
    """fp32 time over each model's time, all timed in one interleaved run (tune's method: every
    round runs each model, the source included, in a shuffled order; median of per-round ratios),
    so a noisy neighbour slows every variant alike instead of whichever ran at the time."""
    return [1.0 / lat.ratio for lat in time_models(source, models, feeds, batch, rounds=rounds)]


def _pair(source: bytes, model: bytes, source_feeds: dict, feeds: dict, rounds: int = 21) -> float:
    """Speed-up of ``model`` (its own feeds) over ``source`` (its feeds), interleaved rounds."""
    a, b = modelio.open_session(source, threads=1), modelio.open_session(model, threads=1)
    for s, f in ((a, source_feeds), (b, feeds)):
        s.run(None, f)
    ratios = []
    for _ in range(rounds):
        t = []
        for s, f in ((a, source_feeds), (b, feeds)):
            t0 = time.perf_counter()
            for _ in range(200):
                s.run(None, f)
            t.append(time.perf_counter() - t0)
        ratios.append(t[0] / t[1])
    return float(np.median(ratios))


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
        names = [n for n in variants if n != "fp32"]
        whole = {
            b: [1.0, *speedups(model_bytes(source), [model_bytes(models[n]) for n in names], whole_feeds[b], b)]
            for b in (1, 256)
        }
        core = {}
        for b in (1, 256):
            fp32_core = model_bytes(cores["fp32"])
            # fp16 cores take float16 at the cut: each core is timed against fp32 with its own feeds
            core[b] = [1.0]
            for n in names:
                dtype = modelio.signature(modelio.open_session(model_bytes(cores[n]))).inputs[0].numpy_dtype
                feeds = {k: v.astype(dtype) for k, v in core_feeds[b].items()}
                if dtype == np.float32:
                    core[b].append(speedups(fp32_core, [model_bytes(cores[n])], feeds, b)[0])
                else:  # the source cannot take these feeds: time both with their own inputs
                    core[b].append(_pair(fp32_core, model_bytes(cores[n]), core_feeds[b], feeds))
        fp32_us = {
            b: time_models(model_bytes(source), [model_bytes(source)], whole_feeds[b], b, rounds=5)[0].source_seconds
            * 1e6
            for b in (1, 256)
        }
    print(
        f"{'variant':24s} {'size':>9s}  {'whole b1':>9s} {'whole b256':>10s}  {'core b1':>8s} {'core b256':>9s}"
        f"   (speed-up vs fp32, interleaved; fp32 whole {fp32_us[1]:.0f} / {fp32_us[256]:.0f} us)"
    )
    for i, name in enumerate(["fp32", *names]):
        print(
            f"{name:24s} {len(model_bytes(models[name])):9,d}  {whole[1][i]:8.2f}x {whole[256][i]:9.2f}x  "
            f"{core[1][i]:7.2f}x {core[256][i]:8.2f}x"
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
    reference = base.run(None, feeds[256])[0]
    int8 = {f"edgefair {k}": v for k, v in ours.items() if k in ("dynamic int8", "static int8")}
    built = {}
    for name, model in {**int8, **variants}.items():
        if isinstance(model, str):
            print(f"{name:66s} {model}")
            continue
        built[name] = model_bytes(model)
    agree = {}
    for name, blob in built.items():
        out = modelio.open_session(blob, threads=1).run(None, feeds[256])[0]
        agree[name] = (
            float(np.mean((out[:, -1] >= 0.5) == (reference[:, -1] >= 0.5))) if out.ndim == 2 else float("nan")
        )
    # every variant, edgefair's and onnxruntime's, timed in one interleaved run per batch
    ups = {b: speedups(model_bytes(source), list(built.values()), feeds[b], b) for b in (1, 256)}
    table = {name: (ups[1][i], ups[256][i], agree[name]) for i, name in enumerate(built)}
    print(f"{'variant (whole model, 1 thread)':66s} {'b1':>7s} {'b256':>7s}  decisions agree (256 rows)")
    for name, (s1, s256, agree) in table.items():
        print(f"{name:66s} {s1:6.2f}x {s256:6.2f}x  {agree:.4f}")
    # a variant counts only if it keeps decisions (>= 98% agreement with fp32 on 256 rows)
    theirs = {k: v for k, v in table.items() if k.startswith("ort ") and v[2] >= AGREEMENT}
    mine = {k: v for k, v in table.items() if k.startswith("edgefair ") and v[2] >= AGREEMENT}
    if not theirs or not mine:
        print(f"no comparison: a side has no variant keeping {AGREEMENT:.0%} of decisions")
        return
    # Picking the best of 24 noisy timings favours whichever was lucky (the winner's curse): the
    # three best of each side are re-timed together, with the source, over three times the rounds,
    # and the comparison uses only that second run.
    for i, batch in ((0, 1), (1, 256)):
        finalists = [k for k, _ in sorted(theirs.items(), key=lambda kv: -kv[1][i])[:3]]
        finalists += [k for k, _ in sorted(mine.items(), key=lambda kv: -kv[1][i])[:3]]
        again = dict(
            zip(
                finalists,
                speedups(model_bytes(source), [built[k] for k in finalists], feeds[batch], batch, rounds=63),
                strict=True,
            )
        )
        best_theirs = max((k for k in finalists if k.startswith("ort ")), key=again.__getitem__)
        best_mine = max((k for k in finalists if k.startswith("edgefair ")), key=again.__getitem__)
        print(
            f"batch {batch} (finalists re-timed, 63 rounds): edgefair's best {best_mine!r} {again[best_mine]:.2f}x vs "
            f"onnxruntime's best {best_theirs!r} {again[best_theirs]:.2f}x -> "
            f"{again[best_mine] / again[best_theirs]:.1%} "
            f"(target >= 95%; variants keeping >= {AGREEMENT:.0%} of decisions)"
        )


if __name__ == "__main__":
    main()
