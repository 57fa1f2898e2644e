"""JSON tensors that need no checks beyond their shape: the fast paths of request parsing.

``parse_request`` (serve.protocol) hands the ``inputs`` list here first. When every input is a
[rows, cols] tensor of plain values (``PLAIN``: values whose numpy array cannot fail or round
differently from the checked path), the arrays are built here; else None, and the checked loop
builds them or words the refusal. A request whose inputs are single values laid out as an
earlier one's (same names, datatypes, shapes and value types: what a client sends every time)
is checked a list at a time (``_cached_singles``), not a field at a time.
"""

from __future__ import annotations

from itertools import chain
from operator import itemgetter
from typing import Any

import numpy as np

DATATYPES = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BYTES": np.object_,
}


FLOAT32_SAFE = 3.4e38  # below float32's largest value: no overflow on the cast
INT_RANGES = {
    dt: (int(np.iinfo(DATATYPES[dt]).min), int(np.iinfo(DATATYPES[dt]).max))
    for dt in ("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64")
}


# (datatype, type of a JSON value) -> (numpy dtype, bounds the value must lie strictly within)
# for the values whose array cannot fail or round differently from the checked path: strings
# for BYTES (not the empty one), ints exact in float32 (so in float64) and finite floats within
# float32's range for FP32/FP64 (numpy's one C cast of each double gives what the checked
# path's float64 -> target cast gives), in-range ints for the integer types
PLAIN: dict[tuple[str, type], tuple[Any, Any, Any]] = {
    ("BYTES", str): (np.object_, "", "\U0010ffff" * 8),
    **{(dt, float): (DATATYPES[dt], -FLOAT32_SAFE, FLOAT32_SAFE) for dt in ("FP32", "FP64")},
    **{(dt, int): (DATATYPES[dt], -(1 << 24), 1 << 24) for dt in ("FP32", "FP64")},
    **{(dt, int): (DATATYPES[dt], low - 1, high + 1) for dt, (low, high) in INT_RANGES.items()},
}


def _plain_dtype(flat: list[Any], datatype: str) -> Any:
    """The numpy dtype to build ``flat`` with when every value is plain (``PLAIN``); None for
    anything else, which takes the checked path."""
    if not flat:
        return None
    for v in flat:
        spec = PLAIN.get((datatype, type(v)))
        if spec is None or not spec[1] < v < spec[2]:
            return None
    return DATATYPES[datatype]


_structure = itemgetter("name", "datatype", "shape")
_data, _first, _shape = itemgetter("data"), itemgetter(0), itemgetter(2)
MAX_LAYOUTS = 4  # request layouts remembered (a repository serves several models)


class _Layout:
    """An all-single-values request layout checked once by the loop below: its (name,
    datatype, shape) per input and each value's type; the inputs grouped by ``PLAIN`` spec."""

    def __init__(self, items: list[Any], max_elements: int) -> None:
        self.structure = list(map(_structure, items))
        self.max_elements = max_elements
        values = [item["data"][0] for item in items]
        self.types = list(map(type, values))
        self.names = [item["name"] for item in items]
        groups: dict[tuple[str, type], list[int]] = {}
        for i, item in enumerate(items):
            groups.setdefault((item["datatype"], self.types[i]), []).append(i)
        # (names, values getter, (dtype, low, high))
        self.groups = [
            (
                [self.names[i] for i in idx],
                _taker(idx),
                PLAIN[key],
            )
            for key, idx in groups.items()
        ]


def _taker(idx: list[int]) -> Any:
    """The values at ``idx``, as a tuple (itemgetter of one index gives the value itself)."""
    if len(idx) > 1:
        return itemgetter(*idx)
    i = idx[0]
    return lambda values: (values[i],)


_layouts: list[_Layout] = []


def _remember(items: list[Any], max_elements: int) -> None:
    global _layouts
    new = _Layout(items, max_elements)
    for old in _layouts:  # already known (its values failed the bounds): keep the list as it is
        if old.types == new.types and old.structure == new.structure and old.max_elements == max_elements:
            return
    _layouts = [new, *_layouts[: MAX_LAYOUTS - 1]]  # one assignment: safe for readers


