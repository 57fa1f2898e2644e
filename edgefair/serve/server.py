"""``edgefair serve``: the Open Inference Protocol (v2 REST) on the standard library.

An HTTP/1.1 server on asyncio Protocol callbacks (keep-alive, TCP_NODELAY, a deep backlog;
each request answered, in arrival order, inside the callback that completed it) in front of
a FairSession (see app.py). SIGTERM/SIGINT stop accepting, let in-flight requests finish,
flush the store and exit 0.

Bounded against sloppy or hostile clients: 16 KB of request line and headers (431), strict
Content-Length (400), headers and body within ``read_timeout_seconds`` (408), at most
``max_connections`` connections and ``max_inflight_bytes`` of bodies and unsent responses
at once (503 with Retry-After), gzip/deflate bodies decompressed up to the body cap (413).
A refusal is answered, then the connection drains what the client still sends (bounded)
and closes, so the client reads the answer instead of a reset. A non-loopback host needs a
token unless ``no_auth`` is set.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
import threading
import time
import zlib
from pathlib import Path
from typing import Any

from edgefair.errors import EdgefairError, InputError
from edgefair.serve import protocol as v2
from edgefair.serve.app import App, ServeConfig
from edgefair.serve.http import MAX_HEADER_BYTES, REASONS, Head, HeadReader, Refusal, is_loopback, new_loop
from edgefair.serve.http import MAX_HEADERS as MAX_HEADERS  # read here by the limits tests

IDLE_SECONDS = 30  # an idle keep-alive connection is closed after this
MAX_ERROR_CHARS = 500
LINGER_SECONDS = 2.0  # after a refusal: how long unread request bytes are drained before closing
DECODERS = {"gzip": 31, "x-gzip": 31, "deflate": 15}  # zlib wbits: gzip and zlib wrappers
# what a connection's one timer waits for; NONE: to be decided after the bytes at hand
NONE, IDLE, READING, DRAINING, LINGERING, CLOSED = range(6)


def _decode_body(body: bytes, encoding: str, cap: int) -> bytes:
    """The body under its Content-Encoding; never more than ``cap`` bytes decompressed."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in DECODERS:
        raise v2.ClientError(f"Content-Encoding {encoding!r} is not supported; use gzip, deflate or none", 415)
    d = zlib.decompressobj(DECODERS[encoding])
    try:
        out = d.decompress(body, cap + 1)
        if len(out) > cap:
            raise v2.ClientError(f"decompressed body is over the cap of {cap} bytes", 413)
        out += d.flush()
    except zlib.error:
        raise v2.ClientError(f"body is not valid {encoding} data") from None
    if len(out) > cap:
        raise v2.ClientError(f"decompressed body is over the cap of {cap} bytes", 413)
    if not d.eof or d.unused_data:
        raise v2.ClientError(f"body is not one complete {encoding} stream")
    return out


