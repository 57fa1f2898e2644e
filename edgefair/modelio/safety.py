"""The one safety check for untrusted ONNX models: size cap, no external data, allowed operator domains only.

Convert, bundle building and bundle loading on an edge device all call :func:`check_model_bytes`. A device
has only numpy, onnxruntime and the standard library, so this module does not use the ``onnx`` package: it
walks the protobuf wire format of ``ModelProto`` by hand, descends only into the messages that can hold
tensors, graphs or nodes, and steps over large byte fields (``raw_data``) by their length without copying.

Field numbers, from onnx/onnx.proto (onnx 1.23), all length-delimited (LEN) unless marked varint:

=====================  ==========================================================================
ModelProto             ir_version 1 (varint), graph 7, opset_import 8, training_info 20, functions 25
OperatorSetIdProto     domain 1, version 2 (varint)
TrainingInfoProto      initialization 1, algorithm 2 (both GraphProto)
GraphProto             node 1, initializer 5, sparse_initializer 15
NodeProto              name 3, op_type 4, attribute 5, domain 7
AttributeProto         name 1, t 5, g 6, tensors 10, graphs 11, sparse_tensor 22, sparse_tensors 23
TensorProto            name 8, raw_data 9 (skipped), external_data 13, data_location 14 (varint, EXTERNAL=1)
SparseTensorProto      values 1, indices 2 (both TensorProto)
FunctionProto          name 1, node 7, domain 10, attribute_proto 11 (AttributeProto defaults)
=====================  ==========================================================================
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from edgefair.errors import ModelError

ALLOWED_DOMAINS: tuple[str, ...] = ("", "ai.onnx", "ai.onnx.ml")
MAX_MODEL_BYTES = 512 * 1024 * 1024
MAX_SUBGRAPH_DEPTH = 64

_ALLOWED = frozenset(d.encode() for d in ALLOWED_DOMAINS)
_U64 = (1 << 64) - 1
_EXPECTED = "expected a serialized ONNX ModelProto"
_SELF_CONTAINED = "points at external data; refused: a bundle must be self-contained"
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
_Span = tuple[int, int]


@dataclass(frozen=True)
class ModelSummary:
    """What the scan saw. ``nodes`` counts every node (subgraphs, functions and training graphs included);
    ``initializers`` counts the main graph's dense and sparse initializers."""

    ir_version: int
    opsets: dict[str, int]
    nodes: int
    initializers: int
    domains_used: tuple[str, ...]


class _Malformed(Exception):
    def __init__(self, what: str, at: int | None) -> None:
        super().__init__(what if at is None else f"{what} at byte {at}")


class _Refused(Exception):
    pass


def _varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    start, result, shift = pos, 0, 0
    while True:
        if pos >= end:
            raise _Malformed("truncated field", start)
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result & _U64, pos
        shift += 7
        if shift >= 70:
            raise _Malformed("varint longer than 10 bytes", start)


