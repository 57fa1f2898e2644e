"""What a user trial with its own data found: choices that ran and reassured, or failed with a
raw Python error. Each is now one line naming the value (exit 2 in the CLI, a typed error in
the library). The model is trained here (scikit-learn -> skl2onnx) on data made here, with two
string sensitive columns and a label column that is not called 'y'.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import edgefair
from edgefair.errors import EdgefairError, InputError, PolicyError
from edgefair.runtime.session import FairSession
from tests.conftest import run_cli
from tests.models import sklearn_onnx


@pytest.fixture(scope="module")
def trial(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from sklearn.linear_model import LogisticRegression

    out = tmp_path_factory.mktemp("trial")
    rng = np.random.default_rng(21)
    n = 3000
    x = rng.normal(size=(n, 2)).astype(np.float32)
    region = rng.choice(["north", "south", "east"], n)
    band = rng.choice(["<30", "30-49", "50+"], n)
    y = (x[:, 0] + 0.5 * (region == "north") + rng.normal(0, 0.7, n) > 0).astype(np.int64)
    model = LogisticRegression().fit(x, y)
    path = out / "lr.onnx"
    path.write_bytes(sklearn_onnx(model, x))
    csv = out / "eval.csv"
    body = (f"{a},{b},{r},{s},{t}" for (a, b), r, s, t in zip(x.tolist(), region, band, y, strict=True))
    rows = ["f0,f1,region,band,approved", *body]
    csv.write_text("\n".join(rows) + "\n")
    return path, csv


def verify(path: Path, csv: Path, **kw: object) -> edgefair.verification.api.VerifyReport:
    args = {"label": "approved", "sensitive": ["region", "band"], "feature_columns": ["f0", "f1"], **kw}
    return edgefair.verify(str(path), str(path), str(csv), **args)  # type: ignore[arg-type]


def test_a_positive_label_no_row_holds_is_refused(trial: tuple[Path, Path]) -> None:
    path, csv = trial
    base = ["verify", str(path), str(path), "--data", str(csv), "--label", "approved", "--features", "f0,f1"]
    result = run_cli(*base, "--sensitive", "region", "--positive-label", "yes")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "--positive-label 'yes' matches no row of column 'approved'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    named = verify(path, csv, positive_label="1")  # a value the column holds: the same verdict as 0/1
    assert named.verdict == verify(path, csv).verdict
    assert int(named.table.counts[:, 1].sum()) == int(np.loadtxt(csv, delimiter=",", skiprows=1, usecols=4).sum())


@pytest.mark.parametrize(
    ("sensitive", "said"),
    [
        (["approved"], "'approved' is also the label column"),
        (["region", "region"], "'region' is named twice"),
        ([""], "non-empty strings"),
    ],
)
def test_sensitive_columns_that_cannot_name_groups_are_refused(
    trial: tuple[Path, Path], sensitive: list[str], said: str
) -> None:
    path, csv = trial
    with pytest.raises(InputError, match=said):
        verify(path, csv, sensitive=sensitive)


def test_one_sensitive_name_as_a_string_is_one_column(trial: tuple[Path, Path]) -> None:
    path, csv = trial
    assert verify(path, csv, sensitive="region").table.attributes == ("region",)


def test_a_measurement_as_a_sensitive_column_is_refused_before_any_work(trial: tuple[Path, Path]) -> None:
    path, csv = trial
    with pytest.raises(InputError, match=r"sensitive column 'f0' has 3,000 distinct values .*bin a numeric column"):
        verify(path, csv, sensitive=["f0"])


@pytest.mark.parametrize("data", [None, 123, 4.5, b"eval.csv"])
def test_data_of_another_type_is_a_typed_error(trial: tuple[Path, Path], data: object) -> None:
    path, _ = trial
    with pytest.raises(InputError, match="data must be a CSV or Parquet path"):
        edgefair.verify(str(path), str(path), data, label="approved", sensitive=["region"])  # type: ignore[arg-type]


def test_a_policy_mapping_is_read_as_the_file_would_be(trial: tuple[Path, Path]) -> None:
    path, csv = trial
    report = verify(path, csv, policy={"min_group_size": 50})
    assert report.policy.min_group_size == 50
    with pytest.raises(PolicyError, match="unknown key 'min_group'"):
        verify(path, csv, policy={"min_group": 50})
    with pytest.raises(PolicyError, match="policy must be a Policy, a TOML file's path or a mapping, got int"):
        verify(path, csv, policy=7)


def test_a_closed_session_refuses_to_count(trial: tuple[Path, Path], tmp_path: Path) -> None:
    """Rows counted after close() never reached the store: they were counted in memory, lost on reopen."""
    path, _ = trial
    x = np.zeros((3, 2), np.float32)
    sens = {"region": ["north", "south", "east"]}
    store = tmp_path / "c.db"
    with FairSession(path, sensitive=["region"], store=store) as fs:
        fs.run({"X": x}, sens, ids=["a", "b", "c"])
    for call in (lambda: fs.run({"X": x}, sens), lambda: fs.record_outcomes(["a"], [1])):
        with pytest.raises(EdgefairError, match="this FairSession is closed"):
            call()
    assert fs.table().rows == 3
    with FairSession(path, sensitive=["region"], store=store) as again:
        assert again.table().rows == 3


def test_a_closed_stdout_keeps_the_verdict_exit_code_and_the_files(trial: tuple[Path, Path], tmp_path: Path) -> None:
    """``edgefair verify ... | head -1`` in CI: the reader leaves early; the exit code is still the
    verdict's (click's own handling exited 1, which reads as FAIL) and the report is written."""
    import os
    import subprocess
    import sys

    path, csv = trial
    report = tmp_path / "r.json"
    args = ["verify", str(path), str(path), "--data", str(csv), "--label", "approved", "--sensitive", "region"]
    args += ["--features", "f0,f1", "--json", str(report)]
    expected = run_cli(*args).returncode
    assert expected in (0, 3)  # a model against itself: never a FAIL
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    command = [sys.executable, "-m", "edgefair", *args]
    proc = subprocess.run(command, stdout=write, stderr=subprocess.PIPE, text=True, timeout=300, env=env)
    os.close(write)
    assert proc.returncode == expected, proc.stderr
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr
    assert report.exists()


def test_compare_names_the_worst_negative_flip_rate_of_a_tested_group(trial: tuple[Path, Path], tmp_path: Path) -> None:
    """The compare row's worst negative flip rate is over groups of at least min_group_size rows
    (a 6-row intersection with one flip read 0.17 beside a 0.02 tolerance). Oracle: pandas on
    the two models' own decisions, every attribute and the intersection."""
    import onnxruntime as ort
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    from edgefair.report.document import compare_document

    path, csv = trial
    frame = pd.read_csv(csv)
    x = frame[["f0", "f1"]].to_numpy(np.float32)
    shaky = LogisticRegression(C=0.01).fit(x[:200], (x[:200, 1] > 0).astype(int))  # a different decision rule
    cand = tmp_path / "shaky.onnx"
    cand.write_bytes(sklearn_onnx(shaky, x))
    for min_size in (30, 400):
        policy = {"min_group_size": min_size}
        doc = compare_document(
            edgefair.compare(
                str(path),
                [str(cand)],
                str(csv),
                policy,
                label="approved",
                sensitive=["region", "band"],
                feature_columns=["f0", "f1"],
                measure_latency=False,
            )
        )
        got = doc["candidates"][0]["worst_negative_flip_rate"]
        decided = {}
        for name, model in (("ref", path), ("cand", cand)):
            sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
            decided[name] = (sess.run(["probabilities"], {"X": x})[0][:, 1] >= 0.5).astype(int)
        y = frame["approved"].to_numpy()
        frame["nf"] = (decided["ref"] == y) & (decided["cand"] != y)
        best: tuple[float, int] | None = None
        for keys in (["region"], ["band"], ["region", "band"]):
            for _, part in frame.groupby(keys):
                if len(part) >= min_size and (best is None or part["nf"].mean() > best[0]):
                    best = (float(part["nf"].mean()), len(part))
        assert best is not None and got["rows"] >= min_size
        assert got["value"] == pytest.approx(best[0], abs=1e-12) and got["rows"] == best[1], (min_size, got, best)


