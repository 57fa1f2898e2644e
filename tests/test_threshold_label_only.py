"""--threshold cannot apply to a model that gives only a label: refused in one line (exit 2),
never a silent mix of a cut score and a label. The model is trained here (scikit-learn)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from tests.conftest import assert_one_line_error, run_cli

pytest.importorskip("skl2onnx")


def test_threshold_with_a_label_only_model_is_one_line_exit_2(tmp_path):  # type: ignore[no-untyped-def]
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(5)
    x = rng.normal(size=(800, 2)).astype(np.float32)
    y = (x[:, 0] + rng.normal(scale=0.3, size=800) > 0).astype(int)
    model = to_onnx(LogisticRegression().fit(x, y), x[:1], options={"zipmap": False}, target_opset=17)
    (tmp_path / "ref.onnx").write_bytes(model.SerializeToString())
    label_only = onnx.ModelProto()
    label_only.CopyFrom(model)
    keep = [o for o in label_only.graph.output if o.name == "label"]
    del label_only.graph.output[:]
    label_only.graph.output.extend(keep)
    (tmp_path / "lab.onnx").write_bytes(label_only.SerializeToString())
    group = np.where(x[:, 1] > 0, "p", "q")
    rows = [f"{a:.5f},{b:.5f},{t},{g}" for (a, b), t, g in zip(x, y, group, strict=True)]
    (tmp_path / "d.csv").write_text("x0,x1,y,g\n" + "\n".join(rows) + "\n")
    args = ["verify", str(tmp_path / "ref.onnx"), str(tmp_path / "lab.onnx"), "--data", str(tmp_path / "d.csv")]
    args += ["--label", "y", "--sensitive", "g", "--features", "x0,x1"]
    assert_one_line_error(run_cli(*args, "--threshold", "0.9"), "lab.onnx", "only a label", "0.9")
    plain = run_cli(*args)
    assert plain.returncode in (0, 1, 3), plain.stderr  # at the default cut both decide alike: a real verdict
