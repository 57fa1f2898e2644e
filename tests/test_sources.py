"""Data sources: resolved once, a file is a file whatever its name, one read of a CSV."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import edgefair
import edgefair.report
from edgefair import data
from edgefair.data.adult import ADULT_COLUMNS
from tests.conftest import MODELS, ROOT, assert_one_line_error, run_cli


@pytest.fixture(scope="module")
def adult_small(tmp_path_factory):
    """400 Adult rows written as a CSV whose name starts with 'adult' (the old prefix bug)."""
    ds = data.load_adult("test")
    path = tmp_path_factory.mktemp("mydir") / "adult_small.csv"
    rows = [",".join(ADULT_COLUMNS)]
    for i in range(400):
        rows.append(",".join(str(ds.columns[c][i]) for c in ADULT_COLUMNS))
    path.write_text("\n".join(rows) + "\n")
    return path


def test_registered_names_are_exact():
    assert data.resolve("adult").defaults.label == "income"
    assert data.resolve("adult:train").defaults.sensitive == ("race", "sex")
    for name in ("adult_small.csv", "adultx", "adult:", "mydir/adult.csv"):
        source = data.resolve(name)
        assert isinstance(source, data.CsvSource), name
        assert source.defaults.label is None and source.defaults.sensitive == ()


def test_a_file_named_like_adult_gets_its_own_hash(tmp_path, adult_small):
    out = tmp_path / "r.json"
    proc = run_cli(
        "verify",
        str(MODELS / "adult_mlp.onnx"),
        str(MODELS / "adult_mlp.onnx"),
        "--data",
        str(adult_small),
        "--label",
        "income",
        "--sensitive",
        "race,sex",
        "--json",
        str(out),
    )
    assert proc.returncode in (0, 3), proc.stderr
    doc = json.loads(out.read_text())
    assert doc["data"]["sha256"] == hashlib.sha256(adult_small.read_bytes()).hexdigest()
    assert doc["data"]["source"] == str(adult_small)
    assert doc["data"]["rows"] == 400
    bundled = data.load_adult("test").sha256
    assert doc["data"]["sha256"] != bundled


def test_a_file_named_like_adult_gets_no_defaults(adult_small):
    proc = run_cli("verify", str(MODELS / "adult_mlp.onnx"), str(MODELS / "adult_mlp.onnx"), "--data", str(adult_small))
    assert_one_line_error(proc, str(adult_small), "--label")
    proc = run_cli(
        "verify",
        str(MODELS / "adult_mlp.onnx"),
        str(MODELS / "adult_mlp.onnx"),
        "--data",
        str(adult_small),
        "--label",
        "income",
    )
    assert_one_line_error(proc, "--sensitive")


def test_verify_opens_the_csv_once(adult_small):
    """An audit hook (the interpreter's own record of every open) counts opens of the CSV."""
    script = textwrap.dedent(
        f"""
        import sys
        target = {str(adult_small)!r}
        opened = []
        sys.addaudithook(lambda event, args: opened.append(1) if event == "open" and str(args[0]) == target else None)
        import edgefair
        edgefair.compare({str(MODELS / "adult_mlp.onnx")!r}, [{str(MODELS / "adult_mlp.onnx")!r}] * 2, target,
                         label="income", sensitive=["race"], measure_latency=False)
        print(len(opened))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "1", out.stderr


def test_hash_while_streaming_equals_hashlib(tmp_path):
    """Gzip and plain CSVs: the streamed hash is the file's bytes' hash, trailing bytes included."""
    import gzip

    body = "a,b\n" + "".join(f"{i},{i % 3}\n" for i in range(70_000)) + "\n\n"
    plain = tmp_path / "p.csv"
    plain.write_text(body)
    packed = tmp_path / "p.csv.gz"
    packed.write_bytes(gzip.compress(body.encode()))
    for path in (plain, packed):
        source = data.resolve(path)
        rows = sum(c.rows for c in source.chunks(None, 1000))
        assert rows == 70_000
        assert source.sha256() == hashlib.sha256(path.read_bytes()).hexdigest()


def test_in_memory_dataset_is_a_source():
    ds = data.load_adult("test")
    small = data.Dataset({k: v[:500] for k, v in ds.columns.items()}, "mine", "abc", 500)
    report = edgefair.verify(
        MODELS / "adult_mlp.onnx", MODELS / "adult_mlp.onnx", small, label="income", sensitive=["sex"]
    )
    doc = edgefair.report.build(report).doc
    assert doc["data"]["source"] == "mine" and doc["data"]["sha256"] == "abc" and doc["data"]["rows"] == 500
    assert np.isclose(doc["by_group"]["sex"]["overall"]["reference"]["count"], 500)
