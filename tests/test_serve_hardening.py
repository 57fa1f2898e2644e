"""The server under hostile or sloppy clients: never a 5xx, never a hang, bounded memory.

Each test drives a real Server on 127.0.0.1 (port 0) with raw sockets where the exact
bytes matter and with the real tritonclient where a client's behaviour is the point. The
mutation fuzzer at the end starts from valid requests and changes one field at a time, so
its cases reach the model, and checks that a refused request never moves the counters.
"""

from __future__ import annotations

import contextlib
import copy
import gzip
import http.client
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import onnx
import pytest
import tritonclient.http as triton
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from edgefair.bundling import build_bundle
from edgefair.data import ADULT_FEATURES
from edgefair.errors import InputError
from edgefair.serve import server as server_module
from edgefair.serve.server import ServeConfig, Server, bind_warning, is_loopback, serve
from tests.conftest import MODELS, ROOT
from tests.models import no_weights

TOKEN = "hardening-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TINY = "/v2/models/tiny"


# -- fixtures -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    out = tmp_path_factory.mktemp("hardening")
    onnx.save(no_weights(), out / "tiny.onnx")  # score = Sigmoid(x): x >= 0 is decision 1
    return {
        "tiny": build_bundle(out / "tiny.onnx", out / "tiny", sensitive=["grp", "sex"]),
        "adult_sklearn": build_bundle(MODELS / "adult_sklearn.onnx", out / "adult_sklearn", sensitive=["race", "sex"]),
        "adult_mlp": build_bundle(MODELS / "adult_mlp.onnx", out / "adult_mlp", sensitive=["race", "sex"]),
    }


@pytest.fixture()
def start(bundles):
    """``start(bundle_name, **config)`` -> a running Server; each is stopped afterwards."""
    running = []

    def _start(name="tiny", **config):
        config.setdefault("token", TOKEN)
        srv = Server(bundles[name], ServeConfig(port=0, **config)).start()
        running.append(srv)
        return srv

    yield _start
    for srv in running:
        srv.stop()


# -- helpers --------------------------------------------------------------------------------
def read_response(sock, head=False, buf=b""):
    """One HTTP response from ``sock``: (status, headers, body, bytes after it)."""
    for _ in range(10_000):
        if b"\r\n\r\n" in buf:
            break
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a full response: {buf[:200]!r}")
        buf += chunk
    top, rest = buf.split(b"\r\n\r\n", 1)
    lines = top.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    n = 0 if head else int(headers.get("content-length", "0"))
    for _ in range(10_000):
        if len(rest) >= n:
            break
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return status, headers, rest[:n], rest[n:]


def send(sock, data):
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        sock.sendall(data)  # the server may answer early and close; its answer is still readable


