"""The server's promises, each checked against an oracle of its own.

Counts come from what the test itself sent (decisions worked out from the inputs, not
read back from the server), intervals from statsmodels, model outputs from a plain
onnxruntime session on the bundled model, and the protocol from the real tritonclient
or raw sockets where the exact bytes matter.
"""

from __future__ import annotations

import http.client
import json
import re
import signal
import socket
import subprocess
import sys
from importlib.metadata import version as dist_version

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tritonclient.http as httpclient
from statsmodels.stats.proportion import proportion_confint

import edgefair
from edgefair.bundling import build_bundle
from edgefair.data import ADULT_FEATURES
from edgefair.files import write_text
from edgefair.serve.server import ServeConfig, Server
from tests.conftest import MODELS, ROOT
from tests.models import mlp, no_weights

TOKEN = "t0ken-for-tests"
GOOD = {"Authorization": f"Bearer {TOKEN}"}
MIN_CELL = 11  # the documented default of ServeConfig.min_cell


# -- fixtures -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    out = tmp_path_factory.mktemp("promises")
    onnx.save(no_weights(), out / "tiny.onnx")  # score = Sigmoid(x): x >= 0 is decision 1
    onnx.save(mlp(inputs=4, seed=3), out / "mlp4.onnx")
    report = edgefair.verify(MODELS / "adult_sklearn.onnx", MODELS / "adult_sklearn.onnx", "adult")
    cert = write_text(out / "cert.json", edgefair.report.build(report).to_json())
    return {
        "tiny": build_bundle(out / "tiny.onnx", out / "tiny", sensitive=["grp", "sex"]),
        "mlp4": build_bundle(out / "mlp4.onnx", out / "mlp4", sensitive=["grp", "sex"]),
        "adult": build_bundle(MODELS / "adult_sklearn.onnx", out / "adult", certificate=cert),
    }


@pytest.fixture()
def start(bundles):
    """``start(bundle_name, **config)`` -> a running Server; every one is stopped afterwards."""
    running = []

    def _start(name, **config):
        srv = Server(bundles[name], ServeConfig(port=0, **config)).start()
        running.append(srv)
        return srv

    yield _start
    for srv in running:
        srv.stop()


