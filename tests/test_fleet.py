"""Fleet merge of private device exports: sums, noise variance and suppressed cells equal a
numpy recomputation from the files; the discrete Laplace variance equals the sum over its
distribution; widened intervals cover the fleet's true rates where plain Wilson does not;
mixed layouts, attributes and privacy parameters are refused naming the file; memory stays
flat in the number of files."""

from __future__ import annotations

import json
import math
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgefair.core import stats, tables
from edgefair.core.tables import CountsTable
from edgefair.errors import InputError
from edgefair.runtime import fleet, fleet_merge
from edgefair.runtime.privacy import private_export
from tests.test_cli_bad_input import assert_clean, one_line, run_main

BINS = 4
ATTRS = ("region", "sex")


def device(rng: np.random.Generator, n: int, p_select: dict[str, float]) -> CountsTable:
    """One device's rows: a region, a sex, a label (a tenth never labelled) and a decision
    whose rate depends on sex and label."""
    sex = rng.choice(["F", "M"], n)
    region = rng.choice(["north", "south", "east"], n, p=[0.5, 0.4, 0.1])
    y = rng.integers(0, 2, n)
    p = np.where(sex == "F", p_select["F"], p_select["M"]) * np.where(y == 1, 1.3, 0.7)
    decision = (rng.random(n) < p).astype(np.int64)
    known = rng.random(n) >= 0.1
    parts = [
        tables.from_arrays(
            {"region": region[rows], "sex": sex[rows]},
            decision[rows],
            y_true=y[rows] if labelled else None,
            reference_score=rng.random(int(rows.sum())),
            bins=BINS,
        )
        for rows, labelled in ((known, True), (~known, False))
    ]
    return parts[0] + parts[1]


def write_fleet(folder: Path, n_devices: int, epsilon: float | None, min_cell: int, seed: int = 0) -> list[CountsTable]:
    rng = np.random.default_rng(seed)
    truth = []
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n_devices):
        t = device(rng, int(rng.integers(50, 400)), {"F": 0.3, "M": 0.5})
        doc = private_export(t, min_cell=min_cell, epsilon=epsilon, seed=1000 + i)
        (folder / f"device-{i:04d}.json").write_text(json.dumps(doc))
        truth.append(t)
    return truth


def oracle(folder: Path) -> dict[tuple[str, ...], dict[str, np.ndarray]]:
    """The merge recomputed with numpy straight from the files: released sums, released
    cells and suppressed cells per group."""
    out: dict[tuple[str, ...], dict[str, np.ndarray]] = {}
    for path in sorted(folder.glob("*.json")):
        doc = json.loads(path.read_text())
        for g in doc["groups"]:
            cells = np.array([np.nan if v is None else v for v in g["counts"]], dtype=float)
            acc = out.setdefault(
                tuple(g["key"]), {"sum": np.zeros(12), "released": np.zeros(12), "nulls": np.zeros(12)}
            )
            acc["sum"] += np.nan_to_num(cells, nan=0.0)
            acc["released"] += ~np.isnan(cells)
            acc["nulls"] += np.isnan(cells)
    return out


def laplace_variance_by_summation(scale: float) -> float:
    """Var of P(k) ~ exp(-|k|/scale), summed over k (an oracle for the closed form)."""
    k = np.arange(-int(60 * scale) - 50, int(60 * scale) + 51, dtype=np.float64)
    w = np.exp(-np.abs(k) / scale)
    return float((w * k * k).sum() / w.sum())


def test_the_fleet_table_equals_a_numpy_recomputation(tmp_path):
    write_fleet(tmp_path / "x", 40, epsilon=0.5, min_cell=11)
    merged = fleet_merge.merge_files([tmp_path / "x"])
    assert merged.files == 40 and merged.fleet is not None and merged.exact is None
    want = oracle(tmp_path / "x")
    var = laplace_variance_by_summation(2 / 0.5)
    doc = json.loads(merged.to_json())
    assert doc["kind"] == "edgefair.fleet_table" and doc["exports"] == 40
    assert math.isclose(doc["privacy"]["cell_noise_variance"], var, rel_tol=1e-9)
    got = {tuple(g["key"]): g for g in doc["groups"]}
    assert set(got) == set(want)
    assert sum(int(w["nulls"].sum()) for w in want.values()) > 100  # suppression really happened
    for key, w in want.items():
        g = got[key]
        np.testing.assert_array_equal(g["counts"], w["sum"])
        np.testing.assert_allclose(g["noise_variance"], (w["released"] + w["nulls"]) * var, rtol=1e-12)
        np.testing.assert_array_equal(g["suppressed"], w["nulls"])
        np.testing.assert_array_equal(g["suppressed_rows_max"], w["nulls"] * 10)


