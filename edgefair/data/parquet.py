"""Parquet files: one file, a directory of ``.parquet`` files or a glob, read row group by
row group with only the columns asked for.

The files are taken in sorted path order and read as one table: ``chunks(start, stop)``
yields exactly ``chunk_rows`` rows per chunk (the last may be shorter) wherever the row
groups and files begin and end, so the rows are scored in the same batches as a CSV of
the same rows, and any row range can be read on its own (a Dask worker reads its range).

Values come out as the CSV reader gives them, so both give identical tables for the same
rows: text as object arrays of ``str`` with surrounding white space stripped (a null is
``""``), booleans as the text ``"True"``/``"False"``, integers as int64 and floats as
float64 (a null float is NaN; an integer column with a null in a chunk comes out as text
there, the null as ``""``, since int64 has no NaN). A float column with nulls used as a
sensitive attribute forms a ``nan`` group where the CSV path would refuse the empty value.
Other types (dates, decimals) are read as their text. Message line numbers count rows as a
CSV of the same rows would (row ``i`` of a file is line ``i + 2``).

pyarrow is imported only when a Parquet file is read: ``pip install 'edgefair[parquet]'``.
"""

from __future__ import annotations

import glob
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgefair.data.columns import DEFAULT_CHUNK_ROWS, Chunk, show_name
from edgefair.errors import InputError

SUFFIXES = (".parquet", ".parq", ".pq")


def pyarrow() -> tuple[Any, Any]:
    """``(pyarrow, pyarrow.parquet)``, or a one-line InputError naming the extra to install."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError("reading Parquet needs pyarrow: pip install 'edgefair[parquet]'") from None
    return pa, pq


def is_glob(text: str) -> bool:
    return any(c in text for c in "*?[")


def looks_like_parquet(data: str | Path) -> bool:
    """A ``.parquet`` path, a directory or a glob (which ``resolve`` gives to Parquet)."""
    path = Path(data)
    if path.suffix.lower() in SUFFIXES or path.is_dir():
        return True
    return not path.exists() and is_glob(str(data))


@dataclass(frozen=True)
class FileMeta:
    """What a file's footer says: its row groups' sizes and its columns (name, arrow type)."""

    path: str
    row_groups: tuple[int, ...]
    columns: tuple[tuple[str, str], ...]

    @property
    def rows(self) -> int:
        return sum(self.row_groups)

    @property
    def names(self) -> list[str]:
        return [n for n, _ in self.columns]

    def type_of(self, name: str) -> str | None:
        return dict(self.columns).get(name)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def _kind(arrow_type: str) -> str:
    """What a column becomes: int64, float64, bool (as text) or text."""
    t = arrow_type
    if t.startswith("dictionary<values="):
        t = t[len("dictionary<values=") :].split(",")[0]
    if t in ("bool",):
        return "bool"
    if t.startswith(("int", "uint")):
        return "int"
    if t in ("halffloat", "float", "double"):
        return "float"
    return "text"


def read_meta(path: str) -> FileMeta:
    _, pq = pyarrow()
    try:
        with pq.ParquetFile(path) as pf:
            md = pf.metadata
            groups = tuple(md.row_group(i).num_rows for i in range(md.num_row_groups))
            schema = pf.schema_arrow
            columns = tuple((f.name, str(f.type)) for f in schema)
    except OSError as exc:
        raise InputError(f"{path}: not a readable Parquet file ({_first_line(exc)})") from None
    except Exception as exc:  # pyarrow raises ArrowInvalid (a ValueError) and others for corrupt files
        raise InputError(f"{path}: not a readable Parquet file ({_first_line(exc)})") from None
    names = [n for n, _ in columns]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise InputError(f"{path}: column {show_name(dup)!r} appears twice in the schema")
    return FileMeta(path, groups, columns)


def expand(spec: str | Path) -> list[str]:
    """The files of a path, a directory (its ``*.parquet`` files) or a glob, sorted."""
    text = str(spec)
    path = Path(text)
    if path.is_file():
        return [text]
    if path.is_dir():
        found = sorted(str(p) for p in path.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)
        if not found:
            raise InputError(
                f"{path}: is a directory with no .parquet files; expected a CSV file, a Parquet file "
                "or a directory of Parquet files"
            )
        return found
    if is_glob(text):
        found = sorted(p for p in glob.glob(text) if Path(p).is_file())
        if not found:
            raise InputError(f"{text}: no file matches this pattern")
        return found
    raise InputError(f"{path}: no such file")


def check_columns(files: Sequence[FileMeta], columns: Sequence[str] | None, source: str) -> list[str]:
    """The columns to read, after checking that every file has them with one kind of type.

    With ``columns=None`` every file must have the first file's columns, in its order."""
    first = files[0]
    if columns is None:
        for f in files[1:]:
            if f.names != first.names:
                i = next((i for i, (a, b) in enumerate(zip(first.names, f.names, strict=False)) if a != b), None)
                i = min(len(first.names), len(f.names)) if i is None else i
                a = first.names[i] if i < len(first.names) else None
                b = f.names[i] if i < len(f.names) else None
                raise InputError(
                    f"{first.path} and {f.path} have different schemas: the first differing column is "
                    f"{show_name(str(a if a is not None else b))!r} (column {i + 1} is {a!r} in the first, "
                    f"{b!r} in the second)"
                )
        names = first.names
    else:
        names = list(dict.fromkeys(columns))
    for name in names:
        holders = [f for f in files if f.type_of(name) is not None]
        if not holders:
            shown = ", ".join(map(show_name, first.names[:20])) + (
                f" (and {len(first.names) - 20} more)" if len(first.names) > 20 else ""
            )
            raise InputError(f"{source}: no column {name!r}; columns are: {shown}")
        lacking = next((f for f in files if f.type_of(name) is None), None)
        if lacking is not None:
            raise InputError(f"{lacking.path}: no column {name!r} (needed; {holders[0].path} has it)")
        base = holders[0]
        for f in holders[1:]:
            a, b = base.type_of(name) or "", f.type_of(name) or ""
            if _kind(a) != _kind(b):
                raise InputError(
                    f"{base.path} and {f.path} have different schemas: "
                    f"column {name!r} is {a} in the first, {b} in the second"
                )
    return names


