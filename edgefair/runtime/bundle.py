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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgefair.errors import BundleError
from edgefair.modelio.safety import MAX_MODEL_BYTES, check_model_bytes
from edgefair.runtime.signing import SIGNATURE, SignatureInfo, read_signature, verify_blobs

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
    signature: SignatureInfo | None = None  # set when loaded with a trusted key

    @property
    def sensitive(self) -> dict[str, list[str]]:
        return dict(self.manifest["sensitive"])

    @property
    def certificate_verdict(self) -> str | None:
        """The certificate's verdict ("pass", "fail", "inconclusive"), or None without one."""
        cert = self.manifest.get("certificate")
        return str(cert["verdict"]) if cert else None

    def require_certified(self, allow_failed_certificate: bool = False) -> None:
        """Refuse a bundle whose certificate did not pass, unless explicitly allowed."""
        verdict = self.certificate_verdict
        if verdict not in (None, "pass") and not allow_failed_certificate:
            raise BundleError(
                f"{self.path}: its certificate's verdict is {verdict}, not pass; "
                "load it anyway only with allow_failed_certificate (--allow-failed-certificate)"
            )

    def baseline(self) -> Any:
        from edgefair.core import tables

        cert = self.manifest.get("certificate")
        if not cert or not cert.get("baseline_table"):
            return None
        return tables.from_dict(cert["baseline_table"])


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


MAX_MANIFEST_BYTES = 64 * 1024 * 1024  # a manifest carries the baseline table: large, never huge
MAX_BUNDLE_BYTES = MAX_MODEL_BYTES + 2 * MAX_MANIFEST_BYTES


def _regular_files(path: Path) -> dict[str, int]:
    """A directory bundle's files and sizes; anything but a plain file is refused."""
    out = {}
    for entry in os.scandir(path):
        where = f"{path}/{entry.name}"
        if entry.is_symlink():
            raise BundleError(f"{where}: is a symbolic link; a bundle holds plain files only")
        if entry.is_dir(follow_symlinks=False):
            raise BundleError(f"{where}: is a folder; a bundle holds plain files only")
        if not entry.is_file(follow_symlinks=False):
            raise BundleError(f"{where}: is not a regular file (a FIFO, socket or device); refused")
        out[entry.name] = entry.stat(follow_symlinks=False).st_size
    return out


class BundleFiles:
    """The files of a bundle directory or zip, read only after their sizes are checked."""

    def __init__(self, path: Path) -> None:
        import zipfile

        self.path = path
        self._zip: zipfile.ZipFile | None = None
        self._infos: dict[str, zipfile.ZipInfo] = {}
        if path.is_dir():
            self.sizes = _regular_files(path)
            return
        try:
            self._zip = zipfile.ZipFile(path)
            infos = [i for i in self._zip.infolist() if not i.is_dir()]
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
            raise BundleError(f"{path}: not a bundle (expected a directory or a readable zip: {exc})") from None
        for info in infos:
            name = Path(info.filename).name
            if name in self._infos:
                raise BundleError(f"{path}: holds two files named {name!r}; refused")
            self._infos[name] = info
        self.sizes = {n: i.file_size for n, i in self._infos.items()}

    def read(self, name: str, size: int) -> bytes:
        """``size`` bytes of ``name``; more (a lying zip header) or fewer is refused."""
        import zipfile
        import zlib

        where = f"{self.path}/{name}"
        if self.sizes.get(name) != size:
            raise BundleError(f"{where}: is {self.sizes.get(name)} bytes, the manifest says {size}")
        try:
            if self._zip is None:
                with open(self.path / name, "rb") as f:
                    blob = f.read(size + 1)
            else:
                with self._zip.open(self._infos[name]) as f:
                    blob = f.read(size + 1)
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as exc:
            raise BundleError(f"{where}: unreadable ({exc})") from None
        if len(blob) != size:
            raise BundleError(f"{where}: is not the {size} bytes the manifest says")
        return blob

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()


def _manifest(files: BundleFiles, where: str) -> tuple[bytes, dict[str, Any]]:
    for name in (MANIFEST, MANIFEST_HASH):
        if name not in files.sizes:
            raise BundleError(f"{where}: no {name}; not an edgefair bundle")
    if files.sizes[MANIFEST] > MAX_MANIFEST_BYTES or files.sizes[MANIFEST_HASH] > 65:
        raise BundleError(f"{where}/{MANIFEST}: larger than any edgefair manifest; refused")
    raw = files.read(MANIFEST, files.sizes[MANIFEST])
    if files.read(MANIFEST_HASH, files.sizes[MANIFEST_HASH]) != (sha256_hex(raw) + "\n").encode():
        raise BundleError(f"{where}/{MANIFEST}: SHA-256 does not match {MANIFEST_HASH} (tampered?)")
    try:
        manifest = json.loads(raw)
    except (ValueError, RecursionError):  # JSONDecodeError, bad UTF-8, huge integers, deep nesting
        raise BundleError(f"{where}/{MANIFEST}: not JSON") from None
    return raw, check_manifest(manifest, f"{where}/{MANIFEST}")


