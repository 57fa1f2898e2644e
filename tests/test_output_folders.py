"""Every command that writes a file the user named refuses one whose folder does not exist
(one line, exit 2) and creates no folder: a typo in a path must not build a tree of folders.
The oracle is the file system itself: after each run, the missing folder is still missing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from edgefair.core import tables
from edgefair.errors import InputError
from edgefair.files import refuse_missing_folders
from edgefair.runtime.privacy import private_export
from edgefair.runtime.store import CounterStore
from tests import models
from tests.test_cli_bad_input import one_line, run_main


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("folders")
    onnx.save(models.mlp(), out / "m.onnx")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 4))
    with (out / "d.csv").open("w") as f:
        f.write("f0,f1,f2,f3,y,g\n")
        for i, row in enumerate(x):
            f.write(",".join(f"{v:.6g}" for v in row) + f",{int(row[0] > 0)},{'ab'[i % 2]}\n")
    n = 200
    table = tables.from_arrays(
        {"g": rng.choice(["a", "b"], n)}, rng.integers(0, 2, n), y_true=rng.integers(0, 2, n), bins=4
    )
    store = CounterStore(out / "s.db", ("g",), 4)
    store.flush(table)
    store.close()
    (out / "e.json").write_text(json.dumps(private_export(table, min_cell=11)))
    return {"model": out / "m.onnx", "data": out / "d.csv", "store": out / "s.db", "export": out / "e.json"}


def _commands(i: dict[str, Path], target: Path) -> dict[str, list[str]]:
    m, d = str(i["model"]), str(i["data"])
    verify = ["verify", m, m, "--data", d, "--label", "y", "--sensitive", "g", "--features", "f0:f3"]
    return {
        "convert": ["convert", m, "-o", str(target / "x.onnx"), "--quantize", "dynamic", "--allow-larger"],
        "export": ["export", m, "-o", str(target / "x.onnx")],
        "verify --json": [*verify, "--json", str(target / "r.json")],
        "verify --markdown": [*verify, "--markdown", str(target / "r.md")],
        "verify --html": [*verify, "--html", str(target / "r.html")],
        "counters export": ["counters", "export", str(i["store"]), "-o", str(target / "e.json")],
        "counters merge": ["counters", "merge", str(i["export"]), "-o", str(target / "f.json")],
        "bundle build": ["bundle", "build", m, "-o", str(target / "bundle"), "--sensitive", "g"],
        "tune": ["tune", m, "--data", d, "--label", "y", "--sensitive", "g", "-o", str(target / "tuned")],
    }


@pytest.mark.parametrize(
    "command",
    [
        "convert",
        "export",
        "verify --json",
        "verify --markdown",
        "verify --html",
        "counters export",
        "counters merge",
        "bundle build",
        "tune",
    ],
)
def test_an_output_in_a_missing_folder_is_refused_and_no_folder_is_made(inputs, tmp_path, command):
    missing = tmp_path / "no" / "such"
    one_line(run_main(*_commands(inputs, missing)[command]), f"{missing}: no such folder (create it first)")
    assert not (tmp_path / "no").exists()


def test_card_in_a_missing_folder_is_refused(inputs, tmp_path):
    bundle = tmp_path / "b"
    o = run_main("bundle", "build", str(inputs["model"]), "-o", str(bundle), "--sensitive", "g")
    assert o.code == 0, o.err
    missing = tmp_path / "no" / "such"
    one_line(run_main("card", str(bundle), "-o", str(missing / "card.md")), f"{missing}: no such folder")
    assert not (tmp_path / "no").exists()


def test_an_existing_folder_is_written_into(inputs, tmp_path):
    """The refusal is about the folder: into an existing one the same command writes."""
    target = tmp_path / "here"
    target.mkdir()
    o = run_main(*_commands(inputs, target)["counters merge"])
    assert o.code == 0, o.err
    assert (target / "f.json").is_file()


def test_a_file_where_the_folder_should_be_is_named_as_such(tmp_path):
    (tmp_path / "plain").write_text("x")
    with pytest.raises(InputError, match="plain: not a folder"):
        refuse_missing_folders([tmp_path / "plain" / "out.json"])
