"""Bundles never delete what edgefair did not create, and loading refuses every malformed,
oversized or extra file before it costs memory (issue: hardening)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from edgefair.bundling import build_bundle
from edgefair.errors import BundleError, EdgefairError
from edgefair.runtime.bundle import load_bundle
from tests.conftest import ROOT, assert_one_line_error, run_cli


def tiny_model(path: Path) -> Path:
    """A two-feature logistic model built in place: score = sigmoid(x @ w)."""
    w = numpy_helper.from_array(np.array([[0.5], [-0.25]], np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["z"]), helper.make_node("Sigmoid", ["z"], ["score"])],
        "tiny",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor_value_info("score", onnx.TensorProto.FLOAT, ["N", 1])],
        [w],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.fixture()
def model(tmp_path):
    return tiny_model(tmp_path / "m.onnx")


@pytest.fixture()
def bundle(tmp_path, model):
    return build_bundle(model, tmp_path / "bundle", sensitive=["g"])


def rewrite(bundle: Path, name: str, blob: bytes, **manifest_changes: object) -> None:
    """Change a file and re-hash the manifest as an attacker with write access would."""
    (bundle / name).write_bytes(blob)
    manifest = json.loads((bundle / "manifest.json").read_text())
    if name in manifest["files"]:
        manifest["files"][name] = {"sha256": hashlib.sha256(blob).hexdigest(), "size_bytes": len(blob)}
    manifest.update(manifest_changes)
    raw = (json.dumps(manifest) + "\n").encode()
    (bundle / "manifest.json").write_bytes(raw)
    (bundle / "manifest.sha256").write_bytes((hashlib.sha256(raw).hexdigest() + "\n").encode())


def test_bundle_refuses_a_folder_it_did_not_create(tmp_path, model):
    important = tmp_path / "important"
    important.mkdir()
    (important / "notes.txt").write_text("keep me")
    proc = run_cli("bundle", "build", str(model), "-o", str(important), "--sensitive", "g")
    assert_one_line_error(proc, str(important), "notes.txt", "not an edgefair bundle")
    assert (important / "notes.txt").read_text() == "keep me"
    proc = run_cli("bundle", "build", str(model), "-o", ".", "--sensitive", "g", cwd=tmp_path)
    assert_one_line_error(proc, "not an edgefair bundle")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["important", "m.onnx"]


def test_rebuilding_replaces_a_bundle_whole_and_leaves_nothing_behind(tmp_path, model, bundle):
    first = (bundle / "manifest.json").read_bytes()
    build_bundle(model, bundle, sensitive=["g"], threshold=0.3)
    assert json.loads((bundle / "manifest.json").read_text())["threshold"] == 0.3
    assert (bundle / "manifest.json").read_bytes() != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "m.onnx"]  # no temp or .old folders
    load_bundle(bundle)
    (bundle / "extra.txt").write_text("mine")  # a bundle with a foreign file is no longer ours to delete
    with pytest.raises(BundleError, match=r"extra\.txt"):
        build_bundle(model, bundle, sensitive=["g"])
    assert (bundle / "extra.txt").exists()


def test_bundles_are_readable_by_others(bundle):
    assert bundle.stat().st_mode & 0o777 == 0o755
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in bundle.iterdir())


@pytest.mark.parametrize("kind", ["folder", "fifo", "symlink"])
def test_directory_bundles_hold_plain_files_only(tmp_path, bundle, kind):
    target = bundle / "odd"
    if kind == "folder":
        target.mkdir()
    elif kind == "fifo":
        os.mkfifo(target)
    else:
        secret = tmp_path / "secret.txt"
        secret.write_text("token")
        target.symlink_to(secret)
    with pytest.raises(BundleError, match="odd"):
        load_bundle(bundle)


def zip_of(bundle: Path, out: Path, extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for p in sorted(bundle.iterdir()):
            z.write(p, f"bundle/{p.name}")
        for name, blob in (extra or {}).items():
            z.writestr(name, blob)
    return out


def test_a_zip_bundle_loads_and_a_duplicate_name_is_refused(tmp_path, bundle):
    assert load_bundle(zip_of(bundle, tmp_path / "ok.zip")).manifest["kind"] == "edgefair.bundle"
    dup = zip_of(bundle, tmp_path / "dup.zip", {"other/model.onnx": b"evil"})
    with pytest.raises(BundleError, match=r"two files named 'model\.onnx'"):
        load_bundle(dup)


def test_corrupt_zips_are_one_line_errors(tmp_path, bundle):
    good = zip_of(bundle, tmp_path / "ok.zip").read_bytes()
    for i, cut in enumerate((len(good) // 2, len(good) - 30, 100)):
        path = tmp_path / f"bad{i}.zip"
        path.write_bytes(good[:cut])
        assert_one_line_error(run_cli("bundle", "check", str(path)), str(path))
    flipped = bytearray(good)
    flipped[200:260] = bytes(60)  # inside compressed data: zlib.error or a CRC mismatch
    path = tmp_path / "flipped.zip"
    path.write_bytes(bytes(flipped))
    assert_one_line_error(run_cli("bundle", "check", str(path)), str(path))


def test_a_zip_bomb_is_refused_before_it_is_decompressed(tmp_path, bundle):
    """The listed model replaced by 1 GB of zeros (~1 MB compressed): the manifest's size
    says what to expect, so nothing is decompressed."""
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        for p in sorted(bundle.iterdir()):
            if p.name != "model.onnx":
                z.write(p, p.name)
        with z.open("model.onnx", "w", force_zip64=True) as f:
            block = bytes(1 << 20)
            for _ in range(1024):
                f.write(block)
    assert bomb.stat().st_size < 5 << 20
    code = (
        "import sys; from edgefair.runtime.bundle import load_bundle\n"
        "try:\n    load_bundle(sys.argv[1])\nexcept Exception as e:\n    print(type(e).__name__, e)\n"
        # VmHWM starts afresh at exec; ru_maxrss would carry the forking parent's peak
        "print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(bomb)], capture_output=True, text=True, cwd=ROOT, timeout=60)
    first, peak_kb = out.stdout.strip().splitlines()
    assert first.startswith("BundleError") and "model.onnx" in first and "manifest says" in first, out.stdout
    assert int(peak_kb) < 300_000, f"peak RSS {peak_kb} kB"


def test_a_lying_zip_header_is_caught(tmp_path, bundle):
    """The central directory says the listed size; the stream holds more."""
    path = zip_of(bundle, tmp_path / "lie.zip")
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("bundle/model.onnx")
    real = info.file_size
    # rewrite the uncompressed size in the central directory and local header to a smaller one
    needle = real.to_bytes(4, "little")
    assert data.count(needle) >= 2
    data = data.replace(needle, (real - 8).to_bytes(4, "little"))
    path.write_bytes(bytes(data))
    with pytest.raises(EdgefairError):
        load_bundle(path)


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"files": ["model.onnx"]}, "'files'"),
        ({"files": {"model.onnx": {"sha256": "x"}}}, "files.model.onnx"),
        ({"model": "gone.onnx"}, "'model'"),
        ({"sensitive": None}, "'sensitive'"),
        ({"threshold": 7}, "'threshold'"),
        ({"threshold": "0.5"}, "'threshold'"),
        ({"certificate": []}, "'certificate'"),
        ({"kind": "other"}, "not an edgefair bundle manifest"),
    ],
)
def test_malformed_manifests_are_one_line_errors(bundle, change, fragment):
    rewrite(bundle, "model.onnx", (bundle / "model.onnx").read_bytes(), **change)
    assert_one_line_error(run_cli("bundle", "check", str(bundle)), fragment)


def test_a_non_json_certificate_is_refused(bundle):
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"]["certificate.json"] = {"sha256": hashlib.sha256(b"{not json").hexdigest(), "size_bytes": 9}
    rewrite(bundle, "certificate.json", b"{not json", files=manifest["files"])
    assert_one_line_error(run_cli("bundle", "check", str(bundle)), "certificate.json", "not JSON")


def test_external_data_is_refused_at_load_even_with_matching_hashes(tmp_path, bundle):
    model = onnx.load(bundle / "model.onnx")
    tensor = model.graph.initializer[0]
    tensor.data_location = onnx.TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "../token.txt"
    tensor.ClearField("raw_data")
    rewrite(bundle, "model.onnx", model.SerializeToString())
    assert_one_line_error(run_cli("bundle", "check", str(bundle)), "external data")


@pytest.mark.parametrize("threshold", ["nan", "7", "-0.1", "inf"])
def test_bundle_threshold_must_be_a_probability(tmp_path, model, threshold):
    out = tmp_path / "b"
    proc = run_cli("bundle", "build", str(model), "-o", str(out), "--sensitive", "g", "--threshold", threshold)
    assert_one_line_error(proc, "threshold")
    assert not out.exists()


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        ([], "not an edgefair verify report"),
        ({"kind": "edgefair.verify_report"}, "candidate.sha256"),
        ({"kind": "edgefair.verify_report", "candidate": {"sha256": "ab"}, "verdict": "pass"}, "table.groups"),
    ],
)
def test_malformed_certificates_are_one_line_errors(tmp_path, model, doc, fragment):
    cert = tmp_path / "cert.json"
    cert.write_text(json.dumps(doc))
    proc = run_cli("bundle", "build", str(model), "-o", str(tmp_path / "b"), "--certificate", str(cert))
    assert_one_line_error(proc, fragment)
    assert not (tmp_path / "b").exists()
    shutil.rmtree(tmp_path / "b", ignore_errors=True)
