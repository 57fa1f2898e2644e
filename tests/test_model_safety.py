"""edgefair.modelio.safety: the hand-written ONNX wire-format scan, checked against onnx itself as the oracle."""

from __future__ import annotations

import ast
import io
import itertools
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, external_data_helper, helper, numpy_helper

from edgefair.errors import ModelError
from edgefair.modelio.safety import ALLOWED_DOMAINS, MAX_MODEL_BYTES, ModelSummary, check_model_bytes

ROOT = Path(__file__).resolve().parents[1]
EXTERNAL = "points at external data; refused: a bundle must be self-contained"
FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------- building models


def _tensor(name: str, n: int = 3, how: str = "inline") -> TensorProto:
    t = numpy_helper.from_array(np.arange(n, dtype=np.float32), name)
    if how == "helper":
        external_data_helper.set_external_data(t, location=f"{name}.bin")
    elif how == "location":
        t.data_location = TensorProto.EXTERNAL
    elif how == "entry":
        entry = t.external_data.add()
        entry.key, entry.value = "location", f"{name}.bin"
    return t


def _sparse(values: TensorProto, indices: TensorProto | None = None) -> onnx.SparseTensorProto:
    if indices is None:
        indices = numpy_helper.from_array(np.arange(len(values.raw_data) // 4, dtype=np.int64), "idx")
    return helper.make_sparse_tensor(values, indices, [10])


def _graph(nodes: list[onnx.NodeProto], name: str = "g", **kw: object) -> onnx.GraphProto:
    return helper.make_graph(nodes, name, [], [], **kw)  # type: ignore[arg-type]


def _model(graph: onnx.GraphProto, functions: list[onnx.FunctionProto] | None = None) -> onnx.ModelProto:
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)]
    return helper.make_model(graph, opset_imports=opsets, functions=functions or [])


def _if(name: str, then: onnx.GraphProto, other: onnx.GraphProto | None = None) -> onnx.NodeProto:
    return helper.make_node("If", ["c"], [f"{name}_y"], name=name, then_branch=then, else_branch=other or _graph([]))


def _const(name: str, value: TensorProto) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [f"{name}_y"], name=name, value=value)


def _function(name: str, nodes: list[onnx.NodeProto], domain: str = "local") -> onnx.FunctionProto:
    return helper.make_function(domain, name, ["x"], ["y"], nodes, [helper.make_opsetid("", 17)])


def check(model: onnx.ModelProto | bytes) -> ModelSummary:
    data = model if isinstance(model, bytes) else model.SerializeToString()
    return check_model_bytes(data, "m.onnx")


def refusal(model: onnx.ModelProto | bytes) -> str:
    with pytest.raises(ModelError) as info:
        check(model)
    msg = str(info.value)
    assert msg.startswith("m.onnx: ") and len(msg.splitlines()) == 1, msg
    return msg


# ---------------------------------------------------------------- the onnx-based oracle