def exchange(port, data, timeout=5.0, head=False):
    """Send raw bytes on a fresh connection and read one response."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        send(sock, data)
        return read_response(sock, head)[:3]


def post_bytes(path, body, headers=(), length=None):
    length = len(body) if length is None else length
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {length}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in dict(headers).items())
    return (head + "Connection: close\r\n\r\n").encode("latin-1") + body


def request(port, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        conn.close()


def infer_doc(x=(0.5, -1.0), grp=("a", "b"), sex=("F", "M"), **extra):
    n = len(x)
    doc = {
        "inputs": [
            {"name": "x", "shape": [n, 1], "datatype": "FP32", "data": list(x)},
            {"name": "grp", "shape": [n], "datatype": "BYTES", "data": list(grp)},
            {"name": "sex", "shape": [n], "datatype": "BYTES", "data": list(sex)},
        ]
    }
    doc.update(extra)
    return doc


def raw_rows(port):
    """Every exact count, through the token-protected raw /counters."""
    status, _, body = request(port, "GET", f"{TINY}/counters?raw=1", headers=AUTH)
    assert status == 200, body
    return {tuple(g["key"]): tuple(g["counts"]) for g in json.loads(body)["groups"]}


def total_rows(table):
    return sum(sum(c) for c in table.values())


def assert_error(status, body, low=400, high=499):
    assert low <= status <= high, (status, body)
    assert isinstance(json.loads(body)["error"], str)


# -- A1: client mistakes in the body are 4xx, not 500 ----------------------------------------
def _one(**item):
    base = {"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [1.0]}
    base.update(item)
    return json.dumps({"inputs": [base]}).encode()


DEEP = b"[" * 100_000 + b"]" * 100_000
BODY_MISTAKES = {
    "datatype list": _one(datatype=["FP32"]),
    "datatype object": _one(datatype={"a": 1}),
    "datatype number": _one(datatype=5),
    "ragged data": _one(shape=[2], data=[1, [2]]),
    "ragged strings": _one(shape=[2], datatype="BYTES", data=["a", ["b"]]),
    "mixed nested": _one(shape=[2, 1], data=[[1.0], 2.0]),
    "nested deeper than shape": _one(shape=[1], data=[[[1.0]]]),
    "zero beside 2**63": _one(shape=[0, 2**63], data=[]),
    "zero beside 2**64": _one(shape=[2**64, 0], data=[]),
    "70 dimensions": _one(shape=[1] * 70, data=[1.0]),
    "BYTES numbers": _one(datatype="BYTES", data=[1]),
    "BYTES mixed with a number": json.dumps(infer_doc(grp=("a", 1))).encode(),
    "binary size bool": json.dumps(
        {"inputs": [{"name": "x", "shape": [1], "datatype": "BOOL", "parameters": {"binary_data_size": True}}]}
    ).encode()
    + b"\x01",
    "deep json": b'{"inputs": ' + DEEP + b"}",
    "deep data": _one(data=[]).replace(b'"data": []', b'"data": ' + DEEP),
}


@pytest.mark.parametrize("name", list(BODY_MISTAKES))
def test_body_mistakes_on_infer_are_4xx_json(start, name):
    srv = start()
    before = raw_rows(srv.port)
    body = BODY_MISTAKES[name]
    headers = {"Inference-Header-Content-Length": str(len(body) - 1)} if name == "binary size bool" else {}
    status, _, reply = request(srv.port, "POST", f"{TINY}/infer", body, headers)
    assert_error(status, reply)
    if name == "binary size bool":
        assert "binary_data_size" in json.loads(reply)["error"]
    assert raw_rows(srv.port) == before
    assert request(srv.port, "GET", "/v2/health/live")[0] == 200


NEAR_LIMIT = {
    "data": '{"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1, DEEP]}]}',
    "bytes": '{"inputs": [{"name": "grp", "shape": [2], "datatype": "BYTES", "data": ["a", DEEP]}]}',
    "ids": '{"parameters": {"edgefair_ids": [DEEP]}, "inputs": [{"name": "x", "shape": [1], "datatype": "FP32", '
    '"data": [1]}]}',
    "id": '{"id": DEEP, "inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}',
    "shape": '{"inputs": [{"name": "x", "shape": DEEP, "datatype": "FP32", "data": [1]}]}',
    "binary_data": '{"outputs": [{"name": "score", "parameters": {"binary_data": DEEP}}], "inputs": [{"name": "x", '
    '"shape": [1], "datatype": "FP32", "data": [1]}]}',
    "outcome ids": '{"ids": [DEEP], "labels": [1]}',
    "outcome labels": '{"ids": ["a"], "labels": [DEEP]}',
}


def test_json_nested_just_under_the_parser_limit_is_4xx_everywhere(start):
    """Depths the JSON parser still takes must not blow the stack further on (repr, str, numpy)."""
    srv = start()
    for depth in (sys.getrecursionlimit() - 200, sys.getrecursionlimit() - 60, sys.getrecursionlimit() - 20):
        nested = "[" * depth + "]" * depth
        for field, template in NEAR_LIMIT.items():
            route = "outcomes" if field.startswith("outcome") else "infer"
            body = template.replace("DEEP", nested).encode()
            status, _, reply = request(srv.port, "POST", f"{TINY}/{route}", body, AUTH)
            assert status < 500, (field, depth, reply)  # an outcome id is taken as its str(): 200
            assert route == "outcomes" or status >= 400, (field, depth, reply)


def test_long_client_strings_are_cut_in_errors(start):
    srv = start()
    status, _, reply = request(srv.port, "POST", f"{TINY}/infer", _one(datatype="Q" * 100_000))
    assert status == 400 and len(json.loads(reply)["error"]) <= 503


def test_deep_json_on_outcomes_is_400(start):
    srv = start()
    status, _, reply = request(srv.port, "POST", f"{TINY}/outcomes", b'{"ids": ' + DEEP + b"}", AUTH)
    assert_error(status, reply)


# -- A2: HTTP ---------------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["request line", "header line", "headers in total"])
def test_over_16k_of_head_is_431(start, where):
    srv = start()
    if where == "request line":
        data = b"GET /v2/" + b"a" * 20_000 + b" HTTP/1.1\r\n\r\n"
    elif where == "header line":
        data = b"GET /v2 HTTP/1.1\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n"
    else:
        data = b"GET /v2 HTTP/1.1\r\n" + b"".join(b"X-%d: %s\r\n" % (i, b"a" * 900) for i in range(20)) + b"\r\n"
    status, headers, body = exchange(srv.port, data)
    assert status == 431 and headers["connection"] == "close"
    assert "error" in json.loads(body)
    assert request(srv.port, "GET", "/v2/health/live")[0] == 200


WRONG_METHODS = [
    ("POST", "/v2", "GET, HEAD"),
    ("DELETE", "/v2/health/live", "GET, HEAD"),
    ("POST", "/v2/health/ready", "GET, HEAD"),
    ("PUT", TINY, "GET, HEAD"),
    ("POST", f"{TINY}/versions/1", "GET, HEAD"),
    ("POST", f"{TINY}/ready", "GET, HEAD"),
    ("GET", f"{TINY}/infer", "POST"),
    ("PUT", f"{TINY}/versions/1/infer", "POST"),
    ("GET", f"{TINY}/outcomes", "POST"),
    ("POST", f"{TINY}/fairness", "GET, HEAD"),
    ("DELETE", f"{TINY}/counters", "GET, HEAD"),
    ("POST", "/metrics", "GET, HEAD"),
]


@pytest.mark.parametrize(("method", "path", "allow"), WRONG_METHODS)
def test_wrong_methods_are_405_with_allow(start, method, path, allow):
    srv = start()
    status, headers, body = request(srv.port, method, path, b"{}" if method in ("POST", "PUT") else None)
    assert status == 405, body
    assert headers["Allow"] == allow
    assert "error" in json.loads(body)


def test_unknown_routes_below_a_model_are_404(start):
    srv = start()
    for path in (f"{TINY}/infer/extra", f"{TINY}/nope", f"{TINY}/versions", "/v2/health/dead"):
        assert request(srv.port, "GET", path)[0] == 404, path


@pytest.mark.parametrize(
    "value", ["1_0", "+10", "0x10", "-1", "1 0", "10, 10", "\xa010", "١٠", "", "99999999999999999999"]
)
def test_content_length_is_plain_ascii_digits(start, value):
    srv = start()
    body = b"0123456789"
    head = f"POST {TINY}/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {value}\r\n\r\n"
    raw = head.encode("latin-1") if max(map(ord, head)) < 256 else head.encode()  # b"\xa0" as sent on the wire
    status, headers, reply = exchange(srv.port, raw + body)
    assert status == 400, (value, reply)
    assert "Content-Length" in json.loads(reply)["error"] and headers["connection"] == "close"


def test_two_different_content_lengths_are_400_two_equal_are_fine(start):
    srv = start()
    body = json.dumps(infer_doc()).encode()
    n = len(body)
    data = f"POST {TINY}/infer HTTP/1.1\r\nContent-Length: {n}\r\nContent-Length: {n + 1}\r\n\r\n"
    assert exchange(srv.port, data.encode() + body + b" ")[0] == 400
    data = f"POST {TINY}/infer HTTP/1.1\r\nContent-Length: {n}\r\ncontent-length: {n}\r\n\r\n"
    assert exchange(srv.port, data.encode() + body)[0] == 200
    # white space around a field value is not part of it (RFC 9112 5.1): still 10
    data = f"POST {TINY}/infer HTTP/1.1\r\nContent-Length: \t{n} \r\n\r\n"
    assert exchange(srv.port, data.encode() + body)[0] == 200


@pytest.mark.parametrize("line", ["Content-Length : 5", " folded", "no colon", "Bad Name: x"])
def test_malformed_header_lines_are_400(start, line):
    srv = start()
    status, _, _ = exchange(srv.port, f"GET /v2 HTTP/1.1\r\n{line}\r\n\r\n".encode())
    assert status == 400


def test_a_body_shorter_than_its_content_length_times_out_quickly(start):
    srv = start(read_timeout_seconds=0.5)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as sock:
        t0 = time.monotonic()
        sock.sendall(f"POST {TINY}/infer HTTP/1.1\r\nContent-Length: 100\r\n\r\n".encode() + b'{"inp')
        status, headers, body, _ = read_response(sock)
        elapsed = time.monotonic() - t0
    assert status == 408 and headers["connection"] == "close" and "error" in json.loads(body)
    assert elapsed < 3
    # and the slow client does not hold up anyone else
    assert request(srv.port, "GET", "/v2/health/ready")[0] == 200


def test_slow_headers_time_out_too(start):
    srv = start(read_timeout_seconds=0.5)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as sock:
        sock.sendall(b"GET /v2 HTTP/1.1\r\nHost: x\r\n")
        assert read_response(sock)[0] == 408


def test_head_sends_no_body_and_keep_alive_goes_on(start):
    srv = start()
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as sock:
        sock.sendall(b"HEAD /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body, rest = read_response(sock, head=True)
        assert status == 200 and body == b"" and int(headers["content-length"]) > 0
        sock.sendall(b"HEAD /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\n\r\n")  # 405: no body either
        status, headers, body, rest = read_response(sock, head=True, buf=rest)
        assert status == 405 and headers["allow"] == "POST" and headers["connection"] == "keep-alive"
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body, rest = read_response(sock, buf=rest)
        assert status == 200 and json.loads(body) == {"live": True} and rest == b""
    status, headers, body = request(srv.port, "HEAD", TINY)
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 0


def test_pipelined_requests_expect_continue_and_versions(start):
    srv = start()
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\n\r\nGET /v2/health/ready HTTP/1.1\r\n\r\n")
        status, _, body, rest = read_response(sock)
        assert status == 200 and json.loads(body) == {"live": True}
        status, _, body, rest = read_response(sock, buf=rest)
        assert status == 200 and json.loads(body) == {"ready": True}
        body = json.dumps(infer_doc()).encode()
        head = f"POST {TINY}/infer HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: {len(body)}\r\n\r\n"
        sock.sendall(head.encode())
        assert read_response(sock, buf=rest)[:2] == (100, {})
        sock.sendall(body)
        assert read_response(sock)[0] == 200
    status, headers, _ = exchange(srv.port, b"GET /v2/health/live HTTP/1.0\r\n\r\n")
    assert status == 200 and headers["connection"] == "close"
    assert exchange(srv.port, b"GET /v2/health/live HTTP/2.0\r\n\r\n")[0] == 505
    assert exchange(srv.port, b"GET /v2/health/live\r\n\r\n")[0] == 400


def test_percent_encoded_model_names_are_decoded(start):
    srv = start(model_name="tiny v1")
    status, _, body = request(srv.port, "GET", "/v2/models/tiny%20v1")
    assert status == 200 and json.loads(body)["name"] == "tiny v1"
    assert request(srv.port, "GET", "/v2/models/tiny%20v1/versions/1/ready")[0] == 200
    assert request(srv.port, "GET", "/v2/models/tiny%ZZ")[0] == 404
    assert request(srv.port, "GET", "/v2/models/%ff%fe")[0] == 404
    client = triton.InferenceServerClient(f"127.0.0.1:{srv.port}")
    assert client.is_model_ready("tiny v1")
    x = triton.InferInput("x", [2, 1], "FP32")
    x.set_data_from_numpy(np.array([[1.0], [-1.0]], dtype=np.float32))
    result = client.infer("tiny v1", [x])
    assert result.as_numpy("score").shape == (2, 1)
    # a slash in a name is one path segment when encoded
    srv = start(model_name="a/b")
    assert request(srv.port, "GET", "/v2/models/a%2Fb/ready")[0] == 200
    assert request(srv.port, "GET", "/v2/models/a/b/ready")[0] == 404


@pytest.mark.parametrize("value", ["false", "true", 0, 1, None, [], {}])
def test_binary_data_output_takes_real_booleans_only(start, value):
    srv = start()
    doc = infer_doc(parameters={"binary_data_output": value})
    status, headers, body = request(srv.port, "POST", f"{TINY}/infer", json.dumps(doc).encode())
    if value is None:  # JSON null: not given
        assert status == 200 and "inference-header-content-length" not in {k.lower() for k in headers}
    else:
        assert_error(status, body)
    doc = infer_doc(outputs=[{"name": "score", "parameters": {"binary_data": "false"}}])
    status, _, body = request(srv.port, "POST", f"{TINY}/infer", json.dumps(doc).encode())
    assert_error(status, body)


def test_real_booleans_still_choose_binary(start):
    srv = start()
    doc = infer_doc(parameters={"binary_data_output": True}, outputs=[{"name": "score"}])
    status, headers, body = request(srv.port, "POST", f"{TINY}/infer", json.dumps(doc).encode())
    assert status == 200 and int(headers["Inference-Header-Content-Length"]) < len(body)
    doc = infer_doc(
        parameters={"binary_data_output": True}, outputs=[{"name": "score", "parameters": {"binary_data": False}}]
    )
    status, headers, body = request(srv.port, "POST", f"{TINY}/infer", json.dumps(doc).encode())
    assert status == 200 and len(json.loads(body)["outputs"][0]["data"]) == 2


def test_an_empty_id_is_echoed(start):
    srv = start()
    status, _, body = request(srv.port, "POST", f"{TINY}/infer", json.dumps(infer_doc(id="")).encode())
    assert status == 200 and json.loads(body)["id"] == ""
    status, _, body = request(srv.port, "POST", f"{TINY}/infer", json.dumps(infer_doc()).encode())
    assert status == 200 and len(json.loads(body)["id"]) == 32  # none given: a fresh one


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_tritonclient_request_compression_is_decoded(start, algorithm):
    srv = start()
    client = triton.InferenceServerClient(f"127.0.0.1:{srv.port}")
    x = triton.InferInput("x", [3, 1], "FP32")
    x.set_data_from_numpy(np.array([[1.0], [-1.0], [0.0]], dtype=np.float32), binary_data=True)
    grp = triton.InferInput("grp", [3], "BYTES")
    grp.set_data_from_numpy(np.array(["a", "b", "a"], dtype=object), binary_data=True)
    before = total_rows(raw_rows(srv.port))
    result = client.infer("tiny", [x, grp], request_compression_algorithm=algorithm, request_id="z")
    assert result.get_response()["id"] == "z"
    assert np.allclose(result.as_numpy("score").reshape(-1), 1 / (1 + np.exp(-np.array([1.0, -1.0, 0.0]))))
    assert total_rows(raw_rows(srv.port)) == before + 3


def test_compressed_bodies_are_capped_and_checked(start):
    srv = start(max_body_bytes=100_000)
    bomb = gzip.compress(b" " * 5_000_000)  # 5 MB of white space in a few KB
    assert len(bomb) < 100_000
    status, _, body = exchange(srv.port, post_bytes(f"{TINY}/infer", bomb, {"Content-Encoding": "gzip"}))
    assert status == 413 and "error" in json.loads(body)
    good = json.dumps(infer_doc()).encode()
    ok = gzip.compress(good + b" " * (100_000 - len(good)))  # exactly the cap, decompressed
    assert exchange(srv.port, post_bytes(f"{TINY}/infer", ok, {"Content-Encoding": "gzip"}))[0] == 200
    for encoding, data, want in [
        ("br", good, 415),
        ("gzip, br", good, 415),
        ("gzip", b"not gzip at all", 400),
        ("gzip", gzip.compress(good)[:-6], 400),  # truncated stream
        ("gzip", gzip.compress(good) + b"junk", 400),
        ("deflate", zlib.compress(good), 200),
        ("identity", good, 200),
    ]:
        status, _, body = exchange(srv.port, post_bytes(f"{TINY}/infer", data, {"Content-Encoding": encoding}))
        assert status == want, (encoding, body)


def test_unknown_output_is_refused_before_the_model_counts(start):
    srv = start()
    before = raw_rows(srv.port)
    doc = infer_doc(outputs=[{"name": "score"}, {"name": "nope"}])
    status, _, body = request(srv.port, "POST", f"{TINY}/infer", json.dumps(doc).encode())
    assert_error(status, body)
    assert "nope" in json.loads(body)["error"]
    assert raw_rows(srv.port) == before
    assert srv.app.session.table().rows == total_rows(before)


# -- A3: metadata that a client can build a request from -------------------------------------
@pytest.mark.parametrize("model", ["adult_sklearn", "adult_mlp"])
def test_a_request_built_from_the_metadata_is_served(start, adult_test, model):
    srv = start(model)
    client = triton.InferenceServerClient(f"127.0.0.1:{srv.port}")
    meta = client.get_model_metadata(model)
    names = [i["name"] for i in meta["inputs"]]
    assert len(names) == len(set(names)), names
    assert set(names) >= {*ADULT_FEATURES, "race", "sex"}
    marked = {i["name"] for i in meta["inputs"] if (i.get("parameters") or {}).get("edgefair_sensitive")}
    assert marked == {"race", "sex"}
    rows = 5
    inputs = []
    for spec in meta["inputs"]:
        shape = [rows if d == -1 else d for d in spec["shape"]]
        values = adult_test.columns[spec["name"]][:rows]
        dtype = object if spec["datatype"] == "BYTES" else triton.triton_to_np_dtype(spec["datatype"])
        t = triton.InferInput(spec["name"], shape, spec["datatype"])
        t.set_data_from_numpy(values.astype(dtype).reshape(shape), binary_data=True)
        inputs.append(t)
    result = client.infer(model, inputs)
    assert result.as_numpy(meta["parameters"]["score_output"]).shape[0] == rows
    assert srv.app.session.table().rows == rows
    race = adult_test.columns["race"][:rows].tolist()
    counted = srv.app.session.table().marginal(["race"])
    assert sorted(k[0] for k, c in zip(counted.groups, counted.counts, strict=True) if c.sum()) == sorted(set(race))


# -- A4: bounded memory across connections ---------------------------------------------------
def test_connection_limit_answers_503_with_retry_after(start):
    srv = start(max_connections=3)
    held = []
    try:
        for _ in range(3):
            sock = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
            sock.sendall(b"GET /v2/health/live HTTP/1.1\r\n\r\n")
            assert read_response(sock)[0] == 200  # served and kept alive
            held.append(sock)
        status, headers, body = exchange(srv.port, b"GET /v2/health/live HTTP/1.1\r\n\r\n")
        assert status == 503 and headers["retry-after"] == "1" and "error" in json.loads(body)
        held.pop().close()
        for _ in range(50):  # the server notices the close
            status = exchange(srv.port, b"GET /v2/health/live HTTP/1.1\r\nConnection: close\r\n\r\n")[0]
            if status == 200:
                break
            time.sleep(0.05)
        assert status == 200
    finally:
        for sock in held:
            sock.close()


def vm(pid, key):
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"^{key}:\s+(\d+) kB", text, re.M).group(1)) * 1024


SERVE_SCRIPT = """
import sys
from edgefair.serve.server import ServeConfig, serve
config = ServeConfig(port=0, max_inflight_bytes=32 << 20, max_body_bytes=8 << 20, read_timeout_seconds=30)
serve(sys.argv[1], config, lambda m: print(m, flush=True))
"""


def _flood(argv, connections, size, min_refused):
    """``connections`` sockets each stop one byte short of a ``size`` body; then finish them.
    Returns (RSS before, peak RSS, RSS after, statuses) of the server process."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
    socks = []
    try:
        port = int(re.search(r":(\d+) \(", proc.stdout.readline()).group(1))
        assert exchange(port, b"GET /v2/health/ready HTTP/1.1\r\n\r\n")[0] == 200
        base = vm(proc.pid, "VmRSS")
        doc = json.dumps(infer_doc()).encode()
        body = doc + b" " * (size - len(doc))
        for _ in range(connections):
            sock = socket.create_connection(("127.0.0.1", port), timeout=20)
            send(sock, post_bytes(f"{TINY}/infer", body[:-1], length=size))
            socks.append(sock)
        peak = vm(proc.pid, "VmHWM")
        statuses = []
        for sock in socks:
            send(sock, body[-1:])
            status, headers, reply, _ = read_response(sock)
            statuses.append(status)
            if status == 503:
                assert headers["retry-after"] == "1" and "error" in json.loads(reply)
            elif status == 408:  # a loaded machine: the body's last byte came after the read timeout
                assert "error" in json.loads(reply)
            else:
                assert status == 200, reply
            sock.close()
        assert statuses.count(503) >= min_refused and statuses.count(200) >= 4, statuses
        after = vm(proc.pid, "VmRSS")
        assert exchange(port, post_bytes(f"{TINY}/infer", json.dumps(infer_doc()).encode()))[0] == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        return base, peak, after, statuses
    finally:
        for sock in socks:
            sock.close()
        proc.kill()
        proc.wait(timeout=10)


