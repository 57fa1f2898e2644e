"""Shared fixtures: the bundled data, tiny models built in place, a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import Phase, settings

# tools/mutation.py runs with --hypothesis-profile=mutation: the same examples every run, no example
# database, and no shrinking (a failure is a kill; shrinking it only costs time)
settings.register_profile("mutation", derandomize=True, database=None, deadline=None, phases=[Phase.generate])

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "edgefair" / "demo" / "models"


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the real ``edgefair`` entry point in a subprocess."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run(
        [sys.executable, "-m", "edgefair", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        env=env,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    err = proc.stderr.strip()
    assert "Traceback" not in err, err
    assert len(err.splitlines()) == 1, err
    for f in fragments:
        assert f in err, (f, err)


@pytest.fixture(scope="session")
def adult_test():
    from edgefair.data import load_adult

    return load_adult("test")


def exchange(port: int, raw: bytes, step: int | None = None) -> bytes:
    """Send ``raw`` to 127.0.0.1:``port`` (whole, or ``step`` bytes at a time), half-close, and
    read until the server closes; the answer with its random request ids masked."""
    import re
    import socket
    import time

    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(0, len(raw), step or len(raw) or 1):
            sock.sendall(raw[i : i + (step or len(raw))])
            if step:
                time.sleep(0.002)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while block := sock.recv(65536):
            chunks.append(block)
    return re.sub(rb'"id":"[0-9a-f]{32}"', b'"id":"-"', b"".join(chunks))
