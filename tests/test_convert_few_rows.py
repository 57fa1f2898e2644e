"""A parity check, a comparison or a static int8 calibration on fewer than 100 rows is not
refused, but says so: a ``note:`` naming how many rows it rests on and that it is weak. The
row counts come from the CSV files written here (the oracle), not from edgefair."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from tests import models
from tests.test_cli_bad_input import run_main


def _csv(path: Path, rows: int, seed: int = 0) -> Path:
    x = np.random.default_rng(seed).normal(size=(rows, 4))
    path.write_text("f0,f1,f2,f3\n" + "".join(",".join(f"{v:.6g}" for v in r) + "\n" for r in x))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("few")
    onnx.save(models.mlp(), out / "m.onnx")
    return {"model": out / "m.onnx", "one": _csv(out / "one.csv", 1), "three": _csv(out / "three.csv", 3),
            "many": _csv(out / "many.csv", 150, 1)}  # fmt: skip


def _convert(files: dict[str, Path], out: Path, calibration: str, sample: str, *extra: str):
    data = ["--calibration-data", str(files[calibration]), "--sample-data", str(files[sample])]
    static = ["--quantize", "static", "--allow-larger"]
    return run_main("convert", str(files["model"]), "-o", str(out), *static, *data, *extra)


def test_static_calibration_and_comparison_on_few_rows_say_so(files, tmp_path):
    o = _convert(files, tmp_path / "x.onnx", "one", "three")
    assert o.code == 0, o.err
    assert "note: static int8's calibration rests on 1 row only" in o.out, o.out
    assert "note: the comparison with the source rests on 3 rows only" in o.out, o.out
    assert o.out.count("weak check") == 2


def test_the_notes_and_row_counts_are_in_the_json(files, tmp_path):
    o = _convert(files, tmp_path / "x.onnx", "one", "three", "--json")
    doc = json.loads(o.out)
    assert doc["check"]["rows_compared"] == 3 and doc["steps"][-1]["calibration_rows"] == 1
    assert len(doc["notes"]) == 2


def test_a_hundred_rows_and_more_get_no_note(files, tmp_path):
    o = _convert(files, tmp_path / "x.onnx", "many", "many")
    assert o.code == 0, o.err
    assert "note:" not in o.out and "weak" not in o.out, o.out


def test_export_parity_on_one_row_says_so(tmp_path):
    """A scikit-learn model trained here, exported with one sample row."""
    import joblib
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(2)
    x = rng.normal(size=(200, 4))
    joblib.dump(LogisticRegression().fit(x, (x[:, 0] > 0).astype(int)), tmp_path / "lr.joblib")
    o = run_main("export", str(tmp_path / "lr.joblib"), "-o", str(tmp_path / "lr.onnx"), "--trust-pickle",
                 "--sample-data", str(_csv(tmp_path / "one.csv", 1)))  # fmt: skip
    assert o.code == 0, o.err
    assert "note: the parity check rests on 1 row only: under 100 rows it is a weak check" in o.out, o.out
