"""Bad input is one line on stderr and exit code 2: never a traceback, never exit 1, never half a file.

First the specific cases (each failed before its fix), then a campaign: hypothesis-made CSVs,
policies, counts-table JSON and bundle manifests fed to the commands that read them. Most
examples run ``edgefair.cli.main`` in this process (a subprocess costs ~0.4 s); a handful run
the real entry point in a subprocess.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tomllib
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgefair import data
from edgefair.core import tables
from edgefair.errors import InputError, PolicyError, PrivacyBudgetError, StoreError
from edgefair.runtime.privacy import MIN_EPSILON, discrete_laplace, private_export, write_private_export
from edgefair.runtime.store import CounterStore, load_counters, open_store
from edgefair.verification.policy import MAX_SEED, load_policy, policy_from_dict
from tests.conftest import assert_one_line_error, run_cli

MODEL = str(Path(__file__).resolve().parents[1] / "edgefair" / "demo" / "models" / "adult_sklearn.onnx")
CAMPAIGN = settings(  # EDGEFAIR_CAMPAIGN_EXAMPLES=500 for a deeper run by hand
    max_examples=int(os.environ.get("EDGEFAIR_CAMPAIGN_EXAMPLES", "25")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# -- in-process runs of the real entry point ----------------------------------------------


class Outcome:
    def __init__(self, code: int, out: str, err: str, crash: BaseException | None) -> None:
        self.code, self.out, self.err, self.crash = code, out, err, crash


def run_main(*args: str) -> Outcome:
    """``edgefair.cli.main`` with these arguments, in this process; an exception that escapes
    main (a traceback in a real run) is kept, not raised."""
    from edgefair.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved = sys.argv
    sys.argv = ["edgefair", *args]
    code, crash = 0, None
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException as exc:  # what would have been a traceback
        crash, code = exc, -1
    finally:
        sys.argv = saved
    return Outcome(code, out.getvalue(), err.getvalue(), crash)


def assert_clean(o: Outcome, *fragments: str, codes: tuple[int, ...] = (0, 1, 2)) -> None:
    """The campaign's property: exit 0, 1 or 2; on 2 exactly one 'edgefair: error:' line."""
    assert o.crash is None, f"escaped main: {type(o.crash).__name__}: {o.crash}"
    assert o.code in codes, (o.code, o.out[-500:], o.err[-500:])
    assert "Traceback" not in o.err, o.err
    if o.code == 2:
        lines = o.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("edgefair: error:"), o.err
        for f in fragments:
            assert f in o.err, (f, o.err)


def one_line(o: Outcome, *fragments: str) -> None:
    assert_clean(o, *fragments, codes=(2,))


# -- policies ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        ({"seed": -1}, "'seed'"),
        ({"seed": 2**32}, "'seed'"),
        ({"seed": 1.5}, "'seed'"),
        ({"seed": True}, "'seed'"),
        ({"confidence": math.nan}, "'confidence'"),
        ({"confidence": 1.0}, "'confidence'"),
        ({"min_group_size": 0}, "'min_group_size'"),
        ({"min_group_size": 2**62}, "'min_group_size'"),
        ({"bootstrap_replicates": 99}, "'bootstrap_replicates'"),
        ({"adjustment": "sidak"}, "'adjustment'"),
        ({"sensitive": [1, 2]}, "sensitive[0]"),
        ({"sensitive": ["race", " "]}, "sensitive[1]"),
        ({"sensitive": ["race", "race"]}, "'race'"),
        ({"checks": [{"kind": "group_max", "metric": "selection_rate", "tolerance": math.inf}]}, "tolerance"),
        (
            {"checks": [{"kind": "group_max", "metric": "selection_rate", "tolerance": 0.1}] * 2},
            "listed twice",
        ),
    ],
)
def test_policy_fields_are_range_checked(doc: dict[str, Any], fragment: str) -> None:
    with pytest.raises(PolicyError) as info:
        policy_from_dict(doc)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_policy_seed_bounds_are_inclusive() -> None:
    assert policy_from_dict({"seed": 0}).seed == 0
    assert policy_from_dict({"seed": MAX_SEED}).seed == MAX_SEED


def test_policy_with_a_bom_loads_and_a_folder_is_one_line(tmp_path: Path) -> None:
    pol = tmp_path / "bom.toml"
    pol.write_bytes(b"\xef\xbb\xbfseed = 7\n")
    assert load_policy(pol).seed == 7
    with pytest.raises(PolicyError, match="is a folder"):
        load_policy(tmp_path)
    (tmp_path / "latin.toml").write_bytes(b"seed = 1 # caf\xe9\n")
    with pytest.raises(PolicyError, match="not UTF-8"):
        load_policy(tmp_path / "latin.toml")


