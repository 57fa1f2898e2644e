"""``export`` and ``convert``: parse, one library call, write the model, format."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from edgefair.cli.common import AsJsonOpt, FeaturesOpt, emit_json, split_columns
from edgefair.convert.quantize import CalibrationMethod, QuantMode
from edgefair.convert.validation import DEFAULT_PARITY_TOLERANCE


def export(
    src: Annotated[Path, typer.Argument(help="Model: .onnx, .pt2, TorchScript .pt, or .pkl/.joblib.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the ONNX model.")],
    sample_data: Annotated[str | None, typer.Option(help="CSV (or 'adult') for input types/shapes and parity.")] = None,
    trust_pickle: Annotated[bool, typer.Option(help="Allow loading a pickle (runs its code).")] = False,
    features: FeaturesOpt = None,
    parity_tolerance: Annotated[
        float, typer.Option(help="Largest score difference from the source model accepted.")
    ] = DEFAULT_PARITY_TOLERANCE,
    threshold: Annotated[float, typer.Option(help="Decision threshold for counting flips.")] = 0.5,
    double: Annotated[bool, typer.Option(help="scikit-learn: numeric inputs as double (exact tree splits).")] = False,
    as_json: AsJsonOpt = False,
) -> None:
    """Export a PyTorch, scikit-learn, LightGBM or XGBoost model (or check an ONNX file) to ONNX,
    parity-checked against the source: exit 1, nothing written, when they disagree."""
    from edgefair.convert import ExportOptions, export_model, save_model
    from edgefair.files import refuse_missing_folders, refuse_overwriting_inputs

    refuse_overwriting_inputs([output], [src] + ([Path(sample_data)] if sample_data else []))
    refuse_missing_folders([output])
    options = ExportOptions(
        features=split_columns(features) or None,
        parity_tolerance=parity_tolerance,
        threshold=threshold,
        double=double,
        trust_pickle=trust_pickle,
    )
    result = export_model(src, sample_data=sample_data, options=options)
    if trust_pickle and src.suffix.lower() in (".pkl", ".pickle", ".joblib"):
        typer.echo(f"note: {src} was unpickled, which ran code from that file (--trust-pickle)")
    if result.passed:
        save_model(result.model, output)
    if as_json:
        emit_json({"output": str(output) if result.passed else None, **result.to_dict()})
    else:
        if result.passed:
            typer.echo(f"wrote {output} ({result.size_bytes:,} bytes); checked: {', '.join(result.checked)}")
        if result.parity is not None:
            typer.echo(("  " if result.passed else "") + result.parity.summary())
        for note in result.notes:
            typer.echo(f"  note: {note}")
        if not result.passed:
            typer.echo(f"nothing written to {output}")
    if not result.passed:
        raise typer.Exit(1)


def convert(
    model: Annotated[Path, typer.Argument(help="Source ONNX model.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the result.")],
    quantize: Annotated[QuantMode | None, typer.Option(help="Quantisation mode.")] = None,
    calibration_data: Annotated[str | None, typer.Option(help="CSV (or 'adult:train') for static.")] = None,
    calibration_method: Annotated[
        CalibrationMethod, typer.Option(help="Calibration method.")
    ] = CalibrationMethod.MINMAX,
    calibration_rows: Annotated[int, typer.Option(help="Rows used to calibrate.")] = 2000,
    per_channel: Annotated[bool, typer.Option(help="Per-channel weight scales.")] = False,
    balance_by: Annotated[str | None, typer.Option(help="Calibrate on equal rows per group of COL.")] = None,
    prune: Annotated[float | None, typer.Option(help="Unstructured magnitude sparsity, e.g. 0.5.")] = None,
    prune_structured: Annotated[float | None, typer.Option(help="Fraction of hidden units to remove.")] = None,
    sample_data: Annotated[str | None, typer.Option(help="CSV (or 'adult') to compare outputs on.")] = None,
    threshold: Annotated[float, typer.Option(help="Decision threshold for agreement.")] = 0.5,
    features: FeaturesOpt = None,
    allow_larger: Annotated[bool, typer.Option(help="Keep a result larger than its source.")] = False,
    as_json: AsJsonOpt = False,
) -> None:
    """Quantise and/or prune an ONNX model; check it; write it atomically."""
    from edgefair.convert import ConvertOptions, QuantizeOptions, convert_file, save_model
    from edgefair.files import refuse_missing_folders, refuse_overwriting_inputs

    refuse_overwriting_inputs([output], [model] + [Path(d) for d in (calibration_data, sample_data) if d])
    refuse_missing_folders([output])
    options = ConvertOptions(
        quantize=None
        if quantize is None
        else QuantizeOptions(
            mode=quantize,
            per_channel=per_channel,
            calibration_method=calibration_method,
            calibration_rows=calibration_rows,
        ),
        prune=prune,
        prune_structured=prune_structured,
        threshold=threshold,
        feature_columns=tuple(split_columns(features)) or None,
        allow_larger=allow_larger,
    )
    with typer.progressbar(
        length=calibration_rows,
        label="calibrating",
        file=sys.stderr,
        hidden=quantize is not QuantMode.STATIC_INT8 or not sys.stderr.isatty(),
    ) as bar:
        last = [0]

        def progress(done: int, total: int) -> None:
            bar.update(done - last[0])
            last[0] = done

        result = convert_file(
            model,
            options,
            calibration_data=calibration_data,
            balance_by=balance_by,
            sample_data=sample_data,
            progress=progress,
        )
    save_model(result.model, output)
    doc = {"output": str(output), **result.to_dict()}
    if as_json:
        emit_json(doc)
        return
    typer.echo(format_conversion(doc))


def format_conversion(doc: dict[str, Any]) -> str:
    before, after = doc["size_before"], doc["size_after"]
    lines = [f"wrote {doc['output']}: {before:,} -> {after:,} bytes ({after / before:.0%})"]
    for step in doc["steps"]:
        if "nodes_quantised" in step:
            ops = ", ".join(f"{k} x{v}" for k, v in step["nodes_quantised"].items())
            lines.append(f"  quantised ({step['mode']}): {ops}")
        if step.get("mode") == "fp16":
            lines += _fp16_lines(step)
        for layer, sparsity in step.get("sparsity_by_layer", {}).items():
            lines.append(f"  pruned {layer}: {sparsity:.1%} zeros")
        for layer, units in step.get("units_by_layer", {}).items():
            lines.append(f"  pruned {layer}: {units['hidden_before']} -> {units['hidden_after']} units")
        if "compressed_size_after" in step:
            lines.append(f"  gzip size {step['compressed_size_before']:,} -> {step['compressed_size_after']:,}")
        noise = step.get("quantiser_warnings") or {}
        if noise.get("count"):
            lines.append(f"  onnxruntime's quantiser logged {noise['count']} warnings (first: {noise['first']})")
    check = doc["check"]
    if check and check["rows_compared"]:
        diffs = ", ".join(f"{k} {v:.4g}" for k, v in check["max_abs_difference"].items())
        agree = check["decision_agreement"]
        lines.append(
            f"  vs source on {check['rows_compared']} rows: max abs diff {diffs}; "
            + (
                f"decisions agree {agree:.2%}"
                if agree is not None
                else f"decisions not compared ({check.get('decisions_not_compared') or 'not a binary classifier'})"
            )
        )
    elif check:
        lines.append("  outputs not compared with the source (give --sample-data to compare them)")
    lines += [f"  note: {note}" for note in doc.get("notes", [])]
    return "\n".join(lines)


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} ({n:,} value{'' if n == 1 else 's'})" for name, n in sorted(counts.items()))


def _fp16_lines(step: dict[str, Any]) -> list[str]:
    """What fp16 converted, what it kept float32 and any value it changed: never silent."""
    lines = [f"  fp16: {step['initializers_converted']} initializers; {step['note']}"]
    kept = step.get("initializers_kept_float32") or []
    if kept:
        more = f" and {len(kept) - 6} more" if len(kept) > 6 else ""
        lines.append(f"  fp16: kept float32 with the preprocessing: {', '.join(kept[:6])}{more}")
    if step.get("kept_float32_out_of_fp16_range"):
        lines.append(
            "  fp16: kept float32 (beyond fp16's range, |x| > 65504), with the nodes that read them: "
            + _counts(step["kept_float32_out_of_fp16_range"])
        )
    if step.get("values_clamped_to_fp16_range"):
        lines.append(
            f"  fp16: WARNING {step['values_clamped_to_fp16_range']:,} values clamped to +-65504 in "
            + (_counts(step.get("clamped_tensors") or {}) or "its tensors")
        )
    return lines
