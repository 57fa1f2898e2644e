"""Rows to group codes: each sensitive attribute factorised, then their intersection.

Small-range integers go through a bincount; anything else through a dict of first
appearances. Groups come out sorted, so equal data gives equal tables in any order.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from edgefair.errors import InputError

GroupKey = tuple[str, ...]
IntArray = npt.NDArray[np.int64]


def factorize(values: npt.ArrayLike, what: str = "values") -> tuple[IntArray, list[str]]:
    """Codes 0..k-1 and the k distinct values as strings (order of first appearance)."""
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
    items = arr.tolist()
    index: dict[Any, int] = {}
    for v in dict.fromkeys(items):
        index[v] = len(index)
    codes = np.fromiter(map(index.__getitem__, items), dtype=np.int64, count=len(items))
    return codes, [str(v) for v in index]


def factorize_groups(
    sensitive: Mapping[str, npt.ArrayLike], length: int | None = None
) -> tuple[IntArray, tuple[GroupKey, ...]]:
    """Per-row group code over the intersection of every attribute, groups sorted."""
    names = list(sensitive)
    per_attr = []
    for name in names:
        codes, uniques = factorize(sensitive[name], f"sensitive attribute {name!r}")
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
