"""Run a reference and any number of candidates over labelled data, into paired tables.

One pass over the data serves every candidate: each chunk is read once, fed to the
reference once, and to each candidate; each candidate gets its own paired table
(group x label x reference decision x candidate decision, plus score histograms).
Memory stays flat in the number of rows: only tables are kept.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgefair import data, modelio
from edgefair.core import tables
from edgefair.core.tables import CountsTable
from edgefair.data.columns import DEFAULT_CHUNK_ROWS
from edgefair.errors import InputError, ModelError
from edgefair.modelio.safety import op_types

Progress = Callable[[int], None]


@dataclass(frozen=True)
class ModelInfo:
    path: str
    sha256: str
    size_bytes: int
    batch_dependent: bool = False  # quantises activations per call: its outputs depend on the batch

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "sha256": self.sha256, "size_bytes": self.size_bytes}
        if self.batch_dependent:
            out["batch_dependent"] = True
        return out

    @classmethod
    def of(cls, path: Path, raw: bytes) -> ModelInfo:
        ops = op_types(raw) or frozenset()
        return cls(str(path), hashlib.sha256(raw).hexdigest(), len(raw), bool(ops & BATCH_DEPENDENT_OPS))


# dynamic quantisation: each call's activation scale comes from that call's rows
BATCH_DEPENDENT_OPS = frozenset({"DynamicQuantizeLinear", "DynamicQuantizeMatMul", "DynamicQuantizeLSTM"})


@dataclass(frozen=True)
class Evaluation:
    """Paired tables, one per candidate, and what they were computed from."""

    reference: ModelInfo
    candidates: tuple[ModelInfo, ...]
    tables: tuple[CountsTable, ...]
    data_source: str
    data_sha256: str
    rows: int
    label: str
    sensitive: tuple[str, ...]
    threshold: float
    score_output: str
    sample: dict[str, np.ndarray]  # the first rows' model feeds, for latency measurements
    # beyond binary classification (verification.task_evaluate): the task, its tables (a
    # ClassTable or MomentsTable per candidate) and how decisions were read
    task: str = "binary"
    task_tables: tuple[Any, ...] = ()
    task_info: Any = None
    weighted_tables: tuple[Any, ...] = ()  # core.weighted.WeightedTable per candidate, with --weight
    weight: str | None = None  # the column of sample weights
    batch_size: int | None = None  # rows per model call (None: a whole chunk)


@dataclass(frozen=True, kw_only=True)
class EvaluateOptions:
    label: str
    sensitive: Sequence[str]
    threshold: float = 0.5
    positive_label: str | None = None
    score_output: str | None = None
    feature_columns: Sequence[str] | None = None
    chunk_rows: int = DEFAULT_CHUNK_ROWS
    bins: int = tables.DEFAULT_BINS
    task: str | None = None  # None: detected (binary, or multiclass from a [N, K > 2] score)
    decision_threshold: float | None = None  # regression: decision = prediction >= this (binary)
    weight: str | None = None  # a column of sample weights (binary tables of weighted sums)
    # rows per model call (None: a whole chunk per call). Batch-dependent models (dynamic
    # int8 computes activation scales per call) must be judged at their deployment batch.
    batch_size: int | None = None

    def __post_init__(self) -> None:
        b = self.batch_size
        if b is not None and (isinstance(b, bool) or not isinstance(b, int) or b < 1):
            raise InputError(f"batch_size must be a whole number of at least 1, got {b!r}")

    @property
    def read_rows(self) -> int:
        """Rows per chunk read: a multiple of the batch, so batch k is rows k*B to (k+1)*B of
        the data, as on the Dask path (which reads one batch per chunk)."""
        b = self.batch_size
        return self.chunk_rows if b is None else max(b, self.chunk_rows // b * b)


class ScoringModel:
    """A model file opened for scoring: its info (path, SHA-256, size), session, signature,
    chosen score output and threshold; ``decide`` gives scores and decisions."""

    def __init__(self, path: str | Path, threshold: float, score_output: str | None):
        p = Path(path)
        if not p.exists():
            raise InputError(f"{p}: no such model file")
        raw = p.read_bytes()
        self.info = ModelInfo.of(p, raw)
        try:
            self.session = modelio.open_session(raw)
        except ModelError as exc:  # name the file: compare opens many
            raise ModelError(f"{p}: {exc}") from None
        self.sig = modelio.signature(self.session)
        try:
            self.choice = modelio.choose_output(self.sig, score_output)
        except ModelError as exc:
            raise ModelError(f"{p}: {exc}") from None
        if self.choice.kind == "label" and threshold != 0.5:  # its decisions are its own, whatever the cut
            raise InputError(
                f"{p}: gives only a label (output {self.choice.name!r}), so --threshold {threshold:g} cannot apply "
                "to its decisions while the other model's score is cut there; use the default 0.5, or export "
                "the model with its score output"
            )
        self.threshold = threshold

    def decide(
        self, feeds: dict[str, np.ndarray], chunk: data.Chunk | None = None, batch: int | None = None
    ) -> tuple[np.ndarray | None, np.ndarray]:
        rows = len(next(iter(feeds.values()))) if feeds else 0
        if batch is None or batch >= rows:
            out = self.session.run([self.choice.name], feeds)[0]
        else:  # one call per batch of rows, as the model will be called when deployed
            out = np.concatenate(
                [
                    self.session.run([self.choice.name], {k: v[i : i + batch] for k, v in feeds.items()})[0]
                    for i in range(0, rows, batch)
                ]
            )
        try:
            return modelio.decisions(out, self.choice, self.threshold)
        except ModelError as exc:
            if chunk is not None:
                _blame_missing(out, feeds, chunk, self.info.path)
            raise ModelError(f"{self.info.path}: {exc}") from None


def _blame_missing(out: np.ndarray, feeds: dict[str, np.ndarray], chunk: data.Chunk, model: str) -> None:
    """A NaN score on a row with a missing feature is the data's doing: name the line and
    column (the one check convert uses too)."""
    data.refuse_missing_scored_nan([out], feeds, chunk.columns, chunk.source, chunk.first_line, model)


def check_same_inputs(reference: ScoringModel, candidate: ScoringModel) -> None:
    """A candidate must take exactly the reference's inputs (names and types)."""
    ref = [(i.name, i.type) for i in reference.sig.inputs]
    cand = [(i.name, i.type) for i in candidate.sig.inputs]
    if ref != cand:
        raise InputError(
            f"{candidate.info.path}: inputs {cand} do not match the reference's {ref}; "
            "a candidate must be a drop-in replacement"
        )


