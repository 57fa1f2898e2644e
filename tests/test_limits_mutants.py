"""The server's limits, in process: the body cap, the tensor-element and dimension caps, the
header size and count limits, the in-flight byte budget, the connection cap and compressed
bodies. A real Server runs in a thread on 127.0.0.1 and is spoken to with raw sockets (the
exact bytes matter); the pure limit functions are also called directly. Each limit is tried
at exactly its value (accepted) and one past it (refused, with the status and message)."""

from __future__ import annotations

import gzip
import json
import socket
import time
import zlib
from collections.abc import Iterator

import onnx
import pytest

from edgefair.bundling import build_bundle
from edgefair.serve import protocol as v2
from edgefair.serve import server as srv_module
from edgefair.serve.server import ServeConfig, Server
from tests.models import no_weights

MAX_BODY = 4096


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("limits")
    onnx.save(no_weights(), out / "tiny.onnx")  # score = Sigmoid(x), x float[N, 1]
    return build_bundle(out / "tiny.onnx", out / "tiny", sensitive=["grp"])


@pytest.fixture(scope="module")
def server(bundle) -> Iterator[Server]:
    s = Server(
        bundle, ServeConfig(port=0, max_body_bytes=MAX_BODY, max_elements=64, max_inflight_bytes=3 * MAX_BODY)
    ).start()
    yield s
    s.stop()


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    return sock


def response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed before a response: {buf!r}")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return status, headers, rest[:length]


def exchange(port: int, raw: bytes) -> tuple[int, dict[str, str], str]:
    with connect(port) as sock:
        sock.sendall(raw)
        status, headers, body = response(sock)
    message = json.loads(body)["error"] if status >= 400 and body else body.decode()
    return status, headers, message


def infer_body(n: int = 1) -> bytes:
    doc = {"inputs": [{"name": "x", "shape": [n, 1], "datatype": "FP32", "data": [0.5] * n}]}
    return json.dumps(doc).encode()


def post(body: bytes, extra: str = "", path: str = "/v2/models/tiny/infer") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{extra}X-Sensitive-grp: a\r\n\r\n".encode()
        + body
    )


def test_a_plain_request_is_answered_and_the_budget_returns_to_zero(server):
    status, headers, body = exchange(server.port, post(infer_body()))
    assert status == 200 and headers["connection"] == "keep-alive" and "outputs" in body
    for _ in range(100):
        if server.inflight == 0 and server.connections == 0:
            break
        time.sleep(0.02)
    assert server.inflight == 0 and server.connections == 0


@pytest.mark.parametrize(
    "line",
    [b"GET /v2\r\n", b"GET /v2 HTTP/1.1 extra\r\n", b"G(T /v2 HTTP/1.1\r\n", b"GET /v2 FTP/1.1\r\n"],
)
def test_malformed_request_lines(server, line):
    assert exchange(server.port, line + b"\r\n")[::2] == (400, "malformed request line")


def test_http_versions(server):
    assert exchange(server.port, b"GET /v2 HTTP/2.0\r\n\r\n")[::2] == (505, "HTTP/2.0 is not supported; use HTTP/1.1")
    status, headers, _ = exchange(server.port, b"GET /v2/health/live HTTP/1.0\r\n\r\n")
    assert status == 200 and headers["connection"] == "close"
    status, headers, _ = exchange(server.port, b"GET /v2/health/live HTTP/1.1\r\nConnection: Close\r\n\r\n")
    assert status == 200 and headers["connection"] == "close"
    status, headers, _ = exchange(server.port, b"GET /v2/health/live HTTP/1.1\r\nConnection: keep-alive\r\n\r\n")
    assert status == 200 and headers["connection"] == "keep-alive"


def headers_of(total: int, line: bytes) -> bytes:
    """Header lines making the request line + headers + blank line exactly ``total`` bytes."""
    room = total - len(line) - 2
    out = b""
    while room > 0:
        size = min(room, 8000)
        if room - size and room - size < 10:  # keep the last line long enough to be a header
            size -= 10
        pad = b"X-Pad: " + b"a" * (size - 9) + b"\r\n"
        assert len(pad) == size
        out += pad
        room -= size
    return out


