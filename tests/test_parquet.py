"""Parquet input: the same rows give the same tables and reports as a CSV; files, directories
and globs read row group by row group with only the needed columns; one-line errors."""

from __future__ import annotations

import gzip
import hashlib
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

import edgefair  # noqa: E402
import edgefair.report  # noqa: E402
from edgefair import data  # noqa: E402
from edgefair.data.parquet import ParquetFiles  # noqa: E402
from edgefair.errors import InputError  # noqa: E402
from edgefair.verification import evaluate as ev  # noqa: E402
from tests.conftest import assert_one_line_error, run_cli  # noqa: E402
from tools.compare_reports import differences  # noqa: E402

LABEL, SENSITIVE = "y", ("sex", "race")
IGNORED = {"created", "latency_ratio"}


def make_rows(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Synthetic rows: two numbers, a category with stray spaces, two sensitive attributes
    (race as integer codes) and a 0/1 label that depends on all of them."""
    rng = np.random.default_rng(seed)
    sex = rng.choice(["F", "M"], n)
    race = rng.choice([0, 1, 2], n, p=[0.6, 0.3, 0.1]).astype(np.int64)
    job = rng.choice(["j1", "j2", "j3", "j4"], n)
    age = np.round(rng.normal(40, 12, n), 3)
    hours = np.round(rng.normal(40, 8, n), 1)
    z = 0.05 * (age - 40) + 0.08 * (hours - 40) + (job == "j1") * 0.8 - (sex == "F") * 0.3 - 0.2 * race
    y = (z + rng.normal(0, 1, n) > 0).astype(np.int64)
    return {"age": age, "hours": hours, "job": job, "sex": sex, "race": race, "y": y}


def train_models(rows: dict[str, np.ndarray], folder: Path) -> tuple[Path, Path]:
    """A scikit-learn pipeline (scaled numbers, one-hot job) and a weaker one, as ONNX."""
    pd = pytest.importorskip("pandas")
    pytest.importorskip("skl2onnx")
    import onnx
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from edgefair.convert import export_sklearn

    x = pd.DataFrame({"age": rows["age"], "hours": rows["hours"], "job": rows["job"]})
    paths = []
    for name, clf, n in (("ref", LogisticRegression(), len(x)), ("cand", LogisticRegression(C=0.002), 2000)):
        pre = ColumnTransformer(
            [("n", StandardScaler(), ["age", "hours"]), ("c", OneHotEncoder(handle_unknown="ignore"), ["job"])]
        )
        pipe = Pipeline([("pre", pre), ("clf", clf)]).fit(x[:n], rows["y"][:n])
        path = folder / f"{name}.onnx"
        onnx.save(export_sklearn(pipe, x), str(path))
        paths.append(path)
    return paths[0], paths[1]


def write_parquet(rows: dict[str, Any], path: Path, row_group_size: int = 700, spaced: bool = True) -> Path:
    cols = dict(rows)
    if spaced:  # stray spaces, which the CSV reader strips too
        cols["job"] = np.array([f" {v}" for v in rows["job"]], dtype=object)
    pq.write_table(pa.table(cols), str(path), row_group_size=row_group_size)
    return path


def write_csv(rows: dict[str, np.ndarray], path: Path) -> Path:
    names = list(rows)
    lines = [",".join(names)]
    for i in range(len(rows[names[0]])):
        lines.append(",".join(str(rows[n][i]) for n in names))  # str(float) is repr: round-trips
    text = "\n".join(lines) + "\n"
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


@pytest.fixture(scope="module")
def rows() -> dict[str, np.ndarray]:
    return make_rows(3000)


@pytest.fixture(scope="module")
def files(tmp_path_factory, rows):
    folder = tmp_path_factory.mktemp("pq")
    ref, cand = train_models(rows, folder)
    return {
        "ref": ref,
        "cand": cand,
        "parquet": write_parquet(rows, folder / "rows.parquet"),
        "csv": write_csv(rows, folder / "rows.csv"),
        "gz": write_csv(rows, folder / "rows.csv.gz"),
        "folder": folder,
    }


def table_of(source: str | Path | data.Source, files: dict[str, Path], chunk_rows: int = 65536) -> Any:
    options = ev.EvaluateOptions(label=LABEL, sensitive=SENSITIVE, chunk_rows=chunk_rows)
    return ev.evaluate(files["ref"], [files["cand"]], data.resolve(source), options).tables[0]


def test_resolve_routes_parquet_files_directories_and_globs(files):
    assert isinstance(data.resolve(files["parquet"]), data.source.ParquetSource)
    assert isinstance(data.resolve(str(files["folder"])), data.source.ParquetSource)
    assert isinstance(data.resolve(str(files["folder"] / "*.parquet")), data.source.ParquetSource)
    assert isinstance(data.resolve(files["csv"]), data.CsvSource)
    assert isinstance(data.resolve(files["gz"]), data.CsvSource)
    assert data.resolve("adult").defaults.label == "income"


def test_columns_come_out_as_the_csv_reader_gives_them(tmp_path):
    t = pa.table(
        {
            "i": pa.array([1, None, 3], pa.int32()),
            "j": pa.array([1, 2, 3], pa.int16()),
            "f": [0.5, None, 1.5],
            "b": [True, None, False],
            "s": [" a ", None, "b"],
            "d": pa.array(["u", "v", "u"]).dictionary_encode(),
        }
    )
    pq.write_table(t, str(tmp_path / "t.parquet"))
    (chunk,) = data.resolve(tmp_path / "t.parquet").chunks()
    c = chunk.columns
    assert c["i"].dtype == object and c["i"].tolist() == ["1", "", "3"]  # int64 has no NaN: as text
    assert c["j"].dtype == np.int64 and c["j"].tolist() == [1, 2, 3]
    assert c["f"].dtype == np.float64 and np.isnan(c["f"][1]) and c["f"][2] == 1.5
    assert c["b"].tolist() == ["True", "", "False"]
    assert c["s"].tolist() == ["a", "", "b"] and c["d"].tolist() == ["u", "v", "u"]
    assert chunk.source == str(tmp_path / "t.parquet") and chunk.first_line == 2


def test_csv_and_parquet_of_the_same_rows_give_identical_tables_and_reports(files):
    by_parquet = table_of(files["parquet"], files)
    assert by_parquet == table_of(files["csv"], files) == table_of(files["gz"], files)
    assert by_parquet.rows == 3000 and len(by_parquet.groups) == 6
    # small chunks: batches cross row groups (700 rows) and still give the same table
    assert table_of(files["parquet"], files, 1024) == table_of(files["csv"], files, 1024) == by_parquet
    docs = []
    for key in ("parquet", "csv"):
        report = edgefair.verify(files["ref"], files["cand"], files[key], label=LABEL, sensitive=list(SENSITIVE))
        docs.append(edgefair.report.build(report).doc)
    assert differences(docs[0], docs[1], "$", IGNORED) == [
        f"$.data.sha256: {docs[0]['data']['sha256']!r} before, {docs[1]['data']['sha256']!r} after",
        f"$.data.source: {str(files['parquet'])!r} before, {str(files['csv'])!r} after",
    ]
    assert docs[0]["data"]["sha256"] == hashlib.sha256(files["parquet"].read_bytes()).hexdigest()


def test_a_directory_and_a_glob_read_their_files_in_order_as_one_table(tmp_path, files, rows):
    folder = tmp_path / "parts"
    folder.mkdir()
    cuts = [0, 700, 2000, 3000]
    for k in range(3):  # written out of order: the names decide the order
        part = {n: v[cuts[2 - k] : cuts[3 - k]] for n, v in rows.items()}
        write_parquet(part, folder / f"part-{2 - k}.parquet", row_group_size=400)
    (folder / "_SUCCESS").write_text("")
    (folder / "notes.txt").write_text("not data")
    whole = table_of(files["parquet"], files)
    for spec in (folder, str(folder / "part-*.parquet")):
        source = data.resolve(spec)
        assert table_of(source, files) == whole
        sizes = [c.rows for c in source.chunks(["age"], 1000)]
        assert sizes == [1000, 1000, 1000]  # exact batches across row groups and files
        hashes = [hashlib.sha256((folder / f"part-{k}.parquet").read_bytes()).hexdigest() for k in range(3)]
        assert source.sha256() == hashlib.sha256("".join(h + "\n" for h in hashes).encode()).hexdigest()
    got = data.resolve(folder).read(["y", "job"])
    assert got.columns["y"].tolist() == rows["y"].tolist()
    assert got.columns["job"].tolist() == rows["job"].tolist()
    first = next(data.resolve(folder).chunks(["y"], 10_000))
    assert first.rows == 3000 and first.source == str(folder) and first.first_line == 2
    in_one = list(ParquetFiles(folder).chunks(["y"], 100, start=800, stop=900))
    assert [(c.source, c.first_line, c.rows) for c in in_one] == [(str(folder / "part-1.parquet"), 102, 100)]


def test_only_the_needed_columns_are_read_row_group_by_row_group(tmp_path, rows, monkeypatch):
    wide = dict(rows)
    wide["blob"] = np.array(["x" * 2000] * len(rows["y"]), dtype=object)  # never to be read
    path = write_parquet(wide, tmp_path / "wide.parquet", row_group_size=500)
    calls: list[tuple[int, list[str] | None]] = []
    original = pq.ParquetFile.read_row_group

    def spy(self: Any, i: int, columns: list[str] | None = None, **kw: Any) -> Any:
        calls.append((i, columns))
        return original(self, i, columns=columns, **kw)

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", spy)
    monkeypatch.setattr(pq.ParquetFile, "read", lambda *a, **k: pytest.fail("read the whole file"))
    chunks = list(data.resolve(path).chunks(["y", "sex"], 1200))
    assert [c.rows for c in chunks] == [1200, 1200, 600]
    assert calls == [(i, ["y", "sex"]) for i in range(6)]
    calls.clear()
    list(ParquetFiles(path).chunks(["age"], 1200, start=1200, stop=2400))
    assert calls == [(2, ["age"]), (3, ["age"]), (4, ["age"])]  # only the overlapping row groups


def test_errors_are_one_line_and_name_the_path(tmp_path, rows):
    def error(spec: Any, columns: list[str] | None = None) -> str:
        with pytest.raises(InputError) as info:
            list(data.resolve(spec).chunks(columns))
        text = str(info.value)
        assert len(text.splitlines()) == 1, text
        return text

    assert error(str(tmp_path / "none-*.parquet")) == f"{tmp_path / 'none-*.parquet'}: no file matches this pattern"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert str(empty) in error(empty) and "no .parquet files" in error(empty)
    small = {n: v[:50] for n, v in rows.items()}
    (tmp_path / "a").mkdir()
    write_parquet(small, tmp_path / "a" / "1.parquet")
    renamed = {("sex2" if n == "sex" else n): v for n, v in small.items()}
    write_parquet(renamed, tmp_path / "a" / "2.parquet")
    text = error(tmp_path / "a")
    assert "1.parquet and " in text and "2.parquet have different schemas" in text and "'sex'" in text
    text = error(tmp_path / "a", ["age", "sex"])
    assert text.startswith(str(tmp_path / "a" / "2.parquet")) and "no column 'sex'" in text
    assert "no column 'nope'" in error(tmp_path / "a", ["nope"])
    (tmp_path / "b").mkdir()
    write_parquet(small, tmp_path / "b" / "1.parquet")
    write_parquet({**small, "race": small["race"].astype(str)}, tmp_path / "b" / "2.parquet")
    text = error(tmp_path / "b", ["race"])
    assert "different schemas: column 'race' is int64 in the first, " in text and "2.parquet" in text
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(b"PAR1 this is not a parquet file at all")
    assert error(corrupt).startswith(f"{corrupt}: not a readable Parquet file")
    assert error(tmp_path / "missing.parquet") == f"{tmp_path / 'missing.parquet'}: no such file"


def test_without_pyarrow_the_error_names_the_extra(tmp_path, files, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(InputError, match=r"pip install 'edgefair\[parquet\]'"):
        list(data.resolve(files["parquet"]).chunks())


def test_the_cli_reads_parquet_and_names_a_corrupt_file(tmp_path, files):
    corrupt = tmp_path / "bad.parquet"
    corrupt.write_bytes(b"garbage")
    model = str(files["ref"])
    proc = run_cli("verify", model, model, "--data", str(corrupt), "--label", LABEL, "--sensitive", "sex,race")
    assert_one_line_error(proc, str(corrupt), "not a readable Parquet file")