_Model = ScoringModel  # the old private names, kept while their callers move to the public ones
_same_inputs = check_same_inputs


def needed_columns(sig: modelio.Signature, options: EvaluateOptions) -> list[str] | None:
    """The columns scoring reads (None: all, for one 2-D input fed every other column)."""
    from edgefair.modelio.feeds import needed_columns as needed  # one rule with build_feeds (--features)

    weight = getattr(options, "weight", None)  # a weight column is never a feature either
    return needed(sig, options.feature_columns, [options.label, *options.sensitive, *([weight] if weight else [])])


def labels_of(values: np.ndarray, name: str, chunk: data.Chunk, positive: str | None) -> np.ndarray:
    """0/1 labels: the column itself, or ``column == positive`` when a positive value is named."""
    if positive is not None:
        text = np.asarray(values).astype(str)
        return (np.char.strip(text) == positive).astype(np.int64)
    try:
        return data.binary_column(values, name, chunk.source, chunk.first_line)
    except InputError as exc:  # only now is it worth listing what the column holds
        seen = sorted({str(v) for v in np.asarray(values)[:1000].tolist()})[:5]
        raise InputError(f"{exc} (values seen: {seen}); use --positive-label VALUE") from None


def require_positive(evaluation: Evaluation, positive_label: str | None) -> None:
    """A named positive label that no row holds is a typo, not data: every label would be 0,
    every true positive rate 0, and the checks would compare nothing real."""
    if positive_label is None or evaluation.task != "binary" or not evaluation.tables:
        return
    if not int(evaluation.tables[0].counts[:, 1].sum()):
        raise InputError(
            f"{evaluation.data_source}: --positive-label {positive_label!r} matches no row of column "
            f"{evaluation.label!r}; every label would be 0 (name a value the column holds)"
        )


