"""verify and compare with sample weights (``--weight COL``): one pass that counts each
candidate's paired integer table, as ``evaluate`` does, and sums the rows' weights into the
same cells (``core.weighted.WeightedTable``).

The report's weighted by-group metrics are fairlearn's weighted MetricFrame. The gate's
verdicts rest on the integer counts: its exact tests and multinomial bootstrap resample
rows, and a weight is not a row, so the report says that the verdicts are unweighted.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgefair import data, modelio
from edgefair.core import tables, weighted
from edgefair.errors import InputError
from edgefair.verification import evaluate as ev
from edgefair.verification.predictions import weight_column


def evaluate_weighted(
    reference: str | Path,
    candidates: Sequence[str | Path],
    source: data.Source,
    options: ev.EvaluateOptions,
    progress: ev.Progress | None = None,
) -> ev.Evaluation:
    """``evaluate`` of a binary classifier, plus a weighted table per candidate."""
    weight = options.weight
    assert weight is not None
    if not 0.0 <= options.threshold <= 1.0:
        raise InputError(f"threshold must be in [0, 1], got {options.threshold}")
    if weight in (options.label, *options.sensitive):
        raise InputError(f"--weight {weight!r} is also the label or a sensitive column")
    ref = ev._Model(reference, options.threshold, options.score_output)
    cands = [ev._Model(c, options.threshold, options.score_output) for c in candidates]
    for c in cands:
        ev._same_inputs(ref, c)
    columns = ev.needed_columns(ref.sig, options)
    counted: list[list[tables.CountsTable]] = [[] for _ in cands]
    summed: list[list[weighted.WeightedTable]] = [[] for _ in cands]
    rows, sample = 0, dict[str, np.ndarray]()
    for chunk in source.chunks(None if columns is None else [*columns, weight], options.read_rows):
        if chunk.rows == 0:
            continue
        cols = chunk.columns
        exclude = [options.label, *options.sensitive, weight]
        for name in exclude:
            data.require_column(cols, name, chunk.source)
        y = ev.labels_of(cols[options.label], options.label, chunk, options.positive_label)
        w = weight_column(cols[weight], weight, chunk.source, chunk.first_line)
        sens = ev.sensitive_of(cols, options, chunk)
        feeds = modelio.build_feeds(
            ref.sig, cols, feature_columns=options.feature_columns, exclude=exclude, source=chunk.source
        )
        ref_scores, ref_dec = ref.decide(feeds, chunk, options.batch_size)
        for i, cand in enumerate(cands):
            cand_scores, cand_dec = cand.decide(feeds, chunk, options.batch_size)
            counted[i].append(
                tables.from_arrays(
                    sens,
                    ref_dec,
                    cand_dec,
                    y,
                    reference_score=ref_scores,
                    candidate_score=cand_scores,
                    bins=options.bins,
                )
            )
            summed[i].append(weighted.from_arrays(sens, ref_dec, cand_dec, y, w))
        if not sample:
            sample = {k: v[:256].copy() for k, v in feeds.items()}
        rows += chunk.rows
        if progress:
            progress(chunk.rows)
    if rows == 0:
        raise InputError(f"{source.name}: no data rows")
    return ev.Evaluation(
        ref.info,
        tuple(c.info for c in cands),
        tuple(tables.merge(p) for p in counted),
        source.name,
        source.sha256(),
        rows,
        options.label,
        tuple(options.sensitive),
        options.threshold,
        ref.choice.name,
        sample,
        weighted_tables=tuple(weighted.merge(p) for p in summed),
        weight=weight,
        batch_size=options.batch_size,
    )
