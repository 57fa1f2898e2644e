"""Messages that name what was wrong: the file compare could not open, a drift with nothing to compare."""

from __future__ import annotations

import numpy as np

from edgefair.bundling import build_bundle
from edgefair.core import tables
from tests.conftest import MODELS, assert_one_line_error, run_cli


def test_compare_names_the_model_it_cannot_load(tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x08\x07" + bytes(64))  # a protobuf that is no graph onnxruntime can load
    ref = str(MODELS / "adult_mlp.onnx")
    proc = run_cli("compare", ref, ref, str(broken), "--data", "adult", "--no-latency")
    assert_one_line_error(proc, str(broken))


def test_drift_over_other_attributes_is_an_error_not_inconclusive(tmp_path):
    cert = tmp_path / "cert.json"
    ref = str(MODELS / "adult_sklearn.onnx")
    made = run_cli("verify", ref, ref, "--data", "adult", "--sensitive", "sex", "--json", str(cert))
    assert made.returncode == 0, made.stderr
    bundle = build_bundle(MODELS / "adult_sklearn.onnx", tmp_path / "b", certificate=cert)
    field = tables.from_arrays({"device": np.array(["x"] * 50)}, np.ones(50, np.int64))
    (tmp_path / "field.json").write_text(field.to_json())
    proc = run_cli("counters", "drift", str(tmp_path / "field.json"), "--bundle", str(bundle))
    assert_one_line_error(proc, "['device']", "['sex']", "nothing to compare")


def test_a_garbage_pt2_is_one_line(tmp_path):
    import pytest

    pytest.importorskip("torch")
    garbage = tmp_path / "garbage.pt2"
    garbage.write_bytes(bytes(range(256)) * 12)
    assert_one_line_error(run_cli("export", str(garbage), "-o", str(tmp_path / "g.onnx")), "not a torch.export program")
    assert not (tmp_path / "g.onnx").exists()


def test_no_report_may_overwrite_a_model(tmp_path):
    import shutil

    cand = tmp_path / "cand.onnx"
    shutil.copy(MODELS / "adult_mlp.onnx", cand)
    before = cand.read_bytes()
    ref = str(MODELS / "adult_mlp.onnx")
    for command in (["verify", ref, str(cand)], ["compare", ref, str(cand), "--no-latency"]):
        assert_one_line_error(run_cli(*command, "--json", str(cand)), "is one of the inputs")
        assert_one_line_error(
            run_cli(*command, "--html", str(tmp_path / "x" / ".." / "cand.onnx")), "is one of the inputs"
        )
    assert cand.read_bytes() == before
