"""Policies: which fairness properties a candidate must keep, read from TOML.

    confidence = 0.95            # of every verdict, after adjustment for the number of checks
    adjustment = "holm"          # holm | bh | bonferroni | none
    min_group_size = 30          # smaller groups are reported as inconclusive, never gated
    inconclusive_fails = false   # does an inconclusive check fail the gate?
    gate_intersections = false   # also gate every combination of sensitive columns
    bootstrap_replicates = 2000
    seed = 0
    sensitive = ["race", "sex"]  # optional: the CLI's --sensitive wins

    [[checks]]
    kind = "difference_increase"  # candidate's between-group gap minus the reference's
    metric = "true_positive_rate"
    tolerance = 0.02

Check kinds: ``difference_increase`` (between-group gap may grow by at most tolerance),
``group_max`` (no group's candidate rate above tolerance, e.g. negative_flip_rate),
``group_drop`` (no group's metric may drop by more than tolerance), ``overall_drop``
(the overall metric may drop by at most tolerance), ``group_increase`` and
``overall_increase`` (the same for metrics where lower is better: the error metrics of
regression), ``ratio`` (the candidate's smallest between-groups ratio of the metric, min
over max as fairlearn's ``<metric>_ratio``, must be at least tolerance: the four-fifths
rule is ``kind = "ratio", metric = "selection_rate", tolerance = 0.8``). Regression
metrics (mean_absolute_error, ...) take tolerances in the label's units.
"""

from __future__ import annotations

import enum
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from edgefair.core import metrics, regression
from edgefair.errors import PolicyError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class CheckKind(enum.Enum):
    """What a check bounds. Each kind has one function in ``gate.CHECKS``."""

    DIFFERENCE_INCREASE = "difference_increase"  # the worst pair of groups may widen by at most tolerance
    GROUP_MAX = "group_max"  # no group's candidate rate above tolerance
    GROUP_DROP = "group_drop"  # no group's metric may drop by more than tolerance
    OVERALL_DROP = "overall_drop"  # the overall metric may drop by at most tolerance
    GROUP_INCREASE = "group_increase"  # no group's metric may grow by more than tolerance (errors)
    OVERALL_INCREASE = "overall_increase"  # the overall metric may grow by at most tolerance
    RATIO = "ratio"  # the candidate's smallest between-groups ratio must be at least tolerance


CHECK_KINDS = tuple(k.value for k in CheckKind)


class KindTable(dict):  # type: ignore[type-arg]
    """A gate's functions by check kind; a kind it does not gate is one line, not a KeyError."""

    def __missing__(self, kind: CheckKind) -> Any:
        raise PolicyError(
            f"check kind {kind.value!r} is gated by verify and compare (edgefair.verification.gate_kinds), not here"
        )


ADJUSTMENTS = ("holm", "bh", "bonferroni", "none")


DROP_KINDS = (CheckKind.GROUP_DROP, CheckKind.OVERALL_DROP, CheckKind.GROUP_INCREASE, CheckKind.OVERALL_INCREASE)


def small_estimate(kind: CheckKind, ref: float, cand: float) -> float:
    """What an ungated group reports, signed as a gated one would be: a cap the candidate's
    rate, a drop reference minus candidate (the increase kinds negate it afterwards)."""
    if kind is CheckKind.GROUP_MAX:
        return cand
    return ref - cand if kind in DROP_KINDS else cand - ref


@dataclass(frozen=True)
class Check:
    kind: CheckKind
    metric: str
    tolerance: float

    @property
    def name(self) -> str:
        return f"{self.metric}:{self.kind.value}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "metric": self.metric, "tolerance": self.tolerance}


@dataclass(frozen=True)
class Policy:
    checks: tuple[Check, ...]
    confidence: float = 0.95
    adjustment: str = "holm"
    min_group_size: int = 30
    inconclusive_fails: bool = False
    gate_intersections: bool = False
    bootstrap_replicates: int = 2000
    seed: int = 0
    sensitive: tuple[str, ...] = field(default=())

    @property
    def alpha(self) -> float:
        return 1.0 - self.confidence

    def to_dict(self) -> dict[str, Any]:
        doc = {f.name: getattr(self, f.name) for f in fields(self)}
        doc["checks"] = [c.to_dict() for c in self.checks]
        doc["sensitive"] = list(self.sensitive)
        return doc


DEFAULT_CHECKS: tuple[Check, ...] = (
    Check(CheckKind.DIFFERENCE_INCREASE, "true_positive_rate", 0.02),
    Check(CheckKind.DIFFERENCE_INCREASE, "selection_rate", 0.02),
    Check(CheckKind.GROUP_MAX, "negative_flip_rate", 0.02),
    Check(CheckKind.GROUP_DROP, "accuracy", 0.02),
    Check(CheckKind.OVERALL_DROP, "accuracy", 0.01),
)
DEFAULT_POLICY = Policy(DEFAULT_CHECKS)

MAX_SEED = 2**32 - 1  # what every numpy generator accepts, and what a report can name
MAX_MIN_GROUP_SIZE = 10**9

_TOP_KEYS = {
    "confidence": float,
    "adjustment": str,
    "min_group_size": int,
    "inconclusive_fails": bool,
    "gate_intersections": bool,
    "bootstrap_replicates": int,
    "seed": int,
    "sensitive": list,
    "checks": list,
}


def _typed(key: str, value: Any, expected: type, where: str) -> Any:
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        raise PolicyError(f"{where}: {key!r} must be {expected.__name__}, got {shown}")
    return value


