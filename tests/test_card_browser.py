"""The model card in a real browser (slow: installs Debian's chromium through
scripts/ensure-tools.sh on first use, about a minute). Headless Chromium renders the HTML
card of a certified bundle: the DOM it builds holds every check's estimate and interval from
the certificate, and the screenshot is a page with content, not a blank or an error page.

    .venv/bin/python -m pytest -m slow tests/test_card_browser.py"""

from __future__ import annotations

import subprocess
import zlib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgefair.cli import app as cli_app
from tests.test_card import bundle  # noqa: F401  (the module fixture: a certified demo bundle)

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _chromium() -> str:
    proc = subprocess.run(
        ["sh", str(ROOT / "scripts" / "ensure-tools.sh"), "chromium:chromium"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, f"could not install Debian's chromium: {proc.stderr.strip()}"
    return proc.stdout.split(":", 1)[1].split()[0]


def _png_rows(png: bytes) -> tuple[int, int, bytes]:
    """Width, height and the decompressed scanlines of a PNG (enough to tell blank from not)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, data, width, height = 8, b"", 0, 0
    while pos < len(png):
        length = int.from_bytes(png[pos : pos + 4], "big")
        kind, body = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height = int.from_bytes(body[:4], "big"), int.from_bytes(body[4:8], "big")
        elif kind == b"IDAT":
            data += body
        pos += 12 + length
    return width, height, zlib.decompress(data)


def test_the_card_renders_in_headless_chromium(bundle, tmp_path):  # noqa: F811
    path, about, cert = bundle
    card = tmp_path / "card.html"
    result = CliRunner().invoke(cli_app, ["card", str(path), "--about", str(about), "-o", str(card)])
    assert result.exit_code == 0, result.output
    chromium = _chromium()
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", f"--user-data-dir={tmp_path / 'p'}"]
    url = card.resolve().as_uri()
    dom = subprocess.run([chromium, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0 and "<h2" in dom.stdout, dom.stderr[-500:]
    for check in cert["checks"]:  # the browser's DOM, not our string, holds each number
        assert f"{check['estimate']:+.4f}" in dom.stdout, check
    shot = tmp_path / "card.png"
    proc = subprocess.run(
        [chromium, *flags, "--window-size=1200,1600", f"--screenshot={shot}", url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and shot.exists(), proc.stderr[-500:]
    width, height, rows = _png_rows(shot.read_bytes())
    assert (width, height) == (1200, 1600)
    assert len(set(rows)) > 16, "the screenshot is (nearly) one colour: nothing was rendered"
