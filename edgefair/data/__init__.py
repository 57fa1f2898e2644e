"""Data sources: CSV files (streamed and hashed in one read), the bundled Adult data, and
in-memory Datasets, each resolved once into a ``Source``. Numbers and strings, no ONNX."""

from edgefair.data.adult import ADULT_COLUMNS, ADULT_FEATURES, ADULT_NUMERIC, load_adult
from edgefair.data.columns import MISSING, Chunk, Dataset, binary_column, numeric, require_column
from edgefair.data.csvfile import iter_csv
from edgefair.data.source import REGISTERED, CsvSource, DatasetSource, Source, SourceDefaults, load, resolve

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
    "require_column",
    "resolve",
]
