"""Model I/O: onnxruntime sessions, signatures, feeds from named columns, scores and
decisions from outputs, and the one model-safety check. numpy + onnxruntime + stdlib.

Names load on first use, so the runtime (sessions and outputs) does not import the feeds."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

_LAZY = {
    "build_feeds": "edgefair.modelio.feeds",
    "OutputChoice": "edgefair.modelio.outputs",
    "choose_output": "edgefair.modelio.outputs",
    "decisions": "edgefair.modelio.outputs",
    "decisions_list": "edgefair.modelio.outputs",
    "ORT_TYPES": "edgefair.modelio.session",
    "Signature": "edgefair.modelio.session",
    "TensorSpec": "edgefair.modelio.session",
    "open_session": "edgefair.modelio.session",
    "signature": "edgefair.modelio.session",
}

__all__ = [
    "ORT_TYPES",
    "OutputChoice",
    "Signature",
    "TensorSpec",
    "build_feeds",
    "choose_output",
    "decisions",
    "decisions_list",
    "open_session",
    "signature",
]

if TYPE_CHECKING:  # for type checkers and IDEs; nothing is imported at run time
    from edgefair.modelio.feeds import build_feeds
    from edgefair.modelio.outputs import OutputChoice, choose_output, decisions, decisions_list
    from edgefair.modelio.session import ORT_TYPES, Signature, TensorSpec, open_session, signature


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edgefair.modelio' has no attribute {name!r}")
