"""``edgefair demo``: convert, verify and compare on the bundled data and models."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from edgefair.errors import InputError
from edgefair.files import write_atomic

MODELS = Path(__file__).resolve().parent / "models"  # package data: works from an installed package
Echo = Callable[[str], None]


def reference_model(name: str = "adult_mlp.onnx") -> Path:
    path = MODELS / name
    if not path.exists():
        raise InputError(f"{path}: demo model missing from the installed package; reinstall edgefair")
    return path


def convert_variants(reference: Path, out: Path, echo: Echo) -> list[Path]:
    from edgefair import convert as conv
    from edgefair.convert import QuantizeOptions, QuantMode, load_model, save_model
    from edgefair.data import load_adult

    source = load_model(reference)
    train, test = load_adult("train"), load_adult("test")
    calibration = conv.calibration_sample(train.columns, 2000, "race", "adult:train")
    sample = {k: v[:5000] for k, v in test.columns.items()}
    variants = {
        "dynamic_int8": conv.ConvertOptions(quantize=QuantizeOptions(mode=QuantMode.DYNAMIC_INT8)),
        "static_int8": conv.ConvertOptions(quantize=QuantizeOptions(mode=QuantMode.STATIC_INT8)),
        "fp16": conv.ConvertOptions(quantize=QuantizeOptions(mode=QuantMode.FP16)),
        "pruned50": conv.ConvertOptions(prune=0.5),
        "structured50": conv.ConvertOptions(prune_structured=0.5),
        "structured50_int8": conv.ConvertOptions(
            prune_structured=0.5, quantize=QuantizeOptions(mode=QuantMode.DYNAMIC_INT8)
        ),
    }
    paths = []
    for name, options in variants.items():
        result = conv.convert(source, options, sample, calibration)
        path = save_model(result.model, out / f"adult_mlp.{name}.onnx")
        check = result.check
        assert check is not None
        echo(
            f"  {name:18s} {result.size_before:>8,} -> {check.size_bytes:>8,} bytes, decisions agree "
            f"{check.decision_agreement:.2%} with fp32"
        )
        paths.append(path)
    return paths


def run_demo(out: Path, echo: Echo) -> None:
    from edgefair import report as reports
    from edgefair.report.text import format_compare
    from edgefair.verification.api import compare

    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    # the reference is copied beside its variants, so every path in the reports is short
    reference = write_atomic(out / "adult_mlp.onnx", reference_model().read_bytes())
    echo(f"1. Convert {reference.name} (PyTorch MLP with its preprocessing in the graph)")
    candidates = convert_variants(reference, out, echo)
    echo("\n2. Verify every variant against fp32 on the Adult test split (race, sex), one pass")
    rendered = reports.build(compare(reference, candidates, "adult", sensitive=["race", "sex"]))
    doc = rendered.doc
    echo(format_compare(doc))
    html = out / "compare.html"
    reports.write(rendered, json=out / "compare.json", markdown=out / "compare.md", html=html)
    from edgefair.demo.field import runtime_demo

    runtime_demo(reference, out, echo)
    echo(
        f"\nwrote {html} (open it in a browser), compare.json and compare.md in {out}/ "
        f"in {time.perf_counter() - start:.1f} s"
    )
    echo(YOUR_OWN)


YOUR_OWN = """
Now your own model and data (a CSV with a label column and the sensitive columns):
  edgefair export model.joblib -o model.onnx --trust-pickle --sample-data data.csv   # or .pt2 / .onnx
  edgefair convert model.onnx -o model.int8.onnx --quantize dynamic --sample-data data.csv
  edgefair verify model.onnx model.int8.onnx --data data.csv --label y --sensitive group --html report.html"""
