"""Attacks on what leaves the device: every surface follows one rule (suppression, noise
charged to the store's budget, the token where counts are exact)."""

from __future__ import annotations

import http.client
import json

import numpy as np
import onnx
import pytest
from onnx import helper

from edgefair.bundling import build_bundle
from edgefair.runtime.session import FairSession
from edgefair.serve.app import ServeConfig
from edgefair.serve.metrics import fairness_summary, withheld_groups
from edgefair.serve.server import Server
from tests.conftest import assert_one_line_error, run_cli

MIN_CELL = 11


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """score = Sigmoid(x): x >= 0 decides 1, so a test chooses every decision."""
    graph = helper.make_graph(
        [helper.make_node("Sigmoid", ["x"], ["score"])],
        "sigmoid",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 1])],
        [helper.make_tensor_value_info("score", onnx.TensorProto.FLOAT, ["N", 1])],
    )
    d = tmp_path_factory.mktemp("priv")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), d / "m.onnx")
    return build_bundle(d / "m.onnx", d / "b", sensitive=["g"])


def count(session, group: str, positives: int, negatives: int) -> None:
    x = np.array([1.0] * positives + [-1.0] * negatives, np.float32).reshape(-1, 1)
    session.run({"x": x}, {"g": [group] * len(x)})


def get(port: int, path: str, token: str | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
    r = conn.getresponse()
    return r.status, r.read()


def test_differencing_the_total_cannot_recover_a_small_group(bundle):
    """Total rows minus the shown groups would give the one small group away: a complement hides."""
    with FairSession(bundle) as s:
        count(s, "big", 30, 30)
        count(s, "mid", 20, 20)
        count(s, "tiny", 1, 2)
        doc = fairness_summary(s, MIN_CELL)
    groups = doc["by_attribute"]["g"]
    assert groups["tiny"]["suppressed"] and groups["mid"]["suppressed"], groups  # mid is tiny's complement
    shown = sum(v["count"] for v in groups.values() if not v.get("suppressed"))
    assert doc["rows"] - shown == 43  # the withheld rows are two groups' worth: neither is recoverable


def test_rate_times_rows_never_reveals_a_small_cell(bundle):
    with FairSession(bundle) as s:
        count(s, "a", 3, 40)  # a selection-rate numerator of 3
        count(s, "b", 25, 25)
        doc = fairness_summary(s, MIN_CELL)
    a = doc["by_attribute"]["g"]["a"]
    assert a["selection_rate"] is None  # 3/43 with rows=43 would be the cell of 3
    b = doc["by_attribute"]["g"]["b"]["selection_rate"]
    assert b["rows"] == 50 and b["value"] == 0.5


def test_withheld_groups_is_exactly_the_small_ones_and_one_complement():
    assert withheld_groups({"a": 5, "b": 100, "c": 20}, MIN_CELL) == {"a", "c"}
    assert withheld_groups({"a": 5, "b": 6, "c": 20}, MIN_CELL) == {"a", "b"}
    assert withheld_groups({"a": 50, "b": 60}, MIN_CELL) == set()
    assert withheld_groups({"a": 5}, MIN_CELL) == {"a"}


def test_injection_needs_the_token_on_every_surface(bundle, tmp_path):
    """An attacker who can send /infer rows could push a small cell over min_cell and subtract
    what it sent; so on a server with a token, no surface shows counted data without it."""
    srv = Server(bundle, ServeConfig(port=0, token="t0ken", store=str(tmp_path / "c.db"))).start()
    try:
        for path in ("/metrics", "/v2/models/b/fairness", "/v2/models/b/counters", "/v2/models/b/counters?raw=1"):
            assert get(srv.port, path)[0] == 401, path
            assert get(srv.port, path, "wrong")[0] == 401, path
            assert get(srv.port, path, "t0ken")[0] == 200, path
    finally:
        srv.stop()


def test_metrics_never_expose_a_series_under_min_cell(bundle, tmp_path):
    srv = Server(bundle, ServeConfig(port=0)).start()
    try:
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [14, 1], "data": [1.0] * 3 + [-1.0] * 11}]}
        body["inputs"].append({"name": "g", "datatype": "BYTES", "shape": [14], "data": ["a"] * 14})
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
        conn.request("POST", "/v2/models/b/infer", json.dumps(body))
        assert conn.getresponse().status == 200
        text = get(srv.port, "/metrics")[1].decode()
        series = [line for line in text.splitlines() if line.startswith("edgefair_predictions_total{")]
        # decision 1 has 3 rows: withheld; decision 0's 11 are withheld too, as its complement
        # (the 14 rows /fairness publishes less 11 would give the 3 back)
        assert series == [], series
    finally:
        srv.stop()


def test_averaging_noisy_exports_is_stopped_by_the_stored_budget(bundle, tmp_path):
    store = tmp_path / "s.db"
    with FairSession(bundle, store=store) as s:
        count(s, "a", 40, 40)
    out = [tmp_path / f"e{i}.json" for i in range(4)]
    first = run_cli("counters", "export", str(store), "-o", str(out[0]), "--epsilon", "1", "--budget", "2")
    assert first.returncode == 0, first.stderr
    assert run_cli("counters", "export", str(store), "-o", str(out[1]), "--epsilon", "1").returncode == 0
    third = run_cli("counters", "export", str(store), "-o", str(out[2]), "--epsilon", "1")  # no --budget: still kept
    assert_one_line_error(third, "budget")
    raised = run_cli("counters", "export", str(store), "-o", str(out[3]), "--epsilon", "1", "--budget", "100")
    assert raised.returncode == 2 and not out[3].exists()  # the budget can only be lowered
    assert not out[2].exists()
    exact = run_cli("counters", "export", str(store), "-o", str(tmp_path / "x.json"), "--min-cell", "0")
    assert_one_line_error(exact, "min")  # exact counts only with --raw
