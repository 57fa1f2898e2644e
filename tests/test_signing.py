"""Bundle signatures (OpenSSF model-signing format, EC keys): who built a bundle, not just whether its
hashes agree. model-signing's own API and CLI are the oracle for the format."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from edgefair.bundling import build_bundle, read_bundle_files, sign_bundle
from edgefair.errors import BundleError
from edgefair.runtime.bundle import verify_bundle
from edgefair.runtime.signing import SIGNATURE, SignatureInfo, sign_blobs, verify_blobs
from tests.conftest import ROOT

pytest.importorskip("model_signing")
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

CLI = Path(sys.executable).with_name("model_signing")
PRIVATE_FORMAT = (serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8)
PUBLIC_FORMAT = (serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def make_keys(folder: Path, name: str, password: bytes | None = None) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    folder.mkdir(parents=True, exist_ok=True)
    enc = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    (folder / f"{name}.pem").write_bytes(key.private_bytes(*PRIVATE_FORMAT, enc))
    (folder / f"{name}.pub").write_bytes(key.public_key().public_bytes(*PUBLIC_FORMAT))
    return folder / f"{name}.pem", folder / f"{name}.pub"


def tiny_model(path: Path, width: int = 1) -> Path:
    """score = sigmoid(mean(x @ w)); ``width`` floats per input row set the model size (4 bytes each)."""
    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(2, width)).astype(np.float32), "w")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["z"]),
            helper.make_node("ReduceMean", ["z"], ["m"], axes=[1], keepdims=1),
            helper.make_node("Sigmoid", ["m"], ["score"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor_value_info("score", onnx.TensorProto.FLOAT, ["N", 1])],
        [w],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.fixture()
def keys(tmp_path):
    return make_keys(tmp_path / "keys", "builder")


@pytest.fixture()
def other_keys(tmp_path):
    return make_keys(tmp_path / "keys", "attacker")


@pytest.fixture()
def bundle(tmp_path):
    return build_bundle(tiny_model(tmp_path / "m.onnx"), tmp_path / "bundle", sensitive=["g"])


@pytest.fixture()
def signed(bundle, keys):
    sign_bundle(bundle, keys[0])
    return bundle


def refused(bundle: Path, public_key: Path, *fragments: str) -> str:
    with pytest.raises(BundleError) as info:
        verify_bundle(bundle, public_key)
    msg = str(info.value)
    assert len(msg.splitlines()) == 1, msg
    for f in fragments:
        assert f in msg, (f, msg)
    return msg


def rehash(bundle: Path, **changes: object) -> None:
    """Rewrite the manifest with consistent hashes, as an attacker with write access would."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest.update(changes)
    raw = (json.dumps(manifest, indent=2) + "\n").encode()
    (bundle / "manifest.json").write_bytes(raw)
    (bundle / "manifest.sha256").write_bytes((hashlib.sha256(raw).hexdigest() + "\n").encode())


def test_sign_then_verify(signed, keys):
    assert (signed / SIGNATURE).is_file()
    info = verify_bundle(signed, keys[1])
    assert isinstance(info, SignatureInfo)
    assert info.files == ("manifest.json", "manifest.sha256", "model.onnx")
    assert info.key_sha256 == hashlib.sha256(keys[1].read_bytes()).hexdigest()


def test_zip_bundle_verifies(signed, keys, tmp_path):
    z = tmp_path / "bundle.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as f:
        for p in sorted(signed.iterdir()):
            f.write(p, p.name)
    assert verify_bundle(z, keys[1]).files == ("manifest.json", "manifest.sha256", "model.onnx")


def test_unsigned_refused(bundle, keys):
    refused(bundle, keys[1], str(bundle), "not signed (no model.sig)")


def test_wrong_public_key_refused(signed, other_keys):
    refused(signed, other_keys[1], f"{signed}/model.sig", "signed by another key", "attacker.pub")


def blobs_refused(signed, public_key, change, fragment):
    """The signature layer alone (hashes not consulted): ``change`` edits the bytes verified."""
    files = read_bundle_files(signed)
    signature = files.pop(SIGNATURE)
    change(files)
    with pytest.raises(BundleError) as info:
        verify_blobs(files, signature, public_key, where=str(signed))
    assert fragment in str(info.value) and len(str(info.value).splitlines()) == 1, str(info.value)


