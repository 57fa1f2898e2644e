"""Not Adult, not our models: a generic 2-D input model, other columns, string labels."""

from __future__ import annotations

import json

import numpy as np
import onnx

import edgefair
from edgefair import convert as conv
from edgefair.convert.common import save_model
from edgefair.convert.quantize import QuantizeOptions, QuantMode
from tests import models
from tests.conftest import run_cli


def write_csv(path, rng, rows=3000):
    x = rng.normal(size=(rows, 4))
    region = rng.choice(["north", "south", "east"], rows)
    age_band = rng.choice(["<30", "30-60", ">60"], rows)
    outcome = np.where(x[:, 0] + 0.3 * rng.normal(size=rows) > 0, "yes", "no")
    lines = ["f0,f1,f2,f3,region,age_band,outcome"]
    lines += [
        f"{a:.5f},{b:.5f},{c:.5f},{d:.5f},{r},{g},{o}"
        for (a, b, c, d), r, g, o in zip(x, region, age_band, outcome, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")


def test_generic_single_input_model_on_other_data(tmp_path):
    rng = np.random.default_rng(4)
    ref_path = tmp_path / "ref.onnx"
    onnx.save(models.mlp(inputs=4, hidden=32, seed=2), ref_path)
    int8 = conv.convert(
        models.mlp(inputs=4, hidden=32, seed=2),
        conv.ConvertOptions(quantize=QuantizeOptions(mode=QuantMode.DYNAMIC_INT8), allow_larger=True),
    )
    cand_path = save_model(int8.model, tmp_path / "cand.onnx")
    csv = tmp_path / "data.csv"
    write_csv(csv, rng)
    report = edgefair.verify(
        ref_path,
        cand_path,
        csv,
        label="outcome",
        positive_label="yes",
        sensitive=["region", "age_band"],
        feature_columns=["f0", "f1", "f2", "f3"],
    )
    doc = edgefair.report.build(report).doc
    assert doc["data"]["rows"] == 3000 and set(doc["by_group"]) == {"region", "age_band", "region, age_band"}
    # the same through the CLI, features found as the non-label, non-sensitive columns
    proc = run_cli(
        "verify",
        str(ref_path),
        str(cand_path),
        "--data",
        str(csv),
        "--label",
        "outcome",
        "--positive-label",
        "yes",
        "--sensitive",
        "region,age_band",
        "--json",
        str(tmp_path / "r.json"),
    )
    assert proc.returncode in (0, 1), proc.stderr
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["by_group"]["region"]["reference"] == doc["by_group"]["region"]["reference"]


def test_label_only_model_is_supported(tmp_path):
    import onnx.parser

    model = onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 1] x) => (int64[N] label) {
      zero = Constant <value = float {0.0}> ()
      pos = Greater (x, zero)
      flat = Squeeze (pos)
      label = Cast <to = 7> (flat)
    }""")
    path = tmp_path / "label.onnx"
    onnx.save(model, path)
    csv = tmp_path / "d.csv"
    rng = np.random.default_rng(0)
    x = rng.normal(size=400)
    csv.write_text("x,g,y\n" + "".join(f"{v:.4f},{'a' if i % 2 else 'b'},{int(v > 0.1)}\n" for i, v in enumerate(x)))
    report = edgefair.verify(path, path, csv, label="y", sensitive=["g"])
    assert report.passed
    assert edgefair.report.build(report).doc["data"]["score_output"] == "label"
