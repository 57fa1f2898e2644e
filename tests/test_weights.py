"""Sample weights: ``metric_frame(..., sample_weight=w)`` and ``edgefair metrics --weight COL``
equal fairlearn's MetricFrame given the weights as sample_params, to 1e-12 (the oracle), and
bad weights (negative, NaN) are one line naming the line and column, exit 2."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import (
    MetricFrame,
    count,
    false_negative_rate,
    false_positive_rate,
    selection_rate,
    true_negative_rate,
    true_positive_rate,
)
from sklearn.metrics import accuracy_score, precision_score

from edgefair.core import weighted
from edgefair.core.frame import metric_frame
from edgefair.core.metrics import BASE_METRICS
from tests.test_tasks_multiclass import cli, write_csv

RATES: dict[str, Any] = {
    "selection_rate": selection_rate,
    "true_positive_rate": true_positive_rate,
    "false_positive_rate": false_positive_rate,
    "true_negative_rate": true_negative_rate,
    "false_negative_rate": false_negative_rate,
    "accuracy": accuracy_score,
    "positive_predictive_value": lambda y, p, sample_weight: precision_score(
        y, p, sample_weight=sample_weight, zero_division=0
    ),
}


def data(seed: int = 5, n: int = 700) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    race = rng.choice(["x", "y", "z"], size=n, p=[0.6, 0.3, 0.1])
    sex = rng.choice(["f", "m"], size=n)
    y = rng.integers(0, 2, size=n)
    pred = np.where(rng.random(n) < 0.75, y, 1 - y)
    w = rng.gamma(2.0, 1.0, size=n) * (race == "z") + rng.random(n)  # weights that matter
    return {"race": race, "sex": sex, "y": y, "pred": pred, "w": w}


def fairlearn_frame(d: dict[str, Any], sensitive: Any) -> MetricFrame:
    params = {name: {"sample_weight": d["w"]} for name in RATES}
    return MetricFrame(
        metrics={**RATES, "count": count},
        y_true=d["y"],
        y_pred=d["pred"],
        sensitive_features=sensitive,
        sample_params=params,
    )


def test_metric_frame_with_weights_equals_fairlearn() -> None:
    d = data()
    sensitive = pd.DataFrame({"race": d["race"], "sex": d["sex"]})
    ours = metric_frame(d["y"], d["pred"], sensitive_features=sensitive, sample_weight=d["w"])
    theirs = fairlearn_frame(d, sensitive)
    for metric in BASE_METRICS:
        assert ours.overall[metric] == pytest.approx(float(theirs.overall[metric]), abs=1e-12)
        for key, values in ours.by_group.items():
            assert values[metric] == pytest.approx(float(theirs.by_group[metric][key]), abs=1e-12), (metric, key)
    for method in ("between_groups", "to_overall"):
        diff, ratio = theirs.difference(method=method), theirs.ratio(method=method)
        for metric in BASE_METRICS:
            assert ours.difference(method)[metric] == pytest.approx(float(diff[metric]), abs=1e-12)
            assert ours.ratio(method)[metric] == pytest.approx(float(ratio[metric]), abs=1e-12)
    race = fairlearn_frame(d, pd.Series(d["race"], name="race"))
    for group, values in ours.by_attribute["race"].items():
        assert values["true_positive_rate"] == pytest.approx(race.by_group["true_positive_rate"][group], abs=1e-12)


def test_unit_weights_are_the_unweighted_frame_and_tables_add() -> None:
    d = data(seed=9)
    sens = {"race": d["race"]}
    plain = metric_frame(d["y"], d["pred"], sensitive_features=sens)
    ones = metric_frame(d["y"], d["pred"], sensitive_features=sens, sample_weight=np.ones(len(d["y"])))
    for group, values in plain.by_group.items():
        assert ones.by_group[group] == pytest.approx(values, abs=1e-15)
    ivs, plain_ivs = ones.group_intervals(), plain.group_intervals()  # Kish size of unit weights is n
    for group in plain_ivs:
        for metric, interval in plain_ivs[group].items():
            assert ivs[group][metric] == pytest.approx(interval, abs=1e-12)
    half = len(d["y"]) // 2
    parts = [
        weighted.from_arrays({"race": d["race"][s]}, d["pred"][s], None, d["y"][s], d["w"][s])
        for s in (slice(0, half), slice(half, None))
    ]
    whole = weighted.from_arrays(sens, d["pred"], None, d["y"], d["w"])
    added = parts[0] + parts[1]
    assert np.allclose(added.sums, whole.sums, rtol=1e-13) and added.table == whole.table
    with pytest.raises(Exception, match=r"row 3 is -1.0; weights must be finite and >= 0"):
        bad = d["w"].copy()
        bad[3] = -1.0
        metric_frame(d["y"], d["pred"], sensitive_features=sens, sample_weight=bad)


def test_cli_metrics_weight(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = data(seed=11, n=400)
    csv = tmp_path / "p.csv"
    write_csv(csv, {"race": d["race"], "y": d["y"], "pred": d["pred"], "w": [repr(float(v)) for v in d["w"]]})
    args = ["metrics", str(csv), "--label", "y", "--prediction", "pred", "--sensitive", "race", "--weight", "w"]
    code, out, err = cli(capsys, *args, "--json")
    assert code == 0, err
    doc = json.loads(out)
    theirs = fairlearn_frame(d, pd.Series(d["race"], name="race"))
    for group, values in doc["by_group"].items():
        for metric in RATES:
            assert values[metric] == pytest.approx(float(theirs.by_group[metric][group]), abs=1e-12)
    assert doc["weighted"] is True and doc["total_weight"] == pytest.approx(d["w"].sum(), rel=1e-12)
    lines = csv.read_text().splitlines()
    for value, shown in (("-0.5", "'-0.5'"), ("nan", "'nan'")):
        bad = tmp_path / f"bad-{value}.csv"
        row = lines[7].split(",")
        row[-1] = value
        bad.write_text("\n".join([*lines[:7], ",".join(row), *lines[8:]]) + "\n")
        code, _, err = cli(capsys, "metrics", str(bad), *args[2:])
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert f"line 8, column 'w': weight {shown} is not a finite number >= 0" in err, err


def test_verify_weight_reports_fairlearn_weighted_metrics(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import onnx
    import onnxruntime as ort

    from edgefair import report as reports
    from edgefair.verification import api
    from tests import models

    rng = np.random.default_rng(2)
    n = 500
    x = rng.normal(size=(n, 4)).astype(np.float32)
    race = rng.choice(["x", "y"], size=n)
    y = (x[:, 0] > 0).astype(int)
    w = rng.gamma(2.0, 1.0, size=n)
    paths = {}
    for name, seed in (("ref", 0), ("cand", 1)):
        paths[name] = tmp_path / f"{name}.onnx"
        onnx.save(models.mlp(seed=seed), paths[name])
    csv = tmp_path / "d.csv"
    features = ["a", "b", "c", "d"]
    write_csv(csv, {**{f: x[:, i].tolist() for i, f in enumerate(features)}, "race": race, "y": y, "w": w.tolist()})
    rep = api.verify(
        paths["ref"], paths["cand"], csv, label="y", sensitive=["race"], feature_columns=features, weight="w"
    )
    doc = reports.build(rep).doc
    section = doc["weighted"]["by_group"]["race"]
    for model, key in (("reference", "ref"), ("candidate", "cand")):
        scores = ort.InferenceSession(str(paths[key])).run(None, {"x": x})[0].reshape(-1)
        d = {"y": y, "pred": (scores >= 0.5).astype(int), "w": np.array([float(repr(float(v))) for v in w])}
        theirs = fairlearn_frame(d, pd.Series(race, name="race"))
        for group in ("x", "y"):
            for metric in RATES:
                assert section[model][group][metric] == pytest.approx(theirs.by_group[metric][group], abs=1e-12)
    unweighted = api.verify(paths["ref"], paths["cand"], csv, label="y", sensitive=["race"], feature_columns=features)
    assert [r.to_dict() for r in rep.gate.results] == [r.to_dict() for r in unweighted.gate.results]
    assert "unweighted counts" in doc["weighted"]["note"]
    jsonschema_validate(doc)
    base = [
        str(paths["ref"]),
        str(paths["cand"]),
        "--label",
        "y",
        "--sensitive",
        "race",
        "--features",
        ",".join(features),
    ]
    code, _, err = cli(capsys, "verify", *base, "--data", str(csv), "--weight", "race")
    assert code == 2 and "--weight 'race' is also the label or a sensitive column" in err, err
    lines = csv.read_text().splitlines()
    bad = tmp_path / "negative.csv"
    bad.write_text("\n".join([*lines[:3], lines[3].rsplit(",", 1)[0] + ",-2", *lines[4:]]) + "\n")
    code, _, err = cli(capsys, "verify", *base, "--data", str(bad), "--weight", "w")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "line 4, column 'w': weight '-2' is not a finite number >= 0" in err, err


def jsonschema_validate(doc: dict[str, Any]) -> None:
    import jsonschema

    from edgefair import report as reports

    jsonschema.validate(json.loads(json.dumps(doc)), reports.schema())


def test_weighted_intervals_are_wilson_at_the_kish_size() -> None:
    from statsmodels.stats.proportion import proportion_confint

    d = data(seed=13, n=600)
    frame = metric_frame(d["y"], d["pred"], sensitive_features={"race": d["race"]}, sample_weight=d["w"])
    ivs = frame.group_intervals(0.9)
    for group in ("x", "y", "z"):
        rows = (d["race"] == group) & (d["y"] == 1)  # true_positive_rate's denominator
        w = d["w"][rows]
        n_eff = w.sum() ** 2 / (w**2).sum()
        share = w[d["pred"][rows] == 1].sum() / w.sum()
        low, high = proportion_confint(share * n_eff, n_eff, alpha=0.1, method="wilson")
        assert ivs[group]["true_positive_rate"] == pytest.approx([low, high], abs=1e-12)
