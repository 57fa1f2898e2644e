"""Convert: tiny in-place models, real torch and sklearn exports, the reference models."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgefair import convert as conv
from edgefair.convert.common import dedupe_opsets, load_model
from edgefair.convert.export import export_sklearn, export_torch
from edgefair.convert.prune import prune_magnitude, prune_structured
from edgefair.convert.quantize import QuantizeOptions, QuantMode, balanced_sample, quantize
from edgefair.convert.validation import session
from edgefair.errors import ModelError
from tests import models
from tests.conftest import MODELS, assert_one_line_error, run_cli

RNG = np.random.default_rng(0)
X = {"x": RNG.normal(size=(500, 4)).astype(np.float32)}


def sample_cols(feeds):
    return {f"f{i}": feeds["x"][:, i] for i in range(feeds["x"].shape[1])}


@pytest.mark.parametrize("mode", list(QuantMode))
@pytest.mark.parametrize("gemm", [False, True])
def test_tiny_mlp_quantises_in_every_mode(mode, gemm):
    model = models.mlp(gemm=gemm)
    result = quantize(model, QuantizeOptions(mode=mode), X if mode is QuantMode.STATIC_INT8 else None)
    assert result.changed
    sess = session(result.model)
    out = sess.run(None, {"x": X["x"]})[0]
    ref = session(model).run(None, {"x": X["x"]})[0]
    assert out.shape == ref.shape
    assert np.mean((out >= 0.5) == (ref >= 0.5)) > 0.9
    if mode is not QuantMode.FP16:
        assert sum(result.report["nodes_quantised"].values()) >= 1


def test_nothing_to_quantise_is_said_plainly():
    with pytest.raises(ModelError, match="nothing to quantise"):
        quantize(models.no_weights(), QuantizeOptions(mode=QuantMode.DYNAMIC_INT8))


def test_magnitude_pruning_hits_the_target_sparsity():
    result = prune_magnitude(models.mlp(hidden=64), 0.5)
    for name, sparsity in result.report["sparsity_by_layer"].items():
        assert abs(sparsity - 0.5) < 0.01, name


def test_structured_pruning_shrinks_and_runs():
    model = models.mlp(hidden=64)
    result = prune_structured(model, 0.5)
    w1 = next(t for t in result.model.graph.initializer if t.name == "w1")
    assert list(w1.dims) == [4, 32]
    out = session(result.model).run(None, {"x": X["x"]})[0]
    assert out.shape == (500, 1)
    assert len(result.model.SerializeToString()) < len(model.SerializeToString())


def test_check_rejects_changed_inputs():
    other = models.mlp()
    other.graph.input[0].name = "renamed"
    for node in other.graph.node:
        node.input[:] = ["renamed" if i == "x" else i for i in node.input]
    with pytest.raises(ModelError, match="changed its inputs"):
        conv.check(other, models.mlp())


def test_foreign_domains_are_refused():
    with pytest.raises(ModelError, match=r"operator domain 'com\.evil'"):
        conv.convert(models.with_domain("com.evil"), conv.ConvertOptions(prune=0.5))


def test_balanced_sample_gives_minorities_equal_rows():
    groups = np.array(["big"] * 1000 + ["small"] * 50)
    idx = balanced_sample(groups, 100)
    picked = groups[idx]
    assert (picked == "big").sum() == 50 and (picked == "small").sum() == 50


def test_torch_export_has_dynamic_batch_and_no_sidecar(tmp_path):
    torch = pytest.importorskip("torch")
    net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2), torch.nn.Softmax(dim=1))
    model = export_torch(net, torch.zeros(2, 3))
    sess = session(model)
    x = np.random.default_rng(1).normal(size=(7, 3)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    assert np.allclose(sess.run(None, {"input": x})[0], expected, atol=1e-5)
    proc_dir = tmp_path / "out"
    proc_dir.mkdir()
    program = torch.export.export(net, (torch.zeros(2, 3),))
    torch.export.save(program, str(tmp_path / "net.pt2"))
    proc = run_cli("export", str(tmp_path / "net.pt2"), "-o", str(proc_dir / "net.onnx"))
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in proc_dir.iterdir()) == ["net.onnx"]  # no .onnx.data sidecar


def test_sklearn_pipeline_with_duplicate_opsets_converts(adult_test):
    pytest.importorskip("skl2onnx")
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    cols = adult_test.columns
    x = pd.DataFrame({"age": cols["age"], "sex": cols["sex"], "hours": cols["hours_per_week"]})
    pre = ColumnTransformer(
        [("n", StandardScaler(), ["age", "hours"]), ("c", OneHotEncoder(handle_unknown="ignore"), ["sex"])]
    )
    for clf in (LogisticRegression(), MLPClassifier((8,), max_iter=30, random_state=0)):
        pipe = Pipeline([("pre", pre), ("clf", clf)]).fit(x[:3000], cols["income"][:3000])
        model = export_sklearn(pipe, x)
        # as another tool would leave it: the same domain imported twice
        model.opset_import.extend([onnx.helper.make_opsetid("", 15)])
        assert len(model.opset_import) > len({o.domain for o in model.opset_import})
        feeds = {k: v for k, v in cols.items() if k in ("age", "sex")}
        feeds["hours"] = cols["hours_per_week"]
        sess = session(model)
        probs = sess.run(
            ["probabilities"],
            {
                "age": x[["age"]].to_numpy(np.float32),
                "sex": x[["sex"]].to_numpy(object),
                "hours": x[["hours"]].to_numpy(np.float32),
            },
        )[0]
        assert np.allclose(probs[:, 1], pipe.predict_proba(x)[:, 1], atol=1e-4)
        if isinstance(clf, MLPClassifier):
            int8 = QuantizeOptions(mode=QuantMode.DYNAMIC_INT8)
            with pytest.raises(ModelError, match="nothing was saved"):  # a tiny MLP grows when quantised
                conv.convert(model, conv.ConvertOptions(quantize=int8), feeds)
            result = conv.convert(model, conv.ConvertOptions(quantize=int8, allow_larger=True), feeds)
            assert result.check is not None and result.check.decision_agreement > 0.95
            assert result.check.size_bytes > result.size_before
        dedupe_opsets(model)
        assert len(model.opset_import) == len({o.domain for o in model.opset_import})


@pytest.mark.parametrize("name", ["adult_mlp", "adult_sklearn"])
@pytest.mark.parametrize("mode", list(QuantMode))
def test_reference_models_agree_with_fp32(name, mode, adult_test):
    from edgefair.data import load_adult

    model = load_model(MODELS / f"{name}.onnx")
    calibration = None
    if mode is QuantMode.STATIC_INT8:
        calibration = conv.calibration_sample(load_adult("train").columns, 2000, None, "adult:train")
    result = conv.convert(
        model, conv.ConvertOptions(quantize=QuantizeOptions(mode=mode)), adult_test.columns, calibration
    )
    assert result.check is not None
    assert result.check.decision_agreement >= 0.99, result.check
    if name == "adult_mlp" and mode is not QuantMode.FP16:
        assert result.check.size_bytes <= 0.35 * result.size_before


def test_reference_mlp_pruning(adult_test):
    model = load_model(MODELS / "adult_mlp.onnx")
    result = conv.convert(model, conv.ConvertOptions(prune=0.5), adult_test.columns)
    zeros = [
        np.mean(numpy_helper.to_array(t) == 0)
        for t in result.model.graph.initializer
        if t.name in result.steps[0]["sparsity_by_layer"]
    ]
    assert zeros and all(abs(z - 0.5) <= 0.01 for z in zeros)
    structured = conv.convert(model, conv.ConvertOptions(prune_structured=0.5), adult_test.columns)
    assert structured.check is not None and structured.check.size_bytes < 0.5 * structured.size_before


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["README.md", "--quantize", "dynamic"], ["not an ONNX model"]),
        (["TRUNC", "--quantize", "dynamic"], ["not an ONNX model"]),
        (["NOWEIGHTS", "--quantize", "dynamic"], ["nothing to quantise"]),
        (["edgefair/demo/models/adult_mlp.onnx", "--prune", "1.5"], ["prune must be between 0 and 1", "1.5"]),
        (
            ["edgefair/demo/models/adult_mlp.onnx", "--quantize", "static", "--calibration-data", "BADCSV"],
            ["model input(s)", "have no column"],
        ),
        (["edgefair/demo/models/adult_mlp.onnx", "--quantize", "int3"], ["--quantize", "'int3' is not one of"]),
    ],
)
def test_convert_bad_input_leaves_no_file(tmp_path, args, fragments):
    from tests.conftest import ROOT

    trunc = tmp_path / "trunc.onnx"
    trunc.write_bytes((MODELS / "adult_mlp.onnx").read_bytes()[:1000])
    noweights = tmp_path / "plain.onnx"
    onnx.save(models.no_weights(), noweights)
    bad_csv = tmp_path / "calib.csv"
    bad_csv.write_text("age,sex\n30,Male\n")
    subst = {"TRUNC": str(trunc), "NOWEIGHTS": str(noweights), "BADCSV": str(bad_csv)}
    args = [subst.get(a, a) for a in args]
    out = tmp_path / "out" / "x.onnx"
    out.parent.mkdir()  # an output in a missing folder is refused first (tests/test_output_folders.py)
    proc = run_cli("convert", *args, "-o", str(out), cwd=ROOT)
    assert_one_line_error(proc, *fragments)
    assert not out.parent.exists() or list(out.parent.iterdir()) == []