def test_bodies_in_flight_are_bounded_in_memory(bundles):
    """30 connections each part-way through a 4 MB body, against a 32 MB budget."""
    argv = [sys.executable, "-c", SERVE_SCRIPT, str(bundles["tiny"])]
    base, peak, after, _ = _flood(argv, 30, 4 << 20, 10)
    assert peak - base < 90 << 20, (base, peak)  # 30 bodies would be 120 MB
    assert after - base < 48 << 20, (base, after)


def test_the_cli_defaults_bound_memory_too(bundles, tmp_path):
    """``edgefair serve`` as shipped (64 connections, 64 MB in flight): 80 x 4 MB bodies."""
    argv = [sys.executable, "-m", "edgefair", "serve", str(bundles["tiny"]), "--port", "0"]
    base, peak, after, _ = _flood(argv, 80, 4 << 20, 16 + 40)  # 16 over the connection cap
    assert peak - base < 150 << 20, (base, peak)  # 80 bodies would be 320 MB
    assert after - base < 80 << 20, (base, after)


# -- A5: no unauthenticated non-loopback binds ------------------------------------------------
def test_loopback_hosts():
    for host in ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "LOCALHOST"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "", "192.0.2.1", "10.0.0.1", "example.com", "::ffff:10.0.0.1"):
        assert not is_loopback(host), host


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.1"])
def test_non_loopback_without_token_is_refused_before_binding(bundles, host, monkeypatch):
    def no_bind(*args, **kwargs):
        raise AssertionError("bound a socket")

    # the server binds with loop.create_server; on asyncio's own loop that method can be guarded
    monkeypatch.setattr(server_module.asyncio.base_events.BaseEventLoop, "create_server", no_bind)
    with pytest.raises(InputError, match="without a token"):
        Server(bundles["tiny"], ServeConfig(host=host, port=0), loop="asyncio").start()
    assert bind_warning(ServeConfig(host=host, token="t")) is None
    assert "without a token" in bind_warning(ServeConfig(host=host, no_auth=True))
    assert bind_warning(ServeConfig(host="127.0.0.1", no_auth=True)) is None