def test_verify_with_negative_seed_is_one_line(tmp_path: Path) -> None:
    from tests.conftest import MODELS

    pol = tmp_path / "p.toml"
    pol.write_text("seed = -1\n")
    model = str(MODELS / "adult_sklearn.onnx")
    assert_one_line_error(run_cli("verify", model, model, "--policy", str(pol)), str(pol), "'seed'")


# -- counts tables ----------------------------------------------------------------------


def table_doc(counts: list[Any] | None = None, hist: list[Any] | None = None, bins: int = 1) -> dict[str, Any]:
    return {
        "kind": "edgefair.counts_table",
        "schema_version": 1,
        "attributes": ["g"],
        "bins": bins,
        "paired": False,
        "groups": [
            {"key": ["a"], "counts": counts if counts is not None else [1] * 12, "score_hist": hist or [0] * 6 * bins}
        ],
    }


@pytest.mark.parametrize(
    ("counts", "hist", "fragment"),
    [
        ([1e30] + [0] * 11, None, "counts[0]"),
        ([1.5] + [0] * 11, None, "counts[0]"),
        ([1.0] + [0] * 11, None, "counts[0]"),
        ([True] + [0] * 11, None, "counts[0]"),
        ([2**62 + 1] + [0] * 11, None, "counts[0]"),
        ([0] * 11 + [2**70], None, "counts[11]"),
        ([1] * 11, None, "11 cells, expected 12"),
        ([1] * 13, None, "13 cells, expected 12"),
        ([[1] * 12], None, "'counts'"),
        (None, [0] * 5 + [0.5], "score_hist[5]"),
        (None, [0] * 7, "7 cells, expected 6"),
    ],
)
def test_table_cells_must_be_whole_counts(counts: Any, hist: Any, fragment: str) -> None:
    with pytest.raises(InputError) as info:
        tables.from_dict(table_doc(counts, hist))
    message = str(info.value)
    assert fragment in message and "['a']" in message and "\n" not in message


@pytest.mark.parametrize(
    "text",
    [
        "1" * 5000,  # an int of more digits than Python converts
        "[" * 100_000,  # nesting deeper than the parser recurses
        json.dumps({**table_doc(), "bins": 0}),
        json.dumps({**table_doc(), "bins": "1"}),
        json.dumps({**table_doc(), "paired": "no"}),
        json.dumps({**table_doc(), "attributes": "g"}),
        json.dumps({**table_doc(), "groups": [{"key": "a", "counts": [0] * 12, "score_hist": [0] * 6}]}),
        json.dumps({**table_doc(), "groups": [{"key": [1], "counts": [0] * 12, "score_hist": [0] * 6}]}),
        json.dumps({**table_doc(), "groups": [None]}),
        json.dumps({**table_doc(), "schema_version": True}),
    ],
)
def test_odd_table_documents_are_input_errors(text: str) -> None:
    with pytest.raises(InputError) as info:
        tables.from_json(text)
    assert "\n" not in str(info.value)


def test_a_table_claiming_many_bins_is_refused_before_any_allocation() -> None:
    doc = {
        **table_doc(),
        "bins": 100_000,
        "groups": [{"key": [str(i)], "counts": [], "score_hist": []} for i in range(10**4)],
    }
    with pytest.raises(InputError, match="0 cells, expected 12"):
        tables.from_dict(doc)  # not a 48 GB zero array first


def test_a_table_round_trips_at_the_largest_count() -> None:
    doc = table_doc([2**62] + [0] * 11)
    assert tables.from_dict(doc).counts.reshape(-1)[0] == 2**62


def test_merge_of_a_huge_float_count_is_refused_and_writes_nothing(tmp_path: Path) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(table_doc([1e30] + [0] * 11)))
    b.write_text(json.dumps(table_doc()))
    out = tmp_path / "m.json"
    one_line(run_main("counters", "merge", str(a), str(b), "-o", str(out)), str(a), "counts[0]")
    assert not out.exists()


def test_merge_into_a_folder_names_the_folder(tmp_path: Path) -> None:
    a = tmp_path / "a.json"
    a.write_text(json.dumps(table_doc()))
    (tmp_path / "out").mkdir()
    one_line(run_main("counters", "merge", str(a), "-o", str(tmp_path / "out")), f"{tmp_path / 'out'}:")


