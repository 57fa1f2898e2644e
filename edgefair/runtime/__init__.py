"""The edge runtime: numpy + onnxruntime + the standard library only.

``FairSession`` loads on first use so that ``import edgefair.runtime`` costs little more
than ``import onnxruntime``.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {
    "FairSession": "edgefair.runtime.session",
    "load_bundle": "edgefair.runtime.bundle",
    "CounterStore": "edgefair.runtime.store",
    "Coded": "edgefair.runtime.coding",
}
__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edgefair.runtime' has no attribute {name!r}")
