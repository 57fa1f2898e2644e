"""A sensitive column with a single value (a filtered export, a wrong column) must not make the
between-groups checks vanish: each is reported as inconclusive, saying why, for binary,
regression and multi-class gates alike. Models are trained here with scikit-learn."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import edgefair

pytest.importorskip("skl2onnx")

BETWEEN = ("difference_increase", "ratio")


def _write(path: Path, x: np.ndarray, y: np.ndarray, cols: dict[str, np.ndarray]) -> Path:
    head = ",".join([*(f"x{i}" for i in range(x.shape[1])), "y", *cols])
    lines = [
        ",".join([*(f"{v:.6f}" for v in row), str(t), *(str(c[i]) for c in cols.values())])
        for i, (row, t) in enumerate(zip(x, y, strict=True))
    ]
    path.write_text(head + "\n" + "\n".join(lines) + "\n")
    return path


def _onnx(model: object, x: np.ndarray, path: Path) -> Path:
    from skl2onnx import to_onnx

    opts = {id(model): {"zipmap": False}} if hasattr(model, "predict_proba") else None
    path.write_bytes(to_onnx(model, x[:1], options=opts, target_opset=17).SerializeToString())
    return path


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3000, 3)).astype(np.float32)
    return x, (x[:, 0] - 0.5 * x[:, 1] + rng.normal(scale=0.4, size=3000) > 0).astype(int)


def test_binary_one_group_attribute_lists_its_between_checks_as_inconclusive(data, tmp_path):  # type: ignore[no-untyped-def]
    from sklearn.linear_model import LogisticRegression

    x, y = data
    ref = _onnx(LogisticRegression().fit(x, y), x, tmp_path / "r.onnx")
    cand = LogisticRegression(C=0.05).fit(x, y)
    cand_path = _onnx(cand, x, tmp_path / "c.onnx")
    site = np.array(["only"] * len(y))
    band = np.where(x[:, 2] > 0, "hi", "lo")
    csv = _write(tmp_path / "d.csv", x, y, {"site": site, "band": band})
    policy = edgefair.load_policy(None)
    report = edgefair.verify(
        ref, cand_path, csv, label="y", sensitive=["site", "band"], feature_columns=["x0", "x1", "x2"]
    )
    between = [c for c in policy.checks if c.kind.value in BETWEEN]
    assert between, "the default policy has between-groups checks"
    for scope in ("site", "band"):
        got = [r for r in report.gate.results if r.scope == scope and r.check.kind.value in BETWEEN]
        assert sorted(r.check.name for r in got) == sorted(c.name for c in between)  # none dropped
    for r in (r for r in report.gate.results if r.scope == "site" and r.check.kind.value in BETWEEN):
        assert r.verdict == "inconclusive" and not r.gated and "1 group in the data (only)" in r.note
    for r in (r for r in report.gate.results if r.scope == "band" and r.check.kind.value in BETWEEN):
        assert r.gated  # two groups of ~1500 rows: tested as usual
    out = tmp_path / "r.json"
    edgefair.report.write(edgefair.report.build(report), json=out)
    doc = json.loads(out.read_text())
    assert any("site" in u and "needs two" in u for u in doc["summary"]["unsettled"])


def test_regression_one_group_attribute_is_listed_not_dropped(data, tmp_path):  # type: ignore[no-untyped-def]
    from sklearn.linear_model import Ridge

    x, _ = data
    target = (x @ np.array([1.0, 2.0, -1.0])).astype(np.float64)
    ref = _onnx(Ridge(alpha=1.0).fit(x, target), x, tmp_path / "r.onnx")
    cand = _onnx(Ridge(alpha=50.0).fit(x, target), x, tmp_path / "c.onnx")
    csv = _write(tmp_path / "d.csv", x, np.round(target, 4), {"site": np.array(["only"] * len(target))})
    policy = tmp_path / "p.toml"
    policy.write_text(
        '[[checks]]\nkind = "difference_increase"\nmetric = "mean_absolute_error"\ntolerance = 0.5\n'
        '[[checks]]\nkind = "overall_increase"\nmetric = "mean_absolute_error"\ntolerance = 0.5\n'
    )
    report = edgefair.verify(
        ref, cand, csv, policy, label="y", sensitive=["site"], feature_columns=["x0", "x1", "x2"], task="regression"
    )
    got = [r for r in report.gate.results if r.check.kind.value == "difference_increase"]
    assert len(got) == 1 and got[0].verdict == "inconclusive" and "needs two" in got[0].note
