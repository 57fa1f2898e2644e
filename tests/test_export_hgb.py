"""HistGradientBoosting exports: skl2onnx 1.20 hands protobuf 7 a Python bool in an int
attribute list (leaves' ``nodes_missing_value_tracks_true=False``) and fails; edgefair's
export gives its converter ints instead. Trained here (a Pipeline of a ColumnTransformer over
numeric and string columns, and a bare regressor); oracles: scikit-learn's own predictions
against onnxruntime sessions and feeds built here. A conversion that fails is one line that
names the model and the root cause, never a dump of the attribute arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from threadpoolctl import threadpool_limits

from edgefair import convert as conv
from edgefair.convert.export import ExportOptions
from edgefair.convert.export_sklearn import root_cause
from tests.test_cli_bad_input import assert_clean, run_main

pd = pytest.importorskip("pandas")
pytest.importorskip("skl2onnx")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """HistGradientBoosting's OpenMP threads on a busy 2-core machine: a fit takes 11 s, not 0.2 s."""
    with threadpool_limits(1):
        yield


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def hgb(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, object, object]:
    import joblib
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    out = tmp_path_factory.mktemp("hgb")
    rng = np.random.default_rng(4)
    n = 600
    frame = pd.DataFrame(
        {
            "age": rng.normal(50, 10, n).round(1),
            "dose": rng.gamma(2.0, 1.5, n).round(3),
            "smoker": rng.choice(["yes", "no", "former"], n),
        }
    )
    logit = 0.08 * (frame.age - 50) + 0.6 * frame.dose - 1.5 + 1.2 * (frame.smoker == "yes")
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    pre = ColumnTransformer([("num", "passthrough", ["age", "dose"]), ("cat", OneHotEncoder(), ["smoker"])])
    model = Pipeline([("pre", pre), ("hgb", HistGradientBoostingClassifier(max_iter=40, random_state=0))])
    model.fit(frame[:400], y[:400])
    joblib.dump(model, out / "hgb.joblib")
    csv = out / "sample.csv"
    frame.assign(y=y).to_csv(csv, index=False)
    return out, csv, model, pd.read_csv(csv)[["age", "dose", "smoker"]]  # the numbers the file holds


def test_histgradientboosting_pipeline_exports_with_parity(hgb):
    out, csv, model, frame = hgb
    result = conv.export_model(out / "hgb.joblib", sample_data=csv, options=ExportOptions(trust_pickle=True))
    assert result.passed and result.parity is not None
    feeds = {
        "age": frame[["age"]].to_numpy(np.float32),
        "dose": frame[["dose"]].to_numpy(np.float32),
        "smoker": frame[["smoker"]].to_numpy(object),
    }
    got = session(result.model).run(["probabilities"], feeds)[0]
    expected = model.predict_proba(frame)
    worst = float(np.abs(got - expected).max())
    assert worst < 1e-4, worst
    assert np.array_equal(got[:, 1] >= 0.5, expected[:, 1] >= 0.5)
    assert result.parity.rows == len(frame)
    assert result.parity.max_abs_difference == pytest.approx(worst, abs=1e-9)


def test_histgradientboosting_exports_on_the_command_line(hgb, tmp_path):
    out, csv, _, _ = hgb
    target = tmp_path / "hgb.onnx"
    o = run_main("export", str(out / "hgb.joblib"), "-o", str(target), "--trust-pickle", "--sample-data", str(csv))
    assert_clean(o, codes=(0,))
    assert target.exists() and "parity with the source on 600 rows" in o.out, o.out


def test_a_bare_histgradientboosting_regressor_exports_too():
    from sklearn.ensemble import HistGradientBoostingRegressor

    rng = np.random.default_rng(5)
    x = rng.normal(size=(300, 3))
    y = x[:, 0] * 2 - x[:, 1] ** 2 + rng.normal(scale=0.1, size=300)
    model = HistGradientBoostingRegressor(max_iter=30, random_state=0).fit(x, y)
    onx = conv.export_sklearn(model, x.astype(np.float32))
    got = session(onx).run(None, {"input": x.astype(np.float32)})[0].reshape(-1)
    assert float(np.abs(got - model.predict(x)).max()) < 1e-4  # (predict on float32 input bins differently)


def test_root_cause_is_the_innermost_first_line_cut_short():
    try:
        try:
            raise TypeError("Field onnx.AttributeProto.ints: Expected an int, got a boolean.")
        except TypeError as inner:
            raise ValueError("Unable to create node with attributes={'base_values': array([0.5,\n 0.25])}") from inner
    except ValueError as exc:
        assert root_cause(exc) == "TypeError: Field onnx.AttributeProto.ints: Expected an int, got a boolean."
    assert root_cause(ValueError("x" * 1000)) == "ValueError: " + "x" * 225 + "..."
    assert len(root_cause(ValueError("x" * 1000))) == 240


def test_a_model_skl2onnx_cannot_convert_is_one_line_naming_it(tmp_path):
    """A custom estimator skl2onnx has no converter for: one line with its name, no dump."""
    import joblib
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    from tests.unconvertible import Doubler

    rng = np.random.default_rng(6)
    x = rng.normal(size=(100, 2))
    model = Pipeline([("double", Doubler()), ("lr", LogisticRegression())]).fit(x, (x[:, 0] > 0).astype(int))
    joblib.dump(model, tmp_path / "m.joblib")
    (tmp_path / "s.csv").write_text("a,b\n" + "".join(f"{a:.5g},{b:.5g}\n" for a, b in x))
    o = run_main("export", str(tmp_path / "m.joblib"), "-o", str(tmp_path / "m.onnx"), "--trust-pickle",
                 "--sample-data", str(tmp_path / "s.csv"))  # fmt: skip
    assert_clean(o, codes=(2,))
    assert "skl2onnx could not convert Pipeline(Doubler, LogisticRegression): " in o.err, o.err
    assert "array(" not in o.err and len(o.err) < 400, o.err
