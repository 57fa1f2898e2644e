"""/fairness (``serve.metrics.fairness_summary``) shows a drift row only where it shows the
group's own rate: a drift row carries the field rate and its rows, so on a group whose small
cell the privacy rule withholds it would give that cell back (610 positives at 0.99508 is 3
misses). The model is trained here (scikit-learn); the oracle is numpy's own count of the
decisions and labels the test sent."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

import edgefair
from edgefair.bundling import build_bundle
from edgefair.runtime.session import FairSession
from edgefair.serve.metrics import fairness_summary

pytest.importorskip("skl2onnx")
MIN_CELL = 11


def test_drift_rows_never_show_what_the_group_rates_withhold(tmp_path):  # type: ignore[no-untyped-def]
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(11)
    n = 4000
    x = rng.normal(size=(n, 2)).astype(np.float32)
    y = (x[:, 0] + rng.normal(scale=0.5, size=n) > 0).astype(int)
    onx = to_onnx(LogisticRegression().fit(x, y), x[:1], options={"zipmap": False}, target_opset=17)
    model = tmp_path / "m.onnx"
    model.write_bytes(onx.SerializeToString())
    region = np.array(["north", "south", "east"])[rng.integers(0, 3, n)]
    rows = [f"{a:.6f},{b:.6f},{t},{r}" for (a, b), t, r in zip(x, y, region, strict=True)]
    (tmp_path / "d.csv").write_text("x0,x1,y,region\n" + "\n".join(rows) + "\n")
    report = edgefair.verify(
        model, model, tmp_path / "d.csv", label="y", sensitive=["region"], feature_columns=["x0", "x1"]
    )
    edgefair.report.write(edgefair.report.build(report), json=tmp_path / "cert.json")
    bundle = build_bundle(model, tmp_path / "b", certificate=tmp_path / "cert.json")

    # the field: labels chosen from the model's own decisions so that south misses exactly 3
    # positives (a cell under MIN_CELL) while north and east keep every cell large
    field_x = rng.normal(size=(3000, 2)).astype(np.float32)
    field_region = np.array(["north", "south", "east"])[rng.integers(0, 3, 3000)]
    decided = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"X": field_x})[0]
    labels = decided.astype(int).copy()
    flip = np.flatnonzero(labels == 0)
    south_neg = flip[field_region[flip] == "south"][:3]
    others = flip[field_region[flip] != "south"]
    labels[south_neg] = 1  # 3 missed positives in south
    labels[rng.choice(others, size=200, replace=False)] = 1  # many misses elsewhere
    pos = np.flatnonzero(decided == 1)
    labels[rng.choice(pos, size=300, replace=False)] = 0  # false positives everywhere
    with FairSession(bundle) as session:
        ids = [f"r{i}" for i in range(3000)]
        session.run({"X": field_x}, {"region": field_region}, ids)
        session.record_outcomes(ids, labels.tolist())
        doc = fairness_summary(session, MIN_CELL)

    shown = {(r["metric"], r["group"]) for r in doc["drift"]["rows"]}
    assert shown, "drift rows are shown for the large groups"
    for g in ("north", "south", "east"):
        sel = field_region == g
        tp = int(((decided == 1) & (labels == 1) & sel).sum())
        fn = int(((decided == 0) & (labels == 1) & sel).sum())
        tpr_visible = min(tp, fn) >= MIN_CELL
        assert (doc["by_attribute"]["region"][g]["true_positive_rate"] is not None) == tpr_visible
        assert (("true_positive_rate", f"region={g}") in shown) == tpr_visible
    assert ("true_positive_rate", "region=south") not in shown  # the case the rule exists for
    assert ("selection_rate", "region=south") in shown  # its other rates stay visible
