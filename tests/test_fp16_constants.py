"""fp16 keeps the float32 part float32 and never clamps a value silently.

A user trial: a torch MLP whose graph starts with ``(x - mu) / sd`` (mu, sd in the tens of
thousands), exported from a dynamic-batch ``.pt2`` (the dynamo exporter lists initializers in
``value_info``), converted to fp16: the preprocessing constants came out fp16 and clamped to
1e4 (onnxconverter-common's default), decisions agreed 81.5% with fp32, and only ``--json``
said anything. Here a model like it is trained in the test, exported by edgefair's own
``.pt2`` path, converted with the library API and checked against onnxruntime on the fp32
model (the oracle); a tensor fp16 cannot hold is shown to be kept float32 and reported.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx.parser
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from edgefair import convert as conv
from edgefair.cli.convert import format_conversion
from edgefair.convert.quantize import QuantizeOptions, QuantMode
from edgefair.data import Dataset
from tests.conftest import run_cli

FEATURES = ["income", "debt", "tenure", "score"]
HALVE = QuantizeOptions(mode=QuantMode.FP16)
HALF, FLOAT = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT


def _rows(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Credit-like rows (income ~25,000 +- 13,000) and a label that depends on all four."""
    rng = np.random.default_rng(seed)
    x = np.column_stack(
        [
            rng.normal(25_000, 13_000, n),
            rng.gamma(2.0, 3_000, n),
            rng.integers(0, 30, n),
            rng.normal(600, 80, n),
        ]
    ).astype(np.float32)
    z = (x[:, 0] - 25_000) / 13_000 - (x[:, 1] - 6_000) / 4_000 + (x[:, 3] - 600) / 80 + 0.05 * x[:, 2]
    y = (z + rng.normal(0, 0.5, n) > 0.5).astype(np.float32)
    return x, y