def test_the_header_size_limit_is_exact(server):
    line = b"GET /v2/health/live HTTP/1.1\r\n"
    at = line + headers_of(srv_module.MAX_HEADER_BYTES, line) + b"\r\n"
    assert len(at) == srv_module.MAX_HEADER_BYTES == 16384
    assert exchange(server.port, at)[0] == 200
    over = line + headers_of(srv_module.MAX_HEADER_BYTES + 1, line) + b"\r\n"
    assert exchange(server.port, over)[::2] == (431, "request headers too large")


def test_one_header_line_over_the_stream_limit(server):
    line = b"GET /v2/health/live HTTP/1.1\r\n"
    huge = line + b"X-Pad: " + b"a" * 20000 + b"\r\n\r\n"
    assert exchange(server.port, huge)[::2] == (431, "request header line too large")
    assert exchange(server.port, b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n")[::2] == (431, "request line too large")


def test_the_header_count_limit_is_exact(server):
    line = b"GET /v2/health/live HTTP/1.1\r\n"
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(srv_module.MAX_HEADERS))
    assert srv_module.MAX_HEADERS == 100
    assert exchange(server.port, line + many + b"\r\n")[0] == 200
    assert exchange(server.port, line + many + b"X-One-More: v\r\n\r\n")[::2] == (431, "more than 100 header lines")


@pytest.mark.parametrize("header", [b"No colon here\r\n", b" Folded: v\r\n", b"Name : v\r\n", b"N(ame): v\r\n"])
def test_malformed_header_lines(server, header):
    raw = b"GET /v2/health/live HTTP/1.1\r\n" + header + b"\r\n"
    assert exchange(server.port, raw)[::2] == (400, "malformed header line")


def test_header_names_are_case_insensitive_and_values_lose_only_spaces_and_tabs(server):
    body = infer_body()
    raw = (
        b"POST /v2/models/tiny/infer HTTP/1.1\r\nCONTENT-LENGTH: \t%d \t\r\nX-Sensitive-grp: a\r\n\r\n" % len(body)
        + body
    )
    assert exchange(server.port, raw)[0] == 200
    nbsp = b"POST /v2/models/tiny/infer HTTP/1.1\r\nContent-Length: \xa05\r\n\r\n"
    assert exchange(server.port, nbsp)[::2] == (400, "Content-Length must be a decimal integer")


@pytest.mark.parametrize(("value", "status"), [(b"chunked", 411), (b"gzip, CHUNKED", 411), (b"gzip", 501)])
def test_transfer_encodings_are_refused(server, value, status):
    raw = b"POST /v2/models/tiny/infer HTTP/1.1\r\nTransfer-Encoding: " + value + b"\r\n\r\n"
    message = {
        411: "chunked bodies are not supported; send Content-Length",
        501: "Transfer-Encoding is not supported; send Content-Length",
    }[status]
    assert exchange(server.port, raw)[::2] == (status, message)


def test_content_length_must_be_one_plain_number(server):
    start = b"POST /v2/models/tiny/infer HTTP/1.1\r\n"
    both = start + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\n"
    assert exchange(server.port, both)[::2] == (400, "conflicting Content-Length headers")
    body = infer_body()
    same = start + b"Content-Length: %d\r\nContent-Length: %d\r\nX-Sensitive-grp: a\r\n\r\n" % (len(body), len(body))
    assert exchange(server.port, same + body)[0] == 200
    for bad in (b"+10", b"1_0", b"0x10", b"1 0", b"-1", b"", b"1" * 20):
        raw = start + b"Content-Length: " + bad + b"\r\n\r\n"
        assert exchange(server.port, raw)[::2] == (400, "Content-Length must be a decimal integer"), bad
    nineteen = start + b"Content-Length: " + b"9" * 19 + b"\r\n\r\n"  # a number, but over the cap
    assert exchange(server.port, nineteen)[0] == 413


def test_the_body_cap_is_exact(server):
    at = b" " * (MAX_BODY - len(infer_body())) + infer_body()  # JSON allows leading whitespace
    assert len(at) == MAX_BODY
    assert exchange(server.port, post(at))[0] == 200
    over = b" " + at
    assert exchange(server.port, post(over))[::2] == (
        413,
        f"body of {MAX_BODY + 1} bytes is over the cap of {MAX_BODY}",
    )