def check_manifest(manifest: Any, where: str) -> dict[str, Any]:
    """Every field a loader relies on, with the type it must have; one line naming the first bad one."""

    def bad(field: str, expected: str) -> BundleError:
        return BundleError(f"{where}: field {field!r} must be {expected}")

    if not isinstance(manifest, dict) or manifest.get("kind") != "edgefair.bundle":
        raise BundleError(f"{where}: not an edgefair bundle manifest (kind is not 'edgefair.bundle')")
    listed = manifest.get("files")
    if not isinstance(listed, dict) or not listed:
        raise bad("files", "an object of file name -> {sha256, size_bytes}")
    for name, meta in listed.items():
        if not (isinstance(meta, dict) and isinstance(meta.get("sha256"), str) and _is_size(meta.get("size_bytes"))):
            raise bad(f"files.{name}", "{sha256: hex string, size_bytes: whole number >= 0}")
        if name in (MANIFEST, MANIFEST_HASH) or "/" in name or name in ("", ".", ".."):
            raise bad(f"files.{name}", "a plain file name other than the manifest's own")
    if not isinstance(manifest.get("model"), str) or manifest["model"] not in listed:
        raise bad("model", f"the name of a listed file (one of {sorted(listed)})")
    sensitive = manifest.get("sensitive")
    if not isinstance(sensitive, dict) or not sensitive:
        raise bad("sensitive", "an object of attribute -> list of known values")
    for attr, values in sensitive.items():
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise bad(f"sensitive.{attr}", "a list of strings")
    threshold = manifest.get("threshold")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
        raise bad("threshold", "a number in [0, 1]")
    if not isinstance(manifest.get("score_output"), str):
        raise bad("score_output", "the name of a model output")
    cert = manifest.get("certificate")
    if cert is not None and not (isinstance(cert, dict) and isinstance(cert.get("verdict"), str)):
        raise bad("certificate", "null or {file, verdict, baseline_table}")
    total = sum(m["size_bytes"] for m in listed.values())
    if total > MAX_BUNDLE_BYTES:
        raise BundleError(f"{where}: lists {total:,} bytes of files, over the {MAX_BUNDLE_BYTES:,} cap")
    return manifest


def _is_size(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def load_bundle(path: str | Path, trust_key: str | Path | None = None) -> Bundle:
    """Read and verify a bundle: exactly the listed files, each of the listed size and SHA-256
    (sizes are checked before anything is decompressed), and a model that passes the
    model-safety check (no onnx package needed). With ``trust_key`` (an EC public key, PEM)
    the bundle must also carry a model-signing signature by that key over those bytes."""
    p = Path(path)
    if not p.exists():
        raise BundleError(f"{p}: no such bundle")
    files = BundleFiles(p)
    signed: SignatureInfo | None = None
    try:
        raw, manifest = _manifest(files, str(p))
        listed = manifest["files"]
        extra = set(files.sizes) - set(listed) - {MANIFEST, MANIFEST_HASH, SIGNATURE}
        if extra:
            raise BundleError(f"{p}/{sorted(extra)[0]}: file not listed in the manifest")
        blobs = {}
        for name, meta in listed.items():
            if name not in files.sizes:
                raise BundleError(f"{p}/{name}: listed in the manifest but missing")
            blob = files.read(name, meta["size_bytes"])
            if sha256_hex(blob) != meta["sha256"]:
                raise BundleError(f"{p}/{name}: SHA-256 does not match the manifest (tampered?)")
            blobs[name] = blob
        if trust_key is not None:  # what is verified is exactly what is loaded
            own = {MANIFEST: raw, MANIFEST_HASH: (sha256_hex(raw) + "\n").encode()}
            signed = verify_blobs({**blobs, **own}, read_signature(files, str(p)), trust_key, where=str(p))
    finally:
        files.close()
    model = blobs[manifest["model"]]
    check_model_bytes(model, f"{p}/{manifest['model']}")  # the hashes say it is the one bundled; this, that it is safe
    cert = None
    if CERTIFICATE in blobs:
        try:
            cert = json.loads(blobs[CERTIFICATE])
        except (ValueError, RecursionError):
            raise BundleError(f"{p}/{CERTIFICATE}: not JSON") from None
    return Bundle(p, manifest, model, cert, signed)


def verify_bundle(path: str | Path, public_key: str | Path) -> SignatureInfo:
    """Load ``path`` trusting only bundles signed by ``public_key``; what the signature covers."""
    signed = load_bundle(path, trust_key=public_key).signature
    assert signed is not None  # load_bundle refuses an unsigned bundle when a key is given
    return signed