def _attr_graphs(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    for a in node.attribute:
        if a.HasField("g"):
            yield a.g
        yield from a.graphs


def _attr_tensors(attr: onnx.AttributeProto) -> Iterator[TensorProto]:
    sparse = [*attr.sparse_tensors, *([attr.sparse_tensor] if attr.HasField("sparse_tensor") else [])]
    yield from [*([attr.t] if attr.HasField("t") else []), *attr.tensors]
    for s in sparse:
        yield from (s.values, s.indices)


def _walk(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """The graph and every subgraph below it."""
    yield graph
    for node in graph.node:
        for sub in _attr_graphs(node):
            yield from _walk(sub)


def oracle(model: onnx.ModelProto) -> tuple[list[tuple[str, str]], int, int, dict[str, int], tuple[str, ...]]:
    """(violations as (kind, name), all nodes, main-graph initializers, opsets, domains used) — read with onnx."""
    roots = [model.graph, *(g for t in model.training_info for g in (t.initialization, t.algorithm))]
    fn_attrs = [a for fn in model.functions for a in fn.attribute_proto]
    for fn in model.functions:
        roots += [sub for node in fn.node for sub in _attr_graphs(node)]
    roots += [sub for a in fn_attrs for sub in [*([a.g] if a.HasField("g") else []), *a.graphs]]
    graphs = [g for root in roots for g in _walk(root)]
    nodes = [n for g in graphs for n in g.node] + [n for fn in model.functions for n in fn.node]
    tensors = [t for g in graphs for t in g.initializer]
    tensors += [t for g in graphs for s in g.sparse_initializer for t in (s.values, s.indices)]
    tensors += [t for a in [*fn_attrs, *(a for n in nodes for a in n.attribute)] for t in _attr_tensors(a)]
    bad = [("external", t.name) for t in tensors if t.data_location == TensorProto.EXTERNAL or t.external_data]
    bad += [("domain", n.name or n.op_type) for n in nodes if n.domain not in ALLOWED_DOMAINS]
    inits = len(model.graph.initializer) + len(model.graph.sparse_initializer)
    domains = tuple(sorted({n.domain for n in nodes}))
    return bad, len(nodes), inits, {o.domain: o.version for o in model.opset_import}, domains


def assert_matches_oracle(model: onnx.ModelProto) -> None:
    bad, nodes, inits, opsets, domains = oracle(model)
    if not bad:
        summary = check(model)
        assert (summary.nodes, summary.initializers, summary.opsets, summary.domains_used) == (
            nodes,
            inits,
            opsets,
            domains,
        )
        assert summary.ir_version == model.ir_version
        return
    msg = refusal(model)
    phrase = {"external": EXTERNAL, "domain": "uses operator domain"}
    assert any(phrase[kind] in msg and repr(name) in msg for kind, name in bad), (msg, bad)


# ---------------------------------------------------------------- random models


DOMAINS = ["", "", "", "ai.onnx", "ai.onnx.ml", "com.microsoft", "evil.corp"]
HOW = ["inline", "inline", "inline", "inline", "helper", "location", "entry"]


def random_model(data: st.DataObject) -> onnx.ModelProto:
    counter = itertools.count()

    def fresh(prefix: str) -> str:
        return f"{prefix}{next(counter)}"

    def tensor() -> TensorProto:
        return _tensor(fresh("t"), data.draw(st.integers(1, 4)), data.draw(st.sampled_from(HOW)))

    def node(depth: int) -> onnx.NodeProto:
        kind = data.draw(st.sampled_from(["op", "const", "if"] if depth < 3 else ["op", "const"]))
        name, domain = fresh("n"), data.draw(st.sampled_from(DOMAINS))
        if kind == "const":
            return helper.make_node("Constant", [], [name], name=name, domain=domain, value=tensor())
        if kind == "if":
            return helper.make_node("If", ["c"], [name], name=name, domain=domain, then_branch=graph(depth + 1))
        return helper.make_node("Relu", ["x"], [name], name=name, domain=domain)

    def graph(depth: int) -> onnx.GraphProto:
        nodes = [node(depth) for _ in range(data.draw(st.integers(0, 3)))]
        inits = [tensor() for _ in range(data.draw(st.integers(0, 2)))]
        sparse = [_sparse(tensor()) for _ in range(data.draw(st.integers(0, 1)))]
        return _graph(nodes, fresh("g"), initializer=inits, sparse_initializer=sparse)

    functions = [_function(fresh("f"), [node(1) for _ in range(data.draw(st.integers(1, 2)))], "local")]
    return _model(graph(0), functions[: data.draw(st.integers(0, 1))])


@FAST
@given(st.data())
def test_random_models_agree_with_onnx(data: st.DataObject) -> None:
    assert_matches_oracle(random_model(data))


@FAST
@given(st.data(), st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4))
def test_mutated_models_never_accepted_when_onnx_sees_them_unsafe(
    data: st.DataObject, edits: list[tuple[int, int]]
) -> None:
    """Where protobuf itself reads the damaged bytes, the scan may be stricter (wire types, a missing graph)
    but never more lenient, and a refusal for external data or a domain is one onnx agrees with."""
    raw = bytearray(random_model(data).SerializeToString())
    for pos, value in edits:
        raw[pos % len(raw)] = value
    summary: ModelSummary | None = None
    try:
        summary = check(bytes(raw))
    except ModelError as e:
        reason = str(e)
    try:
        bad, nodes, inits, _, _ = oracle(onnx.ModelProto.FromString(bytes(raw)))
    except Exception:  # protobuf cannot read it either: nothing to compare with
        return
    if summary is not None:
        assert not bad, bad
        assert (summary.nodes, summary.initializers) == (nodes, inits)
    elif "not an ONNX model" not in reason:
        assert bad, reason


# ---------------------------------------------------------------- each refusal reason, named


def test_clean_model_summary() -> None:
    nodes = [
        helper.make_node("Relu", ["x"], ["y"], name="r"),
        helper.make_node("Scaler", ["y"], ["z"], domain="ai.onnx.ml"),
    ]
    model = _model(_graph(nodes, initializer=[_tensor("w")], sparse_initializer=[_sparse(_tensor("s"))]))
    summary = check(model)
    assert summary == ModelSummary(model.ir_version, {"": 17, "ai.onnx.ml": 3}, 2, 2, ("", "ai.onnx.ml"))
    assert MAX_MODEL_BYTES == 512 * 1024 * 1024 and ALLOWED_DOMAINS == ("", "ai.onnx", "ai.onnx.ml")


@pytest.mark.parametrize("how", ["helper", "location", "entry"])
def test_external_initializer_named(how: str) -> None:
    msg = refusal(_model(_graph([], initializer=[_tensor("ok"), _tensor("w", how=how)])))
    assert f"initializer 'w' {EXTERNAL}" in msg


def test_external_data_in_if_subgraph() -> None:
    inner = _graph([_const("deep_c", _tensor("deep_t", how="location"))], "inner")
    then = _graph([_if("if2", inner)], "then", initializer=[_tensor("then_ok")])
    msg = refusal(_model(_graph([_if("if1", then)])))
    assert "tensor 'deep_t' in attribute 'value' of node 'deep_c' in subgraph in attribute 'then_branch'" in msg
    assert EXTERNAL in msg
    msg = refusal(_model(_graph([_if("if1", _graph([], initializer=[_tensor("sub_w", how="helper")]))])))
    assert "initializer 'sub_w' in subgraph in attribute 'then_branch' of node 'if1'" in msg


def test_external_data_in_constant_value() -> None:
    msg = refusal(_model(_graph([_const("c", _tensor("cval", how="helper"))])))
    assert f"tensor 'cval' in attribute 'value' of node 'c' {EXTERNAL}" in msg


def test_external_data_in_attribute_tensor_lists_and_sparse_attributes() -> None:
    node = helper.make_node("Foo", [], ["y"], name="lst", tensors=[_tensor("a"), _tensor("b", how="entry")])
    assert "tensor 'b' in attribute 'tensors' of node 'lst'" in refusal(_model(_graph([node])))
    sparse = helper.make_node("Constant", [], ["y"], name="sp", sparse_value=_sparse(_tensor("sv", how="location")))
    assert "sparse tensor 'sv' (values) in attribute 'sparse_value' of node 'sp'" in refusal(_model(_graph([sparse])))


def test_external_data_in_function_body_and_defaults() -> None:
    body = [_const("fc", _tensor("ft", how="location"))]
    msg = refusal(_model(_graph([]), [_function("fn", body)]))
    assert f"tensor 'ft' in attribute 'value' of node 'fc' in function 'local.fn' {EXTERNAL}" in msg
    fn = _function("fd", [helper.make_node("Relu", ["x"], ["y"])])
    fn.attribute_proto.append(helper.make_attribute("alpha", _tensor("default_t", how="helper")))
    assert "tensor 'default_t' in attribute 'alpha' (default) in function 'local.fd'" in refusal(
        _model(_graph([]), [fn])
    )


def test_external_data_in_sparse_initializer() -> None:
    msg = refusal(_model(_graph([], sparse_initializer=[_sparse(_tensor("sv", how="helper"))])))
    assert f"sparse initializer 'sv' (values) {EXTERNAL}" in msg
    idx = numpy_helper.from_array(np.arange(3, dtype=np.int64), "si")
    idx.data_location = TensorProto.EXTERNAL
    msg = refusal(_model(_graph([], sparse_initializer=[_sparse(_tensor("sv"), idx)])))
    assert f"sparse initializer 'si' (indices) {EXTERNAL}" in msg


def test_external_data_in_training_info() -> None:
    model = _model(_graph([]))
    model.training_info.add().initialization.CopyFrom(_graph([], initializer=[_tensor("tw", how="location")]))
    assert "initializer 'tw' in training_info" in refusal(model)


def test_data_location_uses_low_32_bits_like_protobuf() -> None:
    t = _tensor("w")
    t.ClearField("data_location")
    sneaky = t.SerializeToString() + b"\x70" + b"\x81\x80\x80\x80\x10"  # field 14 = 2**32 + 1
    assert TensorProto.FromString(sneaky).data_location == TensorProto.EXTERNAL  # what protobuf reads
    graph = _graph([])
    graph.initializer.add().ParseFromString(sneaky)
    assert "initializer 'w' points at external data" in refusal(_model(graph))


def test_disallowed_domains_named() -> None:
    ok, bad = (
        helper.make_node("Relu", ["x"], ["y"], name="ok"),
        helper.make_node("Op", [], [], name="bad", domain="com.ms"),
    )
    msg = refusal(_model(_graph([ok, bad])))
    assert "node 'bad' uses operator domain 'com.ms'; allowed domains are '', 'ai.onnx', 'ai.onnx.ml'" in msg
    sub = _graph([helper.make_node("Gelu", ["x"], ["y"], domain="evil")])
    assert "node 'Gelu' in subgraph in attribute 'then_branch' of node 'if1' uses operator domain 'evil'" in refusal(
        _model(_graph([_if("if1", sub)]))
    )
    fn = _function("fn", [helper.make_node("Op", [], [], name="inner", domain="x.y")], "ai.onnx")
    assert "node 'inner' in function 'ai.onnx.fn' uses operator domain 'x.y'" in refusal(_model(_graph([]), [fn]))


def test_call_to_model_local_function_in_other_domain_refused() -> None:
    fn = _function("helper", [helper.make_node("Relu", ["x"], ["y"])], "local.fns")
    call = helper.make_node("helper", ["x"], ["y"], name="call", domain="local.fns")
    assert "node 'call' uses operator domain 'local.fns'" in refusal(_model(_graph([call]), [fn]))


def test_names_with_newlines_stay_on_one_line() -> None:
    msg = refusal(_model(_graph([helper.make_node("Op", [], [], name="a\nb\x1b{0}", domain="z\r")])))
    assert "node 'a\\nb\\x1b{0}' uses operator domain 'z\\r'" in msg


def _uvarint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    return bytes([*out, n])


def _len_field(field: int, payload: bytes) -> bytes:
    return _uvarint(field << 3 | 2) + _uvarint(len(payload)) + payload


def _nested(levels: int) -> bytes:
    """If nodes nested ``levels`` deep, encoded by hand: protobuf's own depth limit (100 messages, three per
    level) stops onnx from building or parsing more than ~33 levels."""
    graph = _graph([helper.make_node("Relu", ["x"], ["y"], name="leaf")]).SerializeToString()
    for i in range(levels):
        attr = _len_field(1, b"then_branch") + _len_field(6, graph)  # AttributeProto.name, .g
        node = _len_field(3, f"if{i}".encode()) + _len_field(4, b"If") + _len_field(5, attr)  # name, op_type, attribute
        graph = _len_field(1, node)  # GraphProto.node
    return _model(_graph([])).SerializeToString() + _len_field(7, graph)  # a second graph field merges in


def test_subgraph_nesting_limit() -> None:
    shallow = onnx.ModelProto.FromString(_nested(20))
    assert oracle(shallow)[1] == 21  # the hand encoding is what onnx reads
    assert_matches_oracle(shallow)
    assert check(_nested(64)).nodes == 65
    for levels in (65, 5000):
        assert "subgraphs nested deeper than 64 levels" in refusal(_nested(levels))


# ---------------------------------------------------------------- size cap and malformed bytes


def test_size_cap_checked_before_parsing() -> None:
    with pytest.raises(ModelError) as info:
        check_model_bytes(b"\xff" * 1000, "big.onnx", max_bytes=999)
    msg = str(info.value)
    assert msg == "big.onnx: model is 1000 bytes, over the cap of 999 bytes; expected a smaller model"
    assert check_model_bytes(_model(_graph([])).SerializeToString(), "m", max_bytes=1000).nodes == 0


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"", "(no graph field)"),
        (_model(_graph([])).SerializeToString()[:-1], "truncated field at byte"),
        (b"\x08\x0e", "(no graph field)"),  # ir_version only
        (b"\x0b\x0c", "unsupported wire type 3 at byte 0"),  # a group
        (b"\x3a\x00\x0e", "unsupported wire type 6 at byte 2"),
        (b"\x08" + b"\xff" * 11, "varint longer than 10 bytes at byte 1"),
        (b"\x38\x01", "field 7 has wire type 0, expected 2 at byte 1"),  # graph as a varint
        (b"\x00\x01", "field number 0 at byte 0"),
        (b"\x3a\x05\x0a\x03\x22\x01", "truncated field at byte"),
        (b"PK\x03\x04 not a model", "not an ONNX model"),
    ],
)
def test_not_an_onnx_model(raw: bytes, why: str) -> None:
    msg = refusal(raw)
    assert msg.startswith("m.onnx: not an ONNX model (") and why in msg, msg
    assert msg.endswith("expected a serialized ONNX ModelProto")


