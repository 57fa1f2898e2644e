"""A certificate is re-gated from its own table and policy when a bundle is built: an edited
verdict, an edited check, deleted checks or a relabelled inconclusive report are refused in
one line; a model verified against itself is bundled as a drift baseline and says so.

The models are trained here (scikit-learn -> skl2onnx) on data with two sensitive columns; the
oracle for "what the report says" is the file verify wrote, re-read independently."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edgefair
from edgefair.bundling import build_bundle
from edgefair.errors import BundleError
from edgefair.verification.certificate import compared_with_itself, recheck
from tests.conftest import assert_one_line_error, run_cli
from tests.models import sklearn_onnx

pytest.importorskip("skl2onnx")


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from sklearn.linear_model import LogisticRegression

    tmp = tmp_path_factory.mktemp("recheck")
    rng = np.random.default_rng(7)
    n = 6000
    x = rng.normal(size=(n, 3)).astype(np.float32)
    region = np.array(["north", "south", "east"])[rng.integers(0, 3, n)]
    band = np.where(x[:, 0] > 0.3, "old", "young")
    y = (x @ np.array([1.0, -0.7, 0.4]) + rng.normal(scale=0.5, size=n) > 0).astype(int)
    ref = LogisticRegression().fit(x, y)
    cand = LogisticRegression().fit(x, y)
    cand.coef_ = cand.coef_ + np.array([[0.02, -0.01, 0.0]])  # a near-copy: passes the default policy
    paths = {}
    for name, model in (("ref", ref), ("cand", cand)):
        paths[name] = tmp / f"{name}.onnx"
        paths[name].write_bytes(sklearn_onnx(model, x))
    csv = tmp / "d.csv"
    rows = [f"{a:.6f},{b:.6f},{c:.6f},{t},{r},{g}" for (a, b, c), t, r, g in zip(x, y, region, band, strict=True)]
    csv.write_text("x0,x1,x2,y,region,band\n" + "\n".join(rows) + "\n")
    opts = {"label": "y", "sensitive": ["region", "band"], "feature_columns": ["x0", "x1", "x2"]}
    report = edgefair.verify(paths["ref"], paths["cand"], csv, **opts)
    cert = tmp / "cert.json"
    edgefair.report.write(edgefair.report.build(report), json=cert)
    small = tmp / "small.csv"  # 40 rows: every check inconclusive
    small.write_text("x0,x1,x2,y,region,band\n" + "\n".join(rows[:40]) + "\n")
    inconclusive = tmp / "inconclusive.json"
    edgefair.report.write(
        edgefair.report.build(edgefair.verify(paths["ref"], paths["cand"], small, **opts)), json=inconclusive
    )
    itself = tmp / "itself.json"
    edgefair.report.write(
        edgefair.report.build(edgefair.verify(paths["cand"], paths["cand"], csv, **opts)), json=itself
    )
    return {"paths": paths, "cert": cert, "inconclusive": inconclusive, "itself": itself, "verdict": report.verdict}


def _edited(src: Path, dst: Path, edit: Any) -> Path:
    doc = json.loads(src.read_text())
    edit(doc)
    dst.write_text(json.dumps(doc))
    return dst


def test_a_genuine_certificate_rechecks_to_its_own_verdict_and_bundles(made, tmp_path):  # type: ignore[no-untyped-def]
    doc = json.loads(made["cert"].read_text())
    assert made["verdict"] == "pass" and doc["verdict"] == "pass"
    assert recheck(doc, "cert.json") == "pass"
    bundle = build_bundle(made["paths"]["cand"], tmp_path / "b", certificate=made["cert"])
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["certificate"]["verdict"] == "pass"
    assert manifest["certificate"]["compared_with_itself"] is False


def _flip_verdict(d: dict) -> None:
    d["verdict"] = "fail" if d["verdict"] == "pass" else "pass"


def _flip_first_pass_check(d: dict) -> None:
    first = next(c for c in d["checks"] if c["verdict"] == "pass")
    first["verdict"] = "fail"


def _drop_checks(d: dict) -> None:
    d["checks"] = []
    d["summary"] = {**d["summary"], "checks": 0, "pass": 0, "fail": 0, "inconclusive": 0}


def _drop_one_check(d: dict) -> None:
    d["checks"] = d["checks"][1:]


def _shrink_an_estimate(d: dict) -> None:
    d["checks"][0]["estimate"] = d["checks"][0]["estimate"] / 2 - 0.001


@pytest.mark.parametrize(
    "edit",
    [_flip_verdict, _flip_first_pass_check, _drop_checks, _drop_one_check, _shrink_an_estimate],
    ids=["verdict", "one-check", "no-checks", "one-check-deleted", "estimate"],
)
def test_an_edited_certificate_is_refused_in_one_line_and_nothing_is_written(made, tmp_path, edit):  # type: ignore[no-untyped-def]
    forged = _edited(made["cert"], tmp_path / "forged.json", edit)
    with pytest.raises(BundleError, match="changed after verify wrote it"):
        build_bundle(made["paths"]["cand"], tmp_path / "b", certificate=forged)
    assert not (tmp_path / "b").exists()
    proc = run_cli(
        "bundle", "build", str(made["paths"]["cand"]), "-o", str(tmp_path / "c"), "--certificate", str(forged)
    )
    assert_one_line_error(proc, "forged.json", "changed after verify wrote it")
    assert not (tmp_path / "c").exists()


def test_an_inconclusive_report_relabelled_pass_is_refused(made, tmp_path):  # type: ignore[no-untyped-def]
    assert json.loads(made["inconclusive"].read_text())["verdict"] == "inconclusive"
    forged = _edited(made["inconclusive"], tmp_path / "inc.json", lambda d: d.update(verdict="pass", exit_code=0))
    with pytest.raises(BundleError, match="give 'inconclusive'"):
        build_bundle(made["paths"]["cand"], tmp_path / "b", certificate=forged)


def test_an_edited_policy_is_refused_too(made, tmp_path):  # type: ignore[no-untyped-def]
    # loosening a tolerance in the file changes what its table gives, so the stated checks no longer match
    def loosen(d: dict) -> None:
        d["policy"]["checks"][0]["tolerance"] = 0.5

    forged = _edited(made["cert"], tmp_path / "loose.json", loosen)
    with pytest.raises(BundleError, match="changed after verify wrote it"):
        build_bundle(made["paths"]["cand"], tmp_path / "b", certificate=forged)


def test_a_model_verified_against_itself_is_marked_everywhere(made, tmp_path):  # type: ignore[no-untyped-def]
    doc = json.loads(made["itself"].read_text())
    assert doc["reference"]["sha256"] == doc["candidate"]["sha256"] and compared_with_itself(doc)
    assert not compared_with_itself(json.loads(made["cert"].read_text()))
    built = run_cli(
        "bundle", "build", str(made["paths"]["cand"]), "-o", str(tmp_path / "b"), "--certificate", str(made["itself"])
    )
    assert built.returncode == 0, built.stderr
    assert "verifies the model against itself" in built.stdout
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["certificate"]["compared_with_itself"] is True
    check = run_cli("bundle", "check", str(tmp_path / "b"))
    assert check.returncode == 0 and "verified against itself" in check.stdout
    card = run_cli("card", str(tmp_path / "b"), "-o", str(tmp_path / "card.md"))
    assert card.returncode == 0, card.stderr
    assert "the same model" in (tmp_path / "card.md").read_text()