def test_changed_file_refused(signed, keys):
    model = bytearray((signed / "model.onnx").read_bytes())
    model[-1] ^= 1
    blobs_refused(
        signed, keys[1], lambda f: f.update({"model.onnx": bytes(model)}), "model.onnx: changed after signing"
    )
    (signed / "model.onnx").write_bytes(bytes(model))
    refused(signed, keys[1], f"{signed}/model.onnx: SHA-256 does not match")  # the hashes catch it first


def test_consistent_hashes_attack_refused(signed, keys):
    """threshold 0.0 and an invented verdict, manifest.sha256 recomputed: `bundle check` would pass."""
    rehash(signed, threshold=0.0, certificate={"file": None, "verdict": "pass", "baseline_table": None})
    refused(signed, keys[1], f"{signed}/manifest.json: changed after signing")


def test_added_file_refused(signed, keys):
    blobs_refused(signed, keys[1], lambda f: f.update({"extra.txt": b"hi"}), "extra.txt: added after signing")
    (signed / "extra.txt").write_text("hi")
    refused(signed, keys[1], f"{signed}/extra.txt: file not listed in the manifest")


def test_added_git_file_refused(signed, keys):
    blobs_refused(signed, keys[1], lambda f: f.update({".gitignore": b"*"}), "a name a signed bundle may not hold")
    (signed / ".gitignore").write_text("*")
    refused(signed, keys[1], f"{signed}/.gitignore: file not listed in the manifest")


def test_removed_file_refused(signed, keys):
    blobs_refused(signed, keys[1], lambda f: f.pop("manifest.sha256"), "manifest.sha256: signed but missing")
    (signed / "manifest.sha256").unlink()
    refused(signed, keys[1], "no manifest.sha256")


def test_resigned_with_another_key_refused(signed, keys, other_keys):
    rehash(signed, threshold=0.0)
    sign_blob = sign_blobs({p.name: p.read_bytes() for p in signed.iterdir() if p.name != SIGNATURE}, other_keys[0])
    (signed / SIGNATURE).write_bytes(sign_blob)
    refused(signed, keys[1], "signed by another key")
    assert verify_bundle(signed, other_keys[1])  # the attacker's own key would accept it: trust the right key


def test_forged_key_hint_refused(signed, keys, other_keys):
    """Re-signed with another key but claiming the trusted key's fingerprint: the ECDSA check fails."""
    rehash(signed, threshold=0.0)
    files = {p.name: p.read_bytes() for p in signed.iterdir() if p.name != SIGNATURE}
    doc = json.loads(sign_blobs(files, other_keys[0]))
    doc["verificationMaterial"]["publicKey"]["hint"] = hashlib.sha256(keys[1].read_bytes()).hexdigest()
    (signed / SIGNATURE).write_text(json.dumps(doc))
    refused(signed, keys[1], f"{signed}/model.sig: does not verify with builder.pub")


