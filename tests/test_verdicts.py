"""No reassurance without evidence: no check passed means INCONCLUSIVE (exit 3) everywhere,
and a bundle whose certificate did not pass is refused unless explicitly allowed."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import edgefair
import edgefair.report
from edgefair.bundling import build_bundle
from edgefair.errors import BundleError
from edgefair.runtime.bundle import load_bundle
from edgefair.runtime.session import FairSession
from tests.conftest import assert_one_line_error, run_cli


def logistic(path, weight: float, bias: float):
    w = numpy_helper.from_array(np.array([[weight]], np.float32), "w")
    b = numpy_helper.from_array(np.array([bias], np.float32), "b")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["m"]),
            helper.make_node("Add", ["m", "b"], ["z"]),
            helper.make_node("Sigmoid", ["z"], ["score"]),
        ],
        "logistic",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 1])],
        [helper.make_tensor_value_info("score", onnx.TensorProto.FLOAT, ["N", 1])],
        [w, b],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """40 rows, two groups: the candidate moves the threshold, so a few decisions flip."""
    d = tmp_path_factory.mktemp("small")
    rng = np.random.default_rng(3)
    x = rng.normal(size=40)
    y = (x + rng.normal(scale=0.8, size=40) > 0).astype(int)
    g = np.where(np.arange(40) % 2, "a", "b")
    csv = d / "small.csv"
    csv.write_text("x,y,g\n" + "".join(f"{a:.5f},{b},{c}\n" for a, b, c in zip(x, y, g, strict=True)))
    return {"csv": csv, "ref": logistic(d / "ref.onnx", 2.0, 0.0), "cand": logistic(d / "cand.onnx", 2.0, 0.35)}


def test_all_inconclusive_is_never_a_pass(small, tmp_path):
    report = edgefair.verify(small["ref"], small["cand"], small["csv"], label="y", sensitive=["g"])
    verdicts = {r.verdict for r in report.gate.results}
    assert "pass" not in verdicts and "fail" not in verdicts, verdicts  # the premise: no evidence either way
    assert report.verdict == "inconclusive" and report.exit_code == 3 and not report.passed
    out = {k: tmp_path / f"r.{k}" for k in ("json", "md", "html")}
    proc = run_cli(
        "verify",
        str(small["ref"]),
        str(small["cand"]),
        "--data",
        str(small["csv"]),
        "--label",
        "y",
        "--sensitive",
        "g",
        "--json",
        str(out["json"]),
        "--markdown",
        str(out["md"]),
        "--html",
        str(out["html"]),
    )
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout.startswith("INCONCLUSIVE:") and "rows would settle it" in proc.stdout
    doc = json.loads(out["json"].read_text())
    assert doc["verdict"] == "inconclusive" and doc["exit_code"] == 3 and doc["summary"]["unsettled"]
    assert "PASS:" not in proc.stdout
    markdown, html = out["md"].read_text(), out["html"].read_text()
    assert markdown.startswith("## edgefair verify: ❔ INCONCLUSIVE") and "✅" not in markdown
    assert 'class="badge pass"' not in html and 'class="badge inconclusive"' in html


def test_inconclusive_fails_when_the_policy_says_so(small, tmp_path):
    policy = tmp_path / "p.toml"
    policy.write_text("inconclusive_fails = true\n")
    report = edgefair.verify(small["ref"], small["cand"], small["csv"], policy, label="y", sensitive=["g"])
    assert report.verdict == "fail" and report.exit_code == 1


def test_compare_with_an_inconclusive_candidate_exits_3_and_names_why(small):
    proc = run_cli(
        "compare",
        str(small["ref"]),
        str(small["cand"]),
        "--data",
        str(small["csv"]),
        "--label",
        "y",
        "--sensitive",
        "g",
        "--no-latency",
    )
    assert proc.returncode == 3, proc.stderr
    assert "cand.onnx: INCONCLUSIVE" in proc.stdout and "rows would settle it" in proc.stdout


@pytest.fixture(scope="module")
def failing_certificate(small, tmp_path_factory):
    d = tmp_path_factory.mktemp("cert")
    rng = np.random.default_rng(0)
    x = rng.normal(size=3000)
    csv = d / "big.csv"
    csv.write_text("x,y,g\n" + "".join(f"{v:.5f},{int(v > 0)},{'ab'[i % 2]}\n" for i, v in enumerate(x)))
    bad = logistic(d / "bad.onnx", -2.0, 0.0)  # decisions reversed: fails every accuracy check
    report = edgefair.verify(small["ref"], bad, csv, label="y", sensitive=["g"])
    assert report.verdict == "fail"
    cert = d / "fail.json"
    edgefair.report.write(edgefair.report.build(report), json=cert)
    return bad, cert


def test_a_failing_certificate_cannot_be_bundled_checked_or_served_without_the_flag(tmp_path, failing_certificate):
    model, cert = failing_certificate
    proc = run_cli("bundle", "build", str(model), "-o", str(tmp_path / "b"), "--certificate", str(cert))
    assert_one_line_error(proc, "verdict is fail", "--allow-failed-certificate")
    assert not (tmp_path / "b").exists()
    proc = run_cli(
        "bundle",
        "build",
        str(model),
        "-o",
        str(tmp_path / "b"),
        "--certificate",
        str(cert),
        "--allow-failed-certificate",
    )
    assert proc.returncode == 0, proc.stderr
    assert load_bundle(tmp_path / "b").manifest["certificate"]["allowed_failed"] is True
    check = run_cli("bundle", "check", str(tmp_path / "b"))
    assert check.returncode == 1 and check.stdout.startswith("NOT CERTIFIED") and "verdict fail" in check.stdout
    with pytest.raises(BundleError, match="verdict is fail"):
        FairSession(tmp_path / "b")
    with FairSession(tmp_path / "b", allow_failed_certificate=True) as session:
        session.run({"x": np.zeros((2, 1), np.float32)}, {"g": ["a", "b"]})
    served = run_cli("serve", str(tmp_path / "b"), "--port", "0", timeout=60)
    assert_one_line_error(served, "verdict is fail")


def test_a_passing_certificate_bundles_and_checks_ok(tmp_path, small):
    model = small["ref"]
    rng = np.random.default_rng(1)
    x = rng.normal(size=4000)
    csv = tmp_path / "d.csv"
    csv.write_text("x,y,g\n" + "".join(f"{v:.5f},{int(v > 0)},{'ab'[i % 2]}\n" for i, v in enumerate(x)))
    result = edgefair.verify(model, model, csv, label="y", sensitive=["g"])
    assert result.verdict == "pass"
    cert = tmp_path / "ok.json"
    edgefair.report.write(edgefair.report.build(result), json=cert)
    bundle = build_bundle(model, tmp_path / "b", certificate=cert)
    check = run_cli("bundle", "check", str(bundle))
    assert check.returncode == 0 and check.stdout.startswith("ok:") and "verdict pass" in check.stdout
