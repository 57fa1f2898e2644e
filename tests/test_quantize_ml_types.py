"""Static int8 with histogram calibration (entropy, percentile) on a scikit-learn pipeline.

skl2onnx puts a Cast after the ColumnTransformer's Concat; onnxruntime's optimiser drops it,
and onnx's type inference gives the ai.onnx.ml Scaler no output type, so nothing after it
had a type and onnxruntime's histogram calibrators found no tensor to calibrate ("Histogram
has not been collected"). The model is trained here; the oracle is onnxruntime running the
quantised model (its MatMuls must be integer ops, its decisions close to the source's).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edgefair.convert.quantize import CalibrationMethod, QuantizeOptions, QuantMode, quantize


@pytest.fixture(scope="module")
def pipeline() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    import pandas as pd
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    from sklearn.compose import ColumnTransformer
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rng = np.random.default_rng(2)
    n = 600
    frame = pd.DataFrame({"a": rng.normal(50, 10, n), "b": rng.normal(0, 3, n), "city": rng.choice(["x", "y", "z"], n)})
    y = (frame.a / 10 + frame.b + (frame.city == "y") + rng.normal(0, 1, n) > 5).astype(int)
    pre = ColumnTransformer([("num", StandardScaler(), ["a", "b"]), ("cat", OneHotEncoder(), ["city"])])
    model = Pipeline([("pre", pre), ("mlp", MLPClassifier((16,), max_iter=300, random_state=0))]).fit(frame, y)
    types = [
        ("a", FloatTensorType([None, 1])),
        ("b", FloatTensorType([None, 1])),
        ("city", StringTensorType([None, 1])),
    ]
    onx = to_onnx(model, initial_types=types, options={id(model): {"zipmap": False}}, target_opset=17)
    feeds = {
        "a": frame.a.to_numpy(np.float32).reshape(-1, 1),
        "b": frame.b.to_numpy(np.float32).reshape(-1, 1),
        "city": frame.city.to_numpy(object).reshape(-1, 1),
    }
    return onx, feeds


@pytest.mark.parametrize("method", [CalibrationMethod.ENTROPY, CalibrationMethod.PERCENTILE, CalibrationMethod.MINMAX])
def test_histogram_calibration_quantises_a_scaler_pipeline(
    pipeline: tuple[onnx.ModelProto, dict[str, np.ndarray]], method: CalibrationMethod
) -> None:
    model, feeds = pipeline
    result = quantize(model, QuantizeOptions(mode=QuantMode.STATIC_INT8, calibration_method=method), feeds)
    ops = {n.op_type for n in result.model.graph.node}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops  # activations are quantised, not weights only
    source = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    quantised = ort.InferenceSession(result.model.SerializeToString(), providers=["CPUExecutionProvider"])
    p0 = source.run(["probabilities"], feeds)[0][:, 1]
    p1 = quantised.run(["probabilities"], feeds)[0][:, 1]
    assert np.mean((p0 >= 0.5) == (p1 >= 0.5)) > 0.95
    assert not np.array_equal(p0, p1)  # it is a different (quantised) model


def test_a_fallback_keeping_every_node_float_says_so(pipeline: tuple[onnx.ModelProto, dict[str, np.ndarray]]) -> None:
    """Not "the model has none of MatMul" when it has three: the variant kept them float."""
    from edgefair.convert.quantize import quantisable_nodes
    from edgefair.errors import ModelError

    model, feeds = pipeline
    options = QuantizeOptions(mode=QuantMode.STATIC_INT8)
    nodes = quantisable_nodes(model, options)
    assert len(nodes) == 2  # the hidden layer's MatMul and the output layer's
    with pytest.raises(ModelError, match="every node it could quantise is kept float"):
        quantize(model, QuantizeOptions(mode=QuantMode.STATIC_INT8, nodes_to_exclude=nodes), feeds)
