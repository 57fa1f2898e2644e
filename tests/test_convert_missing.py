"""convert reads its sample and calibration rows through verify's missing-value check: a
blank or ``nan`` cell that reaches the model as NaN, and that the model scores NaN, is a
one-line error naming the file, line and column (exit 2), never a "nan" comparison."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnx.parser
import pytest
from onnx import numpy_helper

from edgefair import convert as conv
from edgefair.convert.quantize import QuantizeOptions, QuantMode
from edgefair.errors import InputError
from tests import models
from tests.test_cli_bad_input import one_line, run_main

ROWS = 240
BLANK_ROW, NAN_ROW = 7, 30  # 0-based data rows: file lines 9 and 32 (the header is line 1)


def _write(path: Path, x: np.ndarray, y: np.ndarray, holes: dict[tuple[int, int], str]) -> Path:
    with path.open("w") as f:
        f.write(",".join(f"f{j}" for j in range(x.shape[1])) + ",group,y\n")
        for i, row in enumerate(x):
            cells = [holes.get((i, j), f"{v:.6g}") for j, v in enumerate(row)]
            f.write(",".join(cells) + f",{'ab'[i % 2]},{y[i]}\n")
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny MLP (tests/models.py: NaN in, NaN out); a clean CSV and ones with holes."""
    out = tmp_path_factory.mktemp("missing")
    rng = np.random.default_rng(3)
    x = rng.normal(size=(ROWS, 4))
    y = (x[:, 0] + 0.5 * x[:, 1] - x[:, 2] > 0).astype(int)
    onnx.save(models.mlp(), out / "mlp.onnx")
    return {
        "model": out / "mlp.onnx",
        "clean": _write(out / "clean.csv", x, y, {}),
        "holes": _write(out / "holes.csv", x, y, {(BLANK_ROW, 2): "", (NAN_ROW, 1): "nan"}),
        "late": _write(out / "late.csv", x, y, {(NAN_ROW, 1): "nan"}),
    }


def test_convert_refuses_sample_data_whose_missing_value_the_model_scores_nan(trained, tmp_path):
    out = tmp_path / "out.onnx"
    proc = run_main("convert", str(trained["model"]), "-o", str(out), "--quantize", "dynamic", "--allow-larger",
                   "--sample-data", str(trained["holes"]), "--features", "f0:f3")  # fmt: skip
    one_line(proc, f"{trained['holes']}, line {BLANK_ROW + 2}, column 'f2': missing value ''",
                          "reaches the model as NaN", "fill or drop such rows")  # fmt: skip
    assert not out.exists()


def test_convert_names_the_line_of_the_first_missing_value_wherever_it_is(trained, tmp_path):
    proc = run_main("convert", str(trained["model"]), "-o", str(tmp_path / "o.onnx"), "--quantize", "dynamic",
                   "--allow-larger", "--sample-data", str(trained["late"]), "--features", "f0:f3")  # fmt: skip
    one_line(proc, f"line {NAN_ROW + 2}, column 'f1': missing value 'nan'")


def test_convert_refuses_calibration_data_with_such_a_missing_value(trained, tmp_path):
    """The calibration file is checked as well, even when the sample data is clean."""
    out = tmp_path / "st.onnx"
    proc = run_main("convert", str(trained["model"]), "-o", str(out), "--quantize", "static", "--allow-larger",
                   "--calibration-data", str(trained["holes"]), "--sample-data", str(trained["clean"]),
                   "--features", "f0:f3")  # fmt: skip
    one_line(proc, f"{trained['holes']}, line {BLANK_ROW + 2}, column 'f2': missing value ''")
    assert not out.exists()


def test_calibration_rows_keep_their_file_lines_when_sampled(trained):
    """With fewer calibration rows than the file holds, the rows are a random sample: the
    message still names the file line of the offending row (independently: the CSV we wrote)."""
    options = conv.ConvertOptions(
        quantize=QuantizeOptions(mode=QuantMode.STATIC_INT8, calibration_rows=200),
        feature_columns="f0:f3",
        allow_larger=True,
    )
    picked = conv.calibration_sample({"i": np.arange(ROWS)}, 200, None, "x")["i"]
    first = min(r for r in (BLANK_ROW, NAN_ROW) if r in set(picked.tolist()))
    with pytest.raises(InputError, match=rf", line {first + 2}, column 'f[12]'"):
        conv.convert_file(trained["model"], options, calibration_data=trained["holes"], sample_data=trained["clean"])


def test_convert_and_verify_say_the_same_thing_about_the_same_file(trained, tmp_path):
    """One check, two readers: the part naming the file, line, column and value is identical."""
    proc_c = run_main("convert", str(trained["model"]), "-o", str(tmp_path / "o.onnx"), "--quantize", "dynamic",
                     "--allow-larger", "--sample-data", str(trained["holes"]), "--features", "f0:f3")  # fmt: skip
    proc_v = run_main("verify", str(trained["model"]), str(trained["model"]), "--data", str(trained["holes"]),
                     "--label", "y", "--sensitive", "group", "--features", "f0:f3")  # fmt: skip
    assert proc_c.code == proc_v.code == 2, (proc_c.err, proc_v.err)
    head_c = proc_c.err.split(" reaches the model as NaN")[0]
    head_v = proc_v.err.split(" reaches the model as NaN")[0]
    assert head_c == head_v and "line 9, column 'f2'" in head_c


def _sqrt_model() -> onnx.ModelProto:
    """score = Sigmoid(MatMul(Sqrt(x), w)): NaN for a negative feature, made by the model itself."""
    model = onnx.parser.parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    root (float[N, 2] x) => (float[N, 1] score) {
    s = Sqrt (x)
    z = MatMul (s, w)
    score = Sigmoid (z)
    }""")
    w = np.array([[0.7], [-0.4]], np.float32)
    model.graph.initializer.append(numpy_helper.from_array(w, "w"))
    return model


def test_a_nan_the_model_makes_itself_is_named_as_such_not_as_not_a_binary_classifier(tmp_path):
    onnx.save(_sqrt_model(), tmp_path / "root.onnx")
    rng = np.random.default_rng(1)
    x = np.abs(rng.normal(size=(50, 2)))
    x[[4, 9, 20], 0] *= -1  # three rows the model scores NaN; no cell is missing
    (tmp_path / "s.csv").write_text("a,b\n" + "".join(f"{a:.6g},{b:.6g}\n" for a, b in x))
    expected_nan = int(np.isnan(np.sqrt(x)).any(axis=1).sum())  # numpy's own square root
    args = ["convert", str(tmp_path / "root.onnx"), "-o", str(tmp_path / "o.onnx"), "--quantize", "dynamic",
            "--allow-larger", "--sample-data", str(tmp_path / "s.csv")]  # fmt: skip
    proc = run_main(*args)
    assert proc.code == 0, proc.err
    assert "not a binary classifier" not in proc.out
    assert f"scores {expected_nan} of 50 rows NaN" in proc.out, proc.out
    doc = json.loads(run_main(*args[:3], str(tmp_path / "o2.onnx"), *args[4:], "--json").out)
    assert doc["check"]["decision_agreement"] is None
    assert f"{expected_nan} of 50 rows NaN" in doc["check"]["decisions_not_compared"]