def test_tampered_payload_refused(signed, keys):
    """The signed statement itself rewritten (digest of a tampered manifest.json swapped in)."""
    rehash(signed, threshold=0.0)
    doc = json.loads((signed / SIGNATURE).read_bytes())
    stmt = json.loads(base64.b64decode(doc["dsseEnvelope"]["payload"]))
    for r in stmt["predicate"]["resources"]:
        r["digest"] = hashlib.sha256((signed / r["name"]).read_bytes()).hexdigest()
    doc["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(stmt).encode()).decode()
    (signed / SIGNATURE).write_text(json.dumps(doc))
    refused(signed, keys[1], f"{signed}/model.sig")


@pytest.mark.parametrize(
    "blob",
    [b"not json", b"[]", b'{"verificationMaterial": {}}', b"\xff\xfe", b'{"dsseEnvelope": 1}', b""],
)
def test_malformed_signature_refused(signed, keys, blob):
    (signed / SIGNATURE).write_bytes(blob)
    refused(signed, keys[1], f"{signed}/model.sig: not a model-signing signature")


def test_truncated_signature_refused(signed, keys):
    raw = (signed / SIGNATURE).read_bytes()
    (signed / SIGNATURE).write_bytes(raw[: len(raw) // 2])
    refused(signed, keys[1], f"{signed}/model.sig: not a model-signing signature")


def test_oversized_signature_refused(signed, keys):
    (signed / SIGNATURE).write_bytes(b" " * (2 * 1024 * 1024))
    refused(signed, keys[1], "model.sig: larger than any model-signing signature")


def test_key_not_a_pem_public_key(signed, keys, tmp_path):
    junk = tmp_path / "junk.pub"
    junk.write_text("hello")
    refused(signed, junk, f"{junk}: not a PEM public key")
    refused(signed, keys[0], f"{keys[0]}: not a PEM public key; it is a private key")
    refused(signed, tmp_path / "missing.pub", "missing.pub: unreadable public key")
    rsa_pub = tmp_path / "rsa.pub"
    rsa_pub.write_bytes(rsa.generate_private_key(65537, 2048).public_key().public_bytes(*PUBLIC_FORMAT))
    refused(signed, rsa_pub, f"{rsa_pub}: RSAPublicKey, not an EC P-256")


def test_sign_refuses_bad_private_key(bundle, keys, tmp_path):
    for bad in (keys[1], tmp_path / "missing.pem"):
        with pytest.raises(BundleError, match="private key"):
            sign_bundle(bundle, bad)
    assert not (bundle / SIGNATURE).exists()


def test_encrypted_private_key(bundle, tmp_path):
    private, public = make_keys(tmp_path / "enc", "k", password=b"s3cret")
    with pytest.raises(BundleError, match="wrong password"):
        sign_bundle(bundle, private, password="nope")
    sign_bundle(bundle, private, password="s3cret")
    assert verify_bundle(bundle, public)


def test_sign_refuses_a_tampered_bundle(bundle, keys):
    (bundle / "model.onnx").write_bytes((bundle / "model.onnx").read_bytes()[:-1] + b"\x00")
    with pytest.raises(BundleError, match=rf"^{bundle}/model.onnx: SHA-256 does not match"):
        sign_bundle(bundle, keys[0])
    assert not (bundle / SIGNATURE).exists()


def test_resigning_replaces_the_signature(signed, keys, other_keys):
    sign_bundle(signed, other_keys[0])
    assert verify_bundle(signed, other_keys[1])
    refused(signed, keys[1], "signed by another key")
    assert sorted(p.name for p in signed.iterdir()) == ["manifest.json", "manifest.sha256", "model.onnx", SIGNATURE]


def test_blobs_cover_every_file_including_the_certificate(bundle, keys):
    """build_bundle integration: sign the in-memory files, write them all, verify."""
    files = {p.name: p.read_bytes() for p in bundle.iterdir()}
    files["certificate.json"] = b'{"verdict": "pass"}\n'
    sig = sign_blobs(files, keys[0], name=bundle.name)
    assert verify_blobs(files, sig, keys[1], where="b").files == tuple(sorted(files))
    with pytest.raises(BundleError, match=r"^b/certificate\.json: changed after signing"):
        verify_blobs({**files, "certificate.json": b'{"verdict": "fail"}\n'}, sig, keys[1], where="b")
    with pytest.raises(BundleError, match=r"^b/certificate\.json: signed but missing"):
        verify_blobs({k: v for k, v in files.items() if k != "certificate.json"}, sig, keys[1], where="b")
    with pytest.raises(BundleError, match="a name a signed bundle may not hold"):
        verify_blobs({**files, "../x": b""}, sig, keys[1], where="b")


def test_model_signing_cli_is_the_oracle(bundle, keys, tmp_path):
    """A signature from model-signing's own CLI verifies here, and ours verifies with its CLI."""
    theirs = subprocess.run(
        [str(CLI), "sign", "key", str(bundle), "--signature", str(bundle / SIGNATURE), "--private_key", str(keys[0])],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert theirs.returncode == 0, theirs.stderr
    assert verify_bundle(bundle, keys[1]).files == ("manifest.json", "manifest.sha256", "model.onnx")
    sign_bundle(bundle, keys[0])
    check = subprocess.run(
        [str(CLI), "verify", "key", str(bundle), "--signature", str(bundle / SIGNATURE), "--public_key", str(keys[1])],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0 and "Verification succeeded" in check.stdout, check.stderr
    rehash(bundle, threshold=0.0)  # and the library agrees about tampering
    check = subprocess.run(
        [str(CLI), "verify", "key", str(bundle), "--signature", str(bundle / SIGNATURE), "--public_key", str(keys[1])],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 1 and "manifest.json" in check.stderr


def test_model_signing_api_is_the_oracle(bundle, keys):
    import model_signing

    model_signing.signing.Config().use_elliptic_key_signer(private_key=keys[0]).set_hashing_config(
        model_signing.hashing.Config().set_ignored_paths(paths=[SIGNATURE])
    ).sign(bundle, bundle / SIGNATURE)
    assert verify_bundle(bundle, keys[1])
    sign_bundle(bundle, keys[0])
    model_signing.verifying.Config().use_elliptic_key_verifier(public_key=keys[1]).verify(bundle, bundle / SIGNATURE)


def test_shard_serialization_refused(bundle, keys):
    import model_signing

    model_signing.signing.Config().use_elliptic_key_signer(private_key=keys[0]).set_hashing_config(
        model_signing.hashing.Config().use_shard_serialization().set_ignored_paths(paths=[SIGNATURE])
    ).sign(bundle, bundle / SIGNATURE)
    refused(bundle, keys[1], "'shards' serialization; expected 'files'")


def test_timings_on_a_400kb_model(tmp_path, keys):
    model = tiny_model(tmp_path / "big.onnx", width=50_000)  # 2 x 50k floats: 400 KB
    assert 390_000 < model.stat().st_size < 420_000
    bundle = build_bundle(model, tmp_path / "big", sensitive=["g"])
    sign_bundle(bundle, keys[0])  # warm imports
    t0 = time.perf_counter()
    sign_bundle(bundle, keys[0])
    t1 = time.perf_counter()
    verify_bundle(bundle, keys[1])
    t2 = time.perf_counter()
    print(f"\nsign {1000 * (t1 - t0):.1f} ms, verify {1000 * (t2 - t1):.1f} ms (400 KB model)")
    assert t1 - t0 < 5 and t2 - t1 < 5


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_importing_the_runtime_does_not_import_model_signing():
    proc = _run(
        "import sys, edgefair.runtime, edgefair.runtime.session, edgefair.runtime.signing\n"
        "heavy = [m for m in ('model_signing', 'sigstore', 'cryptography') if m in sys.modules]\n"
        "assert not heavy, heavy"
    )
    assert proc.returncode == 0, proc.stderr


def test_without_the_library_one_line_install_hint(signed, keys):
    proc = _run(
        "import sys; sys.modules['model_signing'] = None\n"
        "from edgefair.errors import BundleError\n"
        "from edgefair.runtime.bundle import verify_bundle\n"
        f"try: verify_bundle({str(signed)!r}, {str(keys[1])!r})\n"
        "except BundleError as e: print(e)\n"
    )
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.strip().splitlines()) == 1
    assert "pip install 'edgefair[signing]'" in proc.stdout


def test_copy_of_a_signed_bundle_verifies(signed, keys, tmp_path):
    """The folder name is only informative in model-signing: a moved bundle still verifies."""
    moved = shutil.copytree(signed, tmp_path / "elsewhere")
    assert verify_bundle(moved, keys[1])


def test_the_cli_signs_checks_and_serves_only_trusted_bundles(tmp_path, keys, other_keys):
    """`bundle build --sign-key`, `bundle check --trust-key` and FairSession(trust_key=) end to end."""
    from edgefair.runtime.session import FairSession
    from tests.conftest import assert_one_line_error, run_cli

    model = tiny_model(tmp_path / "cli.onnx")
    out = tmp_path / "signed"
    build = run_cli("bundle", "build", str(model), "-o", str(out), "--sensitive", "g", "--sign-key", str(keys[0]))
    assert build.returncode == 0 and "signed" in build.stdout, build.stderr
    check = run_cli("bundle", "check", str(out), "--trust-key", str(keys[1]))
    assert check.returncode == 0 and "signed by key" in check.stdout, check.stderr
    assert_one_line_error(run_cli("bundle", "check", str(out), "--trust-key", str(other_keys[1])), "another key")
    with FairSession(out, trust_key=keys[1]) as session:
        session.run({"x": np.zeros((1, 2), np.float32)}, {"g": ["a"]})
    rehash(out, threshold=0.0)  # consistent hashes: integrity checks alone would pass it
    assert run_cli("bundle", "check", str(out)).returncode == 0
    assert_one_line_error(run_cli("bundle", "check", str(out), "--trust-key", str(keys[1])), "changed after signing")
    with pytest.raises(BundleError, match="changed after signing"):
        FairSession(out, trust_key=keys[1])
