"""The server's fast paths against slower, independent ones.

- The request-head reader (serve/http.py, fed bytes as they arrive) against the reader it
  replaced: the same checks run on the standard library's asyncio.StreamReader, one
  ``readline`` per line (the oracle below is that code). Every head, good or malformed, read
  whole (the one-split path), byte by byte (the line-by-line path) or through the oracle, ends
  the same: the same head, or the same refusal (status and message), or a silent close.
- All-plain infer requests (protocol._plain_inputs) against the checked loop of
  ``parse_request``: same arrays (names, order, dtype, shape, values) or the same refusal.
- The live server: the same bytes sent whole or in pieces get the same answer; an idle
  keep-alive connection is closed after the idle time, a busy one is not (the lazy timer).
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from edgefair.bundling import build_bundle
from edgefair.serve import http
from edgefair.serve import plain as plain_module
from edgefair.serve import protocol as v2
from edgefair.serve import server as srv_module
from edgefair.serve.app import ServeConfig
from edgefair.serve.server import Server
from tests.conftest import exchange
from tests.models import no_weights

TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
DIGITS = re.compile(r"[0-9]{1,19}")


class _Refused(Exception):
    pass


async def _oracle(raw: bytes) -> tuple[Any, ...]:
    """The head as the StreamReader-based server read it (its code, limits and messages)."""
    reader = asyncio.StreamReader(limit=16384)
    reader.feed_data(raw)
    reader.feed_eof()
    try:
        line = await reader.readline()
    except ValueError:
        return ("refused", 431, "request line too large")
    if not line:
        return ("eof",)
    try:
        parts = line.decode("latin-1").split()
        if len(parts) != 3 or not TOKEN.fullmatch(parts[0]) or not parts[2].startswith("HTTP/"):
            raise _Refused(400, "malformed request line")
        method, target, version = parts
        if version not in ("HTTP/1.1", "HTTP/1.0"):
            raise _Refused(505, f"{version} is not supported; use HTTP/1.1")
        headers: dict[str, str] = {}
        lengths: set[str] = set()
        size = len(line)
        for _ in range(101):
            try:
                h = await reader.readline()
            except ValueError:
                raise _Refused(431, "request header line too large") from None
            size += len(h)
            if size > 16384:
                raise _Refused(431, "request headers too large")
            if h in (b"\r\n", b"\n"):
                break
            if not h.endswith(b"\n"):
                return ("eof",)
            name, colon, value = h.decode("latin-1").rstrip("\r\n").partition(":")
            if not colon or not TOKEN.fullmatch(name):
                raise _Refused(400, "malformed header line")
            name, value = name.lower(), value.strip(" \t")
            if name == "content-length":
                lengths.add(value)
            headers[name] = value
        else:
            raise _Refused(431, "more than 100 header lines")
        keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        if "transfer-encoding" in headers:
            if "chunked" in headers["transfer-encoding"].lower():
                raise _Refused(411, "chunked bodies are not supported; send Content-Length")
            raise _Refused(501, "Transfer-Encoding is not supported; send Content-Length")
        if len(lengths) > 1:
            raise _Refused(400, "conflicting Content-Length headers")
        raw_length = headers.get("content-length", "0")
        if not DIGITS.fullmatch(raw_length):
            raise _Refused(400, "Content-Length must be a decimal integer")
    except _Refused as exc:
        return ("refused", *exc.args)
    return ("head", method, target, headers, int(raw_length), keep)


def _read(raw: bytes, step: int | None) -> tuple[Any, ...]:
    """The head as HeadReader reads it from ``raw`` arriving whole (step None) or in pieces
    of ``step`` bytes, then the end of the stream."""
    reader, buf, pos = http.HeadReader(), b"", 0
    pieces = [raw] if step is None else [raw[i : i + step] for i in range(0, len(raw), step)]
    try:
        for piece in pieces:
            buf += piece
            head, pos = reader.feed(buf, pos)
            if head is not None:
                return ("head", head.method, head.target, head.headers, head.length, head.keep)
        reader.at_eof(buf[pos:])
    except http.Refusal as exc:
        return ("refused", exc.status, str(exc))
    return ("eof",)


HEADS = [
    b"GET /v2 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /v2 HTTP/1.1\nHost: x\n\n",
    b"GET /v2 HTTP/1.1\r\nHost: x\n\r\n",
    b"GET /v2 HTTP/1.1\r\n\nHost: x\r\n\r\n",
    b"POST /v2/models/m/infer HTTP/1.0\r\nContent-Length: 12\r\nConnection: keep-alive\r\n\r\n",
    b"POST / HTTP/1.1\r\nCONTENT-LENGTH: \t7 \t\r\nConnection: CLOSE\r\n\r\n",
    b"POST / HTTP/1.1\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\n",
    b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
    b"POST / HTTP/1.1\r\nContent-Length: \xa05\r\n\r\n",
    b"POST / HTTP/1.1\r\nContent-Length: 1_0\r\n\r\n",
    b"POST / HTTP/1.1\r\nContent-Length: " + b"9" * 20 + b"\r\n\r\n",
    b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n",
    b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
    b"GET /v2 HTTP/1.1\r\nX: v\r\r\n\r\n",  # a stray CR before the line end
    b"GET /v2 HTTP/1.1\r\n\r\r\n\r\n",
    b"GET /v2 HTTP/1.1\r\nX: a\rb\r\n\r\n",
    b"GET /v2 HTTP/1.1\r\n Folded: v\r\n\r\n",
    b"GET /v2 HTTP/1.1\r\nName : v\r\n\r\n",
    b"GET /v2 HTTP/1.1\r\nNo colon\r\n\r\n",
    b"GET /v2 HTTP/1.1\r\nN(ame): v\r\n\r\n",
    b"GET /v2 HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n",
    b"\r\n\r\n",
    b"\r\nGET /v2 HTTP/1.1\r\n\r\n",
    b"GET /v2\r\n\r\n",
    b"GET /v2 HTTP/2.0\r\n\r\n",
    b"G(T /v2 HTTP/1.1\r\n\r\n",
    b"GET /v2 FTP/1.1\r\n\r\n",
    b"GET\x85/v2\xa0HTTP/1.1\r\n\r\n",  # latin-1 white space splits the line, as before
    b"GET /v2 HTTP/1.1\x0b\r\n\r\n",
    b"BAD LINE",  # no line end, then the end of the stream
    b"GET /v2 HTTP/1.1",
    b"GET /v2 HTTP/1.1\r\nHost: x",
    b"GET /v2 HTTP/1.1\r\nHost: x\r\n",
    b"",
    b"GET /v2 HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(100)) + b"\r\n",
    b"GET /v2 HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(101)) + b"\r\n",
    b"GET /v2 HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(100)) + b"Bad line\r\n\r\n",
    b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n",
    b"GET /" + b"a" * 20000,
    b"GET /v2 HTTP/1.1\r\nX-Pad: " + b"a" * 20000 + b"\r\n\r\n",
    b"GET /v2 HTTP/1.1\r\nX-Pad: " + b"a" * 20000,
]


def _sized(total: int, end: bytes = b"\r\n\r\n") -> bytes:
    """A head of exactly ``total`` bytes (request line, one padded header, ``end``)."""
    start = b"GET /v2 HTTP/1.1\r\nX-Pad: "
    return start + b"a" * (total - len(start) - len(end)) + end


SIZED = [_sized(n) for n in (16383, 16384, 16385)] + [_sized(n, b"\n\n") for n in (16383, 16384, 16385)]
# a request line, or a header line, whose line feed is at index 16383, 16384 (the last allowed) and 16385
SIZED += [b"GET /" + b"a" * n + b" HTTP/1.1\r\n\r\n" for n in (16367, 16368, 16369, 16370)]
SIZED += [b"GET / HTTP/1.1\r\nX-Pad: " + b"a" * n + b"\r\n\r\n" for n in (16375, 16376, 16377)]
SIZED += [_sized(16384, b"\r\n")[:-2] + b"aa", _sized(16386, b"")]  # no end, up to and past the cap


@pytest.mark.parametrize("raw", HEADS + SIZED, ids=lambda raw: repr(raw[:40]) + f"/{len(raw)}")
def test_a_head_reads_alike_whole_in_pieces_and_through_the_stream_reader(raw: bytes) -> None:
    expected = asyncio.run(_oracle(raw))
    assert _read(raw, None) == expected
    assert _read(raw, 1 if len(raw) < 300 else 997) == expected
    assert _read(raw, 5) == expected if len(raw) < 3000 else True


def test_random_heads_read_alike() -> None:
    """Random heads from fragments that sit at the rules' edges."""
    rng = random.Random(14)
    lines = [b"GET /v2 HTTP/1.1", b"POST /x HTTP/1.0", b"GET  /v2  HTTP/1.1 ", b"GET /v2", b"\tGET /v2 HTTP/1.1"]
    fields = [
        b"Host: x", b"Content-Length: 3", b"content-length:3", b"Content-Length: 4", b"Connection: close",
        b"Transfer-Encoding: chunked", b"X: a:b", b"X:", b": v", b"X v", b" X: v", b"X\t: v", b"X: \xa0v",
        b"Expect: 100-continue", b"X: v\r", b"\r", b"",
    ]  # fmt: skip
    ends = [b"\r\n", b"\n", b"\r\r\n"]
    for _ in range(400):
        parts = [rng.choice(lines)] + [rng.choice(fields) for _ in range(rng.randint(0, 5))]
        raw = b"".join(p + rng.choice(ends) for p in parts) + rng.choice([b"\r\n", b"\n", b""])
        expected = asyncio.run(_oracle(raw))
        assert _read(raw, None) == expected, raw
        assert _read(raw, rng.randint(1, 9)) == expected, raw


