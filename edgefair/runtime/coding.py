"""Sensitive values to group codes: the part of the counters that reads each row's attributes.

Each attribute has a dictionary of values (known values first, then values seen in the field
up to a cap, then an explicit "other" group). A lookup table remembers every string already
resolved, so a batch of seen values is one C-speed lookup per row. ``known_codes`` is the
pre-inference path: it codes rows whose values were all seen before, so FairSession can read
the caller's sensitive strings while they are still in the cache, before the model evicts them.
An app that holds its sensitive columns dictionary-encoded (pandas' Categorical, Arrow's
dictionary arrays) passes them as ``Coded``: a batch then costs one small table per attribute
and one numpy take, not a lookup per row.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter, itemgetter
from typing import Any

import numpy as np

from edgefair.errors import InputError

OTHER = "other"  # values outside the known (or learned) set
UNKNOWN = "unknown"  # the attribute was not given at all
MAX_VALUES_PER_ATTRIBUTE = 16  # per attribute without known values; more go to 'other'
MAX_LOOKUP = 4096  # strings remembered per attribute beyond its groups (values resolved to 'other')
MAX_TABLES = 64  # Coded category tuples remembered per attribute (and joint tables in all)
MAX_JOINT = 65_536  # entries of a joint table (all attributes Coded): larger, one take per attribute
_categories, _codes, _first = attrgetter("categories"), attrgetter("codes"), itemgetter(0)


@dataclass(frozen=True, eq=False)
class Coded:
    """A dictionary-encoded sensitive column: row i's value is ``categories[codes[i]]``, and
    code -1 means not given (as pandas.Categorical and its ``codes``).

        fs.run(inputs, sensitive={"race": Coded(tuple(cat.categories), cat.codes)})

    Checked once, here: categories are distinct strings, codes a 1-D integer array in
    [-1, len(categories)); the codes are copied and made read-only, so a call needs no check.
    Counts are exactly those of passing the strings themselves."""

    categories: tuple[str, ...]
    codes: np.ndarray

    def __post_init__(self) -> None:
        categories = tuple(self.categories) if not isinstance(self.categories, tuple) else self.categories
        for c in categories:
            if not isinstance(c, str):
                raise InputError(f"Coded categories must be strings; got {type(c).__name__} {c!r}")
        if len(set(categories)) != len(categories):
            raise InputError(f"Coded categories repeat a value: {list(categories)[:10]}")
        codes = np.array(self.codes, copy=True)
        if codes.ndim != 1 or codes.dtype.kind not in "iu":
            raise InputError(f"Coded codes must be a 1-D integer array; got {codes.dtype} of shape {list(codes.shape)}")
        if codes.size and (int(codes.min()) < -1 or int(codes.max()) >= len(categories)):
            raise InputError(
                f"Coded codes must lie in [-1, {len(categories)}) for {len(categories)} categories; "
                f"got {int(codes.min())}..{int(codes.max())}"
            )
        codes.flags.writeable = False
        object.__setattr__(self, "categories", categories)
        object.__setattr__(self, "codes", codes)

    def __len__(self) -> int:
        return len(self.codes)

    def values(self) -> list[str | None]:
        """The column as plain values (None where not given): what the careful path reads."""
        categories = self.categories
        return [categories[c] if c >= 0 else None for c in self.codes.tolist()]


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
        # Coded category tuple -> code of each category, then 'unknown' for code -1 (complete tables only)
        self._tables: list[dict[tuple[str, ...], np.ndarray]] = [{} for _ in self.attributes]
        # every attribute Coded: categories of each -> flat group code of every code combination
        self._joint: dict[tuple[tuple[str, ...], ...], np.ndarray] = {}
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
            columns = [c.values() if isinstance(c, Coded) else c for c in columns]
            if len(sensitive) == len(self.attributes):
                for c in columns:
                    if len(c) != rows:
                        break
                else:
                    return columns
        except (KeyError, TypeError, IndexError):
            pass
        if not isinstance(sensitive, Mapping):
            raise InputError(
                f"sensitive must map each attribute to its values (a dict), got {type(sensitive).__name__}"
            )
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
            if type(columns[0]) is Coded:
                known = self._known_coded(columns)
                if known is not None:
                    return known
            rows = len(columns[0])
            if rows == 1:
                flat = 0
                for a, column in enumerate(columns):
                    if isinstance(column, Coded):
                        table = self._table(a, column)
                        if table is None:
                            return None
                        flat = flat * self._sizes[a] + int(table[column.codes[0]])
                        continue
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
                if isinstance(column, Coded):
                    table = self._table(a, column)
                    if table is None:
                        return None
                    codes.append(table[column.codes])  # code -1: the table's last entry, 'unknown'
                    continue
                if isinstance(column, np.ndarray):
                    if column.dtype.kind not in "OU" or column.ndim != 1:
                        return None
                    column = column.tolist()
                codes.append(self._seen(a, column))
            return codes, rows
        except (KeyError, TypeError, ValueError, IndexError):  # not a mapping of names: the careful path says so
            return None

    def _known_coded(self, columns: list[Any]) -> tuple[Any, int] | None:
        """``known_codes`` when the first column is Coded: with all of them Coded, one take in a
        joint table gives each row's flat group code (an int64 array, or an int for one row)."""
        try:
            codes = tuple(map(_codes, columns))
        except AttributeError:  # not all Coded: one take per attribute
            return None
        lengths = set(map(len, codes))
        if len(lengths) != 1:
            return None
        rows = lengths.pop()
        joint = self._joint.get(tuple(map(_categories, columns)))
        if joint is None:
            joint = self._joint_table(columns)
            if joint is None:
                return None
        if rows == 1:
            return joint.item(tuple(map(_first, codes))), 1
        return joint[codes], rows  # code -1 on an axis: its last entry, 'unknown'

    def _joint_table(self, columns: list[Any]) -> np.ndarray | None:
        tables = []
        for a, column in enumerate(columns):
            table = self._table(a, column) if type(column) is Coded else None
            if table is None:
                return None
            tables.append(table)
        if int(np.prod([len(t) for t in tables])) > MAX_JOINT:
            return None
        joint = tables[0].astype(np.int64)  # entry [i, j, ...]: the flat code of categories i, j, ...
        for a in range(1, len(tables)):
            joint = joint[..., None] * self._sizes[a] + tables[a]
        # only complete tables are cached (every category seen), and only they stay valid
        cached = all(c.categories in self._tables[a] for a, c in enumerate(columns))
        if cached and len(self._joint) < MAX_TABLES:
            self._joint[tuple(map(_categories, columns))] = joint
        return joint

    def _table(self, attr: int, column: Coded) -> np.ndarray | None:
        """Each category's code, then 'unknown' (for code -1); None when a category present in
        the rows was never seen and the attribute still learns (the careful path learns it in
        row order, as it would the strings). Categories absent from the rows do not matter."""
        table = self._tables[attr].get(column.categories)
        if table is not None:
            return table
        lookup = self._lookup[attr]
        found = [1 if c == "" else lookup.get(c) for c in column.categories]  # "": 'unknown', as a string
        complete = None not in found
        if not complete:
            learns = self._learn[attr] and len(self._values[attr]) < self.max_values + 2
            if learns:  # codes for absent categories are never read: a placeholder, not learned
                present = np.bincount(column.codes.astype(np.int64) + 1, minlength=len(found) + 1)[1:]
                if any(present[i] for i, code in enumerate(found) if code is None):
                    return None
                found = [0 if code is None else code for code in found]
            else:  # known values (or the cap is reached): resolving a category learns nothing
                with self._lock:
                    pairs = zip(column.categories, found, strict=True)
                    found = [self._code(attr, c) if code is None else code for c, code in pairs]
                complete = True
        table = np.array([*found, 1], np.uint8 if self._sizes[attr] <= 256 else np.int64)
        if complete and len(self._tables[attr]) < MAX_TABLES:
            self._tables[attr][column.categories] = table
        return table

    def flat(self, codes: Sequence[np.ndarray]) -> np.ndarray:
        """Per-attribute code arrays as one flat group code per row (int64)."""
        out = codes[0].astype(np.int64)
        for a in range(1, len(codes)):
            out *= self._sizes[a]
            out += codes[a]
        return out
