"""Export scikit-learn estimators and pipelines, LightGBM and XGBoost models (skl2onnx,
onnxmltools; loaded lazily).

- skl2onnx with ``zipmap=False``; a pipeline that starts with a ColumnTransformer gets one
  input per raw column (strings and numbers), so preprocessing runs inside the graph;
  any other model fitted on named columns takes one [N, 1] input per column, concatenated
  in the graph in the order it was fitted on.
- LightGBM and XGBoost (their scikit-learn classes, alone or inside a pipeline) convert with
  onnxmltools' converters registered with skl2onnx (``pip install 'edgefair[boost]'``).
- ``double=True``: numeric inputs as double (skl2onnx's DoubleTensorType) and, before a
  scikit-learn tree ensemble, a cast to float32, which is what scikit-learn itself does.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgefair.convert.common import dedupe_opsets
from edgefair.errors import InputError, ModelError

DEFAULT_OPSET = 17
BOOST_MODULES = ("lightgbm", "xgboost")


def final_step(model: Any) -> Any:
    return model.steps[-1][1] if hasattr(model, "steps") else model


def is_classifier(model: Any) -> bool:
    return hasattr(final_step(model), "predict_proba")


def is_tree_model(model: Any) -> bool:
    """A tree ensemble, whose splits are exact comparisons: float32 rounding moves rows across them."""
    final = final_step(model)
    return (
        hasattr(final, "tree_")
        or hasattr(final, "estimators_")
        or hasattr(final, "_predictors")  # HistGradientBoosting*
        or type(final).__module__.split(".")[0] in BOOST_MODULES
    )


def is_boost(model: Any) -> bool:
    return type(final_step(model)).__module__.split(".")[0] in BOOST_MODULES


def sklearn_sample(
    estimator: Any, sample: np.ndarray | Mapping[str, np.ndarray], where: Path | str, features: Any = None
) -> np.ndarray | dict[str, np.ndarray]:
    """Sample data typed by what the estimator was fitted on.

    Fitted on a DataFrame (``feature_names_in_``): one input per named column, numbers as
    numbers (a column whose every value parses as a number) and the rest as strings. Fitted
    on a matrix: one [N, k] float input from k columns, in order (``features`` names them)."""
    if not isinstance(sample, Mapping):
        return np.asarray(sample)
    from edgefair.data.columns import numeric
    from edgefair.modelio.feeds import parse_features

    names = getattr(estimator, "feature_names_in_", None)
    fmap = parse_features(features)
    chosen = fmap.columns() if fmap is not None else None
    for col in chosen or []:
        if col not in sample:
            raise InputError(f"{where}: --features names column {col!r}, which the sample data does not have")
    if names is None:
        cols = chosen or list(sample)
        k = getattr(estimator, "n_features_in_", len(cols))
        if k != len(cols):
            raise InputError(
                f"{where}: the model was fitted on a matrix of {k} features; the sample data has {len(cols)} "
                f"columns ({', '.join(cols[:8])}): name the {k} feature columns in order with --features"
            )
        return np.stack([numeric(sample[c], c, "sample data", allow_missing=True) for c in cols], axis=1)
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


def sklearn_initial_types(columns: Mapping[str, np.ndarray], double: bool = False) -> list[tuple[str, Any]]:
    """One [None, 1] input per column: strings as StringTensorType, numbers as floats."""
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType, Int64TensorType, StringTensorType

    types: list[tuple[str, Any]] = []
    for name, values in columns.items():
        kind = np.asarray(values).dtype.kind
        if kind in "OUS":
            types.append((name, StringTensorType([None, 1])))
        elif kind in "iub" and not double:
            types.append((name, Int64TensorType([None, 1])))
        else:
            types.append((name, (DoubleTensorType if double else FloatTensorType)([None, 1])))
    return types


def register_boost_converters() -> None:
    """Teach skl2onnx LightGBM's and XGBoost's scikit-learn classes (onnxmltools' converters)."""
    try:
        from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm
        from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost
        from skl2onnx import update_registered_converter
        from skl2onnx.common.shape_calculator import (
            calculate_linear_classifier_output_shapes,
            calculate_linear_regressor_output_shapes,
        )
    except ImportError:
        raise ModelError("exporting LightGBM or XGBoost needs onnxmltools: pip install 'edgefair[boost]'") from None
    classifier = {"nocl": [True, False], "zipmap": [True, False, "columns"]}
    for module, converter in (("lightgbm", convert_lightgbm), ("xgboost", convert_xgboost)):
        try:
            lib = __import__(module)
        except ImportError:
            continue
        prefix = "LightGbm" if module == "lightgbm" else "XGBoost"
        for cls_name, shapes, opts in (
            (
                "LGBMClassifier" if module == "lightgbm" else "XGBClassifier",
                calculate_linear_classifier_output_shapes,
                classifier,
            ),
            (
                "LGBMRegressor" if module == "lightgbm" else "XGBRegressor",
                calculate_linear_regressor_output_shapes,
                None,
            ),
        ):
            cls = getattr(lib, cls_name)
            update_registered_converter(cls, f"{prefix}{cls_name}", shapes, converter, options=opts)


def _unnamed_boosters(model: Any) -> Any:
    """onnxmltools reads XGBoost features as f0, f1, ...: a copy without the fitted column names
    (the graph takes the columns in the order the model was fitted on)."""
    final = final_step(model)
    if type(final).__module__.split(".")[0] != "xgboost" or not getattr(final.get_booster(), "feature_names", None):
        return model
    model = copy.deepcopy(model)
    final_step(model).get_booster().feature_names = None
    return model


def _with_cast(model: Any) -> Any:
    """The pipeline with a float32 cast just before its scikit-learn tree ensemble (what the
    trees do to their input anyway), so double preprocessing meets float32 splits as in sklearn."""
    from skl2onnx.sklapi import CastTransformer
    from sklearn.pipeline import Pipeline

    if is_boost(model) or not is_tree_model(model):
        return model
    steps = list(model.steps) if hasattr(model, "steps") else [("model", model)]
    return Pipeline([*steps[:-1], ("cast_float32", CastTransformer(dtype=np.float32)), steps[-1]])


def _concat_columns(model: onnx.ModelProto, names: list[str], elem_type: int) -> None:
    """Replace the one [N, k] input ``input`` by k named [N, 1] inputs concatenated in order."""
    block = next(i for i in model.graph.input if i.name == "input")
    model.graph.input.remove(block)
    for name in names:
        model.graph.input.append(onnx.helper.make_tensor_value_info(name, elem_type, ["N", 1]))
    model.graph.node.insert(0, onnx.helper.make_node("Concat", names, ["input"], axis=1, name="edgefair_columns"))


def export_sklearn(
    model: Any,
    sample: Any,
    *,
    opset: int = DEFAULT_OPSET,
    name: str = "sklearn_model",
    double: bool = False,
) -> onnx.ModelProto:
    """A fitted scikit-learn estimator or pipeline (LightGBM/XGBoost too) -> ONNX with labels
    and probabilities (classifiers) or ``variable`` (regressors).

    ``sample`` is a DataFrame or a mapping of column -> array (one input per column) or a
    2-D float array (one input named ``input``).
    """
    try:
        from skl2onnx import convert_sklearn
        from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType
    except ImportError:
        raise ModelError("exporting scikit-learn needs skl2onnx: pip install 'edgefair[sklearn]'") from None
    if is_boost(model):
        if double:
            raise InputError(
                "--double applies to scikit-learn models; onnxmltools converts LightGBM and XGBoost in float32"
            )
        register_boost_converters()
        model = _unnamed_boosters(model)
    if double:
        model = _with_cast(model)
    tensor = DoubleTensorType if double else FloatTensorType
    concat: list[str] = []
    if hasattr(sample, "columns") or isinstance(sample, Mapping):
        cols = {str(c): np.asarray(sample[c]) for c in (sample.columns if hasattr(sample, "columns") else sample)}
        first = model.steps[0][1] if hasattr(model, "steps") else model
        if type(first).__name__ == "ColumnTransformer":
            initial = sklearn_initial_types(cols, double)
        else:  # a matrix model fitted on named columns: the columns concatenated in the graph
            strings = [c for c, v in cols.items() if v.dtype.kind in "OUS"]
            if strings:
                raise InputError(
                    f"column {strings[0]!r} holds text, but the model does not start with a ColumnTransformer "
                    "that could encode it"
                )
            concat = list(cols)
            initial = [("input", tensor([None, len(cols)]))]
    else:
        arr = np.asarray(sample)
        if arr.ndim != 2:
            raise InputError(f"sample must be 2-D (rows x features), got shape {arr.shape}")
        initial = [("input", tensor([None, arr.shape[1]]))]
    options = {id(final_step(model)): {"zipmap": False}} if is_classifier(model) else None
    try:
        onx = convert_sklearn(
            model,
            initial_types=initial,
            target_opset={"": opset, "ai.onnx.ml": 3},
            options=options,
            custom_conversion_functions=_bool_safe_converters(),
            model_optim=True,
        )
    except Exception as exc:
        raise ModelError(f"skl2onnx could not convert {describe(model)}: {root_cause(exc)}") from None
    if concat:
        _concat_columns(onx, concat, onnx.TensorProto.DOUBLE if double else onnx.TensorProto.FLOAT)
    dedupe_opsets(onx)
    onx.graph.name = name
    return onx


def describe(model: Any) -> str:
    """The model as its classes: ``Pipeline(ColumnTransformer, HistGradientBoostingClassifier)``."""
    if hasattr(model, "steps"):
        return f"{type(model).__name__}({', '.join(type(step).__name__ for _, step in model.steps)})"
    return type(model).__name__


def root_cause(exc: BaseException, limit: int = 240) -> str:
    """The innermost exception of a chain, as ``Type: its first line`` cut to ``limit``
    characters: skl2onnx's own message may hold a dump of every attribute array."""
    seen = {id(exc)}
    while (inner := exc.__cause__ or exc.__context__) is not None and id(inner) not in seen:
        seen.add(id(inner))
        exc = inner
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = f"{type(exc).__name__}: {lines[0] if lines else '(no message)'}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _IntAttributes:
    """A converter's container whose nodes get ints where skl2onnx passes Python booleans:
    skl2onnx 1.20 gives HistGradientBoosting leaves ``nodes_missing_value_tracks_true=False``
    and protobuf 7 refuses a bool in ``AttributeProto.ints`` ("Expected an int, got a
    boolean"); False is 0 and True is 1 either way, so the graph is the one intended."""

    def __init__(self, container: Any) -> None:
        self._container = container

    def __getattr__(self, name: str) -> Any:
        return getattr(self._container, name)

    def add_node(self, op_type: str, inputs: Any, outputs: Any, *args: Any, **attrs: Any) -> Any:
        for key, value in attrs.items():
            if isinstance(value, list | tuple) and any(isinstance(v, bool | np.bool_) for v in value):
                attrs[key] = [int(v) if isinstance(v, bool | np.bool_) else v for v in value]
        return self._container.add_node(op_type, inputs, outputs, *args, **attrs)


def _bool_safe_converters() -> dict[type, Any]:
    """skl2onnx's own HistGradientBoosting converters, each given an ``_IntAttributes`` container."""
    from skl2onnx import get_model_alias
    from skl2onnx.common._registration import get_converter
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    def fixed(model_type: type) -> Any:
        original = get_converter(get_model_alias(model_type))

        def convert(scope: Any, operator: Any, container: Any) -> None:
            original(scope, operator, _IntAttributes(container))

        return convert

    return {t: fixed(t) for t in (HistGradientBoostingClassifier, HistGradientBoostingRegressor)}


def sklearn_scores(model: Any, sample: np.ndarray | Mapping[str, np.ndarray]) -> np.ndarray:
    """What the source model computes on the sample: probabilities, or predictions."""
    x: Any = sample
    if isinstance(sample, Mapping):
        import importlib  # pandas: a model fitted on a DataFrame is scored on one (its user has pandas)

        x = importlib.import_module("pandas").DataFrame({k: np.asarray(v).reshape(-1) for k, v in sample.items()})
    try:
        out = model.predict_proba(x) if is_classifier(model) else model.predict(x)
    except Exception as exc:
        raise ModelError(f"the source model could not score the sample data: {exc}".splitlines()[0]) from None
    return np.asarray(out, np.float64)


def load_pickle(path: Path) -> Any:
    """A pickled or joblib-dumped model, whichever the suffix (joblib reads plain pickles too)."""
    import pickle

    try:
        try:
            import joblib
        except ImportError:  # a plain pickle still loads
            with path.open("rb") as f:
                return pickle.load(f)
        return joblib.load(path)
    except Exception as exc:
        raise ModelError(f"{path}: could not unpickle ({type(exc).__name__}: {exc})") from None
