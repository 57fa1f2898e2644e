"""One data source: a registered name, a file or an in-memory Dataset, resolved once.

A source has a display name, a chunk iterator, its SHA-256 (for a file, computed while
streaming it: one read) and defaults for the label and sensitive columns, which only the
exact registered names have (``adult``, ``adult:test``, ``adult:train``). A file is a
file, whatever it is called: ``adult_small.csv`` is read as a CSV and has no defaults.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgefair.data.adult import ADULT_LABEL, ADULT_SENSITIVE, load_adult
from edgefair.data.columns import DEFAULT_CHUNK_ROWS, Chunk, Dataset
from edgefair.data.csvfile import iter_csv
from edgefair.data.parquet import ParquetFiles, looks_like_parquet
from edgefair.errors import InputError


@dataclass(frozen=True)
class SourceDefaults:
    """Columns a registered data set brings with it; a file brings none."""

    label: str | None = None
    sensitive: tuple[str, ...] = ()


class Source:
    """Where rows come from. ``chunks()`` streams them; ``sha256()`` identifies them."""

    def __init__(self, name: str, defaults: SourceDefaults = SourceDefaults()) -> None:
        self.name = name
        self.defaults = defaults

    def chunks(self, columns: Sequence[str] | None = None, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[Chunk]:
        raise NotImplementedError

    def sha256(self) -> str:
        raise NotImplementedError

    def read(self, columns: Sequence[str] | None = None, limit: int | None = None) -> Dataset:
        """The first ``limit`` rows (all by default) in memory."""
        parts: list[Chunk] = []
        rows = 0
        for chunk in self.chunks(columns, limit or DEFAULT_CHUNK_ROWS):
            parts.append(chunk)
            rows += chunk.rows
            if limit is not None and rows >= limit:
                break
        names = list(parts[0].columns) if parts else []
        cols = {n: np.concatenate([c.columns[n] for c in parts])[:limit] for n in names}
        count = len(cols[names[0]]) if names else 0
        if count == 0:
            raise InputError(f"{self.name}: no data rows")
        sha = self.sha256() if limit is None else ""
        return Dataset(cols, self.name, sha, count)


class DatasetSource(Source):
    def __init__(self, dataset: Dataset, defaults: SourceDefaults = SourceDefaults()) -> None:
        super().__init__(dataset.source, defaults)
        self.dataset = dataset

    def chunks(self, columns: Sequence[str] | None = None, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[Chunk]:
        for name in columns or ():
            self.dataset.column(name)
        return self.dataset.chunks(chunk_rows)

    def sha256(self) -> str:
        return self.dataset.sha256


class CsvSource(Source):
    """A CSV file (or .csv.gz): hashed in the pass that reads it."""

    def __init__(self, path: Path) -> None:
        super().__init__(str(path))
        self.path = path
        self._sha256: str | None = None

    def chunks(self, columns: Sequence[str] | None = None, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[Chunk]:
        return iter_csv(self.path, columns, chunk_rows, on_done=self._finished)

    def _finished(self, sha256: str) -> None:
        self._sha256 = sha256

    def sha256(self) -> str:
        if self._sha256 is None:  # nobody streamed the whole file yet: one read to hash it
            for _ in self.chunks(None, DEFAULT_CHUNK_ROWS):
                pass
        assert self._sha256 is not None
        return self._sha256


class ParquetSource(Source):
    """A Parquet file, a directory of them or a glob (sorted): read row group by row group
    with only the columns asked for; hashed in one extra sequential read (see
    ``edgefair.data.parquet``, which does the reading, as ``csvfile`` does for CSV)."""

    def __init__(self, spec: str | Path) -> None:
        self.files = ParquetFiles(spec)
        super().__init__(self.files.name)

    def chunks(self, columns: Sequence[str] | None = None, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[Chunk]:
        return self.files.chunks(columns, chunk_rows)

    def sha256(self) -> str:
        return self.files.sha256()


ADULT_DEFAULTS = SourceDefaults(ADULT_LABEL, ADULT_SENSITIVE)
REGISTERED: dict[str, Callable[[], Source]] = {
    "adult": lambda: DatasetSource(load_adult("test"), ADULT_DEFAULTS),
    "adult:test": lambda: DatasetSource(load_adult("test"), ADULT_DEFAULTS),
    "adult:train": lambda: DatasetSource(load_adult("train"), ADULT_DEFAULTS),
}


def resolve(data: str | Path | Dataset | Source) -> Source:
    """The source behind a registered name, a path (CSV, or Parquet: a ``.parquet`` file, a
    directory or a glob) or an in-memory Dataset."""
    if isinstance(data, Source):
        return data
    if isinstance(data, Dataset):
        return DatasetSource(data)
    if isinstance(data, str) and data in REGISTERED:
        return REGISTERED[data]()
    if not isinstance(data, (str, Path)):
        raise InputError(
            f"data must be a CSV or Parquet path, a registered name ({', '.join(sorted(REGISTERED))}) or a "
            f"Dataset, got {type(data).__name__}"
        )
    if looks_like_parquet(data):  # a .parquet file, a directory (of .parquet files) or a glob
        return ParquetSource(data)
    return CsvSource(Path(data))


def load(data: str | Path | Dataset | Source, limit: int | None = None) -> Dataset:
    """Every row (or the first ``limit``) of a source, in memory."""
    return resolve(data).read(None, limit)
