"""edgefair: take a model to a CPU or edge device without letting subgroup fairness break.

Light names import eagerly; the ONNX-facing stages (convert, verify) load on first use so
``import edgefair`` stays cheap on a device.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from edgefair.errors import EdgefairError, InputError, ModelError, PolicyError
from edgefair.frame import MetricFrame, metric_frame
from edgefair.tables import CountsTable, from_arrays, merge

__version__ = "0.1.0"

_LAZY = {
    "verify": "edgefair.verification.api",
    "compare": "edgefair.verification.api",
    "VerifyReport": "edgefair.verification.api",
    "load_policy": "edgefair.verification.policy",
    "Policy": "edgefair.verification.policy",
    "FairSession": "edgefair.runtime.session",
}

__all__ = [
    "CountsTable",
    "EdgefairError",
    "InputError",
    "MetricFrame",
    "ModelError",
    "PolicyError",
    "__version__",
    "from_arrays",
    "merge",
    "metric_frame",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edgefair' has no attribute {name!r}")
