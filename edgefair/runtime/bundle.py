"""Bundles: a model, its manifest (hashes of every file) and its certificate, checked on load.

Loading refuses a bundle whose files, sizes or hashes differ from the manifest, naming the
file. Untrusted models: the one model-safety check (``modelio.safety``: a size cap, no
external data, only the default and ai.onnx.ml operator domains) runs when a bundle is
built and again when it is loaded, without needing the onnx package on the device.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgefair import modelio
from edgefair.errors import BundleError
from edgefair.modelio.safety import check_model_bytes

MANIFEST = "manifest.json"
MANIFEST_HASH = "manifest.sha256"  # integrity of the manifest itself (not a signature)
MODEL = "model.onnx"
CERTIFICATE = "certificate.json"


@dataclass(frozen=True)
class Bundle:
    path: Path
    manifest: dict[str, Any]
    model: bytes
    certificate: dict[str, Any] | None

    @property
    def sensitive(self) -> dict[str, list[str]]:
        return dict(self.manifest["sensitive"])

    def baseline(self) -> Any:
        from edgefair.core import tables

        cert = self.manifest.get("certificate")
        if not cert or not cert.get("baseline_table"):
            return None
        return tables.from_dict(cert["baseline_table"])


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def build_bundle(
    model: str | Path,
    out: str | Path,
    *,
    certificate: str | Path | None = None,
    sensitive: Sequence[str] | None = None,
    threshold: float | None = None,
    score_output: str | None = None,
) -> Path:
    """Write a bundle directory atomically (built beside ``out``, then renamed)."""
    import datetime as dt  # build-time only: kept off the device's import path
    import shutil
    import tempfile

    model_path, out_dir = Path(model), Path(out)
    if not model_path.exists():
        raise BundleError(f"{model_path}: no such model file")
    data = model_path.read_bytes()
    check_model_bytes(data, str(model_path))
    cert = _read_certificate(certificate, _sha(data)) if certificate else None
    sig = modelio.signature(modelio.open_session(data))
    choice = modelio.choose_output(sig, score_output or (cert["data"]["score_output"] if cert else None))
    known = _known_values(cert, sensitive)
    if not known:
        raise BundleError("name the sensitive attributes (--sensitive) or give a certificate")
    if threshold is None:
        threshold = float(cert["data"]["threshold"]) if cert else 0.5
    files = {MODEL: data}
    if cert:
        files[CERTIFICATE] = (json.dumps(cert, indent=2) + "\n").encode()
    manifest = {
        "schema_version": 1,
        "kind": "edgefair.bundle",
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "files": {n: {"sha256": _sha(b), "size_bytes": len(b)} for n, b in files.items()},
        "model": MODEL,
        "inputs": [t.to_dict() for t in sig.inputs],
        "outputs": [t.to_dict() for t in sig.outputs],
        "score_output": choice.name,
        "threshold": threshold,
        "sensitive": known,
        "certificate": None
        if not cert
        else {"file": CERTIFICATE, "verdict": cert["verdict"], "baseline_table": _candidate_baseline(cert)},
    }
    files[MANIFEST] = (json.dumps(manifest, indent=2) + "\n").encode()
    files[MANIFEST_HASH] = (_sha(files[MANIFEST]) + "\n").encode()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        for name, blob in files.items():
            (tmp / name).write_bytes(blob)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _read_certificate(path: str | Path, model_sha: str) -> dict[str, Any]:
    p = Path(path)
    try:
        cert: dict[str, Any] = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BundleError(f"{p}: not a readable verify report ({exc})") from None
    if cert.get("kind") != "edgefair.verify_report":
        raise BundleError(f"{p}: not an edgefair verify report")
    if cert["candidate"]["sha256"] != model_sha:
        raise BundleError(
            f"{p}: the certificate is for model {cert['candidate']['sha256'][:12]}, not this one ({model_sha[:12]})"
        )
    return cert


def _candidate_baseline(cert: dict[str, Any]) -> dict[str, Any]:
    return dict(cert["table"])


def _known_values(cert: dict[str, Any] | None, sensitive: Sequence[str] | None) -> dict[str, list[str]]:
    if cert is None:
        return {s: [] for s in (sensitive or [])}
    table = cert["table"]
    attrs = table["attributes"]
    known: dict[str, list[str]] = {a: [] for a in attrs}
    for g in table["groups"]:
        for a, v in zip(attrs, g["key"], strict=True):
            if v not in known[a]:
                known[a].append(v)
    if sensitive and list(sensitive) != list(attrs):
        raise BundleError(f"--sensitive {list(sensitive)} does not match the certificate's {attrs}")
    return {a: sorted(v) for a, v in known.items()}


def _read_files(path: Path) -> dict[str, bytes]:
    import zipfile

    if path.is_dir():
        return {p.name: p.read_bytes() for p in path.iterdir() if p.is_file()}
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            return {Path(n).name: z.read(n) for n in z.namelist() if not n.endswith("/")}
    raise BundleError(f"{path}: not a bundle (expected a directory or a zip file)")


def load_bundle(path: str | Path) -> Bundle:
    """Read and verify a bundle: every file's size and SHA-256 must match the manifest."""
    p = Path(path)
    if not p.exists():
        raise BundleError(f"{p}: no such bundle")
    files = _read_files(p)
    if MANIFEST not in files:
        raise BundleError(f"{p}: no {MANIFEST}")
    if MANIFEST_HASH not in files:
        raise BundleError(f"{p}: no {MANIFEST_HASH}")
    if files[MANIFEST_HASH] != (_sha(files[MANIFEST]) + "\n").encode():  # exact: every byte counts
        raise BundleError(f"{p}/{MANIFEST}: SHA-256 does not match {MANIFEST_HASH} (tampered?)")
    try:
        manifest = json.loads(files[MANIFEST])
        listed = manifest["files"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise BundleError(f"{p}/{MANIFEST}: not a valid bundle manifest") from None
    for name, meta in listed.items():
        if name not in files:
            raise BundleError(f"{p}/{name}: listed in the manifest but missing")
        blob = files[name]
        if len(blob) != meta["size_bytes"] or _sha(blob) != meta["sha256"]:
            raise BundleError(f"{p}/{name}: size or SHA-256 does not match the manifest (tampered?)")
    extra = set(files) - set(listed) - {MANIFEST, MANIFEST_HASH}
    if extra:
        raise BundleError(f"{p}/{sorted(extra)[0]}: file not listed in the manifest")
    model = files[manifest.get("model", MODEL)]
    # the hashes say the model is the one bundled; the safety check says it is safe to load
    check_model_bytes(model, f"{p}/{manifest.get('model', MODEL)}")  # no onnx needed on the device
    cert = json.loads(files[CERTIFICATE]) if CERTIFICATE in files else None
    return Bundle(p, manifest, model, cert)