def _dataset(x: np.ndarray, y: np.ndarray, name: str) -> Dataset:
    cols = {f: x[:, i].astype(np.float64) for i, f in enumerate(FEATURES)}
    cols["approved"] = y.astype(np.int64)
    return Dataset(cols, name, hashlib.sha256(x.tobytes()).hexdigest(), len(y))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A torch MLP with its standardisation (buffers ~25,000 and ~13,000) in the graph,
    trained here, saved as a dynamic-batch .pt2 and exported by edgefair."""
    torch = pytest.importorskip("torch")
    x, y = _rows(4000, 0)
    mu = torch.tensor(x.mean(0))
    sd = torch.tensor(x.std(0))
    assert float(mu[0]) > 20_000 and float(sd[0]) > 10_000  # the constants that fp16 used to clamp

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("mu", mu)
            self.register_buffer("sd", sd)
            self.l1 = torch.nn.Linear(4, 64)
            self.l2 = torch.nn.Linear(64, 64)
            self.l3 = torch.nn.Linear(64, 1)

        def forward(self, x: Any) -> Any:
            h = torch.relu(self.l1((x - self.mu) / self.sd))
            return torch.sigmoid(self.l3(torch.relu(self.l2(h))))

    torch.manual_seed(0)
    net = Net()
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)[:, None]
    for _ in range(300):
        opt.zero_grad()
        torch.nn.functional.binary_cross_entropy(net(xt), yt).backward()
        opt.step()
    net.eval()
    pt2 = tmp_path_factory.mktemp("fp16") / "mlp.pt2"
    program = torch.export.export(net, (xt[:8],), dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
    torch.export.save(program, str(pt2))
    held_x, held_y = _rows(3000, 1)
    exported = conv.export_model(
        pt2, sample_data=_dataset(held_x, held_y, "held"), options=conv.ExportOptions(features=FEATURES)
    )
    assert exported.passed
    with torch.no_grad():
        accuracy = float(((net(torch.from_numpy(held_x))[:, 0] >= 0.5).numpy() == held_y).mean())
    assert accuracy > 0.8, accuracy  # it learned something: its decisions are not all one way
    return {"model": exported.model, "x": held_x, "y": held_y, "dir": pt2.parent}


def _scores(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(None, {sess.get_inputs()[0].name: x})[0], np.float64).ravel()


def _preprocessing_constants(model: onnx.ModelProto) -> set[str]:
    inits = {t.name for t in model.graph.initializer}
    return {i for n in model.graph.node if n.op_type in ("Sub", "Div") for i in n.input if i in inits}


def test_fp16_keeps_the_preprocessing_constants_float32_and_agrees_with_fp32(trained: dict[str, Any]) -> None:
    source, x = trained["model"], trained["x"]
    constants = _preprocessing_constants(source)
    assert len(constants) == 2, constants  # mu and sd, initializers of the exported graph
    # allow_larger: this test is about what fp16 computes, not what it saves on a small MLP
    options = conv.ConvertOptions(quantize=HALVE, feature_columns=FEATURES, allow_larger=True)
    result = conv.convert(source, options, _dataset(x, trained["y"], "held").columns)
    out = result.model
    onnx.checker.check_model(out, full_check=True)
    # the oracle: onnxruntime on the fp32 model, decisions at 0.5
    ref, got = _scores(source, x), _scores(out, x)
    agreement = float(np.mean((ref >= 0.5) == (got >= 0.5)))
    assert agreement >= 0.99, agreement
    assert float(np.max(np.abs(ref - got))) < 0.02
    types = {t.name: t.data_type for t in out.graph.initializer}
    assert all(types[c] == FLOAT for c in constants), types  # the preprocessing stays float32
    for c in constants:  # ... and holds the very values it was given
        before = next(numpy_helper.to_array(t) for t in source.graph.initializer if t.name == c)
        after = next(numpy_helper.to_array(t) for t in out.graph.initializer if t.name == c)
        np.testing.assert_array_equal(before, after)
    weights = {i for n in out.graph.node if n.op_type in ("Gemm", "MatMul") for i in n.input[1:]}
    assert weights and all(types[w] == HALF for w in weights), types  # the weights are halved
    step = result.steps[0]
    assert step["values_clamped_to_fp16_range"] == 0 and step["kept_float32_out_of_fp16_range"] == {}, step
    assert set(step["initializers_kept_float32"]) == constants
    assert result.check.decision_agreement is not None and result.check.decision_agreement >= 0.99


# -- a tensor fp16 cannot hold, after the first weighted layer ---------------------------------


def _beyond_fp16(as_constant: bool) -> onnx.ModelProto:
    """``sigmoid((relu(x @ w1) @ w2) / big * big2)`` with big = 200,000 in the fp16 part (an
    initializer, or a Constant node), and a weight fp16 rounds to zero (1e-9) in w2."""
    big = "big = Constant <value = float[1] {200000.0}> ()\n" if as_constant else ""
    model = onnx.parser.parse_model(f"""
    <ir_version: 8, opset_import: ["" : 17]>
    beyond (float[N, 4] x) => (float[N, 1] score) {{
        {big}h = MatMul (x, w1)
        r = Relu (h)
        z = MatMul (r, w2)
        q = Div (z, big)
        s = Mul (q, scale)
        score = Sigmoid (s)
    }}""")
    rng = np.random.default_rng(5)
    w2 = rng.normal(0, 0.1, size=(256, 1)).astype(np.float32)
    w2[0, 0] = 1e-9
    inits = [
        numpy_helper.from_array(rng.normal(size=(4, 256)).astype(np.float32), "w1"),
        numpy_helper.from_array(w2, "w2"),
        numpy_helper.from_array(np.array([40_000.0], np.float32), "scale"),
    ]
    if not as_constant:
        inits.append(numpy_helper.from_array(np.array([200_000.0], np.float32), "big"))
    model.graph.initializer.extend(inits)
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.mark.parametrize("as_constant", [False, True], ids=["initializer", "constant"])
def test_a_tensor_beyond_fp16s_range_stays_float32_and_is_reported(as_constant: bool) -> None:
    source = _beyond_fp16(as_constant)
    x = np.random.default_rng(6).normal(size=(500, 4)).astype(np.float32)
    columns = {f"f{i}": x[:, i] for i in range(4)}
    result = conv.convert(source, conv.ConvertOptions(quantize=HALVE, feature_columns="f0:f3"), columns)
    step = result.steps[0]
    assert step["kept_float32_out_of_fp16_range"] == {"big": 1}, step
    assert step["values_clamped_to_fp16_range"] == 0, step  # kept, so nothing was clamped
    assert step["values_underflowed_to_zero"] == 1 and step["underflowed_tensors"] == {"w2": 1}, step
    types = {t.name: t.data_type for t in result.model.graph.initializer}
    assert types["w1"] == types["w2"] == types["scale"] == HALF, types
    if not as_constant:
        assert types["big"] == FLOAT, types
    ref, got = _scores(source, x), _scores(result.model, x)
    # clamped to 65504 the quotient would be 3x too large: far more than fp16's rounding
    assert float(np.max(np.abs(ref - got))) < 0.01
    text = format_conversion({"output": "out.onnx", **result.to_dict()})
    assert "kept float32 (beyond fp16's range, |x| > 65504)" in text and "big (1 value)" in text, text


def test_a_clamp_is_printed_not_only_in_json() -> None:
    doc = {
        "output": "m.fp16.onnx",
        "size_before": 100,
        "size_after": 60,
        "steps": [
            {
                "mode": "fp16",
                "initializers_converted": 3,
                "note": "n",
                "kept_float32_out_of_fp16_range": {},
                "values_clamped_to_fp16_range": 7,
                "clamped_tensors": {"loop.body.w": 7},
            }
        ],
        "check": None,
        "notes": [],
    }
    text = format_conversion(doc)
    assert "WARNING 7 values clamped to +-65504 in loop.body.w (7 values)" in text, text


def test_the_cli_prints_what_fp16_kept_float32(tmp_path: Path) -> None:
    src = tmp_path / "beyond.onnx"
    onnx.save_model(_beyond_fp16(False), str(src))
    proc = run_cli("convert", str(src), "-o", str(tmp_path / "beyond.fp16.onnx"), "--quantize", "fp16")
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert (
        "kept float32 (beyond fp16's range, |x| > 65504), with the nodes that read them: big (1 value)" in proc.stdout
    )


# -- Constant nodes and a float32 value read by both parts --------------------------------------


def _constant_preprocessing() -> onnx.ModelProto:
    """Preprocessing with its centre in a Constant node; the standardised ``n`` feeds both
    float32 nodes (Mul, Concat) and an fp16 one (a skip MatMul)."""
    model = onnx.parser.parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    pre (float[N, 4] x) => (float[N, 1] score) {
        c = Constant <value = float[4] {25166.6, 5963.8, 14.47, 600.35}> ()
        s = Sub (x, c)
        n = Div (s, sd)
        n2 = Mul (n, n)
        cat = Concat <axis = 1> (n, n2)
        m = MatMul (cat, w1)
        skip = MatMul (n, ws)
        h = Add (m, skip)
        r = Relu (h)
        z = MatMul (r, w2)
        score = Sigmoid (z)
    }""")
    rng = np.random.default_rng(7)
    model.graph.initializer.extend(
        [
            numpy_helper.from_array(np.array([13510.8, 4192.3, 8.61, 80.29], np.float32), "sd"),
            numpy_helper.from_array(rng.normal(size=(8, 256)).astype(np.float32), "w1"),
            numpy_helper.from_array(rng.normal(size=(4, 256)).astype(np.float32), "ws"),
            numpy_helper.from_array(rng.normal(0, 0.1, size=(256, 1)).astype(np.float32), "w2"),
        ]
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def test_a_preprocessing_constant_and_a_shared_value_stay_float32() -> None:
    source = _constant_preprocessing()
    x, _ = _rows(2000, 2)
    result = conv.convert(
        source, conv.ConvertOptions(quantize=HALVE, feature_columns="f0:f3"), {f"f{i}": x[:, i] for i in range(4)}
    )
    out = result.model
    inits = {t.name: t for t in out.graph.initializer}
    assert inits["c"].data_type == inits["sd"].data_type == FLOAT  # the Constant's value, as given
    np.testing.assert_array_equal(
        numpy_helper.to_array(inits["c"]), np.array([25166.6, 5963.8, 14.47, 600.35], np.float32)
    )
    assert inits["w1"].data_type == inits["ws"].data_type == inits["w2"].data_type == HALF
    made = {o: n for n in out.graph.node for o in n.output}
    to = {n.name: next(a.i for a in n.attribute if a.name == "to") for n in out.graph.node if n.op_type == "Cast"}
    round_trips = [
        n.name
        for n in out.graph.node
        if n.op_type == "Cast"
        and to[n.name] == FLOAT
        and made.get(n.input[0]) is not None
        and made[n.input[0]].op_type == "Cast"
        and to[made[n.input[0]].name] == HALF
    ]
    assert not round_trips, round_trips  # no float32 value goes through fp16 between float32 nodes
    onnx.checker.check_model(out, full_check=True)
    onnx.shape_inference.infer_shapes(out, strict_mode=True)
    ref, got = _scores(source, x), _scores(out, x)
    assert float(np.mean((ref >= 0.5) == (got >= 0.5))) >= 0.99
