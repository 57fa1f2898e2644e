"""Export PyTorch modules and scikit-learn pipelines to ONNX (torch and skl2onnx load lazily).

- torch: the legacy TorchScript exporter (``dynamo=False``) into memory, with a dynamic
  batch dimension, so no ``.onnx.data`` sidecar can appear beside a small model.
- scikit-learn: skl2onnx with ``zipmap=False``; a pipeline fitted on a DataFrame gets one
  input per raw column (strings and numbers), so preprocessing runs inside the graph.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgefair.convert.common import dedupe_opsets, load_model, model_bytes
from edgefair.data import Dataset, load
from edgefair.errors import InputError, ModelError

DEFAULT_OPSET = 17
SAMPLE_ROWS = 2000


def export_torch(
    module: Any,
    sample_input: Any,
    *,
    input_names: Sequence[str] = ("input",),
    output_names: Sequence[str] = ("probabilities",),
    opset: int = DEFAULT_OPSET,
) -> onnx.ModelProto:
    """An nn.Module (or ExportedProgram's module) plus a sample input -> ONNX, batch dynamic."""
    try:
        import torch
    except ImportError:
        raise ModelError("exporting PyTorch models needs torch: pip install 'edgefair[torch]'") from None
    # an ExportedProgram's module is already in inference form and refuses eval()
    with contextlib.suppress(NotImplementedError):
        module.eval()
    samples = sample_input if isinstance(sample_input, tuple) else (sample_input,)
    axes = {n: {0: "batch"} for n in [*input_names, *output_names]}
    buffer = io.BytesIO()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # legacy exporter, on purpose
            torch.onnx.export(
                module,
                samples,
                buffer,
                input_names=list(input_names),
                output_names=list(output_names),
                dynamic_axes=axes,
                opset_version=opset,
                dynamo=False,
            )
    except Exception as exc:
        raise ModelError(f"torch.onnx.export failed: {exc}".splitlines()[0]) from None
    return onnx.load_model_from_string(buffer.getvalue())


def load_torch_file(path: Path, sample: np.ndarray | None) -> onnx.ModelProto:
    """A ``.pt2`` ExportedProgram (torch.export.save) or a TorchScript file -> ONNX."""
    try:
        import torch
    except ImportError:
        raise ModelError("exporting PyTorch models needs torch: pip install 'edgefair[torch]'") from None
    if path.suffix == ".pt2":
        try:
            with _quiet_torch():
                program = torch.export.load(str(path))
        except Exception as exc:
            raise ModelError(f"{path}: not a torch.export program ({type(exc).__name__})") from None
        module = _Unregistered(program.module())
        if sample is None:
            example = getattr(program, "example_inputs", None)
            if not example or not example[0]:
                raise InputError(f"{path}: no example inputs stored; give --sample-data")
            return export_torch(module, tuple(example[0]))
    else:
        try:
            module = torch.jit.load(str(path))
        except Exception as exc:
            raise ModelError(f"{path}: not a TorchScript file ({type(exc).__name__})") from None
        if sample is None:
            raise InputError(f"{path}: a TorchScript model needs --sample-data to trace shapes")
    return export_torch(module, torch.from_numpy(np.asarray(sample, np.float32)))


@contextlib.contextmanager
def _quiet_torch() -> Any:
    """torch logs its own warnings before raising; the error edgefair raises says it in one line."""
    import logging

    logger = logging.getLogger("torch")
    level = logger.level
    logger.setLevel(logging.ERROR + 10)
    try:
        yield
    finally:
        logger.setLevel(level)


def _unregistered_class() -> Any:
    import torch

    class Unregistered(torch.nn.Module):  # type: ignore[misc]
        """Holds an ExportedProgram's module without registering it: that module refuses
        train()/eval(), which the legacy exporter calls on every submodule."""

        def __init__(self, inner: Any) -> None:
            super().__init__()
            object.__setattr__(self, "inner", inner)
            for param in inner.parameters():  # traced as constants: they must not need grad
                param.requires_grad_(False)

        def forward(self, *args: Any) -> Any:
            return self.inner(*args)

    return Unregistered


def _Unregistered(inner: Any) -> Any:
    return _unregistered_class()(inner)


def sklearn_sample(
    estimator: Any, sample: np.ndarray | Mapping[str, np.ndarray], where: Path
) -> np.ndarray | dict[str, np.ndarray]:
    """Sample data typed by what the estimator was fitted on.

    Fitted on a DataFrame (``feature_names_in_``): one input per named column, numbers as
    numbers (a column whose every value parses as a number) and the rest as strings. Fitted
    on a matrix: one [N, k] float input from the k columns, in order."""
    if not isinstance(sample, Mapping):
        return np.asarray(sample)
    from edgefair.data.columns import numeric

    names = getattr(estimator, "feature_names_in_", None)
    if names is None:
        k = getattr(estimator, "n_features_in_", len(sample))
        if k != len(sample):
            raise InputError(
                f"{where}: the model was fitted on a matrix of {k} features; the sample data has {len(sample)} "
                f"columns ({', '.join(list(sample)[:8])}): give a CSV with exactly its feature columns, in order"
            )
        return np.stack([numeric(v, c, "sample data", allow_missing=True) for c, v in sample.items()], axis=1)
    missing = [str(n) for n in names if str(n) not in sample]
    if missing:
        raise InputError(f"{where}: the model takes column {missing[0]!r}, which the sample data does not have")
    typed: dict[str, np.ndarray] = {}
    for name in (str(n) for n in names):
        values = np.asarray(sample[name])
        try:
            typed[name] = numeric(values, name, "sample data") if values.dtype.kind in "OUS" else values
        except InputError:  # not all numbers: a string column
            typed[name] = values.astype(str).astype(object)
    return typed


def sklearn_initial_types(columns: Mapping[str, np.ndarray]) -> list[tuple[str, Any]]:
    """One [None, 1] input per column: strings as StringTensorType, numbers as floats."""
    from skl2onnx.common.data_types import FloatTensorType, Int64TensorType, StringTensorType

    types: list[tuple[str, Any]] = []
    for name, values in columns.items():
        kind = np.asarray(values).dtype.kind
        if kind in "OUS":
            types.append((name, StringTensorType([None, 1])))
        elif kind in "iub":
            types.append((name, Int64TensorType([None, 1])))
        else:
            types.append((name, FloatTensorType([None, 1])))
    return types


def export_sklearn(
    model: Any,
    sample: Any,
    *,
    opset: int = DEFAULT_OPSET,
    name: str = "sklearn_model",
) -> onnx.ModelProto:
    """A fitted scikit-learn estimator or pipeline -> ONNX with labels and probabilities.

    ``sample`` is a DataFrame or a mapping of column -> array (one input per column) or a
    2-D float array (one input named ``input``).
    """
    try:
        from skl2onnx import to_onnx
        from skl2onnx.common.data_types import FloatTensorType
    except ImportError:
        raise ModelError("exporting scikit-learn needs skl2onnx: pip install 'edgefair[sklearn]'") from None
    if hasattr(sample, "columns") or isinstance(sample, Mapping):
        cols = {str(c): np.asarray(sample[c]) for c in (sample.columns if hasattr(sample, "columns") else sample)}
        initial = sklearn_initial_types(cols)
    else:
        arr = np.asarray(sample)
        if arr.ndim != 2:
            raise InputError(f"sample must be 2-D (rows x features), got shape {arr.shape}")
        initial = [("input", FloatTensorType([None, arr.shape[1]]))]
    options = {id(model): {"zipmap": False}} if _is_classifier(model) else None
    try:
        onx = to_onnx(
            model,
            initial_types=initial,
            target_opset={"": opset, "ai.onnx.ml": 3},
            options=options,
            model_optim=True,
        )
    except Exception as exc:
        raise ModelError(f"skl2onnx could not convert the model: {exc}".splitlines()[0]) from None
    dedupe_opsets(onx)
    onx.graph.name = name
    return onx


def _is_classifier(model: Any) -> bool:
    final = model.steps[-1][1] if hasattr(model, "steps") else model
    return hasattr(final, "predict_proba")


@dataclass(frozen=True)
class ExportResult:
    """An exported model and what was checked: onnx.checker (full), the model-safety
    check and an onnxruntime load. (No comparison with the source model yet.)"""

    model: onnx.ModelProto
    source: str
    size_bytes: int
    checked: tuple[str, ...] = ("onnx.checker full check", "model-safety check", "onnxruntime loads it")

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "size_bytes": self.size_bytes, "checked": list(self.checked)}


