"""The Open Inference Protocol's routes over a FairSession, independent of sockets.

Sensitive attributes arrive as extra BYTES inputs named in the bundle manifest and are
stripped before the model. Client mistakes raise ``protocol.ClientError`` (4xx with
``{"error": "..."}``); rejected requests never move the counters.
"""

from __future__ import annotations

import hmac
import os
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from edgefair.errors import InputError
from edgefair.runtime.counters import UNKNOWN
from edgefair.runtime.session import FairSession
from edgefair.serve import protocol as v2
from edgefair.serve.metrics import Metrics, fairness_summary
from edgefair.version import __version__


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
    # HTTP hardening (edge-box defaults): past max_connections or max_inflight_bytes of
    # request bodies being read at once, a request gets 503 with Retry-After; a request's
    # headers and body must arrive within read_timeout_seconds of its first line (else 408).
    max_connections: int = 64
    max_inflight_bytes: int = 64 * 1024 * 1024
    read_timeout_seconds: float = 5.0
    # serve a non-loopback host without a token (the CLI's --no-auth); prints a warning
    no_auth: bool = False
    trust_key: str | None = None  # EC public key (PEM): serve only bundles it signed
    allow_failed_certificate: bool = False  # serve a bundle whose certificate did not pass
    # a model repository (serve/repository.py): where incidents are kept, and whether a failed
    # field check switches unversioned traffic back (False: alert only)
    incidents: str | None = None
    rollback: bool = True


GET, POST = ("GET", "HEAD"), ("POST",)
ROUTES = {"": GET, "ready": GET, "infer": POST, "outcomes": POST, "fairness": GET, "counters": GET}


def _allow(method: str, allowed: tuple[str, ...]) -> None:
    if method not in allowed:
        allow = ", ".join(allowed)
        raise v2.ClientError(f"method {method} is not allowed here; allowed: {allow}", 405, {"Allow": allow})


