"""Named columns in memory: chunks of a source, an in-memory Dataset, and typed reads.

Columns may arrive as strings (CSV); ``numeric`` and ``binary_column`` convert one when a
caller needs numbers and name the source, line and column of the first bad value.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from edgefair.errors import InputError

MISSING = ("", "?", "NA", "nan", "NaN")  # the one list of missing-value markers
DEFAULT_CHUNK_ROWS = 65536


@dataclass(frozen=True)
class Chunk:
    """Consecutive rows of a data source: columns by name, and where they started."""

    columns: dict[str, np.ndarray]
    first_line: int  # 1-based line in the file of the chunk's first row (header is line 1)
    source: str

    @property
    def rows(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0


@dataclass(frozen=True)
class Dataset:
    """A labelled data set held in memory, by column."""

    columns: dict[str, np.ndarray]
    source: str
    sha256: str
    rows: int = field(default=0)

    def chunks(self, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[Chunk]:
        for start in range(0, max(self.rows, 1), chunk_rows):
            cols = {k: v[start : start + chunk_rows] for k, v in self.columns.items()}
            yield Chunk(cols, start + 2, self.source)

    def column(self, name: str) -> np.ndarray:
        return require_column(self.columns, name, self.source)


def require_column(columns: Mapping[str, np.ndarray], name: str, source: str) -> np.ndarray:
    if name not in columns:
        known = ", ".join(show_name(str(c)) for c in list(columns)[:20])
        raise InputError(f"{source}: no column {name!r}; columns are: {known}")
    return columns[name]


def show_name(name: str) -> str:
    """A column name as a message shows it: as is, or quoted if it has a line break or
    another unprintable character (an error stays one line)."""
    return name if name.isprintable() else repr(name)


def is_missing(text: npt.NDArray[np.str_]) -> npt.NDArray[np.bool_]:
    """Which strings are missing-value markers (after stripping white space)."""
    return np.isin(np.char.strip(text), MISSING)


def _infinite(value: Any) -> bool:
    """An infinity, as a float or as the text a CSV holds ('inf', '-Infinity', ...)."""
    try:
        return bool(np.isinf(float(value)))
    except (TypeError, ValueError):
        return False


def refuse_missing_scored_nan(
    outputs: Sequence[npt.ArrayLike],
    feeds: Mapping[str, np.ndarray],
    columns: Mapping[str, np.ndarray],
    source: str,
    lines: int | npt.NDArray[np.int64],
    model: str,
) -> None:
    """A NaN output on a row with a missing feature is the data's doing: InputError naming
    the file line and column of the first such row. ``outputs`` are what ``model`` computed
    from ``feeds`` (built from ``columns``), row by row; ``lines`` gives each row's line in
    ``source`` (or the first row's, the rest following). A model that makes NaN by itself,
    or scores a missing value (a tree ensemble), is left to the caller."""
    rows = len(next(iter(feeds.values()))) if feeds else 0
    scored_nan = np.zeros(rows, bool)
    for out in outputs:
        arr = np.asarray(out)
        if arr.dtype.kind == "f" and len(arr) == rows:
            scored_nan |= np.isnan(arr.reshape(rows, -1)).any(axis=1)
    fed_nan = np.zeros(rows, bool)
    for value in feeds.values():
        arr = np.asarray(value)
        if arr.dtype.kind == "f" and len(arr) == rows:
            fed_nan |= ~np.isfinite(arr.reshape(rows, -1)).all(axis=1)  # NaN, or an infinity
    for row in np.flatnonzero(scored_nan & fed_nan)[:1].tolist():
        line = lines + row if isinstance(lines, int) else int(lines[row])
        for name, values in columns.items():
            value = np.asarray(values)[row]
            text_missing = isinstance(value, str) and value.strip() in MISSING
            if text_missing or (isinstance(value, float | np.floating) and value != value):
                raise InputError(
                    f"{source}, line {line}, column {name!r}: missing value {value!r} "
                    f"reaches the model as NaN and {model} scores it NaN; fill or drop such rows"
                )
            if _infinite(value):
                raise InputError(
                    f"{source}, line {line}, column {name!r}: the value {value!r} is infinite and {model} "
                    "scores it NaN; fill or drop such rows"
                )


def text_as_float(values: np.ndarray) -> npt.NDArray[np.float64]:
    """Text as float64, missing markers as NaN; ValueError if a value is not a number.

    Strings are converted once per distinct value (a CSV chunk holds few: its fast reader
    shares one string object per value), which gives exactly what converting every row gives."""
    from edgefair.core.groups import factorize  # core is the layer below

    flat = values.reshape(-1)
    if flat.dtype.kind in "OU" and len(flat) > 64:
        codes, _ = factorize(flat)
        firsts = np.full(int(codes.max()) + 1, len(flat), np.int64)
        np.minimum.at(firsts, codes, np.arange(len(flat)))
        representatives = flat[firsts]
        if all(type(v) is str for v in representatives.tolist()):  # equal strings convert alike
            return _text_as_float(representatives)[codes].reshape(values.shape)
    return _text_as_float(values)


def _text_as_float(values: np.ndarray) -> npt.NDArray[np.float64]:
    text = values.astype(str)
    return np.where(is_missing(text), "nan", text).astype(np.float64)


def numeric(
    values: npt.ArrayLike, name: str, source: str, first_line: int = 2, allow_missing: bool = True
) -> npt.NDArray[np.float64]:
    """Column as float64; missing markers become NaN (or an error if not allowed)."""
    arr = np.asarray(values)
    if arr.dtype.kind in "iufb":
        out = arr.astype(np.float64)
    else:
        try:
            out = text_as_float(arr)
        except ValueError:
            text = arr.astype(str)
            filled = np.where(is_missing(text), "nan", text)
            for i, v in enumerate(filled.tolist()):
                try:
                    float(v)
                except ValueError:
                    raise InputError(
                        f"{source}, line {first_line + i}, column {name!r}: {_short(v)} is not a number"
                    ) from None
            raise InputError(f"{source}: column {name!r} holds values that are not numbers") from None
    if not allow_missing and np.isnan(out).any():
        i = int(np.argmax(np.isnan(out)))
        shown = f" ({_short(np.asarray(values)[i])})" if arr.dtype.kind not in "iufb" else ""
        raise InputError(f"{source}, line {first_line + i}, column {name!r}: missing value{shown}, expected a number")
    return out


def _short(value: object) -> str:
    text = repr(str(value))
    return text if len(text) <= 60 else text[:57] + "..."


def binary_column(values: npt.ArrayLike, name: str, source: str, first_line: int = 2) -> npt.NDArray[np.int64]:
    """A 0/1 column as int64; anything else names the file, line, column and value."""
    numbers = numeric(values, name, source, first_line, allow_missing=False)
    bad = (numbers != 0) & (numbers != 1)
    if bad.any():
        i = int(np.argmax(bad))
        raise InputError(f"{source}, line {first_line + i}, column {name!r}: {np.asarray(values)[i]!r} is not 0 or 1")
    return numbers.astype(np.int64)
