"""Counts-table tests aimed at mutants: every oracle is computed independently of edgefair.core.tables.

Counts are recomputed from raw rows with a Python loop, tables are worked out by hand, and every error
message of the validation is checked word for word (it names the group and the cell).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgefair.core import tables
from edgefair.core.tables import CountsTable
from edgefair.errors import InputError

MAX = 2**62


def raw_table(attrs, rows, bins, paired):
    """Rows of (key, label, ref, cand, ref_bin or None, cand_bin or None) counted by a Python loop."""
    keys = sorted({r[0] for r in rows})
    counts = np.zeros((len(keys), 3, 2, 2), np.int64)
    hist = np.zeros((len(keys), 3, 2, bins), np.int64)
    for key, y, r, c, rb, cb in rows:
        g = keys.index(key)
        counts[g, y, r, c] += 1
        if rb is not None:
            hist[g, y, 0, rb] += 1
        if cb is not None:
            hist[g, y, 1, cb] += 1
    return CountsTable(tuple(attrs), tuple(keys), counts, hist, paired)


def table(groups, cells, bars=None, attrs=("g",), bins=1, paired=False):
    """A table from per-group lists of 12 cells (and 6 * bins histogram bars)."""
    g = len(groups)
    counts = np.array(cells, np.int64).reshape(g, 3, 2, 2)
    if bars is None:
        hist = np.zeros((g, 3, 2, bins), np.int64)
    else:
        hist = np.array(bars, np.int64).reshape(g, 3, 2, bins)
    return CountsTable(tuple(attrs), tuple(tuple(k) for k in groups), counts, hist, paired)


def cells(**at):
    """12 cells, zero except the named positions c0..c11."""
    out = [0] * 12
    for name, v in at.items():
        out[int(name[1:])] = v
    return out


def doc(groups=None, attributes=None, bins=1, paired=False, **extra):
    d = {
        "schema_version": 1,
        "kind": "edgefair.counts_table",
        "attributes": ["g"] if attributes is None else attributes,
        "paired": paired,
        "bins": bins,
        "groups": [{"key": ["a"], "counts": [0] * 12, "score_hist": [0] * 6 * bins}] if groups is None else groups,
    }
    d.update(extra)
    return d


def error(fn, *args, **kwargs) -> str:
    with pytest.raises(InputError) as info:
        fn(*args, **kwargs)
    return str(info.value)


# ---------------------------------------------------------------- layout and constants


def test_cell_index_layout():
    positions = [(y, r, c) for y in range(3) for r in range(2) for c in range(2)]
    for expected, (y, r, c) in enumerate(positions):
        assert tables.cell_index(y, r, c) == expected
    arr = tables.cell_index(np.array([0, 1, 2, 2]), np.array([1, 0, 1, 0]), np.array([1, 1, 0, 0]))
    assert arr.tolist() == [3, 5, 10, 8]


def test_constants():
    assert tables.SCHEMA_VERSION == 1
    assert tables.UNKNOWN_LABEL == 2
    assert tables.CELLS_PER_GROUP == 12
    assert tables.DEFAULT_BINS == 50
    assert tables.MAX_COUNT == 4611686018427387904
    assert tables.MAX_BINS == 100000


# ---------------------------------------------------------------- the dataclass


def test_post_init_messages():
    z = np.zeros
    assert error(CountsTable, ("g",), (("a",),), z((2, 3, 2, 2), np.int64), z((1, 3, 2, 1), np.int64)) == (
        "counts has shape (2, 3, 2, 2), expected (1, 3, 2, 2)"
    )
    assert error(CountsTable, ("g",), (("a",),), z((1, 3, 2, 2), np.int64), z((1, 3, 2), np.int64)) == (
        "score_hist has shape (1, 3, 2), expected (1, 3, 2, bins)"
    )
    assert error(CountsTable, ("g",), (("a",),), z((1, 3, 2, 2), np.int64), z((1, 3, 2, 1, 1), np.int64)) == (
        "score_hist has shape (1, 3, 2, 1, 1), expected (1, 3, 2, bins)"
    )
    assert error(CountsTable, ("g",), (("a",),), z((1, 3, 2, 2), np.int64), z((1, 3, 1, 4), np.int64)) == (
        "score_hist has shape (1, 3, 1, 4), expected (1, 3, 2, bins)"
    )
    assert error(CountsTable, ("g",), (("a",),), z((1, 3, 2, 2), np.int64), z((2, 3, 2, 4), np.int64)) == (
        "score_hist has shape (2, 3, 2, 4), expected (1, 3, 2, bins)"
    )
    assert error(CountsTable, ("g", "h"), (("a", "x"), ("b",)), z((2, 3, 2, 2)), z((2, 3, 2, 1))) == (
        "every group key needs one value per attribute"
    )
    assert error(CountsTable, ("g",), (("a",), ("b", "x")), z((2, 3, 2, 2)), z((2, 3, 2, 1))) == (
        "every group key needs one value per attribute"
    )
    ok = CountsTable(("g", "h"), (("a", "x"), ("b", "y")), z((2, 3, 2, 2)), z((2, 3, 2, 7)))
    assert ok.bins == 7 and ok.paired is False
    assert CountsTable((), ((),), z((1, 3, 2, 2)), z((1, 3, 2, 1))).groups == ((),)


def test_bins_rows_group_sizes():
    t = table([["a"], ["b"]], [cells(c0=2, c11=3), cells(c5=7)], bins=3)
    assert t.bins == 3 and isinstance(t.bins, int)
    assert t.rows == 12 and isinstance(t.rows, int)
    assert t.group_sizes().tolist() == [5, 7]


def test_equality_checks_every_field():
    base = table([["a"], ["b"]], [cells(c0=1), cells(c3=2)], [[0, 1, 0, 0, 0, 0], [0] * 6])
    assert base == table([["a"], ["b"]], [cells(c0=1), cells(c3=2)], [[0, 1, 0, 0, 0, 0], [0] * 6])
    others = [
        table([["a"], ["b"]], [cells(c0=1), cells(c3=2)], [[0, 1, 0, 0, 0, 0], [0] * 6], attrs=("h",)),
        table([["a"], ["c"]], [cells(c0=1), cells(c3=2)], [[0, 1, 0, 0, 0, 0], [0] * 6]),
        table([["a"], ["b"]], [cells(c0=1), cells(c3=2)], [[0, 1, 0, 0, 0, 0], [0] * 6], paired=True),
        table([["a"], ["b"]], [cells(c0=1), cells(c2=2)], [[0, 1, 0, 0, 0, 0], [0] * 6]),
        table([["a"], ["b"]], [cells(c0=1), cells(c3=2)], [[0, 0, 1, 0, 0, 0], [0] * 6]),
    ]
    for other in others:
        assert base != other and other != base
        assert not base == other  # noqa: SIM201 (__eq__ itself, not __ne__)
    assert base.__eq__("table") is NotImplemented
    assert base != "table"
    assert base.__eq__(None) is NotImplemented


def test_hash_is_of_attributes_groups_and_rows():
    t = table([["a"], ["b"]], [cells(c0=1), cells(c3=2)])
    assert hash(t) == hash((("g",), (("a",), ("b",)), 3))
    assert len({t, table([["a"], ["b"]], [cells(c0=1), cells(c3=2)])}) == 1


def test_table_is_frozen():
    t = tables.empty(["g"])
    with pytest.raises(AttributeError):
        t.paired = True  # type: ignore[misc]


# ---------------------------------------------------------------- algebra


def small(seed, groups=("a", "b", "c"), paired=False):
    rng = np.random.default_rng(seed)
    keys = [k for k in groups if rng.random() < 0.8] or [groups[0]]
    cs = rng.integers(0, 5, (len(keys), 12)).tolist()
    hs = rng.integers(0, 5, (len(keys), 12)).tolist()
    return table([[k] for k in keys], cs, hs, bins=2, paired=paired)


def test_add_is_the_cellwise_sum_over_the_union_of_groups():
    a = table([["b"], ["c"]], [cells(c0=1, c5=2), cells(c11=4)], [[1, 0, 0, 0, 0, 2], [0, 0, 0, 0, 3, 0]])
    b = table([["a"], ["c"]], [cells(c1=3), cells(c11=1, c0=9)], [[0, 0, 0, 0, 0, 7], [0, 5, 0, 0, 0, 0]])
    s = a + b
    assert s.groups == (("a",), ("b",), ("c",))
    assert s.counts.reshape(3, 12).tolist() == [cells(c1=3), cells(c0=1, c5=2), cells(c0=9, c11=5)]
    assert s.score_hist.reshape(3, 6).tolist() == [[0, 0, 0, 0, 0, 7], [1, 0, 0, 0, 0, 2], [0, 5, 0, 0, 3, 0]]
    assert s.paired is False and s.attributes == ("g",)
    assert s.counts.dtype == np.int64 and s.score_hist.dtype == np.int64
    assert tables.merge([a, b]) == s
    assert tables.merge([a]) == a
    assert tables.merge(iter([a, b, a])) == a + b + a


def test_merge_is_a_commutative_monoid():
    ts = [small(s) for s in range(6)]
    zero = tables.empty(["g"], bins=2)
    for x, y, z in zip(ts, ts[1:], ts[2:], strict=False):
        assert (x + y) + z == x + (y + z) == tables.merge([x, y, z])
        assert x + y == y + x
        assert x + zero == x and zero + x == x
        assert sum([x, y, z]) == x + y + z
    assert sum([ts[0]]) == ts[0]


def test_merge_paired_if_any_is():
    a, b = small(1), small(2, paired=True)
    assert (a + b).paired is True and (b + a).paired is True
    assert (a + a).paired is False and (b + b).paired is True


def test_radd_only_accepts_zero():
    t = small(3)
    assert 0 + t is t
    assert t.__radd__(0) is t
    assert t.__radd__(1) is NotImplemented
    assert t.__radd__("x") is NotImplemented
    with pytest.raises(TypeError):
        1 + t


def test_merge_errors():
    assert error(tables.merge, []) == "merge needs at least one table"
    assert error(tables.merge, iter([])) == "merge needs at least one table"
    a = tables.empty(["g"], bins=2)
    b = tables.empty(["h", "k"], bins=2)
    assert error(tables.merge, [a, b]) == "cannot merge tables over ['h', 'k'] and ['g']"
    assert error(tables.merge, [a, a, b]) == "cannot merge tables over ['h', 'k'] and ['g']"
    c = tables.empty(["g"], bins=3)
    assert error(tables.merge, [a, c]) == "cannot merge tables with 3 and 2 score bins"
    assert error(lambda: a + c) == "cannot merge tables with 3 and 2 score bins"
    assert error(lambda: a - c) == "cannot merge tables with 3 and 2 score bins"


def test_merge_overflow_guard():
    half = table([["a"]], [cells(c0=2**61)])
    s = half + half  # exactly 2**62 rows: allowed
    assert s.counts[0, 0, 0, 0] == MAX and s.rows == MAX
    more = table([["b"]], [cells(c0=1)], [[2**60, 0, 0, 0, 0, 0]])
    msg = "merged counts would exceed 4.61e+18 rows; refusing to overflow"
    assert error(tables.merge, [half, half, more]) == msg
    bars = table([["a"]], [cells()], [[2**61, 0, 0, 0, 0, 0]])
    assert error(tables.merge, [half, bars, bars]) == msg  # histograms count too
    assert (half + bars).rows == 2**61  # 2**61 + 2**61 in total: allowed


def test_negated_and_subtraction():
    a = table([["a"], ["b"]], [cells(c0=3, c7=1), cells(c2=2)], [[1, 2, 0, 0, 0, 0], [0, 0, 0, 0, 0, 4]], paired=True)
    n = a.negated()
    assert n.groups == a.groups and n.attributes == a.attributes and n.paired is True
    assert n.counts.reshape(2, 12).tolist() == [cells(c0=-3, c7=-1), cells(c2=-2)]
    assert n.score_hist.reshape(2, 6).tolist() == [[-1, -2, 0, 0, 0, 0], [0, 0, 0, 0, 0, -4]]
    assert a.negated().negated() == a
    zero = a - a
    assert zero.groups == a.groups
    assert not zero.counts.any() and not zero.score_hist.any()
    assert zero.nonzero_groups() == tables.empty(["g"], bins=1, paired=True)
    b = table([["b"], ["c"]], [cells(c2=1), cells(c11=5)], [[0, 0, 0, 0, 0, 1], [0, 0, 3, 0, 0, 0]])
    d = a - b
    assert d.groups == (("a",), ("b",), ("c",))
    assert d.counts.reshape(3, 12).tolist() == [cells(c0=3, c7=1), cells(c2=1), cells(c11=-5)]
    assert d.score_hist.reshape(3, 6).tolist() == [[1, 2, 0, 0, 0, 0], [0, 0, 0, 0, 0, 3], [0, 0, -3, 0, 0, 0]]
    assert d.paired is True
    assert (d + b).nonzero_groups() == a
    assert (a - b + b).nonzero_groups() == a
    for s in range(4):
        x, y = small(s), small(s + 10)
        assert (x + y - y).nonzero_groups() == x.nonzero_groups()
        assert (x - y) + (y - x) == (x - x) + (y - y)


def test_nonzero_groups_keeps_groups_with_counts_or_histogram():
    t = table(
        [["a"], ["b"], ["c"], ["d"]],
        [cells(), cells(c4=1), cells(), cells(c1=-1)],
        [[0] * 6, [0] * 6, [0, 0, 0, 2, 0, 0], [0] * 6],
        paired=True,
    )
    nz = t.nonzero_groups()
    assert nz.groups == (("b",), ("c",), ("d",))
    assert nz.counts.reshape(3, 12).tolist() == [cells(c4=1), cells(), cells(c1=-1)]
    assert nz.score_hist.reshape(3, 6).tolist() == [[0] * 6, [0, 0, 0, 2, 0, 0], [0] * 6]
    assert nz.paired is True and nz.attributes == ("g",)
    e = tables.empty(["g"], bins=1, groups=[("a",)]).nonzero_groups()
    assert e.groups == () and e.counts.shape == (0, 3, 2, 2) and e.score_hist.shape == (0, 3, 2, 1)


# ---------------------------------------------------------------- marginals, overall, select


def two_attr():
    rows = [
        (("a", "x"), 1, 1, 0, 0, 1),
        (("a", "y"), 0, 0, 0, 1, 1),
        (("a", "y"), 2, 1, 1, 0, 0),
        (("b", "x"), 1, 1, 1, 1, 0),
        (("c", "x"), 0, 1, 0, 0, 0),
        (("c", "y"), 2, 0, 1, 1, 1),
    ]
    return raw_table(("g", "h"), rows, 2, True), rows


def test_marginal_sums_out_other_attributes():
    t, rows = two_attr()
    for attrs, pos in ((["g"], [0]), (["h"], [1]), (["h", "g"], [1, 0]), (["g", "h"], [0, 1])):
        m = t.marginal(attrs)
        want = raw_table(attrs, [(tuple(r[0][p] for p in pos), *r[1:]) for r in rows], 2, True)
        assert m == want
        assert m.attributes == tuple(attrs)
    h = t.marginal(["h"])
    assert h.groups == (("x",), ("y",))
    assert h.group_sizes().tolist() == [3, 3]
    assert t.marginal([]) == t.overall()


def test_marginal_of_missing_attribute():
    t, _ = two_attr()
    assert error(t.marginal, ["sex"]) == "attribute 'sex' is not in the table; it has ['g', 'h']"
    assert error(t.marginal, ["g", "race", "sex"]) == "attribute 'race' is not in the table; it has ['g', 'h']"


def test_overall_is_one_group_of_every_row():
    t, rows = two_attr()
    o = t.overall()
    assert o.attributes == () and o.groups == ((),)
    assert o.counts[0].tolist() == t.counts.sum(axis=0).tolist()
    assert o.score_hist[0].tolist() == t.score_hist.sum(axis=0).tolist()
    assert o.rows == len(rows) and o.paired is True
    assert o == raw_table((), [((), *r[1:]) for r in rows], 2, True)


def test_select_one_group():
    t, _ = two_attr()
    s = t.select(("a", "y"))
    assert s.groups == (("a", "y"),) and s.attributes == ("g", "h") and s.paired is True
    assert s.counts[0].tolist() == t.counts[1].tolist()
    assert s.score_hist[0].tolist() == t.score_hist[1].tolist()
    assert s.rows == 2
    assert not np.shares_memory(s.counts, t.counts)
    assert not np.shares_memory(s.score_hist, t.score_hist)
    last = t.select(("c", "y"))
    assert last.counts.shape == (1, 3, 2, 2) and last.counts[0].tolist() == t.counts[-1].tolist()
    first = t.select(("a", "x"))
    assert first.counts.shape == (1, 3, 2, 2)
    assert first.score_hist.shape == (1, 3, 2, 2) and first.counts[0].tolist() == t.counts[0].tolist()


def test_select_missing_group_is_zero():
    t, _ = two_attr()
    s = t.select(("b", "y"))
    assert s == tables.empty(["g", "h"], 2, True, groups=[("b", "y")])
    assert s.groups == (("b", "y"),) and s.bins == 2 and s.paired is True
    assert s.rows == 0 and not s.score_hist.any()
    u = tables.empty(["g"], bins=4).select(("q",))
    assert u.paired is False and u.bins == 4 and u.groups == (("q",),)


def test_empty_defaults():
    e = tables.empty(["g", "h"])
    assert e.attributes == ("g", "h") and e.groups == () and e.paired is False
    assert e.bins == 50 and e.counts.shape == (0, 3, 2, 2) and e.score_hist.shape == (0, 3, 2, 50)
    assert e.counts.dtype == np.int64 and e.score_hist.dtype == np.int64
    g = tables.empty(("g",), 3, True, groups=[["a"], ("b",)])
    assert g.groups == (("a",), ("b",)) and g.paired is True and g.bins == 3
    assert g.counts.shape == (2, 3, 2, 2) and not g.counts.any() and not g.score_hist.any()


# ---------------------------------------------------------------- serialisation


def test_to_dict_by_hand():
    t = table([["a", "x"]], [cells(c0=1, c11=2)], [[0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4]], ("g", "h"), 2, True)
    d = t.to_dict()
    assert d == {
        "schema_version": 1,
        "kind": "edgefair.counts_table",
        "attributes": ["g", "h"],
        "paired": True,
        "bins": 2,
        "groups": [
            {
                "key": ["a", "x"],
                "counts": [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
                "score_hist": [0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4],
            }
        ],
    }
    assert type(d["groups"][0]["counts"][0]) is int and type(d["bins"]) is int
    text = t.to_json()
    assert text == (
        '{"attributes":["g","h"],"bins":2,"groups":[{"counts":[1,0,0,0,0,0,0,0,0,0,0,2],"key":["a","x"],'
        '"score_hist":[0,3,0,0,0,0,0,0,0,0,0,4]}],"kind":"edgefair.counts_table","paired":true,"schema_version":1}'
    )
    assert tables.from_json(text) == t
    assert tables.from_dict(d) == t


def test_round_trip_and_canonical_order():
    t, _ = two_attr()
    assert tables.from_json(t.to_json()) == t
    d = t.to_dict()
    d["groups"] = list(reversed(d["groups"]))
    back = tables.from_dict(d)
    assert back == t and back.groups == t.groups
    assert back.to_json() == t.to_json()
    shuffled = json.loads(t.to_json())
    shuffled["groups"] = shuffled["groups"][2:] + shuffled["groups"][:2]
    assert tables.from_json(json.dumps(shuffled)).to_json() == t.to_json()
    e = tables.empty(["g"], bins=3)
    assert tables.from_json(e.to_json()) == e
    assert tables.from_dict(doc(groups=[], bins=tables.MAX_BINS)).bins == 100000
    z = tables.from_dict(doc(groups=[]))
    assert z.groups == () and z.counts.shape == (0, 3, 2, 2) and z.score_hist.shape == (0, 3, 2, 1)
    no_attrs = doc(attributes=[], groups=[{"key": [], "counts": [1] * 12, "score_hist": [2] * 6}])
    assert tables.from_dict(no_attrs).rows == 12


def test_from_dict_accepts_any_mapping():
    from types import MappingProxyType

    d = doc()
    d["groups"][0] = MappingProxyType(d["groups"][0])
    assert tables.from_dict(MappingProxyType(d)) == tables.empty(["g"], 1, groups=[("a",)])


def test_from_dict_document_errors():
    assert error(tables.from_dict, []) == "counts table document must be a JSON object"
    assert error(tables.from_dict, doc(kind="x")) == "document is not an edgefair counts table (kind mismatch)"
    d = doc()
    del d["kind"]
    assert error(tables.from_dict, d) == "document is not an edgefair counts table (kind mismatch)"
    assert error(tables.from_dict, doc(schema_version=2)) == "counts table schema_version 2, expected 1"
    assert error(tables.from_dict, doc(schema_version=True)) == "counts table schema_version True, expected 1"
    assert error(tables.from_dict, doc(schema_version="1")) == "counts table schema_version '1', expected 1"
    d = doc()
    del d["schema_version"]
    assert error(tables.from_dict, d) == "counts table schema_version None, expected 1"
    assert tables.from_dict(doc(schema_version=1.0)).groups == (("a",),)
    for key in ("attributes", "bins", "groups", "paired"):
        d = doc()
        del d[key]
        assert error(tables.from_dict, d) == f"counts table has no {key!r}"
    d = doc()
    del d["groups"], d["paired"]
    assert error(tables.from_dict, d) == "counts table has no 'groups'"


def test_from_dict_field_errors():
    msg = "counts table 'attributes' must be a list of non-empty names, got "
    assert error(tables.from_dict, doc(attributes="g")) == msg + "'g'"
    assert error(tables.from_dict, doc(attributes=("g",))) == msg + "('g',)"
    assert error(tables.from_dict, doc(attributes=["g", ""])) == msg + "['g', '']"
    assert error(tables.from_dict, doc(attributes=["g", 1])) == msg + "['g', 1]"
    assert error(tables.from_dict, doc(attributes=["g", "g"])) == (
        "counts table 'attributes' names an attribute twice: ['g', 'g']"
    )
    msg = "counts table 'bins' must be an integer in [1, 100000], got "
    assert error(tables.from_dict, doc(bins=0, groups=[])) == msg + "0"
    assert error(tables.from_dict, doc(bins=-1, groups=[])) == msg + "-1"
    assert error(tables.from_dict, doc(bins=100001, groups=[])) == msg + "100001"
    assert error(tables.from_dict, doc(bins=True, groups=[])) == msg + "True"
    assert error(tables.from_dict, doc(bins=1.0, groups=[])) == msg + "1.0"
    assert error(tables.from_dict, doc(bins="2", groups=[])) == msg + "'2'"
    assert tables.from_dict(doc(bins=1, groups=[])).bins == 1
    assert error(tables.from_dict, doc(paired=1)) == "counts table 'paired' must be true or false, got 1"
    assert error(tables.from_dict, doc(paired="true")) == "counts table 'paired' must be true or false, got 'true'"
    assert tables.from_dict(doc(paired=True)).paired is True
    assert error(tables.from_dict, doc(groups={"a": 1})) == "counts table 'groups' must be a list, got {'a': 1}"
    assert error(tables.from_dict, doc(groups=("x",))) == "counts table 'groups' must be a list, got ('x',)"


def test_short_cuts_long_values_at_forty_characters():
    forty = "x" * 38  # repr adds two quotes: exactly 40 characters
    assert error(tables.from_dict, doc(paired=forty)) == f"counts table 'paired' must be true or false, got '{forty}'"
    longer = "x" * 39
    assert error(tables.from_dict, doc(paired=longer)) == (
        "counts table 'paired' must be true or false, got '" + "x" * 36 + "..."
    )
    assert len(tables._short("y" * 100)) == 40


def test_from_dict_group_entry_errors():
    good = {"key": ["a"], "counts": [0] * 12, "score_hist": [0] * 6}
    msg = "counts table groups[1] must be an object with key, counts and score_hist"
    assert error(tables.from_dict, doc(groups=[good, ["a"]])) == msg
    for missing in ("key", "counts", "score_hist"):
        entry = {k: v for k, v in good.items() if k != missing}
        assert error(tables.from_dict, doc(groups=[good, entry])) == msg
    key_msg = "counts table groups[0]: 'key' must be a list of 2 strings (one per attribute), got "
    two = ["g", "h"]
    assert error(tables.from_dict, doc(attributes=two, groups=[{**good, "key": ["a"]}])) == key_msg + "['a']"
    assert error(tables.from_dict, doc(attributes=two, groups=[{**good, "key": ["a", 1]}])) == key_msg + "['a', 1]"
    assert error(tables.from_dict, doc(attributes=two, groups=[{**good, "key": "ab"}])) == key_msg + "'ab'"
    assert error(tables.from_dict, doc(attributes=two, groups=[{**good, "key": ["a", "b", "c"]}])) == (
        key_msg + "['a', 'b', 'c']"
    )


def test_from_dict_cell_errors_name_group_and_cell():
    def entry(**kw):
        return {"key": ["b"], "counts": [0] * 12, "score_hist": [0] * 6, **kw}

    first = {"key": ["a"], "counts": [1] * 12, "score_hist": [1] * 6}

    def err(**kw):
        return error(tables.from_dict, doc(groups=[first, entry(**kw)]))

    assert err(counts=(0,) * 12) == "counts table group 1 ['b']: 'counts' must be a list of 12 integers"
    assert err(score_hist="x") == "counts table group 1 ['b']: 'score_hist' must be a list of 6 integers"
    assert err(counts=[0] * 11) == "counts table group 1 ['b']: 'counts' has 11 cells, expected 12"
    assert err(counts=[0] * 13) == "counts table group 1 ['b']: 'counts' has 13 cells, expected 12"
    assert err(score_hist=[0] * 7) == "counts table group 1 ['b']: 'score_hist' has 7 cells, expected 6"
    c = [0] * 12
    c[3] = True
    assert err(counts=c) == "counts table group 1 ['b']: counts[3] is True, expected a whole count"
    c[3] = 1.0
    assert err(counts=c) == "counts table group 1 ['b']: counts[3] is 1.0, expected a whole count"
    c[3] = "1"
    assert err(counts=c) == "counts table group 1 ['b']: counts[3] is '1', expected a whole count"
    c[3] = -1
    assert err(counts=c) == "counts table group 1 ['b']: counts[3] is -1, expected a count in [0, 2**62]"
    c[3] = MAX + 1
    assert err(counts=c) == f"counts table group 1 ['b']: counts[3] is {MAX + 1}, expected a count in [0, 2**62]"
    h = [0] * 6
    h[5] = False
    assert err(score_hist=h) == "counts table group 1 ['b']: score_hist[5] is False, expected a whole count"
    h[5] = -3
    assert err(score_hist=h) == "counts table group 1 ['b']: score_hist[5] is -3, expected a count in [0, 2**62]"
    h[5] = 2**63
    assert err(score_hist=h) == f"counts table group 1 ['b']: score_hist[5] is {2**63}, expected a count in [0, 2**62]"
    long_key = ["k" * 50]
    bad = {"key": long_key, "counts": [0] * 11, "score_hist": [0] * 6}
    assert error(tables.from_dict, doc(groups=[bad])) == (
        "counts table group 0 ['" + "k" * 35 + "...: 'counts' has 11 cells, expected 12"
    )
    # the bounds themselves are fine
    ok = [0] * 12
    ok[0], ok[11] = MAX, 0
    t = tables.from_dict(doc(groups=[{"key": ["a"], "counts": ok, "score_hist": [MAX, 0, 0, 0, 0, 0]}]))
    assert t.counts[0, 0, 0, 0] == MAX and t.counts[0, 2, 1, 1] == 0 and t.score_hist[0, 0, 0, 0] == MAX


def test_from_dict_duplicate_groups():
    e = {"key": ["a"], "counts": [0] * 12, "score_hist": [0] * 6}
    f = {"key": ["b"], "counts": [0] * 12, "score_hist": [0] * 6}
    assert error(tables.from_dict, doc(groups=[e, f, e])) == "counts table lists group ['a'] twice"
    assert error(tables.from_dict, doc(groups=[f, e, e])) == "counts table lists group ['a'] twice"
    assert error(tables.from_dict, doc(groups=[f, e, f, e])) == "counts table lists group ['b'] twice"


def test_from_dict_total_guards():
    def one(counts, hist, key="a"):
        return {"key": [key], "counts": counts + [0] * (12 - len(counts)), "score_hist": hist + [0] * (6 - len(hist))}

    t = tables.from_dict(doc(groups=[one([2**61, 2**61], [])]))  # exactly 2**62 rows
    assert t.rows == MAX
    t = tables.from_dict(doc(groups=[one([2**61], []), one([2**61], [], "b")]))
    assert t.rows == MAX
    too_many = "counts table holds more than 2**62 rows in total ({}); expected counts"
    assert error(tables.from_dict, doc(groups=[one([2**61, 2**61, 1 << 40], [])])) == too_many.format("4.61e+18")
    assert error(tables.from_dict, doc(groups=[one([2**62, 2**62], [])])) == too_many.format("9.22e+18")
    # int64 sums would wrap to 0 here: the guard sums in float64
    assert error(tables.from_dict, doc(groups=[one([2**62] * 4, [])])) == too_many.format("1.84e+19")
    assert error(tables.from_dict, doc(groups=[one([2**62] * 2, []), one([2**62] * 2, [], "b")])) == (
        too_many.format("1.84e+19")
    )
    t = tables.from_dict(doc(groups=[one([], [2**62, 2**62])]))  # histograms may hold 2 x 2**62
    assert int(t.score_hist.sum(dtype=np.float64)) == 2**63
    assert error(tables.from_dict, doc(groups=[one([3], [2**62, 2**62, 2**60])])) == too_many.format("3")
    assert error(tables.from_dict, doc(groups=[one([], [2**62] * 4)])) == too_many.format("0")
    assert error(tables.from_dict, doc(groups=[one([], [2**62] * 2), one([], [2**62] * 2, "b")])) == (
        too_many.format("0")
    )


def test_from_json_errors():
    for text in ("{", "", "[1,", '{"a": }'):
        try:
            json.loads(text)
        except json.JSONDecodeError as exc:
            expected = f"counts table is not valid JSON: {exc}"
        assert error(tables.from_json, text) == expected
    big = "1" * 5000
    exc_text = None
    try:
        json.loads(big)
    except ValueError as exc:
        exc_text = str(exc).splitlines()[0][:100]
    assert len(exc_text) == 100
    with pytest.raises(InputError) as info:
        tables.from_json(big)
    assert str(info.value) == f"counts table is not usable JSON: {exc_text}"
    assert info.value.__cause__ is None and info.value.__suppress_context__
    deep = "[" * 200_000
    assert error(tables.from_json, deep) == (
        "counts table is not usable JSON: "
        "maximum recursion depth exceeded while decoding a JSON array from a unicode string"
    )
    for text in ("[]", "1", '"x"', "null"):
        assert error(tables.from_json, text) == "counts table JSON must be an object"
    assert error(tables.from_json, '{"kind": "x"}') == "document is not an edgefair counts table (kind mismatch)"


# ---------------------------------------------------------------- counting rows


def test_from_arrays_matches_python_loop():
    rng = np.random.default_rng(7)
    n = 400
    g = rng.choice(["a", "b", "c", "d"], n)
    h = rng.integers(0, 3, n)
    y, r, c = rng.integers(0, 2, (3, n))
    rs, cs = rng.random(n), rng.random(n)
    rs[:5] = [0.0, 1.0, 0.5, 0.25, 0.999999]
    bins = 4
    t = tables.from_arrays({"g": g, "h": h}, r, c, y, reference_score=rs, candidate_score=cs, bins=bins)
    rows = [
        (
            (str(g[i]), str(h[i])),
            int(y[i]),
            int(r[i]),
            int(c[i]),
            min(int(rs[i] * bins), bins - 1),
            min(int(cs[i] * bins), bins - 1),
        )
        for i in range(n)
    ]
    assert t == raw_table(("g", "h"), rows, bins, True)
    assert t.attributes == ("g", "h") and t.paired is True and t.bins == 4
    assert t.counts.dtype == np.int64 and t.score_hist.dtype == np.int64
    # unlabelled, single model: decisions in both axes, labels unknown
    u = tables.from_arrays({"g": g}, r, reference_score=rs, bins=bins)
    rows_u = [
        ((str(g[i]),), 2, int(r[i]), int(r[i]), min(int(rs[i] * bins), bins - 1), min(int(rs[i] * bins), bins - 1))
        for i in range(n)
    ]
    assert u == raw_table(("g",), rows_u, bins, False)


def test_from_arrays_by_hand():
    t = tables.from_arrays({"s": ["m", "f", "m"]}, [1, 0, 1], [0, 0, 1], [1, 1, 0])
    assert t.groups == (("f",), ("m",)) and t.paired is True and t.bins == 50
    assert t.counts.reshape(2, 12).tolist() == [cells(c4=1), cells(c6=1, c3=1)]
    assert not t.score_hist.any() and t.score_hist.shape == (2, 3, 2, 50)
    u = tables.from_arrays({"s": ["m", "f", "m"]}, [1, 0, 1])
    assert u.paired is False
    assert u.counts.reshape(2, 12).tolist() == [cells(c8=1), cells(c11=2)]


def test_from_arrays_minlength_when_last_group_uses_low_cells():
    # the last group's only row is in cell 0 and bin 0: bincount must still reach the full length
    t = tables.from_arrays({"g": ["b", "a"]}, [1, 0], [1, 0], [1, 0], reference_score=[0.9, 0.0], bins=3)
    assert t.counts.reshape(2, 12).tolist() == [cells(c0=1), cells(c7=1)]
    assert t.score_hist[1, 1, 0].tolist() == [0, 0, 1] and t.score_hist[0, 0, 0].tolist() == [1, 0, 0]
    assert not t.score_hist[:, :, 1].any()  # paired, no candidate scores


def test_from_arrays_histogram_models():
    s = {"g": ["a", "a", "b"]}
    rs, cs = [0.1, 0.6, 1.0], [0.9, 0.0, 0.5]
    # single model with reference scores: the candidate histogram is a copy
    t = tables.from_arrays(s, [0, 1, 1], reference_score=rs, bins=2)
    assert t.score_hist[:, 2, 0].tolist() == [[1, 1], [0, 1]]
    assert t.score_hist[:, 2, 1].tolist() == [[1, 1], [0, 1]]
    assert not t.score_hist[:, :2].any()
    # paired with reference scores only: the candidate histogram stays empty
    p = tables.from_arrays(s, [0, 1, 1], [1, 1, 0], reference_score=rs, bins=2)
    assert p.score_hist[:, 2, 0].tolist() == [[1, 1], [0, 1]]
    assert not p.score_hist[:, :, 1].any()
    # single model with both scores: each histogram its own
    b = tables.from_arrays(s, [0, 1, 1], reference_score=rs, candidate_score=cs, bins=2)
    assert b.score_hist[:, 2, 0].tolist() == [[1, 1], [0, 1]]
    assert b.score_hist[:, 2, 1].tolist() == [[1, 1], [0, 1]] and b.score_hist[0, 2, 1].tolist() == [1, 1]
    b2 = tables.from_arrays(s, [0, 1, 1], reference_score=rs, candidate_score=[0.9, 0.8, 0.0], bins=2)
    assert b2.score_hist[:, 2, 1].tolist() == [[0, 2], [1, 0]]
    # candidate scores alone fill only the candidate histogram
    c = tables.from_arrays(s, [0, 1, 1], candidate_score=cs, bins=2)
    assert not c.score_hist[:, :, 0].any()
    assert c.score_hist[:, 2, 1].tolist() == [[1, 1], [0, 1]]
    # labelled: scores go to the row's label
    lab = tables.from_arrays(s, [0, 1, 1], [0, 0, 0], [1, 0, 1], reference_score=rs, candidate_score=cs, bins=2)
    assert lab.score_hist[0].tolist() == [[[0, 1], [1, 0]], [[1, 0], [0, 1]], [[0, 0], [0, 0]]]
    assert lab.score_hist[1].tolist() == [[[0, 0], [0, 0]], [[0, 1], [0, 1]], [[0, 0], [0, 0]]]


def test_from_arrays_errors():
    s = {"g": ["a", "b"]}
    assert error(tables.from_arrays, {}, [1]) == "at least one sensitive attribute is needed"
    assert error(tables.from_arrays, s, [0, 2]) == "reference decisions must be 0 or 1; row 1 is 2"
    assert error(tables.from_arrays, s, [0, 1], [0, 1, 1]) == "candidate decisions has 3 rows, expected 2"
    assert error(tables.from_arrays, s, [0, 1], [0, 3]) == "candidate decisions must be 0 or 1; row 1 is 3"
    assert error(tables.from_arrays, s, [0, 1], None, [0]) == "labels has 1 rows, expected 2"
    assert error(tables.from_arrays, s, [0, 1], None, [5, 1]) == "labels must be 0 or 1; row 0 is 5"
    assert error(tables.from_arrays, s, [0, 1, 1]) == "sensitive attribute 'g' has 2 rows, expected 3"
    assert error(tables.from_arrays, s, [0, 1], reference_score=[0.5]) == "reference scores has 1 rows, expected 2"
    assert error(tables.from_arrays, s, [0, 1], candidate_score=[0.5, 2.0]) == (
        "candidate scores must lie in [0, 1]; row 1 is 2.0"
    )
    assert error(tables.from_arrays, s, [0, 1], reference_score=[float("nan"), 0.5]) == (
        "reference scores must lie in [0, 1]; row 0 is nan"
    )
    assert error(tables.from_arrays, s, [0, 1], [1, 1], reference_score=[0.5, 0.5], candidate_score=[0.1]) == (
        "candidate scores has 1 rows, expected 2"
    )


# ---------------------------------------------------------------- binary_array and score_bins


def test_binary_array_dtypes():
    b = tables.binary_array(np.array([True, False, True]), "x")
    assert b.dtype == np.int64 and b.tolist() == [1, 0, 1]
    f = tables.binary_array(np.array([1.0, 0.0, -0.0]), "x")
    assert f.dtype == np.int64 and f.tolist() == [1, 0, 0]
    u = tables.binary_array(np.array([1, 0], np.uint8), "x")
    assert u.dtype == np.int64 and u.tolist() == [1, 0]
    i = tables.binary_array([0, 1, 1], "x")
    assert i.dtype == np.int64 and i.tolist() == [0, 1, 1]
    e = tables.binary_array(np.array([], np.int64), "x")
    assert e.dtype == np.int64 and len(e) == 0
    e = tables.binary_array(np.array([], np.int32), "x", 0)
    assert e.dtype == np.int64 and len(e) == 0
    e = tables.binary_array(np.array([], np.float64), "x")
    assert e.dtype == np.int64 and len(e) == 0
    assert tables.binary_array(np.array([1], np.int16), "x", 1).tolist() == [1]
    assert tables.binary_array(np.array([0, 0], np.int64), "x").tolist() == [0, 0]
    assert tables.binary_array(np.array([1, 1], np.int64), "x").tolist() == [1, 1]


def test_binary_array_fast_path_does_not_copy_int64():
    for values in ([0, 1, 1, 0], [0, 0], [1, 1], [1], [0]):
        arr = np.array(values, np.int64)
        out = tables.binary_array(arr, "x")
        assert np.shares_memory(out, arr), values
    arr = np.array([1.0, 0.0])
    assert not np.shares_memory(tables.binary_array(arr, "x"), arr)


def test_binary_array_errors():
    assert error(tables.binary_array, [0, 1, 2, 5], "votes") == "votes must be 0 or 1; row 2 is 2"
    assert error(tables.binary_array, np.array([-1, 1]), "votes") == "votes must be 0 or 1; row 0 is -1"
    assert error(tables.binary_array, np.array([0, 1, -1], np.int8), "v") == "v must be 0 or 1; row 2 is -1"
    assert error(tables.binary_array, [1.0, 0.5], "v") == "v must be 0 or 1; row 1 is 0.5"
    assert error(tables.binary_array, [0.0, 1.0, float("nan")], "v") == "v must be 0 or 1; row 2 is nan"
    assert error(tables.binary_array, np.array([0, 255], np.uint8), "v") == "v must be 0 or 1; row 1 is 255"
    assert error(tables.binary_array, [1, 2], "v") == "v must be 0 or 1; row 1 is 2"
    assert error(tables.binary_array, [2, 1], "v") == "v must be 0 or 1; row 0 is 2"
    assert error(tables.binary_array, ["0", "1"], "v") == "v must be numeric 0/1, got dtype <U1"
    assert error(tables.binary_array, np.array([1, 0], object), "v") == "v must be numeric 0/1, got dtype object"
    assert error(tables.binary_array, np.array([1 + 0j]), "v") == "v must be numeric 0/1, got dtype complex128"
    assert error(tables.binary_array, [0, 1], "v", 3) == "v has 2 rows, expected 3"
    assert error(tables.binary_array, [0, 1, 1], "v", 2) == "v has 3 rows, expected 2"
    assert error(tables.binary_array, [[0, 1], [1, 0]], "v") == "v must be one-dimensional, got shape (2, 2)"
    assert error(tables.binary_array, 1, "v") == "v must be one-dimensional, got shape ()"
    assert error(tables.binary_array, np.zeros((1, 1, 3)), "v") == "v must be one-dimensional, got shape (1, 1, 3)"
    assert error(tables.binary_array, np.zeros((3, 1, 1)), "v") == "v must be one-dimensional, got shape (3, 1, 1)"


def test_binary_array_accepts_a_row_or_a_column():
    assert tables.binary_array(np.array([[0], [1], [1]]), "v", 3).tolist() == [0, 1, 1]
    assert tables.binary_array(np.array([[1, 0, 1]]), "v", 3).tolist() == [1, 0, 1]
    assert tables.binary_array(np.array([[True, False]]), "v").tolist() == [1, 0]
    assert tables.binary_array(np.array([[1]]), "v", 1).tolist() == [1]
    assert error(tables.binary_array, np.array([[0], [2]]), "v") == "v must be 0 or 1; row 1 is 2"


def test_score_bins_edges():
    assert tables.score_bins([0.0, 1.0, 0.5, 0.4999, 0.9999, 0.25], 2, 6, "s").tolist() == [0, 1, 1, 0, 1, 0]
    out = tables.score_bins(np.array([0.0, 0.1, 0.19, 0.2, 0.99, 1.0]), 10, 6, "s")
    assert out.tolist() == [0, 1, 1, 2, 9, 9] and out.dtype == np.int64
    assert tables.score_bins([1.0], 1, 1, "s").tolist() == [0]
    assert tables.score_bins([0.0, 1.0], 50, 2, "s").tolist() == [0, 49]
    assert tables.score_bins([[0.3], [1.0]], 5, 2, "s").tolist() == [1, 4]
    assert tables.score_bins([], 5, 0, "s").tolist() == []
    assert tables.score_bins(np.array([0, 1]), 3, 2, "s").tolist() == [0, 2]


def test_score_bins_errors():
    assert error(tables.score_bins, [0.5], 2, 2, "sc") == "sc has 1 rows, expected 2"
    assert error(tables.score_bins, [0.5, 0.5, 0.5], 2, 2, "sc") == "sc has 3 rows, expected 2"
    assert error(tables.score_bins, [0.5, -0.0001], 2, 2, "sc") == "sc must lie in [0, 1]; row 1 is -0.0001"
    assert error(tables.score_bins, [1.0000001, 0.5], 2, 2, "sc") == "sc must lie in [0, 1]; row 0 is 1.0000001"
    assert error(tables.score_bins, [0.5, 0.2, float("nan")], 2, 3, "sc") == "sc must lie in [0, 1]; row 2 is nan"
    assert error(tables.score_bins, [0.5, float("inf")], 2, 2, "sc") == "sc must lie in [0, 1]; row 1 is inf"
    assert error(tables.score_bins, [0.5, -1.0, 2.0], 2, 3, "sc") == "sc must lie in [0, 1]; row 1 is -1.0"


# ---------------------------------------------------------------- regrouping


def test_regroup_and_canonical_sum_duplicates_and_sort():
    t = table(
        [["b"], ["a"], ["c"]],
        [cells(c0=1), cells(c1=2), cells(c2=3)],
        [[1] + [0] * 5, [0, 2, 0, 0, 0, 0], [0] * 6],
        paired=True,
    )
    c = tables._canonical(t)
    assert c.groups == (("a",), ("b",), ("c",)) and c.paired is True
    assert c.counts.reshape(3, 12).tolist() == [cells(c1=2), cells(c0=1), cells(c2=3)]
    assert c.score_hist.reshape(3, 6).tolist() == [[0, 2, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0], [0] * 6]
    r = tables._regroup(t, ("k",), [("y",), ("x",), ("y",)])
    assert r.attributes == ("k",) and r.groups == (("x",), ("y",)) and r.paired is True
    assert r.counts.reshape(2, 12).tolist() == [cells(c1=2), cells(c0=1, c2=3)]
    assert r.score_hist.reshape(2, 6).tolist() == [[0, 2, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0]]
    assert r.counts.dtype == np.int64 and r.score_hist.dtype == np.int64


def test_from_json_names_the_exception_type_when_its_message_is_empty():
    class Text(str):
        def startswith(self, *args, **kwargs):  # json.loads checks a str for a BOM first
            raise ValueError()

    assert error(tables.from_json, Text("{}")) == "counts table is not usable JSON: ValueError"


def test_score_bins_reports_integer_rows_as_floats():
    assert error(tables.score_bins, [0, 2], 2, 2, "sc") == "sc must lie in [0, 1]; row 1 is 2.0"
    assert error(tables.score_bins, np.array([True, False]), 2, 3, "sc") == "sc has 2 rows, expected 3"
    assert tables.score_bins(np.array([True, False]), 4, 2, "sc").tolist() == [3, 0]
    assert tables.score_bins(["0.5", "1"], 2, 2, "sc").tolist() == [1, 1]
