"""Bad input at scale, through the real CLI: a glob that matches nothing, Parquet files with
different schemas, a column missing in some partitions and a Dask scheduler that does not
answer each give one line naming the culprit and exit code 2, never a traceback or a hang.
(The library-level messages are pinned in tests/test_parquet.py and tests/test_distributed.py.)"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pyarrow")

from tests import models
from tests.test_cli_bad_input import one_line, run_main
from tests.test_parquet import LABEL, make_rows, write_parquet


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("scale-bad")
    import onnx

    rows = make_rows(400, seed=3)
    paths = []
    for seed in (1, 2):  # two small MLPs over age and hours (--features): no training needed
        path = folder / f"m{seed}.onnx"
        onnx.save(models.mlp(inputs=2, hidden=4, seed=seed), str(path))
        paths.append(str(path))
    return {"folder": folder, "rows": rows, "ref": paths[0], "cand": paths[1]}


def verify(setup: dict[str, Any], data: str, *extra: str) -> Any:
    return run_main(
        "verify", setup["ref"], setup["cand"], "--data", data, "--label", LABEL, "--sensitive", "sex,race", *extra
    )


def test_a_glob_that_matches_nothing(setup):
    pattern = str(setup["folder"] / "nothing-*.parquet")
    one_line(verify(setup, pattern), pattern, "no file matches this pattern")


def test_parquet_files_with_different_schemas(setup, tmp_path):
    half = {n: v[:200] for n, v in setup["rows"].items()}
    write_parquet(half, tmp_path / "1.parquet")
    write_parquet({**half, "race": half["race"].astype(str)}, tmp_path / "2.parquet")  # int64 here, text there
    one_line(verify(setup, str(tmp_path / "*.parquet")), "different schemas", "'race'", "2.parquet")


def test_a_column_missing_in_some_partitions(setup, tmp_path):
    half = {n: v[:200] for n, v in setup["rows"].items()}
    write_parquet(half, tmp_path / "part-0.parquet")
    write_parquet({n: v for n, v in half.items() if n != "hours"}, tmp_path / "part-1.parquet")
    one_line(verify(setup, str(tmp_path)), str(tmp_path / "part-1.parquet"), "'hours'")


def test_a_scheduler_that_does_not_answer(setup):
    pytest.importorskip("distributed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens once the socket is closed
    path = write_parquet(setup["rows"], Path(setup["folder"]) / "rows.parquet")
    t0 = time.monotonic()
    o = verify(setup, str(path), "--dask", f"tcp://127.0.0.1:{port}", "--dask-timeout", "1")
    one_line(o, f"tcp://127.0.0.1:{port}", "no Dask scheduler answered within 1 s")
    assert time.monotonic() - t0 < 30  # the timeout holds (the bound is loose: a loaded machine is slow)


def test_an_error_on_a_worker_is_one_line_from_the_real_cli(setup, tmp_path):
    """A task's EdgefairError comes back as one line; the LocalCluster's workers must not log
    it with a traceback to the terminal first (they did: 'distributed.worker - ERROR')."""
    import subprocess
    import sys

    pytest.importorskip("distributed")
    rows = {n: v.copy() for n, v in setup["rows"].items()}
    rows[LABEL][7] = 2  # not a binary label
    path = write_parquet(rows, tmp_path / "rows.parquet")
    cmd = [sys.executable, "-m", "edgefair", "verify", setup["ref"], setup["cand"], "--data", str(path)]
    cmd += ["--label", LABEL, "--sensitive", "sex,race", "--dask", "local:1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("edgefair: error:"), lines
    assert f"column '{LABEL}'" in lines[0] and "is not 0 or 1" in lines[0], lines
    assert "Traceback" not in proc.stderr and "distributed.worker" not in proc.stderr
