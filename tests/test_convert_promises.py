"""README's convert claims, each backed by a test against an independent oracle (the graph
itself, onnxruntime, torch, scikit-learn, fairlearn, file sizes on disk)."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
from pathlib import Path

import numpy as np
import onnx
import onnx.parser
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from edgefair import convert as conv
from edgefair import modelio
from edgefair.convert.quantize import QuantizeOptions, QuantMode, quantize
from edgefair.errors import InputError
from tests import models
from tests.conftest import MODELS, assert_one_line_error, run_cli

RNG = np.random.default_rng(0)
X = {"x": RNG.normal(size=(500, 4)).astype(np.float32)}
WEIGHTED = ("MatMul", "Gemm", "Conv", "ConvTranspose")


def ort_session(model: onnx.ModelProto | Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    src = str(model) if isinstance(model, Path) else model.SerializeToString()
    return ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])


def producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in model.graph.node for o in n.output}


def weight_source(model: onnx.ModelProto) -> dict[str, str]:
    """Weighted node's output -> what feeds its weight: 'DequantizeLinear', 'init' or another op."""
    made = producers(model)
    inits = {t.name for t in model.graph.initializer}
    out = {}
    for n in model.graph.node:
        if n.op_type in WEIGHTED:
            w = n.input[1]
            out[n.output[0]] = made[w].op_type if w in made else ("init" if w in inits else "?")
    return out


def feeds_output(model: onnx.ModelProto) -> set[str]:
    """Outputs of weighted nodes from which a graph output is reached through unweighted ops only
    (computed here, not with edgefair's helper)."""
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    outputs = {o.name for o in model.graph.output}
    found = set()
    for n in model.graph.node:
        if n.op_type not in WEIGHTED:
            continue
        stack = [n.output[0]]
        while stack:
            t = stack.pop()
            if t in outputs:
                found.add(n.output[0])
                break
            stack += [o for r in readers.get(t, []) if r.op_type not in WEIGHTED for o in r.output]
    return found


def decisions(sess: ort.InferenceSession, columns: dict[str, np.ndarray]) -> np.ndarray:
    sig = modelio.signature(sess)
    choice = modelio.choose_output(sig)
    out = sess.run([choice.name], modelio.build_feeds(sig, columns))[0]
    score = out[:, choice.column] if choice.column is not None else out.reshape(-1)
    return score >= 0.5


def write_csv(path: Path, columns: dict[str, np.ndarray]) -> Path:
    names = list(columns)
    with path.open("w") as f:
        f.write(",".join(names) + "\n")
        for row in zip(*(columns[n] for n in names), strict=True):
            f.write(",".join(f"{v:.7g}" if isinstance(v, float) else str(v) for v in row) + "\n")
    return path


# 1. Gemm is rewritten as MatMul + Add for dynamic int8 -------------------------------------


def test_dynamic_int8_rewrites_gemm_as_matmul():
    model = models.mlp(gemm=True)
    assert "Gemm" in {n.op_type for n in model.graph.node}
    result = quantize(model, QuantizeOptions(mode=QuantMode.DYNAMIC_INT8))
    assert result.report["gemm_rewritten_as_matmul"] >= 1
    ops = [n.op_type for n in result.model.graph.node]
    assert "Gemm" not in ops, ops
    assert {"MatMulInteger", "DynamicQuantizeMatMul"} & set(ops), ops
    # both weighted layers now run in int8: no float weight is multiplied any more
    assert not [n for n in result.model.graph.node if n.op_type == "MatMul"], ops
    ref = ort_session(model).run(None, X)[0]
    out = ort_session(result.model).run(None, X)[0]
    assert np.mean((ref >= 0.5) == (out >= 0.5)) > 0.95


# 2. Static int8 keeps the output layer in float by default ---------------------------------