def test_the_in_flight_budget_is_exact(bundle):
    s = Server(bundle, ServeConfig(port=0, max_body_bytes=MAX_BODY, max_inflight_bytes=len(infer_body()))).start()
    try:
        assert exchange(s.port, post(infer_body()))[0] == 200  # exactly the budget
        status, headers, message = exchange(s.port, post(b" " + infer_body()))
        assert (status, message) == (503, "too many request bytes in flight; retry shortly")
        assert headers["retry-after"] == "1"
        assert exchange(s.port, b"GET /v2/health/live HTTP/1.1\r\n\r\n")[0] == 200  # no body: not counted
    finally:
        s.stop()


def test_a_body_being_read_is_held_against_the_budget_then_released(server):
    body = infer_body()
    head = post(body, "Expect: 100-continue\r\n")[: -len(body)]
    with connect(server.port) as sock:
        sock.sendall(head)
        assert sock.recv(64) == b"HTTP/1.1 100 Continue\r\n\r\n"
        assert server.inflight == len(body)  # held while the body is awaited
        sock.sendall(body)
        assert response(sock)[0] == 200
        sock.sendall(post(body))  # the same connection goes on: nothing left held from the first
        assert response(sock)[0] == 200
    for _ in range(100):
        if server.inflight == 0:
            break
        time.sleep(0.02)
    assert server.inflight == 0


def test_no_continue_without_the_expectation(server):
    body = infer_body()
    with connect(server.port) as sock:
        sock.sendall(post(body))
        status, _, _ = response(sock)
    assert status == 200
    with connect(server.port) as sock:  # a GET with Expect and no body: no 100 either
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nExpect: 100-continue\r\n\r\n")
        data = sock.recv(65536)
    assert data.startswith(b"HTTP/1.1 200")


def test_the_connection_cap(bundle):
    s = Server(bundle, ServeConfig(port=0, max_connections=1)).start()
    try:
        first = connect(s.port)
        first.sendall(b"GET /v2/health/live HTTP/1.1\r\n\r\n")
        assert response(first)[0] == 200  # kept alive: it holds the one slot
        status, headers, message = exchange(s.port, b"GET /v2/health/live HTTP/1.1\r\n\r\n")
        assert (status, message, headers["retry-after"]) == (503, "too many connections; retry shortly", "1")
        first.close()
        for _ in range(200):
            if s.connections == 0:
                break
            time.sleep(0.02)
        assert s.connections == 0
        assert exchange(s.port, b"GET /v2/health/live HTTP/1.1\r\n\r\n")[0] == 200
    finally:
        s.stop()


def test_compressed_bodies_on_the_wire(server):
    body = gzip.compress(infer_body())
    assert exchange(server.port, post(body, "Content-Encoding: gzip\r\n"))[0] == 200
    bomb = gzip.compress(b" " * (MAX_BODY + 1))
    status, _, message = exchange(server.port, post(bomb, "Content-Encoding: gzip\r\n"))
    assert (status, message) == (413, f"decompressed body is over the cap of {MAX_BODY} bytes")


def test_decode_body_by_hand():
    data = b'{"a": 1}' * 10
    for enc in ("", "identity", " Identity "):
        assert srv_module._decode_body(data, enc, 10) == data  # not decoded: no cap applies
    assert srv_module._decode_body(gzip.compress(data), " GZIP ", 80) == data
    assert srv_module._decode_body(gzip.compress(data), "x-gzip", 80) == data
    assert srv_module._decode_body(zlib.compress(data), "deflate", 80) == data
    with pytest.raises(v2.ClientError) as info:
        srv_module._decode_body(gzip.compress(data), "gzip", 79)
    assert (info.value.status, str(info.value)) == (413, "decompressed body is over the cap of 79 bytes")
    with pytest.raises(v2.ClientError) as info:
        srv_module._decode_body(data, "br", 80)
    assert (info.value.status, str(info.value)) == (
        415,
        "Content-Encoding 'br' is not supported; use gzip, deflate or none",
    )
    with pytest.raises(v2.ClientError) as info:
        srv_module._decode_body(b"not gzip at all", "gzip", 80)
    assert (info.value.status, str(info.value)) == (400, "body is not valid gzip data")
    with pytest.raises(v2.ClientError) as info:
        srv_module._decode_body(gzip.compress(data)[:-4], "gzip", 80)
    assert str(info.value) == "body is not one complete gzip stream"
    with pytest.raises(v2.ClientError) as info:
        srv_module._decode_body(zlib.compress(data) + b"trailing", "deflate", 80)
    assert str(info.value) == "body is not one complete deflate stream"
    with pytest.raises(v2.ClientError) as info:
        srv_module._decode_body(gzip.compress(data), "deflate", 80)  # a gzip wrapper is not zlib's
    assert str(info.value) == "body is not valid deflate data"
    assert srv_module._decode_body(gzip.compress(b""), "gzip", 0) == b""


