"""edgefair metrics vs fairlearn's MetricFrame on 1M rows, 10 groups; and the table bootstrap.

    python tools/bench/metrics.py            (about 1-2 minutes: fairlearn runs 3 times)
Group labels as integers, as strings in an object array (what a CSV or a pandas column
holds) and as a fixed-width numpy string array. Anchor: fairlearn's MetricFrame on the
same arrays, in the same run. Targets: >= 300x fairlearn with string labels (object
array), identical values; 1000 paired bootstrap replicates of a 1M-row table in < 1 s.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import sklearn.metrics as skm
from fairlearn import metrics as flm

import edgefair
from edgefair.core import stats, tables

N, GROUPS = 1_000_000, 10
FIVE = ("count", "selection_rate", "true_positive_rate", "false_positive_rate", "accuracy")


def best_of(fn, repeats: int) -> tuple[float, object]:
    """Fastest of ``repeats`` calls (seconds) and the last result."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def compare(y: np.ndarray, p: np.ndarray, g: np.ndarray, what: str, target: float | None) -> None:
    def ours():
        frame = edgefair.metric_frame(y, p, sensitive_features=g, metrics=FIVE)
        return frame.by_group, frame.difference()

    def theirs():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            frame = flm.MetricFrame(
                metrics={
                    "count": flm.count,
                    "selection_rate": flm.selection_rate,
                    "true_positive_rate": flm.true_positive_rate,
                    "false_positive_rate": flm.false_positive_rate,
                    "accuracy": skm.accuracy_score,
                },
                y_true=y,
                y_pred=p,
                sensitive_features=g,
            )
            return frame.by_group, frame.difference()

    small = slice(0, 1000)  # warm both up (first-call costs) on a few rows
    _ = edgefair.metric_frame(y[small], p[small], sensitive_features=g[small], metrics=FIVE).by_group
    _ = flm.MetricFrame(metrics=flm.count, y_true=y[small], y_pred=p[small], sensitive_features=g[small]).by_group
    t_ours, (ours_by_group, ours_diff) = best_of(ours, 5)
    t_fl, (oracle_by_group, oracle_diff) = best_of(theirs, 1)
    identical = all(
        abs(ours_by_group[str(k)][m] - float(row[m])) <= 1e-12 for k, row in oracle_by_group.iterrows() for m in FIVE
    )
    identical &= len(ours_by_group) == len(oracle_by_group)
    identical &= all(abs(ours_diff[m] - float(oracle_diff[m])) <= 1e-12 for m in FIVE)
    aim = f"target >= {target:.0f}x" if target else "no target"
    print(
        f"metrics, 1M rows x 10 groups, 5 metrics, {what}: edgefair {t_ours * 1e3:.1f} ms (best of 5), "
        f"fairlearn MetricFrame {t_fl * 1e3:.0f} ms -> {t_fl / t_ours:.0f}x ({aim}); identical values: {identical}"
    )


def main() -> None:
    rng = np.random.default_rng(0)
    g = rng.integers(0, GROUPS, N)
    y = rng.integers(0, 2, N)
    p = rng.integers(0, 2, N)
    names = np.array([f"group-{i}" for i in range(GROUPS)], dtype=object)
    compare(y, p, g, "integer groups", 200)
    compare(y, p, names[g], "string groups (object array)", 300)
    compare(y, p, names[g].astype(str), "string groups (numpy <U strings)", None)
    paired = tables.from_arrays({"g": g}, p, np.where(rng.random(N) < 0.02, 1 - p, p), y)
    t0 = time.perf_counter()
    reps = stats.bootstrap_counts(paired.counts, 1000, seed=1)
    from edgefair.core import metrics as m

    gaps = m.aggregate_difference(
        m.compute(reps, "true_positive_rate", "candidate"),
        m.compute(reps.sum(axis=1), "true_positive_rate", "candidate"),
        "between_groups",
    )
    t_boot = time.perf_counter() - t0
    print(
        f"paired bootstrap, 1000 replicates of a 1M-row table (+ a gap per replicate): "
        f"{t_boot * 1e3:.1f} ms (target < 1000 ms); mean gap {gaps.mean():.4f}"
    )


if __name__ == "__main__":
    main()