def test_no_auth_serves_with_a_warning(bundles, monkeypatch):
    """serve() end to end; the bind stays on loopback, which is made to look non-loopback."""
    monkeypatch.setattr(server_module, "is_loopback", lambda host: False)
    with pytest.raises(InputError, match="--no-auth"):
        Server(bundles["tiny"], ServeConfig(port=0))
    said = []
    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)

    def announce(message):
        said.append(message)
        if " on http://" in message:
            threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM)).start()

    try:
        serve(bundles["tiny"], ServeConfig(port=0, no_auth=True), announce)
    finally:
        signal.signal(signal.SIGTERM, handlers[0])
        signal.signal(signal.SIGINT, handlers[1])
    assert "WARNING" in said[0] and "without a token" in said[0]
    assert said[-1].endswith("stopped; counters flushed")


# -- B: a mutation fuzzer ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def fuzz_server(bundles, tmp_path_factory):
    store = tmp_path_factory.mktemp("fuzz") / "c.db"
    config = ServeConfig(port=0, token=TOKEN, store=str(store), max_body_bytes=64_000, read_timeout_seconds=0.3)
    srv = Server(bundles["tiny"], config).start()
    yield srv
    srv.stop()


def valid_json():
    return {"doc": infer_doc(id="j"), "blob": b"", "headers": {}}


