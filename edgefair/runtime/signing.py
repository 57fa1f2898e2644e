"""Bundle signatures in the OpenSSF model-signing format: key-based (EC keys), no Sigstore, no network.

Hashes give integrity, not authenticity: whoever can rewrite a bundle can rewrite its hashes too.
``model.sig`` in the bundle folder is a model-signing signature (a Sigstore bundle v0.3 around a
DSSE-signed in-toto statement) made with ``use_elliptic_key_signer`` over the folder: per-file
SHA-256, ``ignore_paths=["model.sig"]`` (recorded in the statement), so it covers every other file
(model.onnx, manifest.json, manifest.sha256, certificate.json). ``model_signing verify key BUNDLE
--signature BUNDLE/model.sig --public_key K`` checks ours; one from ``model_signing sign key`` verifies here.

Exact bytes: the library hashes paths, so the blobs are written to a private (0700) temp folder, the
signature and key beside it. ``load_bundle`` passes the bytes it read after its size checks (a zip is
never extracted before the caps; what is verified is what is loaded)::

    if trust_key is not None:  # after the blobs loop, files still open; raw = the manifest bytes read
        verify_blobs({**blobs, MANIFEST: raw, MANIFEST_HASH: (sha256_hex(raw) + "\n").encode()},
                     read_signature(files, str(p)), trust_key, where=str(p))

and ``build_bundle`` signs in memory before its atomic write (``_replaceable`` owns SIGNATURE)::

    if private_key is not None:
        files[SIGNATURE] = sign_blobs(files, private_key, name=out_dir.name)

Beyond the library: the statement must name the key (its hint, the SHA-256 of the PEM public key),
use per-file serialization and list exactly the files given (the library skips ``.git*`` and any path
the signer ignored); each file is re-hashed here. model_signing and cryptography are imported lazily.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from edgefair.errors import BundleError

SIGNATURE = "model.sig"
MAX_SIGNATURE_BYTES = 1024 * 1024  # an edgefair signature is ~2 KB; a bundle has a handful of files
_CURVES = ("secp256r1", "secp384r1", "secp521r1")  # the curves model-signing accepts
_SKIPPED = (".git", ".gitattributes", ".github", ".gitignore")  # names model-signing never hashes


@dataclass(frozen=True)
class SignatureInfo:
    key_sha256: str  # SHA-256 of the signer's PEM public key (model-signing's key hint)
    files: tuple[str, ...]  # the signed file names, sorted


def signing_library() -> Any:
    try:
        import model_signing.hashing
        import model_signing.signing
        import model_signing.verifying
    except ImportError as exc:
        raise BundleError(f"bundle signatures need model-signing ({exc}): pip install 'edgefair[signing]'") from None
    return model_signing


def _line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]


def _public_key(path: Path) -> tuple[bytes, str]:
    """The PEM (SubjectPublicKeyInfo) of an EC public key and its SHA-256, or a one-line refusal."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        raw = path.read_bytes()[: 64 * 1024]
        key = serialization.load_pem_public_key(raw)
    except OSError as exc:
        raise BundleError(f"{path}: unreadable public key ({exc.strerror})") from None
    except (ValueError, TypeError, UnsupportedAlgorithm):
        private = "; it is a private key, give the public one" if b"PRIVATE KEY" in raw else ""
        raise BundleError(f"{path}: not a PEM public key{private}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in _CURVES:
        raise BundleError(f"{path}: {type(key).__name__}, not an EC P-256/P-384/P-521 key as model-signing needs")
    pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem, hashlib.sha256(pem).hexdigest()


@contextlib.contextmanager
def materialized(files: Mapping[str, bytes], name: str, where: str) -> Iterator[Path]:
    """A private temp folder ``<tmp>/<name>/`` holding ``files``; ``<tmp>`` is free for the signature."""
    with tempfile.TemporaryDirectory(prefix="edgefair-sig.") as tmp:
        folder = Path(tmp) / name
        folder.mkdir()
        for fname, blob in files.items():
            if not fname or fname in (".", "..", SIGNATURE, *_SKIPPED) or "/" in fname or "\\" in fname:
                raise BundleError(f"{where}/{fname}: a name a signed bundle may not hold (model-signing skips .git*)")
            (folder / fname).write_bytes(blob)
        yield folder


def sign_blobs(
    files: Mapping[str, bytes], private_key: str | Path, *, name: str = "bundle", password: str | None = None
) -> bytes:
    """The ``model.sig`` bytes for a bundle's files (name -> bytes, without model.sig itself)."""
    lib = signing_library()
    with materialized(files, name, name) as folder:
        return sign_folder(lib, folder, Path(private_key), password)


def sign_folder(lib: Any, folder: Path, private_key: Path, password: str | None) -> bytes:
    sig = folder.parent / SIGNATURE
    hashing = lib.hashing.Config().set_ignored_paths(paths=[SIGNATURE], ignore_git_paths=False)
    try:
        signer = lib.signing.Config().use_elliptic_key_signer(
            private_key=private_key, password=password.encode() if password else None
        )
    except OSError as exc:
        raise BundleError(f"{private_key}: unreadable private key ({exc.strerror})") from None
    except Exception as exc:  # cryptography's ValueError/TypeError/UnsupportedAlgorithm, let out by the library
        raise BundleError(f"{private_key}: not an EC PEM private key, or wrong password ({_line(exc)})") from None
    signer.set_hashing_config(hashing).sign(folder, sig)
    return sig.read_bytes()


class Readable(Protocol):
    """What ``load_bundle`` has open: file sizes, and reads that check them."""

    sizes: dict[str, int]

    def read(self, name: str, size: int) -> bytes: ...


def read_signature(files: Readable, where: str) -> bytes | None:
    """``model.sig`` from a bundle ``load_bundle`` has open, size-capped; None when unsigned."""
    size = files.sizes.get(SIGNATURE)
    if size is not None and size > MAX_SIGNATURE_BYTES:
        raise BundleError(f"{where}/{SIGNATURE}: larger than any model-signing signature; refused")
    return None if size is None else files.read(SIGNATURE, size)


def _statement(signature: bytes, where: str) -> tuple[Any, str, dict[str, str]]:
    """(key hint, serialization method, {file: algorithm:digest}) as the signature states them."""
    try:
        doc = json.loads(signature)
        hint = doc["verificationMaterial"]["publicKey"].get("hint")
        predicate = json.loads(base64.b64decode(doc["dsseEnvelope"]["payload"], validate=True))["predicate"]
        signed = {r["name"]: f"{r['algorithm']}:{r['digest']}" for r in predicate["resources"]}
        return hint, predicate["serialization"]["method"], signed
    except (ValueError, KeyError, TypeError, AttributeError) as exc:  # JSON, base64, UTF-8 errors are ValueErrors
        raise BundleError(f"{where}/{SIGNATURE}: not a model-signing signature ({type(exc).__name__})") from None


def _compare(files: Mapping[str, bytes], signed: dict[str, str], where: str) -> None:
    for name in sorted(set(files) - set(signed)):
        raise BundleError(f"{where}/{name}: added after signing (not covered by {SIGNATURE})")
    for name in sorted(set(signed) - set(files)):
        raise BundleError(f"{where}/{name}: signed but missing (removed after signing)")
    for name in sorted(files):
        algorithm, digest = signed[name].split(":", 1)
        if algorithm in hashlib.algorithms_guaranteed and hashlib.new(algorithm, files[name]).hexdigest() != digest:
            raise BundleError(f"{where}/{name}: changed after signing (its {algorithm} differs from the signed one)")


def verify_blobs(
    files: Mapping[str, bytes], signature: bytes | None, public_key: str | Path, *, where: str = "bundle"
) -> SignatureInfo:
    """Verify ``signature`` (model.sig bytes, None if absent) over ``files`` (every other file of the
    bundle, name -> bytes) with a trusted public key; ``where`` names the bundle in errors."""
    from cryptography.exceptions import InvalidSignature

    lib, key = signing_library(), Path(public_key)
    pem, key_sha = _public_key(key)
    if signature is None:
        raise BundleError(f"{where}: not signed (no {SIGNATURE}) but a trusted key was given; refused")
    hint, method, signed = _statement(signature, where)
    if method != "files":
        raise BundleError(f"{where}/{SIGNATURE}: uses model-signing's {method!r} serialization; expected 'files'")
    if not isinstance(hint, str) or not hint:
        raise BundleError(f"{where}/{SIGNATURE}: names no key (older model-signing format); re-sign the bundle")
    if hint != key_sha:
        raise BundleError(f"{where}/{SIGNATURE}: signed by another key ({hint[:12]}), not {key.name} ({key_sha[:12]})")
    mismatch = ""
    with materialized(files, Path(where).name or "bundle", where) as folder:
        (folder.parent / SIGNATURE).write_bytes(signature)
        (folder.parent / "trusted.pub").write_bytes(pem)
        verifier = lib.verifying.Config().use_elliptic_key_verifier(public_key=folder.parent / "trusted.pub")
        try:
            verifier.verify(folder, folder.parent / SIGNATURE)
        except InvalidSignature:
            raise BundleError(f"{where}/{SIGNATURE}: does not verify with {key.name} (forged or corrupted)") from None
        except Exception as exc:  # the library raises ValueError, KeyError, protobuf errors... for bad input
            if not str(exc).startswith("Signature mismatch"):
                raise BundleError(f"{where}/{SIGNATURE}: refused by model-signing ({_line(exc)})") from None
            mismatch = _line(exc)
    _compare(files, signed, where)  # the exact bytes given, against the statement the library just authenticated
    if mismatch:
        raise BundleError(f"{where}: {mismatch}")
    return SignatureInfo(key_sha, tuple(sorted(signed)))
