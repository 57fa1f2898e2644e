"""``counters merge`` refuses an input it has already merged: the same path twice, a link to
it, a folder and a file in it, or a copy (same bytes for an export, same counts for a store).
Each would double every count and narrow every fleet interval. Distinct devices still merge,
and their sum equals the rows fed to them (counted with numpy)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgefair.core import tables
from edgefair.runtime.privacy import private_export
from edgefair.runtime.store import CounterStore
from tests.test_cli_bad_input import one_line, run_main

ATTRS = ("region",)
BINS = 4


def _table(seed: int, n: int) -> tables.CountsTable:
    rng = np.random.default_rng(seed)
    return tables.from_arrays(
        {"region": rng.choice(["north", "south"], n)},
        rng.integers(0, 2, n),
        y_true=rng.integers(0, 2, n),
        reference_score=rng.random(n),
        bins=BINS,
    )


def _store(path: Path, table: tables.CountsTable | None) -> Path:
    store = CounterStore(path, ATTRS, BINS)
    if table is not None:
        store.flush(table)
    store.close()
    return path


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, Path]:
    exports = tmp_path / "exports"
    exports.mkdir()
    for i, n in enumerate((300, 500)):
        (exports / f"dev{i}.json").write_text(json.dumps(private_export(_table(i, n), min_cell=11)))
    return {
        "exports": exports,
        "e0": exports / "dev0.json",
        "e1": exports / "dev1.json",
        "s0": _store(tmp_path / "s0.db", _table(10, 400)),
        "s1": _store(tmp_path / "s1.db", _table(11, 250)),
        "out": tmp_path / "fleet.json",
    }


def test_the_same_export_given_twice_is_refused_naming_both(files):
    e0 = str(files["e0"])
    one_line(run_main("counters", "merge", e0, e0, "-o", str(files["out"])), f"{e0}: the same file as {e0}")
    assert not files["out"].exists()


def test_a_link_to_an_export_already_given_is_refused(files, tmp_path):
    link = tmp_path / "link.json"
    link.symlink_to(files["e0"])
    o = run_main("counters", "merge", str(files["e0"]), str(files["e1"]), str(link), "-o", str(files["out"]))
    one_line(o, f"{link}: the same file as {files['e0']}")


def test_a_folder_and_a_file_in_it_are_refused(files):
    o = run_main("counters", "merge", str(files["exports"]), str(files["e1"]), "-o", str(files["out"]))
    one_line(o, f"{files['e1']}: the same file as {files['e1']}", "double-count")


def test_a_byte_identical_copy_of_an_export_is_refused(files, tmp_path):
    copy = tmp_path / "copy.json"
    shutil.copyfile(files["e1"], copy)
    o = run_main("counters", "merge", str(files["e1"]), str(copy), "-o", str(files["out"]))
    one_line(o, f"{copy}: the same content (SHA-256", f"as {files['e1']}")


def test_a_store_given_twice_or_copied_is_refused(files, tmp_path):
    s0 = str(files["s0"])
    one_line(run_main("counters", "merge", s0, s0, "-o", str(files["out"])), f"{s0}: the same file as {s0}")
    copy = tmp_path / "copy.db"
    shutil.copyfile(files["s0"], copy)
    o = run_main("counters", "merge", str(files["s1"]), s0, str(copy), "-o", str(files["out"]))
    one_line(o, f"{copy}: the same content", f"as {s0}")


def test_distinct_devices_still_merge_to_the_sum_of_their_rows(files, tmp_path):
    o = run_main("counters", "merge", str(files["s0"]), str(files["s1"]), "-o", str(files["out"]))
    assert o.code == 0, o.err
    merged = tables.from_json(files["out"].read_text())
    assert merged.rows == 400 + 250  # the rows fed to the two stores
    o = run_main("counters", "merge", str(files["exports"]), "-o", str(tmp_path / "f2.json"))
    assert o.code == 0, o.err
    assert "merged 2 private exports" in o.out


def test_two_empty_stores_are_not_taken_for_copies(tmp_path):
    """Same (empty) counts, but nothing to double: devices that have served no rows yet."""
    a, b = _store(tmp_path / "a.db", None), _store(tmp_path / "b.db", None)
    o = run_main("counters", "merge", str(a), str(b), "-o", str(tmp_path / "f.json"))
    assert o.code == 0, o.err


def test_exports_that_release_nothing_are_not_taken_for_copies(tmp_path):
    """Small devices whose every cell is suppressed write identical exports; merging them
    doubles nothing that was released, so they merge (their suppressed cells add up)."""
    folder = tmp_path / "small"
    folder.mkdir()
    for i in range(3):
        doc = private_export(_table(20 + i, 8), min_cell=11)  # 8 rows: every cell under 11
        assert all(v is None for g in doc["groups"] for v in g["counts"] + g["score_hist"])
        (folder / f"d{i}.json").write_text(json.dumps(doc))
    o = run_main("counters", "merge", str(folder), "-o", str(tmp_path / "f.json"))
    assert o.code == 0, o.err
    assert "merged 3 private exports" in o.out
