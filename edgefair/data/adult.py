"""The bundled UCI Adult census data (Becker and Kohavi 1996, CC BY 4.0; see
datasets/ADULT-README.md), gzipped inside the package."""

from __future__ import annotations

import gzip
import hashlib
from importlib import resources

import numpy as np

from edgefair.data.columns import Dataset
from edgefair.errors import InputError

ADULT_COLUMNS = (
    "age",
    "workclass",
    "fnlwgt",
    "education",
    "education_num",
    "marital_status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "capital_gain",
    "capital_loss",
    "hours_per_week",
    "native_country",
    "income",
)
ADULT_NUMERIC = ("age", "fnlwgt", "education_num", "capital_gain", "capital_loss", "hours_per_week")
ADULT_FEATURES = tuple(c for c in ADULT_COLUMNS if c != "income")
ADULT_LABEL = "income"
ADULT_SENSITIVE = ("race", "sex")


def load_adult(split: str = "test") -> Dataset:
    """The UCI Adult census data, named columns; ``income`` is 1 for '>50K', else 0.

    Numeric columns are float64, the others strings; '?' marks a missing category.
    """
    if split not in ("train", "test"):
        raise InputError(f"Adult split must be 'train' or 'test', got {split!r}")
    name = "adult.data.gz" if split == "train" else "adult.test.gz"
    raw = resources.files("edgefair.data").joinpath("datasets", name).read_bytes()
    text = gzip.decompress(raw).decode("utf-8")
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith("|")]
    fields = [[v.strip() for v in ln.split(",")] for ln in lines]
    cols = list(zip(*fields, strict=True))
    data: dict[str, np.ndarray] = {}
    pool: dict[str, str] = {}  # one object per distinct string, as pandas' reader and ours give
    for column, values in zip(ADULT_COLUMNS, cols, strict=True):
        if column == ADULT_LABEL:
            data[column] = np.array([v.rstrip(".") == ">50K" for v in values], dtype=np.int64)
        elif column in ADULT_NUMERIC:
            data[column] = np.array(values, dtype=np.float64)
        else:
            data[column] = np.array([pool.setdefault(v, v) for v in values], dtype=object)
    return Dataset(data, f"adult:{split}", hashlib.sha256(raw).hexdigest(), len(lines))