@pytest.mark.parametrize(
    "values",
    [["a", None, "b"], np.array(["a", None, "b"], object), [1.0, float("nan"), 2.0], "pandas-NA"],
)
def test_metric_frame_refuses_a_missing_group_value(values: object) -> None:
    """The CSV path refuses an empty sensitive value; metric_frame made it a group named 'None' or 'nan'."""
    import pandas as pd

    from edgefair.core.frame import metric_frame

    if isinstance(values, str):
        values = pd.Series(["a", pd.NA, "b"], dtype="string")
    with pytest.raises(InputError, match=r"is missing \(.*\) at row 1; a missing value names no group"):
        metric_frame([0, 1, 1], [1, 0, 1], sensitive_features={"g": values})
    named = metric_frame([0, 1, 1], [1, 0, 1], sensitive_features={"g": ["None", "nan", "None"]})  # real strings
    assert set(named.by_group) == {"None", "nan"}


def test_fair_session_arguments_of_the_wrong_shape_are_typed_errors(trial: tuple[Path, Path]) -> None:
    path, _ = trial
    x = np.zeros((3, 2), np.float32)
    sens = {"region": ["north", "south", "east"]}
    with FairSession(path, sensitive=["region"]) as fs:
        for inputs, sensitive, ids, said in (
            (x, sens, None, "inputs must map each model input"),
            (None, sens, None, "inputs must map each model input"),
            ({"X": x}, np.array(["north", "south", "east"]), None, "sensitive must map each attribute"),
            ({"X": x}, ["north", "south", "east"], None, "sensitive must map each attribute"),
            ({"X": x[:1]}, ["north"], None, "sensitive must map each attribute"),
            ({"X": x}, None, None, "sensitive must map each attribute"),
            ({"X": x}, sens, "abc", "ids must be a list with one id per row, got a str"),
        ):
            with pytest.raises(InputError, match=said):
                fs.run(inputs, sensitive, ids)  # type: ignore[arg-type]
        assert fs.table().rows == 0


