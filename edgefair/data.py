"""Named columns from CSV files (streamed in chunks) and the bundled Adult data.

Columns arrive as strings; ``numeric`` converts one when a caller needs numbers and names
the file, line and column of the first value that is not a number. Adult (Becker and
Kohavi 1996, CC BY 4.0, see datasets/ADULT-README.md) ships gzipped inside the package.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import numpy.typing as npt

from edgefair.errors import InputError

ADULT_COLUMNS = (
    "age",
    "workclass",
    "fnlwgt",
    "education",
    "education_num",
    "marital_status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "capital_gain",
    "capital_loss",
    "hours_per_week",
    "native_country",
    "income",
)
ADULT_NUMERIC = ("age", "fnlwgt", "education_num", "capital_gain", "capital_loss", "hours_per_week")
ADULT_FEATURES = tuple(c for c in ADULT_COLUMNS if c != "income")
MISSING = ("", "?", "NA", "nan", "NaN")
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


def require_column(columns: dict[str, np.ndarray], name: str, source: str) -> np.ndarray:
    if name not in columns:
        known = ", ".join(list(columns)[:20])
        raise InputError(f"{source}: no column {name!r}; columns are: {known}")
    return columns[name]


def numeric(
    values: npt.ArrayLike, name: str, source: str, first_line: int = 2, allow_missing: bool = True
) -> npt.NDArray[np.float64]:
    """Column as float64; missing markers become NaN (or an error if not allowed)."""
    arr = np.asarray(values)
    if arr.dtype.kind in "iufb":
        out = arr.astype(np.float64)
    else:
        text = arr.astype(str)
        missing = np.isin(np.char.strip(text), MISSING)
        filled = np.where(missing, "nan", text)
        try:
            out = filled.astype(np.float64)
        except ValueError:
            for i, v in enumerate(filled.tolist()):
                try:
                    float(v)
                except ValueError:
                    raise InputError(
                        f"{source}, line {first_line + i}, column {name!r}: {v!r} is not a number"
                    ) from None
            raise
    if not allow_missing and np.isnan(out).any():
        i = int(np.argmax(np.isnan(out)))
        raise InputError(f"{source}, line {first_line + i}, column {name!r}: missing value")
    return out


def binary_column(values: npt.ArrayLike, name: str, source: str, first_line: int = 2) -> npt.NDArray[np.int64]:
    """A 0/1 column as int64; anything else names the file, line, column and value."""
    numbers = numeric(values, name, source, first_line, allow_missing=False)
    bad = (numbers != 0) & (numbers != 1)
    if bad.any():
        i = int(np.argmax(bad))
        raise InputError(f"{source}, line {first_line + i}, column {name!r}: {np.asarray(values)[i]!r} is not 0 or 1")
    return numbers.astype(np.int64)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _open_text(path: Path) -> io.TextIOBase:
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected a CSV file")
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return path.open("r", encoding="utf-8", newline="")


def iter_csv(
    path: str | Path, columns: Sequence[str] | None = None, chunk_rows: int = DEFAULT_CHUNK_ROWS
) -> Iterator[Chunk]:
    """Stream a CSV with a header row as string columns, ``chunk_rows`` at a time."""
    p = Path(path)
    source = str(p)
    with _open_text(p) as f:
        reader = csv.reader(f)
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
        positions = [header.index(n) for n in wanted]
        rows: list[list[str]] = []
        first_line = 2
        try:
            for row in reader:
                if len(row) != len(header):
                    if not row:
                        continue
                    raise InputError(f"{source}, line {reader.line_num}: {len(row)} fields, expected {len(header)}")
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


def read_csv(path: str | Path, columns: Sequence[str] | None = None) -> Dataset:
    """Read a whole CSV into memory (string columns)."""
    p = Path(path)
    chunks = list(iter_csv(p, columns))
    names = list(chunks[0].columns)
    cols = {n: np.concatenate([c.columns[n] for c in chunks]) for n in names}
    rows = len(cols[names[0]]) if names else 0
    if rows == 0:
        raise InputError(f"{p}: no data rows after the header")
    return Dataset(cols, str(p), file_sha256(p), rows)


def _adult_raw(split: str) -> bytes:
    if split not in ("train", "test"):
        raise InputError(f"Adult split must be 'train' or 'test', got {split!r}")
    name = "adult.data.gz" if split == "train" else "adult.test.gz"
    return resources.files("edgefair").joinpath("datasets", name).read_bytes()


def load_adult(split: str = "test") -> Dataset:
    """The UCI Adult census data, named columns; ``income`` is 1 for '>50K', else 0.

    Numeric columns are float64, the others strings; '?' marks a missing category.
    """
    raw = _adult_raw(split)
    text = gzip.decompress(raw).decode("utf-8")
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith("|")]
    fields = [[v.strip() for v in ln.split(",")] for ln in lines]
    cols = list(zip(*fields, strict=True))
    data: dict[str, np.ndarray] = {}
    for name, values in zip(ADULT_COLUMNS, cols, strict=True):
        if name == "income":
            data[name] = np.array([v.rstrip(".") == ">50K" for v in values], dtype=np.int64)
        elif name in ADULT_NUMERIC:
            data[name] = np.array(values, dtype=np.float64)
        else:
            data[name] = np.array(values, dtype=object)
    return Dataset(data, f"adult:{split}", hashlib.sha256(raw).hexdigest(), len(lines))


def load(source: str | Path) -> Dataset:
    """A data set by name: 'adult' / 'adult:test' / 'adult:train', or a CSV path."""
    s = str(source)
    if s in ("adult", "adult:test"):
        return load_adult("test")
    if s == "adult:train":
        return load_adult("train")
    return read_csv(s)


def iter_source(
    source: str | Path | Dataset, columns: Sequence[str] | None = None, chunk_rows: int = DEFAULT_CHUNK_ROWS
) -> tuple[Iterator[Chunk], str]:
    """Chunks of an in-memory Dataset, a named data set or a CSV, plus a description."""
    if isinstance(source, Dataset):
        for name in columns or ():
            source.column(name)
        return source.chunks(chunk_rows), source.source
    s = str(source)
    if s.startswith("adult"):
        ds = load(s)
        for name in columns or ():
            ds.column(name)
        return ds.chunks(chunk_rows), ds.source
    return iter_csv(s, columns, chunk_rows), s


def source_sha256(source: str | Path | Dataset) -> str:
    if isinstance(source, Dataset):
        return source.sha256
    s = str(source)
    if s.startswith("adult"):
        return hashlib.sha256(_adult_raw("train" if s == "adult:train" else "test")).hexdigest()
    return file_sha256(Path(s))