def test_the_closed_form_noise_variance_matches_the_distribution_and_the_sampler():
    for scale in (0.7, 2.0, 20.0):
        assert math.isclose(fleet.noise_variance(scale), laplace_variance_by_summation(scale), rel_tol=1e-9)
    from edgefair.runtime.privacy import discrete_laplace

    draws = discrete_laplace(np.random.default_rng(3), 4.0, (200_000,))
    assert abs(draws.var() / fleet.noise_variance(4.0) - 1) < 0.03
    assert fleet.noise_variance(None) == 0.0


def test_exact_exports_still_add_up_exactly(tmp_path):
    rng = np.random.default_rng(2)
    parts = [device(rng, 300, {"F": 0.2, "M": 0.6}) for _ in range(5)]
    for i, t in enumerate(parts):
        (tmp_path / f"t{i}.json").write_text(t.to_json())
    merged = fleet_merge.merge_files(sorted(tmp_path.glob("*.json")))
    assert merged.exact == tables.merge(parts) and merged.fleet is None
    want = np.sum([t.marginal(["sex"]).counts for t in parts], axis=0)  # numpy: F and M on both sides
    np.testing.assert_array_equal(merged.exact.marginal(["sex"]).counts, want)


def rates_truth(truth: list[CountsTable], attr: str, group: str) -> dict[str, float]:
    c = tables.merge(truth).marginal([attr]).select((group,)).counts[0]
    sel = c[:, 1, :].sum() / c.sum()
    tpr = c[1, 1, :].sum() / c[1].sum()
    return {"selection_rate": float(sel), "true_positive_rate": float(tpr)}


@pytest.mark.parametrize(
    ("epsilon", "devices", "rows", "widest", "plain_misses"),
    [(0.05, 25, 200, 1.0, True), (2.0, 25, 200, 0.2, False), (0.05, 5, 20_000, 0.1, True)],
)
def test_widened_intervals_cover_the_true_rates_where_plain_wilson_does_not(
    epsilon, devices, rows, widest, plain_misses
):
    """The fleet interval covers the rate of the true rows; with heavy noise (epsilon 0.05
    per export) the Wilson interval of the noisy sums, ignoring the noise and the suppressed
    cells, mostly does not. With light noise the interval stays informative. Big devices under
    heavy noise release every cell, so there the noise alone must widen both ends."""
    rng = np.random.default_rng(9)
    covered = plain = total = 0
    widths = []
    for run in range(10):
        truth = [device(rng, rows, {"F": 0.3, "M": 0.5}) for _ in range(devices)]
        table = fleet.FleetTable(ATTRS, BINS, 2, epsilon, 2 / epsilon)
        for i, t in enumerate(truth):
            table.add(private_export(t, min_cell=2, epsilon=epsilon, seed=run * 100 + i), f"device {i}")
        metrics = fleet.fleet_metrics(table)
        for group in ("F", "M"):
            want = rates_truth(truth, "sex", group)
            for name in fleet.FLEET_METRICS:
                e = metrics["by_attribute"]["sex"]["groups"][group][name]
                lo, hi = e["interval"]
                covered += lo <= want[name] <= hi
                widths.append(hi - lo)
                num, den = e["released"]
                w_lo, w_hi = stats.wilson_interval(max(num, 0), max(den, 1))
                plain += float(w_lo) <= want[name] <= float(w_hi)
                total += 1
    assert covered / total >= 0.95, covered / total
    assert float(np.median(widths)) <= widest, np.median(widths)
    if plain_misses:
        assert plain / total <= 0.8, plain / total


