"""edgefair: take a model to a CPU or edge device without letting subgroup fairness break.

Every public name loads on first use, so ``import edgefair.runtime`` on a device costs
little more than onnxruntime itself.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "EdgefairError": "edgefair.errors",
    "InputError": "edgefair.errors",
    "ModelError": "edgefair.errors",
    "PolicyError": "edgefair.errors",
    "MetricFrame": "edgefair.frame",
    "metric_frame": "edgefair.frame",
    "CountsTable": "edgefair.tables",
    "from_arrays": "edgefair.tables",
    "merge": "edgefair.tables",
    "verify": "edgefair.verification.api",
    "compare": "edgefair.verification.api",
    "VerifyReport": "edgefair.verification.api",
    "CompareReport": "edgefair.verification.api",
    "load_policy": "edgefair.verification.policy",
    "Policy": "edgefair.verification.policy",
    "FairSession": "edgefair.runtime.session",
}

__all__ = ["__version__", *_LAZY]

if TYPE_CHECKING:  # for type checkers and IDEs; nothing is imported at run time
    from edgefair.errors import EdgefairError, InputError, ModelError, PolicyError
    from edgefair.frame import MetricFrame, metric_frame
    from edgefair.runtime.session import FairSession
    from edgefair.tables import CountsTable, from_arrays, merge
    from edgefair.verification.api import CompareReport, VerifyReport, compare, verify
    from edgefair.verification.policy import Policy, load_policy


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edgefair' has no attribute {name!r}")
