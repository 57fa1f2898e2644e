"""Dictionary-encoded sensitive columns (``Coded``) count exactly what their strings count.

A model trained here (scikit-learn -> skl2onnx); the sensitive columns are pandas Categoricals
built by the test (fixed categories across slices, as a DataFrame's are), with missing values
(pandas' code -1), an empty-string category, more categories than the learning cap, categories
that appear only late. Every table is checked against a plain-Python recount and against the
same session fed the strings.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from edgefair.errors import InputError
from edgefair.runtime import Coded
from edgefair.runtime.counters import MAX_VALUES_PER_ATTRIBUTE, Counters
from edgefair.runtime.session import FairSession
from tests.test_runtime_fastpath import ROWS, assert_table, oracle_labels, trained  # noqa: F401 (fixture)


def columns() -> dict[str, list[Any]]:
    """colour: more values than the cap, missing ones, "" and a value first seen in the last rows."""
    rng = np.random.default_rng(5)
    colours = [f"c{i}" for i in range(MAX_VALUES_PER_ATTRIBUTE + 6)]
    colour: list[Any] = [colours[i] for i in rng.integers(0, len(colours) - 1, ROWS)]
    for i in rng.choice(ROWS - 20, 30, replace=False):
        colour[i] = [None, "", float("nan")][i % 3]
    colour[ROWS - 5 :] = [colours[-1]] * 5  # a category absent until the end
    sex = ["F" if v else "M" for v in rng.integers(0, 2, ROWS)]
    sex[3] = None
    return {"colour": colour, "sex": sex}


def coded(values: list[Any], categories: list[str]) -> Coded:
    cat = pd.Categorical(values, categories=categories)  # None and NaN: code -1
    return Coded(tuple(cat.categories), cat.codes)


def categories_of(values: list[Any]) -> list[str]:
    return sorted({v for v in values if isinstance(v, str)})


def feed(fs: FairSession, x: np.ndarray, cols: dict[str, list[Any]], batches: list[int], as_coded: set[str]) -> None:
    start = 0
    cats = {k: categories_of(v) for k, v in cols.items()}
    for size in batches:
        part = slice(start, start + size)
        sens = {k: coded(v[part], cats[k]) if k in as_coded else np.array(v[part], object) for k, v in cols.items()}
        fs.run({"X": x[part]}, sens)
        start += size
    assert start == len(x)


@pytest.mark.parametrize("batches", [[1] * 60 + [ROWS - 60], [7] * 100, [ROWS], [300, 1, 16, 17, 2, 364]])
@pytest.mark.parametrize("as_coded", [{"colour", "sex"}, {"sex"}, {"colour"}])
def test_coded_counts_equal_the_strings_and_a_recount(
    trained: tuple[str, np.ndarray, np.ndarray],  # noqa: F811
    batches: list[int],
    as_coded: set[str],
) -> None:
    path, x, scores = trained
    cols = columns()
    with FairSession(path, sensitive=list(cols)) as fs, FairSession(path, sensitive=list(cols)) as plain:
        feed(fs, x, cols, batches, as_coded)
        feed(plain, x, cols, batches, set())
        table, strings = fs.table(), plain.table()
    assert_table(table, oracle_labels(cols), scores, 0.5)
    assert table.groups == strings.groups
    assert np.array_equal(table.counts, strings.counts)
    assert np.array_equal(table.score_hist, strings.score_hist)


def test_all_coded_batches_take_the_joint_table(trained: tuple[str, np.ndarray, np.ndarray]) -> None:  # noqa: F811
    """Once every category present was seen, a batch is one take in the joint table (deferred, no
    strings); a category that never occurs does not send batches to the careful path."""
    path, x, scores = trained
    cols = {"colour": ["a", "b", "c", None] * 25, "sex": ["F", "M"] * 50}
    cats = {"colour": ["a", "b", "c", "never"], "sex": ["F", "M", "X"]}  # "never" and "X" occur in no row
    with FairSession(path, sensitive=list(cols)) as fs:
        for start in range(0, 100, 20):
            part = slice(start, start + 20)
            fs.run({"X": x[part]}, {k: coded(v[part], cats[k]) for k, v in cols.items()})
        held = fs.counters._deferred_flat
        assert sum(len(g) for g, _ in held) >= 80  # after the first batch learned the values
        table = fs.table()
    assert_table(table, oracle_labels(cols), scores[:100], 0.5)


def test_known_values_count_unseen_categories_as_other() -> None:
    known = {"race": ["White", "Black"], "sex": ["F", "M"]}
    rows = ["White", "Martian", "Black", None, "", "Martian"]
    counters = Counters(["race", "sex"], known)
    categories = ["Black", "Martian", "White", ""]
    cat = Coded(tuple(categories), pd.Categorical(rows, categories=categories).codes)
    sex = Coded(("F", "M"), np.array([0, 1, 0, 1, -1, 0]))
    (codes, n) = counters.known_codes({"race": cat, "sex": sex}) or (None, 0)
    assert n == 6
    expected = counters.group_codes({"race": rows, "sex": ["F", "M", "F", "M", None, "F"]}, 6)
    assert np.array_equal(codes, expected)
    # by name: White, other, Black, unknown, unknown, other
    race_codes = np.asarray(expected) // counters._sizes[1]
    assert race_codes.tolist() == [2, 0, 3, 1, 1, 0]


def test_one_row_and_mixed_columns_count_alike(trained: tuple[str, np.ndarray, np.ndarray]) -> None:  # noqa: F811
    path, x, scores = trained
    cols: dict[str, list[Any]] = {"colour": ["a", "b", None, "a", "c"] * 20, "sex": ["F", "M", "F", "F", "M"] * 20}
    with FairSession(path, sensitive=list(cols)) as fs:
        for i in range(100):
            sens: dict[str, Any] = {"colour": coded(cols["colour"][i : i + 1], ["a", "b", "c"])}
            sens["sex"] = [cols["sex"][i]]
            if i % 2:
                sens["sex"] = coded([cols["sex"][i]], ["F", "M"])
            fs.run({"X": x[i : i + 1]}, sens)
        table = fs.table()
    assert_table(table, oracle_labels(cols), scores[:100], 0.5)


def test_coded_is_checked_once_and_read_only() -> None:
    bad: list[tuple[Any, Any, str]] = [
        (("a", "a"), [0], "repeat"),
        (("a", 1), [0], "strings; got int 1"),
        (("a",), [1], r"\[-1, 1\)"),
        (("a",), [-2], r"\[-1, 1\)"),
        (("a",), [[0]], "1-D integer"),
        (("a",), [0.0], "1-D integer"),
    ]
    for categories, codes, message in bad:
        with pytest.raises(InputError, match=message):
            Coded(categories, np.array(codes))
    source = np.array([0, 1, -1], np.int8)
    column = Coded(["x", "y"], source)  # type: ignore[arg-type]  # a list of categories becomes a tuple
    source[0] = 1  # the caller's array, not the copy
    assert column.categories == ("x", "y") and column.codes.tolist() == [0, 1, -1]
    with pytest.raises(ValueError, match="read-only"):
        column.codes[0] = 5
    assert column.values() == ["x", "y", None]


def test_lengths_that_do_not_match_are_named(trained: tuple[str, np.ndarray, np.ndarray]) -> None:  # noqa: F811
    """A one-row Coded column beside an eight-row one must not broadcast to eight rows."""
    path, x, _ = trained
    with FairSession(path, sensitive=["colour", "sex"]) as fs:
        fs.run({"X": x[:8]}, {"colour": ["a"] * 8, "sex": ["F"] * 8})
        before = fs.table()
        one, eight = Coded(("F",), np.zeros(1, np.int8)), Coded(("a",), np.zeros(8, np.int8))
        with pytest.raises(InputError, match="'sex' has 1 values for 8 rows"):
            fs.run({"X": x[:8]}, {"colour": eight, "sex": one})
        after = fs.table()
    assert np.array_equal(before.counts, after.counts)


def test_an_empty_batch_counts_nothing_and_still_checks_its_names(
    trained: tuple[str, np.ndarray, np.ndarray],  # noqa: F811
) -> None:
    """0 rows: the outputs come back empty, nothing is counted, and a sensitive column or ids
    that do not fit 0 rows are refused in one line (they used to raise numpy's ValueError)."""
    path, x, _ = trained
    with FairSession(path, sensitive=["colour", "sex"]) as fs:
        fs.run({"X": x[:5]}, {"colour": ["a", "b", "a", "c", "a"], "sex": ["F", "M", "F", "F", "M"]})
        before = fs.table()
        empty_coded = Coded(("F", "M"), np.zeros(0, np.int8))
        for sens in (
            {"colour": [], "sex": []},
            {"colour": np.array([], object), "sex": empty_coded},
            {"colour": Coded(("a",), np.zeros(0, np.int8)), "sex": empty_coded},
        ):
            out = fs.run({"X": x[:0]}, sens)
            assert out and all(len(v) == 0 for v in out.values())
        with pytest.raises(InputError, match="'colour' has 1 values for 0 rows"):
            fs.run({"X": x[:0]}, {"colour": ["a"], "sex": []})
        with pytest.raises(InputError, match="'sex' is missing"):
            fs.run({"X": x[:0]}, {"colour": []})
        with pytest.raises(InputError, match="1 ids for 0 rows"):
            fs.run({"X": x[:0]}, {"colour": [], "sex": []}, ids=["p1"])
        after = fs.table()
    assert after.groups == before.groups and np.array_equal(after.counts, before.counts)
    assert np.array_equal(after.score_hist, before.score_hist)
