"""``edgefair serve REPO``: every model of a repository, its versions, and field checks.

Routes, beside the single-bundle server's: ``/v2/models/{name}/versions/{v}/...`` (one
version), ``/v2/models/{name}/...`` (the version the policy picks: the latest whose
certificate passed, unless ``edgefair.toml`` names one; never a version whose certificate
did not pass unless allowed), and the repository extension tritonclient speaks: ``POST
/v2/repository/index``, ``POST /v2/repository/models/{name}/load`` (re-reads the model's
folder; on any error the running versions are untouched) and ``/unload``, plus ``GET
/v2/repository/incidents``; these and every counted surface need the server's token.

A model with a ``[field]`` candidate runs it beside the serving version (``ShadowSession``)
on unversioned requests; every ``check_every`` labelled rows the policy's gate looks at
the paired table (and drift at the serving version), and a ``fail`` (never an
inconclusive) writes an incident and, unless the server is alert-only, sends unversioned
traffic to the last version whose certificate passed. Rolled-back versions stay off
after a restart (read back from the incident store).
"""

from __future__ import annotations

import dataclasses
import hmac
import json
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgefair.core import tables
from edgefair.errors import EdgefairError, RepositoryError
from edgefair.runtime.incidents import IncidentStore
from edgefair.serve import field
from edgefair.serve import protocol as v2
from edgefair.serve.deployment import Context, Deployment, Endpoint
from edgefair.serve.layout import LATEST_CERTIFIED, NAME, ModelEntry, scan, scan_model
from edgefair.serve.metrics import Metrics
from edgefair.version import __version__

GET, POST = ("GET", "HEAD"), ("POST",)


class _Sessions:
    """What the server closes on shutdown: every loaded version's session."""

    def __init__(self, repo: RepositoryApp):
        self.repo = repo

    def close(self) -> None:
        for d in self.repo.models.values():
            d.close()
        if self.repo.incidents is not None:
            self.repo.incidents.close()