def valid_binary():
    x = np.array([[1.5], [-2.0], [0.0]], dtype=np.float32).tobytes()
    grp = b"".join(struct.pack("<I", len(s)) + s for s in (b"a", b"bb", b""))
    doc = {
        "id": "b",
        "inputs": [
            {"name": "x", "shape": [3, 1], "datatype": "FP32", "parameters": {"binary_data_size": len(x)}},
            {"name": "grp", "shape": [3], "datatype": "BYTES", "parameters": {"binary_data_size": len(grp)}},
            {"name": "sex", "shape": [3], "datatype": "BYTES", "data": ["F", "M", "F"]},
        ],
        "outputs": [{"name": "score", "parameters": {"binary_data": True}}],
        "parameters": {"edgefair_ids": ["p", "q", "r"]},
    }
    return {"doc": doc, "blob": x + grp, "headers": {}}


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**65), 2**65),
    st.sampled_from([0, 1, -1, 2, 3, 2**31, 2**63 - 1, 2**63, 2**64]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
)
anything = st.recursive(
    scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=3), max_leaves=12
)
dims = st.sampled_from([0, 1, 2, 3, 4, -1, 2**32, 2**63, 2**64])
FIELDS = {
    "name": st.sampled_from(["x", "grp", "sex", "score", "", "X", "zzz"]) | anything,
    "datatype": st.sampled_from(["FP32", "FP64", "FP16", "INT64", "INT8", "UINT8", "BOOL", "BYTES", "fp32", ""])
    | anything,
    "shape": st.lists(dims, max_size=5) | anything,
    "data": st.lists(scalars, max_size=5)
    | st.lists(st.lists(scalars, max_size=2), max_size=4)
    | st.lists(st.floats(-3, 3, width=32), min_size=2, max_size=4)
    | anything,
    "parameters": st.fixed_dictionaries({"binary_data_size": scalars | st.integers(0, 40)}) | anything,
}


