"""Bundle loading, in process: every manifest field, every file check, directories and zips.

The oracle is a bundle written by hand here (files, hashlib SHA-256, a manifest dict), not
one written by edgefair: each test changes one thing and names the one-line message expected."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgefair.core import tables
from edgefair.errors import BundleError
from edgefair.runtime import bundle as bd
from edgefair.runtime.bundle import Bundle, BundleFiles, check_manifest, load_bundle
from tests.models import no_weights

MODEL = no_weights().SerializeToString()


def manifest_for(files: dict[str, bytes], **changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "kind": "edgefair.bundle",
        "files": {n: {"sha256": hashlib.sha256(b).hexdigest(), "size_bytes": len(b)} for n, b in files.items()},
        "model": "model.onnx",
        "sensitive": {"g": ["a", "b"]},
        "threshold": 0.5,
        "score_output": "score",
        "certificate": None,
    }
    doc.update(changes)
    return doc


def write(folder: Path, files: dict[str, bytes] | None = None, extra: dict[str, bytes] | None = None, **changes: Any):
    """A directory bundle: ``files`` listed in the manifest, ``extra`` present but not listed."""
    files = {"model.onnx": MODEL} if files is None else files
    folder.mkdir(parents=True, exist_ok=True)
    for name, blob in {**files, **(extra or {})}.items():
        (folder / name).write_bytes(blob)
    raw = json.dumps(manifest_for(files, **changes)).encode()
    (folder / "manifest.json").write_bytes(raw)
    (folder / "manifest.sha256").write_bytes((hashlib.sha256(raw).hexdigest() + "\n").encode())
    return folder


def zipped(folder: Path, out: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for p in sorted(folder.iterdir()):
            z.write(p, prefix + p.name)
    return out


def refused(path: Path, message: str, exact: bool = True) -> None:
    with pytest.raises(BundleError) as info:
        load_bundle(path)
    text = str(info.value)
    assert (text == message) if exact else (message in text), text
    assert "\n" not in text


@pytest.mark.parametrize("as_zip", [False, True])
def test_a_hand_made_bundle_loads_with_its_fields(tmp_path, as_zip):
    table = tables.from_arrays({"g": np.array(["a", "b", "b"])}, np.array([1, 0, 1]), y_true=np.array([1, 1, 0]))
    cert = {"verdict": "pass", "file": "certificate.json", "baseline_table": table.to_dict()}
    files = {"model.onnx": MODEL, "certificate.json": b'{"kind": "x", "n": 3}'}
    folder = write(tmp_path / "b", files, sensitive={"g": ["a", "b"], "h": []}, certificate=cert, threshold=1)
    path = zipped(folder, tmp_path / "b.zip", prefix="inner/") if as_zip else folder
    b = load_bundle(str(path))
    assert isinstance(b, Bundle) and b.path == path and b.model == MODEL and b.signature is None
    assert b.certificate == {"kind": "x", "n": 3}
    assert b.sensitive == {"g": ["a", "b"], "h": []} and b.certificate_verdict == "pass"
    assert b.baseline() == table
    b.require_certified()
    assert b.manifest["threshold"] == 1


def test_bundle_properties_without_a_certificate(tmp_path):
    b = load_bundle(write(tmp_path / "b"))
    assert b.certificate is None and b.certificate_verdict is None and b.baseline() is None
    b.require_certified()
    assert type(b.sensitive) is dict and b.sensitive is not b.manifest["sensitive"]
    no_table = write(tmp_path / "c", certificate={"verdict": "pass", "baseline_table": None})
    assert load_bundle(no_table).baseline() is None
    assert load_bundle(write(tmp_path / "d", certificate={"verdict": "pass"})).baseline() is None


@pytest.mark.parametrize("verdict", ["fail", "inconclusive"])
def test_a_certificate_that_did_not_pass_is_refused_unless_allowed(tmp_path, verdict):
    b = load_bundle(write(tmp_path / "b", certificate={"verdict": verdict}))
    assert b.certificate_verdict == verdict
    with pytest.raises(BundleError) as info:
        b.require_certified()
    assert str(info.value) == (
        f"{tmp_path / 'b'}: its certificate's verdict is {verdict}, not pass; "
        "load it anyway only with allow_failed_certificate (--allow-failed-certificate)"
    )
    b.require_certified(allow_failed_certificate=True)
    with pytest.raises(BundleError):
        b.require_certified(False)


def test_missing_paths_and_non_bundles(tmp_path):
    refused(tmp_path / "none", f"{tmp_path / 'none'}: no such bundle")
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"PK\x03\x04 not really a zip")
    refused(junk, f"{junk}: not a bundle (expected a directory or a readable zip: ", exact=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    refused(empty, f"{empty}: no manifest.json; not an edgefair bundle")
    only = tmp_path / "only"
    only.mkdir()
    (only / "manifest.json").write_text("{}")
    refused(only, f"{only}: no manifest.sha256; not an edgefair bundle")


def test_the_manifest_hash_is_checked(tmp_path):
    folder = write(tmp_path / "b")
    (folder / "manifest.sha256").write_bytes(b"0" * 64 + b"\n")
    refused(folder, f"{folder}/manifest.json: SHA-256 does not match manifest.sha256 (tampered?)")
    raw = (folder / "manifest.json").read_bytes()
    (folder / "manifest.sha256").write_bytes(hashlib.sha256(raw).hexdigest().encode())  # no newline
    refused(folder, f"{folder}/manifest.json: SHA-256 does not match manifest.sha256 (tampered?)")
    (folder / "manifest.sha256").write_bytes((hashlib.sha256(raw).hexdigest() + "\n\n").encode())  # 66 bytes
    refused(folder, f"{folder}/manifest.json: larger than any edgefair manifest; refused")
    (folder / "manifest.sha256").write_bytes((hashlib.sha256(raw).hexdigest().upper() + "\n").encode())
    refused(folder, f"{folder}/manifest.json: SHA-256 does not match manifest.sha256 (tampered?)")


def test_a_manifest_that_is_not_json_is_refused(tmp_path):
    folder = write(tmp_path / "b")
    for raw in (b"{not json", b"\xff\xfe", b"[" * 100_000):
        (folder / "manifest.json").write_bytes(raw)
        (folder / "manifest.sha256").write_bytes((hashlib.sha256(raw).hexdigest() + "\n").encode())
        refused(folder, f"{folder}/manifest.json: not JSON")


def test_the_manifest_size_cap(tmp_path, monkeypatch):
    folder = write(tmp_path / "b")
    size = (folder / "manifest.json").stat().st_size
    monkeypatch.setattr(bd, "MAX_MANIFEST_BYTES", size)
    assert load_bundle(folder).model == MODEL  # exactly the cap is allowed
    monkeypatch.setattr(bd, "MAX_MANIFEST_BYTES", size - 1)
    refused(folder, f"{folder}/manifest.json: larger than any edgefair manifest; refused")


def test_extra_missing_and_changed_files(tmp_path):
    extra = write(tmp_path / "e", extra={"notes.txt": b"hi", "zz.bin": b"x"})
    refused(extra, f"{extra}/notes.txt: file not listed in the manifest")
    signed_name = write(tmp_path / "s", extra={"model.sig": b"{}"})  # a signature is allowed unlisted
    assert load_bundle(signed_name).model == MODEL
    folder = write(tmp_path / "m", {"model.onnx": MODEL, "other.bin": b"abc"})
    (folder / "other.bin").unlink()
    refused(folder, f"{folder}/other.bin: listed in the manifest but missing")
    changed = write(tmp_path / "c", {"model.onnx": MODEL, "other.bin": b"abc"})
    (changed / "other.bin").write_bytes(b"abd")
    refused(changed, f"{changed}/other.bin: SHA-256 does not match the manifest (tampered?)")
    longer = write(tmp_path / "l", {"model.onnx": MODEL, "other.bin": b"abc"})
    (longer / "other.bin").write_bytes(b"abcd")
    refused(longer, f"{longer}/other.bin: is 4 bytes, the manifest says 3")


def test_the_model_must_pass_the_safety_check(tmp_path):
    folder = write(tmp_path / "b", {"model.onnx": b"\x08\x07\x3a\x05junk!"})
    with pytest.raises(Exception) as info:
        load_bundle(folder)
    assert str(folder / "model.onnx") in str(info.value)


def test_a_certificate_file_that_is_not_json(tmp_path):
    folder = write(tmp_path / "b", {"model.onnx": MODEL, "certificate.json": b"{nope"})
    refused(folder, f"{folder}/certificate.json: not JSON")
    deep = write(tmp_path / "d", {"model.onnx": MODEL, "certificate.json": b"[" * 100_000})
    refused(deep, f"{deep}/certificate.json: not JSON")


def test_a_bundle_holds_plain_files_only(tmp_path):
    link = write(tmp_path / "l")
    (link / "ln").symlink_to(link / "model.onnx")
    refused(link, f"{link}/ln: is a symbolic link; a bundle holds plain files only")
    sub = write(tmp_path / "d")
    (sub / "sub").mkdir()
    refused(sub, f"{sub}/sub: is a folder; a bundle holds plain files only")
    fifo = write(tmp_path / "f")
    os.mkfifo(fifo / "pipe")
    refused(fifo, f"{fifo}/pipe: is not a regular file (a FIFO, socket or device); refused")
    sock_dir = write(tmp_path / "s")
    s = socket.socket(socket.AF_UNIX)
    try:
        s.bind(str(sock_dir / "sk"))
        refused(sock_dir, f"{sock_dir}/sk: is not a regular file (a FIFO, socket or device); refused")
    finally:
        s.close()
    dangling = write(tmp_path / "g")
    (dangling / "gone").symlink_to(tmp_path / "nowhere")
    refused(dangling, f"{dangling}/gone: is a symbolic link; a bundle holds plain files only")
    assert bd._regular_files(write(tmp_path / "ok")) == {
        "model.onnx": len(MODEL),
        "manifest.json": (tmp_path / "ok" / "manifest.json").stat().st_size,
        "manifest.sha256": 65,
    }


def test_zip_names_sizes_and_reads(tmp_path):
    folder = write(tmp_path / "b", {"model.onnx": MODEL, "x.bin": b"12345"})
    z = zipped(folder, tmp_path / "b.zip")
    files = BundleFiles(z)
    assert files.sizes["x.bin"] == 5 and files.sizes["model.onnx"] == len(MODEL)
    assert files.read("x.bin", 5) == b"12345"
    with pytest.raises(BundleError) as info:
        files.read("x.bin", 4)
    assert str(info.value) == f"{z}/x.bin: is 5 bytes, the manifest says 4"
    with pytest.raises(BundleError) as info:
        files.read("absent", 0)
    assert str(info.value) == f"{z}/absent: is None bytes, the manifest says 0"
    files.close()
    files.close()  # twice is fine
    dirs = tmp_path / "dirs.zip"
    with zipfile.ZipFile(dirs, "w") as zf:
        zf.writestr("a/", b"")
        for p in sorted(folder.iterdir()):
            zf.write(p, "a/" + p.name)
    assert set(BundleFiles(dirs).sizes) == {"model.onnx", "x.bin", "manifest.json", "manifest.sha256"}
    assert load_bundle(dirs).model == MODEL
    twice = tmp_path / "twice.zip"
    with zipfile.ZipFile(twice, "w") as zf:
        for p in sorted(folder.iterdir()):
            zf.write(p, p.name)
        zf.writestr("other/x.bin", b"12345")
    refused(twice, f"{twice}: holds two files named 'x.bin'; refused")


def test_a_directory_read_gets_exactly_size_bytes(tmp_path):
    folder = write(tmp_path / "b", {"model.onnx": MODEL, "x.bin": b"12345"})
    files = BundleFiles(folder)
    assert files.read("x.bin", 5) == b"12345"
    files.sizes["x.bin"] = 4  # as if the file grew after it was listed
    with pytest.raises(BundleError) as info:
        files.read("x.bin", 4)
    assert str(info.value) == f"{folder}/x.bin: is not the 4 bytes the manifest says"
    files.sizes["x.bin"] = 6  # or shrank
    with pytest.raises(BundleError) as info:
        files.read("x.bin", 6)
    assert str(info.value) == f"{folder}/x.bin: is not the 6 bytes the manifest says"
    (folder / "x.bin").unlink()
    with pytest.raises(BundleError) as info:
        files.read("x.bin", 6)
    assert str(info.value).startswith(f"{folder}/x.bin: unreadable (")


def good() -> dict[str, Any]:
    return manifest_for({"model.onnx": MODEL})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kind": "edgefair.bundlex"}, "W: not an edgefair bundle manifest (kind is not 'edgefair.bundle')"),
        ({"kind": None}, "W: not an edgefair bundle manifest (kind is not 'edgefair.bundle')"),
        ({"files": {}}, "W: field 'files' must be an object of file name -> {sha256, size_bytes}"),
        ({"files": ["model.onnx"]}, "W: field 'files' must be an object of file name -> {sha256, size_bytes}"),
        ({"files": None}, "W: field 'files' must be an object of file name -> {sha256, size_bytes}"),
        (
            {"files": {"model.onnx": []}},
            "W: field 'files.model.onnx' must be {sha256: hex string, size_bytes: whole number >= 0}",
        ),
        ({"files": {"model.onnx": {"size_bytes": 1}}}, "W: field 'files.model.onnx' must be {sha256"),
        ({"files": {"model.onnx": {"sha256": 1, "size_bytes": 1}}}, "W: field 'files.model.onnx' must be {sha256"),
        ({"files": {"model.onnx": {"sha256": "a"}}}, "W: field 'files.model.onnx' must be {sha256"),
        ({"files": {"model.onnx": {"sha256": "a", "size_bytes": -1}}}, "W: field 'files.model.onnx' must be {sha256"),
        ({"files": {"model.onnx": {"sha256": "a", "size_bytes": True}}}, "W: field 'files.model.onnx' must be {sha256"),
        ({"files": {"model.onnx": {"sha256": "a", "size_bytes": 1.0}}}, "W: field 'files.model.onnx' must be {sha256"),
        (
            {"files": {"manifest.json": {"sha256": "a", "size_bytes": 1}}},
            "W: field 'files.manifest.json' must be a plain file name other than the manifest's own",
        ),
        (
            {"files": {"manifest.sha256": {"sha256": "a", "size_bytes": 1}}},
            "W: field 'files.manifest.sha256' must be a plain file name",
        ),
        ({"files": {"a/b": {"sha256": "a", "size_bytes": 1}}}, "W: field 'files.a/b' must be a plain file name"),
        ({"files": {"": {"sha256": "a", "size_bytes": 1}}}, "W: field 'files.' must be a plain file name"),
        ({"files": {".": {"sha256": "a", "size_bytes": 1}}}, "W: field 'files..' must be a plain file name"),
        ({"files": {"..": {"sha256": "a", "size_bytes": 1}}}, "W: field 'files...' must be a plain file name"),
        ({"model": "gone.onnx"}, "W: field 'model' must be the name of a listed file (one of ['model.onnx'])"),
        ({"model": None}, "W: field 'model' must be the name of a listed file (one of ['model.onnx'])"),
        ({"sensitive": {}}, "W: field 'sensitive' must be an object of attribute -> list of known values"),
        ({"sensitive": ["g"]}, "W: field 'sensitive' must be an object of attribute -> list of known values"),
        ({"sensitive": {"g": "a"}}, "W: field 'sensitive.g' must be a list of strings"),
        ({"sensitive": {"g": ["a"], "h": ["b", 1]}}, "W: field 'sensitive.h' must be a list of strings"),
        ({"threshold": True}, "W: field 'threshold' must be a number in [0, 1]"),
        ({"threshold": "0.5"}, "W: field 'threshold' must be a number in [0, 1]"),
        ({"threshold": -0.001}, "W: field 'threshold' must be a number in [0, 1]"),
        ({"threshold": 1.001}, "W: field 'threshold' must be a number in [0, 1]"),
        ({"threshold": 2}, "W: field 'threshold' must be a number in [0, 1]"),
        ({"threshold": float("nan")}, "W: field 'threshold' must be a number in [0, 1]"),
        ({"threshold": None}, "W: field 'threshold' must be a number in [0, 1]"),
        ({"score_output": None}, "W: field 'score_output' must be the name of a model output"),
        ({"score_output": 1}, "W: field 'score_output' must be the name of a model output"),
        ({"certificate": []}, "W: field 'certificate' must be null or {file, verdict, baseline_table}"),
        ({"certificate": {}}, "W: field 'certificate' must be null or {file, verdict, baseline_table}"),
        ({"certificate": {"verdict": 1}}, "W: field 'certificate' must be null or {file, verdict, baseline_table}"),
        ({"certificate": "pass"}, "W: field 'certificate' must be null or {file, verdict, baseline_table}"),
    ],
)
def test_check_manifest_names_the_first_bad_field(change, message):
    with pytest.raises(BundleError) as info:
        check_manifest(good() | change, "W")
    assert str(info.value).startswith(message), str(info.value)


def test_check_manifest_not_a_dict():
    for doc in ([], "edgefair.bundle", None, 3):
        with pytest.raises(BundleError) as info:
            check_manifest(doc, "W")
        assert str(info.value) == "W: not an edgefair bundle manifest (kind is not 'edgefair.bundle')"


def test_check_manifest_accepts_the_edges():
    for change in (
        {"threshold": 0},
        {"threshold": 1},
        {"threshold": 0.0},
        {"threshold": 1.0},
        {"certificate": None},
        {"certificate": {"verdict": "fail"}},
        {"sensitive": {"g": []}},
        {"files": {"model.onnx": {"sha256": "a", "size_bytes": 0}}},
        {"files": {"model.onnx": {"sha256": "", "size_bytes": 0}, "...": {"sha256": "a", "size_bytes": 1}}},
    ):
        doc = good() | change
        assert check_manifest(doc, "W") is doc


def test_the_total_size_cap():
    cap = bd.MAX_BUNDLE_BYTES
    assert cap == 512 * 1024 * 1024 + 2 * 64 * 1024 * 1024 and bd.MAX_MANIFEST_BYTES == 64 * 1024 * 1024
    files = {"model.onnx": {"sha256": "a", "size_bytes": cap - 10}, "b": {"sha256": "a", "size_bytes": 10}}
    check_manifest(good() | {"files": files}, "W")
    files["b"]["size_bytes"] = 11
    with pytest.raises(BundleError) as info:
        check_manifest(good() | {"files": files}, "W")
    assert str(info.value) == f"W: lists {cap + 1:,} bytes of files, over the {cap:,} cap"


def test_sha256_hex():
    assert bd.sha256_hex(b"abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_a_trusted_key_verifies_exactly_what_is_loaded(tmp_path):
    pytest.importorskip("model_signing")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from edgefair.bundling import sign_bundle
    from edgefair.runtime.bundle import verify_bundle

    key = ec.generate_private_key(ec.SECP256R1())
    private, public = tmp_path / "k.pem", tmp_path / "k.pub"
    fmt = (serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    private.write_bytes(key.private_bytes(*fmt))
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    folder = write(tmp_path / "b", {"model.onnx": MODEL, "x.bin": b"12345"})
    sign_bundle(folder, private)
    info = verify_bundle(folder, public)
    assert info.files == ("manifest.json", "manifest.sha256", "model.onnx", "x.bin")
    assert info.key_sha256 == hashlib.sha256(public.read_bytes()).hexdigest()
    assert load_bundle(folder, trust_key=public).signature == info
    assert load_bundle(folder).signature is None  # no key: not verified, and not claimed to be
    unsigned = write(tmp_path / "u")
    with pytest.raises(BundleError):
        load_bundle(unsigned, trust_key=public)


def test_signature_errors_name_the_bundle(tmp_path):
    pytest.importorskip("model_signing")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from edgefair.runtime.signing import MAX_SIGNATURE_BYTES

    key = tmp_path / "k.pub"
    key.write_bytes(
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    unsigned = write(tmp_path / "u")
    with pytest.raises(BundleError) as info:
        load_bundle(unsigned, trust_key=key)
    assert str(info.value) == f"{unsigned}: not signed (no model.sig) but a trusted key was given; refused"
    big = write(tmp_path / "b", extra={"model.sig": b"{" + b" " * MAX_SIGNATURE_BYTES})
    with pytest.raises(BundleError) as info:
        load_bundle(big, trust_key=key)
    assert str(info.value) == f"{big}/model.sig: larger than any model-signing signature; refused"


def test_a_bad_manifest_field_is_named_with_the_bundle_path(tmp_path):
    folder = write(tmp_path / "b", threshold=2)
    refused(folder, f"{folder}/manifest.json: field 'threshold' must be a number in [0, 1]")


def test_a_file_that_grew_after_listing_is_not_read_whole(tmp_path):
    import tracemalloc

    folder = write(tmp_path / "b", {"model.onnx": MODEL, "x.bin": b"12345"})
    files = BundleFiles(folder)
    with open(folder / "x.bin", "r+b") as f:  # grown to 64 MiB (sparse) after its size was listed
        f.truncate(64 * 1024 * 1024)
    tracemalloc.start()
    try:
        with pytest.raises(BundleError):
            files.read("x.bin", 5)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024, peak  # size + 1 bytes were read, not the whole file
