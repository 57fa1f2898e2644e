"""What a tune is asked to do (``TuneOptions``) and what it reports while it runs (``Progress``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from edgefair.errors import InputError
from edgefair.tune import space
from edgefair.tune.result import OBJECTIVES


@dataclass(frozen=True, kw_only=True)
class TuneOptions:
    label: str | None = None
    sensitive: tuple[str, ...] | None = None
    feature_columns: tuple[str, ...] | None = None
    threshold: float = 0.5
    positive_label: str | None = None
    score_output: str | None = None
    objective: str = "latency"  # latency | size
    batch: int = 1  # the deployment batch: variants are scored and timed at it
    budget_minutes: float = 5.0
    max_variants: int | None = None  # a budget in variants (deterministic, unlike minutes)
    holdout: float = 0.3
    seed: int = 0
    families: tuple[str, ...] = space.FAMILIES
    calibration_rows: int = 1000
    timing_rounds: int = 15

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise InputError(f"objective {self.objective!r} is not one of {', '.join(OBJECTIVES)}")
        _whole("batch", self.batch)
        _whole("calibration_rows", self.calibration_rows)
        _whole("timing_rounds", self.timing_rounds)
        if self.max_variants is not None:
            _whole("max_variants", self.max_variants)
        if not (isinstance(self.budget_minutes, (int, float)) and math.isfinite(self.budget_minutes)):
            raise InputError(f"budget_minutes must be a number of minutes above 0, got {self.budget_minutes!r}")
        if self.budget_minutes <= 0:
            raise InputError(f"budget_minutes must be above 0, got {self.budget_minutes}")
        if not 0.0 < self.holdout < 1.0:  # NaN fails too
            raise InputError(f"holdout must be a fraction between 0 and 1 (exclusive), got {self.holdout}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**32:
            raise InputError(f"seed must be an integer between 0 and 2**32 - 1, got {self.seed!r}")
        unknown = [f for f in self.families if f not in space.FAMILIES]
        if unknown or not self.families:
            raise InputError(f"families must be some of {', '.join(space.FAMILIES)}, got {list(self.families)}")


def _whole(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{name} must be a whole number of at least 1, got {value!r}")


@dataclass(frozen=True)
class Progress:
    tried: int
    cached: int
    best: str | None  # the best passing variant so far
    best_value: float | None  # its objective value (ratio to the source)
    seconds_left: float
