"""A regression check's interval is a normal (CLT) draw from the group's moments, far too
narrow on a handful of rows: groups under NORMAL_MIN_ROWS are reported, not gated, even when
the policy's min_group_size is 1 (five rows once passed every check). Ridge models trained here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import edgefair
from edgefair.verification.tasks import NORMAL_MIN_ROWS

pytest.importorskip("skl2onnx")


def _setup(tmp_path: Path, rows: int) -> tuple[Path, Path, Path, Path]:
    from skl2onnx import to_onnx
    from sklearn.linear_model import Ridge

    rng = np.random.default_rng(2)
    x = rng.normal(size=(400, 2)).astype(np.float32)
    t = x @ np.array([2.0, -1.0]) + rng.normal(scale=0.3, size=400)
    paths = []
    for name, alpha in (("r", 1.0), ("c", 3.0)):
        p = tmp_path / f"{name}.onnx"
        p.write_bytes(to_onnx(Ridge(alpha=alpha).fit(x, t), x[:1], target_opset=17).SerializeToString())
        paths.append(p)
    g = np.where(x[:, 0] > 0, "a", "b")
    lines = [f"{a:.6f},{b:.6f},{v:.6f},{k}" for (a, b), v, k in zip(x[:rows], t[:rows], g[:rows], strict=True)]
    csv = tmp_path / "d.csv"
    csv.write_text("x0,x1,y,g\n" + "\n".join(lines) + "\n")
    policy = tmp_path / "p.toml"
    policy.write_text(
        'min_group_size = 1\n[[checks]]\nkind = "overall_increase"\nmetric = "mean_absolute_error"\ntolerance = 0.5\n'
        '[[checks]]\nkind = "group_increase"\nmetric = "root_mean_squared_error"\ntolerance = 0.5\n'
    )
    return paths[0], paths[1], csv, policy


def _verify(tmp_path: Path, rows: int) -> edgefair.VerifyReport:
    ref, cand, csv, policy = _setup(tmp_path, rows)
    return edgefair.verify(
        ref, cand, csv, policy, label="y", sensitive=["g"], feature_columns=["x0", "x1"], task="regression"
    )


def test_five_rows_decide_nothing_whatever_min_group_size_says(tmp_path):  # type: ignore[no-untyped-def]
    report = _verify(tmp_path, 5)
    assert report.verdict == "inconclusive"
    assert all(not r.gated and r.rows_needed == NORMAL_MIN_ROWS for r in report.gate.results)


def test_enough_rows_are_gated_as_before(tmp_path):  # type: ignore[no-untyped-def]
    report = _verify(tmp_path, 400)  # ~200 rows per group: every check is tested
    assert all(r.gated for r in report.gate.results) and report.verdict == "pass"
