"""The convert pipeline: prune, then quantise, then check against the source.

``convert`` works on an in-memory model; ``convert_file`` also loads the model and the
calibration and sample data it names. Neither writes anything: ``save_model`` does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgefair import data, modelio
from edgefair.convert.common import ConversionResult, check_domains, dedupe_opsets, load_model, model_bytes
from edgefair.convert.prune import check_fraction, prune_magnitude, prune_structured
from edgefair.convert.quantize import Progress, QuantizeOptions, QuantMode, quantize
from edgefair.convert.validation import (
    CheckReport,
    Rows,
    calibration_rows,
    check,
    few_rows_note,
    refuse_missing,
    session,
)
from edgefair.errors import InputError, ModelError
from edgefair.modelio.feeds import FeatureMap, Features, parse_features

SAMPLE_ROWS = 5000


@dataclass(frozen=True, kw_only=True)
class ConvertOptions:
    quantize: QuantizeOptions | None = None
    prune: float | None = None  # unstructured magnitude sparsity, in (0, 1)
    prune_structured: float | None = None  # fraction of hidden units removed, in (0, 1)
    threshold: float = 0.5
    feature_columns: Features = None  # columns for [N, k] inputs: "f0:f7", ["a", "b"], "x=f0:f7,t=t0:t3"
    allow_larger: bool = False  # keep a "compressed" model that came out larger than its source

    def __post_init__(self) -> None:
        for name, value in (("prune", self.prune), ("prune_structured", self.prune_structured)):
            if value is not None:
                check_fraction(value, name)
        if not 0.0 <= self.threshold <= 1.0:
            raise InputError(f"threshold must be in [0, 1], got {self.threshold}")
        parse_features(self.feature_columns)  # a malformed list is refused before any work


@dataclass(frozen=True)
class ConvertResult:
    model: onnx.ModelProto
    steps: list[dict[str, Any]] = field(default_factory=list)
    check: CheckReport | None = None
    size_before: int = 0
    notes: tuple[str, ...] = ()  # what the result rests on that is weak (few rows compared or calibrated on)

    def to_dict(self) -> dict[str, Any]:
        return {
            "size_before": self.size_before,
            "size_after": self.check.size_bytes if self.check else None,
            "steps": self.steps,
            "check": self.check.to_dict() if self.check else None,
            "notes": list(self.notes),
        }


def convert(
    model: onnx.ModelProto,
    options: ConvertOptions,
    sample: Mapping[str, np.ndarray] | Rows | None = None,
    calibration: Mapping[str, np.ndarray] | Rows | None = None,
    progress: Progress | None = None,
) -> ConvertResult:
    """Prune, then quantise, then check against the source. Writes nothing. A missing value
    in the calibration or sample rows that makes the source score NaN is an InputError."""
    source = onnx.ModelProto()
    source.CopyFrom(model)
    dedupe_opsets(source)
    check_domains(source, "input model")
    current = source
    steps = []
    for fraction, fn in ((options.prune_structured, prune_structured), (options.prune, prune_magnitude)):
        if fraction:
            result: ConversionResult = fn(current, fraction)
            current = result.model
            steps.append(result.report)
    if options.quantize is not None:
        feeds = None
        if calibration is not None:
            held = Rows.of(calibration, "calibration data")
            feeds = modelio.build_feeds(
                modelio.signature(session(current)),
                held.columns,
                feature_columns=options.feature_columns,
                source=held.source,
            )
            refuse_missing(session(source).run(None, feeds), feeds, held)
        result = quantize(current, options.quantize, feeds, progress)
        current = result.model
        steps.append(result.report)
    if not steps:
        raise ModelError("nothing to do: choose --quantize and/or --prune/--prune-structured")
    report = check(current, source, sample, options.threshold, options.feature_columns)
    before = len(model_bytes(model))  # the model as given (the file's size), before any fixes
    if report.size_bytes > before and not options.allow_larger:
        raise ModelError(
            f"the result is {report.size_bytes:,} bytes, {report.size_bytes / before:.0%} of its source's {before:,}: "
            "nothing was saved, so nothing was written (keep it anyway with --allow-larger)"
        )
    notes = [
        note
        for step in steps
        if "calibration_rows" in step
        for note in few_rows_note(int(step["calibration_rows"]), "static int8's calibration")
    ]
    if report.rows_compared:
        notes += few_rows_note(report.rows_compared, "the comparison with the source")
    return ConvertResult(current, steps, report, before, tuple(notes))


def convert_file(
    model: str | Path,
    options: ConvertOptions,
    *,
    calibration_data: str | Path | data.Dataset | None = None,
    balance_by: str | None = None,
    sample_data: str | Path | data.Dataset | None = None,
    progress: Progress | None = None,
) -> ConvertResult:
    """``convert`` on an ONNX file, calibrating (static int8) and checking on named data.

    Calibration rows are a random sample, or equal rows per group of ``balance_by``;
    outputs are compared with the source on ``sample_data`` (default: the calibration data).
    """
    source = load_model(model)
    inputs = {t.name for t in modelio.signature(session(source)).inputs}
    named = (parse_features(options.feature_columns) or FeatureMap()).columns()
    picks_only = balance_by is not None and balance_by not in inputs and balance_by not in named

    def rows_of(loaded: data.Dataset, idx: np.ndarray | None = None) -> Rows:
        """The rows (all, or those at ``idx``), without a column that only picked them."""
        cols = {k: (v if idx is None else np.asarray(v)[idx]) for k, v in loaded.columns.items()}
        if picks_only:
            cols.pop(str(balance_by), None)
        return Rows(cols, loaded.source, None if idx is None else idx + 2)

    calibration = None
    quantize_options = options.quantize
    if quantize_options is not None and quantize_options.mode is QuantMode.STATIC_INT8:
        if calibration_data is None:
            raise InputError("static int8 needs calibration data (--calibration-data: a CSV, or adult:train)")
        loaded = data.load(calibration_data)
        calibration = rows_of(
            loaded, calibration_rows(loaded.columns, quantize_options.calibration_rows, balance_by, loaded.source)
        )
    checked_on = sample_data if sample_data is not None else calibration_data
    sample = rows_of(data.load(checked_on, SAMPLE_ROWS)) if checked_on is not None else None
    return convert(source, options, sample, calibration, progress)
