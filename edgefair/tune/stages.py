"""The search's later stages, each reading what the earlier ones found.

- ``fallbacks``: per-node float fallback (screen each weighted node alone, then keep float
  the nodes that move a group most and those whose quantisation costs time);
- ``refine``: structured levels bisected between the largest passing and the next failing
  level (``space.REFINE_STEPS`` times), for plain and for refitted pruning;
- ``combinations``: the largest passing structured levels x the fastest passing
  quantisations, and the two best passing variants optimised offline and (float ones) with
  scalers folded;
- ``final_timing``: the choice's measurement. The ``FINALISTS`` fastest passing variants
  (distinct models, by the search's timing) are re-timed together with the source in
  ``FINAL_REPEATS`` independent timings (fresh sessions and order each, twice the search's
  rounds each), their rounds pooled (``measure.pooled``). Only finalists can be chosen: the
  one with the lowest pooled median ratio among those whose pooled upper quartile is below 1.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from edgefair.convert.quantize import QuantMode
from edgefair.tune import space
from edgefair.tune.measure import time_models
from edgefair.tune.result import VariantResult

FINAL_REPEATS = 4

# ``search`` below is a ``search._Search`` (typed Any: importing it back would be a cycle)


FALLBACK_BASES = 4  # per family: the fastest (smallest) base variants that get float fallbacks


def fallbacks(search: Any, base_indices: list[int]) -> None:
    """Per family (dynamic, static): screen each node alone from the family's fastest base
    variant, then, on its fastest base variants (those with the same node names), keep float
    the nodes that move a group most and those that cost more time than they save."""
    for family in ("dynamic", "static"):
        members = [i for i in base_indices if search.variants[i].family == family and search.variants[i].evaluated]
        if not members or search.stopped:
            continue
        members.sort(key=lambda i: (search.value(i), i))
        base = search.specs[members[0]]
        assert base.quantize is not None
        nodes = search.nodes(base.quantize)
        if len(nodes) < 2:
            continue  # one node kept float is the source itself
        screened = search.run_stage(space.node_specs(base, nodes))
        alone = {}
        for i in screened:
            spec = search.specs[i]
            assert spec.quantize is not None
            quantised = [n for n in nodes if n not in spec.quantize.nodes_to_exclude]
            if search.variants[i].evaluated and len(quantised) == 1:
                alone[quantised[0]] = search.variants[i]
        harmful = sorted(alone, key=lambda n: (-alone[n].fairness.worst_excess, n))  # type: ignore[union-attr]
        slow: list[str] = []
        if search.options.objective == "latency":  # quantising it alone costs time: keep it float
            slow = [n for n in nodes if n in alone and (lat := alone[n].latency) is not None and lat.ratio > 1.0]
        specs = []
        for i in members[:FALLBACK_BASES]:
            q = search.specs[i].quantize
            if q is not None and set(search.nodes(q)) == set(nodes):
                specs.extend(space.fallback_specs(search.specs[i], harmful, slow, nodes))
        search.run_stage(specs)


def refine(search: Any, base_indices: list[int]) -> list[int]:
    """Bisect the structured levels near the fairness boundary, plain and refitted pruning
    each on its own levels; returns the new indices."""
    new: list[int] = []
    for _ in range(space.REFINE_STEPS):
        specs = []
        for refit in (False, True):
            tried = [(search.specs[i], search.variants[i]) for i in [*base_indices, *new]]
            specs.extend(space.refine_specs(structured_levels(tried, refit), refit))
        if not specs or search.stopped:
            break
        new.extend(search.run_stage(specs))
    return new


def structured_levels(tried: list[tuple[space.VariantSpec, VariantResult]], refit: bool) -> dict[float, bool]:
    """Fraction -> passed, of the evaluated structured-only variants, plain or refitted."""
    return {
        spec.prune_structured: v.fairness.verdict == "pass"
        for spec, v in tried
        if spec.family == "structured" and spec.prune_structured and spec.refit is refit and v.fairness is not None
        if v.evaluated and not spec.prune_magnitude
    }


def combinations(search: Any, base_indices: list[int]) -> None:
    if search.stopped:
        return
    passing = search.passing(range(len(search.variants)))
    structured = sorted(  # the three largest passing levels, plain or refitted
        (search.specs[i] for i in search.passing(base_indices) if search.variants[i].family == "structured"),
        key=lambda s: (-(s.prune_structured or 0.0), s.refit),
    )[:3]
    quantised = [
        search.specs[i]
        for i in sorted(passing, key=lambda i: (search.value(i), i))
        if search.specs[i].quantize is not None
        and search.specs[i].quantize.mode is not QuantMode.FP16  # type: ignore[union-attr]
        and not search.specs[i].prune_structured
    ][:3]
    specs = space.combination_specs(structured, quantised)
    search.run_stage(specs)
    passing = search.passing(range(len(search.variants)))
    finishing = []
    for i in sorted(passing, key=lambda i: (search.value(i), i))[:2]:  # the two best so far
        spec = search.specs[i]
        if not spec.optimise:
            finishing.append(dataclasses.replace(spec, optimise=True, stage="combination"))
        if not spec.fold_scalers and spec.quantize is None:  # folding is for float layers (see space.build)
            finishing.append(dataclasses.replace(spec, fold_scalers=True, stage="combination"))
    search.run_stage(finishing)


FINALISTS = 6


def final_timing(search: Any) -> list[int]:
    """Re-time the fastest passing variants (see the module docstring) and keep that
    measurement: picking the minimum of many noisy ratios favours a lucky one (the timing
    side of the multiple comparison), so the choice rests on a second, pooled measurement.
    Returns the finalists' indices (the only variants the choice may take)."""
    passing = [i for i in search.passing(range(len(search.variants))) if search.variants[i].latency is not None]
    unique: dict[str, int] = {}
    for i in sorted(passing, key=lambda i: (search.value(i), i)):
        unique.setdefault(search.variants[i].sha256 or "", i)
    finalists = list(unique.values())[:FINALISTS]
    if not finalists:
        return []
    blobs = [search.cache.model_path(search.variants[i].sha256 or "").read_bytes() for i in finalists]
    rounds = 2 * search.options.timing_rounds
    measured = time_models(
        search.bytes, blobs, search.feeds, search.options.batch, rounds, seed=1000, repeats=FINAL_REPEATS
    )
    timed = dict(zip(finalists, measured, strict=True))
    for i, v in enumerate(search.variants):  # every variant with a finalist's bytes gets its measurement
        twin = next((f for f in finalists if search.variants[f].sha256 == v.sha256), None)
        if twin is not None:
            search.variants[i] = dataclasses.replace(v, latency=timed[twin])
    return finalists
