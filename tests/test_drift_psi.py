"""The score-distribution drift check (``score_psi`` in ``runtime.drift``) against an
independent oracle: scores drawn from mixtures of uniforms, whose bin probabilities, and so
the true PSI between field and baseline, are computed here in closed form.

The promises: the reported estimate lies in its interval; the interval covers the true PSI;
with no drift and few rows the check is inconclusive (never pass, never fail) and with many
rows it passes; under a real shift it never passes and, with enough rows, fails. The old
interval (``boot - 2*bias`` clipped at 0) passed 40 rows from uniform(0, 0.5) against a
uniform baseline, and gave [0, 0] (pass) to any group whose field histogram equals the
baseline's, 59 rows or 59,000.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgefair.core.tables import DEFAULT_BINS, CountsTable, from_arrays
from edgefair.runtime.drift import DriftTolerances, drift

EDGES = np.linspace(0.0, 1.0, DEFAULT_BINS + 1)
TOL = DriftTolerances().psi

# (weight of uniform(0, 1), low, high): w * U(0, 1) + (1 - w) * U(low, high)
UNIFORM = (1.0, 0.0, 1.0)
MILD = (0.8, 0.0, 0.5)  # true PSI about 0.04
OVER = (0.45, 0.0, 0.5)  # about 0.34, above the tolerance
LARGE = (0.2, 0.25, 0.75)  # about 0.84


def bin_probs(mix: tuple[float, float, float]) -> np.ndarray:
    w, lo, hi = mix
    overlap = np.clip(np.minimum(EDGES[1:], hi) - np.maximum(EDGES[:-1], lo), 0.0, None) / (hi - lo)
    return np.asarray(w * np.diff(EDGES) + (1.0 - w) * overlap)


def true_psi(field: tuple[float, float, float], base: tuple[float, float, float]) -> float:
    p, q = bin_probs(field), bin_probs(base)
    return float(((p - q) * np.log(p / q)).sum())


def draw(mix: tuple[float, float, float], n: int, rng: np.random.Generator) -> np.ndarray:
    w, lo, hi = mix
    return np.where(rng.random(n) < w, rng.uniform(0.0, 1.0, n), rng.uniform(lo, hi, n))


def baseline(scores: np.ndarray, rng: np.random.Generator) -> CountsTable:
    d = (scores >= 0.5).astype(int)
    n = len(scores)
    return from_arrays({"g": ["A"] * n}, d, d, rng.integers(0, 2, n), reference_score=scores, candidate_score=scores)


def field(scores: np.ndarray) -> CountsTable:
    n = len(scores)
    return from_arrays({"g": ["A"] * n}, (scores >= 0.5).astype(int), None, None, reference_score=scores)


def psi_row(field_mix: tuple[float, float, float], nf: int, nb: int, seed: int) -> dict:  # type: ignore[type-arg]
    rng = np.random.default_rng(seed)
    base = baseline(draw(UNIFORM, nb, rng), rng)
    (row,) = [r for r in drift(field(draw(field_mix, nf, rng)), base, seed=seed)["rows"] if r["metric"] == "score_psi"]
    return row


def verdicts(field_mix: tuple[float, float, float], nf: int, nb: int, seeds: int = 20) -> dict[str, int]:
    out = {"pass": 0, "fail": 0, "inconclusive": 0}
    for s in range(seeds):
        out[psi_row(field_mix, nf, nb, s)["verdict"]] += 1
    return out


def test_the_oracle() -> None:
    assert true_psi(UNIFORM, UNIFORM) == 0.0
    assert 0.02 < true_psi(MILD, UNIFORM) < 0.06
    assert 0.3 < true_psi(OVER, UNIFORM) < 0.4
    assert true_psi(LARGE, UNIFORM) > 0.8
    assert bin_probs(LARGE).sum() == pytest.approx(1.0)


@pytest.mark.parametrize("mix", [UNIFORM, MILD, OVER, LARGE, (0.0, 0.0, 0.5)])
@pytest.mark.parametrize("nf", [30, 40, 100, 1000])
def test_the_estimate_lies_in_its_interval_and_the_verdict_follows_the_bounds(mix, nf) -> None:  # type: ignore[no-untyped-def]
    for s in range(5):
        row = psi_row(mix, nf, 2000, s)
        low, high = row["interval"]
        assert 0.0 <= low <= row["value"] <= high, row
        assert low <= row["raw_psi"] <= high, row
        expected = "pass" if high <= TOL else "fail" if low > TOL else "inconclusive"
        assert row["verdict"] == expected, row


@pytest.mark.parametrize(
    ("mix", "nf"),
    [(UNIFORM, 300), (UNIFORM, 1000), (MILD, 1000), (OVER, 300), (OVER, 1000), (LARGE, 300), (LARGE, 1000)],
)
def test_the_interval_covers_the_true_psi(mix, nf) -> None:  # type: ignore[no-untyped-def]
    truth = true_psi(mix, UNIFORM)
    seeds = 40
    intervals = [psi_row(mix, nf, 2000, s)["interval"] for s in range(seeds)]
    covered = sum(1 for low, high in intervals if low <= truth <= high)
    assert covered >= 0.88 * seeds, (truth, covered)


def test_no_drift_with_few_rows_is_inconclusive_never_pass_nor_fail() -> None:
    for nf in (30, 59, 100):
        assert verdicts(UNIFORM, nf, 2000, 30) == {"pass": 0, "fail": 0, "inconclusive": 30}, nf


def test_no_drift_with_many_rows_passes() -> None:
    counts = verdicts(UNIFORM, 4000, 4000)
    assert counts["fail"] == 0 and counts["pass"] >= 18, counts


@pytest.mark.parametrize("mix", [LARGE, (0.0, 0.0, 0.5), (0.0, 0.25, 0.75)])
def test_a_large_shift_never_passes_and_fails_with_enough_rows(mix) -> None:  # type: ignore[no-untyped-def]
    for nf in (30, 60):
        assert verdicts(mix, nf, 2000)["pass"] == 0, (mix, nf)
    assert verdicts(mix, 300, 2000)["fail"] == 20, mix


def test_a_shift_just_over_the_tolerance_never_passes() -> None:
    for nf in (40, 1000, 3000):
        assert verdicts(OVER, nf, 2000)["pass"] == 0, nf
    assert verdicts(OVER, 3000, 3000)["fail"] >= 18


def test_a_field_histogram_equal_to_the_baseline_is_not_proof_on_few_rows() -> None:
    """The all-zero report: the field was the certificate's own rows, so both histograms are
    equal and the raw PSI is 0. That is right; the old interval [0, 0] (pass) for a group of
    59 rows was not: 59 rows in 50 bins cannot show that the PSI is under 0.2."""
    rng = np.random.default_rng(7)
    n = {"small": 59, "large": 20000}
    g = np.repeat(list(n), list(n.values()))
    s = rng.beta(2, 5, len(g))
    d = (s >= 0.5).astype(int)
    base = from_arrays({"g": g}, d, d, rng.integers(0, 2, len(g)), reference_score=s, candidate_score=s)
    same = from_arrays({"g": g}, d, None, None, reference_score=s)
    rows = {r["group"]: r for r in drift(same, base)["rows"] if r["metric"] == "score_psi"}
    small, large = rows["g=small"], rows["g=large"]
    assert small["raw_psi"] == pytest.approx(0.0, abs=1e-12) and small["value"] == 0.0
    assert small["interval"][0] == 0.0 and small["interval"][1] > TOL and small["verdict"] == "inconclusive"
    assert large["interval"][1] <= TOL and large["verdict"] == "pass"


def test_the_reported_example_no_longer_passes() -> None:
    """40 field rows uniform on [0, 0.5] against 2000 uniform baseline rows: the old check
    reported value 0.229, interval [0.0, 0.173], pass."""
    rng = np.random.default_rng(1)
    sb = rng.uniform(0, 1, 2000)
    base = baseline(sb, rng)
    sf = rng.uniform(0.0, 0.5, 40)
    (row,) = [r for r in drift(field(sf), base)["rows"] if r["metric"] == "score_psi"]
    assert row["verdict"] != "pass"
    assert row["interval"][0] <= row["value"] <= row["interval"][1]


def test_the_check_is_deterministic_for_a_seed() -> None:
    assert psi_row(MILD, 200, 2000, 3) == psi_row(MILD, 200, 2000, 3)