class RepositoryApp:
    """Routing for a model repository; the single-bundle ``App`` serves each version."""

    def __init__(self, root: str | Path, config: Any, endpoint: Callable[[Path, Any], Endpoint]):
        self.root, self.config, self.endpoint = Path(root), config, endpoint
        self.ready = False
        store = Path(config.store) if config.store else None
        if store is not None and store.exists() and not store.is_dir():
            raise RepositoryError(f"{store}: with a repository, --store names a folder (one store per version)")
        self.incidents = IncidentStore(config.incidents) if getattr(config, "incidents", None) else None
        self.rollback = getattr(config, "rollback", True)
        self.context = Context(self.incidents, self.rollback, store, config.min_cell)
        self.metrics = Metrics()
        self.models: dict[str, Deployment] = {}
        try:
            entries = scan(self.root)
            for name, entry in entries.items():
                self.models[name] = self._deploy(entry)
        except BaseException:
            _Sessions(self).close()
            raise
        self.name = ", ".join(self.models)
        self.sensitive = sorted({s for d in self.models.values() for a in d.versions.values() for s in a.sensitive})
        self.session = _Sessions(self)
        self.ready = True

    # -- loading ----------------------------------------------------------------------------
    def _deploy(self, entry: ModelEntry) -> Deployment:
        versions: dict[int, Endpoint] = {}
        unavailable: dict[int, str] = {}
        try:
            for number, path in sorted(entry.versions.items()):
                store = Path(self.config.store) / f"{entry.name}-v{number}.db" if self.config.store else None
                cfg = dataclasses.replace(
                    self.config,
                    model_name=entry.name,
                    store=str(store) if store else None,
                    allow_failed_certificate=True,  # decided here, per the model's policy
                )
                app = self.endpoint(path, cfg)
                verdict = app.session.describe().certificate_verdict
                if verdict not in (None, "pass") and not (
                    entry.config.allow_failed_certificate or self.config.allow_failed_certificate
                ):
                    app.session.close()
                    unavailable[number] = f"certificate verdict {verdict}, not pass (allow_failed_certificate is off)"
                    continue
                versions[number] = app
        except BaseException:
            for app in versions.values():
                app.session.close()
            raise
        deployment = Deployment(entry, versions, unavailable, self.context)
        rejected = self.incidents.rolled_back(entry.name) if self.incidents else set()
        deployment.choose(rejected)
        return deployment

    def load(self, name: str) -> None:
        """(Re)load one model from its folder; on any error the running versions stay."""
        folder = self.root / name
        if not (NAME.fullmatch(name) and folder.is_dir()):
            raise v2.ClientError(f"unknown model {name!r}: no folder {folder}", 404)
        old = self.models.get(name)
        if old is not None:
            for app in old.versions.values():
                app.session.flush()  # the new sessions resume from everything counted so far
        try:
            fresh = self._deploy(scan_model(folder))
        except EdgefairError as exc:
            raise v2.ClientError(f"load of {name!r} refused, running versions untouched: {exc}") from None
        self.models[name] = fresh
        if old is not None:
            old.close()

    def unload(self, name: str) -> None:
        if name not in self.models:
            raise v2.ClientError(f"unknown or unloaded model {name!r}", 404)
        self.models.pop(name).close()

    # -- routes -----------------------------------------------------------------------------
    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes, dict[str, str]]:
        route = path.split("?", 1)[0].rstrip("/") or "/"
        parts = [urllib.parse.unquote(p) for p in route.strip("/").split("/")]
        if route == "/metrics":
            _allow(method, GET)
            self._authorise(headers)
            return 200, self.exposition().encode(), {"Content-Type": "text/plain; version=0.0.4"}
        if route == "/v2":
            _allow(method, GET)
            extensions = ["binary_tensor_data", "model_repository", "edgefair_fairness", "edgefair_incidents"]
            return _json(200, {"name": "edgefair", "version": __version__, "extensions": extensions})
        if route in ("/v2/health/live", "/v2/health/ready"):
            _allow(method, GET)
            return _json(200, {"live": True} if route.endswith("live") else {"ready": self.ready})
        if parts[:2] == ["v2", "repository"]:
            return self._repository(method, parts[2:], headers, body)
        if len(parts) < 3 or parts[:2] != ["v2", "models"]:
            raise v2.ClientError(f"no route {route}", 404)
        return self._model(method, parts[2], parts[3:], path, headers, body)

    def _repository(
        self, method: str, rest: list[str], headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes, dict[str, str]]:
        self._authorise(headers)
        if rest == ["index"]:
            _allow(method, POST)
            return _json(200, self.index())
        if rest == ["incidents"]:
            _allow(method, GET)
            return _json(200, [i.to_dict() for i in self.incidents.list()] if self.incidents else [])
        if len(rest) == 3 and rest[0] == "models" and rest[2] in ("load", "unload"):
            _allow(method, POST)
            doc = v2.loads(body) if body.strip() else {}
            params = doc.get("parameters") if isinstance(doc, dict) else None
            extra = sorted(set(params or {}) - {"unload_dependents"}) if isinstance(params, dict) else []
            if extra:  # tritonclient's config and file overrides: a model loads from its folder only
                raise v2.ClientError(f"load parameter {extra[0]!r} is not supported; a model loads from its folder")
            (self.load if rest[2] == "load" else self.unload)(rest[1])
            return _json(200, {})
        raise v2.ClientError(f"no route /v2/repository/{'/'.join(rest)}", 404)

    def _model(
        self, method: str, name: str, rest: list[str], path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes, dict[str, str]]:
        d = self.models.get(name)
        if d is None:
            raise v2.ClientError(f"unknown model {name!r}; this server serves {sorted(self.models)}", 404)
        version: int | None = None
        if len(rest) >= 2 and rest[0] == "versions":
            if not (rest[1].isascii() and rest[1].isdigit()) or int(rest[1]) not in d.versions:
                why = f" ({d.unavailable[int(rest[1])]})" if rest[1].isdigit() and int(rest[1]) in d.unavailable else ""
                raise v2.ClientError(
                    f"no loaded version {rest[1]!r} of {name!r}{why}; loaded: {sorted(d.versions)}", 404
                )
            version, rest = int(rest[1]), rest[2:]
        action = rest[0] if rest else ""
        if action == "incidents" and len(rest) == 1:
            _allow(method, GET)
            self._authorise(headers)
            return _json(200, [i.to_dict() for i in self.incidents.list(name)] if self.incidents else [])
        target = d.versions[version] if version is not None else d.router()
        query = "?" + path.split("?", 1)[1] if "?" in path else ""
        inner = f"/v2/models/{urllib.parse.quote(name, safe='')}" + "".join("/" + p for p in rest) + query
        status, payload, extra = target.handle(method, inner, headers, body)
        answered = version if version is not None else d.answered()
        if action == "" and status == 200:
            doc = json.loads(payload)
            doc["versions"] = [str(version)] if version is not None else [str(n) for n in sorted(d.versions)]
            return _json(200, doc)
        if action == "infer" and status == 200:  # encode_response says version 1; say which answered
            payload, extra = _stamp_version(payload, extra, answered)
        if action == "fairness" and status == 200 and version is None:
            doc = json.loads(payload)
            doc["version"] = d.default
            doc["field"] = d.field_summary()
            return _json(200, doc)
        if action == "outcomes" and status == 200 and version is None:
            d.look()
        return status, payload, extra

    # -- index and metrics --------------------------------------------------------------------
    def index(self) -> list[dict[str, Any]]:
        out = []
        for name in sorted(p.name for p in self.root.iterdir() if p.is_dir()):
            d = self.models.get(name)
            if d is None:
                out.append({"name": name, "state": "UNAVAILABLE", "reason": "unloaded"})
                continue
            for n in sorted(set(d.versions) | set(d.unavailable)):
                row: dict[str, Any] = {"name": name, "version": str(n)}
                row["state"] = "READY" if n in d.versions else "UNAVAILABLE"
                row["reason"] = d.unavailable.get(n, "rolled back" if n in d.rejected else "")
                row["serving"] = n == d.default
                out.append(row)
        return out

    def exposition(self) -> str:
        text = self.metrics.exposition(_NoSession(), self.config.min_cell)
        lines = text.split("# HELP edgefair_predictions_total", 1)[0].rstrip("\n").splitlines()
        families = {"edgefair_predictions_total": [], "edgefair_outcomes_total": []}  # type: dict[str, list[str]]
        for name, d in sorted(self.models.items()):
            for n, app in sorted(d.versions.items()):
                own = app.metrics.exposition(app.session, self.config.min_cell)
                for line in own.splitlines():
                    family = line.split("{", 1)[0]
                    if family in families:
                        families[family].append(line.replace("{", f'{{model="{_label(name)}",version="{n}",', 1))
        for family, rows in families.items():
            lines += [f"# HELP {family} Per model, version, attribute and group.", f"# TYPE {family} counter", *rows]
        gauges = {
            "edgefair_serving_version": ("gauge", "The version answering unversioned requests (0: none)."),
            "edgefair_rollbacks_total": ("counter", "Unversioned traffic switched back after a failed field check."),
            "edgefair_incidents_total": ("counter", "Failed field checks recorded (rolled back or alert only)."),
            "edgefair_field_looks_total": ("counter", "Looks the field gate took at the candidate."),
        }
        for metric, (kind, help_text) in gauges.items():
            lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} {kind}"]
            for name, d in sorted(self.models.items()):
                value = {
                    "edgefair_serving_version": d.default or 0,
                    "edgefair_rollbacks_total": d.rollbacks,
                    "edgefair_incidents_total": d.incidents,
                    "edgefair_field_looks_total": d.trial.watch.looks if d.trial else 0,
                }[metric]
                lines.append(f'{metric}{{model="{_label(name)}"}} {value}')
        lines += [
            "# HELP edgefair_field_pairs_total Shadow pairs by group and decisions.",
            "# TYPE edgefair_field_pairs_total counter",
        ]
        for name, d in sorted(self.models.items()):
            if d.trial is not None:
                lines += field.pair_lines(name, d.trial.candidate, d.trial.shadow.paired_table(), self.config.min_cell)
        return "\n".join(lines) + "\n"

    def _authorise(self, headers: dict[str, str]) -> None:
        if self.config.token is None:
            return
        given = headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {self.config.token}".encode()):
            raise v2.ClientError("this endpoint needs 'Authorization: Bearer <token>'", 401)


