"""Tune: search compressed variants of a model for the fastest (or smallest) one that still
passes the fairness policy, measured on this machine, certified on held-out rows.

    result = edgefair.tune("m.onnx", "data.csv", options=TuneOptions(label="y", sensitive=("sex",)))
    edgefair.tune.write(result, "out/")      # writing is its own step

Stages: ``space`` (variants), ``measure`` (latency), ``splits`` (search/held-out, scoring),
``cache``, ``search`` (the loop), ``result`` (records, frontier, choice), ``output``
(JSON, terminal table, HTML, files).
"""

import sys
import types
from typing import Any

from edgefair.tune.options import Progress, TuneOptions
from edgefair.tune.output import write
from edgefair.tune.result import TuneResult, VariantResult
from edgefair.tune.search import tune

__all__ = ["Progress", "TuneOptions", "TuneResult", "VariantResult", "tune", "write"]


class _CallableModule(types.ModuleType):
    """``edgefair.tune(...)`` is the function, whether the facade resolved the name or an
    ``import edgefair.tune...`` bound the package to it first (a subpackage named like a
    public function shadows it; see docs/ARCHITECTURE.md)."""

    def __call__(self, *args: Any, **kwargs: Any) -> TuneResult:
        return tune(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
