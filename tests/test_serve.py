"""The Open Inference Protocol server, driven by the real tritonclient and raw HTTP."""

from __future__ import annotations

import http.client
import json
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as triton
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

import edgefair
from edgefair.bundling import build_bundle
from edgefair.core.tables import DEFAULT_BINS
from edgefair.data import ADULT_FEATURES
from edgefair.files import write_text
from edgefair.runtime.session import FairSession
from edgefair.runtime.store import CounterStore
from edgefair.serve.server import ServeConfig, Server
from tests.conftest import MODELS, ROOT


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    out = tmp_path_factory.mktemp("serve")
    made = {}
    for name in ("adult_sklearn", "adult_mlp"):
        report = edgefair.verify(MODELS / f"{name}.onnx", MODELS / f"{name}.onnx", "adult")
        cert = write_text(out / f"{name}.json", edgefair.report.build(report).to_json())
        made[name] = build_bundle(MODELS / f"{name}.onnx", out / name, certificate=cert)
    return made


@pytest.fixture()
def server(bundles, tmp_path):
    token = "s3cret"
    srv = Server(
        bundles["adult_sklearn"],
        ServeConfig(port=0, store=str(tmp_path / "c.db"), token=token, max_body_bytes=200_000),
    ).start()
    yield srv
    srv.stop()


def triton_inputs(adult, rows, binary, sensitive=True):
    inputs = []
    for name in ADULT_FEATURES:
        values = adult.columns[name][rows].reshape(-1, 1)
        if values.dtype.kind == "f":
            t = triton.InferInput(name, list(values.shape), "FP32")
            t.set_data_from_numpy(values.astype(np.float32), binary_data=binary)
        else:
            t = triton.InferInput(name, list(values.shape), "BYTES")
            t.set_data_from_numpy(values.astype(object), binary_data=binary)
        inputs.append(t)
    return inputs


def metric_values(port, token="s3cret"):
    text = http_get(port, "/metrics", {"Authorization": f"Bearer {token}"})[1].decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def http_get(port, path, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path, headers=headers or {})
    r = conn.getresponse()
    return r.status, r.read()


