"""`edgefair metrics` end to end: JSON equals the library; bad input is one line, exit 2."""

from __future__ import annotations

import json

import numpy as np
import pytest

import edgefair
from tests.conftest import assert_one_line_error, run_cli


@pytest.fixture()
def predictions_csv(tmp_path, adult_test):
    c = adult_test.columns
    rng = np.random.default_rng(0)
    score = rng.random(adult_test.rows)
    path = tmp_path / "preds.csv"
    lines = ["label,pred,score,race,sex"]
    lines += [
        f"{y},{int(s >= 0.5)},{s:.6f},{r},{x}"
        for y, s, r, x in zip(c["income"], score, c["race"], c["sex"], strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path, c["income"], (np.round(score, 6) >= 0.5).astype(int), c["race"], c["sex"]


def test_json_output_equals_library(predictions_csv):
    path, y, p, race, _sex = predictions_csv
    proc = run_cli("metrics", str(path), "--label", "label", "--prediction", "pred", "--sensitive", "race", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    frame = edgefair.metric_frame(y, p, sensitive_features={"race": race})
    assert doc["by_group"]["White"] == frame.by_group["White"]
    assert doc["overall"] == frame.overall
    assert set(doc) >= {"overall", "by_group", "difference", "ratio", "intervals"}


def test_score_with_threshold_and_two_columns(predictions_csv):
    path, *_ = predictions_csv
    proc = run_cli(
        "metrics",
        str(path),
        "--label",
        "label",
        "--score",
        "score",
        "--threshold",
        "0.5",
        "--sensitive",
        "race,sex",
    )
    assert proc.returncode == 0, proc.stderr
    assert "race=White, sex=Female" in proc.stdout
    assert "true_positive_rate" in proc.stdout


@pytest.mark.parametrize(
    ("content", "args", "fragments"),
    [
        (None, ["--prediction", "pred"], ["no such file"]),
        ("label,pred,race\n1,1,a\n", ["--prediction", "nope"], ["no column 'nope'"]),
        ("label,pred,race\n1,1,a\n2,0,b\n", ["--prediction", "pred"], ["line 3", "'label'", "not 0 or 1"]),
        ("label,pred,race\n1,1,a\n0,x,b\n", ["--prediction", "pred"], ["line 3", "'pred'", "not a number"]),
        ("", ["--prediction", "pred"], ["empty"]),
        ("label,pred,race\n", ["--prediction", "pred"], ["no data rows"]),
        ("label,score,race\n1,0.3,a\n0,nan,b\n", ["--score", "score"], ["line 3", "missing value"]),
        ("label,score,race\n1,0.3,a\n0,1.7,b\n", ["--score", "score"], ["line 3", "outside [0, 1]"]),
        ("label,pred,race\n1,1\n", ["--prediction", "pred"], ["line 2", "2 fields, expected 3"]),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, content, args, fragments):
    path = tmp_path / "in.csv"
    if content is not None:
        path.write_text(content)
    proc = run_cli("metrics", str(path), "--label", "label", "--sensitive", "race", *args)
    assert_one_line_error(proc, *fragments)


def test_version():
    proc = run_cli("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"edgefair {edgefair.__version__}"


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["verify"], "Missing"),
        (["frobnicate"], "No such command"),
        (["convert", "x.onnx", "-o"], "requires an argument"),
        (["metrics", "x.csv", "--label", "y", "--sensitive", "g", "--threshold", "high"], "--threshold"),
    ],
)
def test_bad_usage_is_one_line_exit_2(args, fragment):
    assert_one_line_error(run_cli(*args), fragment)
