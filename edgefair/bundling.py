"""Building bundles (not needed on the device): model, manifest, certificate, written atomically.

A certificate (a verify report) is re-gated from its own table and policy before anything is
built (``verification.certificate.recheck``): an edited verdict or a deleted check is refused,
and a model verified against itself is marked as such. A bundle is built beside its target
folder and swapped in. An existing folder is replaced only if it is empty or an edgefair
bundle holding nothing but its own files.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgefair import modelio
from edgefair.core import tables
from edgefair.errors import BundleError, InputError
from edgefair.modelio.safety import check_model_bytes
from edgefair.modelio.task_outputs import detect_task
from edgefair.runtime.bundle import (
    CERTIFICATE,
    MANIFEST,
    MANIFEST_HASH,
    MAX_BUNDLE_BYTES,
    MODEL,
    BundleFiles,
    check_manifest,
    load_bundle,
    sha256_hex,
)
from edgefair.runtime.signing import (
    MAX_SIGNATURE_BYTES,
    SIGNATURE,
    materialized,
    sign_blobs,
    sign_folder,
    signing_library,
)
from edgefair.verification.certificate import compared_with_itself, recheck


def build_bundle(
    model: str | Path,
    out: str | Path,
    *,
    certificate: str | Path | None = None,
    sensitive: Sequence[str] | None = None,
    threshold: float | None = None,
    score_output: str | None = None,
    allow_failed_certificate: bool = False,
    sign_key: str | Path | None = None,
) -> Path:
    """Write a bundle directory atomically (built beside ``out``, then renamed).

    Refuses an ``out`` that exists and is not empty or an edgefair bundle."""
    model_path, out_dir = Path(model), Path(out)
    if not model_path.is_file():
        raise BundleError(f"{model_path}: no such model file")
    data = model_path.read_bytes()
    check_model_bytes(data, str(model_path))
    cert = _read_certificate(certificate, sha256_hex(data)) if certificate else None
    if cert is not None:  # the verdict carried is the one recomputed here, never the file's word
        recheck(cert, str(certificate))
    if cert is not None and cert["verdict"] != "pass" and not allow_failed_certificate:
        raise BundleError(
            f"{certificate}: the certificate's verdict is {cert['verdict']}, not pass; "
            "bundle it anyway with --allow-failed-certificate (recorded in the manifest)"
        )
    sig = modelio.signature(modelio.open_session(data))
    _refuse_uncountable(model_path, sig, score_output, cert)
    choice = modelio.choose_output(sig, score_output or (cert["data"]["score_output"] if cert else None))
    known = _known_values(cert, sensitive)
    if not known:
        raise BundleError("name the sensitive attributes (--sensitive) or give a certificate")
    if threshold is None:
        threshold = float(cert["data"]["threshold"]) if cert else 0.5
    if not (math.isfinite(threshold) and 0.0 <= threshold <= 1.0):
        raise BundleError(f"threshold must be a number in [0, 1], got {threshold}")
    files = {MODEL: data}
    if cert:
        files[CERTIFICATE] = (json.dumps(cert, indent=2) + "\n").encode()
    manifest = {
        "schema_version": 1,
        "kind": "edgefair.bundle",
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "files": {n: {"sha256": sha256_hex(b), "size_bytes": len(b)} for n, b in files.items()},
        "model": MODEL,
        "inputs": [t.to_dict() for t in sig.inputs],
        "outputs": [t.to_dict() for t in sig.outputs],
        "score_output": choice.name,
        "threshold": threshold,
        "sensitive": known,
        "certificate": None
        if not cert
        else {
            "file": CERTIFICATE,
            "verdict": cert["verdict"],
            "allowed_failed": cert["verdict"] != "pass",
            "compared_with_itself": compared_with_itself(cert),
            "baseline_table": _candidate_baseline(cert),
        },
    }
    files[MANIFEST] = (json.dumps(manifest, indent=2) + "\n").encode()
    files[MANIFEST_HASH] = (sha256_hex(files[MANIFEST]) + "\n").encode()
    check_manifest(manifest, f"{out_dir}/{MANIFEST}")
    if sign_key is not None:  # signed in memory, so the bundle is written (atomically) signed or not at all
        files[SIGNATURE] = sign_blobs(files, sign_key, name=out_dir.name)
    _write_dir(out_dir, files)
    return out_dir


def _refuse_uncountable(path: Path, sig: modelio.Signature, output: str | None, cert: dict[str, Any] | None) -> None:
    """The runtime counts binary decisions only: a multi-class or regression model is refused
    here, when the bundle is built, not at the first ``FairSession.run``. The task is the
    certificate's, else the signature's ([N, K > 2] class scores); a [N, 1] regression output
    cannot be told from a score without a certificate (``run`` then refuses values outside [0, 1])."""
    task = (cert.get("task") or {}).get("kind") if cert else None
    task = task or detect_task(sig, output)
    if task != "binary":
        raise BundleError(
            f"{path}: a {task} model; the runtime counts binary classifiers only (a score in [0, 1] or a 0/1 label), "
            "so it cannot be bundled"
        )


def _replaceable(out_dir: Path) -> bool:
    """May ``out_dir`` be replaced? Only if it is missing, empty, or an edgefair bundle that
    holds nothing but its own listed files: never delete what edgefair did not create."""
    if not out_dir.exists():
        return False
    if not out_dir.is_dir() or out_dir.is_symlink():
        raise BundleError(f"{out_dir}: exists and is not a folder; choose another output path")
    entries = sorted(p.name for p in out_dir.iterdir())
    if not entries:
        return True
    try:
        manifest = json.loads((out_dir / MANIFEST).read_text(encoding="utf-8"))
        own = (
            {*manifest["files"], MANIFEST, MANIFEST_HASH, SIGNATURE}
            if manifest.get("kind") == "edgefair.bundle"
            else set()
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        own = set()
    foreign = [e for e in entries if e not in own]
    if foreign:
        raise BundleError(
            f"{out_dir}: exists and is not an edgefair bundle (it holds {foreign[0]!r}); "
            "choose a new or empty folder: edgefair never deletes what it did not create"
        )
    return True


def _write_dir(out_dir: Path, files: dict[str, bytes]) -> None:
    """Build the bundle beside ``out_dir``, then swap it in; an old bundle is removed last."""
    replace = _replaceable(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    old = tmp.with_name(tmp.name + ".old")
    try:
        for name, blob in files.items():
            (tmp / name).write_bytes(blob)
            os.chmod(tmp / name, 0o644)
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700; a bundle is meant to be shipped
        if replace:
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
    except BaseException:
        if replace and old.exists() and not out_dir.exists():
            os.replace(old, out_dir)  # put the old bundle back
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


CERTIFICATE_FIELDS: tuple[tuple[str, type | tuple[type, ...]], ...] = (
    ("candidate.sha256", str),
    ("verdict", str),
    ("table.groups", list),
    ("table.attributes", list),
    ("data.threshold", (int, float)),
    ("data.score_output", str),
)


def _read_certificate(path: str | Path, model_sha: str) -> dict[str, Any]:
    p = Path(path)
    try:
        cert: Any = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BundleError(f"{p}: not a readable verify report ({exc})") from None
    if not isinstance(cert, dict) or cert.get("kind") != "edgefair.verify_report":
        raise BundleError(f"{p}: not an edgefair verify report (edgefair verify --json writes one)")
    for field, kind in CERTIFICATE_FIELDS:
        value: Any = cert
        for part in field.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if not isinstance(value, kind) or isinstance(value, bool):
            raise BundleError(f"{p}: certificate field {field!r} is missing or of the wrong type")
    task = cert.get("task")
    if isinstance(task, dict) and task.get("kind") in ("multiclass", "regression"):
        raise BundleError(
            f"{p}: certifies a {task['kind']} model; the runtime counts binary classifiers only "
            "(a score in [0, 1] or a 0/1 label), so it cannot be bundled"
        )
    try:
        tables.from_dict(cert["table"])
    except InputError as exc:
        raise BundleError(f"{p}: certificate table: {exc}") from None
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


def read_bundle_files(path: Path) -> dict[str, bytes]:
    """Every file of a bundle folder or zip, sizes checked before anything is read."""
    files = BundleFiles(path)
    try:
        if sum(files.sizes.values()) > MAX_BUNDLE_BYTES + MAX_SIGNATURE_BYTES:
            raise BundleError(f"{path}: larger than any edgefair bundle; refused")
        if files.sizes.get(SIGNATURE, 0) > MAX_SIGNATURE_BYTES:
            raise BundleError(f"{path}/{SIGNATURE}: larger than any model-signing signature; refused")
        return {n: files.read(n, size) for n, size in files.sizes.items()}
    finally:
        files.close()


def sign_bundle(bundle_dir: str | Path, private_key: str | Path, *, password: str | None = None) -> Path:
    """Check a bundle folder loads, sign exactly the bytes checked, write ``model.sig`` atomically."""
    lib, d = signing_library(), Path(bundle_dir)
    if not d.is_dir():
        raise BundleError(f"{d}: not a bundle folder (sign the folder, zip it afterwards)")
    files = read_bundle_files(d)
    files.pop(SIGNATURE, None)  # re-signing replaces the old signature
    with materialized(files, d.name, str(d)) as folder:
        try:
            load_bundle(folder)
        except BundleError as exc:
            raise BundleError(str(exc).replace(str(folder), str(d))) from None
        sig = sign_folder(lib, folder, Path(private_key), password)
    tmp = d / f".{SIGNATURE}.{os.getpid()}"
    try:
        tmp.write_bytes(sig)
        os.replace(tmp, d / SIGNATURE)  # atomic: the old signature or the new one, never half of one
    finally:
        tmp.unlink(missing_ok=True)
    return d / SIGNATURE