def test_a_bundle_whose_groups_include_other_says_what_the_runtime_adds_to_it(
    trial: tuple[Path, Path], tmp_path: Path
) -> None:
    """The runtime counts values the certificate never saw under 'other'; a data set with its
    own 'other' value gets both in one group, and the bundle says so when it is built."""
    path, csv = trial
    renamed = tmp_path / "other.csv"
    renamed.write_text(csv.read_text().replace(",east,", ",other,"))
    cert = tmp_path / "cert.json"
    args = ["verify", str(path), str(path), "--data", str(renamed), "--label", "approved", "--sensitive", "region"]
    assert run_cli(*args, "--features", "f0,f1", "--json", str(cert)).returncode in (0, 3)
    built = run_cli("bundle", "build", str(path), "-o", str(tmp_path / "b"), "--certificate", str(cert))
    assert built.returncode == 0, built.stderr
    assert "note: region's value 'other' is also where the runtime counts values the certificate never saw" in (
        built.stdout
    )
    with FairSession(tmp_path / "b") as fs:  # an unseen value and the data's own 'other' share the group
        fs.run({"X": np.zeros((2, 2), np.float32)}, {"region": ["other", "mars"]})
        assert dict(zip(fs.table().groups, fs.table().counts.sum(axis=(1, 2, 3)).tolist(), strict=True)) == {
            ("other",): 2
        }


def test_an_infinite_feature_the_model_scores_nan_is_named_not_blamed_on_the_model(tmp_path: Path) -> None:
    """'inf' in a CSV reaches the model as an infinity; an MLP turns it into NaN. The error used
    to say the model's output is not a probability (logits?); it names the line and column."""
    from sklearn.neural_network import MLPClassifier

    rng = np.random.default_rng(8)
    x = rng.normal(size=(400, 2)).astype(np.float32)
    y = (x[:, 0] > x[:, 1]).astype(np.int64)
    mlp = MLPClassifier(hidden_layer_sizes=(16, 16), max_iter=300, random_state=0).fit(x, y)
    model = tmp_path / "mlp.onnx"
    model.write_bytes(sklearn_onnx(mlp, x))
    lines = [
        "a,b,g,y",
        *(f"{p},{q},{'u' if i % 2 else 'v'},{t}" for i, ((p, q), t) in enumerate(zip(x.tolist(), y, strict=True))),
    ]
    lines[6] = "inf,-inf,u,1"  # line 7 of the file
    csv = tmp_path / "inf.csv"
    csv.write_text("\n".join(lines) + "\n")
    args = ["verify", str(model), str(model), "--data", str(csv), "--label", "y", "--sensitive", "g"]
    result = run_cli(*args, "--features", "a,b")
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "line 7, column 'a': the value 'inf' is infinite" in result.stderr and "logits" not in result.stderr


@pytest.mark.parametrize("value", ["1e200", "1e30", "-3e16"])
def test_a_regression_value_too_large_for_its_moments_is_one_line(tmp_path: Path, value: str) -> None:
    """1e200 overflowed the moments (a LinAlgError traceback, exit 1: read as FAIL); 1e30 made
    intervals of +-1e14 on checks that never read the label. Both are refused, naming the row."""
    rng = np.random.default_rng(2)
    rows = ["y,pr,g", *(f"{a:.3f},{b:.3f},{'ab'[i % 2]}" for i, (a, b) in enumerate(rng.normal(50, 9, (60, 2))))]
    rows[4] = f"{value},50.0,a"  # row 3 of the data
    csv = tmp_path / "reg.csv"
    csv.write_text("\n".join(rows) + "\n")
    args = ["metrics", str(csv), "--label", "y", "--prediction", "pr", "--sensitive", "g", "--task", "regression"]
    result = run_cli(*args)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert f"row 3 is {float(value)!r}, beyond +-1e+15" in result.stderr
    rows[4] = "51.5,50.0,a"  # an ordinary value there: the same command reports
    csv.write_text("\n".join(rows) + "\n")
    assert run_cli(*args).returncode == 0
