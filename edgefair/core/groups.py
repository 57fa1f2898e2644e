"""Rows to group codes: each sensitive attribute factorised, then their intersection.

Small-range integers go through a bincount; strings are grouped in numpy (by object
pointer or fixed-width value) before a dict sees only one representative of each; anything
else goes through a dict of first appearances. Groups come out sorted, so equal data gives equal tables in any order.
"""

from __future__ import annotations

import ctypes
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from edgefair.errors import InputError

if TYPE_CHECKING:  # numpy.typing costs the runtime's import a few ms; annotations only need it here
    import numpy.typing as npt

    IntArray = npt.NDArray[np.int64]
else:
    IntArray = np.ndarray

GroupKey = tuple[str, ...]


def factorize(values: npt.ArrayLike, what: str = "values", groups: bool = False) -> tuple[IntArray, list[str]]:
    """Codes 0..k-1 and the k distinct values as strings (order of first appearance).
    ``groups``: the values name groups, so a missing one (None, NaN) is refused, not turned
    into a group called 'None' or 'nan'."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise InputError(f"{what} must be one-dimensional, got shape {arr.shape}")
    if arr.dtype.kind in "iub" and len(arr):
        # small-range integers: a bincount finds the values without sorting
        lo, hi = int(arr.min()), int(arr.max())
        if hi - lo < 1 << 20:
            shifted = arr.astype(np.int64) - lo
            present = np.flatnonzero(np.bincount(shifted, minlength=hi - lo + 1))
            lookup = np.zeros(hi - lo + 1, np.int64)
            lookup[present] = np.arange(len(present))
            return lookup[shifted], [str(v + lo) for v in present.tolist()]
    if arr.dtype.kind in "OUSiu" and len(arr):  # not floats: every NaN is its own value there
        codes, index = _factorize_text(arr)
    else:
        codes, index = _factorize_dict(arr.tolist())
    if groups:
        for v in index:
            if _missing(v):
                row = int(np.argmax(codes == index[v]))
                raise InputError(
                    f"{what} is missing ({v!r}) at row {row}; a missing value names no group: fill it (e.g. 'unknown')"
                )
    return codes, [str(v) for v in index]


def _missing(value: Any) -> bool:
    """None, NaN (float or numpy), pandas' NA and NaT: what names no group."""
    if value is None:
        return True
    try:
        return bool(value != value)
    except TypeError:  # pandas.NA: its comparisons are NA, not booleans
        return True


def _factorize_dict(items: list[Any]) -> tuple[IntArray, dict[Any, int]]:
    """Codes and uniques through a dict of first appearances (the exact definition)."""
    index: dict[Any, int] = {}
    for v in dict.fromkeys(items):
        index[v] = len(index)
    codes = np.fromiter(map(index.__getitem__, items), dtype=np.int64, count=len(items))
    return codes, index


def _object_addresses(arr: np.ndarray) -> npt.NDArray[np.uintp]:
    """The object pointers an object array holds, as integers (equal pointers: the same
    object, so equal values). ``arr`` must be C-contiguous and outlive the result's use."""
    buffer: Any = (ctypes.c_size_t * len(arr)).from_address(arr.ctypes.data)
    return np.frombuffer(buffer, np.uintp)


def _first_appearances(keys: np.ndarray) -> tuple[IntArray, IntArray]:
    """Codes 0..k-1 in order of first appearance and each code's first row, for keys whose
    equality is exact (integers, or fixed-width strings): a sort of the keys, no Python per row."""
    if keys.dtype.kind in "iu":  # a plain sort: numpy's hashed unique is slow on many integers
        ordered = np.sort(keys)
        distinct = ordered[np.concatenate(([True], ordered[1:] != ordered[:-1]))]
    else:
        distinct = np.unique(keys)  # sorted
    codes = _sorted_codes(keys, distinct)
    firsts = np.full(len(distinct), len(keys), np.int64)
    np.minimum.at(firsts, codes, np.arange(len(keys)))
    order = np.argsort(firsts, kind="stable")  # sorted codes -> codes by first appearance
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    return rank[codes], firsts[order]