def _normalized(table: Any, names: Sequence[str], path: str) -> Any:
    """The table's columns cast to one type per kind (int64, float64, bool, large text)."""
    pa, _ = pyarrow()
    targets = {"int": pa.int64(), "float": pa.float64(), "bool": pa.bool_(), "text": pa.large_string()}
    out = {}
    for name in names:
        col = table.column(name)
        target = targets[_kind(str(col.type))]
        if col.type != target:
            try:
                col = col.cast(target)
            except Exception as exc:
                raise InputError(
                    f"{path}: column {name!r} is {col.type}, which edgefair cannot read as "
                    f"{'text' if target == pa.large_string() else target} ({_first_line(exc)})"
                ) from None
        out[name] = col
    return pa.table(out) if out else pa.table({})


def _numpy(col: Any) -> np.ndarray:
    """One normalized column as the CSV reader would give it (see the module docstring)."""
    pa, _ = pyarrow()
    if col.type == pa.float64():
        return np.asarray(col.to_numpy(), dtype=np.float64)
    if col.type == pa.int64() and col.null_count == 0:
        return np.asarray(col.to_numpy(), dtype=np.int64)
    if col.type == pa.bool_():
        return np.array(["" if v is None else str(v) for v in col.to_pylist()], dtype=object)
    if col.type == pa.int64():
        return np.array(["" if v is None else str(v) for v in col.to_pylist()], dtype=object)
    return np.array(["" if v is None else v.strip() for v in col.to_pylist()], dtype=object)


def read_range(
    files: Sequence[FileMeta],
    names: Sequence[str],
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    start: int = 0,
    stop: int | None = None,
    source: str = "data",
    first_row: int = 0,
) -> Iterator[Chunk]:
    """Rows ``start:stop`` of the files taken as one table, in chunks of ``chunk_rows`` rows
    (counted from ``start``), reading only the row groups that overlap and only ``names``.
    ``first_row`` is the row number of ``files[0]``'s first row when ``files`` are a part of a
    longer list (``start`` and ``stop`` count in that list). An empty range yields one empty
    chunk, as an empty CSV does."""
    _, pq = pyarrow()
    total = first_row + sum(f.rows for f in files)
    stop = total if stop is None else min(stop, total)
    pieces: list[tuple[str, int, Any]] = []  # (file, row in the file of the piece's first row, table)
    held = 0
    chunk_start = start
    offset = first_row  # row of the current row group's first row
    yielded = False
    for f in files:
        file_start = offset
        if offset + f.rows <= start or offset >= stop:
            offset += f.rows
            continue
        try:
            with pq.ParquetFile(f.path) as pf:
                for g, n in enumerate(f.row_groups):
                    lo, hi = offset, offset + n
                    offset = hi
                    if hi <= start or n == 0 or lo >= stop:
                        continue
                    try:
                        table = pf.read_row_group(g, columns=list(names))
                    except Exception as exc:
                        raise InputError(f"{f.path}: row group {g} is not readable ({_first_line(exc)})") from None
                    table = _normalized(table, names, f.path)
                    a, b = max(start, lo) - lo, min(stop, hi) - lo
                    while a < b:
                        take = min(chunk_rows - held, b - a)
                        pieces.append((f.path, lo - file_start + a, table.slice(a, take)))
                        held += take
                        a += take
                        if held == chunk_rows:
                            yield _chunk(pieces, names, chunk_start, source)
                            yielded, pieces, held = True, [], 0
                            chunk_start += chunk_rows
        except InputError:
            raise
        except Exception as exc:
            raise InputError(f"{f.path}: not a readable Parquet file ({_first_line(exc)})") from None
        offset = file_start + f.rows
    if pieces or not yielded:
        yield _chunk(pieces, names, chunk_start, source)


