"""Any model a user brings, trained here with its own library, through every step from a CSV:
export (parity reported), convert (or one clear refusal where nothing can be compressed),
verify, bundle, FairSession in a small app, and serve with tritonclient.

Oracles: each library's own predictions (scikit-learn, LightGBM, torch), onnxruntime
sessions and feeds built here (not edgefair's), tritonclient over HTTP. The LightGBM case
runs by default; the others, slower to train and export, in the slow suite."""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as triton

from edgefair.runtime.session import FairSession
from edgefair.serve.server import ServeConfig, Server
from tests.test_cli_bad_input import assert_clean, one_line, run_main

ROWS = 1200
TRITON = {np.dtype(np.float32): "FP32", np.dtype(np.float64): "FP64", np.dtype(np.int64): "INT64"}


@dataclass
class Case:
    source: Path  # the model file as the user has it
    csv: Path  # features, label, group
    export_args: tuple[str, ...]
    features: tuple[str, ...]  # --features for convert and verify ("" where inputs are named columns)
    feeds: Callable[[slice], dict[str, np.ndarray]]  # what an app would give the model, built here
    source_scores: Callable[[slice], np.ndarray]  # the source library's own probabilities
    compressible: bool


def _table(rng: np.random.Generator) -> dict[str, np.ndarray]:
    x = rng.normal(size=(ROWS, 8))
    cols: dict[str, np.ndarray] = {f"f{i}": np.round(x[:, i], 4) for i in range(8)}
    cols["t0"], cols["t1"] = rng.integers(0, 10, ROWS), rng.integers(0, 10, ROWS)
    cols["city"] = rng.choice(["north", "south", "east"], ROWS)
    cols["group"] = rng.choice(["a", "b"], ROWS)
    logit = x[:, 0] + x[:, 1] * x[:, 2] + (cols["city"] == "south") - 0.3 * (cols["t0"] > 5)
    cols["label"] = (logit + rng.normal(scale=0.5, size=ROWS) > 0).astype(np.int64)
    return cols


def _write(path: Path, cols: dict[str, np.ndarray]) -> Path:
    names = list(cols)
    rows = zip(*(np.asarray(cols[n]).tolist() for n in names), strict=True)
    path.write_text(",".join(names) + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))
    return path


def _matrix(cols: dict[str, np.ndarray], rows: slice) -> np.ndarray:
    return np.stack([cols[f"f{i}"][rows] for i in range(8)], axis=1)


def _pickle(model: Any, path: Path) -> Path:
    with path.open("wb") as f:
        pickle.dump(model, f)
    return path


def gb_pipeline(tmp: Path, cols: dict[str, np.ndarray]) -> Case:
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    frame = pd.DataFrame({"f0": cols["f0"], "f1": cols["f1"], "f2": cols["f2"], "city": cols["city"]})
    pre = ColumnTransformer(
        [("num", StandardScaler(), ["f0", "f1", "f2"]), ("cat", OneHotEncoder(handle_unknown="ignore"), ["city"])]
    )
    model = Pipeline([("pre", pre), ("gb", GradientBoostingClassifier(n_estimators=30, max_depth=2, random_state=0))])
    model.fit(frame, cols["label"])

    def feeds(rows: slice) -> dict[str, np.ndarray]:
        out = {c: frame[[c]].to_numpy(np.float32)[rows] for c in ("f0", "f1", "f2")}
        return {**out, "city": frame[["city"]].to_numpy(object)[rows]}

    return Case(
        _pickle(model, tmp / "gb.pkl"),
        _write(tmp / "gb.csv", cols),
        ("--trust-pickle",),
        (),
        feeds,
        lambda rows: model.predict_proba(frame[rows]),
        False,
    )


def _matrix_case(model: Any, tmp: Path, name: str, cols: dict[str, np.ndarray]) -> Case:
    """A model fitted on the matrix f0..f7: one [N, 8] input fed from --features f0:f7."""
    model.fit(_matrix(cols, slice(None)), cols["label"])
    return Case(
        _pickle(model, tmp / name),
        _write(tmp / "data.csv", cols),
        ("--trust-pickle", "--features", "f0:f7"),
        ("--features", "f0:f7"),
        lambda rows: {"input": _matrix(cols, rows).astype(np.float32)},
        lambda rows: model.predict_proba(_matrix(cols, rows)),
        False,
    )


