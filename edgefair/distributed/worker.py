"""What runs on a Dask worker: score one partition into one paired table per candidate.

Each worker process keeps one onnxruntime session per model, in ``SESSIONS`` keyed by the
model's SHA-256. The model bytes come once per worker (scattered with ``broadcast=True``);
their SHA-256 is checked against the one the client computed before a session is made or
used, so a worker never scores with bytes other than the ones the report names.

A partition is scored in batches of ``options.chunk_rows`` rows, exactly as
``edgefair.verification.evaluate`` scores its chunks (``score_chunk`` is its loop body): a
model whose outputs depend on the batch (dynamic int8 computes activation scales per call)
then gives the same table on every path whose batches hold the same rows.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgefair import data, modelio
from edgefair.core import tables
from edgefair.core.tables import CountsTable
from edgefair.data.parquet import FileMeta, arrow_chunks, pyarrow, read_range
from edgefair.errors import InputError, ModelError
from edgefair.modelio.session import Signature
from edgefair.verification import evaluate as ev

MAX_SESSIONS = 8  # models kept per worker process (least recently used dropped first)
SESSIONS: OrderedDict[str, tuple[Any, Signature]] = OrderedDict()
_LOCK = threading.Lock()


@dataclass(frozen=True)
class ModelSpec:
    """A model as the client checked it: what the report names, its output and threshold."""

    info: ev.ModelInfo
    output: str
    threshold: float


@dataclass(frozen=True)
class Partial:
    """The tables of some partitions (None: no rows yet), their rows, and per partition (in
    order) its row count and, for a dask DataFrame, a digest of its values."""

    tables: tuple[CountsTable, ...] | None
    rows: int
    sizes: tuple[int, ...]
    digests: tuple[str, ...] = ()


def session_for(blob: bytes, sha256: str) -> tuple[Any, Signature]:
    """This process's session for the model with ``sha256``, after checking ``blob`` is it."""
    got = hashlib.sha256(blob).hexdigest()
    if got != sha256:
        raise ModelError(
            f"the model bytes on this worker have SHA-256 {got}, expected {sha256}: refusing to score with them"
        )
    with _LOCK:
        hit = SESSIONS.get(sha256)
        if hit is None:
            session = modelio.open_session(blob, threads=1)
            hit = (session, modelio.signature(session))
            SESSIONS[sha256] = hit
            while len(SESSIONS) > MAX_SESSIONS:
                SESSIONS.popitem(last=False)
        else:
            SESSIONS.move_to_end(sha256)
    return hit


class WorkerModel(ev.ScoringModel):
    """evaluate's model (its ``decide``), from checked bytes and a cached session, not a path."""

    def __init__(self, spec: ModelSpec, blob: bytes) -> None:  # no super().__init__: no file here
        self.session, self.sig = session_for(blob, spec.info.sha256)
        self.info = spec.info
        self.choice = modelio.choose_output(self.sig, spec.output)
        self.threshold = spec.threshold


def score_chunk(
    ref: ev.ScoringModel, cands: Sequence[ev.ScoringModel], chunk: data.Chunk, options: ev.EvaluateOptions
) -> list[CountsTable] | None:
    """One chunk's paired table per candidate (None for an empty chunk): evaluate's own
    ``score_chunk``, so both paths give the same tables and the same errors."""
    scored = ev.score_chunk(ref, cands, chunk, options)
    return None if scored is None else scored[0]


def score_chunks(
    chunks: Any, models: Sequence[ModelSpec], blobs: Sequence[bytes], options: ev.EvaluateOptions
) -> Partial:
    """Chunks scored with this process's sessions of the checked models, into one partial."""
    ref, *cands = [WorkerModel(m, b) for m, b in zip(models, blobs, strict=True)]
    parts: list[list[CountsTable]] = [[] for _ in cands]
    rows = 0
    for chunk in chunks:
        scored = score_chunk(ref, cands, chunk, options)
        if scored is None:
            continue
        for i, t in enumerate(scored):
            parts[i].append(t)
        rows += chunk.rows
    return Partial(tuple(tables.merge(p) for p in parts) if rows else None, rows, (rows,))


def score_parquet_range(
    files: Sequence[FileMeta],
    first_row: int,
    names: Sequence[str],
    start: int,
    stop: int,
    source: str,
    models: Sequence[ModelSpec],
    blobs: Sequence[bytes],
    options: ev.EvaluateOptions,
) -> Partial:
    """Rows ``start:stop`` of Parquet files (``files`` start at row ``first_row``), scored."""
    chunks = read_range(files, names, options.chunk_rows, start, stop, source, first_row)
    return score_chunks(chunks, models, blobs, options)


def score_frame(
    frame: Any,
    index: int,
    names: Sequence[str] | None,
    source: str,
    models: Sequence[ModelSpec],
    blobs: Sequence[bytes],
    options: ev.EvaluateOptions,
) -> Partial:
    """One pandas partition of a dask DataFrame, converted as Parquet columns are, scored."""
    pa, _ = pyarrow()
    where = f"{source}, partition {index}"
    cols = [str(c) for c in frame.columns] if names is None else list(names)
    try:
        table = pa.Table.from_pandas(frame[cols] if names is not None else frame, preserve_index=False)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise InputError(f"{where}: the partition cannot be read as columns ({first})") from None
    chunks = list(arrow_chunks(table, cols, options.chunk_rows, where))
    partial = score_chunks(chunks, models, blobs, options)
    return Partial(partial.tables, partial.rows, partial.sizes, (digest(chunks),))


def digest(chunks: Sequence[data.Chunk]) -> str:
    """SHA-256 of a partition's values as read (names, dtypes and values, in order)."""
    h = hashlib.sha256()
    for chunk in chunks:
        for name, values in chunk.columns.items():
            h.update(name.encode() + b"\0" + values.dtype.str.encode() + b"\0")
            if values.dtype == object:
                text = [str(v).encode() for v in values.tolist()]
                h.update(np.array([len(t) for t in text], np.int64).tobytes())
                h.update(b"".join(text))
            else:
                h.update(np.ascontiguousarray(values).tobytes())
    return h.hexdigest()


def add(a: Partial, b: Partial) -> Partial:
    """Two partials of consecutive partitions (``a`` first) as one: tables add exactly."""
    if a.tables is None or b.tables is None:
        merged = a.tables if b.tables is None else b.tables
    else:
        merged = tuple(x + y for x, y in zip(a.tables, b.tables, strict=True))
    return Partial(merged, a.rows + b.rows, a.sizes + b.sizes, a.digests + b.digests)
