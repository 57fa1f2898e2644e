"""The search's later stages, each reading what the earlier ones found.

- ``fallbacks``: per-node float fallback (screen each weighted node alone, then keep float
  the nodes that move a group most and those whose quantisation costs time);
- ``combinations``: passing structured pruning levels x passing quantisations, and the best
  passing variant optimised offline;
- ``final_timing``: the fastest passing variants re-timed together before the choice.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from edgefair.convert.quantize import QuantMode
from edgefair.tune import space
from edgefair.tune.measure import time_models

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


def combinations(search: Any, base_indices: list[int]) -> None:
    if search.stopped:
        return
    passing = search.passing(range(len(search.variants)))
    fractions = [
        search.specs[i].prune_structured
        for i in search.passing(base_indices)
        if search.variants[i].family == "structured"
    ]
    quantised = [
        search.specs[i]
        for i in sorted(passing, key=lambda i: (search.value(i), i))
        if search.specs[i].quantize is not None
        and search.specs[i].quantize.mode is not QuantMode.FP16  # type: ignore[union-attr]
        and not search.specs[i].prune_structured
    ][:3]
    specs = space.combination_specs([f for f in fractions if f][-3:], quantised)
    if passing:
        best = min(passing, key=lambda i: (search.value(i), i))
        if not search.specs[best].optimise:
            specs.append(dataclasses.replace(search.specs[best], optimise=True, stage="combination"))
    search.run_stage(specs)


FINALISTS = 5


def final_timing(search: Any) -> list[int]:
    """Re-time the fastest passing variants together, with twice the rounds, and keep that
    measurement: picking the minimum of many noisy ratios favours a lucky one (the timing
    side of the multiple comparison), so the choice rests on a second, joint measurement."""
    passing = [i for i in search.passing(range(len(search.variants))) if search.variants[i].latency is not None]
    unique: dict[str, int] = {}
    for i in sorted(passing, key=lambda i: (search.value(i), i)):
        unique.setdefault(search.variants[i].sha256 or "", i)
    finalists = list(unique.values())[:FINALISTS]
    if not finalists:
        return []
    blobs = [search.cache.model_path(search.variants[i].sha256 or "").read_bytes() for i in finalists]
    rounds = 2 * search.options.timing_rounds
    timed = dict(
        zip(finalists, time_models(search.bytes, blobs, search.feeds, search.options.batch, rounds), strict=True)
    )
    for i, v in enumerate(search.variants):  # every variant with a finalist's bytes gets its measurement
        twin = next((f for f in finalists if search.variants[f].sha256 == v.sha256), None)
        if twin is not None:
            search.variants[i] = dataclasses.replace(v, latency=timed[twin])
    return finalists