def test_decode_body_cap_when_the_rest_comes_out_of_flush():
    """The cap also holds for what ``flush`` returns after a first read that fit."""
    data = bytes(range(256)) * 64  # 16 KiB, barely compressible
    z = zlib.compress(data, 9)
    cut = len(z) // 2  # half the stream: decompress gives part, the rest is never sent
    with pytest.raises(v2.ClientError):
        srv_module._decode_body(z[:cut], "deflate", len(data))
    assert srv_module._decode_body(z, "deflate", len(data)) == data
    with pytest.raises(v2.ClientError) as info:
        srv_module._decode_body(z, "deflate", len(data) - 1)
    assert info.value.status == 413


def test_shape_caps_by_hand():
    assert v2._shape([2, 3], "x", 6) == (2, 3)
    assert v2._shape([], "x", 1) == ()
    assert v2._shape([0, 6], "x", 6) == (0, 6)
    assert v2._shape([1] * 32, "x", 6) == (1,) * 32
    cases = [
        ("2", 400, "input 'x': 'shape' must be a list of non-negative integers"),
        ([1] * 33, 400, "input 'x': 33 dimensions is over the cap of 32"),
        ([True, 2], 400, "input 'x': 'shape' must be a list of non-negative integers"),
        ([2.0], 400, "input 'x': 'shape' must be a list of non-negative integers"),
        ([-1], 400, "input 'x': 'shape' must be a list of non-negative integers"),
        ([7], 413, "input 'x': dimension 7 is over the cap of 6"),
        ([0, 2**63], 413, "input 'x': dimension 9223372036854775808 is over the cap of 6"),
        ([2, 4], 413, "input 'x': 8 elements is over the cap of 6"),
    ]
    for shape, status, message in cases:
        with pytest.raises(v2.ClientError) as info:
            v2._shape(shape, "x", 6)
        assert (info.value.status, str(info.value)) == (status, message), shape
    assert v2.MAX_DIMS == 32


def test_the_element_cap_on_the_wire(server):
    assert exchange(server.port, post(infer_body(64)))[0] == 200
    status, _, message = exchange(server.port, post(infer_body(65)))
    assert (status, message) == (413, "input 'x': dimension 65 is over the cap of 64")
    doc = {"inputs": [{"name": "x", "shape": [9, 8, 1], "datatype": "FP32", "data": [0.5] * 72}]}
    status, _, message = exchange(server.port, post(json.dumps(doc).encode()))
    assert (status, message) == (413, "input 'x': 72 elements is over the cap of 64")


