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
import hmac
import json
import signal
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgefair import __version__
from edgefair.errors import EdgefairError, InputError
from edgefair.runtime.counters import UNKNOWN
from edgefair.runtime.session import FairSession
from edgefair.serve import protocol as v2
from edgefair.serve.metrics import Metrics, fairness_summary

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


@dataclass(frozen=True, kw_only=True)
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    threads: int = 1  # onnxruntime intra-op threads
    store: str | None = None
    token: str | None = None
    max_body_bytes: int = 8 * 1024 * 1024
    max_elements: int = 1_000_000
    require_sensitive: bool = False
    min_cell: int = 11
    model_name: str | None = None


class App:
    """Routing and the protocol; independent of sockets so it is easy to reason about."""

    def __init__(self, bundle: str | Path, config: ServeConfig):
        self.config = config
        self.ready = False
        self.session = FairSession(bundle, store=config.store, threads=config.threads)
        manifest = self.session.bundle.manifest if self.session.bundle else {}
        self.name = config.model_name or Path(bundle).name.removesuffix(".zip")
        self.sensitive = list(self.session.counters.attributes)
        self.inputs = {t.name: t for t in self.session.signature.inputs}
        self.metadata = {
            "name": self.name,
            "versions": ["1"],
            "platform": "onnxruntime_onnx",
            "inputs": [self._tensor_meta(t) for t in self.session.signature.inputs]
            + [
                {"name": s, "datatype": "BYTES", "shape": [-1], "parameters": {"edgefair_sensitive": True}}
                for s in self.sensitive
            ],
            "outputs": [self._tensor_meta(t) for t in self.session.signature.outputs],
            "parameters": {
                "score_output": self.session.choice.name,
                "threshold": self.session.threshold,
                "sensitive": self.sensitive,
                "certificate": bool(manifest.get("certificate")),
            },
        }
        self.metrics = Metrics()
        self.ready = True

    @staticmethod
    def _tensor_meta(t: Any) -> dict[str, Any]:
        return {
            "name": t.name,
            "datatype": v2.ORT_TO_V2.get(t.type, t.type),
            "shape": [d if isinstance(d, int) else -1 for d in t.shape],
        }

    # -- routes ---------------------------------------------------------------------------
    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes, dict[str, str]]:
        route = path.split("?", 1)[0].rstrip("/") or "/"
        parts = route.strip("/").split("/")
        if route == "/metrics" and method == "GET":
            return (
                200,
                self.metrics.exposition(self.session).encode(),
                {"Content-Type": "text/plain; version=0.0.4"},
            )
        if parts[0] != "v2":
            raise v2.ClientError(f"no route {route}", 404)
        if route == "/v2":
            return self._json(
                200,
                {
                    "name": "edgefair",
                    "version": __version__,
                    "extensions": ["binary_tensor_data", "edgefair_fairness"],
                },
            )
        if route == "/v2/health/live":
            return self._json(200, {"live": True})
        if route == "/v2/health/ready":
            return self._json(200 if self.ready else 503, {"ready": self.ready})
        if len(parts) < 3 or parts[1] != "models":
            raise v2.ClientError(f"no route {route}", 404)
        if parts[2] != self.name:
            raise v2.ClientError(f"unknown model {parts[2]!r}; this server serves {self.name!r}", 404)
        rest = parts[3:]
        if len(rest) >= 2 and rest[0] == "versions":
            if rest[1] != "1":
                raise v2.ClientError(f"unknown version {rest[1]!r} of {self.name!r}; versions: ['1']", 404)
            rest = rest[2:]
        action = rest[0] if rest else ""
        if action == "" and method == "GET":
            return self._json(200, self.metadata)
        if action == "ready" and method == "GET":
            return self._json(200 if self.ready else 503, {"name": self.name, "ready": self.ready})
        if action == "infer" and method == "POST":
            return self._infer(headers, body)
        if action == "outcomes" and method == "POST":
            self._authorise(headers)
            return self._outcomes(body)
        if action == "fairness" and method == "GET":
            return self._json(200, fairness_summary(self.session, self.config.min_cell))
        if action == "counters" and method == "GET":
            return self._counters(path, headers)
        raise v2.ClientError(f"no route {method} {route}", 404 if action not in ("infer", "outcomes") else 405)

    def _json(self, status: int, doc: Any) -> tuple[int, bytes, dict[str, str]]:
        return status, json.dumps(doc, separators=(",", ":")).encode(), {"Content-Type": "application/json"}

    def _authorise(self, headers: dict[str, str]) -> None:
        if self.config.token is None:
            return
        given = headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {self.config.token}".encode()):
            raise v2.ClientError("this endpoint needs 'Authorization: Bearer <token>'", 401)

    def _infer(self, headers: dict[str, str], body: bytes) -> tuple[int, bytes, dict[str, str]]:
        length = headers.get("inference-header-content-length")
        try:
            header_length = int(length) if length is not None else None
        except ValueError:
            raise v2.ClientError("Inference-Header-Content-Length must be an integer") from None
        request = v2.parse_request(body, header_length, self.config.max_elements)
        sensitive, rows = self._split_sensitive(request)
        rid = request.id or uuid.uuid4().hex
        ids = self._row_ids(request, rid, rows)
        try:
            outputs = self.session.run(request.inputs, sensitive, ids)
        except InputError as exc:
            raise v2.ClientError(str(exc)) from None
        body_out, json_len = v2.encode_response(self.name, rid, outputs, request)
        extra = {"Content-Type": "application/json"}
        if json_len is not None:
            extra = {
                "Content-Type": "application/octet-stream",
                "Inference-Header-Content-Length": str(json_len),
            }
        return 200, body_out, extra

    def _split_sensitive(self, request: v2.InferRequest) -> tuple[dict[str, Any], int]:
        model_inputs = {k: v for k, v in request.inputs.items() if k in self.inputs}
        unknown = set(request.inputs) - set(self.inputs) - set(self.sensitive)
        if unknown:
            raise v2.ClientError(
                f"unknown input {sorted(unknown)[0]!r}; model inputs are "
                f"{sorted(self.inputs)}, sensitive inputs {self.sensitive}"
            )
        missing = set(self.inputs) - set(model_inputs)
        if missing:
            raise v2.ClientError(f"missing model input {sorted(missing)[0]!r}")
        rows = {v.shape[0] if v.ndim else 1 for v in model_inputs.values()}
        if len(rows) != 1:
            raise v2.ClientError("model inputs disagree on the number of rows")
        n = rows.pop()
        sensitive: dict[str, Any] = {}
        for name in self.sensitive:
            if name in request.inputs:
                # a sensitive attribute the model also takes (e.g. Adult's race) is counted from
                # that input and still fed to the model; any other is stripped before the model
                values = (request.inputs[name] if name in self.inputs else request.inputs.pop(name)).reshape(-1)
                if values.dtype != object:
                    raise v2.ClientError(f"sensitive input {name!r} must be BYTES")
                if len(values) != n:
                    raise v2.ClientError(f"sensitive input {name!r} has {len(values)} values for {n} rows")
                sensitive[name] = values.tolist()
            elif self.config.require_sensitive:
                raise v2.ClientError(f"sensitive input {name!r} is required by this server")
            else:
                sensitive[name] = [UNKNOWN] * n
        return sensitive, n

    @staticmethod
    def _row_ids(request: v2.InferRequest, rid: str, rows: int) -> list[str]:
        given = request.parameters.get("edgefair_ids")
        if given is not None:
            if not isinstance(given, list) or len(given) != rows or not all(isinstance(i, str) for i in given):
                raise v2.ClientError(f"parameter edgefair_ids must be a list of {rows} strings")
            return given
        return [rid] if rows == 1 else [f"{rid}/{i}" for i in range(rows)]

    def _outcomes(self, body: bytes) -> tuple[int, bytes, dict[str, str]]:
        try:
            doc = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise v2.ClientError("request body is not valid JSON") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("ids"), list) or not isinstance(doc.get("labels"), list):
            raise v2.ClientError("outcomes need 'ids' and 'labels' lists")
        try:
            result = self.session.record_outcomes(doc["ids"], doc["labels"])
        except InputError as exc:
            raise v2.ClientError(str(exc)) from None
        self.metrics.outcome_stats(result)
        return self._json(200, result.to_dict())

    def _counters(self, path: str, headers: dict[str, str]) -> tuple[int, bytes, dict[str, str]]:
        from edgefair.runtime.privacy import private_export

        raw = "raw=1" in path.split("?", 1)[-1]
        if raw:
            self._authorise(headers)
            if self.config.token is None:
                raise v2.ClientError("raw counters need a server started with --token-file", 401)
            return self._json(200, self.session.table().to_dict())
        return self._json(200, private_export(self.session.table(), self.config.min_cell))


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