def test_merge_of_tables_at_the_cap_does_not_wrap(tmp_path: Path) -> None:
    paths = []
    for i in range(2):
        p = tmp_path / f"t{i}.json"
        p.write_text(json.dumps(table_doc([2**62] + [0] * 11)))
        paths.append(str(p))
    out = tmp_path / "m.json"
    o = run_main("counters", "merge", *paths, "-o", str(out))
    assert_clean(o)
    if o.code == 0:
        assert tables.from_json(out.read_text()).counts.min() >= 0


# -- privacy: epsilon, min_cell, the budget in the store ---------------------------------


def small_store(path: Path, rows: int = 400) -> Path:
    s = CounterStore(path, ("g",), 5)
    rng = np.random.default_rng(0)
    s.flush(tables.from_arrays({"g": rng.choice(["a", "b"], rows)}, rng.integers(0, 2, rows), bins=5))
    s.close()
    return path


@pytest.mark.parametrize("epsilon", ["nan", "inf", "-inf", "1e-300", "0", "-1", "0.0009"])
def test_export_refuses_unusable_epsilon(tmp_path: Path, epsilon: str) -> None:
    db = small_store(tmp_path / "c.db")
    out = tmp_path / "o.json"
    o = run_main("counters", "export", str(db), "-o", str(out), "--epsilon", epsilon, "--budget", "10")
    one_line(o, "epsilon")
    assert not out.exists()
    assert CounterStore(db, ("g",), 5).spent() == 0


def test_smallest_epsilon_is_drawable() -> None:
    noise = discrete_laplace(np.random.default_rng(0), 2 / MIN_EPSILON, (10_000,))
    assert abs(noise.mean()) < 200 and 1000 < noise.std() < 5000


@pytest.mark.parametrize("scale", [math.inf, math.nan, 0.0, -1.0, 2e300])
def test_discrete_laplace_refuses_undrawable_scales(scale: float) -> None:
    with pytest.raises(InputError):
        discrete_laplace(np.random.default_rng(0), scale, (3,))


@pytest.mark.parametrize("min_cell", ["0", "1", "-3"])
def test_export_without_suppression_needs_raw(tmp_path: Path, min_cell: str) -> None:
    db = small_store(tmp_path / "c.db")
    out = tmp_path / "o.json"
    one_line(run_main("counters", "export", str(db), "-o", str(out), "--min-cell", min_cell), "--raw", "min_cell")
    assert not out.exists()
    assert run_main("counters", "export", str(db), "-o", str(out), "--min-cell", "2").code == 0
    with pytest.raises(InputError, match="raw"):
        private_export(load_counters(db), min_cell=1)


def test_raw_and_epsilon_together_are_refused(tmp_path: Path) -> None:
    db = small_store(tmp_path / "c.db")
    one_line(run_main("counters", "export", str(db), "-o", str(tmp_path / "o"), "--raw", "--epsilon", "1"), "raw")


def test_the_budget_lives_in_the_store(tmp_path: Path) -> None:
    db = small_store(tmp_path / "c.db")
    out = [tmp_path / f"o{i}.json" for i in range(6)]
    # no budget set: an export with epsilon is refused, and says how to set one
    one_line(run_main("counters", "export", str(db), "-o", str(out[0]), "--epsilon", "0.5"), "--budget")
    assert not out[0].exists()
    assert_clean(
        run_main("counters", "export", str(db), "-o", str(out[1]), "--epsilon", "1", "--budget", "1.5"), codes=(0,)
    )
    store = CounterStore(db, ("g",), 5)
    assert store.budget() == 1.5 and store.spent() == 1.0
    store.close()
    # over the stored budget without --budget: refused, nothing charged, nothing written
    one_line(run_main("counters", "export", str(db), "-o", str(out[2]), "--epsilon", "5"), "budget of 1.5")
    assert not out[2].exists()
    # raising the budget is refused; lowering it is allowed and binds
    one_line(run_main("counters", "export", str(db), "-o", str(out[3]), "--epsilon", "0.5", "--budget", "9"), "lowered")
    assert not out[3].exists()
    one_line(run_main("counters", "export", str(db), "-o", str(out[4]), "--epsilon", "0.5", "--budget", "1.2"), "1.2")
    assert_clean(run_main("counters", "export", str(db), "-o", str(out[5]), "--epsilon", "0.2"), codes=(0,))
    store = CounterStore(db, ("g",), 5)
    assert store.budget() == 1.2 and store.spent() == pytest.approx(1.2)
    store.close()


