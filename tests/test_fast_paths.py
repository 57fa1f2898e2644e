"""Every fast path against its fallback (and an independent oracle where there is one):
pyarrow's CSV reader vs the csv module, hash-based factorisation vs a dict of first
appearances, httptools vs the pure-Python HTTP parser."""

from __future__ import annotations

import gzip
import hashlib
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgefair import data
from edgefair.errors import InputError
from tests.conftest import exchange

pytest.importorskip("pyarrow")

# -- CSV ---------------------------------------------------------------------------------


def read_all(path: Path, reader: str, columns: list[str] | None = None, chunk_rows: int = 3) -> Any:
    """Chunks as plain values (or the error message), and the hash the reader reported."""
    seen: list[str] = []
    try:
        chunks = [
            (c.first_line, {k: v.tolist() for k, v in c.columns.items()}, [v.dtype for v in c.columns.values()])
            for c in data.iter_csv(path, columns, chunk_rows, on_done=seen.append, reader=reader)
        ]
    except InputError as exc:
        return ("error", str(exc)), seen
    return chunks, seen


AWKWARD = {
    "plain": b"a,b,c\n1,x,2\n3,y,4\n5,z,6\n7,w,8\n",
    "spaces": b"a, b ,c\n 1 , x  ,\t2\n3,y y,4 \n",
    "crlf": b"a,b,c\r\n1,x,2\r\n3,y,4\r\n",
    "bom": b"\xef\xbb\xbfa,b,c\n1,x,2\n",
    "no final newline": b"a,b,c\n1,x,2\n3,y,4",
    "missing values": b"a,b,c\n,,\n?,NA,nan\n1,,NaN\n",
    "quotes": b'a,b,c\n1,"x, with comma",2\n3,"say ""hi""",4\n',
    "quoted newline": b'a,b,c\n1,"two\nlines",2\n3,y,4\n5,z,6\n7,w,8\n9,v,0\n',
    "quoted header": b'"a","b ",c\n1,x,2\n',
    "blank lines": b"a,b,c\n1,x,2\n\n3,y,4\n\r\n5,z,6\n\n",
    "lone cr": b"a,b,c\r1,x,2\r3,y,4\r",
    "wrong width": b"a,b,c\n1,x,2\n3,y,4\n5,z\n7,w,8\n",
    "too wide late": b"a,b,c\n1,x,2\n3,y,4\n5,z,6\n7,w,8\n9,v,0,1\n",
    "not utf-8": b"a,b,c\n1,x,2\n3,\xff,4\n",
    "not utf-8 in an unread column": b"a,b,c\n1,x,2\n3,y,\xfe\n",
    "utf-8": "a,b,c\n1,Zoë,2\n3,東京,4\n5,\u00a0nbsp\u00a0,6\n".encode(),
    "unicode spaces": "a,b,c\n1,\u2003em\u2003,2\n3,\x1ffs\x1f,4\n5,\x0bvt,6\n".encode(),
    "nul": b"a,b,c\n1,x\x00,2\n",
    "header only": b"a,b,c\n",
    "header only, no newline": b"a,b,c",
    "empty": b"",
    "blank header": b"\n1,2\n",
    "duplicate header": b"a,b,a\n1,2,3\n",
    "quote mid field": b'a,b,c\n1,x"y,2\n3,"ab"c,4\n',
    "bom mid file": "a,b,c\n1,\ufeffx,2\n".encode(),
    "one column": b"a\n1\n2\n  \n3\n",
}


@pytest.mark.parametrize("name", sorted(AWKWARD))
@pytest.mark.parametrize("gz", [False, True], ids=["csv", "gz"])
def test_fast_and_python_readers_agree_on_awkward_files(tmp_path: Path, name: str, gz: bool) -> None:
    raw = gzip.compress(AWKWARD[name], mtime=0) if gz else AWKWARD[name]
    path = tmp_path / ("x.csv.gz" if gz else "x.csv")
    path.write_bytes(raw)
    for columns in (None, ["c", "a"]):
        fast, fast_hash = read_all(path, "arrow", columns)
        slow, slow_hash = read_all(path, "python", columns)
        assert fast == slow, name
        assert fast_hash == slow_hash
        if fast_hash:  # read to the end: the hash is the file's (oracle: hashlib over the bytes)
            assert fast_hash == [hashlib.sha256(raw).hexdigest()]


