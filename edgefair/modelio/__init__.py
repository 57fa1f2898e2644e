"""Model I/O: onnxruntime sessions, signatures, feeds from named columns, scores and
decisions from outputs, and the one model-safety check. numpy + onnxruntime + stdlib."""

from edgefair.modelio.feeds import build_feeds
from edgefair.modelio.outputs import OutputChoice, choose_output, decisions, decisions_list
from edgefair.modelio.session import ORT_TYPES, Signature, TensorSpec, open_session, signature

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