# -- JSON tensors: the all-plain loop against the checked loop --------------------------------


def _parse(doc: dict[str, Any], max_elements: int = 64) -> tuple[Any, ...]:
    try:
        request = v2.parse_request(json.dumps(doc).encode(), None, max_elements)
    except v2.ClientError as exc:
        return ("refused", exc.status, str(exc))
    # bytes, not values: NaN is not equal to itself
    return (
        "ok",
        [(k, a.dtype, a.shape, a.tolist() if a.dtype == object else a.tobytes()) for k, a in request.inputs.items()],
    )


def test_plain_requests_build_what_the_checked_loop_builds() -> None:
    """The same document parsed as it is and with ``"parameters": {}`` in each input (which
    the checked loop ignores and the plain loop does not take) gives the same arrays or the
    same refusal; many documents do take the plain loop."""
    rng = random.Random(3)
    values: list[Any] = [0, 1, -7, 2**24, 2**31, 2**63, 0.5, -0.0, 3.4e38, 1e39, "a", "", True, None, [1], [[1]]]
    values += [float("nan"), float("inf"), -3.4e38, 1e308, "\U0010ffff" * 9, 2**24 - 1, -(2**24) + 1]
    datatypes = ["FP32", "FP64", "INT64", "INT8", "UINT8", "BYTES", "BOOL", "FP16", "NOPE", 3]
    shapes: list[Any] = [[1, 1], [1, 2], [2, 1], [2, 2], [1, 0], [1], [True, 1], [1.0, 1], [-1, 1], [1, 65], "ab", None]
    plain = cached = 0
    for _ in range(1500):
        inputs = []
        for i in range(rng.randint(1, 3)):
            shape = rng.choice(shapes if rng.random() < 0.2 else shapes[:4])
            count = shape[0] * shape[1] if isinstance(shape, list) and len(shape) == 2 else 1
            count = count if isinstance(count, int) and 0 <= count <= 70 else 1
            datatype = rng.choice(datatypes if rng.random() < 0.15 else ["FP32", "BYTES", "INT64"])
            pool = values if rng.random() < 0.15 else ([0.25, 3, -2.5] if datatype != "BYTES" else ["x", "é"])
            data = [rng.choice(pool) for _ in range(count + (rng.random() < 0.05))]
            name = rng.choice([f"in{i}", f"in{i}", "in0", 7])
            inputs.append({"name": name, "datatype": datatype, "shape": shape, "data": data})
        # the same layout again with other values: a remembered layout (plain._cached_singles)
        # must give what the checked loop gives for these values too
        again = [{**item, "data": [rng.choice(values) for _ in item["data"]]} for item in inputs]
        for each in (inputs, again, inputs):
            doc = {"inputs": each}
            checked = {"inputs": [{**item, "parameters": {}} for item in each]}
            assert _parse(doc) == _parse(checked), doc
        plain += v2._plain_inputs(json.loads(json.dumps(inputs)), 64) is not None
        cached += plain_module._cached_singles(json.loads(json.dumps(inputs)), 64) is not None
    assert plain > 200 and cached > 40, (plain, cached)


