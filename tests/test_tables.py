"""The counts table is an exact commutative monoid and round-trips through JSON."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgefair.core import tables
from edgefair.errors import InputError

rows = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c"]),
        st.sampled_from(["x", "y"]),
        st.integers(0, 1),
        st.integers(0, 1),
        st.integers(0, 1),
        st.floats(0, 1, allow_nan=False),
    ),
    max_size=60,
)


def build(data: list[tuple[str, str, int, int, int, float]]) -> tables.CountsTable:
    if not data:
        return tables.empty(["g", "h"], paired=True)
    g, h, y, r, c, s = (list(col) for col in zip(*data, strict=True))
    return tables.from_arrays(
        {"g": np.array(g, object), "h": np.array(h, object)}, r, c, y, reference_score=s, candidate_score=s
    )


@given(rows, rows)
@settings(max_examples=150, deadline=None)
def test_table_of_union_is_sum_of_tables(a, b):
    assert build(a) + build(b) == build(a + b)


@given(rows, rows, rows)
@settings(max_examples=80, deadline=None)
def test_merge_is_associative_and_commutative(a, b, c):
    ta, tb, tc = build(a), build(b), build(c)
    assert (ta + tb) + tc == ta + (tb + tc)
    assert ta + tb == tb + ta
    assert ta + tables.empty(["g", "h"], paired=True) == ta


@given(rows)
@settings(max_examples=80, deadline=None)
def test_json_round_trip_is_exact(a):
    t = build(a)
    back = tables.from_json(t.to_json())
    assert back == t
    assert back.to_json() == t.to_json()


def test_split_into_chunks_gives_identical_bytes():
    rng = np.random.default_rng(3)
    n = 10_000
    sens = {"g": rng.integers(0, 7, n)}
    y, r, c = rng.integers(0, 2, (3, n))
    whole = tables.from_arrays(sens, r, c, y)
    parts = [
        tables.from_arrays({"g": sens["g"][i : i + 997]}, r[i : i + 997], c[i : i + 997], y[i : i + 997])
        for i in range(0, n, 997)
    ]
    assert tables.merge(parts).to_json() == whole.to_json()
    assert sum(parts) == whole


def test_marginal_sums_intersections():
    t = build([("a", "x", 1, 1, 0, 0.2), ("a", "y", 0, 0, 0, 0.9), ("b", "x", 1, 1, 1, 0.5)])
    g = t.marginal(["g"])
    assert g.groups == (("a",), ("b",))
    assert g.counts.sum() == 3 and g.counts[0].sum() == 2
    assert t.overall().counts.sum() == 3


def test_unknown_labels_are_counted_apart():
    t = tables.from_arrays({"g": ["a", "a", "b"]}, [1, 0, 1])
    assert t.counts[:, tables.UNKNOWN_LABEL].sum() == 3
    assert t.counts[:, :2].sum() == 0


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"reference": [0, 2]}, "row 1 is 2"),
        ({"reference": [0, 1], "y_true": [0, 1, 1]}, "labels has 3 rows"),
        ({"reference": [0.0, float("nan")]}, "row 1 is"),
        ({"reference": [0, 1], "reference_score": [0.1, float("nan")]}, "reference scores"),
        ({"reference": [0, 1], "reference_score": [0.1, 1.5]}, "must lie in [0, 1]"),
    ],
)
def test_bad_arrays_name_the_problem(kwargs, fragment):
    with pytest.raises(InputError, match=None) as info:
        tables.from_arrays({"g": ["a", "b"]}, **kwargs)
    assert fragment in str(info.value)


def test_merge_refuses_different_attributes():
    a = tables.from_arrays({"g": ["a"]}, [1])
    b = tables.from_arrays({"h": ["a"]}, [1])
    with pytest.raises(InputError, match="cannot merge"):
        a + b


@pytest.mark.parametrize(
    "doc",
    [
        '{"kind": "x"}',
        "[]",
        "{",
        '{"kind": "edgefair.counts_table", '
        '"schema_version": 1, "attributes": ["g"], "bins": 1, "paired": false, '
        '"groups": [{"key": ["a"], "counts": [-1,0,0,0,0,0,0,0,0,0,0,0], '
        '"score_hist": [0,0,0,0,0,0]}]}',
    ],
)
def test_bad_documents_are_input_errors(doc):
    with pytest.raises(InputError):
        tables.from_json(doc)


def test_many_attributes_with_large_product_fall_back_to_unique():
    rng = np.random.default_rng(0)
    n = 2000
    sens = {f"a{i}": rng.integers(0, 40, n) for i in range(5)}  # 40^5 > 2^22 combinations
    r = rng.integers(0, 2, n)
    t = tables.from_arrays(sens, r)
    assert t.rows == n
    assert len(t.groups) == len({tuple(str(sens[f"a{i}"][j]) for i in range(5)) for j in range(n)})
