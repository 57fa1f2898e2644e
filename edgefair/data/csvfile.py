"""CSV files with a header row, streamed in chunks and hashed in the same single read.

The raw bytes (gzip-compressed or not) pass through a SHA-256 on their way to the parser,
so a report can name the file's hash without reading it a second time.

Two parsers give the same chunks: Python's ``csv`` module (always there), and, with the
``fast`` extra (pyarrow), pyarrow's C parser for every run of ``chunk_rows`` lines that is
plain: no quotes, no blank lines, no lone carriage returns, no NUL, valid UTF-8, lines
under the csv module's field limit. A run that is not plain, and everything after it, goes
to the ``csv`` module (so awkward files are read exactly as before, just slower), which
also names the line of any error. Values are stripped per distinct value and share one
string object per distinct value in a chunk, which makes onnxruntime's string inputs cheap.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from io import BufferedReader
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


READERS = ("auto", "arrow", "python")


def arrow_available() -> bool:
    """Whether the fast reader can run (the ``fast`` extra: pyarrow)."""
    try:
        import pyarrow.csv  # noqa: F401
    except ImportError:
        return False
    return True


def iter_csv(
    path: str | Path,
    columns: Sequence[str] | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    on_done: Callable[[str], None] | None = None,
    reader: str = "auto",
) -> Iterator[Chunk]:
    """Stream a CSV (or .gz) as string columns; ``on_done(sha256)`` once every byte is read.

    The text is UTF-8 (a leading byte-order mark is dropped). Every chunk holds rows from
    consecutive lines of the file, so ``chunk.first_line + i`` is the line of row ``i``.
    ``reader``: ``"arrow"`` (pyarrow's parser where the text is plain, see the module
    docstring), ``"python"`` (the csv module throughout) or ``"auto"`` (arrow when pyarrow
    is installed); every reader gives the same chunks, errors and hash."""
    if reader not in READERS:
        raise InputError(f"reader {reader!r} is not one of {', '.join(READERS)}")
    if chunk_rows < 1:
        raise InputError(f"chunk_rows must be positive, got {chunk_rows}")
    use_arrow = reader == "arrow" or (reader == "auto" and arrow_available())
    p = Path(path)
    _check_path(p)
    digest = hashlib.sha256()
    raw = _HashingReader(p.open("rb"), digest)
    try:
        binary: Any = _open_binary(p, raw)
        with raw, binary:
            try:
                if use_arrow:
                    yield from _arrow_chunks(binary, str(p), columns, chunk_rows)
                else:
                    yield from _python_chunks(binary, str(p), columns, chunk_rows)
            except UnicodeDecodeError as exc:
                # the decoder runs ahead of the parser: find the line holding the bad byte
                raise InputError(_utf8_error(p, exc)) from None
            raw.drain()
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise InputError(f"{p}: not a readable gzip file ({exc})") from None
    if on_done is not None:
        on_done(digest.hexdigest())


def _text(binary: Any, encoding: str) -> io.TextIOWrapper:
    return io.TextIOWrapper(binary, encoding=encoding, newline="")


READ_BYTES = 1 << 22  # bytes asked of the stream at a time by the fast reader


def _plain(block: bytes, ends: np.ndarray) -> bool:
    """Whether pyarrow without quoting reads these whole lines (their line breaks at ``ends``)
    exactly as the csv module does: no quotes, NUL, blank lines or lone CRs, valid UTF-8, each
    line under the field limit, and no byte-order mark at the start (pyarrow would skip it)."""
    if b'"' in block or b"\0" in block or b"\n\n" in block or block.startswith((b"\n", b"\r", BOM)):
        return False
    if b"\r" in block and (b"\n\r\n" in block or block.count(b"\r") != block.count(b"\r\n")):
        return False
    if not block.isascii():
        try:
            block.decode("utf-8")
        except UnicodeDecodeError:
            return False
    limit = csv.field_size_limit()  # a longer line may hold a field the csv module refuses
    if len(block) < limit:
        return True
    starts = np.concatenate(([0], ends + 1))
    return int(np.diff(np.append(starts, len(block))).max()) < limit


def _cut(buffer: bytearray, binary: Any, lines: int) -> tuple[int, np.ndarray]:
    """Read until ``buffer`` holds ``lines`` whole lines (or the stream ends): the end of the
    last of them (of everything, at the end) and the positions of the line breaks before it."""
    have = buffer.count(b"\n")
    while have < lines:
        more = binary.read(READ_BYTES)
        if not more:
            return len(buffer), np.flatnonzero(np.frombuffer(buffer, np.uint8) == 10)
        have += more.count(b"\n")
        buffer += more
    ends = np.flatnonzero(np.frombuffer(buffer, np.uint8) == 10)[:lines]
    return int(ends[-1]) + 1, ends


def _arrow_chunks(binary: Any, source: str, columns: Sequence[str] | None, chunk_rows: int) -> Iterator[Chunk]:
    buffer = bytearray()
    end, ends = _cut(buffer, binary, 1)
    head = bytes(buffer[:end])
    if head.startswith(BOM):
        head, ends = head[len(BOM) :], ends - len(BOM)
    # an empty, quoted or otherwise odd header: the csv module reads the whole file
    if not head.strip(b"\r\n") or not _plain(head, ends[ends < len(head)]):
        yield from _python_chunks(BufferedReader(_Prefixed(bytes(buffer), binary)), source, columns, chunk_rows)
        return
    layout = _Layout(*_header(csv.reader([head.decode("utf-8")]), source, columns))
    del buffer[:end]
    line, started = 2, False  # the line of the next row; whether a chunk was yielded
    while True:
        end, ends = _cut(buffer, binary, chunk_rows)
        block = bytes(buffer[:end])
        if not block:  # the stream ended
            if not started:
                yield _chunk(layout.wanted, [], line, source)  # a header and no rows
            return
        table = _arrow_table(block, layout) if _plain(block, ends) else None
        if table is None:  # from here on the csv module reads, and names any error's line
            rest = BufferedReader(_Prefixed(bytes(buffer), binary))
            yield from _rows(csv.reader(_text(rest, "utf-8")), source, layout, chunk_rows, line - 1, started)
            return
        rows = table.num_rows
        yield Chunk({n: _strings(table.column(i)) for i, n in enumerate(layout.wanted)}, line, source)
        line, started = line + rows, True
        del buffer[:end]


def _arrow_table(block: bytes, layout: _Layout) -> Any:
    """The wanted columns of plain lines as strings, or None where pyarrow refuses them
    (a row of another width: the csv module then names its line)."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    names = [f"c{i}" for i in range(layout.width)]
    wanted = [names[i] for i in layout.positions]
    try:
        return pcsv.read_csv(
            pa.py_buffer(block),
            read_options=pcsv.ReadOptions(column_names=names),
            parse_options=pcsv.ParseOptions(quote_char=False, ignore_empty_lines=False),
            convert_options=pcsv.ConvertOptions(
                column_types=dict.fromkeys(wanted, pa.string()),
                include_columns=wanted,
                strings_can_be_null=False,
                null_values=[],
            ),
        )
    except pa.ArrowInvalid:
        return None