def _rich_model() -> onnx.ModelProto:
    then = _graph([_const("c", _tensor("ct")), helper.make_node("Relu", ["x"], ["y"], name="r")], "then")
    graph = _graph([_if("if1", then)], initializer=[_tensor("w")], sparse_initializer=[_sparse(_tensor("s"))])
    return _model(graph, [_function("fn", [_const("fc", _tensor("ft"))])])


def test_every_prefix_parses_or_raises_model_error() -> None:
    raw = _rich_model().SerializeToString()
    outcomes = {"ok": 0, "refused": 0}
    for n in range(len(raw) + 1):
        try:
            check(raw[:n])
            outcomes["ok"] += 1
        except ModelError as e:
            assert "not an ONNX model" in str(e)
            outcomes["refused"] += 1
    assert check(raw).nodes == 4 and outcomes["refused"] > len(raw) // 2


def _fits(f: Callable[[bytes], object], raw: bytes) -> None:
    try:
        f(raw)
    except ModelError as e:
        assert len(str(e).splitlines()) == 1


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_garbage_only_ever_raises_model_error(raw: bytes) -> None:
    _fits(check, raw)
    _fits(check, b"\x3a" + bytes([len(raw) % 128]) + raw)  # garbage inside a graph field


# ---------------------------------------------------------------- real exported models