@pytest.mark.parametrize("keep", [True, False])
def test_static_int8_output_layer_float_by_default(keep):
    options = (
        QuantizeOptions(mode=QuantMode.STATIC_INT8)
        if keep
        else QuantizeOptions(mode=QuantMode.STATIC_INT8, keep_output_layer_float=False)
    )
    result = quantize(models.mlp(hidden=16), options, X)
    sources = weight_source(result.model)
    last = feeds_output(result.model)
    assert len(sources) == 2 and len(last) == 1, sources
    for tensor, src in sources.items():
        if tensor in last:
            assert src == ("init" if keep else "DequantizeLinear"), (tensor, src)
        else:
            assert src == "DequantizeLinear", (tensor, src)
    if keep:
        (out_layer,) = last
        node = producers(result.model)[out_layer]
        w = {t.name: t for t in result.model.graph.initializer}[node.input[1]]
        assert w.data_type == onnx.TensorProto.FLOAT


def test_static_int8_float_output_layer_agrees_more_on_adult_mlp(adult_test):
    from edgefair.data import load_adult

    source = conv.load_model(MODELS / "adult_mlp.onnx")
    calibration = conv.calibration_sample(load_adult("train").columns, 2000, None, "adult:train")
    reference = decisions(ort_session(source), adult_test.columns)
    agreement = {}
    for keep in (True, False):
        options = conv.ConvertOptions(
            quantize=QuantizeOptions(mode=QuantMode.STATIC_INT8, keep_output_layer_float=keep)
        )
        result = conv.convert(source, options, None, calibration)
        agreement[keep] = float(np.mean(decisions(ort_session(result.model), adult_test.columns) == reference))
        last = feeds_output(result.model)
        srcs = weight_source(result.model)
        assert all(srcs[t] == ("init" if keep and t in last else "DequantizeLinear") for t in srcs), srcs
    assert agreement[True] >= agreement[False], agreement
    assert agreement[True] >= 0.99, agreement  # README: 98.1% -> 99.4%


# 3. fp16: the preprocessing stays float32, the compute after the first weighted op is fp16 --


