"""``verify`` and ``compare`` on a Dask cluster: the partitions are scored on the workers,
their tables added up as a tree, and the gate runs here, on the client.

The result is the single-process result: the same tables (counts add up exactly, in any
order), so the same gate, the same seeded bootstrap and the same report, apart from the
timestamp and latencies. For Parquet the data's name and SHA-256 are those of
``edgefair.verify`` on the same path as well.

Batches. Every row is scored in a batch of ``batch_size`` rows (default: the single-process
chunk size, 65536), which matters for a model whose outputs depend on the batch (dynamic
int8 computes activation scales per call). For Parquet the batches are exactly those of the
single-process path (rows ``k * batch_size`` to ``(k + 1) * batch_size`` of the files in
order): each task scores whole batches. A dask DataFrame is scored in batches within each
partition; they are the single-process batches only when every partition but the last
holds a multiple of ``batch_size`` rows, and a warning says so when they do not.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from edgefair.data import Source
from edgefair.data.parquet import FileMeta, ParquetFiles, arrow_chunks, combined_sha256, file_sha256, pyarrow
from edgefair.data.source import ParquetSource
from edgefair.distributed import worker
from edgefair.distributed.cluster import dask_distributed
from edgefair.errors import EdgefairError, InputError
from edgefair.modelio import build_feeds
from edgefair.verification import api
from edgefair.verification import evaluate as ev
from edgefair.verification.gate import gate
from edgefair.verification.policy import Policy, load_policy

SAMPLE_ROWS = 256  # as evaluate keeps: the first rows' feeds, for latency measurements


def is_dask_frame(data: Any) -> bool:
    return type(data).__module__.split(".")[0] == "dask" and hasattr(data, "to_delayed") and hasattr(data, "columns")


def evaluate_options(
    name: str,
    policy: Policy,
    label: str | None,
    sensitive: Sequence[str] | None,
    threshold: float,
    positive_label: str | None,
    score_output: str | None,
    feature_columns: Sequence[str] | None,
    batch_size: int | None,
) -> ev.EvaluateOptions:
    """The options ``edgefair.compare`` would use on data named ``name``, batches of ``batch_size``."""
    options = api.options_for(
        Source(name), policy, label, sensitive, threshold, positive_label, score_output, feature_columns
    )
    if batch_size is not None and batch_size < 1:
        raise InputError(f"batch_size must be at least 1, got {batch_size}")
    # the batch is named too, so a dynamic-int8 verdict says which batch size it holds for
    return replace(options, chunk_rows=batch_size or options.chunk_rows, batch_size=batch_size)


def prepare_models(
    reference: str | Path, candidates: Sequence[str | Path], options: ev.EvaluateOptions
) -> tuple[ev.ScoringModel, list[worker.ModelSpec], list[bytes]]:
    """Open and check the models here, as evaluate does (same errors); their bytes and specs."""
    if not candidates:
        raise InputError("give at least one candidate model")
    if not 0.0 <= options.threshold <= 1.0:
        raise InputError(f"threshold must be in [0, 1], got {options.threshold}")
    ref = ev.ScoringModel(reference, options.threshold, options.score_output)
    cands = [ev.ScoringModel(c, options.threshold, options.score_output) for c in candidates]
    for c in cands:
        ev.check_same_inputs(ref, c)
    blobs = [Path(m.info.path).read_bytes() for m in (ref, *cands)]  # checked on each worker
    specs = [worker.ModelSpec(m.info, m.choice.name, options.threshold) for m in (ref, *cands)]
    return ref, specs, blobs


def _tree(client: Any, leaves: list[Any]) -> tuple[Any, list[Any]]:
    """Add the leaves' partials pairwise, neighbours first (order kept for the digests)."""
    level, made = list(leaves), []
    while len(level) > 1:
        nxt = [client.submit(worker.add, level[i], level[i + 1], pure=False) for i in range(0, len(level) - 1, 2)]
        made += nxt
        level = nxt + ([level[-1]] if len(level) % 2 else [])
    return level[0], made


def parquet_ranges(metas: Sequence[FileMeta], batch: int) -> list[tuple[list[FileMeta], int, int, int]]:
    """Tasks of whole batches, about a row group long: (their files, the first file's first
    row, start, stop), rows counted over all the files in order."""
    total = sum(f.rows for f in metas)
    longest = max((g for f in metas for g in f.row_groups), default=batch)
    span = batch * max(1, math.ceil(longest / batch))
    offsets, row = [], 0
    for f in metas:
        offsets.append(row)
        row += f.rows
    ranges = []
    for start in range(0, total, span):
        stop = min(total, start + span)
        mine = [(o, f) for o, f in zip(offsets, metas, strict=True) if o < stop and o + f.rows > start and f.rows]
        ranges.append(([f for _, f in mine], mine[0][0], start, stop))
    return ranges