@st.composite
def mutated(draw):
    """A valid request with exactly one thing changed."""
    req = copy.deepcopy(draw(st.sampled_from([valid_json(), valid_binary()])))
    doc = req["doc"]
    where = draw(
        st.sampled_from(
            ["input", "shape entry", "drop field", "id", "parameters", "outputs", "ihcl", "content-length", "header"]
        )
    )
    if where == "input":
        item = draw(st.sampled_from(doc["inputs"]))
        key = draw(st.sampled_from(sorted(FIELDS)))
        item[key] = draw(FIELDS[key])
    elif where == "shape entry":
        item = draw(st.sampled_from(doc["inputs"]))
        i = draw(st.integers(0, len(item["shape"]) - 1))
        item["shape"][i] = draw(dims | scalars)
    elif where == "drop field":
        item = draw(st.sampled_from([doc, *doc["inputs"]]))
        item.pop(draw(st.sampled_from(sorted(item))))
    elif where == "id":
        doc["id"] = draw(anything)
    elif where == "parameters":
        key = draw(st.sampled_from(["binary_data_output", "edgefair_ids", "other"]))
        value = draw(st.lists(st.text(max_size=3), max_size=4) | anything)
        doc["parameters"] = draw(st.just({**doc.get("parameters", {}), key: value}) | anything)
    elif where == "outputs":
        name = draw(st.sampled_from(["score", "nope", ""]))
        doc["outputs"] = draw(
            st.just([{"name": name, "parameters": {"binary_data": draw(scalars)}}])
            | st.just([{"name": "score"}, {"name": name}])
            | anything
        )
    elif where == "ihcl":
        req["headers"]["Inference-Header-Content-Length"] = draw(
            st.integers(-3, 2000).map(str) | st.text("0123456789 +-_x", max_size=6)
        )
    elif where == "content-length":
        req["delta"] = draw(st.integers(-3, 3).filter(bool))
    else:
        req["headers"]["X-Pad"] = "a" * draw(st.integers(15_000, 17_000))
    return req


