"""Messages that name what was wrong: the file compare could not open, a drift with nothing to compare."""

from __future__ import annotations

import numpy as np

from edgefair.core import tables
from edgefair.runtime.bundling import build_bundle
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
