"""Dask: a real LocalCluster of 2 worker processes gives the single-process report, byte for
byte (timestamps aside), also when a worker dies mid-run; batch-dependent models score in
the same batches; workers refuse model bytes whose SHA-256 is not the one named."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("pyarrow")
distributed_pkg = pytest.importorskip("distributed")

import edgefair  # noqa: E402
import edgefair.report  # noqa: E402
from edgefair import data, distributed  # noqa: E402
from edgefair.distributed import worker  # noqa: E402
from edgefair.errors import InputError, ModelError  # noqa: E402
from edgefair.verification import evaluate as ev  # noqa: E402
from tests import models  # noqa: E402
from tests.test_parquet import IGNORED, LABEL, SENSITIVE, make_rows, train_models, write_csv, write_parquet  # noqa: E402
from tools.compare_reports import differences  # noqa: E402

ROWS = 20_000
BATCH = 2048


@pytest.fixture(scope="module")
def client():
    with distributed.connect("local:2", timeout=60) as c:
        c.wait_for_workers(2, timeout=60)
        yield c


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dask")
    rows = make_rows(ROWS, seed=1)
    ref, cand = train_models(rows, folder)
    return {"rows": rows, "ref": ref, "cand": cand, "parquet": write_parquet(rows, folder / "rows.parquet", 2500)}


def single_doc(files: dict[str, Any]) -> dict[str, Any]:
    report = edgefair.verify(files["ref"], files["cand"], files["parquet"], label=LABEL, sensitive=list(SENSITIVE))
    return edgefair.report.build(report).doc


def dask_doc(files: dict[str, Any], client: Any, data_: Any = None, **kw: Any) -> dict[str, Any]:
    report = distributed.verify(
        files["ref"],
        files["cand"],
        files["parquet"] if data_ is None else data_,
        client=client,
        label=LABEL,
        sensitive=list(SENSITIVE),
        batch_size=BATCH,
        **kw,
    )
    return edgefair.report.build(report).doc


def canonical(doc: Any) -> str:
    """The document without what may differ between runs, at every depth (compare nests reports)."""

    def strip(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k not in IGNORED}
        return [strip(v) for v in x] if isinstance(x, list) else x

    return json.dumps(strip(doc), sort_keys=True)


def test_the_report_is_byte_identical_to_the_single_process_one(files, client):
    seen: list[int] = []
    single, dask = single_doc(files), dask_doc(files, client, progress=seen.append)
    assert differences(single, dask, "$", IGNORED) == []
    assert canonical(single) == canonical(dask)  # same bytes once the timestamp is set aside
    assert dask["data"]["rows"] == ROWS and sorted(seen) == [3616] + [4096] * 4  # 2 batches cover a row group
    assert dask["data"]["sha256"] == hashlib.sha256(files["parquet"].read_bytes()).hexdigest()
    sessions = client.run(lambda: sorted(worker.SESSIONS))  # one session per model per worker process
    assert all(set(s) >= {dask["reference"]["sha256"], dask["candidate"]["sha256"]} for s in sessions.values())


def test_compare_over_a_directory_matches_edgefair_compare(files, client, tmp_path):
    rows = files["rows"]
    for k, (a, b) in enumerate(((0, 7000), (7000, 7001), (7001, ROWS))):
        write_parquet({n: v[a:b] for n, v in rows.items()}, tmp_path / f"part-{k}.parquet", 3000)
    cands = [files["cand"], files["ref"]]
    kw: dict[str, Any] = {"label": LABEL, "sensitive": list(SENSITIVE), "measure_latency": False}
    single = edgefair.report.build(edgefair.compare(files["ref"], cands, tmp_path, **kw)).doc
    dask = distributed.compare(files["ref"], cands, str(tmp_path), client=client, batch_size=1000, **kw)
    assert canonical(single) == canonical(edgefair.report.build(dask).doc)


class KillOnce(distributed_pkg.WorkerPlugin):
    """Ends its worker process as soon as it has scored its first partition (once per run)."""

    def __init__(self, flag: str) -> None:
        self.flag = flag

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        if finish == "memory" and str(key).startswith("score_parquet_range"):
            try:
                os.close(os.open(self.flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return
            os._exit(1)  # the result just computed dies with the process


def test_a_worker_killed_mid_run_still_gives_the_identical_report(files, client, tmp_path):
    flag = tmp_path / "killed"
    before = set(client.scheduler_info()["workers"])
    client.register_plugin(KillOnce(str(flag)), name="kill-once")
    try:
        dask = dask_doc(files, client)
    finally:
        client.unregister_worker_plugin("kill-once")
    assert flag.exists()  # a worker did die, after scoring a partition
    assert canonical(dask) == canonical(single_doc(files))
    assert dask["data"]["rows"] == ROWS == sum(sum(g["counts"]) for g in dask["table"]["groups"])
    client.wait_for_workers(2, timeout=60)  # the nanny started a new one
    assert set(client.scheduler_info()["workers"]) != before


def test_workers_refuse_model_bytes_with_another_sha256(files, client):
    good = files["ref"].read_bytes()
    sha = hashlib.sha256(good).hexdigest()
    wrong = client.scatter(files["cand"].read_bytes(), broadcast=True)
    with pytest.raises(ModelError, match=f"expected {sha}: refusing to score with them"):
        client.submit(worker.session_for, wrong, sha, pure=False).result()
    right = client.scatter(good, broadcast=True)
    sig = client.submit(lambda b: worker.session_for(b, sha)[1], right, pure=False).result()
    assert [i.name for i in sig.inputs] == ["age", "hours", "job"]


def test_dynamic_int8_gives_identical_tables_when_batches_are_fixed(client, tmp_path):
    import onnx

    from edgefair.convert import QuantizeOptions, quantize
    from edgefair.convert.quantize import QuantMode

    fp32 = models.mlp(inputs=4, hidden=16, seed=3)
    int8 = quantize(fp32, QuantizeOptions(mode=QuantMode.DYNAMIC_INT8)).model
    ref, cand = tmp_path / "fp32.onnx", tmp_path / "int8.onnx"
    onnx.save(fp32, str(ref))
    onnx.save(int8, str(cand))
    rng = np.random.default_rng(7)
    n = 6000
    rows: dict[str, np.ndarray] = {f"f{i}": np.round(rng.normal(0, 1 + i, n), 4) for i in range(4)}
    rows["f0"][rng.random(n) < 0.01] *= 40  # outliers: a batch's activation range depends on its rows
    rows |= {"sex": rng.choice(["F", "M"], n), "race": rng.choice(["a", "b", "c"], n), "y": rng.integers(0, 2, n)}
    path = write_parquet(rows, tmp_path / "mlp.parquet", 900, spaced=False)
    csv = write_csv(rows, tmp_path / "mlp.csv")
    feats = [f"f{i}" for i in range(4)]
    batch = 512
    options = ev.EvaluateOptions(label=LABEL, sensitive=SENSITIVE, feature_columns=feats, chunk_rows=batch)
    single = ev.evaluate(ref, [cand], data.resolve(path), options).tables[0]
    assert ev.evaluate(ref, [cand], data.resolve(csv), options).tables[0] == single
    report = distributed.verify(
        ref, cand, path, client=client, label=LABEL, sensitive=list(SENSITIVE), feature_columns=feats, batch_size=batch
    )
    assert report.table == single and report.evaluation.rows == n
    from edgefair.report.document import verify_document

    # the verdict names the batch it holds for, as the single process's does (it said the default)
    assert "this verdict is for calls of 512 rows (--batch-size)" in verify_document(report)["summary"]["batch_note"]
    # the batch does matter for this model: the same rows scored in one call come out otherwise
    sess = edgefair.modelio.open_session(cand.read_bytes())
    x = np.stack([rows[f] for f in feats], axis=1).astype(np.float32)
    whole = sess.run(None, {"x": x})[0]
    parts = np.concatenate([sess.run(None, {"x": x[i : i + batch]})[0] for i in range(0, n, batch)])
    assert not np.array_equal(whole, parts)


def test_a_dask_dataframe_gives_the_same_tables(files, client):
    dd = pytest.importorskip("dask.dataframe")
    pd = pytest.importorskip("pandas")
    single = single_doc(files)
    frame = dd.read_parquet(str(files["parquet"])).repartition(npartitions=3)
    with pytest.warns(UserWarning, match="multiple of batch_size"):  # ~6667-row partitions, 2048-row batches
        dask = dask_doc(files, client, frame)
    assert differences(single, dask, "$", IGNORED | {"source", "sha256"}) == []
    assert dask["data"]["rows"] == ROWS and len(dask["data"]["sha256"]) == 64
    aligned = dd.from_pandas(pd.DataFrame(files["rows"]), chunksize=4096)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # whole batches in every partition: nothing to warn about
        again = dask_doc(files, client, aligned)
    assert again["table"] == single["table"] and again["checks"] == single["checks"]
    assert again["data"]["sha256"] == dask_doc(files, client, aligned)["data"]["sha256"]  # deterministic


def test_bad_rows_give_the_single_process_error(files, client):
    for kw in ({"label": "race", "sensitive": ["sex"]}, {"label": "y", "sensitive": ["sex", "nope"]}):
        with pytest.raises(InputError) as single:
            edgefair.verify(files["ref"], files["cand"], files["parquet"], **kw)
        with pytest.raises(InputError) as dask:
            distributed.verify(files["ref"], files["cand"], files["parquet"], client=client, batch_size=BATCH, **kw)
        assert len(str(dask.value).splitlines()) == 1 and str(files["parquet"]) in str(dask.value)
        if kw["label"] == "race":  # found on a worker: the same message, line and values seen
            assert str(dask.value) == str(single.value) and "line " in str(dask.value)
        else:
            assert "no column 'nope'" in str(dask.value) and "no column 'nope'" in str(single.value)


def test_connect_refuses_a_silent_address_within_the_timeout():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket closes
    t0 = time.monotonic()
    with pytest.raises(InputError, match=f"tcp://127.0.0.1:{port}: no Dask scheduler answered within 2 s"):
        distributed.connect(f"tcp://127.0.0.1:{port}", timeout=2)
    assert time.monotonic() - t0 < 10
    with pytest.raises(InputError, match="expected local:N"):
        distributed.connect("somewhere")
    with pytest.raises(InputError, match="1 to 256"):
        distributed.connect("local:0")


def test_needed_columns_leave_other_columns_unread(files):
    source = data.resolve(files["parquet"])
    ref = ev._Model(files["ref"], 0.5, None)
    options = ev.EvaluateOptions(label=LABEL, sensitive=SENSITIVE)
    assert distributed.needed_columns(ref.sig, options) == ["age", "hours", "job", "y", "sex", "race"]
    assert isinstance(source, data.source.ParquetSource) and Path(source.name) == files["parquet"]


def test_the_cli_runs_verify_on_a_local_cluster(files, tmp_path):
    """`edgefair verify ... --dask local:1` writes the report the single process writes."""
    from tests.conftest import run_cli

    common = ["--data", str(files["parquet"]), "--label", LABEL, "--sensitive", ",".join(SENSITIVE)]
    here, there = tmp_path / "here.json", tmp_path / "there.json"
    local = run_cli("verify", str(files["ref"]), str(files["cand"]), *common, "--json", str(here))
    dask = run_cli("verify", str(files["ref"]), str(files["cand"]), *common, "--json", str(there), "--dask", "local:1")
    assert dask.returncode == local.returncode and dask.returncode in (0, 1, 3), dask.stderr
    assert dask.stdout.splitlines()[0] == local.stdout.splitlines()[0]
    assert canonical(json.loads(here.read_text())) == canonical(json.loads(there.read_text()))