def evaluate(
    reference: str | Path,
    candidates: Sequence[str | Path],
    source: data.Source,
    options: EvaluateOptions,
    progress: Progress | None = None,
) -> Evaluation:
    """Paired counts tables of each candidate against the reference, in one pass."""
    if not candidates:
        raise InputError("give at least one candidate model")
    if not options.sensitive:
        raise InputError("name at least one sensitive column (--sensitive)")
    if not 0.0 <= options.threshold <= 1.0:
        raise InputError(f"threshold must be in [0, 1], got {options.threshold}")
    ref = _Model(reference, options.threshold, options.score_output)
    cands = [_Model(c, options.threshold, options.score_output) for c in candidates]
    for c in cands:
        _same_inputs(ref, c)
    described = source.name
    parts: list[list[CountsTable]] = [[] for _ in cands]
    rows = 0
    sample: dict[str, np.ndarray] = {}
    for chunk in source.chunks(needed_columns(ref.sig, options), options.read_rows):
        scored = score_chunk(ref, cands, chunk, options)
        if scored is None:
            continue
        chunk_tables, feeds = scored
        if not sample:
            sample = {k: v[:256].copy() for k, v in feeds.items()}
        for i, table in enumerate(chunk_tables):
            parts[i].append(table)
        rows += chunk.rows
        if progress:
            progress(chunk.rows)
    if rows == 0:
        raise InputError(f"{described}: no data rows")
    return Evaluation(
        ref.info,
        tuple(c.info for c in cands),
        tuple(tables.merge(p) for p in parts),
        described,
        source.sha256(),  # computed in the pass that read the rows
        rows,
        options.label,
        tuple(options.sensitive),
        options.threshold,
        ref.choice.name,
        sample,
        batch_size=options.batch_size,
    )


MAX_GROUPS_PER_ATTRIBUTE = 1000  # distinct values a sensitive column may hold (per chunk read)


def sensitive_of(cols: dict[str, np.ndarray], options: EvaluateOptions, chunk: data.Chunk) -> dict[str, np.ndarray]:
    """The sensitive columns of a chunk; an empty value is refused (it names no group)."""
    sens = {s: cols[s] for s in options.sensitive}
    for name, values in sens.items():
        # check the distinct values (few), not every row
        distinct = set(np.asarray(values).tolist())
        if len(distinct) > MAX_GROUPS_PER_ATTRIBUTE:  # a measurement, not groups: refused before any work
            raise InputError(
                f"{chunk.source}: sensitive column {name!r} has {len(distinct):,} distinct values in rows "
                f"{chunk.first_line}-{chunk.first_line + chunk.rows - 1}; a sensitive attribute names groups "
                f"(at most {MAX_GROUPS_PER_ATTRIBUTE:,}): bin a numeric column first, e.g. ages into bands"
            )
        if any(not str(v).strip() for v in distinct):
            empty = np.array([not str(v).strip() for v in np.asarray(values).tolist()])
            raise InputError(
                f"{chunk.source}, line {chunk.first_line + int(np.argmax(empty))}: sensitive column "
                f"{name!r} is empty; an empty group cannot be reported (write e.g. 'unknown')"
            )
    return sens


def score_chunk(
    ref: _Model, cands: Sequence[_Model], chunk: data.Chunk, options: EvaluateOptions
) -> tuple[list[CountsTable], dict[str, np.ndarray]] | None:
    """One chunk's paired table per candidate and the feeds it scored (None for an empty
    chunk). Every path (one process, Dask workers) scores chunks with this."""
    if chunk.rows == 0:
        return None
    cols = chunk.columns
    exclude = [options.label, *options.sensitive]
    for name in exclude:
        data.require_column(cols, name, chunk.source)
    y = labels_of(cols[options.label], options.label, chunk, options.positive_label)
    sens = sensitive_of(cols, options, chunk)
    feeds = modelio.build_feeds(
        ref.sig, cols, feature_columns=options.feature_columns, exclude=exclude, source=chunk.source
    )
    ref_scores, ref_dec = ref.decide(feeds, chunk, options.batch_size)
    out = []
    for cand in cands:
        cand_scores, cand_dec = cand.decide(feeds, chunk, options.batch_size)
        out.append(
            tables.from_arrays(
                sens, ref_dec, cand_dec, y, reference_score=ref_scores, candidate_score=cand_scores, bins=options.bins
            )
        )
    return out, feeds


def latency(model: str | Path, feeds: dict[str, np.ndarray], batch: int, repeats: int = 30) -> float:
    """Median seconds per ``session.run`` at ``batch`` rows, one thread (rows cycle if short)."""
    sess = modelio.open_session(model, threads=1)
    n = len(next(iter(feeds.values())))
    idx = np.arange(batch) % n
    batch_feeds = {k: v[idx] for k, v in feeds.items()}
    sess.run(None, batch_feeds)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        sess.run(None, batch_feeds)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))
