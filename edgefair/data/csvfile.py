"""CSV files with a header row, streamed in chunks and hashed in the same single read.

The raw bytes (gzip-compressed or not) pass through a SHA-256 on their way to the parser,
so a report can name the file's hash without reading it a second time.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgefair.data.columns import DEFAULT_CHUNK_ROWS, Chunk, show_name
from edgefair.errors import InputError


class _HashingReader(io.RawIOBase):
    """A read-only byte stream that feeds every byte it passes on into a hash."""

    def __init__(self, raw: Any, digest: Any) -> None:
        self._raw, self._digest = raw, digest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n: int = self._raw.readinto(buffer)
        if n:
            self._digest.update(memoryview(buffer)[:n])
        return n

    def drain(self) -> None:
        """Hash what the parser did not need (trailing bytes), so the hash covers the file."""
        while block := self._raw.read(1 << 20):
            self._digest.update(block)

    def close(self) -> None:
        self._raw.close()
        super().close()


BOM = b"\xef\xbb\xbf"


def _check_path(path: Path) -> None:
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected a CSV file")


def _open_binary(path: Path, raw: Any) -> Any:
    return gzip.GzipFile(fileobj=raw, mode="rb") if path.suffix == ".gz" else io.BufferedReader(raw)


def iter_csv(
    path: str | Path,
    columns: Sequence[str] | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    on_done: Callable[[str], None] | None = None,
) -> Iterator[Chunk]:
    """Stream a CSV (or .gz) as string columns; ``on_done(sha256)`` once every byte is read.

    The text is UTF-8 (a leading byte-order mark is dropped). Every chunk holds rows from
    consecutive lines of the file, so ``chunk.first_line + i`` is the line of row ``i``."""
    p = Path(path)
    _check_path(p)
    digest = hashlib.sha256()
    raw = _HashingReader(p.open("rb"), digest)
    try:
        binary: Any = _open_binary(p, raw)
        with raw, binary, io.TextIOWrapper(binary, encoding="utf-8-sig", newline="") as text:
            try:
                yield from _parse(csv.reader(text), str(p), columns, chunk_rows)
            except UnicodeDecodeError as exc:
                # the decoder runs ahead of the parser: find the line holding the bad byte
                raise InputError(_utf8_error(p, exc)) from None
            raw.drain()
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise InputError(f"{p}: not a readable gzip file ({exc})") from None
    if on_done is not None:
        on_done(digest.hexdigest())


def _utf8_error(path: Path, exc: UnicodeDecodeError) -> str:
    """Where the first byte that is not UTF-8 is: line and column (a newline byte is never
    part of a multi-byte UTF-8 character, so lines can be decoded one at a time)."""
    with path.open("rb") as f, _open_binary(path, f) as binary:
        for number, line in enumerate(binary, 1):
            if number == 1 and line.startswith(BOM):
                line = line[len(BOM) :]
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as bad:
                byte = line[bad.start : bad.start + 1].hex()
                return (
                    f"{path}, line {number}: byte 0x{byte} at column {bad.start + 1} is not UTF-8; expected UTF-8 text"
                )
    return f"{path}: not UTF-8 text ({exc.reason}); expected UTF-8"


def _header(reader: Any, source: str, columns: Sequence[str] | None) -> tuple[list[str], list[int], int]:
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise InputError(f"{source}: file is empty, expected a header row") from None
    except csv.Error as exc:
        raise InputError(f"{source}, line 1: not a readable CSV header ({exc})") from None
    if not any(header):
        raise InputError(f"{source}, line 1: the header row is empty, expected column names")
    for i, h in enumerate(header):
        if not h:
            raise InputError(
                f"{source}, line 1: column {i + 1} of {len(header)} in the header has no name; every column needs one"
            )
    if len(set(header)) != len(header):
        dup = next(h for h in header if header.count(h) > 1)
        raise InputError(f"{source}, line 1: column {dup!r} appears twice in the header (after trimming spaces)")
    wanted = list(header) if columns is None else list(columns)
    for name in wanted:
        if name not in header:
            shown = ", ".join(map(show_name, header[:20])) + (
                f" (and {len(header) - 20} more)" if len(header) > 20 else ""
            )
            raise InputError(f"{source}: no column {name!r}; columns are: {shown}")
    return wanted, [header.index(n) for n in wanted], len(header)


def _parse(reader: Any, source: str, columns: Sequence[str] | None, chunk_rows: int) -> Iterator[Chunk]:
    wanted, positions, width = _header(reader, source, columns)
    rows: list[list[str]] = []
    previous = reader.line_num  # the last line the reader consumed (a quoted header may span lines)
    first_line = previous + 1  # line of rows[0]; rows always come from consecutive lines
    started = False
    try:
        for row in reader:
            line, previous = previous + 1, reader.line_num  # a quoted field may span lines
            if not row:  # a blank line
                continue
            if len(row) != width:
                raise InputError(f"{source}, line {line}: {len(row)} fields, expected {width} (as in the header)")
            if rows and (line != first_line + len(rows) or len(rows) == chunk_rows):
                yield _chunk(wanted, rows, first_line, source)
                started, rows = True, []
            if not rows:
                first_line = line
            rows.append([row[i] for i in positions])
    except csv.Error as exc:
        raise InputError(f"{source}, line {reader.line_num}: unreadable CSV ({exc})") from None
    if rows or not started:
        yield _chunk(wanted, rows, first_line, source)


def _chunk(names: list[str], rows: list[list[str]], first_line: int, source: str) -> Chunk:
    if rows:
        cols = list(zip(*rows, strict=True))
        data = {n: np.array([v.strip() for v in c], dtype=object) for n, c in zip(names, cols, strict=True)}
    else:
        data = {n: np.array([], dtype=object) for n in names}
    return Chunk(data, first_line, source)