def forest(tmp: Path, cols: dict[str, np.ndarray]) -> Case:
    from sklearn.ensemble import RandomForestClassifier

    return _matrix_case(RandomForestClassifier(n_estimators=40, max_depth=6, random_state=0), tmp, "rf.joblib", cols)


def boosted(tmp: Path, cols: dict[str, np.ndarray]) -> Case:
    lightgbm = pytest.importorskip("lightgbm")
    pytest.importorskip("onnxmltools")
    return _matrix_case(lightgbm.LGBMClassifier(n_estimators=25, num_leaves=8, verbose=-1), tmp, "lgbm.pkl", cols)


def _train(net: Any, inputs: tuple[Any, ...], y: np.ndarray, steps: int = 40) -> None:
    import torch

    opt = torch.optim.Adam(net.parameters(), lr=0.03)
    target = torch.from_numpy(y)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.nll_loss(torch.log(net(*inputs) + 1e-9), target).backward()
        opt.step()
    net.eval()


def torch_two_inputs(tmp: Path, cols: dict[str, np.ndarray]) -> Case:
    torch = pytest.importorskip("torch")

    class TwoInputs(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(10, 4)
            self.hidden = torch.nn.Linear(2 * 4 + 8, 16)
            self.head = torch.nn.Linear(16, 2)

        def forward(self, tokens, numbers):
            flat = self.embed(tokens).reshape(tokens.shape[0], -1)
            return torch.softmax(self.head(torch.relu(self.hidden(torch.cat([flat, numbers], 1)))), 1)

    torch.manual_seed(0)
    net = TwoInputs()
    tokens = np.stack([cols["t0"], cols["t1"]], axis=1)
    numbers = _matrix(cols, slice(None)).astype(np.float32)
    _train(net, (torch.from_numpy(tokens), torch.from_numpy(numbers)), cols["label"])
    batch = torch.export.Dim("batch")
    program = torch.export.export(
        net,
        (torch.zeros(4, 2, dtype=torch.long), torch.zeros(4, 8)),
        dynamic_shapes={"tokens": {0: batch}, "numbers": {0: batch}},
    )
    torch.export.save(program, str(tmp / "two.pt2"))
    features = ("--features", "tokens=t0:t1,numbers=f0:f7")

    def scores(rows: slice) -> np.ndarray:
        with torch.no_grad():
            return net(torch.from_numpy(tokens[rows]), torch.from_numpy(numbers[rows])).numpy()

    return Case(
        tmp / "two.pt2",
        _write(tmp / "two.csv", cols),
        features,
        features,
        lambda rows: {"tokens": tokens[rows], "numbers": numbers[rows]},
        scores,
        True,
    )


def torch_conv1d(tmp: Path, cols: dict[str, np.ndarray]) -> Case:
    torch = pytest.importorskip("torch")
    torch.manual_seed(1)
    net = torch.nn.Sequential(
        torch.nn.Conv1d(1, 16, 3),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(16 * 6, 64),  # big enough that int8 weights save more than they cost
        torch.nn.ReLU(),
        torch.nn.Linear(64, 2),
        torch.nn.Softmax(dim=1),
    )
    x = _matrix(cols, slice(None)).astype(np.float32)[:, None, :]
    _train(net, (torch.from_numpy(x),), cols["label"])
    torch.export.save(torch.export.export(net, (torch.zeros(4, 1, 8),)), str(tmp / "conv.pt2"))  # a fixed batch

    def scores(rows: slice) -> np.ndarray:
        with torch.no_grad():
            return net(torch.from_numpy(x[rows])).numpy()

    return Case(
        tmp / "conv.pt2",
        _write(tmp / "conv.csv", cols),
        ("--features", "f0:f7"),
        ("--features", "f0:f7"),
        lambda rows: {"input": x[rows]},
        scores,
        True,
    )


slow = pytest.mark.slow
CASES = [
    pytest.param(boosted, id="lightgbm"),
    pytest.param(gb_pipeline, id="gb_pipeline_numeric_and_strings", marks=slow),
    pytest.param(forest, id="random_forest", marks=slow),
    pytest.param(torch_two_inputs, id="torch_embedding_two_inputs", marks=slow),
    pytest.param(torch_conv1d, id="torch_conv1d", marks=slow),
]


def _session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("make", CASES)
def test_each_step_works_or_refuses_in_one_line(make, tmp_path):
    cols = _table(np.random.default_rng(7))
    case = make(tmp_path, cols)
    ref, cand = tmp_path / "ref.onnx", tmp_path / "cand.onnx"

    # 1. export from the CSV, parity reported; the ONNX model scores what the source does
    o = run_main("export", str(case.source), "-o", str(ref), "--sample-data", str(case.csv), *case.export_args)
    assert_clean(o, codes=(0,))
    assert f"parity with the source on {ROWS:,} rows" in o.out, o.out
    sess = _session(ref)
    assert all(i.shape[0] not in (1, 4) for i in sess.get_inputs())  # a batch axis on every input
    every = slice(None)
    got = sess.run(["probabilities"], case.feeds(every))[0]
    assert float(np.abs(got - case.source_scores(every)).max()) < 1e-4

    # 2. convert: dynamic int8 where there are weights; one clear line where there are none
    convert_args = ("--quantize", "dynamic", "--sample-data", str(case.csv), *case.features)
    o = run_main("convert", str(ref), "-o", str(cand), *convert_args)
    if case.compressible:
        assert_clean(o, codes=(0,))
        assert cand.stat().st_size < ref.stat().st_size
    else:
        one_line(o, "nothing to quantise")
        assert not cand.exists()
        cand = ref

    # 3. verify against the reference: a certificate
    cert = tmp_path / "cert.json"
    args = ("--data", str(case.csv), "--label", "label", "--sensitive", "group", *case.features, "--json", str(cert))
    o = run_main("verify", str(ref), str(cand), *args)
    assert_clean(o, codes=(0, 1, 3))
    verdict = json.loads(cert.read_text())["verdict"]

    # 4. bundle: a certificate that did not pass is refused in one line unless allowed
    bundle = tmp_path / "bundle"
    o = run_main("bundle", "build", str(cand), "-o", str(bundle), "--certificate", str(cert))
    if verdict != "pass":
        one_line(o, "--allow-failed-certificate")
        o = run_main(
            "bundle", "build", str(cand), "-o", str(bundle), "--certificate", str(cert), "--allow-failed-certificate"
        )
    assert_clean(o, codes=(0,))

    # 5. FairSession in a small app: the bundle's outputs are the candidate's, every row counted
    rows = slice(0, 64)
    expected = _session(cand).run(["probabilities"], case.feeds(rows))[0]
    allow = verdict != "pass"
    with FairSession(bundle, allow_failed_certificate=allow) as app:
        out = app.run(case.feeds(rows), {"group": cols["group"][rows]})
        assert app.table().rows == 64
    np.testing.assert_allclose(out["probabilities"], expected, atol=1e-6)

    # 6. serve, driven by tritonclient: the same scores over HTTP
    server = Server(bundle, ServeConfig(port=0, allow_failed_certificate=allow)).start()
    try:
        client = triton.InferenceServerClient(f"127.0.0.1:{server.port}")
        assert client.is_model_ready("bundle")  # named after its folder
        inputs = []
        for key, values in case.feeds(slice(0, 9)).items():
            kind = "BYTES" if values.dtype == object else TRITON[values.dtype]
            tensor = triton.InferInput(key, list(values.shape), kind)
            tensor.set_data_from_numpy(values, binary_data=True)
            inputs.append(tensor)
        group = triton.InferInput("group", [9], "BYTES")
        group.set_data_from_numpy(cols["group"][:9].astype(object), binary_data=False)
        result = client.infer("bundle", [*inputs, group])
        # dynamic int8 scales activations per call: the oracle scores the same 9 rows in one call
        nine = _session(cand).run(["probabilities"], case.feeds(slice(0, 9)))[0]
        np.testing.assert_allclose(result.as_numpy("probabilities"), nine, atol=1e-6)
    finally:
        server.stop()