def _chunk(pieces: list[tuple[str, int, Any]], names: Sequence[str], chunk_start: int, source: str) -> Chunk:
    pa, _ = pyarrow()
    if not pieces:
        return Chunk({n: np.array([], dtype=object) for n in names}, chunk_start + 2, source)
    table = pa.concat_tables([t for _, _, t in pieces]) if len(pieces) > 1 else pieces[0][2]
    cols = {n: _numpy(table.column(n)) for n in names}
    paths = {p for p, _, _ in pieces}
    if len(paths) == 1:  # within one file: name the file and its row, as a CSV line number
        return Chunk(cols, pieces[0][1] + 2, pieces[0][0])
    return Chunk(cols, chunk_start + 2, source)


def arrow_chunks(table: Any, names: Sequence[str], chunk_rows: int, source: str) -> Iterator[Chunk]:
    """An in-memory arrow table (a Dask partition) in chunks, converted as files are."""
    table = _normalized(table, names, source)
    for start in range(0, max(table.num_rows, 1), chunk_rows):
        piece = table.slice(start, chunk_rows)
        yield _chunk([(source, start, piece)] if piece.num_rows else [], names, start, source)


def file_sha256(path: str) -> str:
    """The SHA-256 of one file's bytes: one sequential read."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            while block := fh.read(1 << 20):
                digest.update(block)
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({_first_line(exc)})") from None
    return digest.hexdigest()


def combined_sha256(hashes: Sequence[str]) -> str:
    """One file: its own SHA-256. Several: the SHA-256 of their hashes (hex, one a line) in
    order, so each file can be hashed on its own (in parallel, on Dask workers)."""
    if len(hashes) == 1:
        return hashes[0]
    return hashlib.sha256("".join(h + "\n" for h in hashes).encode()).hexdigest()


class ParquetFiles:
    """The files behind a Parquet path, directory or glob; footers read once, on first use."""

    def __init__(self, spec: str | Path) -> None:
        self.name = str(Path(spec)) if not is_glob(str(spec)) else str(spec)
        self.spec = str(spec)
        self._files: list[FileMeta] | None = None
        self._sha256: str | None = None

    def files(self) -> list[FileMeta]:
        if self._files is None:
            self._files = [read_meta(p) for p in expand(self.spec)]
        return self._files

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files())

    def columns(self, columns: Sequence[str] | None = None) -> list[str]:
        """The columns a read of ``columns`` (None: all) gives, checked over every file."""
        return check_columns(self.files(), columns, self.name)

    def chunks(
        self,
        columns: Sequence[str] | None = None,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
        start: int = 0,
        stop: int | None = None,
    ) -> Iterator[Chunk]:
        if chunk_rows < 1:
            raise InputError(f"chunk_rows must be at least 1, got {chunk_rows}")
        names = self.columns(columns)
        return read_range(self.files(), names, chunk_rows, start, stop, self.name)

    def sha256(self) -> str:
        """A hash over the bytes of every file, in order: ``combined_sha256`` of each file's
        SHA-256 (for one file, simply the file's SHA-256, as ``sha256sum`` prints it).

        One extra sequential read: unlike a CSV, a Parquet file cannot be hashed in the pass
        that reads it, because pyarrow reads only the needed column chunks of each row group
        (it seeks past the others), so the bytes it reads do not cover the file."""
        if self._sha256 is None:
            self._sha256 = combined_sha256([file_sha256(f.path) for f in self.files()])
        return self._sha256