def _check(entry: Any, index: int, where: str) -> Check:
    at = f"{where}: checks[{index}]"
    if not isinstance(entry, dict):
        raise PolicyError(f"{at} must be a table with kind, metric and tolerance")
    unknown = set(entry) - {"kind", "metric", "tolerance"}
    if unknown:
        raise PolicyError(f"{at}: unknown key {sorted(unknown)[0]!r}; expected kind, metric, tolerance")
    for key in ("kind", "metric", "tolerance"):
        if key not in entry:
            raise PolicyError(f"{at}: missing {key!r}")
    kind = _typed("kind", entry["kind"], str, at)
    metric = _typed("metric", entry["metric"], str, at)
    tolerance = _typed("tolerance", entry["tolerance"], float, at)
    if kind not in CHECK_KINDS:
        raise PolicyError(f"{at}: kind {kind!r} is not one of {', '.join(CHECK_KINDS)}")
    rates = [m.name for m in metrics.DECLARATIONS if m.is_rate]
    if metric not in rates and metric not in regression.METRICS[1:]:
        raise PolicyError(f"{at}: metric {metric!r} is not one of {', '.join([*rates, *regression.METRICS[1:]])}")
    paired = metric in regression.PAIRED or (metric in rates and metrics.get(metric).paired)
    if paired and kind != CheckKind.GROUP_MAX.value:
        # a flip rate describes the pair: there is no reference value to compare with
        raise PolicyError(f"{at}: {metric!r} compares the two models already; use it with kind 'group_max'")
    if metric in regression.METRICS:  # in the label's units
        if not 0.0 <= tolerance < math.inf:
            raise PolicyError(f"{at}: tolerance of {metric!r} must be a finite number >= 0, got {tolerance}")
    elif not 0.0 <= tolerance <= 1.0:
        raise PolicyError(f"{at}: tolerance must be in [0, 1], got {tolerance}")
    return Check(CheckKind(kind), metric, tolerance)


def policy_from_dict(doc: dict[str, Any], where: str = "policy") -> Policy:
    unknown = set(doc) - set(_TOP_KEYS)
    if unknown:
        raise PolicyError(f"{where}: unknown key {sorted(unknown)[0]!r}; known keys: {', '.join(_TOP_KEYS)}")
    values: dict[str, Any] = {}
    for key, expected in _TOP_KEYS.items():
        if key in doc:
            values[key] = _typed(key, doc[key], expected, where)
    checks = DEFAULT_CHECKS
    if "checks" in values:
        checks = tuple(_check(c, i, where) for i, c in enumerate(values.pop("checks")))
        if not checks:
            raise PolicyError(f"{where}: 'checks' is empty; give at least one check")
    if "sensitive" in values:
        values["sensitive"] = _sensitive(values["sensitive"], where)
    names = [c.name for c in checks]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise PolicyError(f"{where}: check {dup!r} is listed twice; give each kind and metric once")
    policy = Policy(checks, **values)
    if not 0.5 <= policy.confidence < 1.0:  # NaN fails too
        raise PolicyError(f"{where}: 'confidence' must be in [0.5, 1), got {policy.confidence}")
    if policy.adjustment not in ADJUSTMENTS:
        raise PolicyError(f"{where}: 'adjustment' must be one of {', '.join(ADJUSTMENTS)}, got {policy.adjustment!r}")
    if not 1 <= policy.min_group_size <= MAX_MIN_GROUP_SIZE:
        raise PolicyError(
            f"{where}: 'min_group_size' must be between 1 and {MAX_MIN_GROUP_SIZE}, got {policy.min_group_size}"
        )
    if not 100 <= policy.bootstrap_replicates <= 100_000:
        raise PolicyError(
            f"{where}: 'bootstrap_replicates' must be between 100 and 100000, got {policy.bootstrap_replicates}"
        )
    if not 0 <= policy.seed <= MAX_SEED:
        raise PolicyError(f"{where}: 'seed' must be an integer between 0 and {MAX_SEED} (2**32 - 1), got {policy.seed}")
    return policy


def _sensitive(value: list[Any], where: str) -> tuple[str, ...]:
    """Column names: non-empty strings, each once."""
    for i, name in enumerate(value):
        if not isinstance(name, str) or not name.strip():
            raise PolicyError(f"{where}: sensitive[{i}] must be a non-empty column name (a string), got {name!r}")
    names = tuple(s.strip() for s in value)
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise PolicyError(f"{where}: sensitive column {dup!r} is listed twice")
    return names


def load_policy(path: str | Path | Mapping[str, Any] | None) -> Policy:
    """The policy in a TOML file (or a mapping laid out as that file is), or the default policy for None."""
    if path is None:
        return DEFAULT_POLICY
    if isinstance(path, Mapping):
        return policy_from_dict(dict(path))
    if not isinstance(path, (str, Path)):
        raise PolicyError(f"policy must be a Policy, a TOML file's path or a mapping, got {type(path).__name__}")
    p = Path(path)
    if not p.exists():
        raise PolicyError(f"{p}: no such policy file")
    if p.is_dir():
        raise PolicyError(f"{p}: is a folder, expected a policy TOML file")
    try:
        text = p.read_text(encoding="utf-8-sig")  # an editor's byte-order mark is not TOML
    except UnicodeDecodeError as exc:
        raise PolicyError(f"{p}: not UTF-8 text (byte {exc.start}: {exc.reason}); expected a TOML file") from None
    except OSError as exc:
        raise PolicyError(f"{p}: cannot read the policy ({exc.strerror or exc})") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{p}: not valid TOML ({exc})") from None
    return policy_from_dict(doc, str(p))