def test_plain_values_match_pandas_and_lines_are_right(tmp_path: Path) -> None:
    """Independent oracle: pandas' C reader (every value a string, stripped)."""
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(3)
    rows = 1000
    frame = {
        "age": rng.integers(17, 90, rows).astype(str),
        "race": rng.choice([" White", "Black ", " Asian-Pac-Islander "], rows),
        "score": np.round(rng.random(rows), 4).astype(str),
    }
    text = "age,race,score\n" + "".join(f"{a},{r},{s}\n" for a, r, s in zip(*frame.values(), strict=True))
    path = tmp_path / "plain.csv"
    path.write_text(text)
    oracle = pd.read_csv(path, dtype=str, keep_default_na=False)
    chunks = list(data.iter_csv(path, None, 128, reader="arrow"))
    assert [c.first_line for c in chunks] == list(range(2, rows + 2, 128))
    for name in frame:
        got = np.concatenate([c.columns[name] for c in chunks]).tolist()
        assert got == [v.strip() for v in oracle[name].tolist()]
    # the fast path ran: equal values share one string object within a chunk
    race = chunks[0].columns["race"]
    same = [i for i in range(1, len(race)) if race[i] == race[0]]
    assert same and all(race[i] is race[0] for i in same)


def test_random_csv_text_reads_the_same_with_both_readers(tmp_path: Path) -> None:
    """Random files from an alphabet of the characters that matter to CSV (quotes, commas,
    CR, LF, spaces, NUL, a BOM, non-ASCII): the two readers agree on every one, at chunk sizes
    that put boundaries everywhere."""
    rng = random.Random(14)
    pieces = ["ab", "1", ",", ",", ",", "\n", "\n", "\r\n", "\r", '"', " ", "\t", "é", "\x00", "\ufeff", "NA"]
    path = tmp_path / "r.csv"
    for i in range(300):
        header = ",".join(rng.sample(["a", "b", "c", " d"], rng.randint(1, 4)))
        body = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 60)))
        path.write_bytes((header + "\n" + body).encode())
        for chunk_rows in (1, 2, 5):
            assert read_all(path, "arrow", None, chunk_rows) == read_all(path, "python", None, chunk_rows), (i, body)


def test_reader_choice_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(b"a\n1\n")
    with pytest.raises(InputError, match="reader 'fast' is not one of auto, arrow, python"):
        list(data.iter_csv(path, reader="fast"))


# -- factorisation -----------------------------------------------------------------------


def dict_factorize(values: Any) -> tuple[list[int], list[str]]:
    """The definition: codes by first appearance through a dict (equal values, one code)."""
    index: dict[Any, int] = {}
    codes = [index.setdefault(v, len(index)) for v in np.asarray(values).tolist()]
    return codes, [str(v) for v in index]


NAN = float("nan")
FACTORIZE_CASES = {
    "objects": np.array(["b", "a", "b", "c"], dtype=object),
    "fixed-width": np.array(["b", "a", "b", "c", "é"]),
    "bytes": np.array([b"x", b"y", b"x"]),
    "mixed objects": np.array([1, "1", None, NAN, NAN, None, 2.0, 2, True, float("nan")], dtype=object),
    "equal strings, other objects": np.array(["".join(["a", "b"]) for _ in range(5)] + ["ab", "b"], dtype=object),
    "many, strided": np.array([f"x{i}" for i in np.random.default_rng(1).integers(0, 5000, 20000)], dtype=object)[::3],
    "wide integers": np.array([2**40, 5, 2**40, -3, 5]),
    "shared objects": np.array([f"g{i}" for i in range(100)], dtype=object)[np.arange(9999) * 7919 % 100],
    "one value": np.array(["same"] * 7, dtype=object),
    # 4000 long strings spread over megabytes: their addresses collide in a small table
    "many shared objects": np.array([f"v{i}" + "x" * 600 for i in range(4000)], dtype=object)[
        np.arange(20000) * 7 % 4000
    ],
}


@pytest.mark.parametrize("name", sorted(FACTORIZE_CASES))
def test_factorize_matches_a_dict_of_first_appearances(name: str) -> None:
    from edgefair.core.groups import factorize

    values = FACTORIZE_CASES[name]
    codes, uniques = factorize(values)
    expected_codes, expected_uniques = dict_factorize(values)
    assert codes.dtype == np.int64
    assert codes.tolist() == expected_codes
    assert uniques == expected_uniques


# -- text to numbers ---------------------------------------------------------------------


@pytest.mark.parametrize("shared", [True, False], ids=["one object per value", "an object per row"])
def test_text_as_float_converts_distinct_values_as_every_row_would(shared: bool) -> None:
    """Oracle: Python's float() on each stripped value, missing markers as NaN."""
    from edgefair.data.columns import text_as_float

    rng = np.random.default_rng(4)
    pool = ["1", " 2.5", "3e2 ", "NA", "?", "", "nan", " -0", "inf", "7"]
    picks = rng.integers(0, len(pool), 5000)
    values = np.array([pool[i] if shared else "".join(list(pool[i])) for i in picks], dtype=object)
    expected = [float("nan") if v.strip() in data.MISSING else float(v) for v in values.tolist()]
    got = text_as_float(values)
    np.testing.assert_array_equal(got, np.array(expected))
    np.testing.assert_array_equal(text_as_float(values.astype(str).reshape(-1, 1)), np.array(expected).reshape(-1, 1))
    with pytest.raises(ValueError):
        text_as_float(np.concatenate([values, np.array(["twelve"], dtype=object)]))
    mixed = np.array([1, True] * 50, dtype=object)  # 1 == True, but 'True' is not a number
    with pytest.raises(ValueError):
        text_as_float(mixed)