def test_a_remembered_layout_builds_what_the_checked_loop_builds() -> None:
    """Rows of single values (what clients send for one row of scalar features), many of one
    layout: the remembered layout (plain._cached_singles) answers most of them, and every answer
    equals the checked loop's (values that must not take it: NaN, infinities, out of range,
    "", true for 1, other types)."""
    rng = random.Random(5)
    pools: dict[str, list[Any]] = {
        "FP32": [0.5, -2.0, 3, 3.4e38, -3.4e38, 1e39, float("nan"), float("inf"), 2**24, 2**24 + 1, True, "1", None],
        "INT64": [0, -5, 2**63 - 1, 2**63, 1.0, True, "a"],
        "BYTES": ["a", "White", "", "\U0010ffff" * 9, 1, None, ["a"]],
        "UINT8": [0, 255, 256, -1, 7],
    }
    layouts = [
        [("age", "FP32"), ("race", "BYTES"), ("n", "INT64"), ("sex", "BYTES"), ("hours", "FP32"), ("gain", "FP32")],
        [("x", "FP32"), ("b", "UINT8")],
    ]
    hits = 0
    for i in range(600):
        layout = layouts[i % 2]
        clean = rng.random() < 0.6
        inputs = [
            {
                "name": n,
                "datatype": d,
                "shape": [True, 1] if rng.random() < 0.02 else [1, 1],
                "data": [rng.choice(pools[d][:2] if clean else pools[d])],
            }
            for n, d in layout
        ]
        doc = {"inputs": inputs}
        checked = {"inputs": [{**item, "parameters": {}} for item in inputs]}
        hits += plain_module._cached_singles(json.loads(json.dumps(inputs)), 64) is not None
        assert _parse(doc) == _parse(checked), doc
        if i % 10 == 0:  # a server that takes no values at all refuses the layout it remembered at 64
            assert _parse(doc, 0) == _parse(checked, 0), doc
    assert hits > 150, hits


