"""Prometheus exposition and the /fairness summary, both computed from the counters.

Label sets are bounded: groups come from the counters' value sets (the manifest's known
values, or at most a capped number learned, plus 'other' and 'unknown'), never from a
client's free text. Prediction and outcome counters only ever grow.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from typing import Any

import numpy as np

from edgefair.core import metrics as m
from edgefair.core import stats
from edgefair.errors import EdgefairError
from edgefair.runtime.counters import OutcomeStats

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = {}
        self.latency = {e: [0] * (len(BUCKETS) + 1) for e in ("infer", "other")}
        self.latency_sum = {"infer": 0.0, "other": 0.0}
        self.outcomes = OutcomeStats()

    def request(self, endpoint: str, status: int, seconds: float) -> None:
        with self._lock:
            key = (endpoint, status)
            self.requests[key] = self.requests.get(key, 0) + 1
            i = bisect_left(BUCKETS, seconds)  # the first bucket with seconds <= its bound, else +Inf
            self.latency[endpoint][i] += 1
            self.latency_sum[endpoint] += seconds

    def outcome_stats(self, result: OutcomeStats) -> None:
        with self._lock:
            self.outcomes.joined += result.joined
            self.outcomes.unknown_id += result.unknown_id

    def exposition(self, session: Any, min_cell: int = 11) -> str:
        """Prometheus text. Per-group series whose count is under ``min_cell`` are left out
        until they reach it, with a complement and outcome pairs so subtraction cannot give a
        small cell back (a series never shrinks; a complement may leave one out for a while)."""
        lines = [
            "# HELP edgefair_requests_total HTTP requests by endpoint and status code.",
            "# TYPE edgefair_requests_total counter",
        ]
        with self._lock:
            for (endpoint, status), n in sorted(self.requests.items()):
                lines.append(f'edgefair_requests_total{{endpoint="{endpoint}",code="{status}"}} {n}')
            lines += [
                "# HELP edgefair_request_duration_seconds Request latency.",
                "# TYPE edgefair_request_duration_seconds histogram",
            ]
            for endpoint, counts in self.latency.items():
                running = 0
                for bound, hits in zip([*BUCKETS, float("inf")], counts, strict=True):
                    running += hits
                    le = "+Inf" if bound == float("inf") else repr(bound)
                    lines.append(
                        f'edgefair_request_duration_seconds_bucket{{endpoint="{endpoint}",le="{le}"}} {running}'
                    )
                lines.append(
                    f'edgefair_request_duration_seconds_sum{{endpoint="{endpoint}"}} {self.latency_sum[endpoint]}'
                )
                lines.append(f'edgefair_request_duration_seconds_count{{endpoint="{endpoint}"}} {running}')
            outcome_unknown = self.outcomes.unknown_id
        table = session.table()
        values = session.describe().sensitive
        lines += [
            "# HELP edgefair_predictions_total Predictions by sensitive attribute, group and decision.",
            "# TYPE edgefair_predictions_total counter",
        ]
        outcome_lines = [
            "# HELP edgefair_outcomes_total Joined outcomes by attribute, group, decision, label.",
            "# TYPE edgefair_outcomes_total counter",
        ]
        for attr in table.attributes:
            marginal = table.marginal([attr])
            index = {k[0]: i for i, k in enumerate(marginal.groups)}
            cells = {}
            for group in values[attr]:
                c: np.ndarray = marginal.counts[index[group]] if group in index else np.zeros((3, 2, 2), np.int64)
                by_decision = c.sum(axis=(0, 2))  # decisions are on the diagonal for one model
                for d in (0, 1):
                    cells[group, d] = (int(by_decision[d]), int(c[0, d, :].sum()), int(c[1, d, :].sum()))
            # the same rule as /fairness, on cells: one small cell gets a complement (the shown
            # cells and the total rows would give it back); an outcome cell is shown only with its
            # pair (a prediction count less the other label's gives it back once all are labelled)
            # (cells no row reached do not hide anything: a reader may well know them to be empty)
            hidden = withheld_groups({k: v[0] for k, v in cells.items() if v[0]}, min_cell)
            hidden |= {k for k, v in cells.items() if not v[0]}
            for (group, d), (predicted, label0, label1) in cells.items():
                if (group, d) in hidden:
                    continue
                lines.append(
                    f'edgefair_predictions_total{{attribute="{_label(attr)}",group="{_label(group)}",'
                    f'decision="{d}"}} {predicted}'
                )
                if min(label0, label1) >= min_cell:
                    for y, n in ((0, label0), (1, label1)):
                        outcome_lines.append(
                            f'edgefair_outcomes_total{{attribute="{_label(attr)}",group="{_label(group)}",'
                            f'decision="{d}",label="{y}"}} {n}'
                        )
        lines += outcome_lines
        lines += [
            "# HELP edgefair_outcomes_unknown_id_total Outcomes whose id matched no pending prediction.",
            "# TYPE edgefair_outcomes_unknown_id_total counter",
            f"edgefair_outcomes_unknown_id_total {outcome_unknown}",
        ]
        return "\n".join(lines) + "\n"


def withheld_groups(sizes: dict[Any, int], min_cell: int) -> set[Any]:
    """Groups under ``min_cell`` rows, plus the smallest other one when only one is under
    (complementary suppression: otherwise the total minus the shown groups gives it away)."""
    small = {g for g, n in sizes.items() if n < min_cell}
    if len(small) == 1 and len(sizes) > 1:
        small.add(min((n, g) for g, n in sizes.items() if g not in small)[1])
    return small


def fairness_summary(session: Any, min_cell: int, confidence: float = 0.95) -> dict[str, Any]:
    """By-group rates with Wilson intervals under one privacy rule: a group under ``min_cell``
    rows is withheld (with a complement, so subtraction cannot recover it), and a rate is shown
    only when its numerator and the rest of its denominator both hold ``min_cell`` rows (rate
    and rows together would give the numerator away)."""
    table = session.table()
    out: dict[str, Any] = {
        "rows": table.rows,
        "labelled_rows": int(table.counts[:, :2].sum()),
        "min_cell": min_cell,
        "by_attribute": {},
    }
    names = ("selection_rate", "true_positive_rate", "false_positive_rate", "accuracy")
    allowed: set[tuple[str, str]] = set()  # (metric, "attr=value") this response may show, drift included
    for attr in table.attributes:
        marginal = table.marginal([attr])
        sizes = {key[0]: int(marginal.counts[i].sum()) for i, key in enumerate(marginal.groups)}
        hidden = withheld_groups(sizes, min_cell)
        groups: dict[str, Any] = {}
        for i, key in enumerate(marginal.groups):
            if key[0] in hidden:
                groups[key[0]] = {"suppressed": True, "note": f"under {min_cell} rows, or its complement"}
                continue
            counts = marginal.counts[i]
            row: dict[str, Any] = {"count": sizes[key[0]]}
            allowed.add(("score_psi", f"{attr}={key[0]}"))
            for metric in names:
                num, den = (int(x) for x in m.parts(counts, metric))
                if min(num, den - num) < min_cell:
                    row[metric] = None
                    continue
                allowed.add((metric, f"{attr}={key[0]}"))
                low, high = stats.wilson_interval(num, den, confidence)
                row[metric] = {"value": num / den, "interval": [float(low), float(high)], "rows": den}
            groups[key[0]] = row
        out["by_attribute"][attr] = groups
    try:
        result = session.drift()
        # a drift row gives the field rate and its rows, so it is shown only where the group's own
        # rate is: otherwise it would give back the small cell the rule above withholds
        shown = [r for r in result["rows"] if (r["metric"], r["group"]) in allowed]
        out["drift"] = {
            "verdict": result["verdict"],
            "rows": shown,
            "note": f"the verdict covers every group; {len(result['rows']) - len(shown)} rows on small groups withheld",
        }
    except EdgefairError as exc:  # no certificate: say so instead of failing the endpoint
        out["drift"] = {"verdict": None, "note": str(exc)}
    return out