@pytest.mark.parametrize("budget", ["nan", "inf", "0", "-1"])
def test_unusable_budgets_are_refused(tmp_path: Path, budget: str) -> None:
    db = small_store(tmp_path / "c.db")
    o = run_main("counters", "export", str(db), "-o", str(tmp_path / "o.json"), "--epsilon", "1", "--budget", budget)
    one_line(o, "budget")
    assert CounterStore(db, ("g",), 5).budget() is None


def test_spend_charges_only_if_the_release_succeeds(tmp_path: Path) -> None:
    store = CounterStore(small_store(tmp_path / "c.db"), ("g",), 5)

    def fail() -> None:
        raise OSError("disk full")

    with pytest.raises(OSError):
        store.spend(0.5, 2.0, "x", fail)
    assert store.spent() == 0 and store.budget() == 2.0  # the budget was given, so it holds
    assert store.spend(0.5, None, "y", lambda: None) == 0.5
    with pytest.raises(PrivacyBudgetError, match="budget"):
        store.spend(1.6, None, "z", lambda: None)
    store.close()


def test_library_export_charges_the_stored_budget(tmp_path: Path) -> None:
    db = small_store(tmp_path / "c.db")
    first = write_private_export(db, tmp_path / "a.json", epsilon=1.0, budget=1.0)
    assert first.budget == 1.0 and first.epsilon_spent == 1.0
    with pytest.raises(PrivacyBudgetError):
        write_private_export(db, tmp_path / "b.json", epsilon=1.0)
    assert not (tmp_path / "b.json").exists()


# -- stores ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("attributes", "not json", "'attributes'"),
        ("attributes", '{"g": 1}', "'attributes'"),
        ("attributes", "[1]", "'attributes'"),
        ("bins", "x", "'bins'"),
        ("bins", "-5", "'bins'"),
        ("bins", "0", "'bins'"),
        ("schema", "2", "schema"),
        ("budget", "lots", "'budget'"),
        ("budget", "nan", "'budget'"),
    ],
)
def test_store_with_bad_meta_is_one_line(tmp_path: Path, key: str, value: str, fragment: str) -> None:
    db = small_store(tmp_path / "c.db")
    with sqlite3.connect(db) as con:
        con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))
    con.close()
    one_line(run_main("counters", "show", str(db)), str(db), fragment)
    with pytest.raises(StoreError):
        open_store(db)


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO cells VALUES ('nope', 0, 1)",
        'INSERT INTO cells VALUES (\'["a", "b"]\', 0, 1)',
        "INSERT INTO cells VALUES ('[\"a\"]', 9999, 1)",
        "UPDATE cells SET value = -4",
        "UPDATE cells SET value = 'x'",
        "DELETE FROM meta WHERE key = 'bins'",
    ],
)
def test_store_with_bad_rows_is_one_line(tmp_path: Path, sql: str) -> None:
    db = small_store(tmp_path / "c.db")
    con = sqlite3.connect(db)
    con.execute(sql)
    con.commit()
    con.close()
    one_line(run_main("counters", "show", str(db)), str(db))


@pytest.mark.parametrize("name", ["a?b.db", "c%41.db", "d#e.db", "f%.db", "g?mode=ro.db"])
def test_store_paths_with_uri_characters_make_no_stray_files(tmp_path: Path, name: str) -> None:
    folder = tmp_path / "s"
    folder.mkdir()
    db = small_store(folder / name)
    assert run_main("counters", "show", str(db)).code == 0
    assert run_main("counters", "export", str(db), "-o", str(tmp_path / "x.json"), "--raw").code == 0
    assert load_counters(db).rows == 400
    assert {p.name for p in folder.iterdir()} <= {name, f"{name}-wal", f"{name}-shm"}


def test_show_opens_read_only_and_changes_nothing(tmp_path: Path) -> None:
    db = small_store(tmp_path / "c.db")
    before = db.read_bytes()
    assert run_main("counters", "show", str(db)).code == 0
    assert db.read_bytes() == before
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT COUNT(*) FROM ledger").fetchone()[0] == 0


