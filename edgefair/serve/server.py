"""``edgefair serve``: the Open Inference Protocol (v2 REST) on the standard library.

A small HTTP/1.1 server on asyncio streams (keep-alive, TCP_NODELAY, a deep listen
backlog; requests handled one at a time in arrival order, as uvicorn does) in front of a
FairSession. Sensitive attributes arrive as extra BYTES inputs
named in the bundle manifest and are stripped before the model. Client mistakes are 4xx
with ``{"error": "..."}``; rejected requests never move the counters. SIGTERM/SIGINT stop
accepting, let in-flight requests finish, flush the store and exit 0.

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
import ipaddress
import json
import re
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
from edgefair.serve.http import REASONS, new_loop, within

MAX_HEADER_BYTES = 16384  # the request line, and all header lines together
MAX_HEADERS = 100
IDLE_SECONDS = 30  # an idle keep-alive connection is closed after this
MAX_ERROR_CHARS = 500
LINGER_SECONDS = 2.0  # after a refusal: how long unread request bytes are drained before closing
TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# Content-Length: ASCII digits only (not '1_0', '+10', '0x10', '1 0' or Unicode digits); the
# spaces and tabs around a field value are not part of it (RFC 9112), NBSP and the like are
DIGITS = re.compile(r"[0-9]{1,19}")
DECODERS = {"gzip": 31, "x-gzip": 31, "deflate": 15}  # zlib wbits: gzip and zlib wrappers


class _Refusal(Exception):
    """A request refused while it is read: answered, then the connection is closed."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.headers = status, headers or {}


class _Request:
    def __init__(self, method: str, target: str, headers: dict[str, str], body: bytes, keep: bool):
        self.method, self.target, self.headers, self.body, self.keep = method, target, headers, body, keep


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