def _parquet_tasks(
    client: Any,
    files: ParquetFiles,
    names: list[str] | None,
    specs: list[worker.ModelSpec],
    blobs: list[Any],
    options: ev.EvaluateOptions,
) -> tuple[list[Any], int]:
    """One task per run of whole batches, about a row group long; each gets only its files."""
    metas = files.files()
    columns = files.columns(names)
    leaves = [
        client.submit(
            worker.score_parquet_range,
            part,
            first_row,
            columns,
            start,
            stop,
            files.name,
            specs,
            blobs,
            options,
            pure=False,
        )
        for part, first_row, start, stop in parquet_ranges(metas, options.chunk_rows)
    ]
    return leaves, sum(f.rows for f in metas)


def _frame_tasks(
    client: Any,
    frame: Any,
    names: list[str] | None,
    source: str,
    specs: list[worker.ModelSpec],
    blobs: list[Any],
    options: ev.EvaluateOptions,
) -> list[Any]:
    from dask.delayed import delayed

    known = [str(c) for c in frame.columns]
    for name in names or ():
        if name not in known:
            raise InputError(f"{source}: no column {name!r}; columns are: {', '.join(known[:20])}")
    parts = (frame[names] if names is not None else frame).to_delayed()
    score = delayed(worker.score_frame, pure=False)
    tasks = [score(p, i, names, source, specs, blobs, options) for i, p in enumerate(parts)]
    return list(client.compute(tasks))


def sample_feeds(ref: ev.ScoringModel, chunk: Any, options: ev.EvaluateOptions) -> dict[str, Any]:
    """The first rows' model feeds (for latency measurements), as evaluate keeps them."""
    if chunk is None or chunk.rows == 0:
        return {}
    exclude = [options.label, *options.sensitive]
    feeds = build_feeds(ref.sig, chunk.columns, feature_columns=options.feature_columns, exclude=exclude)
    return {k: v[:SAMPLE_ROWS].copy() for k, v in feeds.items()}


def compare(
    reference: str | Path,
    candidates: Sequence[str | Path],
    data: Any,
    policy: Policy | str | Path | None = None,
    *,
    client: Any,
    label: str | None = None,
    sensitive: Sequence[str] | None = None,
    threshold: float = 0.5,
    positive_label: str | None = None,
    score_output: str | None = None,
    feature_columns: Sequence[str] | None = None,
    measure_latency: bool = True,
    progress: ev.Progress | None = None,
    batch_size: int | None = None,
) -> api.CompareReport:
    """``edgefair.compare`` with the rows scored on the workers of ``client``.

    ``data`` is a Parquet file, directory or glob (every worker must see it at the same
    path) or a dask DataFrame. ``progress`` is called with each finished task's rows."""
    distributed = dask_distributed()
    pol = policy if isinstance(policy, Policy) else load_policy(policy)
    frame = is_dask_frame(data)
    if not frame and not isinstance(data, (str, Path)):
        raise InputError(f"data must be a Parquet path or glob or a dask DataFrame, got {type(data).__name__}")
    files = None if frame else ParquetSource(data).files
    name = f"dask DataFrame {data._name}" if frame else files.name  # type: ignore[union-attr]
    options = evaluate_options(
        name, pol, label, sensitive, threshold, positive_label, score_output, feature_columns, batch_size
    )
    ref, specs, raw = prepare_models(reference, candidates, options)
    names = ev.needed_columns(ref.sig, options)
    blobs = [client.scatter(b, broadcast=True) for b in raw]  # once per worker; keyed by content
    held: list[Any] = [*blobs]
    try:
        if files is not None:
            leaves, total = _parquet_tasks(client, files, names, specs, blobs, options)
            if total == 0:
                raise InputError(f"{name}: no data rows")
            hashes = client.map(file_sha256, [f.path for f in files.files()], pure=False)
            held += hashes
            first = next(files.chunks(names, SAMPLE_ROWS, 0, SAMPLE_ROWS))
        else:
            leaves, total, hashes = _frame_tasks(client, data, names, name, specs, blobs, options), -1, []
            first = None
            if measure_latency:
                pa, _ = pyarrow()
                head = data[names].head(SAMPLE_ROWS) if names is not None else data.head(SAMPLE_ROWS)
                cols = names or [str(c) for c in head.columns]
                first = next(arrow_chunks(pa.Table.from_pandas(head, preserve_index=False), cols, SAMPLE_ROWS, name))
        held += leaves
        root, made = _tree(client, leaves)
        held += made
        if progress is not None:
            for done in distributed.as_completed(leaves, loop=client.loop):
                progress(done.result().rows)
        try:
            partial: worker.Partial = root.result()
        except Exception:
            _raise_first_error(leaves)  # the single-process error: that of the first bad rows
            raise
        sha = combined_sha256(client.gather(hashes)) if files is not None else ""
    finally:
        client.cancel(held)
    if partial.tables is None or partial.rows == 0:
        raise InputError(f"{name}: no data rows")
    if files is not None and partial.rows != total:
        raise EdgefairError(f"{name}: the workers scored {partial.rows} rows but the files hold {total}")
    if frame:
        sha = hashlib.sha256("".join(d + "\n" for d in partial.digests).encode()).hexdigest()
        warn_if_unaligned(partial.sizes, options.chunk_rows)
    return build_report(
        reference, candidates, ref, specs, partial.tables, partial.rows, name, sha, options, pol, first, measure_latency
    )