def test_store_on_a_read_only_file_system(tmp_path: Path) -> None:
    """Root ignores file modes, but not a read-only mount: a bind mount made read-only in a
    private mount namespace (unshare) is a read-only store for root too, and for nobody else."""
    folder = tmp_path / "ro"
    folder.mkdir()
    db = small_store(folder / "c.db")
    script = (
        f"mount --bind {folder} {folder} && mount -o remount,bind,ro {folder} || exit 77; "
        f"touch {folder}/probe 2>/dev/null && exit 78; "
        f"{sys.executable} -m edgefair counters show {db} > {tmp_path}/show.out 2> {tmp_path}/show.err; "
        f"echo $? > {tmp_path}/show.rc; "
        f"{sys.executable} -m edgefair counters export {db} -o {tmp_path}/e.json --epsilon 1 --budget 2 "
        f"2> {tmp_path}/export.err; echo $? > {tmp_path}/export.rc"
    )
    try:
        proc = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", script], capture_output=True, timeout=120
        )
    except FileNotFoundError:
        pytest.skip("no unshare here")
    if proc.returncode in (77, 1) and not (tmp_path / "show.rc").exists():
        pytest.skip(f"cannot make a read-only mount here: {proc.stderr.decode()[:200]}")
    assert proc.returncode != 78, "the mount is not read-only"
    assert (tmp_path / "show.rc").read_text().strip() == "0", (tmp_path / "show.err").read_text()
    assert "400 predictions" in (tmp_path / "show.out").read_text()
    assert (tmp_path / "export.rc").read_text().strip() == "2"
    err = (tmp_path / "export.err").read_text().strip()
    assert len(err.splitlines()) == 1 and "read-only" in err and "Traceback" not in err, err
    assert not (tmp_path / "e.json").exists()


# -- CSVs --------------------------------------------------------------------------------


