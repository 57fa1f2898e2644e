"""A counters store inside the bundle folder is refused before anything is written: the first
run used to create counters.db (and its -wal/-shm) inside the hash-checked folder, and every
later load failed with "file not listed in the manifest". The model is trained here."""

from __future__ import annotations

import numpy as np
import pytest

from edgefair.bundling import build_bundle
from edgefair.errors import InputError
from edgefair.runtime.session import FairSession
from tests.conftest import assert_one_line_error, run_cli

pytest.importorskip("skl2onnx")


def test_a_store_inside_the_bundle_is_refused_and_the_bundle_stays_loadable(tmp_path):  # type: ignore[no-untyped-def]
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(4)
    x = rng.normal(size=(300, 2)).astype(np.float32)
    y = (x[:, 0] > 0).astype(int)
    model = tmp_path / "m.onnx"
    model.write_bytes(to_onnx(LogisticRegression().fit(x, y), x[:1], options={"zipmap": False}).SerializeToString())
    bundle = build_bundle(model, tmp_path / "b", sensitive=["g"])
    before = sorted(p.name for p in bundle.iterdir())
    with pytest.raises(InputError, match="inside the bundle folder"):
        FairSession(bundle, store=bundle / "counters.db")
    proc = run_cli("serve", str(bundle), "--port", "0", "--store", str(bundle / "sub" / "c.db"), timeout=60)
    assert_one_line_error(proc, "inside the bundle folder")
    assert sorted(p.name for p in bundle.iterdir()) == before  # nothing written into the bundle
    check = run_cli("bundle", "check", str(bundle))
    assert check.returncode == 0, check.stderr
    with FairSession(bundle, store=tmp_path / "counters.db") as session:  # outside: fine
        session.run({"X": x[:3]}, {"g": ["a", "b", "a"]})
