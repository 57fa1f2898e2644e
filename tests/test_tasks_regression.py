"""Regression models in verify and compare: a scikit-learn MLP regressor (skl2onnx) against a
torch linear model (torch.onnx.export), by-group errors against scikit-learn metrics computed
per group here, paired differences against a numpy recomputation, the moments table's algebra,
the gate's verdicts, a threshold that makes decisions, and bad policies as one line, exit 2."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import onnxruntime as ort
import pytest
from sklearn.metrics import mean_absolute_error, mean_squared_error

from edgefair import report as reports
from edgefair.core import regression, stats, tables
from edgefair.verification import api
from tests.test_tasks_multiclass import FEATURES, cli, write_csv

POLICY = """
[[checks]]
kind = "overall_increase"
metric = "mean_absolute_error"
tolerance = {tol}
[[checks]]
kind = "group_increase"
metric = "root_mean_squared_error"
tolerance = {tol}
[[checks]]
kind = "difference_increase"
metric = "mean_absolute_error"
tolerance = {tol}
[[checks]]
kind = "group_max"
metric = "mean_absolute_change"
tolerance = {cap}
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    import torch
    from skl2onnx import to_onnx
    from sklearn.neural_network import MLPRegressor

    rng = np.random.default_rng(3)
    n = 900
    x = rng.normal(size=(n, 4)).astype(np.float32)
    group = rng.choice(["a", "b", "c"], size=n, p=[0.5, 0.3, 0.2])
    y = 2.0 * x[:, 0] - x[:, 1] + 0.5 * x[:, 2] * x[:, 3] + 0.8 * (group == "c") + rng.normal(scale=0.3, size=n)
    folder = tmp_path_factory.mktemp("regression")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlp = MLPRegressor(hidden_layer_sizes=(16,), max_iter=150, random_state=0).fit(x, y)
    ref = folder / "ref.onnx"
    ref.write_bytes(to_onnx(mlp, x[:1]).SerializeToString())
    torch.manual_seed(0)
    linear = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(linear.parameters(), lr=0.1)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y.astype(np.float32)).reshape(-1, 1)
    for _ in range(60):
        opt.zero_grad()
        torch.nn.functional.mse_loss(linear(tx), ty).backward()
        opt.step()
    cand = folder / "cand.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            linear, (tx[:2],), str(cand), input_names=["X"], output_names=["variable"],
            dynamic_axes={"X": {0: "N"}, "variable": {0: "N"}}, dynamo=False,
        )  # fmt: skip
    csv = folder / "d.csv"
    write_csv(csv, {**{f: x[:, i].tolist() for i, f in enumerate(FEATURES)}, "group": group, "y": y.tolist()})
    preds = {
        k: ort.InferenceSession(str(p)).run(None, {"X": x})[0].reshape(-1) for k, p in (("ref", ref), ("cand", cand))
    }
    return {"x": x, "y": y, "group": group, "ref": ref, "cand": cand, "csv": csv, "preds": preds, "dir": folder}


def policy(world: dict[str, Any], tol: float, cap: float = 5.0) -> Path:
    path = world["dir"] / f"policy-{tol}-{cap}.toml"
    path.write_text(POLICY.format(tol=tol, cap=cap))
    return path


def run(world: dict[str, Any], pol: Path | None, **kw: Any) -> api.VerifyReport:
    return api.verify(
        world["ref"], world["cand"], world["csv"], pol, label="y", sensitive=["group"], feature_columns=FEATURES, **kw
    )


def test_by_group_errors_equal_sklearn_and_paired_differences_numpy(world: dict[str, Any]) -> None:
    rep = run(world, policy(world, 5.0), task="regression")
    doc = reports.build(rep).doc
    assert doc["task"]["kind"] == "regression" and doc["task"]["output"] == "variable"
    section, y, group = doc["by_group"]["group"], world["y"], world["group"]
    # csv round trip: the labels edgefair read are the printed floats
    for model, key in (("reference", "ref"), ("candidate", "cand")):
        pred = world["preds"][key].astype(np.float64)
        for g in ("a", "b", "c"):
            rows = group == g
            got = section[model][g]
            assert got["count"] == rows.sum()
            assert got["mean_absolute_error"] == pytest.approx(mean_absolute_error(y[rows], pred[rows]), abs=1e-9)
            rmse = np.sqrt(mean_squared_error(y[rows], pred[rows]))
            assert got["root_mean_squared_error"] == pytest.approx(rmse, abs=1e-9)
            assert got["mean_error"] == pytest.approx(np.mean(pred[rows] - y[rows]), abs=1e-9)
    z = stats.z_value(0.95)
    ref, cand = (world["preds"][k].astype(np.float64) for k in ("ref", "cand"))
    for g in ("a", "b", "c"):
        rows = group == g
        d = np.abs(cand[rows] - y[rows]) - np.abs(ref[rows] - y[rows])
        diff = section["differences"][g]["mean_absolute_error"]
        assert diff["estimate"] == pytest.approx(d.mean(), abs=1e-9)
        half = z * d.std() / np.sqrt(rows.sum())
        assert diff["interval"] == pytest.approx([d.mean() - half, d.mean() + half], abs=1e-9)
        change = section["flips"][g]["mean_absolute_change"]
        assert change == pytest.approx(np.mean(np.abs(cand[rows] - ref[rows])), abs=1e-9)
    jsonschema.validate(json.loads(reports.build(rep).to_json()), reports.schema())
    assert "Δ MAE" in reports.build(rep).to_markdown() and "RMSE" in reports.build(rep).to_html()


