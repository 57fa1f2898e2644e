"""A verdict on a dynamic-int8 model says which batch size it holds for.

Dynamic quantisation sets each call's activation scale from that call's rows, so a row's
decision depends on the rows scored with it: a PASS at 65,536-row calls says nothing about a
device scoring one row at a time. The model is trained here (scikit-learn MLP -> skl2onnx),
quantised by edgefair and, as an independent oracle, by onnxruntime's own quantize_dynamic.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import edgefair
from edgefair.modelio.safety import op_types
from edgefair.report.document import verify_document
from tests.conftest import run_cli
from tests.models import sklearn_onnx


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, Path]:
    from onnxruntime.quantization import quantize_dynamic
    from sklearn.neural_network import MLPClassifier

    out = tmp_path_factory.mktemp("batchnote")
    rng = np.random.default_rng(3)
    x = rng.normal(size=(1500, 3)).astype(np.float32)
    y = (x[:, 0] - x[:, 1] + rng.normal(0, 0.5, 1500) > 0).astype(np.int64)
    mlp = MLPClassifier(hidden_layer_sizes=(256, 128), max_iter=200, random_state=0).fit(x, y)
    ref = out / "mlp.onnx"
    ref.write_bytes(sklearn_onnx(mlp, x))
    ours = out / "mlp.int8.onnx"
    converted = edgefair.convert.convert_file(
        str(ref),
        edgefair.convert.ConvertOptions(
            quantize=edgefair.convert.QuantizeOptions(mode=edgefair.convert.QuantMode.DYNAMIC_INT8)
        ),
    )
    edgefair.convert.save_model(converted.model, str(ours))
    theirs = out / "mlp.ort_dynamic.onnx"
    quantize_dynamic(str(ref), str(theirs))
    csv = out / "data.csv"
    group = np.where(rng.random(1500) < 0.5, "a", "b")
    lines = ["f0,f1,f2,y,g"] + [f"{r[0]},{r[1]},{r[2]},{t},{s}" for r, t, s in zip(x.tolist(), y, group, strict=True)]
    csv.write_text("\n".join(lines) + "\n")
    return ref, ours, theirs, csv


def verify(ref: Path, cand: Path, csv: Path, batch_size: int | None = None) -> dict:
    report = edgefair.verify(
        str(ref),
        str(cand),
        str(csv),
        label="y",
        sensitive=["g"],
        feature_columns=["f0", "f1", "f2"],
        batch_size=batch_size,
    )
    return verify_document(report)


def test_dynamic_int8_candidates_say_the_batch_size_their_verdict_holds_for(models: tuple[Path, ...]) -> None:
    ref, ours, theirs, csv = models
    assert "DynamicQuantizeLinear" in (op_types(theirs.read_bytes()) or ())  # the oracle's graph
    for cand in (ours, theirs):
        doc = verify(ref, cand, csv)
        assert doc["candidate"]["batch_dependent"] is True and "batch_dependent" not in doc["reference"]
        note = doc["summary"]["batch_note"]
        assert str(cand) in note and "65,536" in note and "--batch-size as deployed" in note
        one = verify(ref, cand, csv, batch_size=1)["summary"]["batch_note"]
        assert "calls of 1 row (--batch-size)" in one
    plain = verify(ref, ref, csv)  # float32 against itself: nothing depends on the batch
    assert "batch_note" not in plain["summary"] and "batch_dependent" not in plain["candidate"]
    swapped = verify(theirs, ref, csv)  # the reference's own batch dependence is named too
    assert str(theirs) in swapped["summary"]["batch_note"]


def test_the_note_is_in_the_schema_the_terminal_and_markdown(models: tuple[Path, ...], tmp_path: Path) -> None:
    import jsonschema

    ref, ours, _, csv = models
    out = tmp_path / "r.json"
    md = tmp_path / "r.md"
    args = ["verify", str(ref), str(ours), "--data", str(csv), "--label", "y", "--sensitive", "g"]
    page = tmp_path / "r.html"
    result = run_cli(*args, "--features", "f0,f1,f2", "--json", str(out), "--markdown", str(md), "--html", str(page))
    assert result.returncode in (0, 1, 3), result.stderr
    assert "batch size: " in result.stdout and "quantises activations per call" in result.stdout
    doc = json.loads(out.read_text())
    jsonschema.validate(
        doc, json.loads(Path(edgefair.__file__).with_name("report").joinpath("schema.json").read_text())
    )
    assert "**Batch size:**" in md.read_text() and "<b>Batch size:</b>" in page.read_text()


def test_compare_rows_carry_the_note_for_the_dynamic_candidates_only(models: tuple[Path, ...], tmp_path: Path) -> None:
    """What ``edgefair demo`` and ``compare`` print: the note beside each dynamic-int8 row, not the float one's."""
    ref, ours, theirs, csv = models
    md = tmp_path / "c.md"
    html = tmp_path / "c.html"
    args = ["compare", str(ref), str(ref), str(ours), str(theirs), "--data", str(csv), "--label", "y"]
    result = run_cli(*args, "--sensitive", "g", "--features", "f0,f1,f2", "--markdown", str(md), "--html", str(html))
    assert result.returncode in (0, 1, 3), result.stderr
    noted = [line for line in result.stdout.splitlines() if "batch size: " in line]
    assert len(noted) == 2, result.stdout
    assert any(f"{ours.name}: batch size" in line for line in noted)
    assert any(f"{theirs.name}: batch size" in line for line in noted)
    marked = [line for line in md.read_text().splitlines() if "**Batch size:**" in line]
    assert len(marked) == 2 and not any(f"`{ref}`:" in line for line in marked)
    page = html.read_text()  # the verdict list and each candidate's section
    assert page.count("batch size: ") == 2 and page.count("<b>Batch size:</b>") == 2
