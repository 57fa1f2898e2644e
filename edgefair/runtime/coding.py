"""Sensitive values to group codes: the part of the counters that reads each row's attributes.

Each attribute has a dictionary of values (known values first, then values seen in the field
up to a cap, then an explicit "other" group). A lookup table remembers every string already
resolved, so a batch of seen values is one C-speed lookup per row. ``known_codes`` is the
pre-inference path: it codes rows whose values were all seen before, so FairSession can read
the caller's sensitive strings while they are still in the cache, before the model evicts them.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from operator import itemgetter
from typing import Any

import numpy as np

from edgefair.errors import InputError

OTHER = "other"  # values outside the known (or learned) set
UNKNOWN = "unknown"  # the attribute was not given at all
MAX_VALUES_PER_ATTRIBUTE = 16  # per attribute without known values; more go to 'other'
MAX_LOOKUP = 4096  # strings remembered per attribute beyond its groups (values resolved to 'other')


class GroupCoding:
    """Rows' sensitive values to flat group codes (mixed into Counters, which holds the lock)."""

    def _init_coding(
        self, attributes: Sequence[str], known_values: Mapping[str, Sequence[str]] | None, max_values: int
    ) -> int:
        """Set up the value dictionaries; returns the number of groups (all code combinations)."""
        if not attributes:
            raise InputError("at least one sensitive attribute is needed")
        self.attributes = tuple(attributes)
        self.max_values = max_values
        self._values: list[dict[str, int]] = []
        self._learn: list[bool] = []
        self._sizes: list[int] = []
        for a in self.attributes:
            values = [str(v) for v in (known_values or {}).get(a, ()) if str(v) not in (OTHER, UNKNOWN)]
            self._values.append({OTHER: 0, UNKNOWN: 1, **{v: i + 2 for i, v in enumerate(dict.fromkeys(values))}})
            self._learn.append(not values)  # no known values: learn up to max_values, then 'other'
            self._sizes.append(max_values + 2 if not values else len(self._values[-1]))
        # value -> code for the hot path: the group values above, plus strings already resolved
        # to 'other' or 'unknown' (codes never change once given), bounded
        self._lookup: list[dict[Any, int]] = [dict(t) for t in self._values]
        self._lock = threading.Lock()
        return int(np.prod(self._sizes))

    def _code(self, attr: int, value: Any) -> int:
        if value is None or (isinstance(value, float) and value != value) or value == "":
            return 1  # not given: 'unknown', never a learned group called "None" or "nan"
        table = self._values[attr]
        key = value if isinstance(value, str) else str(value)
        code = table.get(key)
        if code is None:
            if self._learn[attr] and len(table) < self.max_values + 2:
                code = len(table)
                table[key] = code
            else:
                code = 0
        lookup = self._lookup[attr]
        if isinstance(value, str) and len(lookup) < MAX_LOOKUP:  # only strings: 1, 1.0 and True hash alike
            lookup[value] = code
        return code

    def _slow_codes(self, attr: int, items: Sequence[Any]) -> list[int]:
        """Codes of values not all in the lookup (new, non-string or missing); learns under the lock."""
        lookup = self._lookup[attr]
        out = []
        with self._lock:
            for v in items:
                code = lookup.get(v) if isinstance(v, str) else None
                if code is None:
                    if isinstance(v, (list, tuple, dict, set, np.ndarray)):
                        name = self.attributes[attr]
                        raise InputError(
                            f"sensitive attribute {name!r} holds {type(v).__name__}s; expected one value per row"
                        )
                    code = self._code(attr, v)
                out.append(code)
        return out

    def _columns(self, sensitive: Mapping[str, Any], rows: int) -> list[Any]:
        """Each attribute's values, in order; names and lengths checked (one line naming the problem)."""
        try:
            columns = [sensitive[name] for name in self.attributes]
            if len(sensitive) == len(self.attributes):
                for c in columns:
                    if len(c) != rows:
                        break
                else:
                    return columns
        except (KeyError, TypeError):
            pass
        for name in self.attributes:
            if name not in sensitive:
                raise InputError(f"sensitive attribute {name!r} is missing; expected {list(self.attributes)}")
            values = sensitive[name]
            if not hasattr(values, "__len__") or isinstance(values, (str, bytes)):
                raise InputError(f"sensitive attribute {name!r} must be a list or array of {rows} values")
            if len(values) != rows:
                raise InputError(f"sensitive attribute {name!r} has {len(values)} values for {rows} rows")
        extra = set(sensitive) - set(self.attributes)
        raise InputError(f"unexpected sensitive attribute {sorted(extra)[0]!r}; expected {list(self.attributes)}")

    def group_code(self, sensitive: Mapping[str, Any]) -> int:
        """The group code of a single row (``sensitive`` holds one value per attribute)."""
        flat = 0
        for a, column in enumerate(self._columns(sensitive, 1)):
            value = column[0]
            code = self._lookup[a].get(value) if isinstance(value, str) else None
            if code is None:
                code = self._slow_codes(a, [value])[0]
            flat = flat * self._sizes[a] + code
        return flat

    def group_codes(self, sensitive: Mapping[str, Any], rows: int) -> np.ndarray:
        """Per-row group codes (numpy, for batches); checks names and lengths first."""
        return self.flat([self._column_codes(a, column) for a, column in enumerate(self._columns(sensitive, rows))])

    def _column_codes(self, attr: int, column: Any) -> np.ndarray:
        if isinstance(column, np.ndarray) and column.dtype.kind in "biu" and column.ndim == 1:
            # numbers: code each distinct value once, in order of first appearance (learning order)
            distinct, first, inverse = np.unique(column, return_index=True, return_inverse=True)
            order = np.argsort(first, kind="stable")
            codes = np.empty(len(distinct), np.int64)
            codes[order] = self._slow_codes(attr, distinct[order].tolist())
            return codes[inverse.reshape(-1)]
        items = column.tolist() if isinstance(column, np.ndarray) else list(column)
        try:
            return self._seen(attr, items).astype(np.int64, copy=False)
        except (KeyError, TypeError):  # a new, missing or non-string value (lists are unhashable)
            return np.array(self._slow_codes(attr, items), np.int64)

    def _seen(self, attr: int, items: Sequence[Any]) -> np.ndarray:
        """Codes of strings all seen before (KeyError or TypeError if not): one C-speed lookup
        per row, uint8 when the attribute's codes fit."""
        lookup = self._lookup[attr]
        found = itemgetter(*items)(lookup) if len(items) > 1 else tuple(map(lookup.__getitem__, items))
        return np.frombuffer(bytes(found), np.uint8) if self._sizes[attr] <= 256 else np.array(found, np.int64)

    def group_code_list(self, sensitive: Mapping[str, Any], rows: int) -> list[int]:
        """``group_codes`` as a plain list (cheaper for a few rows)."""
        flat: list[int] = []
        for a, column in enumerate(self._columns(sensitive, rows)):
            items = column.tolist() if isinstance(column, np.ndarray) else list(column)
            lookup = self._lookup[a]
            found = [lookup.get(v) if isinstance(v, str) else None for v in items]
            codes: list[int] = self._slow_codes(a, items) if None in found else found  # type: ignore[assignment]
            size = self._sizes[a]
            flat = codes if a == 0 else [f * size + c for f, c in zip(flat, codes, strict=True)]
        return flat

    def known_values(self) -> dict[str, list[str]]:
        """Every value each attribute can be counted under (bounded: safe as metric labels)."""
        with self._lock:
            return {a: list(t) for a, t in zip(self.attributes, self._values, strict=True)}

    def known_codes(self, sensitive: Mapping[str, Any]) -> tuple[Any, int] | None:
        """(codes, rows) when every row's values were seen before, else None (the careful path:
        new, missing or non-string values, wrong names or lengths). One row: the flat code as an
        int; a batch: one code array per attribute (``flat`` combines them). Learns nothing."""
        try:
            if len(sensitive) != len(self.attributes):
                return None
            columns = list(map(sensitive.__getitem__, self.attributes))
            rows = len(columns[0])
            if rows == 1:
                flat = 0
                for a, column in enumerate(columns):
                    if len(column) != 1 or isinstance(column, (str, bytes)):
                        return None
                    value = column[0]
                    if not isinstance(value, str):
                        return None
                    flat = flat * self._sizes[a] + self._lookup[a][value]
                return flat, 1
            codes = []
            for a, column in enumerate(columns):
                if len(column) != rows or isinstance(column, (str, bytes)):
                    return None
                if isinstance(column, np.ndarray):
                    if column.dtype.kind not in "OU" or column.ndim != 1:
                        return None
                    column = column.tolist()
                codes.append(self._seen(a, column))
            return codes, rows
        except (KeyError, TypeError, ValueError):
            return None

    def flat(self, codes: Sequence[np.ndarray]) -> np.ndarray:
        """Per-attribute code arrays as one flat group code per row (int64)."""
        out = codes[0].astype(np.int64)
        for a in range(1, len(codes)):
            out *= self._sizes[a]
            out += codes[a]
        return out
