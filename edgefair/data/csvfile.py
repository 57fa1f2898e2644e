"""CSV files with a header row, streamed in chunks and hashed in the same single read.

The raw bytes (gzip-compressed or not) pass through a SHA-256 on their way to the parser,
so a report can name the file's hash without reading it a second time.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgefair.data.columns import DEFAULT_CHUNK_ROWS, Chunk
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


def _check_path(path: Path) -> None:
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected a CSV file")


def iter_csv(
    path: str | Path,
    columns: Sequence[str] | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    on_done: Callable[[str], None] | None = None,
) -> Iterator[Chunk]:
    """Stream a CSV (or .gz) as string columns; ``on_done(sha256)`` once every byte is read."""
    p = Path(path)
    _check_path(p)
    digest = hashlib.sha256()
    raw = _HashingReader(p.open("rb"), digest)
    binary: Any = gzip.GzipFile(fileobj=raw, mode="rb") if p.suffix == ".gz" else io.BufferedReader(raw)
    with raw, binary, io.TextIOWrapper(binary, encoding="utf-8", newline="") as text:
        yield from _parse(csv.reader(text), str(p), columns, chunk_rows)
        raw.drain()
    if on_done is not None:
        on_done(digest.hexdigest())


def _header(reader: Any, source: str, columns: Sequence[str] | None) -> tuple[list[str], list[int], int]:
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise InputError(f"{source}: file is empty, expected a header row") from None
    except (csv.Error, UnicodeDecodeError) as exc:
        raise InputError(f"{source}, line 1: not a readable CSV header ({exc})") from None
    if len(set(header)) != len(header):
        dup = next(h for h in header if header.count(h) > 1)
        raise InputError(f"{source}: column {dup!r} appears twice in the header")
    wanted = list(header) if columns is None else list(columns)
    for name in wanted:
        if name not in header:
            raise InputError(f"{source}: no column {name!r}; columns are: {', '.join(header)}")
    return wanted, [header.index(n) for n in wanted], len(header)


def _parse(reader: Any, source: str, columns: Sequence[str] | None, chunk_rows: int) -> Iterator[Chunk]:
    wanted, positions, width = _header(reader, source, columns)
    rows: list[list[str]] = []
    first_line = 2
    try:
        for row in reader:
            if len(row) != width:
                if not row:
                    continue
                raise InputError(f"{source}, line {reader.line_num}: {len(row)} fields, expected {width}")
            rows.append([row[i] for i in positions])
            if len(rows) == chunk_rows:
                yield _chunk(wanted, rows, first_line, source)
                first_line = reader.line_num + 1
                rows = []
    except (csv.Error, UnicodeDecodeError) as exc:
        raise InputError(f"{source}, line {reader.line_num}: unreadable CSV ({exc})") from None
    if rows or first_line == 2:
        yield _chunk(wanted, rows, first_line, source)


def _chunk(names: list[str], rows: list[list[str]], first_line: int, source: str) -> Chunk:
    if rows:
        cols = list(zip(*rows, strict=True))
        data = {n: np.array([v.strip() for v in c], dtype=object) for n, c in zip(names, cols, strict=True)}
    else:
        data = {n: np.array([], dtype=object) for n in names}
    return Chunk(data, first_line, source)