def csv_error(tmp_path: Path, body: bytes, columns: list[str] | None = None) -> str:
    path = tmp_path / "x.csv"
    path.write_bytes(body)
    with pytest.raises(InputError) as info:
        for chunk in data.iter_csv(path, columns):
            for name, values in chunk.columns.items():
                data.numeric(values, name, chunk.source, chunk.first_line, allow_missing=False)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_a_bom_is_not_part_of_the_first_column(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbfy,g\n1,2\n")
    (chunk,) = data.iter_csv(path, ["y"])
    assert list(chunk.columns) == ["y"] and chunk.columns["y"].tolist() == ["1"]
    sha: list[str] = []
    list(data.iter_csv(path, None, on_done=sha.append))
    assert sha == [hashlib.sha256(path.read_bytes()).hexdigest()]  # the hash covers the BOM too


@pytest.mark.parametrize("bad_line", [2, 40, 3000, 6001])
def test_invalid_utf8_is_reported_at_its_line(tmp_path: Path, bad_line: int) -> None:
    lines = [b"a,b"] + [f"{i},{i}".encode() for i in range(6000)]
    lines[bad_line - 1] = b"1,caf\xe9"
    message = csv_error(tmp_path, b"\n".join(lines) + b"\n")
    assert f"line {bad_line}:" in message and "0xe9" in message and "UTF-8" in message


def test_invalid_utf8_in_a_gzip_file_is_reported_at_its_line(tmp_path: Path) -> None:
    import gzip

    lines = [b"a,b"] + [f"{i},{i}".encode() for i in range(5000)]
    lines[4321] = b"\xff,1"
    path = tmp_path / "x.csv.gz"
    path.write_bytes(gzip.compress(b"\n".join(lines) + b"\n"))
    with pytest.raises(InputError, match="line 4322: byte 0xff"):
        list(data.iter_csv(path))


@pytest.mark.parametrize(
    ("header", "fragment"),
    [
        (b"a,,b", "column 2 of 3"),
        (b"a,b,", "column 3 of 3"),
        (b" ,a", "column 1 of 2"),
        (b"a, a", "'a' appears twice"),
        (b'"a ",a', "'a' appears twice"),
        (b",", "header row is empty"),
    ],
)
def test_header_names_must_be_present_and_distinct(tmp_path: Path, header: bytes, fragment: str) -> None:
    message = csv_error(tmp_path, header + b"\n1,2,3\n")
    assert "line 1" in message and fragment in message


def test_lines_stay_right_after_blank_lines_and_quoted_newlines(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(b'a,b\n1,2\n\n\n3,"x\ny"\n5,6\n7,oops\n')
    seen = {}
    for chunk in data.iter_csv(path):
        for i, v in enumerate(chunk.columns["b"].tolist()):
            seen[v] = chunk.first_line + i  # what every caller computes
    assert seen == {"2": 2, "x\ny": 5, "6": 7, "oops": 8}
    with pytest.raises(InputError, match="line 8, column 'b'"):
        for chunk in data.iter_csv(path):
            if chunk.columns["b"].tolist() != ["x\ny"]:
                data.numeric(chunk.columns["b"], "b", chunk.source, chunk.first_line)


def test_a_ragged_row_is_named_by_its_first_line(tmp_path: Path) -> None:
    assert "line 4: 3 fields, expected 2" in csv_error(tmp_path, b'a,b\n1,2\n\n"3\n",4,5\n')


def test_a_corrupt_gzip_is_one_line(tmp_path: Path) -> None:
    import gzip

    path = tmp_path / "x.csv.gz"
    path.write_bytes(gzip.compress(b"a,b\n" + b"1,2\n" * 1000)[:-30])
    one_line(run_main("metrics", str(path), "--label", "a", "--sensitive", "b", "--prediction", "a"), str(path))


def test_a_missing_value_is_named_with_its_line(tmp_path: Path) -> None:
    message = csv_error(tmp_path, b"a,b\n1,2\n3,?\n")
    assert "line 3, column 'b': missing value ('?')" in message


def test_a_missing_float_feature_is_blamed_on_the_data(tmp_path: Path) -> None:
    """A model that scores a missing value NaN: the error names the line and column, not the model."""
    from edgefair.data import ADULT_COLUMNS, load_adult
    from tests.conftest import MODELS

    adult = load_adult("test")
    rows = [",".join(ADULT_COLUMNS)]
    rows += [",".join(str(adult.columns[c][i]) for c in ADULT_COLUMNS) for i in range(60)]
    rows[5] = rows[5].replace(rows[5].split(",")[0], "?", 1)  # line 6: age missing
    csv = tmp_path / "holes.csv"
    csv.write_text("\n".join(rows) + "\n")
    model = str(MODELS / "adult_sklearn.onnx")
    proc = run_cli("verify", model, model, "--data", str(csv), "--label", "income", "--sensitive", "sex")
    assert_one_line_error(proc, f"{csv}, line 6, column 'age'", "missing value")


# -- the campaign ------------------------------------------------------------------------

NAMES = st.sampled_from(["y", "p", "g", "s", "", " ", "y ", "\ufeffy", "é", "名", 'q"', "a,b", "\t", "y\ny"])
CELLS = st.one_of(
    st.sampled_from(["0", "1", "", "?", "nan", "2", "-1", "0.5", "inf", "1e400", " 1 ", '"1"', "x", "\x00"]),
    st.text(max_size=4),
)


@st.composite
def csv_bytes(draw: st.DrawFn) -> bytes:
    header = draw(st.lists(NAMES, min_size=0, max_size=5))
    width = len(header)
    rows = draw(st.lists(st.lists(CELLS, min_size=max(width - 1, 0), max_size=width + 1), min_size=0, max_size=12))
    import csv as _csv

    buf = io.StringIO()
    writer = _csv.writer(buf, lineterminator=draw(st.sampled_from(["\n", "\r\n"])))
    writer.writerow(header)
    writer.writerows(rows)
    body = buf.getvalue().encode("utf-8", "surrogatepass")
    if draw(st.booleans()):
        body = b"\xef\xbb\xbf" + body
    if draw(st.integers(0, 4)) == 0 and body:  # an invalid byte somewhere
        at = draw(st.integers(0, len(body)))
        body = body[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80"])) + body[at:]
    if draw(st.integers(0, 5)) == 0:
        body = body.replace(b"\n", b"\n\n", draw(st.integers(1, 3)))
    return body


@CAMPAIGN
@given(body=csv_bytes(), score=st.booleans())
def test_campaign_metrics_on_random_csvs(tmp_path: Path, body: bytes, score: bool) -> None:
    path = tmp_path / "c.csv"
    path.write_bytes(body)
    option = ["--score", "p"] if score else ["--prediction", "p"]
    assert_clean(run_main("metrics", str(path), "--label", "y", "--sensitive", "g", *option, "--json"))


@CAMPAIGN
@given(body=csv_bytes())
def test_campaign_csv_reader_errors_are_input_errors(tmp_path: Path, body: bytes) -> None:
    path = tmp_path / "r.csv"
    path.write_bytes(body)
    try:
        for chunk in data.iter_csv(path, chunk_rows=3):
            assert chunk.first_line >= 2
            for name, values in chunk.columns.items():
                data.numeric(values, name, chunk.source, chunk.first_line)
    except InputError as exc:
        assert "\n" not in str(exc)


TOML_VALUES = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=8),
    st.lists(st.one_of(st.text(max_size=4), st.integers(-3, 3)), max_size=3),
)
POLICY_KEYS = st.sampled_from(
    [
        *("confidence", "adjustment", "min_group_size", "inconclusive_fails", "gate_intersections"),
        *("bootstrap_replicates", "seed", "sensitive", "confidenc", "checks"),
    ]
)
CHECK = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(["difference_increase", "group_max", "group_drop", "overall_drop", "nope"]),
        "metric": st.sampled_from(["accuracy", "selection_rate", "true_positive_rate", "negative_flip_rate", "x"]),
        "tolerance": st.one_of(st.floats(-1, 2), st.integers(-1, 2), st.text(max_size=3)),
    },
    optional={"extra": st.integers()},
)
GOOD_VALUES = {
    "confidence": st.floats(0.4, 1.0),
    "adjustment": st.sampled_from(["holm", "bh", "bonferroni", "none", "sidak"]),
    "min_group_size": st.integers(-1, 50),
    "bootstrap_replicates": st.integers(90, 200),
    "seed": st.integers(-2, 2**33),
    "checks": st.lists(CHECK, max_size=3),
}


