"""edgefair serve REPO: Triton's repository layout, versioned routes and the repository
extension, driven by the real tritonclient; the oracle for every answer is numpy's
sigmoid of the trained weights."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from edgefair.errors import RepositoryError
from edgefair.serve.server import ServeConfig, Server
from tests import fieldkit as fk

TOKEN = "t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    rows = fk.make_rows(2000, 0)
    w, b = fk.train(rows)
    return rows, w, b


@pytest.fixture(scope="module")
def repo(tmp_path_factory, weights):
    rows, w, b = weights
    root = tmp_path_factory.mktemp("repo")
    models = tmp_path_factory.mktemp("models")
    ref = fk.save(fk.linear_model(w, b), models / "v1.onnx")
    nudged = fk.save(fk.linear_model(w * 1.001, b), models / "v2.onnx")
    shifted = fk.save(fk.linear_model(w + np.array([0, 0, 3.0]), b), models / "v3.onnx")
    for version, model in ((1, ref), (2, nudged), (3, shifted)):
        fk.certified_bundle(model, ref, rows, root / "lin" / str(version))
    fk.certified_bundle(ref, ref, rows, root / "other" / "1")
    return root, {1: (w, b), 2: (w * 1.001, b), 3: (w + np.array([0, 0, 3.0]), b)}


@pytest.fixture()
def served(repo):
    root, _ = repo
    srv = Server(root, ServeConfig(port=0, token=TOKEN)).start()
    yield srv, triton.InferenceServerClient(f"127.0.0.1:{srv.port}")
    srv.stop()


def _inputs(x, groups):
    t = triton.InferInput("x", list(x.shape), "FP32")
    t.set_data_from_numpy(x, binary_data=True)
    g = triton.InferInput("grp", [len(groups)], "BYTES")
    g.set_data_from_numpy(np.array(groups, dtype=object))
    return [t, g]


def _oracle(x, w, b):
    return 1 / (1 + np.exp(-(x.astype(np.float64) @ w + b)))


def test_index_lists_every_version_and_why_one_is_unavailable(served):
    _, client = served
    index = client.get_model_repository_index(headers=AUTH)
    rows = {(r["name"], r.get("version")): r for r in index}
    assert set(rows) == {("lin", "1"), ("lin", "2"), ("lin", "3"), ("other", "1")}
    assert [rows[("lin", v)]["state"] for v in "123"] == ["READY", "READY", "UNAVAILABLE"]
    assert "certificate verdict fail" in rows[("lin", "3")]["reason"]
    assert rows[("lin", "2")]["serving"] and not rows[("lin", "1")]["serving"]  # latest certified


def test_versioned_and_unversioned_infer_answer_with_the_right_model(served, repo, weights):
    _, client = served
    rows, _, _ = weights
    x = fk.features(rows, slice(0, 9))
    groups = ["a" if v == 0 else "b" for v in x[:, 2]]
    for version, expected_version in (("", "2"), ("1", "1"), ("2", "2")):
        result = client.infer("lin", _inputs(x, groups), model_version=version)
        assert result.get_response()["model_version"] == expected_version
        w, b = repo[1][int(expected_version)]
        assert np.allclose(result.as_numpy("score").reshape(-1), _oracle(x, w, b), atol=1e-5)
    with pytest.raises(InferenceServerException, match="certificate verdict fail"):
        client.infer("lin", _inputs(x, groups), model_version="3")  # never served: its certificate failed
    meta = client.get_model_metadata("lin")
    assert meta["versions"] == ["1", "2"]
    assert client.get_model_metadata("lin", model_version="1")["versions"] == ["1"]


def test_unload_and_load_with_tritonclient(served, weights):
    _, client = served
    rows, w, b = weights
    x = fk.features(rows, slice(0, 3))
    client.unload_model("other", headers=AUTH)
    assert {r["name"]: r["state"] for r in client.get_model_repository_index(headers=AUTH)}["other"] == "UNAVAILABLE"
    with pytest.raises(InferenceServerException, match="unknown model 'other'"):
        client.infer("other", _inputs(x, ["a"] * 3))
    client.load_model("other", headers=AUTH)
    assert client.is_model_ready("other")
    out = client.infer("other", _inputs(x, ["a"] * 3)).as_numpy("score").reshape(-1)
    assert np.allclose(out, _oracle(x, w, b), atol=1e-5)


def test_repository_calls_need_the_token_and_unknown_models_are_404(served):
    _, client = served
    with pytest.raises(InferenceServerException) as info:
        client.get_model_repository_index()
    assert info.value.status() == "401"
    with pytest.raises(InferenceServerException) as info:
        client.load_model("nope", headers=AUTH)
    assert info.value.status() == "404" and "unknown model 'nope'" in info.value.message()
    with pytest.raises(InferenceServerException) as info:
        client.load_model("lin", headers=AUTH, config='{"backend": "onnxruntime"}')
    assert info.value.status() == "400" and "load parameter 'config' is not supported" in info.value.message()
    assert client.is_model_ready("lin")  # the running versions are untouched


def test_a_model_folder_is_not_a_repository(repo):
    with pytest.raises(RepositoryError, match="is a bundle, not a model folder"):
        Server(repo[0] / "lin", ServeConfig(port=0))


def test_a_broken_reload_leaves_the_running_versions_answering(repo, tmp_path, weights):
    root = tmp_path / "repo"
    shutil.copytree(repo[0], root)
    rows, w, b = weights
    srv = Server(root, ServeConfig(port=0, token=TOKEN)).start()
    try:
        client = triton.InferenceServerClient(f"127.0.0.1:{srv.port}")
        (root / "other" / "2").mkdir()  # a version folder with no bundle
        with pytest.raises(InferenceServerException) as info:
            client.load_model("other", headers=AUTH)
        assert info.value.status() == "400" and "holds no bundle" in info.value.message()
        x = fk.features(rows, slice(0, 4))
        out = client.infer("other", _inputs(x, ["b"] * 4)).as_numpy("score").reshape(-1)
        assert np.allclose(out, _oracle(x, w, b), atol=1e-5)
    finally:
        srv.stop()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda r: (r / "lin" / "4").mkdir(), "lin/4: holds no bundle"),
        (lambda r: shutil.copytree(r / "lin" / "2", r / "lin" / "02"), "both claim version 2"),
        (lambda r: (r / "lin" / "latest").mkdir(), "must be a positive integer"),
        (lambda r: (r / "lin" / "edgefair.toml").write_text("defualt = 2\n"), "unknown key 'defualt'"),
        (lambda r: (r / "lin" / "edgefair.toml").write_text("[field]\ncandidate = 9\n"), "candidate version 9"),
    ],
)
def test_bad_repositories_are_one_line(repo, tmp_path, make, message):
    root = tmp_path / "repo"
    shutil.copytree(repo[0], root)
    make(root)
    with pytest.raises(RepositoryError, match=message.replace("(", r"\(")):
        Server(root, ServeConfig(port=0))


def test_serve_cli_exits_2_with_one_line_on_a_bad_repository(repo, tmp_path):
    root = tmp_path / "repo"
    shutil.copytree(repo[0], root)
    (root / "lin" / "7").mkdir()
    code, out, err = fk.cli("serve", str(root), "--port", "0")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and "lin/7: holds no bundle" in err
