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

from edgefair import modelio
from edgefair.convert.common import check_domains, model_bytes
from edgefair.errors import InputError, ModelError


@dataclass(frozen=True)
class CheckReport:
    rows_compared: int
    max_abs_difference: dict[str, float]
    decision_agreement: float | None
    size_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows_compared": self.rows_compared,
            "max_abs_difference": self.max_abs_difference,
            "decision_agreement": self.decision_agreement,
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
    sample: Mapping[str, np.ndarray] | None = None,
    threshold: float = 0.5,
    feature_columns: Sequence[str] | None = None,
) -> CheckReport:
    """Raise ModelError unless ``candidate`` is a valid, loadable stand-in for ``source``."""
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
    agreement = None
    rows = 0
    if sample:
        feeds = modelio.build_feeds(src_sig, sample, feature_columns=feature_columns, source="sample data")
        rows = len(next(iter(feeds.values())))
        names = [o.name for o in src_sig.outputs]
        ref_out = dict(zip(names, src_sess.run(names, feeds), strict=True))
        new_out = dict(zip(names, cand_sess.run(names, feeds), strict=True))
        for name in names:
            a, b = np.asarray(ref_out[name]), np.asarray(new_out[name])
            if a.dtype.kind == "f":
                diffs[name] = float(np.max(np.abs(a.astype(np.float64) - b))) if a.size else 0.0
        try:
            choice = modelio.choose_output(src_sig)
            _, d_ref = modelio.decisions(ref_out[choice.name], choice, threshold)
            _, d_new = modelio.decisions(new_out[choice.name], choice, threshold)
            agreement = float(np.mean(d_ref == d_new)) if rows else None
        except ModelError:
            agreement = None  # not a binary classifier: agreement does not apply
    return CheckReport(rows, diffs, agreement, len(model_bytes(candidate)))


def calibration_sample(
    columns: Mapping[str, np.ndarray], rows: int, balance_by: str | None, source: str, seed: int = 0
) -> dict[str, np.ndarray]:
    """Calibration rows: a random sample, or equal rows per group of ``balance_by``."""
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
    return {k: np.asarray(v)[idx] for k, v in columns.items()}