class _Connection:
    """One keep-alive connection: parse HTTP/1.1 requests, answer each in turn."""

    def __init__(self, server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.server, self.reader, self.writer = server, reader, writer
        self.reserved = 0  # bytes of this connection's body counted against the in-flight budget

    def _send(self, status: int, body: bytes, headers: dict[str, str], keep: bool, head: bool = False) -> None:
        lines = [
            f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}",
            f"Content-Length: {len(body)}",
            "Connection: keep-alive" if keep else "Connection: close",
        ]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head else body))

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

    async def refuse(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        """Answer, then close without a reset: stop writing, drain (and drop) what the client
        is still sending, for a bounded time and size."""
        self._error(status, message, False, headers)
        try:
            await asyncio.wait_for(self.writer.drain(), LINGER_SECONDS)
            if self.writer.can_write_eof():
                self.writer.write_eof()
            await asyncio.wait_for(self._discard(), LINGER_SECONDS)
        except (asyncio.TimeoutError, ConnectionError, OSError):
            pass

    async def _discard(self) -> None:
        budget = self.server.config.max_body_bytes + MAX_HEADER_BYTES
        while budget > 0:
            chunk = await self.reader.read(min(65536, budget))
            if not chunk:
                return
            budget -= len(chunk)

    async def run(self) -> None:
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # small responses go out at once
        timeout = self.server.config.read_timeout_seconds
        try:
            while not self.server.stopping.is_set():
                try:
                    line = await within(self.reader.readline(), IDLE_SECONDS)
                except ValueError:  # over the stream limit: no end of line within MAX_HEADER_BYTES
                    await self.refuse(431, "request line too large")
                    break
                if not line:
                    break
                try:
                    request = await within(self._read(line), timeout)
                except _Refusal as exc:
                    await self.refuse(exc.status, str(exc), exc.headers)
                    break
                except v2.ClientError as exc:  # the body was read: the connection can go on
                    self._release()
                    self._error(exc.status, str(exc), exc.status < 413, exc.headers)
                    await self._drain()
                    if exc.status >= 413:
                        break
                    continue
                except asyncio.TimeoutError:
                    await self.refuse(408, f"request not received within {timeout:g} s")
                    break
                keep = self._answer(request)
                self._release()
                # a response the client is slow to read counts against the budget until it is sent
                unsent = self.writer.transport.get_write_buffer_size()
                if unsent:
                    self._hold(unsent)
                    await self._drain()
                    self._release()
                if not keep:
                    break
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError, OSError, ValueError):
            pass
        finally:
            self._release()
            self.writer.close()

    async def _drain(self) -> None:
        """Wait until the response is handed to the kernel (at most IDLE_SECONDS)."""
        if self.writer.transport.get_write_buffer_size():
            await within(self.writer.drain(), IDLE_SECONDS)

    def _hold(self, size: int) -> None:
        self.server.inflight += size
        self.reserved += size

    def _release(self) -> None:
        self.server.inflight -= self.reserved
        self.reserved = 0

    async def _read(self, line: bytes) -> _Request:
        """The rest of one request after its first line: headers, then the body."""
        parts = line.decode("latin-1").split()
        if len(parts) != 3 or not TOKEN.fullmatch(parts[0]) or not parts[2].startswith("HTTP/"):
            raise _Refusal(400, "malformed request line")
        method, target, version = parts
        if version not in ("HTTP/1.1", "HTTP/1.0"):
            raise _Refusal(505, f"{version} is not supported; use HTTP/1.1")
        headers: dict[str, str] = {}
        lengths: set[str] = set()
        size = len(line)
        for _ in range(MAX_HEADERS + 1):
            try:
                h = await self.reader.readline()
            except ValueError:
                raise _Refusal(431, "request header line too large") from None
            size += len(h)
            if size > MAX_HEADER_BYTES:
                raise _Refusal(431, "request headers too large")
            if h in (b"\r\n", b"\n"):
                break
            if not h.endswith(b"\n"):
                raise asyncio.IncompleteReadError(h, None)  # the client went away mid-headers
            name, colon, value = h.decode("latin-1").rstrip("\r\n").partition(":")
            if not colon or not TOKEN.fullmatch(name):  # also ' Name' (folding) and 'Name :'
                raise _Refusal(400, "malformed header line")
            name, value = name.lower(), value.strip(" \t")  # OWS only: not NBSP and friends
            if name == "content-length":
                lengths.add(value)
            headers[name] = value
        else:
            raise _Refusal(431, f"more than {MAX_HEADERS} header lines")
        keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        if "transfer-encoding" in headers:
            if "chunked" in headers["transfer-encoding"].lower():
                raise _Refusal(411, "chunked bodies are not supported; send Content-Length")
            raise _Refusal(501, "Transfer-Encoding is not supported; send Content-Length")
        if len(lengths) > 1:
            raise _Refusal(400, "conflicting Content-Length headers")
        raw = headers.get("content-length", "0")
        if not DIGITS.fullmatch(raw):
            raise _Refusal(400, "Content-Length must be a decimal integer")
        length = int(raw)
        config = self.server.config
        if length > config.max_body_bytes:
            raise _Refusal(413, f"body of {length} bytes is over the cap of {config.max_body_bytes}")
        if length and self.server.inflight + length > config.max_inflight_bytes:
            raise _Refusal(503, "too many request bytes in flight; retry shortly", {"Retry-After": "1"})
        self._hold(length)
        if length and headers.get("expect", "").lower() == "100-continue":  # curl, for bodies over 1 KB
            self.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = await self.reader.readexactly(length) if length else b""
        if "content-encoding" in headers:
            body = _decode_body(body, headers["content-encoding"], config.max_body_bytes)
        return _Request(method, target, headers, body, keep)

    def _answer(self, request: _Request) -> bool:
        start = time.perf_counter()
        app = self.server.app
        keep, head = request.keep, request.method == "HEAD"
        endpoint = "infer" if request.target.split("?", 1)[0].rstrip("/").endswith("/infer") else "other"
        # handled in the event loop, one request at a time, in arrival order (as uvicorn does):
        # no GIL contention between requests and no starved connection under load
        try:
            status, payload, extra = app.handle(request.method, request.target, request.headers, request.body)
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


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


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
        self.app = App(bundle, self.config)
        self.stopping = threading.Event()
        self._loop = new_loop(loop)
        try:
            self._server = self._loop.run_until_complete(
                asyncio.start_server(
                    self._connected,
                    self.config.host,
                    self.config.port,
                    backlog=1024,
                    reuse_address=True,
                    limit=MAX_HEADER_BYTES,
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

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Connection(self, reader, writer)
        if self.connections >= self.config.max_connections:
            try:
                await conn.refuse(503, "too many connections; retry shortly", {"Retry-After": "1"})
            finally:
                writer.close()
            return
        self.connections += 1
        try:
            await conn.run()
        except asyncio.CancelledError:
            # shutdown cancels idle keep-alive connections; ending quietly keeps Python 3.11's
            # stream callback from logging the cancellation as an error
            pass
        finally:
            self.connections -= 1

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
        me = asyncio.current_task()
        idle = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
        for task in idle:  # keep-alive connections waiting for a next request
            task.cancel()
        await asyncio.gather(*idle, return_exceptions=True)
        await self._server.wait_closed()

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