def toml_literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if value != value else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, (int, str)):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_literal(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


@st.composite
def policy_docs(draw: st.DrawFn) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for key in draw(st.lists(POLICY_KEYS, unique=True, max_size=4)):
        strategy = GOOD_VALUES.get(key, TOML_VALUES) if draw(st.integers(0, 3)) else TOML_VALUES
        doc[key] = draw(strategy)
    return doc


@CAMPAIGN
@given(doc=policy_docs(), garble=st.integers(0, 9))
def test_campaign_policies_load_or_say_why(tmp_path: Path, doc: dict[str, Any], garble: int) -> None:
    text = "".join(f"{json.dumps(k)} = {toml_literal(v)}\n" for k, v in doc.items())
    if garble == 0:
        text = text[: len(text) // 2] + "= ["
    path = tmp_path / "p.toml"
    path.write_text(text, encoding="utf-8")
    try:
        policy = load_policy(path)
    except PolicyError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc)
        # the policy is read before any model or data: the real command fails fast, in one line
        one_line(run_main("verify", MODEL, MODEL, "--policy", str(path)), str(path))
        return
    assert tomllib.loads(text) is not None
    # a policy that loads must gate a small table without an error of any kind
    from edgefair.verification.gate import gate

    rng = np.random.default_rng(1)
    n = 300
    y, r = rng.integers(0, 2, n), rng.integers(0, 2, n)
    c = np.where(rng.random(n) < 0.1, 1 - r, r)
    table = tables.from_arrays({"g": rng.choice(["a", "b"], n), "h": rng.choice(["u", "v"], n)}, r, c, y)
    result = gate(table, policy)
    assert result is not None


def table_json_values() -> st.SearchStrategy[Any]:
    leaf = st.one_of(
        st.integers(-2, 2**64),
        st.floats(allow_nan=True, allow_infinity=True),
        st.booleans(),
        st.none(),
        st.text(max_size=3),
    )
    return st.recursive(
        leaf,
        lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=3), kids, max_size=3),
        max_leaves=8,
    )


@st.composite
def table_texts(draw: st.DrawFn) -> str:
    good = tables.from_arrays({"g": ["a", "b", "a"]}, [0, 1, 1], bins=2).to_dict()
    choice = draw(st.integers(0, 3))
    if choice == 0:
        return json.dumps(draw(table_json_values()))
    doc = json.loads(json.dumps(good))
    for _ in range(draw(st.integers(1, 3))):
        target = draw(st.sampled_from(["top", "group", "cell"]))
        if target == "top":
            doc[draw(st.sampled_from(sorted(doc)))] = draw(table_json_values())
        elif target == "group" and doc.get("groups") and isinstance(doc["groups"], list):
            g = doc["groups"][0]
            if isinstance(g, dict):
                g[draw(st.sampled_from(["key", "counts", "score_hist", "other"]))] = draw(table_json_values())
        elif doc.get("groups") and isinstance(doc["groups"], list) and isinstance(doc["groups"][-1], dict):
            cells = doc["groups"][-1].get("counts")
            if isinstance(cells, list) and cells:
                cells[draw(st.integers(0, len(cells) - 1))] = draw(
                    st.one_of(st.floats(allow_nan=False), st.integers(-1, 2**66), st.booleans(), st.just(1e30))
                )
    text = json.dumps(doc)
    if draw(st.integers(0, 6)) == 0:
        text = text[: draw(st.integers(0, len(text)))]
    return text


