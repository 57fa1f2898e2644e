"""Model feeds from named columns: each input gets its column(s), converted to its type.

A model input ``age`` of shape [N] or [N, 1] takes the column ``age``; a single 2-D input
[N, k] takes ``k`` feature columns (named, or every non-label, non-sensitive column in order).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from edgefair.data.columns import is_missing
from edgefair.errors import InputError
from edgefair.modelio.session import Signature, TensorSpec


def _as_dtype(values: np.ndarray, spec: TensorSpec, column: str, source: str) -> np.ndarray:
    dtype = spec.numpy_dtype
    if dtype is np.object_ and values.dtype == object:
        return values  # already Python objects (strings): onnxruntime checks each one
    if dtype is np.object_:
        if values.dtype.kind == "f":  # numbers given to a string input: no '.0' surprises
            return np.array(
                [("" if v != v else (str(int(v)) if float(v).is_integer() else str(v))) for v in values.tolist()],
                dtype=object,
            )
        return values.astype(str).astype(object)
    if values.dtype.kind in "OUS":
        text = values.astype(str)
        text = np.where(is_missing(text), "nan", text)
        try:
            numbers = text.astype(np.float64)
        except ValueError:
            bad = next(v for v in text.tolist() if not _is_number(v))
            raise InputError(
                f"{source}: column {column!r} feeds model input {spec.name!r} ({spec.type}) but holds {bad!r}"
            ) from None
    else:
        numbers = values
    if np.dtype(dtype).kind in "iub" and np.isnan(np.asarray(numbers, np.float64)).any():
        raise InputError(f"{source}: column {column!r} has missing values but model input {spec.name!r} is {spec.type}")
    return np.asarray(numbers).astype(dtype)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def build_feeds(
    sig: Signature,
    columns: Mapping[str, np.ndarray],
    *,
    feature_columns: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    source: str = "data",
) -> dict[str, np.ndarray]:
    """Feeds for ``session.run`` from named columns (any dtype), converted per input."""
    if len(sig.inputs) == 1 and (sig.inputs[0].width or 0) > 1:
        spec = sig.inputs[0]
        if spec.name in columns:
            raise InputError(
                f"{source}: model input {spec.name!r} takes {spec.width} features "
                "per row; give the feature columns, not one column"
            )
        names = list(feature_columns) if feature_columns else [c for c in columns if c not in exclude]
        if len(names) != spec.width:
            raise InputError(
                f"{source}: model input {spec.name!r} takes {spec.width} features "
                f"per row but {len(names)} feature columns were found ({names[:8]}...); "
                "name them with --features"
            )
        missing = [c for c in names if c not in columns]
        if missing:
            raise InputError(f"{source}: no column {missing[0]!r} for model input {spec.name!r}")
        cols = [_as_dtype(np.asarray(columns[c]), spec, c, source) for c in names]
        return {spec.name: np.stack(cols, axis=1)}
    feeds = {}
    missing = [s.name for s in sig.inputs if s.name not in columns]
    if missing:
        raise InputError(
            f"{source}: model input(s) {', '.join(map(repr, missing))} have no column "
            f"of that name; columns are: {', '.join(list(columns)[:20])}"
        )
    for spec in sig.inputs:
        values = _as_dtype(np.asarray(columns[spec.name]), spec, spec.name, source)
        feeds[spec.name] = values.reshape(-1, 1) if len(spec.shape) == 2 else values.reshape(-1)
    return feeds
