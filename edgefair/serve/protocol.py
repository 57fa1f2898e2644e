"""Open Inference Protocol (KServe v2) tensors: JSON and the binary tensor data extension.

A request body is JSON, optionally followed by raw tensor bytes when the
``Inference-Header-Content-Length`` header says where the JSON ends; each binary input
names its ``binary_data_size``. BYTES elements in binary form carry a 4-byte
little-endian length prefix. Every malformed request becomes a ClientError (HTTP 4xx).
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

import numpy as np

from edgefair.serve.plain import DATATYPES, _plain_array, _plain_inputs

ORT_TO_V2 = {
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(int64)": "INT64",
    "tensor(int32)": "INT32",
    "tensor(int8)": "INT8",
    "tensor(uint8)": "UINT8",
    "tensor(bool)": "BOOL",
    "tensor(string)": "BYTES",
    "tensor(float16)": "FP16",
}


# json.dumps(doc, separators=(",", ":")) without building an encoder on every call
compact_json = json.JSONEncoder(separators=(",", ":")).encode
MAX_DIMS = 32  # numpy allows 64; no served model needs more than a handful


class ClientError(Exception):
    def __init__(self, message: str, status: int = 400, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


try:  # the server extra: orjson, a C JSON reader, 2-3x the stdlib's speed on a request
    from orjson import loads as _c_loads
except ImportError:  # pragma: no cover - the stdlib's reader alone
    _c_loads = None  # type: ignore[assignment]
# orjson reads integers past 64 bits as floats (the stdlib as ints): a body with 19 digits in a
# row is read by the stdlib, so no value ever differs (found by one translate and one find:
# a regular expression takes 20 times as long)
_DIGITS_ONLY = bytes(48 if 48 <= b <= 57 else 32 for b in range(256))  # a digit -> "0", else " "
_LONG_RUN = b"0" * 19


def loads(body: bytes | str) -> Any:
    """``json.loads`` whose every failure (bad bytes, bad JSON, nesting too deep) is a 400.
    orjson reads it first when installed; whatever orjson refuses (NaN, 1e400, a byte-order
    mark, UTF-16, lone surrogates, deep nesting) the stdlib reads, or words the refusal."""
    if _c_loads is not None and type(body) is bytes and body.translate(_DIGITS_ONLY).find(_LONG_RUN) < 0:
        try:
            return _c_loads(body)
        except ValueError:  # orjson.JSONDecodeError
            pass
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ClientError("request body is not valid JSON") from None
    except RecursionError:
        raise ClientError("request JSON is nested too deeply") from None


@dataclass
class InferRequest:
    id: str | None
    inputs: dict[str, np.ndarray]
    parameters: dict[str, Any]
    outputs: list[dict[str, Any]] | None
    binary_outputs_default: bool = False
    order: list[str] = field(default_factory=list)


def _bytes_from_binary(buf: bytes, count: int, name: str) -> np.ndarray:
    out, pos = [], 0
    for _ in range(count):
        if pos + 4 > len(buf):
            raise ClientError(f"input {name!r}: binary BYTES data ends early")
        (size,) = struct.unpack_from("<I", buf, pos)
        pos += 4
        if pos + size > len(buf):
            raise ClientError(f"input {name!r}: binary BYTES element runs past its data")
        out.append(buf[pos : pos + size].decode("utf-8", errors="replace"))
        pos += size
    if pos != len(buf):
        raise ClientError(f"input {name!r}: {len(buf) - pos} bytes of binary data left over")
    return np.array(out, dtype=object)


def _shape(value: Any, name: str, max_elements: int) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise ClientError(f"input {name!r}: 'shape' must be a list of non-negative integers")
    if len(value) > MAX_DIMS:
        raise ClientError(f"input {name!r}: {len(value)} dimensions is over the cap of {MAX_DIMS}")
    for d in value:
        if type(d) is not int or d < 0:  # bool is not an int here
            raise ClientError(f"input {name!r}: 'shape' must be a list of non-negative integers")
        if d > max_elements:  # also a zero-size tensor: [0, 2**63] must not reach numpy
            raise ClientError(f"input {name!r}: dimension {d} is over the cap of {max_elements}", 413)
    count = math.prod(value)
    if count > max_elements:
        raise ClientError(f"input {name!r}: {count} elements is over the cap of {max_elements}", 413)
    return tuple(value)


def _shape_and_count(value: Any, name: str, max_elements: int) -> tuple[tuple[int, ...], int]:
    """``_shape`` and its element count; one or two small dimensions (batch-1 requests) are
    checked inline, giving what ``_shape`` gives, and anything else goes through it."""
    if type(value) is list and 0 < len(value) <= 2 and all(type(d) is int and 0 <= d <= max_elements for d in value):
        count = value[0] * value[1] if len(value) == 2 else value[0]
        if count <= max_elements:
            return tuple(value), count
    shape = _shape(value, name, max_elements)
    return shape, math.prod(shape)


def _flatten(data: Any, name: str, max_depth: int) -> list[Any]:
    """Row-major values of a flat or nested list (only the count is checked against the
    shape); a list mixing lists and values at one level is refused. No recursion."""
    if not isinstance(data, list):
        raise ClientError(f"input {name!r}: 'data' must be a list")
    level: list[Any] = data
    for _ in range(max_depth + 1):
        if not level or not isinstance(level[0], list):
            return level  # a list further on is refused by numpy or the BYTES check
        if not all(isinstance(x, list) for x in level):
            raise ClientError(f"input {name!r}: 'data' mixes lists and values at one level")
        level = [x for row in level for x in row]
    raise ClientError(f"input {name!r}: 'data' is nested deeper than its shape")


def parse_request(body: bytes, header_length: int | None, max_elements: int) -> InferRequest:
    if header_length is not None:
        if header_length < 0 or header_length > len(body):
            raise ClientError(f"Inference-Header-Content-Length {header_length} is past the body ({len(body)} bytes)")
        head, binary = body[:header_length], body[header_length:]
    else:
        head, binary = body, b""
    doc = loads(head)
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list) or not doc["inputs"]:
        raise ClientError("request needs a non-empty 'inputs' list")
    params = doc.get("parameters") or {}
    if not isinstance(params, dict):
        raise ClientError("'parameters' must be an object")
    plain = _plain_inputs(doc["inputs"], max_elements)
    inputs: dict[str, np.ndarray] = {} if plain is None else plain
    pos = 0
    for item in doc["inputs"] if plain is None else ():
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ClientError("each input needs a 'name'")
        name = item["name"]
        if name in inputs:
            raise ClientError(f"input {name!r} appears twice")
        datatype = item.get("datatype")
        if not isinstance(datatype, str) or datatype not in DATATYPES:
            raise ClientError(f"input {name!r}: datatype {datatype!r} is not a v2 datatype")
        shape, count = _shape_and_count(item.get("shape"), name, max_elements)
        iparams = item.get("parameters") or {}
        size = iparams.get("binary_data_size") if isinstance(iparams, dict) else None
        if size is not None:
            if type(size) is not int or size < 0 or pos + size > len(binary):
                raise ClientError(f"input {name!r}: binary_data_size {size!r} runs past the body")
            chunk = binary[pos : pos + size]
            pos += size
            if datatype == "BYTES":
                arr = _bytes_from_binary(chunk, count, name)
            else:
                dtype = np.dtype(DATATYPES[datatype])
                if size != count * dtype.itemsize:
                    raise ClientError(f"input {name!r}: {size} bytes do not hold {count} {datatype} values")
                arr = np.frombuffer(chunk, dtype=dtype).copy()
        else:
            if "data" not in item:
                raise ClientError(f"input {name!r} has neither 'data' nor binary_data_size")
            data = item["data"]
            # a flat list (what clients send for [1, k] and [n] tensors) is its own row-major order
            flat = (
                data if type(data) is list and data and type(data[0]) is not list else _flatten(data, name, len(shape))
            )
            if len(flat) != count:
                raise ClientError(f"input {name!r}: shape {list(shape)} needs {count} values, got {len(flat)}")
            arr = _json_array(flat, datatype, name)
        inputs[name] = arr.reshape(shape)
    if pos != len(binary):
        raise ClientError(f"{len(binary) - pos} bytes of binary data are not claimed by any input")
    outputs = doc.get("outputs")
    if outputs is not None and (
        not isinstance(outputs, list)
        or not all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs)
    ):
        raise ClientError("'outputs' must be a list of objects with a 'name'")
    for o in outputs or ():
        oparams = o.get("parameters")
        if oparams is not None and not isinstance(oparams, dict):
            raise ClientError(f"output {o['name']!r}: 'parameters' must be an object")
        if oparams:
            _flag(oparams, "binary_data", f"output {o['name']!r}: ")
    rid = doc.get("id")
    if rid is not None and not isinstance(rid, str):
        raise ClientError("'id' must be a string")
    return InferRequest(
        rid,
        inputs,
        params,
        outputs,
        _flag(params, "binary_data_output", "") or False,
        list(map(itemgetter("name"), doc["inputs"])),
    )


def _flag(params: dict[str, Any], key: str, where: str) -> bool | None:
    """A boolean parameter: true/false only (the string "false" is not taken as true)."""
    value = params.get(key)
    if value is not None and not isinstance(value, bool):
        raise ClientError(f"{where}parameter {key!r} must be true or false, got {type(value).__name__}")
    return value


def check_outputs(request: InferRequest, names: list[str]) -> None:
    """Refuse unknown requested outputs before the model runs (so the counters stay put)."""
    for spec in request.outputs or ():
        if spec["name"] not in names:
            raise ClientError(f"unknown output {spec['name']!r}; outputs are {names}")


def _json_array(flat: list[Any], datatype: str, name: str) -> np.ndarray:
    plain = _plain_array(flat, datatype)
    return plain if plain is not None else _checked_array(flat, datatype, name)


def _checked_array(flat: list[Any], datatype: str, name: str) -> np.ndarray:
    try:
        guess = np.array(flat)  # one pass in C tells what the values are
    except (ValueError, TypeError, OverflowError, RecursionError):
        raise ClientError(f"input {name!r}: 'data' values are not all of one kind") from None
    kind = guess.dtype.kind if flat else ""
    if datatype == "BYTES":
        if flat and (kind != "U" or not all(type(v) is str for v in flat)):
            raise ClientError(f"input {name!r}: BYTES data must be strings")
        return np.array(flat, dtype=object)
    if datatype == "BOOL":
        if flat and kind != "b":
            raise ClientError(f"input {name!r}: BOOL data must be true/false")
        return guess.astype(np.bool_)
    if flat and kind not in "iuf":  # strings, booleans, nested objects
        raise ClientError(f"input {name!r}: {datatype} data must be numbers")
    try:
        with np.errstate(over="raise", invalid="raise"):
            target = np.dtype(DATATYPES[datatype])
            out = guess.astype(target)
            if target.kind in "iu" and kind == "f" and not np.array_equal(out, guess):
                raise ValueError("fractional values for an integer tensor")
            if target.kind in "iu" and kind in "iu" and not np.array_equal(out.astype(guess.dtype), guess):
                raise OverflowError("out of range")
            return out
    except (OverflowError, FloatingPointError, ValueError):
        raise ClientError(f"input {name!r}: values do not fit {datatype}") from None


def _binary_bytes(arr: np.ndarray) -> bytes:
    if arr.dtype == object or arr.dtype.kind in "US":
        parts = []
        for v in arr.reshape(-1).tolist():
            b = v if isinstance(v, bytes) else str(v).encode()
            parts.append(struct.pack("<I", len(b)) + b)
        return b"".join(parts)
    return np.ascontiguousarray(arr).tobytes()


V2_OF_DTYPE = {np.dtype(dt): name for name, dt in DATATYPES.items() if name != "BYTES"}


def v2_datatype(arr: np.ndarray) -> str:
    if arr.dtype.kind in "OUS":  # object (kind O) or numpy strings
        return "BYTES"
    name = V2_OF_DTYPE.get(arr.dtype)
    if name is None:
        raise ClientError(f"cannot encode dtype {arr.dtype}", 500)
    return name


def encode_response(
    model: str, rid: str, outputs: dict[str, np.ndarray], request: InferRequest
) -> tuple[bytes, int | None]:
    """Body and, when any output is binary, the JSON header's length."""
    if request.outputs is None and not request.binary_outputs_default:  # every output, as JSON (the loop's entries)
        items = []
        for n, a in outputs.items():  # a loop, not a comprehension: no frame per request
            data = a.reshape(-1).tolist()
            items.append({"name": n, "datatype": v2_datatype(a), "shape": list(a.shape), "data": data})
        return compact_json({"model_name": model, "model_version": "1", "id": rid, "outputs": items}).encode(), None
    wanted = request.outputs or [{"name": n} for n in outputs]
    items, blobs = [], []
    for spec in wanted:
        name = spec["name"]
        if name not in outputs:
            raise ClientError(f"unknown output {name!r}; outputs are {list(outputs)}")
        arr = outputs[name]
        oparams = spec.get("parameters") or {}
        flag = oparams.get("binary_data") if isinstance(oparams, dict) else None
        binary = request.binary_outputs_default if flag is None else flag
        entry: dict[str, Any] = {"name": name, "datatype": v2_datatype(arr), "shape": list(arr.shape)}
        if binary:
            blob = _binary_bytes(arr)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = arr.reshape(-1).tolist()
        items.append(entry)
    head = compact_json({"model_name": model, "model_version": "1", "id": rid, "outputs": items}).encode()
    if blobs:
        return head + b"".join(blobs), len(head)
    return head, None