def http_post(port, path, body, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", path, body=body, headers=headers or {})
    r = conn.getresponse()
    return r.status, r.read()


@pytest.mark.parametrize("model", ["adult_sklearn", "adult_mlp"])
def test_triton_client_json_and_binary_match_fair_session(bundles, adult_test, model, tmp_path):
    srv = Server(bundles[model], ServeConfig(port=0)).start()
    try:
        client = triton.InferenceServerClient(f"127.0.0.1:{srv.port}")
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(model)
        meta = client.get_model_metadata(model)
        assert {i["name"] for i in meta["inputs"]} >= set(ADULT_FEATURES)
        rows = slice(0, 37)
        with FairSession(bundles[model]) as fs:
            local = fs.run(
                {
                    k: adult_test.columns[k][rows]
                    .reshape(-1, 1)
                    .astype(np.float32 if adult_test.columns[k].dtype.kind == "f" else object)
                    for k in ADULT_FEATURES
                },
                {"race": adult_test.columns["race"][rows], "sex": adult_test.columns["sex"][rows]},
            )
        for binary in (False, True):
            result = client.infer(
                model,
                triton_inputs(adult_test, rows, binary),
                request_id="r-1",
                outputs=[triton.InferRequestedOutput("probabilities", binary_data=binary)],
            )
            assert result.get_response()["id"] == "r-1"
            assert np.allclose(result.as_numpy("probabilities"), local["probabilities"], atol=1e-6)
    finally:
        srv.stop()


def test_metrics_count_rows_by_group_and_outcomes_join(server, adult_test):
    client = triton.InferenceServerClient(f"127.0.0.1:{server.port}")
    sent = 0
    for start in range(0, 300, 50):
        rows = slice(start, start + 50)
        client.infer("adult_sklearn", triton_inputs(adult_test, rows, True), request_id=f"b{start}")
        sent += 50
    values = metric_values(server.port)
    shown = {
        (dict(labels)["group"], dict(labels)["decision"]): v
        for (name, labels), v in values.items()
        if name == "edgefair_predictions_total" and dict(labels)["attribute"] == "race"
    }
    # oracle: onnxruntime on the bundle's model; series under min_cell (11) are not exported
    sess = ort.InferenceSession(str(server.app.session.bundle.path / "model.onnx"))
    feeds = {
        name: adult_test.columns[name][:300]
        .reshape(-1, 1)
        .astype(np.float32 if adult_test.columns[name].dtype.kind == "f" else object)
        for name in ADULT_FEATURES
    }
    decisions = (sess.run(["probabilities"], feeds)[0][:, 1] >= 0.5).astype(int)
    races = adult_test.columns["race"][:300]
    expected = {}
    for race, d in zip(races.tolist(), decisions.tolist(), strict=True):
        expected[(race, str(d))] = expected.get((race, str(d)), 0) + 1
    assert shown == {k: v for k, v in expected.items() if v >= 11}
    assert sum(expected.values()) == sent and any(v < 11 for v in expected.values())  # suppression was exercised
    body = json.dumps(
        {
            "ids": [f"b0/{i}" for i in range(50)] + ["nope"],
            "labels": [*adult_test.columns["income"][:50].tolist(), 1],
        }
    )
    assert http_post(server.port, "/v2/models/adult_sklearn/outcomes", body)[0] == 401
    status, reply = http_post(
        server.port, "/v2/models/adult_sklearn/outcomes", body, {"Authorization": "Bearer s3cret"}
    )
    assert status == 200 and json.loads(reply) == {
        "joined": 50,
        "unknown_id": 1,
        "duplicate": 0,
        "expired": 0,
        "evicted": 0,
    }
    values = metric_values(server.port)
    outcomes = {
        (dict(labels)["group"], dict(labels)["decision"], dict(labels)["label"]): v
        for (name, labels), v in values.items()
        if name == "edgefair_outcomes_total" and dict(labels)["attribute"] == "sex"
    }
    joined: dict[tuple[str, str, str], int] = {}
    labels_50 = adult_test.columns["income"][:50].tolist()
    for sex, d, y in zip(adult_test.columns["sex"][:50].tolist(), decisions[:50].tolist(), labels_50, strict=True):
        joined[(sex, str(d), str(y))] = joined.get((sex, str(d), str(y)), 0) + 1
    # an outcome cell is exported only with its pair (both labels of a group and decision at
    # 11 rows or more): else a prediction count less the other label would give it back
    paired = {(g, d) for g, d, _ in joined if min(joined.get((g, d, y), 0) for y in "01") >= 11}
    assert outcomes == {k: v for k, v in joined.items() if k[:2] in paired}
    assert any(v >= 11 and k[:2] not in paired for k, v in joined.items())  # the pair rule was exercised
    assert http_get(server.port, "/v2/models/adult_sklearn/fairness")[0] == 401  # counted data: the token
    assert http_get(server.port, "/metrics")[0] == 401
    status, fairness = http_get(server.port, "/v2/models/adult_sklearn/fairness", {"Authorization": "Bearer s3cret"})
    doc = json.loads(fairness)
    assert status == 200 and doc["rows"] == sent and doc["by_attribute"]["race"]["Other"]["suppressed"]


BAD = [
    ("POST", "/v2/models/adult_sklearn/infer", b"{not json", {}, 400),
    ("POST", "/v2/models/adult_sklearn/infer", b'{"inputs": []}', {}, 400),
    ("POST", "/v2/models/nope/infer", b'{"inputs": []}', {}, 404),
    ("GET", "/v3/whatever", b"", {}, 404),
    (
        "POST",
        "/v2/models/adult_sklearn/infer",
        b'{"inputs": [{"name": "age", "shape": [2, 1], "datatype": "FP32", "data": [1]}]}',
        {},
        400,
    ),
    (
        "POST",
        "/v2/models/adult_sklearn/infer",
        b'{"inputs": [{"name": "age", "shape": [1, 1], "datatype": "FP99", "data": [1]}]}',
        {},
        400,
    ),
    (
        "POST",
        "/v2/models/adult_sklearn/infer",
        b'{"inputs": [{"name": "age", "shape": [1, 1], "datatype": "FP32", "data": [1]}]}',
        {},
        400,
    ),
    (
        "POST",
        "/v2/models/adult_sklearn/infer",
        b'{"inputs": [{"name": "age", "shape": [1, 1], "datatype": "FP32", "data": ["x"]}]}',
        {},
        400,
    ),
    (
        "POST",
        "/v2/models/adult_sklearn/infer",
        b'{"inputs": [{"name": "age"}]}',
        {"Inference-Header-Content-Length": "9999"},
        400,
    ),
    ("POST", "/v2/models/adult_sklearn/infer", b"x" * 300_000, {}, 413),
]


@pytest.mark.parametrize(("method", "path", "body", "headers", "status"), BAD)
def test_bad_requests_get_4xx_json_and_leave_counters(server, method, path, body, headers, status):
    before = server.app.session.table()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request(method, path, body=body or None, headers=headers)
    reply = conn.getresponse()
    assert reply.status == status
    assert "error" in json.loads(reply.read())
    assert server.app.session.table() == before
    assert http_get(server.port, "/v2/health/live")[0] == 200


def test_wrong_shapes_and_dtypes_from_a_full_request(server, adult_test):
    client = triton.InferenceServerClient(f"127.0.0.1:{server.port}")
    inputs = triton_inputs(adult_test, slice(0, 3), False)
    bad = triton.InferInput("age", [3, 1], "INT64")
    bad.set_data_from_numpy(np.array([[1], [2], [3]], dtype=np.int64))
    inputs[0] = bad  # INT64 into a float input is a safe cast: served
    client.infer("adult_sklearn", inputs)
    text = triton.InferInput("age", [3, 1], "BYTES")
    text.set_data_from_numpy(np.array([["a"], ["b"], ["c"]], dtype=object))
    inputs[0] = text
    with pytest.raises(triton.InferenceServerException, match="400"):
        client.infer("adult_sklearn", inputs)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
    max_leaves=20,
)
bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {
            "inputs": st.lists(
                st.fixed_dictionaries(
                    {
                        "name": st.sampled_from(["age", "race", "sex", "workclass", "zzz"]),
                        "shape": st.lists(st.integers(-1, 3), max_size=3),
                        "datatype": st.sampled_from(["FP32", "BYTES", "INT64", "BOOL", "FP16", "nope"]),
                        "data": st.lists(
                            st.one_of(st.integers(), st.floats(allow_nan=False), st.text(max_size=3)),
                            max_size=4,
                        ),
                    }
                ),
                max_size=4,
            )
        }
    ).map(lambda d: json.dumps(d).encode()),
)


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies, header=st.one_of(st.none(), st.integers(-5, 400).map(str), st.text(max_size=4)))
def test_fuzzed_bodies_never_5xx(server, body, header):
    headers = {} if header is None else {"Inference-Header-Content-Length": header}
    try:
        status, reply = http_post(server.port, "/v2/models/adult_sklearn/infer", body, headers)
    except (UnicodeEncodeError, ValueError):
        return  # http.client refuses such a header value before sending anything
    assert status < 500, reply
    if status >= 400:
        assert "error" in json.loads(reply)


