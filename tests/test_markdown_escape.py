"""Markdown reports show data-derived strings (group names, column names, paths) as text:
rendered by an independent CommonMark + GFM-table renderer (markdown-it-py), a hostile group
name makes no HTML element, every table row keeps its cells, and the name reads as itself."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import onnx
import pytest

from edgefair import convert as conv
from edgefair.convert.quantize import QuantizeOptions
from tests import models
from tests.test_cli_bad_input import run_main

HOSTILE = ["<img src=x onerror=alert(1)>", '"><script>alert(2)</script>', "a|b", "**x** _y_ [l](u) `c`"]


class Rendered(HTMLParser):
    """Elements, table rows (the text of each cell) and the text of rendered HTML."""

    def __init__(self, markup: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.rows: list[list[str]] = []
        self.text: list[str] = []
        self.in_cell = False
        self.feed(markup)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self.rows[-1].append("")
            self.in_cell = True

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th"):
            self.in_cell = False

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self.in_cell:
            self.rows[-1][-1] += data


def render(markdown: str) -> Rendered:
    from markdown_it import MarkdownIt

    return Rendered(MarkdownIt("commonmark").enable("table").render(markdown))  # raw HTML passes through


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("md")
    ref = models.mlp(hidden=32)
    onnx.save(ref, out / "ref.onnx")
    rng = np.random.default_rng(2)
    x = rng.normal(size=(800, 4))
    cand = conv.convert(ref, conv.ConvertOptions(quantize=QuantizeOptions(), allow_larger=True)).model
    cand_path = out / "c|and`x.onnx"
    onnx.save(cand, cand_path)
    y = (x[:, 0] - x[:, 1] > 0).astype(int)
    with (out / "d.csv").open("w") as f:
        f.write("f0,f1,f2,f3,y,grp|col\n")
        for i, row in enumerate(x):
            name = HOSTILE[i % len(HOSTILE)].replace('"', '""')
            f.write(",".join(f"{v:.6g}" for v in row) + f',{y[i]},"{name}"\n')
    md = out / "r.md"
    o = run_main("verify", str(out / "ref.onnx"), str(cand_path), "--data", str(out / "d.csv"), "--label", "y",
                 "--sensitive", "grp|col", "--features", "f0:f3", "--markdown", str(md))  # fmt: skip
    assert o.code in (0, 1, 3), o.err
    o = run_main("compare", str(out / "ref.onnx"), str(cand_path), "--data", str(out / "d.csv"), "--label", "y",
                 "--sensitive", "grp|col", "--features", "f0:f3", "--markdown", str(out / "c.md"))  # fmt: skip
    assert o.code in (0, 1, 3), o.err
    return md


def test_hostile_group_names_make_no_html_element(report):
    page = render(report.read_text())
    assert not {"img", "script", "a", "em"} & set(page.tags), page.tags  # (the report's own labels are bold)


def test_every_table_row_keeps_its_cells(report):
    """GFM drops a row's extra cells: a split cell shows as a row whose cells moved left."""
    page = render(report.read_text())
    assert page.tags.count("table") == 2, page.tags
    checks = [r for r in page.rows if len(r) == 7 and r[0] != "verdict"]
    groups = [r for r in page.rows if len(r) == 6 and r[0] != "group"]
    assert len(checks) >= 5 and len(groups) == len(HOSTILE), page.rows
    for row in checks:
        assert row[2] == "overall" or row[2].startswith("grp|col"), row
        assert row[2] == "overall" or row[2] == "grp|col" or row[2].split(" / ", 1)[1] in HOSTILE, row
        float(row[5])  # the tolerance column holds the tolerance
    assert sorted(r[0] for r in groups) == sorted(HOSTILE) and {r[1] for r in groups} == {"200"}, groups


def test_the_names_read_as_themselves(report):
    shown = "".join(render(report.read_text()).text)
    for name in HOSTILE:
        assert name in shown, (name, shown[:2000])
    assert "grp|col" in shown and "c|and`x.onnx" in shown


def test_compare_keeps_a_path_with_a_pipe_and_a_backtick_in_its_cell(report):
    page = render((report.parent / "c.md").read_text())
    body = [r for r in page.rows if r and r[0] != "candidate"]
    assert len(body) == 1 and body[0][0] == str(report.parent / "c|and`x.onnx"), page.rows
    assert body[0][-1].split()[-1] in ("pass", "fail", "inconclusive"), body  # the verdict stayed in its column