def _cached_singles(items: list[Any], max_elements: int) -> dict[str, Any] | None:
    """``_plain_inputs`` for a request laid out as a remembered one, a list at a time: the same
    fields, one value each, of the same types, each group's values strictly within its bounds
    (by min and max: a NaN among floats is passed over by both unless it comes first, and then
    it fails the bounds; a NaN the bounds pass is one the checked path keeps too, bit for bit).
    None: the loop decides."""
    try:
        structure = list(map(_structure, items))
        # shapes compare equal with true or 1.0 for 1: their elements must be ints
        if set(map(len, items)) != {4} or set(map(type, chain.from_iterable(map(_shape, structure)))) != {int}:
            return None
        datas = list(map(_data, items))
        if set(map(type, datas)) != {list} or set(map(len, datas)) != {1}:
            return None
        values = list(map(_first, datas))
        types = list(map(type, values))
        for layout in _layouts:
            if layout.types == types and layout.structure == structure and layout.max_elements == max_elements:
                break
        else:
            return None
        inputs: dict[str, Any] = dict.fromkeys(layout.names)
        for names, take, (dtype, low, high) in layout.groups:
            group = take(values)
            if not (low < min(group) and max(group) < high):
                return None
            inputs.update(zip(names, np.array(group, dtype).reshape(-1, 1, 1), strict=True))
        return inputs
    except (KeyError, TypeError, ValueError):
        return None


def _plain_inputs(items: list[Any], max_elements: int) -> dict[str, np.ndarray] | None:
    """Every input's array when each is a [rows, cols] tensor (within the caps) of flat plain
    values (``PLAIN``) and nothing else (no parameters), as the checked loop of
    ``parse_request`` would build it; None when any is not, and that loop decides (and words
    the refusal). Single values of one dtype (a row of scalar features) are built by one
    numpy call and handed out as [1, 1] views of it."""
    if _layouts:
        cached = _cached_singles(items, max_elements)
        if cached is not None:
            return cached
    inputs: dict[str, Any] = {}
    singles: dict[Any, tuple[list[str], list[Any]]] = {}  # dtype -> (names, values)
    try:
        for item in items:
            if len(item) != 4:  # the four fields below and no others (no parameters)
                return None
            name, datatype, shape, data = item["name"], item["datatype"], item["shape"], item["data"]
            rows, cols = shape  # ValueError: not two dimensions
            if (
                type(name) is not str
                or name in inputs
                or type(shape) is not list
                or type(rows) is not int
                or type(cols) is not int
                or not 0 <= rows <= max_elements
                or not 0 <= cols <= max_elements
                or type(data) is not list
                or len(data) != rows * cols
                or rows * cols > max_elements
            ):
                return None
            if len(data) == 1:  # one value: _plain_dtype inline, built with the others of its dtype
                value = data[0]
                spec = PLAIN.get((datatype, type(value)))  # TypeError: an unhashable datatype
                if spec is None or not spec[1] < value < spec[2]:
                    return None
                group = singles.get(spec[0])
                if group is None:
                    singles[spec[0]] = ([name], [value])
                else:
                    group[0].append(name)
                    group[1].append(value)
                inputs[name] = None  # its place in the order; the view comes below
                continue
            dtype = _plain_dtype(data, datatype)
            if dtype is None:
                return None
            inputs[name] = np.array(data, dtype).reshape(rows, cols)
    except (KeyError, TypeError, ValueError):  # not a dict, a missing field, not two dimensions
        return None
    for dtype, (names, values) in singles.items():
        # iterating a (k, 1, 1) array yields its k [1, 1] views in C
        inputs.update(zip(names, np.array(values, dtype).reshape(-1, 1, 1), strict=True))
    if sum(len(names) for names, _ in singles.values()) == len(inputs):  # every input one value
        _remember(items, max_elements)
    return inputs


def _plain_array(flat: list[Any], datatype: str) -> np.ndarray | None:
    """The array ``_json_array`` would give, without its numpy round trip, when
    ``_plain_dtype`` says the values allow it; else None."""
    dtype = _plain_dtype(flat, datatype)
    return None if dtype is None else np.array(flat, dtype)