def encode(req):
    head = json.dumps(req["doc"]).encode()
    headers = dict(req["headers"])
    if req["blob"] and "Inference-Header-Content-Length" not in headers:
        headers["Inference-Header-Content-Length"] = str(len(head))
    body = head + req["blob"]
    return post_bytes(f"{TINY}/infer", body, headers, len(body) + req.get("delta", 0))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(req=mutated())
def test_mutation_fuzzer_never_5xx_and_refusals_never_count(fuzz_server, req):
    port = fuzz_server.port
    data = encode(req)
    before = raw_rows(port)
    status, headers, body = exchange(port, data)
    event(f"status {status}")
    assert status < 500, body
    after = raw_rows(port)
    if status >= 400:
        assert isinstance(json.loads(body)["error"], str)
        assert after == before, (status, body)
        return
    assert status == 200
    n = int(headers.get("inference-header-content-length", len(body)))
    reply = json.loads(body[:n])
    rows = reply["outputs"][0]["shape"][0] if reply["outputs"][0]["shape"] else 1
    assert total_rows(after) == total_rows(before) + rows  # exactly the rows served


# -- C: the Open Inference Protocol's own OpenAPI spec ----------------------------------------
SPEC = ROOT / "tests" / "spec" / "open_inference_rest.yaml"