class _NoSession:
    """An empty session, so the request metrics render without a model's series."""

    class _Described:
        def __init__(self) -> None:
            self.sensitive: dict[str, list[str]] = {}

    def table(self) -> tables.CountsTable:
        return tables.empty(())

    def describe(self) -> Any:
        return self._Described()


def _stamp_version(payload: bytes, extra: dict[str, str], version: int | None) -> tuple[bytes, dict[str, str]]:
    """The response's ``model_version`` set to the version that answered (the JSON head is
    compact and starts with model_name, so the first match is that field)."""
    old, new = b'"model_version":"1"', f'"model_version":"{version}"'.encode()
    if version == 1 or old not in payload:
        return payload, extra
    payload = payload.replace(old, new, 1)
    key = "Inference-Header-Content-Length"
    if key in extra:  # binary outputs follow the head: its length moved with the edit
        extra = {**extra, key: str(int(extra[key]) + len(new) - len(old))}
    return payload, extra


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _allow(method: str, allowed: tuple[str, ...]) -> None:
    if method not in allowed:
        allow = ", ".join(allowed)
        raise v2.ClientError(f"method {method} is not allowed here; allowed: {allow}", 405, {"Allow": allow})


def _json(status: int, doc: Any) -> tuple[int, bytes, dict[str, str]]:
    return status, json.dumps(doc, separators=(",", ":")).encode(), {"Content-Type": "application/json"}


__all__ = ["LATEST_CERTIFIED", "RepositoryApp"]