def _strings(column: Any) -> np.ndarray:
    """A column as an object array of stripped strings, one string object per distinct value."""
    encoded = column.combine_chunks().dictionary_encode()
    distinct = np.array([v.strip() for v in encoded.dictionary.to_pylist()], dtype=object)
    return distinct[encoded.indices.to_numpy(zero_copy_only=False)]


def _python_chunks(binary: Any, source: str, columns: Sequence[str] | None, chunk_rows: int) -> Iterator[Chunk]:
    text = _text(binary, "utf-8-sig")
    reader = csv.reader(text)
    layout = _Layout(*_header(reader, source, columns))
    yield from _rows(reader, source, layout, chunk_rows, 0, False)
    text.detach()  # the caller closes ``binary`` after hashing what is left of it


class _Prefixed(io.RawIOBase):
    """Bytes already read, then the rest of a stream: where the csv module takes over."""

    def __init__(self, prefix: bytes, rest: Any) -> None:
        self._prefix, self._rest = memoryview(prefix), rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._prefix:
            n = min(len(buffer), len(self._prefix))
            buffer[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        data = self._rest.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


@dataclass(frozen=True)
class _Layout:
    wanted: list[str]  # column names, in the order asked for
    positions: list[int]  # their places in a row
    width: int  # fields per row (as in the header)


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


def _rows(reader: Any, source: str, layout: _Layout, chunk_rows: int, offset: int, started: bool) -> Iterator[Chunk]:
    """Chunks from a csv reader whose line 0 is the file's line ``offset`` (the last line
    read before it); ``started``: chunks were yielded before, so an empty rest yields none."""
    positions, width = layout.positions, layout.width
    rows: list[list[str]] = []
    previous = offset + reader.line_num  # the last line the reader consumed (a quoted header may span lines)
    first_line = previous + 1  # line of rows[0]; rows always come from consecutive lines
    try:
        for row in reader:
            line, previous = previous + 1, offset + reader.line_num  # a quoted field may span lines
            if not row:  # a blank line
                continue
            if len(row) != width:
                raise InputError(f"{source}, line {line}: {len(row)} fields, expected {width} (as in the header)")
            if rows and (line != first_line + len(rows) or len(rows) == chunk_rows):
                yield _chunk(layout.wanted, rows, first_line, source)
                started, rows = True, []
            if not rows:
                first_line = line
            rows.append([row[i] for i in positions])
    except csv.Error as exc:
        raise InputError(f"{source}, line {offset + reader.line_num}: unreadable CSV ({exc})") from None
    if rows or not started:
        yield _chunk(layout.wanted, rows, first_line, source)


def _chunk(names: list[str], rows: list[list[str]], first_line: int, source: str) -> Chunk:
    if rows:
        cols = list(zip(*rows, strict=True))
        data = {n: np.array([v.strip() for v in c], dtype=object) for n, c in zip(names, cols, strict=True)}
    else:
        data = {n: np.array([], dtype=object) for n in names}
    return Chunk(data, first_line, source)
