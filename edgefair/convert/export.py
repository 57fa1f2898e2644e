"""Export a model to ONNX and check that it computes what its source computes.

``export_model`` loads the source (``.onnx`` passes through; ``.pt2``/``.pt`` are torch,
``export_torch``; ``.pkl``/``.joblib`` are scikit-learn, LightGBM or XGBoost pickles,
``export_sklearn``), exports it with types and shapes from the sample data, runs the
checker, the model-safety check and an onnxruntime load, and then the **parity check**:
source and ONNX model side by side on the sample rows (largest score difference, decisions
that flip). The result is recorded in the model's ``metadata_props`` (``edgefair.parity``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgefair import modelio
from edgefair.convert.common import dedupe_opsets, load_model, model_bytes
from edgefair.convert.export_sklearn import (
    export_sklearn,
    is_boost,
    is_tree_model,
    load_pickle,
    sklearn_initial_types,
    sklearn_sample,
    sklearn_scores,
)
from edgefair.convert.export_torch import (
    TorchExport,
    export_torch,
    load_pt2,
    load_torchscript,
    quiet_torch,
    torchscript_names,
)
from edgefair.convert.validation import DEFAULT_PARITY_TOLERANCE, ParityReport, few_rows_note, parity, validate
from edgefair.data import Dataset, load, refuse_missing_scored_nan
from edgefair.errors import InputError, ModelError
from edgefair.modelio.feeds import Features, assign, parse_features
from edgefair.modelio.session import Signature, TensorSpec

SAMPLE_ROWS = 2000
PARITY_KEY = "edgefair.parity"
PICKLES = (".pkl", ".pickle", ".joblib")
TORCH = (".pt2", ".pt", ".pth", ".ts")

__all__ = [
    "ExportOptions",
    "ExportResult",
    "export_file",
    "export_model",
    "export_sklearn",
    "export_torch",
    "quiet_torch",
    "sklearn_initial_types",
    "sklearn_sample",
]


@dataclass(frozen=True, kw_only=True)
class ExportOptions:
    features: Features = None  # columns per input: "f0:f7", ["a", "b"], "tokens=t0:t3,x=f0:f7"
    parity_tolerance: float = DEFAULT_PARITY_TOLERANCE  # largest score difference accepted
    threshold: float = 0.5  # decisions compared at this score (binary), else argmax
    double: bool = False  # scikit-learn: numeric inputs as double (exact tree splits)
    trust_pickle: bool = False  # loading a pickle runs its code

    def __post_init__(self) -> None:
        if not (self.parity_tolerance >= 0.0):  # NaN too
            raise InputError(f"parity tolerance must be >= 0, got {self.parity_tolerance}")
        if not 0.0 <= self.threshold <= 1.0:
            raise InputError(f"threshold must be in [0, 1], got {self.threshold}")


@dataclass(frozen=True)
class ExportResult:
    """An exported model and what was checked: onnx.checker (full), the model-safety
    check, an onnxruntime load and, where there is a source model, parity with it."""

    model: onnx.ModelProto
    source: str
    size_bytes: int
    parity: ParityReport | None = None
    notes: tuple[str, ...] = ()
    checked: tuple[str, ...] = ("onnx.checker full check", "model-safety check", "onnxruntime loads it")

    @property
    def passed(self) -> bool:
        """False only when parity was checked and failed."""
        return self.parity is None or self.parity.passed

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "size_bytes": self.size_bytes,
            "checked": list(self.checked),
            "parity": self.parity.to_dict() if self.parity else None,
            "notes": list(self.notes),
        }


def export_model(
    src: str | Path,
    *,
    sample_data: str | Path | Dataset | None = None,
    trust_pickle: bool = False,
    options: ExportOptions | None = None,
) -> ExportResult:
    """Export ``src`` with types and shapes from ``sample_data``, checked and parity-checked.

    Returns the result whatever parity says (``result.passed``); writes nothing."""
    opts = options or ExportOptions(trust_pickle=trust_pickle)
    if trust_pickle and not opts.trust_pickle:
        opts = ExportOptions(**{**opts.__dict__, "trust_pickle": True})
    parse_features(opts.features)  # a malformed list is refused before anything loads
    sample = load(sample_data, SAMPLE_ROWS).columns if sample_data is not None else None
    return _export(Path(src), sample, opts, "sample data" if sample_data is None else str(sample_data))


def _export(
    path: Path, sample: Mapping[str, np.ndarray] | None, opts: ExportOptions, source: str = "sample data"
) -> ExportResult:
    if not path.exists():
        raise InputError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        model = load_model(path)
        dedupe_opsets(model)
        validate(model, "exported model")
        note = "no parity check: the source is already ONNX (nothing to compare it with)"
        return ExportResult(model, str(path), len(model_bytes(model)), None, (note,))
    if suffix in TORCH:
        model, report, notes = _torch_export(path, sample, opts, source)
    elif suffix in PICKLES:
        model, report, notes = _pickle_export(path, sample, opts, source)
    else:
        raise InputError(f"{path}: unknown model type {suffix!r}; expected .onnx, .pt2, .pt, .pkl or .joblib")
    record_parity(model, report)
    checked = (*ExportResult.checked, "parity with the source") if report.passed else ExportResult.checked
    notes = (*notes, *few_rows_note(report.rows, "the parity check"))
    return ExportResult(model, str(path), len(model_bytes(model)), report, notes, checked)


def record_parity(model: onnx.ModelProto, report: ParityReport) -> None:
    """The parity result in the model's metadata_props (replacing an earlier one)."""
    kept = [p for p in model.metadata_props if p.key != PARITY_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    entry = model.metadata_props.add()
    entry.key, entry.value = PARITY_KEY, json.dumps(report.to_dict(), sort_keys=True, allow_nan=False)


def _onnx_scores(
    model: onnx.ModelProto, feeds: Mapping[str, np.ndarray], output: str | None = None
) -> tuple[str, np.ndarray]:
    sess = validate(model, "exported model")
    sig = modelio.signature(sess)
    if output is None:
        floats = [o.name for o in sig.outputs if o.type in ("tensor(float)", "tensor(double)", "tensor(float16)")]
        if not floats:
            raise ModelError(f"the exported model has no float output to compare ({[o.name for o in sig.outputs]})")
        output = "probabilities" if "probabilities" in floats else floats[0]
    try:
        import onnxruntime as ort

        quiet = ort.RunOptions()
        quiet.log_severity_level = 4  # the error is raised, and said once, below
        value = sess.run([output], dict(feeds), quiet)[0]
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelError(f"onnxruntime cannot run the exported model on the sample rows: {first[:300]}") from None
    return output, np.asarray(value, np.float64)


def _pickle_export(
    path: Path, sample: Mapping[str, np.ndarray] | None, opts: ExportOptions, source: str
) -> tuple[onnx.ModelProto, ParityReport, tuple[str, ...]]:
    if not opts.trust_pickle:
        raise InputError(f"{path}: loading a pickle runs arbitrary code; pass --trust-pickle if you trust this file")
    if sample is None:
        raise InputError(f"{path}: a scikit-learn model needs --sample-data for its input types")
    estimator = load_pickle(path)
    typed = sklearn_sample(estimator, sample, path, opts.features)
    model = export_sklearn(estimator, typed, double=opts.double)
    sig = modelio.signature(validate(model, "exported model"))
    if isinstance(typed, Mapping):
        feeds = modelio.build_feeds(sig, typed, source="sample data")
    else:
        feeds = {sig.inputs[0].name: np.asarray(typed, modelio.ORT_TYPES[sig.inputs[0].type])}
    output = "probabilities" if any(o.name == "probabilities" for o in sig.outputs) else sig.outputs[0].name
    _, got = _onnx_scores(model, feeds, output)
    expected = sklearn_scores(estimator, typed)
    refuse_missing_scored_nan([expected], feeds, sample, source, 2, "the source model")  # as convert does
    hint = None
    if is_tree_model(estimator) and not opts.double and not is_boost(estimator):
        hint = (
            "tree splits meet float32 inputs in ONNX: re-export with --double (numeric inputs as double, "
            "cast to float32 just before the trees, as scikit-learn does)"
        )
    elif is_boost(estimator):
        hint = "LightGBM splits in double, onnxmltools' trees in float32: rows near a split can go the other way"
    report = parity(expected, got, opts.parity_tolerance, opts.threshold, output, hint)
    return model, report, ()


def _torch_export(
    path: Path, sample: Mapping[str, np.ndarray] | None, opts: ExportOptions, source: str
) -> tuple[onnx.ModelProto, ParityReport, tuple[str, ...]]:
    if path.suffix.lower() == ".pt2":
        exported = load_pt2(path)
    else:
        if sample is None:
            raise InputError(f"{path}: a TorchScript model needs --sample-data to trace shapes")
        exported = load_torchscript(path, _torchscript_signature(path, sample, opts.features))
    if sample is None:  # the program's own example inputs, repeated to another batch size than theirs
        examples = {s.name: np.asarray(t) for s, t in zip(exported.signature.inputs, _examples(path), strict=True)}
        batch = len(next(iter(examples.values())))
        feeds = {k: v[np.arange(2 * batch + 1) % batch] for k, v in examples.items()}
        where = f"its {batch} example inputs, repeated"
    else:
        feeds = modelio.build_feeds(exported.signature, sample, feature_columns=opts.features, source="sample data")
        where = None
    output, got = _batch_checked(exported, feeds, path)
    expected = exported.run_source(feeds)
    if sample is not None:  # a missing value the source scores NaN: refused, as convert does
        refuse_missing_scored_nan([expected], feeds, sample, source, 2, "the source model")
    report = parity(expected, got, opts.parity_tolerance, opts.threshold, output, None, where)
    return exported.model, report, exported.notes


def _batch_checked(exported: TorchExport, feeds: Mapping[str, np.ndarray], path: Path) -> tuple[str, np.ndarray]:
    try:
        return _onnx_scores(exported.model, feeds)
    except ModelError as exc:
        if exported.fixed_batch is None:
            raise
        names = ", ".join(f"'{s.name}': {{0: batch}}" for s in exported.signature.inputs)
        raise ModelError(
            f"{exc}; {path.name} was exported with a fixed batch of {exported.fixed_batch} and its graph "
            f"depends on it: re-export with torch.export.export(model, args, dynamic_shapes={{{names}}}), "
            "batch = torch.export.Dim('batch')"
        ) from None


def _examples(path: Path) -> list[Any]:
    import torch

    with quiet_torch():
        program = torch.export.load(str(path))
    return [t.detach().numpy() for t in program.example_inputs[0]]


def _torchscript_signature(path: Path, sample: Mapping[str, np.ndarray], features: Features) -> Signature:
    """TorchScript stores no shapes: each input takes its --features columns (float32), a single
    input every sample column."""
    names = torchscript_names(path)
    loose = Signature(tuple(TensorSpec(n, "tensor(float)", ("batch", None)) for n in names), ())
    assigned = assign(loose, features)
    specs = []
    for name in names:
        if name in assigned:
            k = len(assigned[name])
        elif len(names) == 1:
            k = len(sample)
        else:
            raise InputError(f"{path}: name the columns of input {name!r} with --features {name}=FIRST:LAST")
        specs.append(TensorSpec(name, "tensor(float)", ("batch", k)))
    return Signature(tuple(specs), ())


def export_file(
    src: str | Path, sample: np.ndarray | Mapping[str, np.ndarray] | None = None, trust_pickle: bool = False
) -> onnx.ModelProto:
    """``export_model`` from a sample in memory (a matrix: columns f0, f1, ...; or named columns)."""
    columns: Mapping[str, np.ndarray] | None = sample if sample is None or isinstance(sample, Mapping) else None
    if columns is None and sample is not None:
        matrix = np.asarray(sample)
        columns = {f"f{i}": matrix[:, i] for i in range(matrix.shape[1])}
    return _export(Path(src), columns, ExportOptions(trust_pickle=trust_pickle)).model