class App:
    """Routing and the protocol; independent of sockets so it is easy to reason about."""

    def __new__(cls, bundle: str | Path | None = None, config: ServeConfig | None = None) -> Any:
        """A model repository (``REPO/<model>/<version>/``) gets ``RepositoryApp``, which serves
        each version with an App; a bundle gets an App."""
        if cls is App and bundle is not None and config is not None:
            from edgefair.serve.layout import is_repository

            if is_repository(bundle):
                from edgefair.serve.repository import RepositoryApp

                return RepositoryApp(bundle, config, App)
        return super().__new__(cls)

    def __init__(self, bundle: str | Path, config: ServeConfig):
        self.config = config
        self.ready = False
        self.session = FairSession(
            bundle,
            store=config.store,
            threads=config.threads,
            trust_key=config.trust_key,
            allow_failed_certificate=config.allow_failed_certificate,
        )
        described = self.session.describe()
        self.name = config.model_name or Path(bundle).name.removesuffix(".zip")
        self.sensitive = described.attributes
        self.inputs = {t.name: t for t in described.inputs}
        self.output_names = [t.name for t in described.outputs]
        self._known = set(self.inputs) | set(self.sensitive)  # every input name a request may send
        self.metadata = {
            "name": self.name,
            "versions": ["1"],
            "platform": "onnxruntime_onnx",
            # each name once: a sensitive attribute the model itself takes (Adult's race in the
            # sklearn model) is listed as that model input, marked sensitive
            "inputs": [self._tensor_meta(t, t.name in self.sensitive) for t in described.inputs]
            + [
                {"name": s, "datatype": "BYTES", "shape": [-1], "parameters": {"edgefair_sensitive": True}}
                for s in self.sensitive
                if s not in self.inputs
            ],
            "outputs": [self._tensor_meta(t) for t in described.outputs],
            "parameters": {
                "score_output": described.score_output,
                "threshold": described.threshold,
                "sensitive": self.sensitive,
                "certificate": described.certificate_verdict is not None,
            },
        }
        self.metrics = Metrics()
        self.ready = True

    @staticmethod
    def _tensor_meta(t: Any, sensitive: bool = False) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "name": t.name,
            "datatype": v2.ORT_TO_V2.get(t.type, t.type),
            "shape": [d if isinstance(d, int) else -1 for d in t.shape],
        }
        if sensitive:
            meta["parameters"] = {"edgefair_sensitive": True}
        return meta

    # -- routes ---------------------------------------------------------------------------
    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes, dict[str, str]]:
        """One request. ``HEAD`` is answered as ``GET`` (the server sends no body); a known
        route with a method it does not take is 405 with ``Allow``."""
        route = path.split("?", 1)[0].rstrip("/") or "/"
        # segments are percent-decoded one by one (tritonclient quotes model names)
        parts = route.strip("/").split("/")
        if "%" in route:  # unquote returns a segment without "%" as it is
            parts = [unquote(p) for p in parts]
        if route == "/metrics":
            _allow(method, GET)
            self._authorise(headers)  # counted data: the token, when the server has one
            return (
                200,
                self.metrics.exposition(self.session, self.config.min_cell).encode(),
                {"Content-Type": "text/plain; version=0.0.4"},
            )
        if parts[0] != "v2":
            raise v2.ClientError(f"no route {route}", 404)
        if route == "/v2":
            _allow(method, GET)
            return self._json(
                200,
                {
                    "name": "edgefair",
                    "version": __version__,
                    "extensions": ["binary_tensor_data", "edgefair_fairness"],
                },
            )
        if route == "/v2/health/live":
            _allow(method, GET)
            return self._json(200, {"live": True})
        if route == "/v2/health/ready":
            _allow(method, GET)
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
        if len(rest) > 1 or action not in ROUTES:
            raise v2.ClientError(f"no route {method} {route}", 404)
        _allow(method, ROUTES[action])
        if action == "":
            return self._json(200, self.metadata)
        if action == "ready":
            return self._json(200 if self.ready else 503, {"name": self.name, "ready": self.ready})
        if action == "infer":
            return self._infer(headers, body)
        if action == "outcomes":
            self._authorise(headers)
            return self._outcomes(body)
        if action == "fairness":
            self._authorise(headers)
            return self._json(200, fairness_summary(self.session, self.config.min_cell))
        self._authorise(headers)
        return self._counters(path, headers)

    def _json(self, status: int, doc: Any) -> tuple[int, bytes, dict[str, str]]:
        return status, v2.compact_json(doc).encode(), {"Content-Type": "application/json"}

    def _authorise(self, headers: dict[str, str]) -> None:
        if self.config.token is None:
            return
        given = headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {self.config.token}".encode()):
            raise v2.ClientError("this endpoint needs 'Authorization: Bearer <token>'", 401)

    def _infer(self, headers: dict[str, str], body: bytes) -> tuple[int, bytes, dict[str, str]]:
        length = headers.get("inference-header-content-length")
        if length is not None and not (length.isascii() and length.isdigit() and len(length) <= 19):
            raise v2.ClientError("Inference-Header-Content-Length must be a non-negative integer")
        header_length = int(length) if length is not None else None
        request = v2.parse_request(body, header_length, self.config.max_elements)
        # everything that can refuse the request is checked before the model runs and counts
        v2.check_outputs(request, self.output_names)
        sensitive, rows = self._split_sensitive(request)
        rid = os.urandom(16).hex() if request.id is None else request.id  # as random as uuid4, 32 hex digits
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
        names = request.inputs.keys()
        unknown = names - self._known
        if unknown:
            raise v2.ClientError(
                f"unknown input {sorted(unknown)[0]!r}; model inputs are "
                f"{sorted(self.inputs)}, sensitive inputs {self.sensitive}"
            )
        missing = self.inputs.keys() - names
        if missing:
            raise v2.ClientError(f"missing model input {sorted(missing)[0]!r}")
        arrays = list(map(request.inputs.__getitem__, self.inputs))
        try:
            rows = set(map(len, arrays))  # no comprehension frame per request; len: the first dimension
        except TypeError:  # a 0-d input counts as one row
            rows = {v.shape[0] if v.ndim else 1 for v in arrays}
        if len(rows) != 1:
            raise v2.ClientError("model inputs disagree on the number of rows")
        n = rows.pop()
        sensitive: dict[str, Any] = {}
        for name in self.sensitive:
            if name in request.inputs:
                # a sensitive attribute the model also takes (e.g. Adult's race) is counted from
                # that input and still fed to the model; any other is stripped before the model
                values = (request.inputs[name] if name in self.inputs else request.inputs.pop(name)).reshape(-1)
                if values.dtype.kind != "O":  # not dtype object
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
        doc = v2.loads(body)
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

        query = urllib.parse.parse_qs(path.split("?", 1)[1]) if "?" in path else {}
        raw = query.get("raw", ["0"])[-1] in ("1", "true")
        if raw:
            if self.config.token is None:
                raise v2.ClientError("raw counters need a server started with --token-file", 401)
            return self._json(200, self.session.table().to_dict())
        return self._json(200, private_export(self.session.table(), self.config.min_cell))


def read_token(path: str | Path) -> str:
    """The bearer token in ``path`` (white space stripped); an InputError if none."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such token file")
    token = p.read_text(encoding="utf-8").strip()
    if not token:
        raise InputError(f"{p}: the token file is empty")
    return token