# -- Open Inference Protocol JSON tensors ------------------------------------------------


def test_plain_json_tensors_equal_the_checked_path() -> None:
    """The shortcut for plain values gives the checked path's array, dtype included; values
    the checked path refuses or could round differently never take the shortcut."""
    from edgefair.serve import protocol as v2

    rng = random.Random(7)
    shortcut: dict[str, int] = {}
    pool: list[Any] = [
        0, 1, -1, 7, 255, 256, -129, 2**24 - 1, 2**24, -(2**24), 2**31, 2**63 - 1, 2**63, -(2**63), 2**64,
        0.0, -0.0, 0.1, 1e-45, 1e-300, 3.3e38, 3.4e38, 3.40282356e38, 1e39, 1e300,
        float("inf"), float("nan"), True, False, "a", "", "é", None,
    ]  # fmt: skip
    for datatype in sorted(v2.DATATYPES):
        for _ in range(300):
            flat = [rng.choice(pool) for _ in range(rng.randint(1, 3))]
            plain = v2._plain_array(flat, datatype)
            try:
                checked = v2._checked_array(flat, datatype, "x")
            except v2.ClientError:
                assert plain is None, (datatype, flat)
                continue
            if plain is not None:
                shortcut[datatype] = shortcut.get(datatype, 0) + 1
                assert plain.dtype == checked.dtype, (datatype, flat)
                assert plain.tolist() == checked.tolist() or np.array_equal(plain, checked, equal_nan=True)
                if datatype != "BYTES":  # -0.0 stays -0.0
                    assert np.signbit(plain).tolist() == np.signbit(checked).tolist()
    assert all(shortcut.get(d, 0) > 3 for d in ("BYTES", "FP32", "FP64", "INT64", "UINT8")), shortcut


# -- the server on uvloop and on asyncio's loop ------------------------------------------


def test_the_server_answers_alike_on_both_event_loops(tmp_path: Path) -> None:
    """Same bytes in, same bytes out (ids aside) on uvloop and on asyncio's loop, for a good
    request and for each refusal of the HTTP layer (line, headers, length, body caps)."""
    pytest.importorskip("uvloop")
    from edgefair.bundling import build_bundle
    from edgefair.serve.server import ServeConfig, Server
    from tests.models import mlp

    onnx = pytest.importorskip("onnx")
    onnx.save(mlp(inputs=2), tmp_path / "b.onnx")
    bundle = build_bundle(tmp_path / "b.onnx", tmp_path / "b", sensitive=["group"])
    body = b'{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[0.5,1.5]}]}'
    infer = b"POST /v2/models/b/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    requests = [
        infer,
        infer.replace(b"HTTP/1.1\r\nHost", b"HTTP/1.1\nHost").replace(b"\r\n", b"\n"),  # bare LF
        b"GET /v2/health/live HTTP/1.1\r\nConnection: close\r\n\r\n",
        b"BAD LINE\r\n\r\n",
        b"GET / HTTP/2.0\r\n\r\n",
        b"GET /v2 HTTP/1.1\r\n Folded: x\r\n\r\n",
        b"GET /v2 HTTP/1.1\r\n" + b"X-Long: " + b"a" * 17000 + b"\r\n\r\n",
        b"GET /v2 HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(101)) + b"\r\n",
        b"POST /v2/models/b/infer HTTP/1.1\r\nContent-Length: 1_0\r\n\r\n",
        b"POST /v2/models/b/infer HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        b"POST /v2/models/b/infer HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST /v2/models/b/infer HTTP/1.1\r\nContent-Length: 99999\r\n\r\n",
        b"POST /v2/models/b/infer HTTP/1.1\r\nContent-Length: 3\r\n\r\n{x}",
    ]
    answers = {}
    for loop in ("uvloop", "asyncio"):
        server = Server(bundle, ServeConfig(port=0, max_body_bytes=4096), loop=loop).start()
        try:
            answers[loop] = [exchange(server.port, raw) for raw in requests]
        finally:
            server.stop()
    for raw, a, b in zip(requests, answers["uvloop"], answers["asyncio"], strict=True):
        assert a == b, raw[:60]
    statuses = [a.split(b"\r\n", 1)[0] for a in answers["asyncio"]]
    assert statuses[0] == b"HTTP/1.1 200 OK" and statuses[1] == b"HTTP/1.1 200 OK"
    refusals = [b"400", b"505", b"400", b"431", b"431", b"400", b"400", b"411", b"413", b"400"]
    assert [s.split()[1] for s in statuses[3:]] == refusals
