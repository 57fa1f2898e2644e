"""A scikit-learn transformer skl2onnx has no converter for (importable, so a pickle of it loads)."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin


class Doubler(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    def fit(self, x: Any, y: Any = None) -> Doubler:
        return self

    def transform(self, x: Any) -> np.ndarray:
        return np.asarray(x, np.float64) * 2.0
