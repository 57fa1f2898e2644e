"""Data sources: CSV files (streamed and hashed in one read), the bundled Adult data, and
in-memory Datasets, each resolved once into a ``Source``. Numbers and strings, no ONNX.

Names load on first use, so the device runtime (which needs only ``columns``) does not pay
for the readers when it imports ``edgefair.data.columns``."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names, for type checkers
    from edgefair.data.adult import ADULT_COLUMNS, ADULT_FEATURES, ADULT_NUMERIC, load_adult
    from edgefair.data.columns import (
        MISSING,
        Chunk,
        Dataset,
        binary_column,
        numeric,
        refuse_missing_scored_nan,
        require_column,
    )
    from edgefair.data.csvfile import iter_csv
    from edgefair.data.source import REGISTERED, CsvSource, DatasetSource, Source, SourceDefaults, load, resolve

_LAZY = {
    "ADULT_COLUMNS": "edgefair.data.adult",
    "ADULT_FEATURES": "edgefair.data.adult",
    "ADULT_NUMERIC": "edgefair.data.adult",
    "load_adult": "edgefair.data.adult",
    "MISSING": "edgefair.data.columns",
    "Chunk": "edgefair.data.columns",
    "Dataset": "edgefair.data.columns",
    "binary_column": "edgefair.data.columns",
    "numeric": "edgefair.data.columns",
    "refuse_missing_scored_nan": "edgefair.data.columns",
    "require_column": "edgefair.data.columns",
    "iter_csv": "edgefair.data.csvfile",
    "REGISTERED": "edgefair.data.source",
    "CsvSource": "edgefair.data.source",
    "DatasetSource": "edgefair.data.source",
    "Source": "edgefair.data.source",
    "SourceDefaults": "edgefair.data.source",
    "load": "edgefair.data.source",
    "resolve": "edgefair.data.source",
}

__all__ = [
    "ADULT_COLUMNS",
    "ADULT_FEATURES",
    "ADULT_NUMERIC",
    "MISSING",
    "REGISTERED",
    "Chunk",
    "CsvSource",
    "Dataset",
    "DatasetSource",
    "Source",
    "SourceDefaults",
    "binary_column",
    "iter_csv",
    "load",
    "load_adult",
    "numeric",
    "refuse_missing_scored_nan",
    "require_column",
    "resolve",
]
assert sorted(__all__) == sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'edgefair.data' has no attribute {name!r}")