def _sorted_codes(keys: np.ndarray, distinct: np.ndarray) -> IntArray:
    """Each key's place in ``distinct`` (sorted, unique). Integer keys that some shift and
    mask map to distinct slots of a small table (object pointers, aligned, usually do) are
    looked up in that table; others are found by binary search."""
    if keys.dtype.kind == "u" and len(distinct) <= 4096:
        for shift in (4, 3, 5, 6, 0):
            slots = (distinct >> shift) & 0xFFFF
            if len(np.unique(slots)) == len(distinct):
                table = np.zeros(1 << 16, np.int64)
                table[slots] = np.arange(len(distinct))
                return table[(keys >> shift) & 0xFFFF]
    return np.searchsorted(distinct, keys).astype(np.int64)


def _factorize_text(arr: np.ndarray) -> tuple[IntArray, dict[Any, int]]:
    """Strings (or any objects): group equal pointers (object arrays) or equal fixed-width
    strings in numpy first, then equal values among those few representatives with a dict,
    so the result is exactly ``_factorize_dict``'s."""
    if arr.dtype.kind == "O":
        arr = np.ascontiguousarray(arr)
        codes, firsts = _first_appearances(_object_addresses(arr))
    else:
        codes, firsts = _first_appearances(arr)
    representatives = arr[firsts].tolist()
    index: dict[Any, int] = {}
    remap = np.fromiter((index.setdefault(v, len(index)) for v in representatives), np.int64, len(representatives))
    if len(index) != len(representatives):  # equal values held by different objects
        codes = remap[codes]
    return codes, index


def factorize_groups(
    sensitive: Mapping[str, npt.ArrayLike], length: int | None = None
) -> tuple[IntArray, tuple[GroupKey, ...]]:
    """Per-row group code over the intersection of every attribute, groups sorted."""
    names = list(sensitive)
    per_attr = []
    for name in names:
        codes, uniques = factorize(sensitive[name], f"sensitive attribute {name!r}", groups=True)
        if length is not None and len(codes) != length:
            raise InputError(f"sensitive attribute {name!r} has {len(codes)} rows, expected {length}")
        length = len(codes)
        per_attr.append((codes, uniques))
    combined = per_attr[0][0]
    for codes, uniques in per_attr[1:]:
        combined = combined * len(uniques) + codes
    sizes = [len(u) for _, u in per_attr]
    total = int(np.prod(sizes)) if sizes else 1
    if total <= 1 << 22:
        present = np.flatnonzero(np.bincount(combined, minlength=total))
        lookup = np.zeros(total, np.int64)
    else:
        present = np.unique(combined)
        lookup = None
    keys = []
    for flat in present.tolist():
        key = []
        for (_, uniques), size in zip(reversed(per_attr), reversed(sizes), strict=True):
            flat, r = divmod(flat, size)
            key.append(uniques[r])
        keys.append(tuple(reversed(key)))
    order = sorted(range(len(keys)), key=keys.__getitem__)
    rank = np.empty(len(keys), np.int64)
    rank[order] = np.arange(len(keys))
    if lookup is not None and len(present) == total and (rank == np.arange(total)).all():
        group_codes = combined  # codes already are the sorted group indices
    elif lookup is not None:
        lookup[present] = rank
        group_codes = lookup[combined]
    else:
        group_codes = rank[np.searchsorted(present, combined)]
    return group_codes, tuple(keys[i] for i in order)


def marginal_keys(attributes: tuple[str, ...], groups: Sequence[GroupKey], wanted: Sequence[str]) -> list[GroupKey]:
    """Each group's key cut down to the attributes ``wanted``: the keys of a table's marginal
    (counts, class and moments tables alike). An attribute the table lacks is an InputError."""
    missing = [a for a in wanted if a not in attributes]
    if missing:
        raise InputError(f"attribute {missing[0]!r} is not in the table; it has {list(attributes)}")
    positions = [attributes.index(a) for a in wanted]
    return [tuple(k[p] for p in positions) for k in groups]


def sum_by_key(keys: Sequence[GroupKey], *arrays: np.ndarray) -> tuple[tuple[GroupKey, ...], list[np.ndarray]]:
    """The rows of each array summed per distinct key (exact for integers), keys sorted."""
    distinct = sorted(set(keys))
    index = {k: i for i, k in enumerate(distinct)}
    rows = [index[k] for k in keys]
    sums = []
    for a in arrays:
        total = np.zeros((len(distinct), *a.shape[1:]), a.dtype)
        np.add.at(total, rows, a)
        sums.append(total)
    return tuple(distinct), sums
