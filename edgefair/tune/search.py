"""``edgefair.tune``: the search for the fastest (or smallest) variant that still passes the
fairness policy, certified on rows the search never saw.

1. The data is split (``splits``); a held-out split too small to pass even a copy of the
   reference is refused with the number of rows that would do.
2. Stages of variants (``space``) are built (or found in the cache), scored in one pass per
   stage on the search split (the reference scored once), gated, and timed together with
   the source (``measure``), until the stages or the budget run out.
3. The passing variant that beats the source most on the objective is chosen (by latency:
   among the finalists, on their pooled re-timing; see ``stages``), and certified by a
   fresh ``verify`` on the held-out split only, at the deployment batch.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgefair import data as datasets
from edgefair.convert.common import load_model, model_bytes
from edgefair.convert.quantize import QuantizeOptions, balanced_sample, quantisable_nodes
from edgefair.errors import InputError, ModelError
from edgefair.tune import space
from edgefair.tune.cache import Cache, context_key
from edgefair.tune.measure import time_models
from edgefair.tune.options import Progress, TuneOptions
from edgefair.tune.result import TuneResult, VariantResult, choose, frontier, summarise
from edgefair.tune.splits import SplitScorer, require_decidable, split_info, split_rows, subset
from edgefair.tune.stages import FINAL_REPEATS, combinations, fallbacks, final_timing, refine
from edgefair.verification import api
from edgefair.verification.gate import gate
from edgefair.verification.policy import Policy, load_policy
from edgefair.version import __version__


def _gz(blob: bytes) -> int:
    return len(gzip.compress(blob, compresslevel=6, mtime=0))


class _Search:
    """The state of one search: the splits, the cache, every variant tried so far."""

    def __init__(self, source_path: Path, scorer: SplitScorer, cache: Cache, policy: Policy, options: TuneOptions):
        self.path = source_path
        self.model = load_model(source_path)
        self.bytes = source_path.read_bytes()
        self.compressed = _gz(self.bytes)
        self.scorer = scorer
        self.cache = cache
        self.policy = policy
        self.options = options
        self.variants: list[VariantResult] = []
        self.specs: list[space.VariantSpec] = []
        self.seen: set[str] = set()
        self.started = time.monotonic()
        self.deadline = self.started + options.budget_minutes * 60.0
        self.stopped = False
        self.feeds = scorer.feeds(256)
        self.calibration = self._calibration()
        self.progress: Callable[[Progress], None] | None = None
        self._nodes: dict[str, tuple[str, ...]] = {}

    def nodes(self, options: QuantizeOptions) -> tuple[str, ...]:
        """The quantisable nodes under ``options`` (what node lists name), once per options."""
        key = json.dumps(space._plain(dataclasses.asdict(dataclasses.replace(options, nodes_to_exclude=()))))
        if key not in self._nodes:
            self._nodes[key] = quantisable_nodes(self.model, options)
        return self._nodes[key]

    def _calibration(self) -> dict[bool, dict[str, np.ndarray]]:
        """Calibration rows from the search split only: random, and equal rows per group."""
        o = self.scorer.options
        cols = self.scorer.split.dataset.columns
        n = len(next(iter(cols.values())))
        inputs = {t.name for t in self.scorer.reference.sig.inputs}
        dropped = {o.label, *(s for s in o.sensitive if s not in inputs)}  # a model may take a sensitive column
        features = {k: np.asarray(v) for k, v in cols.items() if k not in dropped}
        rng = np.random.default_rng(self.options.seed)
        random_rows = np.sort(rng.choice(n, size=min(self.options.calibration_rows, n), replace=False))
        keys = zip(*(np.asarray(cols[s]).astype(str) for s in o.sensitive), strict=True)
        groups = np.array(["\x1f".join(t) for t in keys])
        balanced = balanced_sample(groups, self.options.calibration_rows, self.options.seed)
        return {
            False: {k: v[random_rows] for k, v in features.items()},
            True: {k: v[balanced] for k, v in features.items()},
        }

    def out_of_budget(self) -> bool:
        tried = len(self.seen)
        if self.options.max_variants is not None and tried >= self.options.max_variants:
            return True
        return time.monotonic() > self.deadline

    def _build(self, spec: space.VariantSpec) -> tuple[str | None, str | None, bool]:
        """(model SHA-256, error, found in the cache)."""
        found = self.cache.build(spec.key())
        if found is not None:
            return found.get("sha256"), found.get("error"), True
        try:
            model = space.build(self.model, spec, self.calibration, self.scorer.options.feature_columns)
        except (ModelError, InputError) as exc:
            entry: dict[str, Any] = {"error": " ".join(str(exc).split())}
        else:
            entry = {"sha256": self.cache.put_model(model_bytes(model))}
        self.cache.record_build(spec.key(), entry)
        return entry.get("sha256"), entry.get("error"), False

    def run_stage(self, specs: Sequence[space.VariantSpec]) -> list[int]:
        """Build, score (one pass), gate and time the new specs; returns their indices."""
        built: list[tuple[space.VariantSpec, str | None, str | None, bool]] = []
        for spec in specs:
            if spec.key() in self.seen:
                continue
            if self.out_of_budget():
                self.stopped = True
                break
            self.seen.add(spec.key())
            built.append((spec, *self._build(spec)))
        self.cache.flush()
        shas = list(dict.fromkeys(sha for _, sha, _, _ in built if sha))
        tables = {sha: t for sha in shas if (t := self.cache.table(sha)) is not None}
        fresh = [sha for sha in shas if sha not in tables]
        if fresh:
            scored = self.scorer.tables([self.cache.model_path(sha) for sha in fresh])
            for sha, (table, how) in zip(fresh, scored, strict=True):
                self.cache.put_table(sha, table, how)
                tables[sha] = (table, how)
        blobs = {sha: self.cache.model_path(sha).read_bytes() for sha in shas}
        timed = time_models(
            self.bytes, [blobs[s] for s in shas], self.feeds, self.options.batch, self.options.timing_rounds
        )
        latency = dict(zip(shas, timed, strict=True))
        new = []
        for spec, model_sha, error, cached in built:  # spec, model hash, build error, found in the cache
            record = VariantResult(spec.name, spec.stage, spec.family, spec.knobs(), error=error, cached=cached)
            if model_sha is not None:
                table, how = tables[model_sha]
                record = dataclasses.replace(
                    record,
                    sha256=model_sha,
                    size_bytes=len(blobs[model_sha]),
                    compressed_bytes=_gz(blobs[model_sha]),
                    latency=latency[model_sha],
                    fairness=summarise(table, gate(table, self.policy)),
                    cached=cached and model_sha not in fresh,
                    scored=how,
                )
            self.variants.append(record)
            self.specs.append(spec)
            new.append(len(self.variants) - 1)
        self._report()
        return new

    def _report(self) -> None:
        if self.progress is None:
            return
        best = choose(self.variants, self.options.objective, self.compressed)
        v = None if best is None else self.variants[best]
        self.progress(
            Progress(
                tried=len(self.variants),
                cached=sum(x.cached for x in self.variants),
                best=v.name if v else None,
                best_value=v.objective(self.options.objective, self.compressed) if v else None,
                seconds_left=max(0.0, self.deadline - time.monotonic()),
            )
        )

    def value(self, i: int) -> float:
        return self.variants[i].objective(self.options.objective, self.compressed)

    def passing(self, indices: Sequence[int]) -> list[int]:
        return [i for i in indices if (f := self.variants[i].fairness) is not None and f.verdict == "pass"]


def tune(
    model: str | Path,
    data: str | Path | datasets.Dataset | datasets.Source,
    policy: Policy | str | Path | None = None,
    options: TuneOptions = TuneOptions(),
    *,
    cache_dir: str | Path | None = None,
    progress: Callable[[Progress], None] | None = None,
) -> TuneResult:
    """Search compressed variants of ``model`` against ``policy``; certify the choice on a
    held-out split. ``cache_dir`` (OUT_DIR/cache on the CLI) keeps builds and tables, so a
    rerun resumes; without it, models live in a temporary folder. Writes nothing else."""
    pol = policy if isinstance(policy, Policy) else load_policy(policy)
    source_path = Path(model)
    source_model = load_model(source_path)
    if not any(t.data_type == 1 for t in source_model.graph.initializer):  # 1: FLOAT
        raise ModelError(f"{source_path}: nothing to compress: the model has no float32 weights (initializers)")
    source = datasets.resolve(data)
    ev_options = api._options(
        source,
        pol,
        options.label,
        options.sensitive,
        options.threshold,
        options.positive_label,
        options.score_output,
        options.feature_columns,
    )
    ev_options = dataclasses.replace(ev_options, batch_size=options.batch)
    ds = source.read()
    search_rows, held_rows = split_rows(ds.rows, options.holdout, options.seed)
    if len(held_rows) == 0 or len(search_rows) == 0:
        raise InputError(f"{source.name}: {ds.rows} rows cannot be split at --holdout {options.holdout}")
    holder = tempfile.TemporaryDirectory(prefix="edgefair-tune-") if cache_dir is None else None
    try:
        return _run(
            source_path, source.name, ds, pol, options, ev_options, search_rows, held_rows, cache_dir, holder, progress
        )
    finally:
        if holder is not None:
            holder.cleanup()


def _run(
    source_path: Path,
    source_name: str,
    ds: datasets.Dataset,
    pol: Policy,
    options: TuneOptions,
    ev_options: Any,
    search_rows: np.ndarray,
    held_rows: np.ndarray,
    cache_dir: str | Path | None,
    holder: Any,
    progress: Callable[[Progress], None] | None,
) -> TuneResult:
    n = ds.rows
    search_split = subset(ds, search_rows, "search", describe(source_name, "search", search_rows, n, options))
    held = subset(ds, held_rows, "holdout", describe(source_name, "held-out", held_rows, n, options))
    held_scorer = SplitScorer(source_path, held, ev_options)
    require_decidable(held_scorer.identical(), pol, options.holdout, n)
    root = Path(cache_dir) if cache_dir is not None else Path(holder.name)
    context = context_key(
        {
            "source": hashlib.sha256(source_path.read_bytes()).hexdigest(),
            "data": ds.sha256,
            "holdout": options.holdout,
            "seed": options.seed,
            "batch": options.batch,
            "label": ev_options.label,
            "sensitive": list(ev_options.sensitive),
            "threshold": options.threshold,
            "positive_label": options.positive_label,
            "score_output": options.score_output,
            "features": list(options.feature_columns or ()),
            "calibration_rows": options.calibration_rows,
            "edgefair": __version__,
        }
    )
    search = _Search(
        source_path,
        SplitScorer(source_path, search_split, ev_options),
        Cache(root, context, cache_dir is not None),
        pol,
        options,
    )
    search.progress = progress
    base = search.run_stage(space.base_specs(options.families))
    if base and not any(search.variants[i].evaluated for i in base) and not search.stopped:
        errors = "; ".join(sorted({search.variants[i].error or "" for i in base}))[:300]
        raise ModelError(f"{source_path}: nothing to compress: every variant failed to build ({errors})")
    fallbacks(search, base)
    refined = refine(search, base)
    combinations(search, [*base, *refined])
    return _finish(search, source_path, source_name, held, search_split, held_rows, ds, pol, options)


def describe(source: str, side: str, rows: np.ndarray, total: int, options: TuneOptions) -> str:
    return f"{source} [{side} split: {len(rows)} of {total} rows, holdout {options.holdout}, seed {options.seed}]"


def _finish(
    search: _Search,
    source_path: Path,
    source_name: str,
    held: Any,
    search_split: Any,
    held_rows: np.ndarray,
    ds: datasets.Dataset,
    pol: Policy,
    options: TuneOptions,
) -> TuneResult:
    finalists = final_timing(search) if options.objective == "latency" else []
    on = frontier(search.variants, options.objective, search.compressed)
    variants = tuple(dataclasses.replace(v, on_frontier=i in on) for i, v in enumerate(search.variants))
    among = None  # by latency, only the finalists' models (pooled timing) may be chosen
    if options.objective == "latency":
        shas = {variants[i].sha256 for i in finalists}
        among = {i for i, v in enumerate(variants) if v.sha256 in shas}
    chosen = choose(list(variants), options.objective, search.compressed, among)
    certificate, blob, note = None, None, ""
    o = search.scorer.options
    if chosen is None:
        note = f"no variant passes the policy on the search split and beats the source on {options.objective}"
    else:
        sha = variants[chosen].sha256
        assert sha is not None
        path = search.cache.model_path(sha)
        blob = path.read_bytes()
        certificate = api.verify(
            source_path,
            path,
            held.dataset,
            pol,
            label=o.label,
            sensitive=o.sensitive,
            threshold=o.threshold,
            positive_label=o.positive_label,
            score_output=o.score_output,
            feature_columns=o.feature_columns,
            batch_size=options.batch,
        )
        if certificate.verdict != "pass":
            note = f"{variants[chosen].name} passed the search split but is {certificate.verdict} on the held-out split"
    elapsed = time.monotonic() - search.started
    return TuneResult(
        source={
            "path": str(source_path),
            "sha256": hashlib.sha256(search.bytes).hexdigest(),
            "size_bytes": len(search.bytes),
            "compressed_bytes": search.compressed,
        },
        objective=options.objective,
        batch=options.batch,
        policy=pol,
        variants=variants,
        chosen=chosen,
        certificate=certificate,
        chosen_model=blob,
        split=split_info(search_split, held, ds.rows, options.holdout, options.seed, ds.sha256),
        search={
            "budget_minutes": options.budget_minutes,
            "max_variants": options.max_variants,
            "families": list(options.families),
            "elapsed_seconds": round(elapsed, 3),
            "variants_tried": len(variants),
            "variants_cached": sum(v.cached for v in variants),
            "stopped_by_budget": search.stopped,
            "timing_rounds": options.timing_rounds,
            "finalists": finalists,
            "final_timing": {"repeats": FINAL_REPEATS, "rounds_each": 2 * options.timing_rounds},
        },
        data={
            "source": source_name,
            "label": o.label,
            "sensitive": list(o.sensitive),
            "threshold": o.threshold,
            "score_output": search.scorer.reference.choice.name,
        },
        note=note,
        holdout_rows=held_rows,
    )
