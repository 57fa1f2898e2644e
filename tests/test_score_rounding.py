"""onnxruntime's float32 Sigmoid can return 1 + 2**-23: a well-formed binary classifier must not
be refused as "not a probability" on such a row (tools/bench/scale.py hit it at 3M rows), while
scores really outside [0, 1] (logits) still are. Oracle: onnxruntime's own output, found here."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from edgefair.errors import ModelError
from edgefair.modelio.outputs import OutputChoice, decisions, decisions_list


def _sigmoid_rows_above_one() -> np.ndarray:
    node = helper.make_node("Sigmoid", ["x"], ["score"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.linspace(0.0, 40.0, 400_001, dtype=np.float32).reshape(-1, 1)
    return sess.run(None, {"x": x})[0]


def test_a_sigmoid_that_rounds_above_one_is_a_probability():
    out = _sigmoid_rows_above_one()
    if not (out.astype(np.float64) > 1.0).any():
        pytest.skip("this onnxruntime's Sigmoid never rounds above 1")  # pragma: no cover
    choice = OutputChoice("score", None, "score")
    scores, decided = decisions(out, choice, 0.5)
    assert scores.max() == 1.0 and scores.min() >= 0.0
    np.testing.assert_array_equal(decided, (out.reshape(-1) >= 0.5).astype(np.int64))
    few = out[out.reshape(-1) > 1.0][:3]
    listed, decided_list = decisions_list(few, choice, 0.5)
    assert listed == [1.0] * len(few) and decided_list == [1] * len(few)


@pytest.mark.parametrize("value", [1.001, -0.001, 1.0 + 2**-18, float("nan"), 3.2])
def test_scores_further_out_are_still_refused(value):
    choice = OutputChoice("score", None, "score")
    arr = np.array([[0.2], [value]], dtype=np.float64)
    with pytest.raises(ModelError, match="outside \\[0, 1\\]"):
        decisions(arr, choice, 0.5)
    with pytest.raises(ModelError, match="outside \\[0, 1\\]"):
        decisions_list(arr, choice, 0.5)
