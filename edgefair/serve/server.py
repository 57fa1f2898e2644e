"""``edgefair serve``: the Open Inference Protocol (v2 REST) on the standard library.

A small HTTP/1.1 server on asyncio streams (keep-alive, TCP_NODELAY, a deep listen
backlog; requests handled one at a time in arrival order, as uvicorn does) in front of a
FairSession. Sensitive attributes arrive as extra BYTES inputs
named in the bundle manifest and are stripped before the model. Client mistakes are 4xx
with ``{"error": "..."}``; rejected requests never move the counters. SIGTERM/SIGINT stop
accepting, let in-flight requests finish, flush the store and exit 0.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from edgefair.errors import EdgefairError, InputError
from edgefair.serve import protocol as v2
from edgefair.serve.app import App, ServeConfig

REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    411: "Length Required",
    413: "Payload Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
MAX_HEADER_BYTES = 16384
IDLE_SECONDS = 30  # an idle keep-alive connection is closed after this


class _Connection:
    """One keep-alive connection: parse HTTP/1.1 requests, answer each in turn."""

    def __init__(self, server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.server, self.reader, self.writer = server, reader, writer

    def _send(self, status: int, body: bytes, headers: dict[str, str], keep: bool) -> None:
        head = [
            f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}",
            f"Content-Length: {len(body)}",
            "Connection: keep-alive" if keep else "Connection: close",
        ]
        head += [f"{k}: {v}" for k, v in headers.items()]
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)

    def _error(self, status: int, message: str, keep: bool) -> None:
        # one line per error; messages name fields, never the request's sensitive values
        print(f"edgefair serve: {status} {message}", file=sys.stderr, flush=True)
        self._send(status, json.dumps({"error": message}).encode(), {"Content-Type": "application/json"}, keep)

    async def run(self) -> None:
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # small responses go out at once
        try:
            while not self.server.stopping.is_set():
                keep = await asyncio.wait_for(self._one_request(), IDLE_SECONDS)
                await self.writer.drain()
                if not keep:
                    break
        except (
            asyncio.TimeoutError,
            asyncio.IncompleteReadError,
            ConnectionError,
            asyncio.LimitOverrunError,
            ValueError,
        ):
            pass
        finally:
            self.writer.close()

    async def _one_request(self) -> bool:
        line = await self.reader.readline()
        if not line:
            return False
        try:
            method, target, version = line.decode("latin-1").split()
        except ValueError:
            self._error(400, "malformed request line", False)
            return False
        headers: dict[str, str] = {}
        size = 0
        while True:
            h = await self.reader.readline()
            size += len(h)
            if size > MAX_HEADER_BYTES:
                self._error(431, "request headers too large", False)
                return False
            if h in (b"\r\n", b"\n", b""):
                break
            name, _, value = h.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self._error(411, "chunked bodies are not supported; send Content-Length", False)
            return False
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            self._error(400, "Content-Length must be an integer", False)
            return False
        app = self.server.app
        if length < 0 or length > app.config.max_body_bytes:
            self._error(413, f"body of {length} bytes is over the cap of {app.config.max_body_bytes}", False)
            return False
        body = await self.reader.readexactly(length) if length else b""
        start = time.perf_counter()
        endpoint = "infer" if target.endswith("/infer") else "other"
        # handled in the event loop, one request at a time, in arrival order (as uvicorn does):
        # no GIL contention between requests and no starved connection under load
        try:
            status, payload, extra = app.handle(method, target, headers, body)
            self._send(status, payload, extra, keep)
        except v2.ClientError as exc:
            status = exc.status
            keep = keep and status < 413
            self._error(status, str(exc), keep)
        except EdgefairError as exc:
            status = 400
            self._error(400, str(exc), keep)
        except Exception as exc:  # a bug of ours, not the client's
            status, keep = 500, False
            self._error(500, f"internal error: {type(exc).__name__}", False)
        app.metrics.request(endpoint, status, time.perf_counter() - start)
        return keep


class Server:
    """Start with ``serve_forever()`` (blocking) or ``start()`` (a background thread)."""

    def __init__(self, bundle: str | Path, config: ServeConfig | None = None):
        self.config = config or ServeConfig()
        c = self.config
        if not 0 <= c.port <= 65535:
            raise InputError(f"--port must be between 0 and 65535, got {c.port}")
        if c.threads < 1 or c.max_body_bytes < 1 or c.max_elements < 1:
            raise InputError("--threads, --max-body-bytes and the element cap must be positive")
        self.app = App(bundle, self.config)
        self.stopping = threading.Event()
        self._loop = asyncio.new_event_loop()
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
        await _Connection(self, reader, writer).run()

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
    server.install_signal_handlers()
    announce(
        f"edgefair serve: {server.app.name} on http://{config.host}:{server.port} "
        f"(Open Inference Protocol v2; /metrics; sensitive inputs: {', '.join(server.app.sensitive)})"
    )
    server.serve_forever()
    server.stop()
    announce("edgefair serve: stopped; counters flushed")
