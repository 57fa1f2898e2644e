"""Convert: export to ONNX, quantise, prune, check. Knows nothing of fairness.

result = edgefair.convert.convert_file("m.onnx", ConvertOptions(quantize=QuantizeOptions()))
edgefair.convert.save_model(result.model, "m.int8.onnx")     # writing is its own step
"""

from edgefair.convert.common import ConversionResult, load_model, save_model
from edgefair.convert.export import ExportOptions, ExportResult, export_file, export_model, export_sklearn, export_torch
from edgefair.convert.pipeline import ConvertOptions, ConvertResult, convert, convert_file
from edgefair.convert.prune import prune_magnitude, prune_structured
from edgefair.convert.quantize import CalibrationMethod, QuantizeOptions, QuantMode, quantize
from edgefair.convert.validation import CheckReport, ParityReport, calibration_sample, check, parity, validate

__all__ = [
    "CalibrationMethod",
    "CheckReport",
    "ConversionResult",
    "ConvertOptions",
    "ConvertResult",
    "ExportOptions",
    "ExportResult",
    "ParityReport",
    "QuantMode",
    "QuantizeOptions",
    "calibration_sample",
    "check",
    "convert",
    "convert_file",
    "export_file",
    "export_model",
    "export_sklearn",
    "export_torch",
    "load_model",
    "parity",
    "prune_magnitude",
    "prune_structured",
    "quantize",
    "save_model",
    "validate",
]