def build_report(
    reference: str | Path,
    candidates: Sequence[str | Path],
    ref: ev.ScoringModel,
    specs: Sequence[worker.ModelSpec],
    reduced: Sequence[Any],
    rows: int,
    name: str,
    sha: str,
    options: ev.EvaluateOptions,
    policy: Policy,
    first: Any,
    measure_latency: bool,
) -> api.CompareReport:
    """What ``edgefair.compare`` makes of its tables, from tables reduced elsewhere: the same
    evaluation, gate and (with ``measure_latency``) latencies on the first rows' feeds."""
    evaluation = ev.Evaluation(
        ref.info,
        tuple(s.info for s in specs[1:]),
        tuple(reduced),
        name,
        sha,
        rows,
        options.label,
        tuple(options.sensitive),
        options.threshold,
        ref.choice.name,
        sample_feeds(ref, first, options),
        batch_size=options.batch_size,
    )
    ev.require_positive(evaluation, options.positive_label)
    created = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    ref_latency = api.latencies(reference, evaluation.sample) if measure_latency and evaluation.sample else None
    reports = []
    for i, cand in enumerate(candidates):
        ratio = None
        if ref_latency is not None:
            own = api.latencies(cand, evaluation.sample)
            ratio = {k: own[k] / ref_latency[k] for k in own}
        reports.append(api.VerifyReport(evaluation, i, gate(evaluation.tables[i], policy), policy, created, ratio))
    return api.CompareReport(tuple(reports))


def _raise_first_error(leaves: Sequence[Any]) -> None:
    """Raise the error of the first task, in row order, that failed (if a task did)."""
    for leaf in leaves:
        exc = leaf.exception()
        if exc is not None:
            raise exc


def warn_if_unaligned(sizes: Sequence[int], batch: int, stacklevel: int = 3) -> None:
    """Warn when partitions (but the last) do not hold whole batches: not the single-process batches."""
    filled = [s for s in sizes if s]
    if any(s % batch for s in filled[:-1]):
        warnings.warn(
            f"the dask DataFrame's partitions do not all hold a multiple of batch_size={batch} rows, so its batches "
            "are not the single-process ones: a model whose outputs depend on the batch (dynamic int8) may give a "
            "different table than edgefair.verify on the same rows",
            stacklevel=stacklevel,
        )


def verify(
    reference: str | Path,
    candidate: str | Path,
    data: Any,
    policy: Policy | str | Path | None = None,
    *,
    client: Any,
    label: str | None = None,
    sensitive: Sequence[str] | None = None,
    threshold: float = 0.5,
    positive_label: str | None = None,
    score_output: str | None = None,
    feature_columns: Sequence[str] | None = None,
    measure_latency: bool = False,
    progress: ev.Progress | None = None,
    batch_size: int | None = None,
) -> api.VerifyReport:
    """``edgefair.verify`` with the rows scored on the workers of ``client`` (see ``compare``)."""
    return compare(
        reference,
        [candidate],
        data,
        policy,
        client=client,
        label=label,
        sensitive=sensitive,
        threshold=threshold,
        positive_label=positive_label,
        score_output=score_output,
        feature_columns=feature_columns,
        measure_latency=measure_latency,
        progress=progress,
        batch_size=batch_size,
    ).reports[0]