def test_plain_arrays_are_the_checked_arrays_bit_for_bit() -> None:
    """float32 values from one cast equal the checked path's float64 -> float32 cast, near the
    range's edge and for halfway cases too; dtypes and shapes as the checked loop gives."""
    rng = np.random.default_rng(0)
    floats = np.concatenate([rng.normal(0, 1e30, 300), rng.uniform(-1, 1, 300), [1 + 2**-24, 3.3999e38, 1e-45]])
    for value in floats.tolist():
        doc = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [value, -value]}]}
        fast = v2.parse_request(json.dumps(doc).encode(), None, 64).inputs["x"]
        slow = v2._checked_array([value, -value], "FP32", "x").reshape(1, 2)
        assert fast.dtype == slow.dtype and fast.shape == slow.shape and fast.tobytes() == slow.tobytes()
    doc = {"inputs": [{"name": "s", "datatype": "BYTES", "shape": [2, 1], "data": ["a", "b"]}]}
    s = v2.parse_request(json.dumps(doc).encode(), None, 64).inputs["s"]
    assert s.dtype == object and s.shape == (2, 1) and s.tolist() == [["a"], ["b"]]


# -- the live server ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fastpath")
    onnx.save(no_weights(), out / "tiny.onnx")  # score = Sigmoid(x), x float[N, 1]
    return build_bundle(out / "tiny.onnx", out / "tiny", sensitive=["grp"])


@pytest.fixture(scope="module")
def server(bundle: Path) -> Iterator[Server]:
    s = Server(bundle, ServeConfig(port=0, max_body_bytes=4096)).start()
    yield s
    s.stop()


def test_the_same_bytes_get_the_same_answer_whole_or_in_pieces(server: Server) -> None:
    body = b'{"inputs":[{"name":"x","shape":[2,1],"datatype":"FP32","data":[0.5,1.5]}]}'
    infer = b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    requests = [
        infer + infer,  # pipelined
        infer.replace(b"\r\n", b"\n"),
        b"GET /v2/health/live HTTP/1.1\r\n\r\nGET /v2 HTTP/1.1\r\nConnection: close\r\n\r\n",
        b"GET /v2 HTTP/1.1\r\n Folded: x\r\n\r\n",
        b"BAD LINE",  # answered at the end of the stream, as a line
        b"POST /v2/models/tiny/infer HTTP/1.1\r\nContent-Length: 3\r\nContent-Encoding: br\r\n\r\n{x}",
    ]
    for raw in requests:
        whole = exchange(server.port, raw, None)
        assert whole.startswith(b"HTTP/1.1 "), raw
        assert exchange(server.port, raw, 7) == whole, raw
    assert exchange(server.port, requests[0], None).count(b"HTTP/1.1 200 OK") == 2
    assert exchange(server.port, b"BAD LINE", None).startswith(b"HTTP/1.1 400 Bad Request")