# -- helpers --------------------------------------------------------------------------------
def request(port, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def get_json(port, path, headers=None):
    status, body = request(port, "GET", path, headers=headers)
    return status, json.loads(body)


def infer_doc(x, grp=None, sex=None, ids=None, outputs=None, x_datatype="FP32"):
    """A JSON infer request for the tiny bundle: x is a list of floats, one per row."""
    n = len(x)
    inputs = [{"name": "x", "shape": [n, 1], "datatype": x_datatype, "data": list(x)}]
    for name, values in (("grp", grp), ("sex", sex)):
        if values is not None:
            inputs.append({"name": name, "shape": [n], "datatype": "BYTES", "data": list(values)})
    doc = {"inputs": inputs}
    if ids is not None:
        doc["parameters"] = {"edgefair_ids": list(ids)}
    if outputs is not None:
        doc["outputs"] = [{"name": o} for o in outputs]
    return doc


def post_infer(port, doc, model="tiny"):
    return request(port, "POST", f"/v2/models/{model}/infer", json.dumps(doc).encode())


def cell(label, decision):
    """Flat index of (label, reference decision, candidate decision) for one model; label 2 is unknown."""
    return label * 4 + decision * 2 + decision


def raw_table(port, model="tiny"):
    status, doc = get_json(port, f"/v2/models/{model}/counters?raw=1", GOOD)
    assert status == 200, doc
    return {tuple(g["key"]): g["counts"] for g in doc["groups"]}


class Traffic:
    """Rows the test sends to the tiny bundle, and what the counters must then say."""

    def __init__(self):
        self.rows = []  # dicts: id, grp, sex, decision, label (None until an outcome arrives)

    def add(self, grp, sex, decision, label, count):
        for _ in range(count):
            i = len(self.rows)
            self.rows.append({"id": f"r{i}", "grp": grp, "sex": sex, "decision": decision, "label": label})

    def send(self, port, batch=40):
        for s in range(0, len(self.rows), batch):
            part = self.rows[s : s + batch]
            doc = infer_doc(
                [2.0 if r["decision"] else -2.0 for r in part],
                [r["grp"] for r in part],
                [r["sex"] for r in part],
                [r["id"] for r in part],
            )
            status, body = post_infer(port, doc)
            assert status == 200, body
        labelled = [r for r in self.rows if r["label"] is not None]
        if labelled:
            body = json.dumps({"ids": [r["id"] for r in labelled], "labels": [r["label"] for r in labelled]})
            status, reply = request(port, "POST", "/v2/models/tiny/outcomes", body.encode(), GOOD)
            assert status == 200, reply
            assert json.loads(reply)["joined"] == len(labelled)

    def cells(self):
        out = {}
        for r in self.rows:
            key = (r["grp"], r["sex"])
            out.setdefault(key, [0] * 12)[cell(2 if r["label"] is None else r["label"], r["decision"])] += 1
        return out

    def by(self, attr):
        groups = {}
        for r in self.rows:
            groups.setdefault(r[attr], []).append(r)
        return groups


def expected_metric(rows, metric):
    """(numerator, denominator) counted from the rows themselves."""
    labelled = [r for r in rows if r["label"] is not None]
    if metric == "selection_rate":
        return sum(r["decision"] for r in rows), len(rows)
    if metric == "true_positive_rate":
        pos = [r for r in labelled if r["label"] == 1]
        return sum(r["decision"] for r in pos), len(pos)
    if metric == "false_positive_rate":
        neg = [r for r in labelled if r["label"] == 0]
        return sum(r["decision"] for r in neg), len(neg)
    if metric == "accuracy":
        return sum(r["decision"] == r["label"] for r in labelled), len(labelled)
    raise AssertionError(metric)


# -- 1: /fairness withholds metrics whose denominator is under min_cell ----------------------
def fairness_traffic():
    t = Traffic()
    # group a: 30 rows, only 10 labelled positives (TPR withheld), 15 negatives (FPR shown)
    t.add("a", "F", 1, 1, 7)
    t.add("a", "M", 0, 1, 3)
    t.add("a", "F", 1, 0, 4)
    t.add("a", "M", 0, 0, 11)
    t.add("a", "F", 1, None, 2)
    t.add("a", "M", 0, None, 3)
    # group b: 20 rows, exactly 11 labelled positives (TPR shown), 9 negatives (FPR withheld)
    t.add("b", "F", 1, 1, 6)
    t.add("b", "M", 0, 1, 5)
    t.add("b", "M", 1, 0, 2)
    t.add("b", "F", 0, 0, 7)
    # group c: 5 rows, suppressed altogether
    t.add("c", "F", 1, 1, 5)
    return t


def test_fairness_withholds_small_denominators_and_matches_counts(start):
    srv = start("tiny", token=TOKEN)
    traffic = fairness_traffic()
    traffic.send(srv.port)
    status, doc = get_json(srv.port, "/v2/models/tiny/fairness", GOOD)
    assert status == 200
    assert doc["rows"] == len(traffic.rows) == 55
    assert doc["labelled_rows"] == sum(r["label"] is not None for r in traffic.rows)
    assert doc["min_cell"] == MIN_CELL

    checked, withheld_for_complement = 0, 0
    for attr in ("grp", "sex"):
        got = doc["by_attribute"][attr]
        groups = traffic.by(attr)
        assert set(got) == set(groups)
        small = {v for v, rows in groups.items() if len(rows) < MIN_CELL}
        if len(small) == 1 and len(groups) > 1:  # complementary suppression: else total - shown = the small one
            small.add(min((len(rows), v) for v, rows in groups.items() if v not in small)[1])
        for value, rows in groups.items():
            if value in small:
                assert got[value]["suppressed"] is True and "count" not in got[value], (attr, value)
                continue
            assert got[value]["count"] == len(rows)
            for metric in ("selection_rate", "true_positive_rate", "false_positive_rate", "accuracy"):
                num, den = expected_metric(rows, metric)
                shown = got[value][metric]
                if min(num, den - num) < MIN_CELL:  # rate x rows would give a small cell away
                    assert shown is None, (attr, value, metric)
                    withheld_for_complement += den >= MIN_CELL
                    continue
                low, high = proportion_confint(num, den, alpha=0.05, method="wilson")
                assert shown["rows"] == den
                assert shown["value"] == pytest.approx(num / den, abs=1e-12)
                assert shown["interval"] == pytest.approx([low, high], abs=1e-9)
                checked += 1
    assert checked >= 1 and withheld_for_complement >= 1, (checked, withheld_for_complement)
    assert doc["by_attribute"]["grp"]["c"]["suppressed"] is True


# -- 2: the body cap is exact ----------------------------------------------------------------
def raw_post(port, path, body, declared=None, timeout=3.0):
    """POST with an exact Content-Length; the body is only sent if the server waits for it."""
    declared = len(body) if declared is None else declared
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {declared}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        sock.settimeout(timeout)
        data = b""
        try:
            data = sock.recv(65536)
        except TimeoutError:  # the server is waiting for the body: send it
            sock.settimeout(10)
            sock.sendall(body)
        sock.settimeout(10)
        for _ in range(1000):
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[1]


def padded(doc, size):
    body = json.dumps(doc).encode()
    assert len(body) <= size
    return body + b" " * (size - len(body))  # trailing white space is still valid JSON


def test_body_of_exactly_the_cap_is_served_one_byte_more_is_413(start):
    cap = 1500
    srv = start("tiny", max_body_bytes=cap, token=TOKEN)
    doc = infer_doc([1.0, -1.0], ["a", "b"], ["F", "M"], ["p", "q"])
    status, body = raw_post(srv.port, "/v2/models/tiny/infer", padded(doc, cap))
    assert status == 200, body
    assert len(json.loads(body)["outputs"][0]["data"]) == 2
    before = raw_table(srv.port)
    status, body = raw_post(srv.port, "/v2/models/tiny/infer", padded(doc, cap + 1))
    assert status == 413, body
    assert str(cap) in json.loads(body)["error"]
    assert raw_table(srv.port) == before
    # the same through http.client, which sets Content-Length itself
    assert request(srv.port, "POST", "/v2/models/tiny/infer", padded(doc, cap))[0] == 200
    assert request(srv.port, "POST", "/v2/models/tiny/infer", padded(doc, cap + 1))[0] == 413


def test_body_cap_counts_non_json_bodies_too(start):
    cap = 64
    srv = start("tiny", max_body_bytes=cap)
    status, body = raw_post(srv.port, "/v2/models/tiny/infer", b"x" * cap)
    assert status == 400 and "error" in json.loads(body)
    status, body = raw_post(srv.port, "/v2/models/tiny/infer", b"x" * (cap + 1))
    assert status == 413


# -- 3: the tensor element cap ---------------------------------------------------------------
def test_element_cap_on_the_declared_shape(start):
    cap = 39
    srv = start("tiny", max_elements=cap, token=TOKEN)
    status, body = post_infer(srv.port, infer_doc([0.5] * cap))
    assert status == 200, body
    assert json.loads(body)["outputs"][0]["shape"] == [cap, 1]
    before = raw_table(srv.port)
    over = [
        infer_doc([0.5] * (cap + 1)),  # [40, 1]
        {"inputs": [{"name": "x", "shape": [1, cap + 1], "datatype": "FP32", "data": [0.5] * (cap + 1)}]},
        # 40 elements, yet no dimension over 39: the cap is on the product
        {"inputs": [{"name": "x", "shape": [(cap + 1) // 2, 2], "datatype": "FP32", "data": [0.5] * (cap + 1)}]},
        # no elements at all, but a dimension numpy cannot hold
        {"inputs": [{"name": "x", "shape": [0, 2**63], "datatype": "FP32", "data": []}]},
    ]
    for doc in over:
        status, body = post_infer(srv.port, doc)
        assert 400 <= status < 500, body
        error = json.loads(body)["error"]
        assert "cap" in error and str(cap) in error, (doc["inputs"][0]["shape"], error)
    assert raw_table(srv.port) == before


def test_element_cap_counts_elements_not_the_longest_dimension(start):
    cap = 44  # the mlp4 model takes x[N, 4]: 11 rows are exactly the cap
    srv = start("mlp4", max_elements=cap, token=TOKEN)
    doc = {"inputs": [{"name": "x", "shape": [11, 4], "datatype": "FP32", "data": [0.1] * cap}]}
    status, body = post_infer(srv.port, doc, "mlp4")
    assert status == 200, body
    for shape in ([15, 3], [12, 4]):  # 45 and 48 elements
        n = shape[0] * shape[1]
        doc = {"inputs": [{"name": "x", "shape": shape, "datatype": "FP32", "data": [0.1] * n}]}
        status, body = post_infer(srv.port, doc, "mlp4")
        assert 400 <= status < 500, body
        error = json.loads(body)["error"]
        assert "cap" in error and str(cap) in error, (shape, error)
    assert sum(sum(c) for c in raw_table(srv.port, "mlp4").values()) == 11


# -- 4: /counters: private by default, exact only with the token ------------------------------
def counters_traffic():
    t = Traffic()
    t.add("a", "F", 1, None, 11)  # exactly min_cell: shown
    t.add("a", "F", 0, None, 10)  # one under: withheld
    t.add("a", "M", 1, None, 25)
    t.add("a", "M", 0, None, 3)
    t.add("b", "F", 0, None, 12)
    t.add("b", "M", 1, None, 1)
    return t


def test_counters_without_token_server_are_private_and_raw_is_refused(start):
    srv = start("tiny")
    traffic = counters_traffic()
    traffic.send(srv.port)
    status, doc = get_json(srv.port, "/v2/models/tiny/counters?raw=1")
    assert status == 401 and "error" in doc
    status, doc = get_json(srv.port, "/v2/models/tiny/counters?raw=1", GOOD)
    assert status == 401 and "error" in doc
    status, doc = get_json(srv.port, "/v2/models/tiny/counters")
    assert status == 200
    assert doc["privacy"]["min_cell"] == MIN_CELL
    assert doc["attributes"] == ["grp", "sex"]
    expected = traffic.cells()
    got = {tuple(g["key"]): g for g in doc["groups"]}
    assert set(got) == set(expected)
    for key, cells in expected.items():
        assert got[key]["counts"] == [c if c >= MIN_CELL else None for c in cells], key
        shown = [v for v in got[key]["score_hist"] if v is not None]
        assert all(v >= MIN_CELL for v in shown)
        assert sum(shown) <= sum(cells)
    assert got[("a", "F")]["counts"][cell(2, 1)] == 11
    assert got[("a", "F")]["counts"][cell(2, 0)] is None
    assert got[("b", "M")]["counts"] == [None] * 12


def test_raw_counters_need_the_right_bearer(start):
    srv = start("tiny", token=TOKEN)
    traffic = counters_traffic()
    traffic.send(srv.port)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        status, doc = get_json(srv.port, "/v2/models/tiny/counters?raw=1", headers)
        assert status == 401 and "error" in doc, headers
    assert raw_table(srv.port) == traffic.cells()
    for query in ("", "?raw=0"):  # no raw=1: private even with the token
        status, doc = get_json(srv.port, f"/v2/models/tiny/counters{query}", GOOD)
        assert status == 200 and doc["kind"] == "edgefair.counters_export", query
        assert {tuple(g["key"]): g["counts"] for g in doc["groups"]}[("b", "M")] == [None] * 12


# -- 5: sensitive inputs are stripped before the model ---------------------------------------
def test_sensitive_inputs_are_stripped_and_counted(start, bundles):
    srv = start("mlp4", token=TOKEN)
    rng = np.random.default_rng(7)
    x = rng.normal(0, 1.5, (23, 4)).astype(np.float32)
    grp = [["a", "b", "c"][i % 3] for i in range(23)]
    sex = [["F", "M"][i % 2] for i in range(23)]
    doc = {
        "inputs": [
            {"name": "grp", "shape": [23], "datatype": "BYTES", "data": grp},
            {"name": "x", "shape": [23, 4], "datatype": "FP32", "data": x.reshape(-1).tolist()},
            {"name": "sex", "shape": [23, 1], "datatype": "BYTES", "data": sex},
        ]
    }
    status, body = post_infer(srv.port, doc, "mlp4")
    assert status == 200, body
    reply = json.loads(body)
    assert [o["name"] for o in reply["outputs"]] == ["score"]
    got = np.array(reply["outputs"][0]["data"], np.float32).reshape(reply["outputs"][0]["shape"])

    oracle = ort.InferenceSession(str(bundles["mlp4"] / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in oracle.get_inputs()] == ["x"]
    (want,) = oracle.run(None, {"x": x})
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)

    decisions = (want.reshape(-1).astype(np.float64) >= 0.5).astype(int)
    assert 0 < decisions.sum() < len(decisions)  # both decisions occur: the counts say something
    expected = {}
    for g, s, d in zip(grp, sex, decisions, strict=True):
        expected.setdefault((g, s), [0] * 12)[cell(2, int(d))] += 1
    assert raw_table(srv.port, "mlp4") == expected


def test_model_metadata_lists_sensitive_inputs_apart(start):
    srv = start("tiny")
    status, meta = get_json(srv.port, "/v2/models/tiny")
    assert status == 200
    names = [i["name"] for i in meta["inputs"]]
    assert names == ["x", "grp", "sex"]
    assert meta["inputs"][0]["datatype"] == "FP32"
    assert all(i["datatype"] == "BYTES" for i in meta["inputs"][1:])


# -- 6: server metadata, versions and health through tritonclient ----------------------------
def test_tritonclient_metadata_versions_health_and_infer(start, bundles):
    srv = start("tiny")
    client = httpclient.InferenceServerClient(f"127.0.0.1:{srv.port}")
    try:
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready("tiny")
        assert client.is_model_ready("tiny", "1")
        assert not client.is_model_ready("tiny", "2")
        assert not client.is_model_ready("nope")
        server_meta = client.get_server_metadata()
        assert server_meta["name"] == "edgefair"
        assert server_meta["version"] == edgefair.__version__ == dist_version("edgefair")
        assert "binary_tensor_data" in server_meta["extensions"]
        meta = client.get_model_metadata("tiny", "1")
        assert meta == client.get_model_metadata("tiny")
        assert meta["name"] == "tiny" and "1" in meta["versions"]
        with pytest.raises(httpclient.InferenceServerException):
            client.get_model_metadata("tiny", "2")

        x = np.array([[-3.0], [0.25], [1.5]], np.float32)
        inputs = []
        for binary in (False, True):
            t = httpclient.InferInput("x", list(x.shape), "FP32")
            t.set_data_from_numpy(x, binary_data=binary)
            s = httpclient.InferInput("grp", [3], "BYTES")
            s.set_data_from_numpy(np.array(["a", "b", "a"], dtype=object), binary_data=binary)
            inputs = [t, s]
            result = client.infer(
                "tiny",
                inputs,
                model_version="1",
                outputs=[httpclient.InferRequestedOutput("score", binary_data=binary)],
            )
            assert result.get_response()["model_version"] == "1"
            np.testing.assert_allclose(result.as_numpy("score"), 1 / (1 + np.exp(-x)), rtol=1e-6)
        with pytest.raises(httpclient.InferenceServerException):
            client.infer("tiny", inputs, model_version="2")
    finally:
        client.close()

    for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/tiny/ready", "/v2/models/tiny/versions/1/ready"):
        assert request(srv.port, "GET", path)[0] == 200, path
    for path in ("/v2/models/tiny/versions/2", "/v2/models/tiny/versions/2/ready", "/v2/models/other/ready"):
        status, doc = get_json(srv.port, path)
        assert status == 404 and "error" in doc, path
    status, doc = get_json(srv.port, "/v2/models/tiny/versions/1")
    assert status == 200 and doc["name"] == "tiny"


# -- 7: drift on /fairness -------------------------------------------------------------------
def adult_rows(adult, rows):
    inputs = []
    for name in ADULT_FEATURES:
        values = adult.columns[name][rows]
        if values.dtype.kind == "f":
            inputs.append({"name": name, "shape": [len(values), 1], "datatype": "FP32", "data": values.tolist()})
        else:
            data = [str(v) for v in values.tolist()]
            inputs.append({"name": name, "shape": [len(values), 1], "datatype": "BYTES", "data": data})
    return {"inputs": inputs}


def test_drift_with_certificate_and_its_absence(start, bundles, adult_test):
    srv = start("adult")
    for s in range(0, 400, 100):
        status, body = post_infer(srv.port, adult_rows(adult_test, slice(s, s + 100)), "adult")
        assert status == 200, body
    status, doc = get_json(srv.port, "/v2/models/adult/fairness")
    assert status == 200 and doc["rows"] == 400
    assert doc["drift"]["verdict"] in ("pass", "fail", "inconclusive")
    assert isinstance(doc["drift"]["rows"], list) and doc["drift"]["rows"]
    assert all(r["field_rows"] >= MIN_CELL for r in doc["drift"]["rows"])

    # oracle: onnxruntime on the bundled model, the manifest's threshold on P(class 1)
    manifest = json.loads((bundles["adult"] / "manifest.json").read_text())
    oracle = ort.InferenceSession(str(bundles["adult"] / "model.onnx"), providers=["CPUExecutionProvider"])
    feeds = {}
    for name in ADULT_FEATURES:
        values = adult_test.columns[name][:400].reshape(-1, 1)
        feeds[name] = values.astype(np.float32) if values.dtype.kind == "f" else values.astype(str).astype(object)
    probabilities = oracle.run(["probabilities"], feeds)[0]
    decisions = probabilities[:, 1].astype(np.float64) >= manifest["threshold"]
    race = adult_test.columns["race"][:400]
    white = doc["by_attribute"]["race"]["White"]
    n, x = int((race == "White").sum()), int(decisions[race == "White"].sum())
    assert white["count"] == n
    sel = white["selection_rate"]
    low, high = proportion_confint(x, n, alpha=0.05, method="wilson")
    assert sel["rows"] == n and sel["value"] == pytest.approx(x / n, abs=1e-12)
    assert sel["interval"] == pytest.approx([low, high], abs=1e-9)

    plain = start("tiny")
    assert post_infer(plain.port, infer_doc([1.0], ["a"], ["F"]))[0] == 200
    status, doc = get_json(plain.port, "/v2/models/tiny/fairness")
    assert status == 200
    assert doc["drift"]["verdict"] is None
    assert doc["drift"]["note"]


# -- 8: loopback by default ------------------------------------------------------------------
def test_default_bind_is_loopback(start):
    assert ServeConfig().host == "127.0.0.1"
    srv = start("tiny")
    addresses = {s.getsockname()[0] for s in srv._server.sockets}
    assert addresses == {"127.0.0.1"}


def test_cli_binds_loopback_and_exits_0_on_sigterm(bundles):
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgefair", "serve", str(bundles["tiny"]), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
    )
    try:
        line = proc.stdout.readline()
        found = re.search(r"http://([\d.]+):(\d+) ", line)
        assert found, line
        assert found.group(1) == "127.0.0.1"
        port = int(found.group(2))
        assert request(port, "GET", "/v2/health/live")[0] == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        proc.stdout.close()


# -- 9: a rejected request never moves the counters ------------------------------------------
REJECTED = [
    pytest.param(infer_doc(["a", "b"], ["a", "a"], ["F", "F"], x_datatype="BYTES"), id="bytes-for-float"),
    pytest.param(
        {
            "inputs": [
                {"name": "x", "shape": [2, 1], "datatype": "FP32", "data": [1.0, 2.0]},
                {"name": "grp", "shape": [2], "datatype": "FP32", "data": [1.0, 2.0]},
            ]
        },
        id="float-sensitive",
    ),
    pytest.param(infer_doc([1.0, 2.0], ["a"], ["F", "F"]), id="short-sensitive"),
    pytest.param(infer_doc([1.0, 2.0], ["a", "a"], ["F", "F"], ids=["only-one"]), id="wrong-ids"),
    pytest.param(
        {"inputs": [*infer_doc([1.0])["inputs"], {"name": "zzz", "shape": [1], "datatype": "BYTES", "data": ["q"]}]},
        id="unknown-input",
    ),
    pytest.param(infer_doc([1.0, 2.0], ["a", "a"], ["F", "F"], outputs=["nope"]), id="unknown-output"),
]


@pytest.mark.parametrize("doc", REJECTED)
def test_rejected_request_leaves_counters(start, doc):
    srv = start("tiny", token=TOKEN)
    warm = Traffic()
    warm.add("a", "F", 1, None, 3)
    warm.send(srv.port)
    before = raw_table(srv.port)
    assert before == warm.cells()
    status, body = post_infer(srv.port, doc)
    assert 400 <= status < 500, body
    assert "error" in json.loads(body)
    assert raw_table(srv.port) == before
    # the server is still fine and still counts
    assert post_infer(srv.port, infer_doc([1.0], ["a"], ["F"]))[0] == 200
    after = raw_table(srv.port)
    assert after[("a", "F")][cell(2, 1)] == 4


def test_rejected_outcomes_leave_counters(start):
    srv = start("tiny", token=TOKEN)
    warm = Traffic()
    warm.add("a", "F", 1, None, 3)
    warm.send(srv.port)
    before = raw_table(srv.port)
    for body, headers in (
        ({"ids": ["r0"], "labels": [1]}, {}),  # no token
        ({"ids": ["r0", "r1"], "labels": [1, 7]}, GOOD),  # a bad label in the batch
        ({"ids": ["r0"], "labels": [1, 0]}, GOOD),
    ):
        status, reply = request(srv.port, "POST", "/v2/models/tiny/outcomes", json.dumps(body).encode(), headers)
        assert 400 <= status < 500, reply
    assert raw_table(srv.port) == before