def _fields(buf: memoryview, pos: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """Yield ``(field, wire_type, a, b)`` for each field in ``buf[pos:end]``: a varint's value as ``a``,
    or a LEN field's payload as the span ``[a, b)``. Fixed-width fields are stepped over, not yielded."""
    while pos < end:
        at, key = pos, buf[pos]
        pos += 1
        if key >= 0x80:  # one-byte keys (fields 1-15) are the common case
            key, pos = _varint(buf, at, end)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise _Malformed("field number 0", at)
        if wire == _VARINT:
            value, pos = _varint(buf, pos, end)
            yield field, wire, value, pos
        elif wire == _LEN:
            size, pos = _varint(buf, pos, end) if pos >= end or buf[pos] >= 0x80 else (buf[pos], pos + 1)
            if size > end - pos:
                raise _Malformed("truncated field", at)
            yield field, wire, pos, pos + size
            pos += size
        elif wire in (_I64, _I32):
            pos += 8 if wire == _I64 else 4
            if pos > end:
                raise _Malformed("truncated field", at)
        else:
            raise _Malformed(f"unsupported wire type {wire}", at)


def _want(wire: int, expected: int, field: int, a: int) -> None:
    if wire != expected:
        raise _Malformed(f"field {field} has wire type {wire}, expected {expected}", a)


def _show(raw: bytes) -> str:
    """A name fit for a one-line message: decoded leniently, capped, quoted by ``repr`` (which escapes newlines)."""
    text = raw.decode("utf-8", "replace")
    return repr(text if len(text) <= 120 else text[:117] + "...")


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


class _Scan:
    def __init__(self, buf: memoryview, strict: bool = True) -> None:
        self.buf = buf
        self.nodes = 0
        self.domains: set[bytes] = set()
        self.ops: set[bytes] = set()
        self.strict = strict  # False: list the operators, refuse no domain (``op_types``)

    def lens(self, span: _Span, wanted: dict[int, list[_Span]]) -> None:
        """Collect the LEN fields numbered in ``wanted`` (in wire order), checking their wire type."""
        for field, wire, a, b in _fields(self.buf, *span):
            if field in wanted:
                _want(wire, _LEN, field, a)
                wanted[field].append((a, b))

    def name(self, spans: list[_Span]) -> bytes:
        return bytes(self.buf[slice(*spans[-1])]) if spans else b""

    def tensor(self, span: _Span, kind: str, ctx: str) -> None:
        external, name = False, b""
        for field, wire, a, b in _fields(self.buf, *span):
            if field == 14:  # data_location: an int32 enum, so protobuf keeps the low 32 bits
                _want(wire, _VARINT, field, a)
                external |= a & 0xFFFFFFFF == 1
            elif field in (8, 13):
                _want(wire, _LEN, field, a)
                external |= field == 13
                name = bytes(self.buf[a:b]) if field == 8 else name
        if external:
            raise _Refused(f"{kind} {_show(name)}{ctx} {_SELF_CONTAINED}")

    def sparse(self, span: _Span, kind: str, ctx: str) -> None:
        parts: dict[int, list[_Span]] = {1: [], 2: []}
        self.lens(span, parts)
        for field, label in ((1, "values"), (2, "indices")):
            for sub in parts[field]:
                self.tensor(sub, kind, f" ({label}){ctx}")

    def graph(self, span: _Span, depth: int, ctx: str) -> int:
        """Scan one graph; return how many initializers it holds."""
        if depth > MAX_SUBGRAPH_DEPTH:
            raise _Malformed(f"subgraphs nested deeper than {MAX_SUBGRAPH_DEPTH} levels", span[0])
        count = 0
        for field, wire, a, b in _fields(self.buf, *span):
            if field in (1, 5, 15):
                _want(wire, _LEN, field, a)
                count += field != 1
            if field == 1:
                self.node((a, b), depth, ctx)
            elif field == 5:
                self.tensor((a, b), "initializer", ctx)
            elif field == 15:
                self.sparse((a, b), "sparse initializer", ctx)
        return count

    def node(self, span: _Span, depth: int, ctx: str) -> None:
        parts: dict[int, list[_Span]] = {3: [], 4: [], 5: [], 7: []}
        self.lens(span, parts)
        self.nodes += 1
        domain = self.name(parts[7])
        label = _show(self.name(parts[3]) or self.name(parts[4]))
        self.ops.add(self.name(parts[4]))
        if domain not in _ALLOWED and self.strict:
            allowed = ", ".join(repr(d) for d in ALLOWED_DOMAINS)
            raise _Refused(f"node {label}{ctx} uses operator domain {_show(domain)}; allowed domains are {allowed}")
        self.domains.add(domain)
        for sub in parts[5]:
            self.attribute(sub, depth, f" of node {label}{ctx}")

    def attribute(self, span: _Span, depth: int, ctx: str) -> None:
        parts: dict[int, list[_Span]] = {1: [], 5: [], 6: [], 10: [], 11: [], 22: [], 23: []}
        self.lens(span, parts)
        if not any(parts[f] for f in (5, 6, 10, 11, 22, 23)):
            return
        where = f" in attribute {_show(self.name(parts[1]))}{ctx}"
        for sub in parts[5] + parts[10]:
            self.tensor(sub, "tensor", where)
        for sub in parts[22] + parts[23]:
            self.sparse(sub, "sparse tensor", where)
        for sub in parts[6] + parts[11]:
            self.graph(sub, depth + 1, " in subgraph" + where)

    def function(self, span: _Span) -> None:
        parts: dict[int, list[_Span]] = {1: [], 7: [], 10: [], 11: []}
        self.lens(span, parts)
        ctx = f" in function {_show(self.name(parts[10]) + b'.' + self.name(parts[1]))}"
        for sub in parts[7]:
            self.node(sub, 0, ctx)
        for sub in parts[11]:
            self.attribute(sub, 0, f" (default){ctx}")

    def model(self) -> ModelSummary:
        ir_version, initializers, graphs = 0, 0, 0
        opsets: dict[str, int] = {}
        for field, wire, a, b in _fields(self.buf, 0, len(self.buf)):
            if field == 1:
                _want(wire, _VARINT, field, a)
                ir_version = _signed(a)
            elif field in (7, 8, 20, 25):
                _want(wire, _LEN, field, a)
            if field == 7:
                initializers += self.graph((a, b), 0, "")
                graphs += 1
            elif field == 8:
                domain, version = self.opset((a, b))
                opsets[domain] = version
            elif field == 20:
                training: dict[int, list[_Span]] = {1: [], 2: []}
                self.lens((a, b), training)
                for sub in training[1] + training[2]:
                    self.graph(sub, 0, " in training_info")
            elif field == 25:
                self.function((a, b))
        if not graphs:
            raise _Malformed("no graph field", None)
        domains = tuple(sorted(d.decode("utf-8") for d in self.domains))
        return ModelSummary(ir_version, opsets, self.nodes, initializers, domains)

    def opset(self, span: _Span) -> tuple[str, int]:
        domain, version = b"", 0
        for field, wire, a, b in _fields(self.buf, *span):
            if field == 1:
                _want(wire, _LEN, field, a)
                domain = bytes(self.buf[a:b])
            elif field == 2:
                _want(wire, _VARINT, field, a)
                version = _signed(a)
        return domain.decode("utf-8", "replace"), version


def check_model_bytes(data: bytes, where: str, *, max_bytes: int = MAX_MODEL_BYTES) -> ModelSummary:
    """Check an untrusted serialized ONNX model; raise a one-line :class:`ModelError` naming what is wrong."""
    if len(data) > max_bytes:
        raise ModelError(
            f"{where}: model is {len(data)} bytes, over the cap of {max_bytes} bytes; expected a smaller model"
        )
    try:
        return _Scan(memoryview(data).cast("B")).model()
    except _Malformed as e:
        raise ModelError(f"{where}: not an ONNX model ({e}); {_EXPECTED}") from None
    except _Refused as e:
        raise ModelError(f"{where}: {e}") from None


def op_types(data: bytes) -> frozenset[str] | None:
    """Every operator type in a serialized model (subgraphs, functions and training graphs
    too), whatever its domain; None when it does not parse or holds external data. For what a
    report says about a model, not a safety check: it refuses nothing."""
    scan = _Scan(memoryview(data).cast("B"), strict=False)
    try:
        scan.model()
    except (_Malformed, _Refused):
        return None
    return frozenset(op.decode("utf-8", "replace") for op in scan.ops)
