"""Small certified models for repository, shadow and incident tests, trained in the test.

Data: two features, a group indicator column ``g`` the model takes (so a candidate can be
shifted for one group), and two sensitive attributes (``grp`` a/b, ``region`` n/s/e).
A logistic regression (scikit-learn) is the reference; candidates are the same weights,
optionally with the group's weight shifted, as ONNX built in place.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import onnx.parser
from onnx import numpy_helper
from sklearn.linear_model import LogisticRegression

import edgefair
from edgefair.bundling import build_bundle
from edgefair.data import Dataset
from edgefair.files import write_text

FEATURES = ["x0", "x1", "g"]
SENSITIVE = ["grp", "region"]


def make_rows(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    g = (rng.random(n) < 0.4).astype(np.float32)
    x0, x1 = rng.normal(0, 1, n).astype(np.float32), rng.normal(0, 1, n).astype(np.float32)
    logit = 1.2 * x0 - 0.8 * x1 + 0.3 * g
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    grp = np.where(g > 0, "b", "a").astype(object)
    region = rng.choice(np.array(["n", "s", "e"], dtype=object), n)
    return {"x0": x0, "x1": x1, "g": g, "y": y, "grp": grp, "region": region}


def dataset(rows: dict[str, np.ndarray], name: str = "field") -> Dataset:
    digest = hashlib.sha256(b"".join(np.asarray(v).astype(str).tobytes() for v in rows.values())).hexdigest()
    return Dataset(dict(rows), name, digest, len(next(iter(rows.values()))))


def features(rows: dict[str, np.ndarray], sl: slice | None = None) -> np.ndarray:
    x = np.stack([rows[f] for f in FEATURES], axis=1).astype(np.float32)
    return x if sl is None else x[sl]


def linear_model(weights: np.ndarray, bias: float) -> onnx.ModelProto:
    model = onnx.parser.parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    linear (float[N, 3] x) => (float[N, 1] score) {
    m = MatMul (x, w)
    z = Add (m, b)
    score = Sigmoid (z)
    }""")
    w = numpy_helper.from_array(np.asarray(weights, np.float32).reshape(3, 1), "w")
    b = numpy_helper.from_array(np.asarray([bias], np.float32), "b")
    model.graph.initializer.extend([w, b])
    onnx.checker.check_model(model, full_check=True)
    return model


def train(rows: dict[str, np.ndarray]) -> tuple[np.ndarray, float]:
    clf = LogisticRegression().fit(features(rows), rows["y"])
    return clf.coef_[0].astype(np.float64), float(clf.intercept_[0])


def save(model: onnx.ModelProto, path: Path) -> Path:
    path.write_bytes(model.SerializeToString())
    return path


def certified_bundle(model: Path, reference: Path, rows: dict[str, np.ndarray], out: Path) -> Path:
    """A bundle of ``model`` with its verify certificate against ``reference`` on ``rows``."""
    report = edgefair.verify(reference, model, dataset(rows), label="y", sensitive=SENSITIVE, feature_columns=FEATURES)
    cert = write_text(out.parent / f"{out.name}.json", edgefair.report.build(report).to_json())
    return build_bundle(model, out, certificate=cert, allow_failed_certificate=True)


def cli(*args: str) -> tuple[int, str, str]:
    """The ``edgefair`` entry point (``edgefair.cli.main``) in this process: exit code, stdout,
    stderr. Cheaper than a subprocess; the same parsing, error lines and exit codes."""
    import contextlib
    import io
    import sys

    from edgefair.cli import main

    out, err = io.StringIO(), io.StringIO()
    argv = sys.argv
    sys.argv = ["edgefair", *args]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0
    finally:
        sys.argv = argv
    return code, out.getvalue(), err.getvalue()