def _load(port, seconds, connections, body, headers):
    errors, accepted = [], [0] * connections

    def worker(i):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        stop = time.monotonic() + seconds
        while time.monotonic() < stop:
            try:
                conn.request("POST", "/v2/models/adult_mlp/infer", body=body, headers=headers)
                r = conn.getresponse()
                r.read()
                if r.status == 200:
                    accepted[i] += 1
                else:
                    errors.append(r.status)
            except (OSError, http.client.HTTPException) as exc:
                errors.append(repr(exc))
                return

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 60)
    return errors, sum(accepted)


def one_row_body(adult):
    inputs = []
    for k in ADULT_FEATURES:
        v = adult.columns[k][0]
        inputs.append(
            {
                "name": k,
                "shape": [1, 1],
                "datatype": "FP32" if isinstance(v, float) else "BYTES",
                "data": [float(v) if isinstance(v, float) else str(v)],
            }
        )
    return json.dumps({"inputs": inputs}).encode()


def start_process(bundle, store, *extra):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edgefair",
            "serve",
            str(bundle),
            "--port",
            "0",
            "--store",
            str(store),
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
    )
    line = proc.stdout.readline()
    port = int(re.search(r":(\d+) \(", line).group(1))
    return proc, port


def _load_test(bundles, adult_test, tmp_path, seconds):
    proc, port = start_process(bundles["adult_mlp"], tmp_path / "load.db")
    try:
        errors, accepted = _load(port, seconds, 64, one_row_body(adult_test), {"Content-Type": "application/json"})
        assert errors == []
        assert accepted > 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
    store = CounterStore(tmp_path / "load.db", ("race", "sex"), DEFAULT_BINS)
    assert store.load().rows == accepted  # SIGTERM drained and flushed: exact
    store.close()


def test_load_64_connections_short(bundles, adult_test, tmp_path):
    _load_test(bundles, adult_test, tmp_path, 4)


@pytest.mark.slow
def test_load_64_connections_30s(bundles, adult_test, tmp_path):
    _load_test(bundles, adult_test, tmp_path, 30)


def test_kill_9_under_load_then_restart(bundles, adult_test, tmp_path):
    store = tmp_path / "k.db"
    proc, port = start_process(bundles["adult_mlp"], store)
    result = {}

    def load():
        result["load"] = _load(port, 3, 8, one_row_body(adult_test), {})

    t = threading.Thread(target=load)
    t.start()
    time.sleep(1.5)
    proc.kill()
    proc.wait(timeout=10)
    t.join(60)
    _errors, acknowledged = result["load"]
    with sqlite3.connect(store) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    s = CounterStore(store, ("race", "sex"), DEFAULT_BINS)
    stored = s.load().rows
    s.close()
    in_flight = 8  # at most one request per connection was running when the process died
    assert stored <= acknowledged + in_flight
    assert stored >= acknowledged - 1000 - in_flight  # one flush window: 1000 rows or 1 s
    proc2, port2 = start_process(bundles["adult_mlp"], store)
    try:
        status, body = http_get(port2, "/v2/models/adult_mlp/fairness")
        assert status == 200 and json.loads(body)["rows"] == stored
    finally:
        proc2.terminate()
        proc2.wait(timeout=30)