def test_loads_by_hand():
    assert v2.loads(b'{"a": [1]}') == {"a": [1]} and v2.loads('{"b": 2}') == {"b": 2}
    for body, message in (
        (b"{nope", "request body is not valid JSON"),
        (b"\xff\xfe{}", "request body is not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "request JSON is nested too deeply"),
    ):
        with pytest.raises(v2.ClientError) as info:
            v2.loads(body)
        assert (info.value.status, str(info.value)) == (400, message)


def test_flatten_by_hand():
    assert v2._flatten([[1, 2], [3, 4]], "x", 2) == [1, 2, 3, 4]
    assert v2._flatten([1, 2], "x", 1) == [1, 2]
    assert v2._flatten([], "x", 0) == []
    assert v2._flatten([[[1]], [[2]]], "x", 3) == [1, 2]
    assert v2._flatten([[[1]]], "x", 2) == [1]  # depth = max_depth + 1 levels of lists may be opened
    cases = [
        ("12", "input 'x': 'data' must be a list"),
        ([[1], 2], "input 'x': 'data' mixes lists and values at one level"),
        ([[[[1]]]], "input 'x': 'data' is nested deeper than its shape"),
    ]
    for data, message in cases:
        with pytest.raises(v2.ClientError) as info:
            v2._flatten(data, "x", 2)
        assert str(info.value) == message


def test_bare_line_feeds_end_the_headers(server):
    status, _, _ = exchange(server.port, b"GET /v2/health/live HTTP/1.1\nHost: x\n\n")
    assert status == 200


def test_a_header_value_may_hold_colons_and_ends_at_its_own_characters(server):
    assert exchange(server.port, b"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n")[0] == 200
    start = b"POST /v2/models/tiny/infer HTTP/1.1\r\n"
    for bad in (b"5X", b"X5", b"5\xa0"):  # letters and NBSP belong to the value: not a number
        raw = start + b"Content-Length: " + bad + b"\r\n\r\n"
        assert exchange(server.port, raw)[::2] == (400, "Content-Length must be a decimal integer"), bad


def test_an_empty_compressed_body_is_an_incomplete_stream(server):
    raw = b"POST /v2/models/tiny/infer HTTP/1.1\r\nContent-Length: 0\r\nContent-Encoding: gzip\r\n\r\n"
    assert exchange(server.port, raw)[::2] == (400, "body is not one complete gzip stream")


def test_bodies_held_by_several_connections_add_up(bundle):
    body = infer_body()
    s = Server(bundle, ServeConfig(port=0, max_inflight_bytes=2 * len(body) + 1)).start()
    head = post(body, "Expect: 100-continue\r\n")[: -len(body)]
    try:
        a, b, c = connect(s.port), connect(s.port), connect(s.port)
        for sock in (a, b):
            sock.sendall(head)
            assert sock.recv(64) == b"HTTP/1.1 100 Continue\r\n\r\n"
        assert s.inflight == 2 * len(body)  # both bodies are awaited at once
        c.sendall(head)  # a third would pass the budget
        status, _, answer = response(c)
        assert (status, json.loads(answer)["error"]) == (503, "too many request bytes in flight; retry shortly")
        for sock in (a, b):
            sock.sendall(body)
            assert response(sock)[0] == 200
        for sock in (a, b, c):
            sock.close()
    finally:
        s.stop()


def test_the_connection_cap_counts_every_open_connection(bundle):
    s = Server(bundle, ServeConfig(port=0, max_connections=2)).start()
    try:
        held = [connect(s.port), connect(s.port)]
        for sock in held:
            sock.sendall(b"GET /v2/health/live HTTP/1.1\r\n\r\n")
            assert response(sock)[0] == 200
        assert s.connections == 2
        assert exchange(s.port, b"GET /v2/health/live HTTP/1.1\r\n\r\n")[0] == 503
        for sock in held:
            sock.close()
    finally:
        s.stop()


def test_a_client_leaving_mid_headers_is_not_an_error(server, capfd):
    with connect(server.port) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x")  # no end of line, then gone
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(65536) == b""  # closed without an answer
    time.sleep(0.2)
    assert exchange(server.port, b"GET /v2/health/live HTTP/1.1\r\n\r\n")[0] == 200
    err = capfd.readouterr().err
    assert "Traceback" not in err and "exception" not in err.lower(), err


def test_a_compression_bomb_is_refused_without_inflating_it():
    import tracemalloc

    bomb = gzip.compress(b"\0" * (16 * 1024 * 1024), 1)  # 16 MiB of zeros in about 70 KiB
    tracemalloc.start()
    try:
        with pytest.raises(v2.ClientError) as info:
            srv_module._decode_body(bomb, "gzip", MAX_BODY)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert info.value.status == 413 and peak < 4 * 1024 * 1024, peak  # cap + 1 bytes inflated, not 16 MiB