class _Connection(asyncio.Protocol):
    """One keep-alive connection: each request answered inside the callback that completed it.
    One timer, moved lazily (a later deadline needs no new timer): a whole request costs none."""

    def __init__(self, server: Server):
        self.server, self.config, self.loop = server, server.config, server._loop
        self.transport: Any = None
        self.buf: bytes | bytearray = b""  # bytes received and not yet consumed
        self.reader = HeadReader()
        self.head: Head | None = None  # a head whose body is awaited
        self.reserved = 0  # bytes of this connection's body counted against the in-flight budget
        self.counted = self.paused = self.held = self.eof = False
        self.wait, self.deadline, self.discarded, self.timer_at = NONE, 0.0, 0, 0.0
        self.timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol -------------------------------------------------------------------
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # small responses go out at once
        self.server.open.add(self)
        self._take_slot()

    def _take_slot(self) -> None:
        """The connection cap: past it, refused (503 with Retry-After); else counted until lost."""
        if self.server.connections >= self.config.max_connections:
            self.refuse(503, "too many connections; retry shortly", {"Retry-After": "1"})
            return
        self.server.connections += 1
        self.counted = True
        self._wait(IDLE, IDLE_SECONDS)

    def connection_lost(self, exc: Exception | None) -> None:
        self.wait = CLOSED
        self._release()
        if self.counted:
            self.counted = False
            self.server.connections -= 1
        self.server.open.discard(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def data_received(self, data: bytes) -> None:
        if self.wait >= LINGERING:  # refused: what the client still sends is dropped, up to a budget
            self.discarded += len(data)
            if self.discarded >= self.config.max_body_bytes + MAX_HEADER_BYTES:
                self.close()
            return
        if self.buf:
            if type(self.buf) is bytes:
                self.buf = bytearray(self.buf)
            self.buf += data
        else:
            self.buf = data
        if not self.held:
            self._process()

    def eof_received(self) -> bool:
        self.eof = True
        if not self.held:
            self._at_eof()
        return True  # the transport stays open to send an answer; close() ends it

    def pause_writing(self) -> None:  # the transport's buffer is over its high-water mark
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.held:  # the unsent response went out: read on
            self.held = False
            self._release()
            self.transport.resume_reading()
            self.wait = NONE
            self._process()
            if self.eof and not self.held:
                self._at_eof()

    # -- requests ---------------------------------------------------------------------------
    def _process(self) -> None:
        """Answer every request complete in the buffer, in order; keep what is left."""
        buf, pos, reader = self.buf, 0, self.reader
        try:
            while self.wait < LINGERING:
                head = self.head
                if head is None:
                    if pos == len(buf):
                        break
                    head, pos = reader.feed(buf, pos)
                    if head is None:
                        break
                    self._admit(head)
                    self.head = head
                length = head.length
                if len(buf) - pos < length:
                    break
                body = bytes(buf[pos : pos + length]) if length else b""
                pos += length
                self.head, self.reader, self.wait = None, HeadReader(), NONE
                reader = self.reader
                if not self._request(head, body) or self.server.stopping.is_set():
                    self.close()
                    return
                if self.paused:  # a response the client is slow to read counts until it is sent
                    self._hold(self.transport.get_write_buffer_size())
                    self.held = True
                    self.transport.pause_reading()
                    break
        except Refusal as exc:
            self.refuse(exc.status, str(exc), exc.headers)
            return
        if self.wait >= LINGERING:
            return
        self.buf = buf[pos:] if pos else buf
        if self.held:
            self._wait(DRAINING, IDLE_SECONDS)
        elif self.head is not None or reader.method:  # within a request: its deadline runs from its line
            if self.wait != READING:
                self._wait(READING, self.config.read_timeout_seconds)
        elif self.wait != IDLE:
            self._wait(IDLE, IDLE_SECONDS)

    def _at_eof(self) -> None:
        """The client sent its last byte: a half-sent line is checked as a line, then we close."""
        if self.wait >= LINGERING:
            self.close()
            return
        try:
            if self.head is None:
                self.reader.at_eof(self.buf)
        except Refusal as exc:
            self._error(exc.status, str(exc), False, exc.headers)
        self.close()

    def _admit(self, head: Head) -> None:
        """A head's body before it is read: under the body cap and within the in-flight budget,
        where it is held until answered."""
        length = head.length
        config = self.config
        if length > config.max_body_bytes:
            raise Refusal(413, f"body of {length} bytes is over the cap of {config.max_body_bytes}")
        if length and self.server.inflight + length > config.max_inflight_bytes:
            raise Refusal(503, "too many request bytes in flight; retry shortly", {"Retry-After": "1"})
        self._hold(length)
        if length and head.headers.get("expect", "").lower() == "100-continue":  # curl, for bodies over 1 KB
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _request(self, head: Head, body: bytes) -> bool:
        """Answer one request whose body is in; whether the connection goes on."""
        if "content-encoding" in head.headers:
            try:
                body = _decode_body(body, head.headers["content-encoding"], self.config.max_body_bytes)
            except v2.ClientError as exc:  # the body was read: the connection can go on
                self._release()
                self._error(exc.status, str(exc), exc.status < 413, exc.headers)
                return exc.status < 413
        keep = self._answer(head, body)
        self._release()
        return keep

    def _hold(self, size: int) -> None:
        self.server.inflight += size
        self.reserved += size

    def _release(self) -> None:
        self.server.inflight -= self.reserved
        self.reserved = 0

    # -- timers and endings -----------------------------------------------------------------
    def _wait(self, kind: int, seconds: float) -> None:
        self.wait = kind
        self.deadline = deadline = self.loop.time() + seconds
        if self.timer is None or deadline < self.timer_at:
            if self.timer is not None:
                self.timer.cancel()
            self.timer, self.timer_at = self.loop.call_at(deadline, self._expire), deadline

    def _expire(self) -> None:
        self.timer = None
        if self.wait == CLOSED:
            return
        if self.loop.time() + 0.001 < self.deadline:  # moved on since the timer was set
            self.timer, self.timer_at = self.loop.call_at(self.deadline, self._expire), self.deadline
        elif self.wait == READING:
            self.refuse(408, f"request not received within {self.config.read_timeout_seconds:g} s")
        else:  # idle, or a response or a refusal not taken within its time
            self.close()

    def refuse(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        """Answer, then close without a reset: drop what the client still sends (bounded)."""
        self._error(status, message, False, headers)
        self.buf, self.head, self.discarded = b"", None, 0
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._wait(LINGERING, LINGER_SECONDS)
        if self.eof:
            self.close()

    def close(self) -> None:
        if self.wait != CLOSED:
            self.wait = CLOSED
            self.transport.close()  # what is still buffered is sent first

    # -- responses --------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, headers: dict[str, str], keep: bool, head: bool = False) -> None:
        extra = "".join(map("{}: {}\r\n".format, headers, headers.values()))  # no comprehension frame
        line = (
            f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\nContent-Length: {len(body)}\r\n"
            f"Connection: {'keep-alive' if keep else 'close'}\r\n{extra}\r\n"
        )
        self.transport.write(line.encode("latin-1") + (b"" if head else body))

    def _error(
        self, status: int, message: str, keep: bool, headers: dict[str, str] | None = None, head: bool = False
    ) -> None:
        # one line per error; messages name fields, never the request's sensitive values, and
        # a client's long names or values are cut so neither the log nor the reply balloons
        if len(message) > MAX_ERROR_CHARS:
            message = message[:MAX_ERROR_CHARS] + "..."
        print(f"edgefair serve: {status} {message}", file=sys.stderr, flush=True)
        extra = {"Content-Type": "application/json", **(headers or {})}
        self._send(status, json.dumps({"error": message}).encode(), extra, keep, head)

    def _answer(self, request: Head, body: bytes) -> bool:
        start = time.perf_counter()
        app = self.server.app
        keep, head = request.keep, request.method == "HEAD"
        endpoint = "infer" if request.target.split("?", 1)[0].rstrip("/").endswith("/infer") else "other"
        # handled in the event loop, one request at a time, in arrival order (as uvicorn does):
        # no GIL contention between requests and no starved connection under load
        try:
            status, payload, extra = app.handle(request.method, request.target, request.headers, body)
            self._send(status, payload, extra, keep, head)
        except v2.ClientError as exc:
            status = exc.status
            keep = keep and status < 413
            self._error(status, str(exc), keep, exc.headers, head)
        except EdgefairError as exc:
            status = 400
            self._error(400, str(exc), keep, None, head)
        except Exception as exc:  # a bug of ours, not the client's
            status, keep = 500, False
            self._error(500, f"internal error: {type(exc).__name__}", False, None, head)
        app.metrics.request(endpoint, status, time.perf_counter() - start)
        return keep


def bind_warning(config: ServeConfig) -> str | None:
    """The warning to print when ``no_auth`` lets a non-loopback host be served without a token."""
    if config.token is None and not is_loopback(config.host):
        return (
            f"edgefair serve: WARNING: serving {config.host} without a token (no_auth): anyone who can "
            "reach it can post outcomes and read raw counters"
        )
    return None


class Server:
    """Start with ``serve_forever()`` (blocking) or ``start()`` (a background thread)."""

    def __init__(self, bundle: str | Path, config: ServeConfig | None = None, *, loop: str = "auto"):
        self.config = config or ServeConfig()
        c = self.config
        if not 0 <= c.port <= 65535:
            raise InputError(f"--port must be between 0 and 65535, got {c.port}")
        if c.threads < 1 or c.max_body_bytes < 1 or c.max_elements < 1:
            raise InputError("--threads, --max-body-bytes and the element cap must be positive")
        if c.max_connections < 1 or c.max_inflight_bytes < 1 or not c.read_timeout_seconds > 0:
            raise InputError("max_connections, max_inflight_bytes and read_timeout_seconds must be positive")
        if c.min_cell < 2:
            raise InputError(f"--min-cell must be at least 2 (smaller shows exact counts), got {c.min_cell}")
        if c.token is None and not c.no_auth and not is_loopback(c.host):
            raise InputError(
                f"refusing to serve {c.host} without a token: pass --token-file, bind 127.0.0.1, "
                "or pass --no-auth to serve it unprotected"
            )
        self.connections = 0  # open connections being served
        self.inflight = 0  # bytes of request bodies being read or handled, and of responses unsent
        self.open: set[_Connection] = set()  # every connection, served or being refused
        self.app = App(bundle, self.config)
        self.stopping = threading.Event()
        self._loop = new_loop(loop)
        try:
            self._server = self._loop.run_until_complete(
                self._loop.create_server(
                    lambda: _Connection(self), self.config.host, self.config.port, backlog=1024, reuse_address=True
                )
            )
        except (OSError, OverflowError) as exc:
            self.app.session.close()
            self._loop.close()
            reason = getattr(exc, "strerror", None) or str(exc)
            raise InputError(f"cannot listen on {self.config.host}:{self.config.port} ({reason})") from None
        self.port = int(self._server.sockets[0].getsockname()[1])
        self._thread: threading.Thread | None = None
        self._done = threading.Event()

    def serve_forever(self) -> None:
        """Serve until ``stop()`` or a signal; in-flight requests finish (each runs to completion
        in the loop before the next starts), then the store is flushed."""
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._wait_for_stop())
        finally:
            self._loop.run_until_complete(self._shutdown())
            self._loop.close()
            self.app.session.close()
            self._done.set()

    async def _shutdown(self) -> None:
        self._server.close()
        await asyncio.sleep(0.05)  # let written responses reach the sockets
        for connection in list(self.open):  # keep-alive connections waiting for a next request
            connection.close()
        await self._server.wait_closed()
        await asyncio.sleep(0)  # their connection_lost callbacks

    async def _wait_for_stop(self) -> None:
        while not self.stopping.is_set():
            await asyncio.sleep(0.1)

    def start(self) -> Server:
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, finish in-flight requests, flush the store."""
        self.stopping.set()
        if self._thread is not None:
            self._done.wait(timeout=30)

    def install_signal_handlers(self) -> None:
        def stop(signum: int, frame: Any) -> None:
            self.stopping.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)


def serve(bundle: str | Path, config: ServeConfig, announce: Any = print) -> None:
    """Run until SIGTERM/SIGINT, then drain, flush and return."""
    server = Server(bundle, config)
    warning = bind_warning(config)
    if warning is not None:
        announce(warning)
    server.install_signal_handlers()
    announce(
        f"edgefair serve: {server.app.name} on http://{config.host}:{server.port} "
        f"(Open Inference Protocol v2; /metrics; sensitive inputs: {', '.join(server.app.sensitive)})"
    )
    server.serve_forever()
    server.stop()
    announce("edgefair serve: stopped; counters flushed")