@CAMPAIGN
@given(text=table_texts())
def test_campaign_counters_merge_and_show(tmp_path: Path, text: str) -> None:
    bad = tmp_path / "t.json"
    bad.write_text(text, encoding="utf-8")
    good = tmp_path / "good.json"
    good.write_text(tables.from_arrays({"g": ["a"]}, [1], bins=2).to_json())
    out = tmp_path / "out.json"
    out.unlink(missing_ok=True)
    o = run_main("counters", "merge", str(good), str(bad), "-o", str(out))
    assert_clean(o)
    if o.code == 0:
        merged = tables.from_json(out.read_text())  # complete and valid
        assert merged.rows >= 1 and (merged.counts >= 0).all()
    else:
        assert not out.exists()
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.json")]  # no temp file left
    assert_clean(run_main("counters", "show", str(bad)))


def write_bundle(folder: Path, manifest_text: str, files: dict[str, bytes]) -> Path:
    folder.mkdir()
    for name, blob in files.items():
        (folder / name).write_bytes(blob)
    (folder / "manifest.json").write_text(manifest_text)
    digest = hashlib.sha256(manifest_text.encode()).hexdigest()
    (folder / "manifest.sha256").write_text(digest + "\n")
    return folder


@st.composite
def manifests(draw: st.DrawFn) -> tuple[str, dict[str, bytes]]:
    model = b"not really onnx"
    good: dict[str, Any] = {
        "kind": "edgefair.bundle",
        "files": {"model.onnx": {"sha256": hashlib.sha256(model).hexdigest(), "size_bytes": len(model)}},
        "model": "model.onnx",
        "sensitive": {"race": ["a", "b"]},
        "threshold": 0.5,
        "score_output": "probabilities",
        "certificate": None,
    }
    if draw(st.integers(0, 3)) == 0:
        return json.dumps(draw(table_json_values())), {"model.onnx": model}
    for _ in range(draw(st.integers(1, 3))):
        good[draw(st.sampled_from(sorted(good)))] = draw(table_json_values())
    if isinstance(good.get("model"), (list, dict)):  # reported: test_manifest_whose_model_is_a_list_is_one_line
        good["model"] = "model.onnx"
    return json.dumps(good), {"model.onnx": model}


@CAMPAIGN
@given(made=manifests())
def test_campaign_bundle_check(tmp_path: Path, made: tuple[str, dict[str, bytes]]) -> None:
    folder = tmp_path / "b"
    if folder.exists():
        shutil.rmtree(folder)
    text, files = made
    write_bundle(folder, text, files)
    assert_clean(run_main("bundle", "check", str(folder)))


def test_manifest_whose_model_is_a_list_is_one_line(tmp_path: Path) -> None:
    model = b"m"
    doc = {
        "kind": "edgefair.bundle",
        "files": {"model.onnx": {"sha256": hashlib.sha256(model).hexdigest(), "size_bytes": 1}},
        "model": ["model.onnx"],
        "sensitive": {"race": ["a"]},
        "threshold": 0.5,
        "score_output": "probabilities",
        "certificate": None,
    }
    folder = write_bundle(tmp_path / "b", json.dumps(doc), {"model.onnx": model})
    one_line(run_main("bundle", "check", str(folder)), "'model'")


@pytest.mark.parametrize("text", ["[" * 50_000 + "]" * 50_000, '{"files": ' + "9" * 5000 + "}"])
def test_manifest_json_the_parser_cannot_take_is_one_line(tmp_path: Path, text: str) -> None:
    one_line(run_main("bundle", "check", str(write_bundle(tmp_path / "b", text, {}))), "manifest")


# -- a handful through the real entry point ---------------------------------------------


def test_subprocess_cases(tmp_path: Path) -> None:
    db = small_store(tmp_path / "c.db")
    with sqlite3.connect(db) as con:
        con.execute("UPDATE meta SET value = 'x' WHERE key = 'bins'")
    con.close()
    assert_one_line_error(run_cli("counters", "show", str(db)), "'bins'")
    table = tmp_path / "t.json"
    table.write_text(json.dumps(table_doc([1.5] + [0] * 11)))
    out = tmp_path / "m.json"
    assert_one_line_error(run_cli("counters", "merge", str(table), "-o", str(out)), "counts[0]")
    assert not out.exists()