def test_suppressed_rows_widen_the_interval_to_the_worst_case():
    """A single export without noise whose small cells were withheld: the interval reaches the
    rate with every hidden row outside, and inside, the numerator (recomputed by hand)."""
    doc: dict[str, Any] = {
        "kind": "edgefair.counters_export",
        "schema_version": 1,
        "attributes": ["g"],
        "bins": 1,
        "privacy": {"min_cell": 11, "epsilon": None, "mechanism": None, "scale": None},
        "groups": [
            {"key": ["a"], "counts": [400, None, None, None, 300] + [None] * 7, "score_hist": [None] * 3},
        ],
    }
    table = fleet.FleetTable(("g",), 1, 11, None, None)
    table.add(doc, "x")
    e = fleet.fleet_metrics(table)["by_attribute"]["g"]["groups"]["a"]["selection_rate"]
    # one model: selected rows sit in cells (y, 1, 1), all three suppressed (<= 10 rows each); the
    # others in (y, 0, 0): 400 + 300 released, (2, 0, 0) suppressed
    assert e["released"] == [0, 700] and e["suppressed_cells"] == [3, 4] and e["noise_sd"] == 0.0
    lo_want = float(stats.wilson_interval(0, 710)[0])
    hi_want = float(stats.wilson_interval(30, 730)[1])
    assert e["interval"] == pytest.approx([lo_want, hi_want], abs=1e-12)


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"privacy": {"min_cell": 11, "epsilon": 0.25, "mechanism": "discrete Laplace", "scale": 8.0}}, "epsilon 0.25"),
        ({"privacy": {"min_cell": 5, "epsilon": 0.5, "mechanism": "discrete Laplace", "scale": 4.0}}, "min_cell 5"),
        ({"attributes": ["sex", "region"]}, "attributes ['sex', 'region']"),
        ({"bins": 7}, "7 score bins"),
    ],
)
def test_a_file_with_other_parameters_is_refused_naming_it(tmp_path, change, fragment):
    write_fleet(tmp_path / "x", 3, epsilon=0.5, min_cell=11)
    odd = tmp_path / "x" / "device-0001.json"
    doc = json.loads(odd.read_text())
    if "attributes" in change:  # keep the keys consistent with the attributes
        doc["groups"] = [{**g, "key": g["key"][::-1]} for g in doc["groups"]]
    odd.write_text(json.dumps({**doc, **change}))
    out = tmp_path / "fleet.json"
    one_line(run_main("counters", "merge", str(tmp_path / "x"), "-o", str(out)), str(odd), fragment)
    assert not out.exists()


def test_mixed_layouts_and_tampered_cells_are_refused(tmp_path):
    truth = write_fleet(tmp_path / "x", 2, epsilon=None, min_cell=11)
    raw = tmp_path / "x" / "raw.json"
    raw.write_text(truth[0].to_json())
    o = run_main("counters", "merge", str(tmp_path / "x"), "-o", str(tmp_path / "m.json"))
    one_line(o, str(raw), "exact counts", "is a private export", "one kind at a time")
    raw.unlink()
    bad = tmp_path / "x" / "device-0000.json"
    doc = json.loads(bad.read_text())
    cells = next(g["counts"] for g in doc["groups"] if any(v is not None for v in g["counts"]))
    cells[next(i for i, v in enumerate(cells) if v is not None)] = 3  # a released value no export writes
    bad.write_text(json.dumps(doc))
    one_line(
        run_main("counters", "merge", str(tmp_path / "x"), "-o", str(tmp_path / "m.json")), str(bad), "min_cell 11"
    )
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"no \.json exports"):
        fleet_merge.merge_files([tmp_path / "empty"])


def test_the_cli_writes_the_fleet_table_and_says_what_was_suppressed(tmp_path):
    write_fleet(tmp_path / "x", 12, epsilon=1.0, min_cell=11)
    out = tmp_path / "fleet.json"
    o = run_main("counters", "merge", str(tmp_path / "x"), "-o", str(out))
    assert_clean(o, codes=(0,))
    assert "merged 12 private exports (cells under 11 suppressed, discrete Laplace noise at epsilon 1)" in o.out
    assert "cells suppressed across exports, hiding at most" in o.out and "sex=F: sel " in o.out
    doc = json.loads(out.read_text())
    assert doc["kind"] == "edgefair.fleet_table" and set(doc["metrics"]["by_attribute"]) == set(ATTRS)
    gap = doc["metrics"]["by_attribute"]["sex"]["gaps"]["selection_rate"]
    sel = {g: doc["metrics"]["by_attribute"]["sex"]["groups"][g]["selection_rate"]["value"] for g in ("F", "M")}
    assert (
        gap["value"] == pytest.approx(abs(sel["M"] - sel["F"])) and gap["bounds"][0] <= gap["value"] <= gap["bounds"][1]
    )


def test_memory_stays_flat_in_the_number_of_files(tmp_path):
    """Files given one at a time (a generator of paths) are merged in the same memory, ten
    times as many or not: only the running sums are kept. (A folder costs its sorted listing,
    the paths alone, about 0.4 KB a file; the check against repeated inputs keeps each file's
    path and digest, about 0.3 KB.) Distinct devices: copies of one export are refused."""
    peaks = {}
    for n in (20, 200):
        write_fleet(tmp_path / f"n{n}", n, epsilon=1.0, min_cell=11)
        files = sorted((tmp_path / f"n{n}").glob("*.json"))
        tracemalloc.start()
        merged = fleet_merge.merge_files(iter(files))
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert merged.files == n
    # holding the exports would cost > 2 KB each; a path and a digest cost ~0.3 KB
    assert peaks[200] < 1.2 * peaks[20] + 10_000 + 180 * 500, peaks
