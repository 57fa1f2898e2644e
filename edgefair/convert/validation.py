"""Check a converted model before it is written.

Every output must pass ``onnx.checker`` (full check), load in onnxruntime, keep its
source's input and output names, types and ranks, and agree with its source on sample
rows (max abs difference of every float output, decision agreement rate).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from edgefair import data, modelio
from edgefair.convert.common import check_domains, model_bytes
from edgefair.errors import InputError, ModelError
from edgefair.modelio.feeds import Features


@dataclass(frozen=True)
class Rows:
    """Named columns and where they came from, so a bad value can be named by file and line."""

    columns: Mapping[str, np.ndarray]
    source: str
    lines: np.ndarray | None = None  # each row's line in ``source``; None: line 2 onwards

    @classmethod
    def of(cls, rows: Mapping[str, np.ndarray] | Rows, source: str) -> Rows:
        return rows if isinstance(rows, Rows) else cls(rows, source)


def refuse_missing(outputs: Sequence[np.ndarray], feeds: Mapping[str, np.ndarray], rows: Rows) -> None:
    """InputError (verify's check, ``data.refuse_missing_scored_nan``) when a missing value
    in ``rows`` reaches the source model as NaN and ``outputs``, its scores, hold NaN there."""
    lines = 2 if rows.lines is None else rows.lines
    data.refuse_missing_scored_nan(outputs, feeds, rows.columns, rows.source, lines, "the source model")


@dataclass(frozen=True)
class CheckReport:
    rows_compared: int
    max_abs_difference: dict[str, float]
    decision_agreement: float | None
    size_bytes: int
    decisions_not_compared: str | None = None  # why decision_agreement is None, when rows were compared

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows_compared": self.rows_compared,
            "max_abs_difference": self.max_abs_difference,
            "decision_agreement": self.decision_agreement,
            "decisions_not_compared": self.decisions_not_compared,
            "size_bytes": self.size_bytes,
        }


def session(model: onnx.ModelProto | bytes, threads: int = 1) -> Any:
    return modelio.open_session(model if isinstance(model, bytes) else model_bytes(model), threads)


def validate(model: onnx.ModelProto, what: str = "output") -> Any:
    """ModelError unless ``model`` passes onnx.checker (full check) and the model-safety
    check, and loads in onnxruntime; returns the onnxruntime session."""
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:
        raise ModelError(f"onnx.checker rejects the {what}: {str(exc).splitlines()[0][:300]}") from None
    check_domains(model, what)
    return session(model)


def check(
    candidate: onnx.ModelProto,
    source: onnx.ModelProto,
    sample: Mapping[str, np.ndarray] | Rows | None = None,
    threshold: float = 0.5,
    feature_columns: Features = None,
) -> CheckReport:
    """Raise ModelError unless ``candidate`` is a valid, loadable stand-in for ``source``;
    InputError when a missing value in ``sample`` makes the source score NaN."""
    cand_sess, src_sess = validate(candidate), session(source)
    cand_sig, src_sig = modelio.signature(cand_sess), modelio.signature(src_sess)
    pairs = (("input", src_sig.inputs, cand_sig.inputs), ("output", src_sig.outputs, cand_sig.outputs))
    for kind, old, new in pairs:
        if [(t.name, t.type, len(t.shape)) for t in old] != [(t.name, t.type, len(t.shape)) for t in new]:
            raise ModelError(
                f"output model changed its {kind}s: "
                f"{[(t.name, t.type) for t in old]} became {[(t.name, t.type) for t in new]}"
            )
    diffs: dict[str, float] = {}
    agreement, reason = None, None
    rows = 0
    if sample:
        held = Rows.of(sample, "sample data")
        feeds = modelio.build_feeds(src_sig, held.columns, feature_columns=feature_columns, source=held.source)
        rows = len(next(iter(feeds.values())))
        names = [o.name for o in src_sig.outputs]
        ref_out = dict(zip(names, src_sess.run(names, feeds), strict=True))
        refuse_missing(list(ref_out.values()), feeds, held)
        new_out = dict(zip(names, cand_sess.run(names, feeds), strict=True))
        for name in names:
            a, b = np.asarray(ref_out[name]), np.asarray(new_out[name])
            if a.dtype.kind == "f":
                diffs[name] = float(np.max(np.abs(a.astype(np.float64) - b))) if a.size else 0.0
        agreement, reason = _agreement(src_sig, ref_out, new_out, threshold)
    return CheckReport(rows, diffs, agreement, len(model_bytes(candidate)), reason)


def _agreement(
    sig: modelio.Signature, ref_out: Mapping[str, np.ndarray], new_out: Mapping[str, np.ndarray], threshold: float
) -> tuple[float | None, str | None]:
    """(share of rows whose decision agrees, None) or (None, why decisions were not compared)."""
    try:
        choice = modelio.choose_output(sig)
    except ModelError:
        return None, "not a binary classifier"
    for who, out in (("the source", ref_out), ("the result", new_out)):
        arr = np.asarray(out[choice.name])
        nan = int(np.isnan(arr.reshape(len(arr), -1)).any(axis=1).sum()) if arr.dtype.kind == "f" else 0
        if nan:
            return None, f"{who} scores {nan:,} of {len(arr):,} rows NaN in {choice.name!r}"
    try:
        _, d_ref = modelio.decisions(ref_out[choice.name], choice, threshold)
        _, d_new = modelio.decisions(new_out[choice.name], choice, threshold)
    except ModelError as exc:
        return None, str(exc)
    if not len(d_ref):
        return None, "no rows"
    return float(np.mean(d_ref == d_new)), None


WEAK_CHECK_ROWS = 100  # under this many rows, a comparison or a calibration is said to be weak


def few_rows_note(rows: int, what: str) -> tuple[str, ...]:
    """A note when ``what`` (a comparison, a calibration) rests on fewer than WEAK_CHECK_ROWS rows."""
    if rows >= WEAK_CHECK_ROWS:
        return ()
    shown = f"{rows:,} row" + ("" if rows == 1 else "s")
    return (f"{what} rests on {shown} only: under {WEAK_CHECK_ROWS} rows it is a weak check; give more rows",)


DEFAULT_PARITY_TOLERANCE = 1e-4
"""Largest score difference accepted between a source model and its ONNX export. float32
arithmetic moves an MLP's or a tree ensemble's scores by ~1e-7 (measured: RandomForest 1.8e-7,
LightGBM 8e-8, XGBoost 1.2e-7, torch MLPs 6e-8); a row sent down another tree branch moves a
forest's score by at least 1/trees (0.02 for 50 trees), a wrong feature order far more. Flips
are counted but not gated apart: with every score within the tolerance, a flip can only be a
row the source scores within the tolerance of the threshold (a forest's exact 0.5 ties)."""


@dataclass(frozen=True)
class ParityReport:
    """The source model and its ONNX export side by side on the same rows."""

    rows: int
    output: str  # the ONNX output compared (probabilities, variable, ...)
    max_abs_difference: float
    decision_rule: str  # how decisions were read from both: "score >= 0.5", "argmax" or "none"
    flips: int | None  # rows whose decision differs; None where the output holds no decisions
    tolerance: float
    on: str = "the sample data"
    hint: str | None = None  # what to try when it fails

    @property
    def passed(self) -> bool:
        return bool(self.max_abs_difference <= self.tolerance)  # NaN fails

    def to_dict(self) -> dict[str, Any]:
        worst = self.max_abs_difference
        return {
            "rows": self.rows,
            "output": self.output,
            "max_abs_difference": worst if worst == worst else None,
            "decision_rule": self.decision_rule,
            "flips": self.flips,
            "tolerance": self.tolerance,
            "on": self.on,
            "verdict": "pass" if self.passed else "fail",
        }

    def summary(self) -> str:
        flips = (
            "decisions not compared (no decisions in this output)"
            if self.flips is None
            else f"{self.flips} of {self.rows} decisions flip ({self.decision_rule})"
        )
        line = (
            f"parity with the source on {self.rows:,} row{'' if self.rows == 1 else 's'} of {self.on}: "
            f"largest {self.output} difference "
            f"{self.max_abs_difference:.3g} (tolerance {self.tolerance:g}), {flips}"
        )
        if self.passed:
            if self.flips:
                line += f"; each flip is a row scored within {self.tolerance:g} of the threshold"
            return line
        advice = f"{self.hint}; or " if self.hint else ""
        return (
            f"FAIL {line}: the ONNX model does not compute what its source computes; "
            f"{advice}accept it with --parity-tolerance"
        )


def _decisions(scores: np.ndarray, threshold: float) -> tuple[str, np.ndarray | None]:
    """Decisions from a score array, the same rule for both models."""
    if scores.ndim == 2 and scores.shape[1] > 2:
        return "argmax", np.argmax(scores, axis=1)
    flat = scores[:, 1] if scores.ndim == 2 and scores.shape[1] == 2 else scores.reshape(len(scores), -1)[:, 0]
    probability = (flat >= 0) & (flat <= 1) | np.isnan(flat)  # a NaN score (the same in both, or a failure) is no rule
    if scores.ndim <= 2 and (scores.ndim == 1 or scores.shape[1] <= 2) and np.all(probability):
        return f"score >= {threshold:g}", flat >= threshold
    return "none", None


def parity(
    expected: np.ndarray,
    got: np.ndarray,
    tolerance: float = DEFAULT_PARITY_TOLERANCE,
    threshold: float = 0.5,
    output: str = "probabilities",
    hint: str | None = None,
    on: str | None = None,
) -> ParityReport:
    """Compare what the source computed (``expected``) with the ONNX output (``got``), row by row."""
    a = np.asarray(expected, np.float64)
    b = np.asarray(got, np.float64)
    if a.size == b.size and a.shape != b.shape:  # [N] against [N, 1]
        b = b.reshape(a.shape)
    if a.shape != b.shape:
        raise ModelError(f"the exported model's {output!r} has shape {list(b.shape)}, its source gives {list(a.shape)}")
    rows = len(a)
    diff = np.abs(a - b)
    diff[np.isnan(a) & np.isnan(b)] = 0.0  # NaN in both (a missing value) agrees; NaN in one fails
    worst = float(np.max(diff)) if a.size else 0.0
    rule, ref = _decisions(a, threshold)
    _, new = _decisions(b, threshold)
    flips = None if ref is None or new is None else int(np.sum(ref != new))
    return ParityReport(
        rows, output, worst, rule if flips is not None else "none", flips, tolerance, on or "the sample data", hint
    )


def calibration_sample(
    columns: Mapping[str, np.ndarray], rows: int, balance_by: str | None, source: str, seed: int = 0
) -> dict[str, np.ndarray]:
    """Calibration rows: a random sample, or equal rows per group of ``balance_by``."""
    idx = calibration_rows(columns, rows, balance_by, source, seed)
    return {k: np.asarray(v)[idx] for k, v in columns.items()}


def calibration_rows(
    columns: Mapping[str, np.ndarray], rows: int, balance_by: str | None, source: str, seed: int = 0
) -> np.ndarray:
    """The row numbers ``calibration_sample`` picks."""
    from edgefair.convert.quantize import balanced_sample

    total = len(next(iter(columns.values()))) if columns else 0
    if total == 0:
        raise InputError(f"{source}: no calibration rows")
    if balance_by is not None:
        if balance_by not in columns:
            raise InputError(f"{source}: no column {balance_by!r} to balance calibration by")
        idx = balanced_sample(columns[balance_by], rows, seed)
    else:
        rng = np.random.default_rng(seed)
        idx = np.sort(rng.choice(total, size=min(rows, total), replace=False))
    return np.asarray(idx)