def test_sklearn_pipeline_passes() -> None:
    pytest.importorskip("skl2onnx")
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 4)).astype(np.float32)
    clf = LogisticRegression()
    pipe = make_pipeline(StandardScaler(), clf).fit(x, (x[:, 0] > 0).astype(int))
    onx = convert_sklearn(pipe, initial_types=[("x", FloatTensorType([None, 4]))], options={id(clf): {"zipmap": False}})
    summary = check(onx)
    assert "ai.onnx.ml" in summary.domains_used
    assert_matches_oracle(onx)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter (dynamo=False) is deprecated
def test_torch_linear_passes() -> None:
    torch = pytest.importorskip("torch")
    buf = io.BytesIO()
    torch.onnx.export(torch.nn.Linear(4, 2), (torch.zeros(1, 4),), buf, dynamo=False)
    raw = buf.getvalue()
    summary = check(raw)
    assert summary.nodes >= 1 and summary.initializers == 2 and summary.domains_used == ("",)
    assert_matches_oracle(onnx.ModelProto.FromString(raw))


# ---------------------------------------------------------------- device constraints


def test_module_does_not_import_onnx() -> None:
    # Imports edgefair/__init__ and edgefair/modelio/__init__ too: none of them may pull in onnx.
    code = "import sys; import edgefair.modelio.safety; print('onnx' in sys.modules)"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_module_imports_only_stdlib_and_errors() -> None:
    # edgefair/__init__ and edgefair/modelio/__init__ belong to others; this pins safety.py's own imports.
    tree = ast.parse((ROOT / "edgefair" / "modelio" / "safety.py").read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert {n for n in names if n.split(".")[0] not in sys.stdlib_module_names} == {"edgefair.errors"}


def test_big_raw_data_is_skipped_not_copied() -> None:
    w = numpy_helper.from_array(np.zeros(8 * 1024 * 1024, np.float32), "big")  # 32 MB
    raw = _model(_graph([helper.make_node("Add", ["x", "big"], ["y"])], initializer=[w])).SerializeToString()
    start = time.perf_counter()
    assert check(raw).initializers == 1
    assert time.perf_counter() - start < 0.5