def test_idle_connections_close_and_busy_ones_stay(bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(srv_module, "IDLE_SECONDS", 0.4)
    s = Server(bundle, ServeConfig(port=0)).start()
    try:
        busy = socket.create_connection(("127.0.0.1", s.port), timeout=5)
        idle = socket.create_connection(("127.0.0.1", s.port), timeout=5)
        idle.sendall(b"GET /v2/health/live HTTP/1.1\r\n\r\n")
        assert idle.recv(65536).startswith(b"HTTP/1.1 200")
        t0 = time.monotonic()
        while time.monotonic() - t0 < 1.2:  # three idle times, a request every 0.1 s
            busy.sendall(b"GET /v2/health/live HTTP/1.1\r\n\r\n")
            assert busy.recv(65536).startswith(b"HTTP/1.1 200")
            time.sleep(0.1)
        assert idle.recv(65536) == b""  # closed by the server, without an answer
        busy.sendall(b"GET /v2/health/live HTTP/1.1\r\n\r\n")
        assert busy.recv(65536).startswith(b"HTTP/1.1 200")
        busy.close()
        idle.close()
    finally:
        s.stop()


def test_a_response_of_every_output_is_what_naming_each_output_gives() -> None:
    doc = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [0.5]}]}
    outputs: dict[str, np.ndarray] = {
        "score": np.array([[0.25]], np.float32),
        "label": np.array([1], np.int64),
        "s": np.array(["é"], object),
    }
    every = v2.parse_request(json.dumps(doc).encode(), None, 64)
    named = v2.parse_request(json.dumps({**doc, "outputs": [{"name": n} for n in outputs]}).encode(), None, 64)
    assert every.outputs is None and named.outputs is not None
    body, length = v2.encode_response("m", "id", outputs, every)
    assert (body, length) == v2.encode_response("m", "id", outputs, named) and length is None
    assert json.loads(body)["outputs"][2] == {"name": "s", "datatype": "BYTES", "shape": [1], "data": ["é"]}


@pytest.mark.slow
def test_a_response_the_client_is_slow_to_read_is_held_against_the_budget(bundle: Path) -> None:
    """A 7.6 MB response to a client with a tiny receive window stops the connection reading
    and counts its unsent bytes in flight until it is sent; then the connection goes on."""
    s = Server(bundle, ServeConfig(port=0)).start()
    n = 400_000
    body = json.dumps({"inputs": [{"name": "x", "shape": [n, 1], "datatype": "FP32", "data": [0.5] * n}]}).encode()
    raw = b"POST /v2/models/tiny/infer HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    try:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", s.port))
            sock.sendall(raw)
            for _ in range(600):
                if any(c.held for c in list(s.open)):
                    break
                time.sleep(0.05)
            assert any(c.held for c in s.open) and s.inflight > 1_000_000  # unsent bytes, not the body
            head = b""
            while b"\r\n\r\n" not in head:
                head += sock.recv(65536)
            length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
            got = len(head.split(b"\r\n\r\n", 1)[1])
            while got < length:
                got += len(sock.recv(1 << 20))
            for _ in range(100):  # sent: released while the connection stays open
                if s.inflight == 0 and not any(c.held for c in s.open):
                    break
                time.sleep(0.02)
            assert s.inflight == 0 and head.startswith(b"HTTP/1.1 200 OK")
            sock.sendall(b"GET /v2/health/live HTTP/1.1\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK")
    finally:
        s.stop()


def test_the_budget_is_back_to_zero_while_the_connection_stays_open(server: Server) -> None:
    """Each answered request gives its body's bytes back at once, not when its connection ends."""
    body = b'{"inputs":[{"name":"x","shape":[1,1],"datatype":"FP32","data":[0.5]}]}'
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        for _ in range(2):
            sock.sendall(b"POST /v2/models/tiny/infer HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK")
            for _ in range(100):
                if server.inflight == 0:
                    break
                time.sleep(0.01)
            assert server.inflight == 0
