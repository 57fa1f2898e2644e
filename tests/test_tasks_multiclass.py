"""Multi-class models in verify and compare: a 3-class scikit-learn MLP exported with skl2onnx,
by-group metrics against scikit-learn computed per group here (the oracle), the K-class table's
algebra and its one-vs-rest projection, the gate, the report, and bad input as one line, exit 2."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import onnxruntime as ort
import pytest
from sklearn.metrics import accuracy_score, recall_score

from edgefair import report as reports
from edgefair.core import multiclass, tables
from edgefair.verification import api

FEATURES = ["x0", "x1", "x2", "x3"]


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """The real entry point in this process (no interpreter start-up): exit code, stdout, stderr."""
    from edgefair.cli import main

    old = sys.argv
    sys.argv = ["edgefair", *args]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        sys.argv = old
    out = capsys.readouterr()
    return code, out.out, out.err


def write_csv(path: Path, columns: dict[str, Any]) -> None:
    names = list(columns)
    rows = zip(*(columns[n] for n in names), strict=True)
    path.write_text(",".join(names) + "\n" + "\n".join(",".join(str(v) for v in r) for r in rows) + "\n")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from skl2onnx import to_onnx
    from sklearn.neural_network import MLPClassifier

    rng = np.random.default_rng(7)
    n = 900
    x = rng.normal(size=(n, 4)).astype(np.float32)
    group = rng.choice(["a", "b", "c"], size=n, p=[0.5, 0.3, 0.2])
    sex = rng.choice(["f", "m"], size=n)
    y = (x[:, 0] + 0.4 * (group == "b") > 0).astype(int) + (x[:, 2] > 0.7).astype(int)
    folder = tmp_path_factory.mktemp("multiclass")
    paths = {}
    for name, hidden, seed, iters in (("ref", (12,), 0, 40), ("cand", (2,), 1, 8)):
        with warnings.catch_warnings():  # a few iterations are enough for a model to verify
            warnings.simplefilter("ignore")
            clf = MLPClassifier(hidden, max_iter=iters, random_state=seed).fit(x, y)
        onx = to_onnx(clf, x[:1], options={id(clf): {"zipmap": False}})
        paths[name] = folder / f"{name}.onnx"
        paths[name].write_bytes(onx.SerializeToString())
    csv = folder / "d.csv"
    write_csv(csv, {**{f: x[:, i].tolist() for i, f in enumerate(FEATURES)}, "group": group, "sex": sex, "y": y})
    # the oracle's predictions: the model's own class output, run by onnxruntime (not edgefair's argmax)
    preds = {k: ort.InferenceSession(str(p)).run(["label"], {"X": x})[0] for k, p in paths.items()}
    return {"x": x, "y": y, "group": group, "sex": sex, "paths": paths, "csv": csv, "preds": preds, "dir": folder}


def run(world: dict[str, Any], **kw: Any) -> api.VerifyReport:
    return api.verify(
        world["paths"]["ref"],
        world["paths"]["cand"],
        world["csv"],
        kw.pop("policy", None),
        label="y",
        sensitive=["group", "sex"],
        feature_columns=FEATURES,
        **kw,
    )


def test_by_group_metrics_equal_sklearn_per_group(world: dict[str, Any]) -> None:
    rep = run(world)
    assert rep.task == "multiclass"
    doc = reports.build(rep).doc
    assert doc["task"]["decisions"] == "argmax of 'probabilities' (3 classes)"
    section = doc["by_group"]["group"]
    y, group = world["y"], world["group"]
    for model in ("reference", "candidate"):
        pred = world["preds"]["ref" if model == "reference" else "cand"]
        for g in ("a", "b", "c"):
            rows = group == g
            got = section[model][g]
            assert got["count"] == rows.sum()
            assert got["accuracy"] == pytest.approx(accuracy_score(y[rows], pred[rows]), abs=1e-12)
            recall = recall_score(y[rows], pred[rows], labels=[0, 1, 2], average=None, zero_division=0)
            for k in range(3):
                assert got[f"true_positive_rate[{k}]"] == pytest.approx(recall[k], abs=1e-12)
                assert got[f"selection_rate[{k}]"] == pytest.approx(np.mean(pred[rows] == k), abs=1e-12)
            assert got["true_positive_rate_macro"] == pytest.approx(np.mean(recall), abs=1e-12)
    ref, cand = world["preds"]["ref"], world["preds"]["cand"]
    for g in ("a", "b", "c"):
        rows = group == g
        flips = section["flips"][g]
        assert flips["flip_rate"] == pytest.approx(np.mean(ref[rows] != cand[rows]), abs=1e-12)
        right_wrong = (ref[rows] == y[rows]) & (cand[rows] != y[rows])
        assert flips["negative_flip_rate"] == pytest.approx(right_wrong.mean(), abs=1e-12)
        wrong_right = (ref[rows] != y[rows]) & (cand[rows] == y[rows])
        assert flips["positive_flip_rate"] == pytest.approx(wrong_right.mean(), abs=1e-12)
    gaps = section["gaps"]["candidate"]["true_positive_rate"]
    per_class = [
        max(recall_score(y[group == g], cand[group == g], labels=[k], average=None)[0] for g in "abc")
        - min(recall_score(y[group == g], cand[group == g], labels=[k], average=None)[0] for g in "abc")
        for k in range(3)
    ]
    assert gaps["by_class"] == pytest.approx(per_class, abs=1e-12)
    assert gaps["worst"] == pytest.approx(max(per_class), abs=1e-12)
    jsonschema.validate(json.loads(reports.build(rep).to_json()), reports.schema())
    assert "### By group" in reports.build(rep).to_markdown()
    assert "macro TPR" in reports.build(rep).to_html()


def test_class_table_adds_and_projects_like_a_binary_table(world: dict[str, Any]) -> None:
    y, ref, cand = world["y"], world["preds"]["ref"], world["preds"]["cand"]
    sens = {"group": world["group"], "sex": world["sex"]}
    whole = multiclass.from_arrays(sens, ref, cand, y, classes=3)
    half = len(y) // 3
    parts = [
        multiclass.from_arrays({k: v[s] for k, v in sens.items()}, ref[s], cand[s], y[s], classes=3)
        for s in (slice(0, half), slice(half, None))
    ]
    assert parts[0] + parts[1] == whole and sum(parts) == whole
    assert (whole - parts[1]) == multiclass.merge([parts[0], whole - whole])
    for k in range(3):  # class k against the rest is the binary table of (y == k, decision == k)
        binary = tables.from_arrays(sens, (ref == k).astype(int), (cand == k).astype(int), (y == k).astype(int))
        assert np.array_equal(multiclass.one_vs_rest(whole, k).counts, binary.counts)
    unlabelled = multiclass.from_arrays(sens, ref, cand, None, classes=3)  # field counts: labels unknown
    for k in range(3):
        binary = tables.from_arrays(sens, (ref == k).astype(int), (cand == k).astype(int), None)
        assert np.array_equal(multiclass.one_vs_rest(unlabelled, k).counts, binary.counts)
    # two classes: the K-class layout is the 12-cell layout itself
    two = multiclass.from_arrays(sens, ref % 2, cand % 2, y % 2, classes=2)
    assert np.array_equal(two.counts, tables.from_arrays(sens, ref % 2, cand % 2, y % 2).counts)
    assert multiclass.from_dict(json.loads(json.dumps(whole.to_dict()))) == whole


def test_gate_verdicts_and_positive_label(world: dict[str, Any], tmp_path: Path) -> None:
    rep = run(world)
    kinds = {r.check.kind.value for r in rep.gate.results}
    assert kinds == {"difference_increase", "group_max", "group_drop", "overall_drop"}
    overall = next(r for r in rep.gate.results if r.check.kind.value == "overall_drop")
    y, ref, cand = world["y"], world["preds"]["ref"], world["preds"]["cand"]
    assert overall.estimate == pytest.approx(accuracy_score(y, ref) - accuracy_score(y, cand), abs=1e-12)
    assert overall.interval[0] < overall.estimate < overall.interval[1]
    assert rep.exit_code == {"pass": 0, "fail": 1, "inconclusive": 3}[rep.verdict]
    strict = tmp_path / "strict.toml"
    strict.write_text('[[checks]]\nkind = "overall_drop"\nmetric = "accuracy"\ntolerance = 0.0\n')
    failing = run(world, policy=strict)
    assert accuracy_score(y, cand) < accuracy_score(y, ref) - 0.05  # the small candidate is worse
    assert failing.verdict == "fail" and failing.exit_code == 1
    one = run(world, positive_label="2")
    doc = reports.build(one).doc
    assert doc["task"]["positive_class"] == 2 and "one_vs_rest" in doc
    tpr = doc["one_vs_rest"]["group"]["candidate"]["a"]["true_positive_rate"]
    rows = world["group"] == "a"
    assert tpr == pytest.approx(recall_score(y[rows] == 2, cand[rows] == 2), abs=1e-12)
    jsonschema.validate(json.loads(reports.build(one).to_json()), reports.schema())


def test_bad_input_is_one_line_exit_2(world: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    base = [str(world["paths"]["ref"]), str(world["paths"]["cand"]), "--sensitive", "group", "--features"]
    base.append(",".join(FEATURES))
    bad_labels = world["dir"] / "bad.csv"
    text = world["csv"].read_text().splitlines()
    bad_labels.write_text("\n".join([text[0], *text[1:5], text[5].rsplit(",", 1)[0] + ",3", *text[6:]]) + "\n")
    policy = world["dir"] / "fpr.toml"
    policy.write_text('[[checks]]\nkind = "difference_increase"\nmetric = "false_positive_rate"\ntolerance = 0.1\n')
    cases = [
        (["--data", str(bad_labels), "--label", "y"], ["line 6", "column 'y'", "class '3'", "classes 0..2"]),
        (["--data", str(world["csv"]), "--label", "y", "--positive-label", "7"], ["--positive-label '7'", "0..2"]),
        (["--data", str(world["csv"]), "--label", "y", "--policy", str(policy)], ["false_positive_rate", "multi"]),
        (["--data", str(world["csv"]), "--label", "y", "--threshold", "0.3"], ["--threshold", "argmax"]),
    ]
    for extra, fragments in cases:
        code, _, err = cli(capsys, "verify", *base, *extra)
        assert code == 2, err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        for f in fragments:
            assert f in err, (f, err)


def test_metrics_cli_multiclass(world: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    y, pred, group = world["y"], world["preds"]["cand"], world["group"]
    csv = world["dir"] / "predictions.csv"
    write_csv(csv, {"group": group, "y": y, "pred": pred})
    code, out, err = cli(
        capsys, "metrics", str(csv), "--label", "y", "--prediction", "pred", "--sensitive", "group",
        "--task", "multiclass", "--json",
    )  # fmt: skip
    assert code == 0, err
    doc = json.loads(out)
    assert doc["classes"] == 3 and doc["rows"] == len(y)
    for g in ("a", "b", "c"):
        rows = group == g
        assert doc["by_group"][g]["accuracy"] == pytest.approx(accuracy_score(y[rows], pred[rows]), abs=1e-12)
        recall = recall_score(y[rows], pred[rows], labels=[0, 1, 2], average="macro", zero_division=0)
        assert doc["by_group"][g]["true_positive_rate_macro"] == pytest.approx(recall, abs=1e-12)
    code, _, err = cli(capsys, "metrics", str(csv), "--label", "y", "--prediction", "group", "--sensitive", "y",
                       "--task", "multiclass")  # fmt: skip
    assert code == 2 and "column 'group'" in err and "is not a number" in err, err


def test_bundle_refuses_a_model_the_runtime_cannot_count(world: dict[str, Any], tmp_path: Path) -> None:
    from edgefair.bundling import build_bundle
    from edgefair.errors import BundleError

    with pytest.raises(BundleError, match=r"ref.onnx: a multiclass model; the runtime counts binary classifiers only"):
        build_bundle(world["paths"]["ref"], tmp_path / "b", sensitive=["group"])
    assert not (tmp_path / "b").exists()