def _spec_checks():
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
    )

    return [not_a_server_error, response_schema_conformance, content_type_conformance, response_headers_conformance]


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_open_inference_openapi_spec_against_a_live_server(fuzz_server, mode):
    """Cases schemathesis generates from the vendored spec: never a 5xx, and every response
    the spec describes (200s; 400s of /v2 and /infer) matches its schema."""
    schemathesis = pytest.importorskip("schemathesis")
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_path(str(SPEC))
    base = f"http://127.0.0.1:{fuzz_server.port}"
    known = {"model_name": "tiny", "model_version": "1"} if mode == "positive" else None
    strategy = schema.as_strategy(
        GenerationMode.POSITIVE if mode == "positive" else GenerationMode.NEGATIVE, path_parameters=known
    )
    checks = _spec_checks()
    seen = []

    @settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def run(case):
        before = raw_rows(fuzz_server.port)
        response = case.call(base_url=base, timeout=10)
        seen.append((case.method, case.operation.path, response.status_code))
        case.validate_response(response, checks=checks)
        if response.status_code >= 400:
            assert isinstance(response.json()["error"], str)
            assert raw_rows(fuzz_server.port) == before

    run()
    assert all(status < 500 for _, _, status in seen)
    if mode == "positive":  # every operation was reached, and answered as the spec says
        assert {path for _, path, _ in seen} == set(schema.raw_schema["paths"])
        assert any(status == 200 for _, path, status in seen if not path.endswith("/infer"))


def test_open_inference_spec_paths_refuse_other_methods_with_405(fuzz_server):
    pytest.importorskip("schemathesis")
    import yaml

    paths = yaml.safe_load(SPEC.read_text(encoding="utf-8"))["paths"]
    checked = 0
    for template, item in paths.items():
        path = template.format(model_name="tiny", model_version="1")
        allowed = {m.upper() for m in item if m in ("get", "post", "put", "delete", "patch")}
        for method in ("GET", "POST", "PUT", "DELETE", "PATCH"):
            if method in allowed:
                continue
            status, headers, body = request(fuzz_server.port, method, path, b"{}")
            assert status == 405, (method, path, body)
            assert set(headers["Allow"].split(", ")) >= allowed
            checked += 1
    assert checked >= 20
