"""edgefair: take a model to a CPU or edge device without letting subgroup fairness break.

Every public name loads on first use, so ``import edgefair.runtime`` on a device costs
little more than onnxruntime itself.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from edgefair.version import __version__

_LAZY = {
    "EdgefairError": "edgefair.errors",
    "InputError": "edgefair.errors",
    "ModelError": "edgefair.errors",
    "PolicyError": "edgefair.errors",
    "MetricFrame": "edgefair.core.frame",
    "metric_frame": "edgefair.core.frame",
    "CountsTable": "edgefair.core.tables",
    "from_arrays": "edgefair.core.tables",
    "merge": "edgefair.core.tables",
    "verify": "edgefair.verification.api",
    "compare": "edgefair.verification.api",
    "VerifyReport": "edgefair.verification.api",
    "CompareReport": "edgefair.verification.api",
    "load_policy": "edgefair.verification.policy",
    "Policy": "edgefair.verification.policy",
    "FairSession": "edgefair.runtime.session",
    "build_bundle": "edgefair.bundling",
    "tune": "edgefair.tune",
    "TuneResult": "edgefair.tune.result",
}

__all__ = ["__version__", *_LAZY]

if TYPE_CHECKING:  # for type checkers and IDEs; nothing is imported at run time
    from edgefair.bundling import build_bundle
    from edgefair.core.frame import MetricFrame, metric_frame
    from edgefair.core.tables import CountsTable, from_arrays, merge
    from edgefair.errors import EdgefairError, InputError, ModelError, PolicyError
    from edgefair.runtime.session import FairSession
    from edgefair.tune import tune
    from edgefair.tune.result import TuneResult
    from edgefair.verification.api import CompareReport, VerifyReport, compare, verify
    from edgefair.verification.policy import Policy, load_policy


SUBPACKAGES = ("convert", "core", "data", "modelio", "report", "runtime", "serve", "verification")
MODULES = {"spark": "edgefair.distributed.spark"}  # ``edgefair.spark``: verify on Spark (pyspark loads when used)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    if name in SUBPACKAGES:  # ``edgefair.report`` without importing it first
        return import_module(f"edgefair.{name}")
    if name in MODULES:
        return import_module(MODULES[name])
    raise AttributeError(f"module 'edgefair' has no attribute {name!r}")