def export_model(
    src: str | Path, *, sample_data: str | Path | Dataset | None = None, trust_pickle: bool = False
) -> ExportResult:
    """Export ``src`` (see ``export_file``) with types and shapes from ``sample_data``, checked."""
    from edgefair.convert.validation import validate

    sample = load(sample_data, SAMPLE_ROWS).columns if sample_data is not None else None
    model = export_file(src, sample, trust_pickle)
    validate(model, "exported model")
    return ExportResult(model, str(src), len(model_bytes(model)))


def export_file(
    src: str | Path, sample: np.ndarray | Mapping[str, np.ndarray] | None = None, trust_pickle: bool = False
) -> onnx.ModelProto:
    """CLI entry: ``.onnx`` passes through, ``.pt2``/``.pt`` are torch, ``.pkl``/``.joblib``
    are scikit-learn pickles (only with ``trust_pickle``: loading a pickle runs its code)."""
    path = Path(src)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        model = load_model(path)
        dedupe_opsets(model)
        return model
    if suffix in (".pt2", ".pt", ".pth", ".ts"):
        arr = None if sample is None else _as_matrix(sample)
        return load_torch_file(path, arr)
    if suffix in (".pkl", ".pickle", ".joblib"):
        if not trust_pickle:
            raise InputError(
                f"{path}: loading a pickle runs arbitrary code; pass --trust-pickle if you trust this file"
            )
        if sample is None:
            raise InputError(f"{path}: a scikit-learn model needs --sample-data for its input types")
        import pickle

        try:
            if suffix == ".joblib":
                import joblib

                estimator = joblib.load(path)
            else:
                with path.open("rb") as f:
                    estimator = pickle.load(f)
        except Exception as exc:
            raise ModelError(f"{path}: could not unpickle ({type(exc).__name__}: {exc})") from None
        return export_sklearn(estimator, sklearn_sample(estimator, sample, path))
    raise InputError(f"{path}: unknown model type {suffix!r}; expected .onnx, .pt2, .pt, .pkl or .joblib")


def _as_matrix(sample: np.ndarray | Mapping[str, np.ndarray]) -> np.ndarray:
    if isinstance(sample, Mapping):
        try:
            return np.stack([np.asarray(v, np.float32) for v in sample.values()], axis=1)
        except ValueError:
            raise InputError("torch sample data must be numeric columns") from None
    return np.asarray(sample, np.float32)