def _preprocessed_mlp() -> onnx.ModelProto:
    rng = np.random.default_rng(3)
    model = onnx.parser.parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    pre (float[N, 4] x) => (float[N, 1] score) {
        s = Sub (x, mean)
        n = Div (s, scale)
        m = MatMul (n, w1)
        h = Add (m, b1)
        r = Relu (h)
        z = MatMul (r, w2)
        score = Sigmoid (z)
    }""")
    model.graph.initializer.extend(
        [
            numpy_helper.from_array(np.array([1.0, -2.0, 0.5, 3.0], np.float32), "mean"),
            numpy_helper.from_array(np.array([2.0, 0.5, 1.5, 4.0], np.float32), "scale"),
            numpy_helper.from_array(rng.normal(size=(4, 8)).astype(np.float32), "w1"),
            numpy_helper.from_array(rng.normal(0, 0.1, 8).astype(np.float32), "b1"),
            numpy_helper.from_array(rng.normal(size=(8, 1)).astype(np.float32), "w2"),
        ]
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def test_fp16_keeps_preprocessing_float32():
    model = _preprocessed_mlp()
    result = quantize(model, QuantizeOptions(mode=QuantMode.FP16))
    types = {t.name: t.data_type for t in result.model.graph.initializer}
    assert types["mean"] == types["scale"] == onnx.TensorProto.FLOAT, types
    assert types["w1"] == types["b1"] == types["w2"] == onnx.TensorProto.FLOAT16, types
    inferred = onnx.shape_inference.infer_shapes(result.model, strict_mode=True)
    elem = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    node = {n.op_type: n for n in inferred.graph.node}
    assert elem[node["Sub"].output[0]] == elem[node["Div"].output[0]] == onnx.TensorProto.FLOAT
    # the preprocessing's result is cast to fp16 on its way into the first MatMul, not before
    first = next(n for n in inferred.graph.node if n.op_type == "MatMul")
    assert elem[first.input[0]] == onnx.TensorProto.FLOAT16
    assert elem[first.output[0]] == onnx.TensorProto.FLOAT16
    ref = ort_session(model).run(None, X)[0]
    out = ort_session(result.model).run(None, X)[0]
    assert out.dtype == np.float32 and np.max(np.abs(ref - out)) < 1e-2


def test_fp16_adult_mlp_weights_are_half_preprocessing_float():
    source = conv.load_model(MODELS / "adult_mlp.onnx")
    result = quantize(source, QuantizeOptions(mode=QuantMode.FP16))
    weighted = {i for n in result.model.graph.node if n.op_type in WEIGHTED for i in n.input[1:]}
    types = {t.name: t.data_type for t in result.model.graph.initializer}
    assert weighted and all(types[w] == onnx.TensorProto.FLOAT16 for w in weighted if w in types), types
    others = [n for n, t in types.items() if n not in weighted and t == onnx.TensorProto.FLOAT16]
    assert not others, others  # no preprocessing constant became fp16
    ml = [n for n in result.model.graph.node if n.domain == "ai.onnx.ml"]
    assert ml and all(n.op_type != "Cast" for n in ml)


# 4. --balance-by: equal calibration rows per group -----------------------------------------


def test_calibration_sample_balances_groups():
    groups = np.array(["big"] * 900 + ["mid"] * 80 + ["small"] * 20)
    columns = {"race": groups, "age": np.arange(len(groups), dtype=np.float64)}
    for rows in (60, 300, 3000):
        picked = conv.calibration_sample(columns, rows, "race", "src")
        per = rows // 3
        for g, size in (("big", 900), ("mid", 80), ("small", 20)):
            assert int((picked["race"] == g).sum()) == min(per, size), (rows, g)
        # rows stay whole: age still identifies each picked row's group
        assert (groups[picked["age"].astype(int)] == picked["race"]).all()
    with pytest.raises(Exception, match="no column 'sex'"):
        conv.calibration_sample(columns, 10, "sex", "src")


def test_cli_balance_by_race_on_adult_csv(tmp_path):
    from edgefair.data import load_adult

    cols = {k: v[:3000] for k, v in load_adult("train").columns.items()}
    csv = write_csv(tmp_path / "calib.csv", cols)
    out = tmp_path / "static.onnx"
    proc = run_cli(
        "convert",
        str(MODELS / "adult_mlp.onnx"),
        "-o",
        str(out),
        "--quantize",
        "static",
        "--calibration-data",
        str(csv),
        "--balance-by",
        "race",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    _, sizes = np.unique(cols["race"], return_counts=True)
    per = 2000 // len(sizes)
    assert doc["steps"][0]["calibration_rows"] == sum(min(per, int(s)) for s in sizes)
    assert out.exists()


def _feature_matrix_calibration(tmp_path: Path) -> tuple[Path, Path, Path]:
    onnx.save(models.mlp(), tmp_path / "tiny.onnx")
    x = RNG.normal(size=(300, 4))
    race = np.array(["A"] * 200 + ["B"] * 70 + ["C"] * 30)
    features = {f"f{i}": x[:, i] for i in range(4)}
    calib = write_csv(tmp_path / "calib.csv", {**features, "race": race})
    sample = write_csv(tmp_path / "sample.csv", features)
    return tmp_path / "tiny.onnx", calib, sample


# tiny models grow when quantised (scales and zero points outweigh 100 weights)
TINY_STATIC = conv.ConvertOptions(
    quantize=QuantizeOptions(mode=QuantMode.STATIC_INT8, calibration_rows=90), allow_larger=True
)


def test_balance_by_column_is_not_a_feature_when_calibrating(tmp_path):
    """``edgefair convert tiny.onnx --quantize static --calibration-data CSV --balance-by race
    --sample-data CSV2``: the library call it makes. 90 rows, 30 from each of 3 groups."""
    model, calib, sample = _feature_matrix_calibration(tmp_path)
    result = conv.convert_file(model, TINY_STATIC, calibration_data=calib, balance_by="race", sample_data=sample)
    assert result.steps[0]["calibration_rows"] == 90


def test_balance_by_column_is_not_a_feature_of_the_default_sample(tmp_path):
    model, calib, _ = _feature_matrix_calibration(tmp_path)
    result = conv.convert_file(model, TINY_STATIC, calibration_data=calib, balance_by="race")
    assert result.steps[0]["calibration_rows"] == 90
    assert result.check is not None and result.check.rows_compared == 300


# 5. export: TorchScript and scikit-learn pickles -------------------------------------------


@pytest.fixture(scope="module")
def numeric_csv(tmp_path_factory):
    x = np.random.default_rng(5).normal(size=(200, 4))
    path = tmp_path_factory.mktemp("export") / "sample.csv"
    write_csv(path, {f"f{i}": x[:, i] for i in range(4)})
    # the oracle reads the CSV's text back itself, as the numbers the file holds
    return path, np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float32)


@pytest.mark.parametrize("how", ["script", "trace"])
def test_torchscript_export_matches_torch(tmp_path, numeric_csv, how):
    """Scripted through the CLI, traced through the library call the CLI makes (time)."""
    torch = pytest.importorskip("torch")
    csv, x = numeric_csv
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2), torch.nn.Softmax(dim=1)
    ).eval()
    ts = torch.jit.script(net) if how == "script" else torch.jit.trace(net, torch.zeros(3, 4))
    ts.save(str(tmp_path / "net.pt"))
    out = tmp_path / "net.onnx"
    if how == "script":
        proc = run_cli("export", str(tmp_path / "net.pt"), "--sample-data", str(csv), "-o", str(out))
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith(f"wrote {out} ({os.path.getsize(out):,} bytes)")
    else:
        conv.save_model(conv.export_model(tmp_path / "net.pt", sample_data=csv).model, out)
    sess = ort_session(out)
    (inp,) = sess.get_inputs()
    got = sess.run(None, {inp.name: x})[0]
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    got7 = sess.run(None, {inp.name: x[:7]})[0]  # batch is dynamic
    assert got7.shape == (7, 2)


def _fitted_logistic_regression(x: np.ndarray):
    from sklearn.linear_model import LogisticRegression

    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int)
    return LogisticRegression().fit(x, y)


def _save_estimator(estimator, path: Path) -> None:
    if path.suffix == ".joblib":
        import joblib

        joblib.dump(estimator, path)
    else:
        with path.open("wb") as f:
            pickle.dump(estimator, f)


def test_pickles_need_trust_pickle(tmp_path, numeric_csv):
    csv, x = numeric_csv
    model = tmp_path / "lr.pkl"
    _save_estimator(_fitted_logistic_regression(x), model)
    out = tmp_path / "lr.onnx"
    proc = run_cli("export", str(model), "--sample-data", str(csv), "-o", str(out))
    assert_one_line_error(proc, "--trust-pickle", str(model))
    assert not out.exists()


@pytest.mark.parametrize("suffix", [".pkl", ".joblib"])
def test_trusted_pickle_exports_like_sklearn(tmp_path, numeric_csv, suffix):
    """The unpickling path, with the sample given in memory as a feature matrix."""
    pytest.importorskip("skl2onnx")
    from edgefair.convert.export import export_file

    _, x = numeric_csv
    lr = _fitted_logistic_regression(x)
    model = tmp_path / f"lr{suffix}"
    _save_estimator(lr, model)
    with pytest.raises(InputError, match="--trust-pickle"):
        export_file(model, x)
    onx = export_file(model, x, trust_pickle=True)
    sess = ort_session(onx)
    probs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"input": x}), strict=True))
    np.testing.assert_allclose(probs["probabilities"], lr.predict_proba(x), atol=1e-5)


@pytest.mark.parametrize("suffix", [".pkl", ".joblib"])
def test_trusted_pickle_exports_from_csv(tmp_path, numeric_csv, suffix):
    """``edgefair export lr.pkl --sample-data CSV --trust-pickle``: the library call it makes."""
    pytest.importorskip("skl2onnx")
    csv, x = numeric_csv
    lr = _fitted_logistic_regression(x)
    model = tmp_path / f"lr{suffix}"
    _save_estimator(lr, model)
    sess = ort_session(conv.export_model(model, sample_data=csv, trust_pickle=True).model)
    sig = modelio.signature(sess)
    feeds = modelio.build_feeds(sig, {f"f{i}": x[:, i] for i in range(4)})
    probs = sess.run(["probabilities"], feeds)[0]
    np.testing.assert_allclose(probs, lr.predict_proba(x), atol=1e-5)


# 6. convert's success output ---------------------------------------------------------------


def _convert_dynamic(tmp_path: Path, name: str):
    src = MODELS / f"{name}.onnx"
    out = tmp_path / f"{name}.int8.onnx"
    proc = run_cli("convert", str(src), "-o", str(out), "--quantize", "dynamic", "--sample-data", "adult")
    assert proc.returncode == 0, proc.stderr
    m = re.match(r"wrote (.+): ([\d,]+) -> ([\d,]+) bytes \((\d+)%\)", proc.stdout.splitlines()[0])
    assert m, proc.stdout
    return proc, src, out, m


def test_convert_prints_real_sizes_quantisation_and_agreement(tmp_path, adult_test):
    proc, src, out, m = _convert_dynamic(tmp_path, "adult_sklearn")
    assert m.group(1) == str(out)
    before, after = int(m.group(2).replace(",", "")), int(m.group(3).replace(",", ""))
    assert before == os.path.getsize(src)
    assert after == os.path.getsize(out)
    assert int(m.group(4)) == round(100 * after / before)
    assert re.search(r"^  quantised \(dynamic\): MatMul x\d+", proc.stdout, re.M), proc.stdout
    agree = re.search(r"vs source on 5000 rows: .*; decisions agree ([\d.]+)%$", proc.stdout, re.M)
    assert agree, proc.stdout
    sample = {k: v[:5000] for k, v in adult_test.columns.items()}
    mine = np.mean(decisions(ort_session(src), sample) == decisions(ort_session(out), sample))
    assert float(agree.group(1)) == pytest.approx(round(100 * mine, 2), abs=1e-9)


def test_convert_reports_source_file_size_for_duplicate_opset_model():
    """What the CLI prints as 'A -> B bytes' is ConvertResult.size_before -> check.size_bytes."""
    src = MODELS / "adult_mlp.onnx"
    model = onnx.load_model(str(src))
    assert len(model.opset_import) > len({o.domain for o in model.opset_import})  # duplicates
    options = conv.ConvertOptions(quantize=QuantizeOptions(mode=QuantMode.DYNAMIC_INT8))
    result = conv.convert_file(src, options)
    assert result.size_before == os.path.getsize(src)


# 7/8. undefined rates, NaN -> null, rows_needed --------------------------------------------


@pytest.fixture(scope="module")
def verify_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("verify")
    ref = models.mlp()
    onnx.save(ref, tmp / "ref.onnx")
    onnx.save(quantize(ref, QuantizeOptions()).model, tmp / "cand.onnx")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 4))
    grp = np.array(["A"] * 300 + ["B"] * 100)
    y = (x[:, 0] > 0).astype(int)
    y[grp == "B"] = 0  # group B: no positive labels, so its TPR has an empty denominator
    cols = {**{f"f{i}": x[:, i] for i in range(4)}, "grp": grp, "y": y}
    csv = write_csv(tmp / "data.csv", cols)
    proc = run_cli(
        "verify",
        str(tmp / "ref.onnx"),
        str(tmp / "cand.onnx"),
        "--data",
        str(csv),
        "--label",
        "y",
        "--sensitive",
        "grp",
        "--json",
        str(tmp / "r.json"),
        "--markdown",
        str(tmp / "r.md"),
    )
    assert proc.returncode in (0, 1), proc.stderr
    return tmp, cols


def _no_nan(text: str):
    def refuse(constant: str):
        raise AssertionError(f"non-JSON constant {constant} in the report")

    return json.loads(text, parse_constant=refuse)


def test_undefined_rate_is_listed_and_zero_as_fairlearn(verify_run):
    from fairlearn.metrics import MetricFrame, true_positive_rate

    tmp, cols = verify_run
    text = (tmp / "r.json").read_text()
    doc = _no_nan(text)
    section = doc["by_group"]["grp"]
    for model in ("reference", "candidate"):
        assert "true_positive_rate" in section["undefined"][model]["B"], section["undefined"]
        assert "true_positive_rate" not in section["undefined"][model].get("A", []), section["undefined"]
    # fairlearn's MetricFrame on the reference's decisions: B's TPR is 0.0, A's as computed
    feats = np.stack([cols[f"f{i}"] for i in range(4)], axis=1).astype(np.float32)
    pred = (ort_session(tmp / "ref.onnx").run(None, {"x": feats})[0].reshape(-1) >= 0.5).astype(int)
    frame = MetricFrame(metrics=true_positive_rate, y_true=cols["y"], y_pred=pred, sensitive_features=cols["grp"])
    assert frame.by_group["B"] == 0.0
    assert section["reference"]["B"]["true_positive_rate"] == 0.0
    assert section["reference"]["A"]["true_positive_rate"] == pytest.approx(frame.by_group["A"], abs=1e-12)
    assert "NaN" not in text and "Infinity" not in text


def test_json_safe_turns_nan_into_null():
    from edgefair.report import json_safe

    doc = json_safe({"a": float("nan"), "b": [1.0, float("nan")], "c": (float("nan"),), "d": "NaN"})
    assert doc == {"a": None, "b": [1.0, None], "c": [None], "d": "NaN"}
    assert _no_nan(json.dumps(doc, allow_nan=False)) == doc


def test_cli_json_outputs_null_for_nan(tmp_path):
    """A ratio of 0/0 is NaN in fairlearn and in the Python API; the CLI's JSON says null."""
    from fairlearn.metrics import MetricFrame, false_positive_rate

    import edgefair

    y = np.array([0, 0, 0, 0, 1, 1, 0, 0])
    p = y.copy()  # no false positives anywhere: FPR 0/0 ratio between groups
    g = np.array(["a"] * 4 + ["b"] * 4)
    fair = MetricFrame(metrics=false_positive_rate, y_true=y, y_pred=p, sensitive_features=g).ratio()
    assert np.isnan(fair)
    assert np.isnan(edgefair.metric_frame(y, p, sensitive_features={"g": g}).ratio()["false_positive_rate"])
    csv = write_csv(tmp_path / "preds.csv", {"y": y, "p": p, "g": g})
    proc = run_cli("metrics", str(csv), "--label", "y", "--prediction", "p", "--sensitive", "g", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = _no_nan(proc.stdout)
    assert doc["ratio"]["false_positive_rate"] is None
    assert doc["ratio"]["accuracy"] == 1.0


def test_inconclusive_check_says_how_many_rows_would_settle_it(verify_run):
    tmp, _ = verify_run
    doc = _no_nan((tmp / "r.json").read_text())
    md = (tmp / "r.md").read_text()
    waiting = [c for c in doc["checks"] if c["verdict"] == "inconclusive" and c["gated"] and c["rows_needed"]]
    assert waiting, doc["checks"]
    for c in waiting:
        assert type(c["rows_needed"]) is int, c
        assert c["rows_needed"] > c["rows"], c  # more rows than the check had
        assert f"(~{c['rows_needed']} rows would settle it)" in md, c
    for c in doc["checks"]:
        if c["verdict"] != "inconclusive":
            assert c["rows_needed"] is None, c


# 9. no external data at load ---------------------------------------------------------------


def _tamper_as_attacker(bundle: Path, edit) -> None:
    """Rewrite model.onnx, then fix the manifest's hash and size and manifest.sha256."""
    model = onnx.load_model(str(bundle / "model.onnx"), load_external_data=False)
    edit(model)
    blob = model.SerializeToString()
    (bundle / "model.onnx").write_bytes(blob)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"]["model.onnx"] = {"sha256": hashlib.sha256(blob).hexdigest(), "size_bytes": len(blob)}
    text = (json.dumps(manifest, indent=2) + "\n").encode()
    (bundle / "manifest.json").write_bytes(text)
    (bundle / "manifest.sha256").write_text(hashlib.sha256(text).hexdigest() + "\n")


def _external(with_entries: bool):
    def edit(model: onnx.ModelProto) -> None:
        t = model.graph.initializer[0]
        t.ClearField("raw_data")
        del t.float_data[:]
        t.data_location = onnx.TensorProto.EXTERNAL
        if with_entries:
            for k, v in (("location", "weights.bin"), ("offset", "0"), ("length", "64")):
                e = t.external_data.add()
                e.key, e.value = k, v

    return edit


@pytest.mark.parametrize("with_entries", [True, False])
def test_bundle_with_external_data_is_refused(tmp_path, with_entries):
    from edgefair.bundling import build_bundle
    from edgefair.runtime import load_bundle

    onnx.save(models.mlp(), tmp_path / "m.onnx")
    bundle = build_bundle(tmp_path / "m.onnx", tmp_path / "b", sensitive=["race"])
    _tamper_as_attacker(bundle, lambda model: None)  # control: the re-hashing alone is accepted
    load_bundle(bundle)
    _tamper_as_attacker(bundle, _external(with_entries))
    proc = run_cli("bundle", "check", str(bundle))
    assert_one_line_error(proc, "model.onnx", "external data")
