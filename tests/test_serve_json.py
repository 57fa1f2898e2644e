"""The server's JSON reader (orjson first, from the server extra) reads what the stdlib reads.

Every body, hand-made edge cases and random documents (floats written with many digits,
integers of every length, escapes, unicode, control characters, nesting, white space), is
read by ``protocol.loads`` and by the stdlib's reader alone: the same value (by repr, so NaN
and -0.0 count) or the same refusal. orjson must have read most of them (it is the fast path).
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from edgefair.serve import protocol as v2

orjson = pytest.importorskip("orjson")

EDGES = [
    b'{"a":1,"a":2}',
    b"[1e400]",
    b"[-1e400]",
    b"[-0.0]",
    b"[-0]",
    b"[18446744073709551616]",
    b"[-9223372036854775809]",
    b"[9223372036854775807]",
    b"[12345678901234567890.5]",
    b"[NaN]",
    b"[Infinity]",
    b'["\\ud800"]',
    '{"a":1}'.encode("utf-16"),
    b'\xef\xbb\xbf{"a":1}',
    b"[" * 3000 + b"]" * 3000,
    b"[5e-324]",
    b"[2.4e-324]",
    b'["\\u0000"]',
    b'["a\tb"]',
    b'["\xff"]',
    b'"\\ud83d\\ude00"',
    b'{"a":1}x',
    b"",
    b"   ",
    b"[1,]",
    b"{'a':1}",
    b"[01]",
    b"[1.]",
    b"[.5]",
    b"[+1]",
    b"[1e5]",
    b"[true,false,null]",
    b"[TRUE]",
]


def outcome(body: bytes) -> tuple[str, str]:
    try:
        return ("ok", repr(v2.loads(body)))
    except v2.ClientError as exc:
        return ("refused", str(exc))


def random_value(rng: random.Random, depth: int) -> str:
    kind = rng.randrange(8 if depth < 4 else 5)
    if kind == 0:  # an integer of 1 to 25 digits
        return (
            rng.choice(["", "-"]) + str(rng.randrange(1, 10)) + "".join(rng.choices("0123456789", k=rng.randrange(25)))
        )
    if kind == 1:  # a float with many digits and an exponent
        digits = "".join(rng.choices("0123456789", k=rng.randrange(1, 22)))
        return f"{rng.choice(['', '-'])}{rng.randrange(10)}.{digits}e{rng.randrange(-330, 330)}"
    if kind == 2:
        return repr(rng.uniform(-1e6, 1e6))
    if kind == 3:  # escapes, unicode, a raw control character now and then
        chars = ["a", "é", "\\n", "\\u00e9", "\\ud83d\\ude00", '\\"', "\\\\", "\\/", "\u2028", "\x01", "😀"]
        return '"' + "".join(rng.choices(chars, k=rng.randrange(6))) + '"'
    if kind == 4:
        return rng.choice(["true", "false", "null"])
    if kind == 5:
        return "[" + ", ".join(random_value(rng, depth + 1) for _ in range(rng.randrange(4))) + "]"
    keys = ['"a"', '"b"', '"a"', '"\\u0061"']  # duplicates too: the last wins in both
    pairs = [f"{rng.choice(keys)} : {random_value(rng, depth + 1)}" for _ in range(rng.randrange(4))]
    return "{" + ",".join(pairs) + "}"


def test_the_c_reader_reads_what_the_stdlib_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(11)
    bodies = EDGES + [random_value(rng, 0).encode() for _ in range(3000)]
    read_by_orjson = 0
    real = v2._c_loads
    assert real is not None  # the server extra is installed with the dev extra

    def counting(body: bytes) -> Any:
        nonlocal read_by_orjson
        value = real(body)
        read_by_orjson += 1
        return value

    fast, slow = [], []
    monkeypatch.setattr(v2, "_c_loads", counting)
    fast = [outcome(b) for b in bodies]
    monkeypatch.setattr(v2, "_c_loads", None)
    slow = [outcome(b) for b in bodies]
    for body, a, b in zip(bodies, fast, slow, strict=True):
        assert a == b, body[:200]
    assert read_by_orjson > 1500, read_by_orjson
    assert sum(o[0] == "refused" for o in slow) > 20  # refusals are compared too


def test_a_request_with_a_long_integer_keeps_it_an_integer() -> None:
    """orjson would read 2**64 as a float, which an FP64 input would take as 1.8e19; read as the
    stdlib's int it is refused, as it always was."""
    for datatype in ("FP64", "INT64"):
        doc = {"inputs": [{"name": "x", "datatype": datatype, "shape": [1, 1], "data": [2**64]}]}
        with pytest.raises(v2.ClientError, match=f"{datatype} data must be numbers"):
            v2.parse_request(json.dumps(doc).encode(), None, 64)
