"""A 3-class and a regression scikit-learn pipeline, trained and pickled here, from a CSV
through every step a user takes: export (parity with the pickled model), convert, verify and
compare (by-group metrics against scikit-learn's own, per group), then bundle, which the
runtime cannot count for these tasks and so refuses in one line, as FairSession does.

Oracles: the pickled models' own predict/predict_proba, scikit-learn's accuracy_score and
mean_absolute_error per group, onnxruntime sessions built here."""

from __future__ import annotations

import json
import pickle
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from tests.test_cli_bad_input import assert_clean, one_line, run_main

ROWS = 1500


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    import pandas as pd
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    tmp = tmp_path_factory.mktemp("any-task")
    rng = np.random.default_rng(5)
    x = np.round(rng.normal(size=(ROWS, 4)), 4)
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(4)])
    cls = (x[:, 0] + x[:, 1] > 0).astype(np.int64) + (x[:, 2] > 0.8)
    value = np.round(2 * x[:, 0] + x[:, 1] + rng.normal(scale=0.3, size=ROWS), 4)
    classifier = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(16,), max_iter=400, random_state=0))
    regressor = make_pipeline(StandardScaler(), MLPRegressor(hidden_layer_sizes=(16,), max_iter=400, random_state=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the small MLPs stop before sklearn calls them converged
        classifier.fit(frame, cls)
        regressor.fit(frame, value)
    for name, model in (("mc", classifier), ("rg", regressor)):
        (tmp / f"{name}.pkl").write_bytes(pickle.dumps(model))
    frame["g"] = rng.choice(["a", "b"], ROWS)
    frame["h"] = rng.choice(["x", "y", "z"], ROWS)
    frame["cls"], frame["value"] = cls, value
    frame.to_csv(tmp / "data.csv", index=False)
    return tmp, frame, classifier, regressor


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _export_and_convert(tmp: Path, name: str) -> tuple[Path, Path]:
    ref, cand = tmp / f"{name}.onnx", tmp / f"{name}_int8.onnx"
    o = run_main(
        "export", str(tmp / f"{name}.pkl"), "-o", str(ref), "--trust-pickle", "--sample-data", str(tmp / "data.csv")
    )
    assert_clean(o, codes=(0,))
    assert "parity with the source" in o.out, o.out
    o = run_main("convert", str(ref), "-o", str(cand), "--quantize", "dynamic")
    one_line(o, "--allow-larger")  # a 16-unit MLP: int8 weights plus scales outweigh float ones
    o = run_main("convert", str(ref), "-o", str(cand), "--quantize", "dynamic", "--allow-larger")
    assert_clean(o, codes=(0,))
    return ref, cand


def test_a_three_class_pipeline_from_a_csv(made):
    tmp, frame, classifier, _ = made
    ref, cand = _export_and_convert(tmp, "mc")
    feeds = {c: frame[[c]].to_numpy(np.float32) for c in ("f0", "f1", "f2", "f3")}
    got = _session(ref).run(None, feeds)
    assert float(np.abs(got[1] - classifier.predict_proba(frame[["f0", "f1", "f2", "f3"]])).max()) < 1e-4

    cert = tmp / "mc.json"
    o = run_main(
        "verify",
        str(ref),
        str(cand),
        "--data",
        str(tmp / "data.csv"),
        "--label",
        "cls",
        "--sensitive",
        "g,h",
        "--json",
        str(cert),
    )
    assert_clean(o, codes=(0, 1, 3))
    doc = json.loads(cert.read_text())
    assert doc["task"]["kind"] == "multiclass" and "argmax" in doc["task"]["decisions"]
    if doc["summary"]["inconclusive"]:  # whatever the verdict, the terminal names what was not decided
        assert "inconclusive" in o.out and "would settle it" in o.out, o.out
    # the candidate's per-group accuracy against scikit-learn's on the candidate's own labels
    from sklearn.metrics import accuracy_score

    cand_labels = _session(cand).run(None, feeds)[1].argmax(axis=1)
    for attr, groups in (("g", ("a", "b")), ("h", ("x", "y", "z"))):
        for group in groups:
            rows = (frame[attr] == group).to_numpy()
            expected = accuracy_score(frame["cls"][rows], cand_labels[rows])
            assert doc["by_group"][attr]["candidate"][group]["accuracy"] == pytest.approx(expected, abs=1e-12)

    o = run_main(
        "compare", str(ref), str(cand), str(ref), "--data", str(tmp / "data.csv"), "--label", "cls", "--sensitive", "g"
    )
    assert_clean(o, codes=(0, 1, 3))
    assert "mc_int8.onnx" in o.out and "mc.onnx" in o.out

    o = run_main("bundle", "build", str(cand), "-o", str(tmp / "mc-bundle"), "--certificate", str(cert))
    one_line(o, "multiclass", "cannot be bundled")
    assert not (tmp / "mc-bundle").exists()

    # an embedded app loading the bare model is refused when it loads it, not at its first call
    from edgefair.errors import ModelError
    from edgefair.runtime.session import FairSession

    with pytest.raises(ModelError, match=r"a 3-class model \(output 'probabilities'.*binary classifiers only"):
        FairSession(cand, sensitive=["g"])


def test_a_regression_pipeline_from_a_csv(made):
    tmp, frame, _, regressor = made
    ref, cand = _export_and_convert(tmp, "rg")
    feeds = {c: frame[[c]].to_numpy(np.float32) for c in ("f0", "f1", "f2", "f3")}
    got = _session(ref).run(None, feeds)[0].ravel()
    assert float(np.abs(got - regressor.predict(frame[["f0", "f1", "f2", "f3"]])).max()) < 1e-4

    args = ("--data", str(tmp / "data.csv"), "--label", "value", "--sensitive", "g,h", "--task", "regression")
    one_line(run_main("verify", str(ref), str(cand), *args), "needs a policy")
    policy = tmp / "reg.toml"
    policy.write_text('[[checks]]\nkind = "group_increase"\nmetric = "mean_absolute_error"\ntolerance = 0.05\n')
    cert = tmp / "rg.json"
    o = run_main("verify", str(ref), str(cand), *args, "--policy", str(policy), "--json", str(cert))
    assert_clean(o, codes=(0, 1, 3))
    doc = json.loads(cert.read_text())
    assert doc["task"]["kind"] == "regression"
    from sklearn.metrics import mean_absolute_error

    pred = _session(cand).run(None, feeds)[0].ravel()
    for group in ("x", "y", "z"):
        rows = (frame["h"] == group).to_numpy()
        expected = mean_absolute_error(frame["value"][rows], pred[rows])  # float32 predictions, float64 sums
        assert doc["by_group"]["h"]["candidate"][group]["mean_absolute_error"] == pytest.approx(expected, rel=1e-6)

    o = run_main("bundle", "build", str(cand), "-o", str(tmp / "rg-bundle"), "--certificate", str(cert))
    one_line(o, "regression", "cannot be bundled")