def test_moments_table_adds(world: dict[str, Any]) -> None:
    y, ref, cand = world["y"], world["preds"]["ref"], world["preds"]["cand"]
    sens = {"group": world["group"]}
    whole = regression.from_arrays(sens, ref, cand, y)
    a = regression.from_arrays({"group": world["group"][:300]}, ref[:300], cand[:300], y[:300])
    b = regression.from_arrays({"group": world["group"][300:]}, ref[300:], cand[300:], y[300:])
    assert np.allclose((a + b).gram, whole.gram, rtol=1e-12, atol=1e-9) and (a + b).groups == whole.groups
    assert whole.overall().rows == len(y) and whole.marginal(["group"]).groups == whole.groups


def test_gate_passes_generous_fails_strict(world: dict[str, Any]) -> None:
    y, ref, cand = world["y"], world["preds"]["ref"], world["preds"]["cand"]
    worse = mean_absolute_error(y, cand) - mean_absolute_error(y, ref)
    assert worse > 0.1  # the linear model misses the interaction and the group offset
    passing = run(world, policy(world, 5.0), task="regression")
    assert passing.verdict == "pass" and passing.exit_code == 0
    overall = next(r for r in passing.gate.results if r.check.kind.value == "overall_increase")
    assert overall.estimate == pytest.approx(worse, abs=1e-9)
    assert overall.interval[0] < worse < overall.interval[1]
    failing = run(world, policy(world, 0.0, cap=0.01), task="regression")
    assert failing.verdict == "fail" and failing.exit_code == 1
    assert {r.check.metric for r in failing.gate.failures()} >= {"mean_absolute_error", "mean_absolute_change"}


def test_threshold_makes_binary_decisions(world: dict[str, Any]) -> None:
    rep = run(world, None, task="regression", threshold=1.0)
    y, ref, cand = world["y"], world["preds"]["ref"], world["preds"]["cand"]
    expected = tables.from_arrays(
        {"group": world["group"]}, (ref >= 1.0).astype(int), (cand >= 1.0).astype(int), (y >= 1.0).astype(int)
    )
    assert np.array_equal(rep.table.counts, expected.counts)
    assert reports.build(rep).doc["task"]["decisions"] == "'variable' >= 1"


def test_bad_policies_are_one_line_exit_2(world: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    drop = world["dir"] / "drop.toml"
    drop.write_text('[[checks]]\nkind = "group_drop"\nmetric = "mean_absolute_error"\ntolerance = 0.5\n')
    base = [str(world["ref"]), str(world["cand"]), "--data", str(world["csv"]), "--label", "y", "--sensitive", "group"]
    base += ["--features", ",".join(FEATURES), "--task", "regression"]
    for extra, fragments in (
        ([], ["needs a policy", "overall_increase"]),
        (["--policy", str(drop)], ["error (lower is better)", "'group_increase'"]),
        (["--task", "ordinal"], ["--task must be one of binary, multiclass, regression"]),
    ):
        code, _, err = cli(capsys, "verify", *base, *extra)
        assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        for f in fragments:
            assert f in err, (f, err)


def test_metrics_cli_regression(world: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    y, pred, group = world["y"], world["preds"]["cand"].astype(np.float64), world["group"]
    csv = world["dir"] / "predictions.csv"
    write_csv(csv, {"group": group, "y": [repr(float(v)) for v in y], "pred": [repr(float(v)) for v in pred]})
    code, out, err = cli(
        capsys, "metrics", str(csv), "--label", "y", "--prediction", "pred", "--sensitive", "group",
        "--task", "regression", "--json",
    )  # fmt: skip
    assert code == 0, err
    doc = json.loads(out)
    for g in ("a", "b", "c"):
        rows = group == g
        got = doc["by_group"][g]
        assert got["mean_absolute_error"] == pytest.approx(mean_absolute_error(y[rows], pred[rows]), abs=1e-12)
        rmse = np.sqrt(mean_squared_error(y[rows], pred[rows]))
        assert got["root_mean_squared_error"] == pytest.approx(rmse, abs=1e-12)


def test_bundle_refuses_a_certified_regression_model(world: dict[str, Any], tmp_path: Path) -> None:
    from edgefair.bundling import build_bundle
    from edgefair.errors import BundleError

    rep = run(world, policy(world, 5.0), task="regression")
    cert = tmp_path / "cert.json"
    reports.write(reports.build(rep), json=cert)
    with pytest.raises(
        BundleError, match=r"cert.json: certifies a regression model; the runtime counts binary classifiers"
    ):
        build_bundle(world["cand"], tmp_path / "b", certificate=cert)
    assert not (tmp_path / "b").exists()


def test_compare_rows_of_a_regression(world: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    html = world["dir"] / "compare.html"
    code, out, err = cli(
        capsys, "compare", str(world["ref"]), str(world["cand"]), str(world["ref"]), "--data", str(world["csv"]),
        "--label", "y", "--sensitive", "group", "--features", ",".join(FEATURES), "--task", "regression",
        "--policy", str(policy(world, 0.0, cap=0.01)), "--no-latency", "--html", str(html),
    )  # fmt: skip
    assert code == 1, err  # the linear candidate fails a zero tolerance
    y, ref = world["y"], world["preds"]["ref"]
    assert f"mean absolute error {mean_absolute_error(y, ref):.4f}" in out
    rows = [line.split() for line in out.splitlines() if line.startswith(("cand.onnx", "ref.onnx"))]
    assert [r[0] for r in rows] == ["cand.onnx", "ref.onnx"] and rows[0][-1] == "FAIL"
    assert "mean_absolute_error" in html.read_text()
