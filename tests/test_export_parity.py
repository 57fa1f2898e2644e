"""Export checks that the ONNX model computes what its source computes (the parity check), on
models trained here: scikit-learn forests, LightGBM, XGBoost, torch with several inputs and a
1-D conv net. Oracles: the source library's own predictions and onnxruntime sessions and
feeds built here, never edgefair's."""

from __future__ import annotations

import json
import pickle
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edgefair import convert as conv
from edgefair.convert.export import PARITY_KEY, ExportOptions
from edgefair.convert.validation import parity
from edgefair.errors import InputError, ModelError
from edgefair.modelio.feeds import build_feeds, expand, parse_features
from edgefair.modelio.session import Signature, TensorSpec
from tests.test_cli_bad_input import assert_clean, one_line, run_main


def write_csv(path: Path, columns: dict[str, np.ndarray]) -> Path:
    names = list(columns)
    rows = zip(*(np.asarray(columns[n]).tolist() for n in names), strict=True)
    path.write_text(",".join(names) + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))
    return path


def session(model: onnx.ModelProto | Path) -> ort.InferenceSession:
    """One intra-op thread, as edgefair's sessions: a tree ensemble's float32 sum depends on
    the order its threads add the trees in (4.2e-7 on one thread, 1.8e-7 on two, measured)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    src = str(model) if isinstance(model, Path) else model.SerializeToString()
    return ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])


def recorded(model: onnx.ModelProto) -> dict:
    (entry,) = [p for p in model.metadata_props if p.key == PARITY_KEY]
    return json.loads(entry.value)


# -- the parity report itself ---------------------------------------------------------------


def test_parity_counts_differences_and_flips_as_numpy_does():
    rng = np.random.default_rng(3)
    p = rng.uniform(size=200)
    a = np.stack([1 - p, p], axis=1)
    b = a + rng.normal(scale=1e-3, size=a.shape)
    report = parity(a, b, tolerance=1e-2, threshold=0.3)
    assert report.max_abs_difference == pytest.approx(np.abs(a - b).max(), abs=0)
    assert report.flips == int(np.sum((a[:, 1] >= 0.3) != (b[:, 1] >= 0.3)))
    assert report.passed and report.decision_rule == "score >= 0.3"
    three = rng.dirichlet([1, 1, 1], size=100)
    moved = three.copy()
    moved[:7] = moved[:7, ::-1]  # reversing a row moves its argmax unless it is the middle class
    report = parity(three, moved, tolerance=1e-4)
    assert report.decision_rule == "argmax"
    assert report.flips == int(np.sum(three.argmax(1) != moved.argmax(1)))
    assert not report.passed and report.summary().startswith("FAIL")
    # regression: values, no decisions; NaN in both rows agrees, NaN in one fails
    y = rng.normal(size=50) * 10
    assert parity(y, y.reshape(-1, 1) + 5e-5).flips is None
    y[3] = np.nan
    assert parity(y, y.copy()).passed
    other = y.copy()
    other[3] = 1.0
    assert not parity(y, other).passed
    with pytest.raises(ModelError, match="shape"):
        parity(np.zeros((5, 2)), np.zeros((5, 3)))


# -- scikit-learn: a forest behind a scaler differs by 0.02 in float32 ------------------------


@pytest.fixture(scope="module")
def forest(tmp_path_factory):
    """RandomForest behind a StandardScaler, fitted on a DataFrame (named columns)."""
    import joblib
    import pandas as pd
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    out = tmp_path_factory.mktemp("forest")
    data = load_breast_cancer()
    names = [f"m{i}" for i in range(8)]
    x = pd.DataFrame(data.data[:, :8], columns=names)
    model = make_pipeline(StandardScaler(), RandomForestClassifier(n_estimators=50, random_state=0))
    model.fit(x[:341], data.target[:341])
    joblib.dump(model, out / "rf.pkl")  # a joblib file named .pkl
    csv = write_csv(out / "bc.csv", {**{n: x[n].to_numpy() for n in names}, "label": data.target})
    back = pd.read_csv(csv)  # the oracle scores the numbers the file holds
    return out, csv, model, back[names]


def test_forest_float_export_fails_parity_with_what_to_do(forest, tmp_path):
    out, csv, model, x = forest
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    # the oracle: skl2onnx called directly, one float input, against predict_proba
    plain = to_onnx(
        model,
        initial_types=[("input", FloatTensorType([None, 8]))],
        options={id(model.steps[-1][1]): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    probs = session(plain).run(["probabilities"], {"input": x.to_numpy(np.float32)})[0]
    worst = float(np.abs(probs - model.predict_proba(x)).max())
    assert worst > 1e-2  # the trap the issue reports: 0.02
    target = tmp_path / "rf.onnx"
    o = run_main("export", str(out / "rf.pkl"), "-o", str(target), "--trust-pickle", "--sample-data", str(csv))
    assert_clean(o, codes=(1,))
    assert not target.exists()
    assert f"largest probabilities difference {worst:.3g} (tolerance 0.0001)" in o.out, o.out
    assert "--double" in o.out and "--parity-tolerance" in o.out and f"nothing written to {target}" in o.out


def test_forest_double_export_passes_and_records_parity(forest):
    out, csv, model, x = forest
    result = conv.export_model(out / "rf.pkl", sample_data=csv, options=ExportOptions(trust_pickle=True, double=True))
    assert result.passed and "parity with the source" in result.checked
    sess = session(result.model)
    assert [i.name for i in sess.get_inputs()] == list(x.columns)  # named columns, concatenated in the graph
    got = sess.run(["probabilities"], {n: x[[n]].to_numpy(np.float64) for n in x.columns})[0]
    expected = model.predict_proba(x)
    doc = recorded(result.model)
    assert doc["max_abs_difference"] == float(np.abs(got - expected).max()) <= 1e-6
    assert doc["flips"] == int(np.sum((got[:, 1] >= 0.5) != (expected[:, 1] >= 0.5)))
    assert doc["rows"] == len(x) and doc["verdict"] == "pass" and doc["tolerance"] == 1e-4


def test_parity_tolerance_accepts_a_float_forest_and_says_so(forest):
    out, csv, _, _ = forest
    result = conv.export_model(
        out / "rf.pkl", sample_data=csv, options=ExportOptions(trust_pickle=True, parity_tolerance=0.05)
    )
    assert result.passed
    doc = recorded(result.model)
    assert doc["tolerance"] == 0.05 and 1e-2 < doc["max_abs_difference"] <= 0.05
    with pytest.raises(InputError, match="parity tolerance"):
        ExportOptions(parity_tolerance=float("nan"))


# -- LightGBM and XGBoost through onnxmltools -------------------------------------------------


# LightGBM runs through every step by default in test_any_model; its exact parity here in the slow suite
@pytest.mark.parametrize("library", [pytest.param("lightgbm", marks=pytest.mark.slow), "xgboost"])
def test_boosted_trees_export_with_parity(tmp_path, library):
    pytest.importorskip(library)
    pytest.importorskip("onnxmltools")
    import pandas as pd

    rng = np.random.default_rng(11)
    x = rng.normal(size=(400, 5))
    y = (x[:, 0] + x[:, 1] * x[:, 2] > 0).astype(int)
    names = [f"c{i}" for i in range(5)]
    csv = write_csv(tmp_path / "d.csv", {**{n: x[:, i] for i, n in enumerate(names)}, "y": y, "g": y % 2})
    back = pd.read_csv(csv)[names]
    if library == "lightgbm":
        import lightgbm

        model = lightgbm.LGBMClassifier(n_estimators=20, num_leaves=8, verbose=-1).fit(back.to_numpy(), y)
        options = ExportOptions(trust_pickle=True, features="c0:c4")
    else:
        import xgboost

        model = xgboost.XGBClassifier(n_estimators=20, max_depth=3).fit(back, y)  # named columns
        options = ExportOptions(trust_pickle=True)
    with (tmp_path / "m.pkl").open("wb") as f:
        pickle.dump(model, f)
    result = conv.export_model(tmp_path / "m.pkl", sample_data=csv, options=options)
    sess = session(result.model)
    if library == "lightgbm":
        feeds = {"input": back.to_numpy(np.float32)}
    else:
        assert [i.name for i in sess.get_inputs()] == names
        feeds = {n: back[[n]].to_numpy(np.float32) for n in names}
    got = sess.run(["probabilities"], feeds)[0]
    expected = model.predict_proba(back.to_numpy() if library == "lightgbm" else back)
    assert result.parity is not None and result.passed
    assert result.parity.max_abs_difference == pytest.approx(float(np.abs(got - expected).max()), abs=1e-12)
    assert result.parity.max_abs_difference < 1e-5
    # dynamic int8 finds nothing to quantise in a tree ensemble: one clear refusal
    with pytest.raises(ModelError, match="nothing to quantise"):
        conv.convert(result.model, conv.ConvertOptions(quantize=conv.QuantizeOptions()))


# -- torch: names, a batch axis on every input, weights as initializers, quiet tracing ---------


def _two_input_net():
    import torch

    class TwoInputs(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(10, 3)
            self.head = torch.nn.Linear(4 * 3 + 8, 2)

        def forward(self, tokens, extra):
            flat = self.embed(tokens).reshape(tokens.shape[0], -1)
            return torch.softmax(self.head(torch.cat([flat, extra], 1)), 1)

    torch.manual_seed(0)
    return TwoInputs().eval()


def test_torch_module_with_two_inputs_keeps_names_and_batch():
    torch = pytest.importorskip("torch")
    net = _two_input_net()
    model = conv.export_torch(net, (torch.zeros(4, 4, dtype=torch.long), torch.zeros(4, 8)))
    sess = session(model)
    assert [i.name for i in sess.get_inputs()] == ["tokens", "extra"]
    assert all(i.shape[0] == "batch" for i in sess.get_inputs())
    rng = np.random.default_rng(0)
    for n in (1, 5, 300):
        tokens, extra = rng.integers(0, 10, (n, 4)), rng.normal(size=(n, 8)).astype(np.float32)
        with torch.no_grad():
            expected = net(torch.from_numpy(tokens), torch.from_numpy(extra)).numpy()
        np.testing.assert_allclose(sess.run(None, {"tokens": tokens, "extra": extra})[0], expected, atol=1e-6)


def _conv_net():
    import torch

    torch.manual_seed(1)
    return torch.nn.Sequential(
        torch.nn.Conv1d(1, 4, 3),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 14, 2),
        torch.nn.Softmax(dim=1),
    )


@pytest.mark.slow  # torch.export of the program costs ~15 s on a busy machine
def test_static_pt2_conv_net_keeps_weights_as_initializers(tmp_path):
    """A .pt2 exported with a fixed batch: traced with its weights registered, so fp16 and
    pruning find them; a [N, 1, 16] input fed from 16 columns f0:f15."""
    torch = pytest.importorskip("torch")
    net = _conv_net()
    rng = np.random.default_rng(2)
    x = rng.normal(size=(240, 16)).astype(np.float32)
    y = (x[:, :8].sum(1) > 0).astype(np.int64)
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(30):  # trained briefly
        opt.zero_grad()
        loss = torch.nn.functional.nll_loss(torch.log(net(torch.from_numpy(x[:, None, :])) + 1e-9), torch.from_numpy(y))
        loss.backward()
        opt.step()
    net.eval()
    torch.export.save(torch.export.export(net, (torch.zeros(4, 1, 16),)), str(tmp_path / "conv.pt2"))
    csv = write_csv(tmp_path / "c.csv", {**{f"f{i}": x[:, i] for i in range(16)}, "y": y, "g": y})
    result = conv.export_model(tmp_path / "conv.pt2", sample_data=csv, options=ExportOptions(features="f0:f15"))
    assert result.passed and result.parity is not None and result.parity.rows == 240
    inits = {t.name for t in result.model.graph.initializer}
    weights = [n for n in result.model.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    assert len(weights) == 2 and all(n.input[1] in inits for n in weights)
    big_constants = [
        n
        for n in result.model.graph.node
        if n.op_type == "Constant" and onnx.numpy_helper.to_array(n.attribute[0].t).size > 8
    ]
    assert big_constants == []
    with torch.no_grad():
        expected = net(torch.from_numpy(x[:, None, :])).numpy()
    got = session(result.model).run(None, {"input": x[:, None, :]})[0]
    assert result.parity.max_abs_difference == pytest.approx(float(np.abs(got - expected).max()), abs=1e-12)
    # the weights are there for fp16 and pruning to find (nothing was written: convert's own check)
    half = conv.convert(result.model, conv.ConvertOptions(prune=0.5))
    assert any("sparsity_by_layer" in s for s in half.steps)


def test_tracer_warnings_are_caught_and_summarised():
    torch = pytest.importorskip("torch")
    from edgefair.convert.export_torch import export_torch_module

    class Branchy(torch.nn.Module):
        def forward(self, x):
            if x.sum() > 0:  # a Python bool from a tensor: the tracer warns
                return torch.sigmoid(x[:, :1])
            return torch.sigmoid(-x[:, :1])

    with warnings.catch_warnings(record=True) as escaped:
        warnings.simplefilter("always")
        exported = export_torch_module(Branchy(), torch.ones(3, 2))
    assert not [w for w in escaped if w.category.__name__ == "TracerWarning"]
    (note,) = exported.notes
    assert note.startswith("torch's tracer warned") and "boolean" in note


# -- feature mapping: one way for every command -----------------------------------------------


def test_features_parse_ranges_and_inputs():
    assert expand("f0:f3") == ["f0", "f1", "f2", "f3"]
    assert expand("x08:x10") == ["x08", "x09", "x10"]
    fmap = parse_features("tokens=t0:t1,extra=a,b")
    assert fmap is not None and fmap.by_input == (("tokens", ("t0", "t1")), ("extra", ("a", "b")))
    assert parse_features(["age", "f1:f2"]).block == ("age", "f1", "f2")  # type: ignore[union-attr]
    assert parse_features({"x": ["c0:c1"]}).by_input == (("x", ("c0", "c1")),)  # type: ignore[union-attr]
    for bad in ("a:b", "f3:f1", "x=a,x=b", "=a"):
        with pytest.raises(InputError, match="features"):
            parse_features(bad)


def test_block_inputs_are_fed_from_named_columns_in_order():
    rng = np.random.default_rng(4)
    cols = {f"f{i}": rng.normal(size=6) for i in range(16)}
    cols.update({"t0": np.arange(6), "t1": np.arange(6) + 1, "label": np.zeros(6)})
    sig = Signature(
        (TensorSpec("tokens", "tensor(int64)", ("batch", 2)), TensorSpec("x", "tensor(float)", ("batch", 1, 16))), ()
    )
    feeds = build_feeds(sig, cols, feature_columns="tokens=t0:t1,x=f0:f15")
    np.testing.assert_array_equal(feeds["tokens"], np.stack([cols["t0"], cols["t1"]], 1))
    expected = np.stack([cols[f"f{i}"] for i in range(16)], 1).astype(np.float32)[:, None, :]
    np.testing.assert_array_equal(feeds["x"], expected)
    # a bare list goes to the one block input; the other input is fed by name
    sig2 = Signature(
        (TensorSpec("t0", "tensor(int64)", ("batch", 1)), TensorSpec("x", "tensor(float)", ("batch", 16))), ()
    )
    feeds = build_feeds(sig2, cols, feature_columns=["f15:f15", "f0:f14"])
    np.testing.assert_array_equal(feeds["x"][:, 0], cols["f15"].astype(np.float32))
    with pytest.raises(InputError, match="'f99'"):
        build_feeds(sig2, cols, feature_columns="f0:f14,f99")
    with pytest.raises(InputError, match="16 values per row but 3"):
        build_feeds(sig2, cols, feature_columns="f0:f2")
    with pytest.raises(InputError, match="no input 'nope'"):
        build_feeds(sig2, cols, feature_columns="nope=f0:f15")


def test_a_features_list_naming_a_missing_column_is_one_line_everywhere(tmp_path):
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(5)
    cols = {f"f{i}": rng.normal(size=40) for i in range(4)}
    cols.update({"y": rng.integers(0, 2, 40), "g": rng.choice(["a", "b"], 40)})
    csv = write_csv(tmp_path / "d.csv", cols)
    model = tmp_path / "m.onnx"
    onnx.save(_logistic(4), model)
    x = np.stack([cols[f"f{i}"] for i in range(3)], 1)
    with (tmp_path / "lr.pkl").open("wb") as f:
        pickle.dump(LogisticRegression().fit(x, cols["y"]), f)
    exported = tmp_path / "lr.onnx"
    args = ("-o", str(exported), "--trust-pickle", "--sample-data", str(csv), "--features", "f0:f1,zz")
    one_line(run_main("export", str(tmp_path / "lr.pkl"), *args), "'zz'")
    assert not exported.exists()
    data = ["--label", "y", "--sensitive", "g", "--features", "f0:f2,zz"]
    one_line(run_main("verify", str(model), str(model), "--data", str(csv), *data), "'zz'")
    one_line(run_main("compare", str(model), str(model), "--data", str(csv), *data), "'zz'")
    one_line(
        run_main(
            "convert",
            str(model),
            "-o",
            str(tmp_path / "q.onnx"),
            "--quantize",
            "dynamic",
            "--sample-data",
            str(csv),
            "--features",
            "f0:f2,zz",
        ),
        "'zz'",
    )
    assert not (tmp_path / "q.onnx").exists()


def _logistic(k: int) -> onnx.ModelProto:
    """score = sigmoid(x @ w), one [N, k] input."""
    from onnx import helper, numpy_helper

    w = numpy_helper.from_array(np.linspace(-1, 1, k, dtype=np.float32).reshape(k, 1), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["z"]), helper.make_node("Sigmoid", ["z"], ["score"])],
        "logistic",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", k])],
        [helper.make_tensor_value_info("score", onnx.TensorProto.FLOAT, ["N", 1])],
        [w],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.slow  # torch.export twice
def test_a_pt2_whose_graph_fixes_the_batch_is_refused_with_how_to_fix(tmp_path):
    """The issue's two.pt2: exported without a dynamic batch, its reshape holds the batch of 4.
    Export runs the ONNX model at another batch (the examples repeated), so it cannot pass."""
    torch = pytest.importorskip("torch")
    net = _two_input_net()
    args = (torch.zeros(4, 4, dtype=torch.long), torch.zeros(4, 8))
    torch.export.save(torch.export.export(net, args), str(tmp_path / "two.pt2"))
    target = tmp_path / "two.onnx"
    one_line(run_main("export", str(tmp_path / "two.pt2"), "-o", str(target)), "fixed batch of 4", "dynamic_shapes")
    assert not target.exists()
    batch = torch.export.Dim("batch")
    program = torch.export.export(net, args, dynamic_shapes={"tokens": {0: batch}, "extra": {0: batch}})
    torch.export.save(program, str(tmp_path / "dynamic.pt2"))
    result = conv.export_model(tmp_path / "dynamic.pt2")
    assert result.passed and result.parity is not None and result.parity.rows == 9
    sess = session(result.model)
    assert [i.name for i in sess.get_inputs()] == ["tokens", "extra"]
    inits = {t.name for t in result.model.graph.initializer}
    assert {"embed.weight", "head.weight"} <= inits  # weights stay initializers
    tokens, extra = np.arange(20).reshape(5, 4) % 10, np.ones((5, 8), np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(tokens), torch.from_numpy(extra)).numpy()
    np.testing.assert_allclose(sess.run(None, {"tokens": tokens, "extra": extra})[0], expected, atol=1e-6)


def test_python_api_takes_the_same_feature_specs(tmp_path):
    """``edgefair.verify(..., feature_columns=...)``: a range string, and a mapping by input name,
    feed the model what numpy computes from the named columns (decisions counted per group)."""
    import edgefair

    rng = np.random.default_rng(6)
    cols = {f"f{i}": np.round(rng.normal(size=60), 4) for i in range(6)}
    cols.update({"y": rng.integers(0, 2, 60), "g": rng.choice(["a", "b"], 60)})
    csv = write_csv(tmp_path / "d.csv", cols)
    onnx.save(_logistic(4), tmp_path / "m.onnx")
    w = np.linspace(-1, 1, 4)
    x = np.stack([cols[f"f{i}"] for i in (2, 3, 4, 5)], axis=1)
    positives = int(np.sum(1 / (1 + np.exp(-(x @ w))) >= 0.5))
    for spec in ("f2:f5", {"x": ["f2", "f3:f5"]}):
        report = edgefair.verify(
            tmp_path / "m.onnx", tmp_path / "m.onnx", str(csv), label="y", sensitive=["g"], feature_columns=spec
        )
        table = report.table
        by_attribute = [i for i, key in enumerate(table.groups) if key[0] in ("a", "b")]
        assert int(table.counts[by_attribute][:, :, 1, :].sum()) == positives


@pytest.mark.slow
def test_torchscript_with_two_inputs_takes_its_columns_by_input_name(tmp_path):
    """TorchScript keeps argument names but no shapes: --features LEFT=...,RIGHT=... gives both."""
    torch = pytest.importorskip("torch")

    class Pair(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.left, self.right = torch.nn.Linear(3, 2), torch.nn.Linear(2, 2)

        def forward(self, left, right):
            return torch.softmax(self.left(left) + self.right(right), 1)

    torch.manual_seed(3)
    net = Pair().eval()
    torch.jit.script(net).save(str(tmp_path / "pair.pt"))
    rng = np.random.default_rng(8)
    cols = {f"f{i}": np.round(rng.normal(size=50), 4) for i in range(5)}
    csv = write_csv(tmp_path / "p.csv", cols)
    options = ExportOptions(features="left=f0:f2,right=f3:f4")
    result = conv.export_model(tmp_path / "pair.pt", sample_data=csv, options=options)
    sess = session(result.model)
    assert [i.name for i in sess.get_inputs()] == ["left", "right"]
    left = np.stack([cols[f"f{i}"] for i in range(3)], 1).astype(np.float32)
    right = np.stack([cols[f"f{i}"] for i in (3, 4)], 1).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(left), torch.from_numpy(right)).numpy()
    np.testing.assert_allclose(sess.run(None, {"left": left, "right": right})[0], expected, atol=1e-6)
    assert result.passed and result.parity is not None and result.parity.rows == 50
    with pytest.raises(InputError, match="say which input"):
        conv.export_model(tmp_path / "pair.pt", sample_data=csv, options=ExportOptions(features="f0:f2"))


def test_a_missing_value_the_source_scores_nan_is_refused_as_convert_does(tmp_path):
    """A torch MLP fed a blank cell scores NaN: export said "checked ... parity" and "no decisions
    in this output" (the NaN row hid the decisions); now one line naming the file, line and column."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1), torch.nn.Sigmoid()).eval()
    program = torch.export.export(net, (torch.zeros(4, 3),), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, str(tmp_path / "mlp.pt2"))
    rng = np.random.default_rng(3)
    cols = {f"f{i}": rng.normal(size=40).round(3).astype(object) for i in range(3)}
    clean = write_csv(tmp_path / "clean.csv", cols)
    cols["f1"][4] = ""  # line 6 of the file
    holed = write_csv(tmp_path / "holed.csv", cols)
    args = ["export", str(tmp_path / "mlp.pt2"), "--features", "f0:f2"]
    one_line(run_main(*args, "-o", str(tmp_path / "a.onnx"), "--sample-data", str(holed)), "line 6", "'f1'", "NaN")
    assert not (tmp_path / "a.onnx").exists()
    ok = run_main(*args, "-o", str(tmp_path / "b.onnx"), "--sample-data", str(clean))
    assert ok.code == 0 and "0 of 40 decisions flip (score >= 0.5)" in ok.out, (ok.out, ok.err)
