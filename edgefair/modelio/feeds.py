"""Model feeds from named columns: each input gets its column(s), converted to its type.

One way for every command (export, convert, verify, compare, the Python API):

- an input ``age`` of shape [N] or [N, 1] takes the column ``age``;
- an input of shape [N, k] (or [N, c, l]: k = c * l values per row, reshaped) takes k named
  columns in order: ``--features f0:f7`` (names, comma-separated, or ranges ``f0:f7``);
- several inputs: ``--features tokens=t0:t3,x=f0:f7`` (``INPUT=`` starts an input's columns);
- without ``--features``, a model whose only input is [N, k] takes every column that is not
  excluded (the label, sensitive, weight and balance columns), in file order.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from edgefair.data.columns import is_missing, text_as_float
from edgefair.errors import InputError
from edgefair.modelio.session import Signature, TensorSpec

Features = str | Sequence[str] | Mapping[str, Sequence[str]] | None
_RANGE = re.compile(r"^(.*?)(\d+)$")


@dataclass(frozen=True)
class FeatureMap:
    """Parsed ``--features``: columns for the one block input, and/or columns per named input."""

    block: tuple[str, ...] = ()
    by_input: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def columns(self) -> list[str]:
        return list(dict.fromkeys([*self.block, *(c for _, cols in self.by_input for c in cols)]))


def expand(item: str) -> list[str]:
    """``f0:f7`` -> f0 ... f7 (same prefix, numbers at the end; zero padding kept); a name -> itself."""
    if ":" not in item:
        return [item]
    start, _, stop = item.partition(":")
    a, b = _RANGE.match(start.strip()), _RANGE.match(stop.strip())
    if a is None or b is None or a.group(1) != b.group(1) or int(a.group(2)) > int(b.group(2)):
        raise InputError(f"features: {item!r} is not a range like f0:f7 (same prefix, first number <= last)")
    width = len(a.group(2)) if a.group(2).startswith("0") and len(a.group(2)) > 1 else 0
    return [f"{a.group(1)}{i:0{width}d}" for i in range(int(a.group(2)), int(b.group(2)) + 1)]


def parse_features(features: Features | FeatureMap) -> FeatureMap | None:
    """``"f0:f7"``, ``["age", "f0:f3"]``, ``"tokens=t0:t3,x=f0:f7"`` or ``{"x": ["f0", ...]}``."""
    if features is None or isinstance(features, FeatureMap):
        return features
    if isinstance(features, Mapping):
        pairs = tuple((str(k), tuple(c for v in vals for c in expand(str(v)))) for k, vals in features.items())
        return FeatureMap((), pairs) if pairs else None
    items = features.split(",") if isinstance(features, str) else [str(f) for f in features]
    block: list[str] = []
    groups: dict[str, list[str]] = {}
    current: list[str] = block
    for raw in (i.strip() for i in items):
        if not raw:
            continue
        if "=" in raw:
            name, _, raw = (p.strip() for p in raw.partition("="))
            if not name or name in groups:
                raise InputError(f"features: {'an empty input name' if not name else repr(name) + ' twice'}")
            current = groups.setdefault(name, [])
            if not raw:
                continue
        current.extend(expand(raw))
    if not block and not groups:
        return None
    return FeatureMap(tuple(block), tuple((k, tuple(v)) for k, v in groups.items()))


def row_shape(spec: TensorSpec) -> tuple[int, ...] | None:
    """The shape of one row of ``spec`` ([N] -> (), [N, k] -> (k,)), None where not fixed."""
    rest = spec.shape[1:]
    if all(isinstance(d, int) for d in rest):
        return tuple(int(d) for d in rest)  # type: ignore[arg-type]
    return None


def row_values(spec: TensorSpec) -> int | None:
    """Values per row: 1 for [N] or [N, 1], k for [N, k], c * l for [N, c, l]; None if not fixed."""
    shape = row_shape(spec)
    if shape is None:
        return spec.width
    return math.prod(shape)


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
        try:
            numbers = text_as_float(values)  # once per distinct value: a CSV chunk holds few
        except ValueError:
            text = values.astype(str)
            text = np.where(is_missing(text), "nan", text)
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


def assign(sig: Signature, features: Features | FeatureMap) -> dict[str, tuple[str, ...]]:
    """Which named columns each input takes under ``features`` (inputs fed by name are left out)."""
    fmap = parse_features(features)
    if fmap is None:
        return {}
    names = [s.name for s in sig.inputs]
    out: dict[str, tuple[str, ...]] = {}
    for name, cols in fmap.by_input:
        if name not in names:
            raise InputError(f"features: the model has no input {name!r}; its inputs are {', '.join(names)}")
        out[name] = cols
    if fmap.block:
        free = [s for s in sig.inputs if s.name not in out]
        blocks = [s for s in free if (row_values(s) or 0) != 1]
        target = free if len(free) == 1 else blocks
        if len(target) != 1:
            raise InputError(
                f"features: the model has inputs {', '.join(names)}; say which input takes "
                f"{', '.join(fmap.block[:4])}{'...' if len(fmap.block) > 4 else ''} (e.g. {names[0]}=...)"
            )
        out[target[0].name] = fmap.block
    return out


def needed_columns(sig: Signature, features: Features | FeatureMap, exclude: Sequence[str] = ()) -> list[str] | None:
    """The columns scoring reads (None: all, for one block input fed every other column)."""
    assigned = assign(sig, features)
    own = [s.name for s in sig.inputs if s.name not in assigned]
    if not assigned and len(sig.inputs) == 1 and (row_values(sig.inputs[0]) or 0) != 1:
        return None
    return list(dict.fromkeys([*(c for cols in assigned.values() for c in cols), *own, *exclude]))


def _block(spec: TensorSpec, names: Sequence[str], columns: Mapping[str, np.ndarray], source: str) -> np.ndarray:
    k = row_values(spec)
    if k is not None and len(names) != k:
        shown = ", ".join(names[:8]) + ("..." if len(names) > 8 else "")
        raise InputError(
            f"{source}: model input {spec.name!r} takes {k} values per row but {len(names)} feature columns "
            f"were given ({shown}); name them with --features {spec.name}=FIRST:LAST"
        )
    stacked = np.stack([_as_dtype(np.asarray(columns[c]), spec, c, source) for c in names], axis=1)
    shape = row_shape(spec)
    return stacked.reshape(len(stacked), *shape) if shape is not None and len(shape) > 1 else stacked


def build_feeds(
    sig: Signature,
    columns: Mapping[str, np.ndarray],
    *,
    feature_columns: Features | FeatureMap = None,
    exclude: Sequence[str] = (),
    source: str = "data",
) -> dict[str, np.ndarray]:
    """Feeds for ``session.run`` from named columns (any dtype), converted per input."""
    assigned = assign(sig, feature_columns)
    for cols in assigned.values():
        missing = [c for c in cols if c not in columns]
        if missing:
            raise InputError(f"{source}: --features names column {missing[0]!r}, which is not among its columns")
    if not assigned and len(sig.inputs) == 1 and (row_values(sig.inputs[0]) or 0) > 1:
        spec = sig.inputs[0]
        if spec.name in columns:
            raise InputError(
                f"{source}: model input {spec.name!r} takes {row_values(spec)} values "
                "per row; give the feature columns, not one column"
            )
        assigned = {spec.name: tuple(c for c in columns if c not in exclude)}
    feeds = {}
    unfed = [s.name for s in sig.inputs if s.name not in assigned and s.name not in columns]
    if unfed:
        blocks = [n for n in unfed if (row_values(next(s for s in sig.inputs if s.name == n)) or 0) != 1]
        hint = f"; name its columns with --features {blocks[0]}=FIRST:LAST" if blocks else ""
        raise InputError(
            f"{source}: model input(s) {', '.join(map(repr, unfed))} have no column "
            f"of that name; columns are: {', '.join(list(columns)[:20])}{hint}"
        )
    for spec in sig.inputs:
        if spec.name in assigned:
            feeds[spec.name] = _block(spec, assigned[spec.name], columns, source)
            continue
        values = _as_dtype(np.asarray(columns[spec.name]), spec, spec.name, source)
        feeds[spec.name] = values.reshape(-1, 1) if len(spec.shape) == 2 else values.reshape(-1)
    return feeds
