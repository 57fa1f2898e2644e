"""Rollback and incidents: a canary candidate shifted for one group fails the field gate
within a bounded number of labelled rows, traffic goes back to the certified version, and
the incident (failing group, estimate, interval, table) survives a restart; an unshifted
candidate over the same traffic is never rolled back, and over simulated runs the false
rollback rate stays under alpha. Oracles: numpy decisions from the trained weights."""

from __future__ import annotations

import http.client
import json
import shutil
import sqlite3

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from edgefair.bundling import build_bundle
from edgefair.cli import app as cli_app
from edgefair.core import tables
from edgefair.errors import StoreError
from edgefair.runtime.incidents import IncidentStore, Watch, WatchOptions
from edgefair.serve import field
from edgefair.serve.server import ServeConfig, Server
from edgefair.verification.policy import DEFAULT_POLICY, Check, CheckKind, Policy
from tests import fieldkit as fk

TOKEN = "tok"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SHIFT = np.array([0.0, 0.0, 1.5])
CHECK_EVERY, MAX_LOOKS, BATCH = 100, 5, 20
TRIAL = (
    f'[field]\ncandidate = 2\nmode = "canary"\nshare = 0.5\ncheck_every = {CHECK_EVERY}\nmax_looks = {MAX_LOOKS}\n'
    "drift = false\n"  # the gate alone here; drift has its own test
)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    out = tmp_path_factory.mktemp("incidents")
    rows = fk.make_rows(1500, 3)
    w, b = fk.train(rows)
    ref = fk.save(fk.linear_model(w, b), out / "ref.onnx")
    certified = fk.certified_bundle(ref, ref, rows, out / "v1")
    candidates = {}
    for name, weights in (("shifted", w + SHIFT), ("unshifted", w * 1.01)):
        model = fk.save(fk.linear_model(weights, b), out / f"{name}.onnx")
        candidates[name] = build_bundle(model, out / name, sensitive=fk.SENSITIVE)  # not yet certified: on trial
    return {"w": w, "b": b, "v1": certified, **candidates, "field": fk.make_rows(900, 4)}


def _repo(made, tmp_path, candidate):
    root = tmp_path / "repo"
    shutil.copytree(made["v1"], root / "lin" / "1")
    shutil.copytree(made[candidate], root / "lin" / "2")
    (root / "lin" / "edgefair.toml").write_text(TRIAL)
    return root


def _request(port, method, path, doc=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request(method, path, body=None if doc is None else json.dumps(doc), headers=AUTH)
    r = conn.getresponse()
    body = r.read()
    conn.close()
    assert r.status == 200, (r.status, body)
    return body


def _traffic(port, rows, start, stop):
    """Unversioned requests of BATCH rows, each followed by its labels; which version answered."""
    answered = []
    for s in range(start, stop, BATCH):
        sl = slice(s, min(stop, s + BATCH))
        x = fk.features(rows, sl)
        ids = [f"id{j}" for j in range(sl.start, sl.stop)]
        doc = {
            "inputs": [
                {"name": "x", "datatype": "FP32", "shape": list(x.shape), "data": x.reshape(-1).tolist()},
                {"name": "grp", "datatype": "BYTES", "shape": [len(ids)], "data": rows["grp"][sl].tolist()},
                {"name": "region", "datatype": "BYTES", "shape": [len(ids)], "data": rows["region"][sl].tolist()},
            ],
            "parameters": {"edgefair_ids": ids},
        }
        answered.append(json.loads(_request(port, "POST", "/v2/models/lin/infer", doc))["model_version"])
        _request(port, "POST", "/v2/models/lin/outcomes", {"ids": ids, "labels": rows["y"][sl].tolist()})
    return answered


def _metrics(port):
    text = _request(port, "GET", "/metrics").decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _negative_flip_rate(made, rows, labelled, group):
    """The oracle: numpy decisions of both models on the first ``labelled`` rows."""
    x = fk.features(rows)[:labelled].astype(np.float64)
    y = rows["y"][:labelled]
    ref = (1 / (1 + np.exp(-(x @ made["w"] + made["b"]))) >= 0.5).astype(int)
    cand = (1 / (1 + np.exp(-(x @ (made["w"] + SHIFT) + made["b"]))) >= 0.5).astype(int)
    mask = rows["grp"][:labelled] == group
    return float(np.mean((ref[mask] == y[mask]) & (cand[mask] != y[mask])))


def test_a_shifted_canary_is_rolled_back_and_the_incident_survives_a_restart(made, tmp_path):
    root, db, rows = _repo(made, tmp_path, "shifted"), tmp_path / "incidents.db", made["field"]
    config = ServeConfig(port=0, token=TOKEN, incidents=str(db))
    srv = Server(root, config).start()
    try:
        before = _traffic(srv.port, rows, 0, 300)
        after = _traffic(srv.port, rows, 300, 500)
        incidents = json.loads(_request(srv.port, "GET", "/v2/repository/incidents"))
        metrics = _metrics(srv.port)
        fairness = json.loads(_request(srv.port, "GET", "/v2/models/lin/fairness"))
    finally:
        srv.stop()
    assert "1" in before and "2" in before  # the canary answered its share
    assert set(after) == {"1"}  # rolled back: the certified version answers everything
    (incident,) = incidents
    assert incident["check"] == "field_gate" and incident["action"] == "rolled_back"
    assert (incident["candidate_version"], incident["from_version"], incident["to_version"]) == (2, 2, 1)
    assert incident["look"] <= 3 and incident["labelled_rows"] < CHECK_EVERY * incident["look"] + BATCH  # bounded
    nfr = [f for f in incident["failing"] if f["check"] == "negative_flip_rate:group_max" and f["group"] == "b"]
    assert nfr, incident["failing"]  # the failing group is named
    expected = _negative_flip_rate(made, rows, incident["labelled_rows"], "b")
    assert abs(nfr[0]["estimate"] - expected) < 1e-12
    low, high = nfr[0]["interval"]
    assert 0.02 < low <= expected <= high  # the whole interval above the tolerance
    snapshot = tables.from_dict(incident["table"])
    assert int(snapshot.counts[:, :2].sum()) == incident["labelled_rows"] and snapshot.paired
    assert metrics[("edgefair_rollbacks_total", (("model", "lin"),))] == 1
    assert metrics[("edgefair_serving_version", (("model", "lin"),))] == 1
    assert fairness["field"]["attached"] is False and fairness["version"] == 1

    again = Server(root, config).start()  # a restart: the incident is read back, v2 stays off
    try:
        assert set(_traffic(again.port, rows, 500, 600)) == {"1"}
        kept = json.loads(_request(again.port, "GET", "/v2/models/lin/incidents"))
        index = {r["version"]: r for r in json.loads(_request(again.port, "POST", "/v2/repository/index", {}))}
    finally:
        again.stop()
    assert [k["id"] for k in kept] == [incident["id"]] and kept[0]["failing"] == incident["failing"]
    assert index["2"]["reason"] == "rolled back" and index["1"]["serving"]

    listed = CliRunner().invoke(cli_app, ["incidents", "list", str(db)])
    assert listed.exit_code == 0 and "rolled back v2 -> v1" in listed.output and "field_gate" in listed.output
    shown = CliRunner().invoke(cli_app, ["incidents", "show", str(db), str(incident["id"]), "--json"])
    assert json.loads(shown.output)["failing"] == incident["failing"]


def test_an_unshifted_canary_is_never_rolled_back(made, tmp_path):
    root, db, rows = _repo(made, tmp_path, "unshifted"), tmp_path / "incidents.db", made["field"]
    stores = tmp_path / "stores"
    sent = CHECK_EVERY * MAX_LOOKS + BATCH
    srv = Server(root, ServeConfig(port=0, token=TOKEN, incidents=str(db), store=str(stores))).start()
    try:
        answered = _traffic(srv.port, rows, 0, sent)
        fairness = json.loads(_request(srv.port, "GET", "/v2/models/lin/fairness"))
        metrics = _metrics(srv.port)
    finally:
        srv.stop()
    assert answered.count("2") == len(answered) // 2  # the canary kept its exact share to the end
    assert fairness["field"]["attached"] and fairness["field"]["watch"]["looks"] == MAX_LOOKS
    assert fairness["field"]["last_look"]["verdict"] in ("pass", "inconclusive")
    assert metrics[("edgefair_rollbacks_total", (("model", "lin"),))] == 0
    assert IncidentStore(db).list() == []
    # the paired cells on /metrics, against numpy's decisions of both models on the rows sent
    x = fk.features(rows)[:sent].astype(np.float64)
    ref = 1 / (1 + np.exp(-(x @ made["w"] + made["b"]))) >= 0.5
    cand = 1 / (1 + np.exp(-(x @ (made["w"] * 1.01) + made["b"]))) >= 0.5
    for group in ("a", "b"):
        mask = rows["grp"][:sent] == group
        labels = {"model": "lin", "candidate": "2", "attribute": "grp", "group": group}
        key = tuple(sorted({**labels, "reference_decision": "1", "candidate_decision": "1"}.items()))
        assert metrics[("edgefair_field_pairs_total", key)] == int((ref & cand & mask).sum())
    # the field table is written at each look, for edgefair counters show|gate
    written = tables.from_json((stores / "lin-field-v1-v2.json").read_text())
    assert written.paired and int(written.counts[:, :2].sum()) == CHECK_EVERY * MAX_LOOKS


def test_a_drifting_serving_version_gives_way_to_the_earlier_certified_one(made, tmp_path):
    root, db = tmp_path / "repo", tmp_path / "incidents.db"
    shutil.copytree(made["v1"], root / "lin" / "1")
    shutil.copytree(made["v1"], root / "lin" / "2")  # a second certified version, served as the latest
    (root / "lin" / "edgefair.toml").write_text(f"[field]\ncheck_every = {CHECK_EVERY}\nmax_looks = {MAX_LOOKS}\n")
    rows = dict(made["field"])
    rows["x0"] = rows["x0"] + 2.0  # the field is not the certificate's population: decisions drift to 1
    srv = Server(root, ServeConfig(port=0, token=TOKEN, incidents=str(db))).start()
    try:
        before = _traffic(srv.port, rows, 0, 300)
        after = _traffic(srv.port, rows, 300, 400)
    finally:
        srv.stop()
    (incident,) = IncidentStore(db).list()
    assert incident.check == "drift" and (incident.from_version, incident.to_version) == (2, 1)
    assert before[0] == "2" and set(after) == {"1"}
    assert any(f["check"] == "selection_rate:drift" for f in incident.failing)


def test_alert_only_records_the_incident_and_keeps_traffic(made, tmp_path):
    root, db, rows = _repo(made, tmp_path, "shifted"), tmp_path / "incidents.db", made["field"]
    srv = Server(root, ServeConfig(port=0, token=TOKEN, incidents=str(db), rollback=False)).start()
    try:
        _traffic(srv.port, rows, 0, 300)
        after = _traffic(srv.port, rows, 300, 400)
    finally:
        srv.stop()
    (incident,) = IncidentStore(db).list()
    assert incident.action == "alert" and incident.to_version == incident.from_version == 2
    assert "2" in after  # alert only: the canary still answers its share


def test_incident_stores_refuse_what_they_are_not(tmp_path):
    with pytest.raises(StoreError, match="no such incidents store"):
        IncidentStore(tmp_path / "none.db", read_only=True)
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (a)").connection.commit()
    with pytest.raises(StoreError, match="not an edgefair incidents store"):
        IncidentStore(other)


def test_a_shifted_shadow_never_answers_and_is_detached_when_it_fails(made, tmp_path):
    root, db, rows = _repo(made, tmp_path, "shifted"), tmp_path / "incidents.db", made["field"]
    (root / "lin" / "edgefair.toml").write_text(TRIAL.replace('mode = "canary"\nshare = 0.5\n', 'mode = "shadow"\n'))
    srv = Server(root, ServeConfig(port=0, token=TOKEN, incidents=str(db))).start()
    try:
        attached = json.loads(_request(srv.port, "GET", "/v2/models/lin/fairness"))["field"]
        answered = _traffic(srv.port, rows, 0, 300)
        detached = json.loads(_request(srv.port, "GET", "/v2/models/lin/fairness"))["field"]
    finally:
        srv.stop()
    assert attached["attached"] and attached["mode"] == "shadow" and attached["current"]["verdict"] == "inconclusive"
    assert set(answered) == {"1"}  # a shadow never answers
    (incident,) = IncidentStore(db).list()
    assert incident.mode == "shadow" and (incident.from_version, incident.to_version) == (1, 1)
    assert incident.action == "rolled_back" and not detached["attached"] and "rolled back" in detached["note"]


def _false_rollbacks(runs: int, looks: int, flip: float = 0.019) -> float:
    """Candidates that keep the policy, watched the way the server watches them; the share of
    runs rolled back. Each candidate is the reference with every decision flipped at random
    with probability ``flip``: its negative flip rate (~0.014) is under the 0.02 tolerance and
    its accuracy drop (~flip x (2 accuracy - 1), about 0.008) just under the 0.01 of
    overall_drop, so the looks meet a candidate near the edge of what the policy allows."""
    rng = np.random.default_rng(7)
    w, b = np.array([1.2, -0.8, 0.3]), 0.0
    failed = 0
    for run in range(runs):
        rows = fk.make_rows(CHECK_EVERY * looks, 100 + run)
        x = fk.features(rows).astype(np.float64)
        ref = (1 / (1 + np.exp(-(x @ w + b))) >= 0.5).astype(int)
        cand = np.where(rng.random(len(ref)) < flip, 1 - ref, ref)
        seen = [0]

        def table(n=seen, rows=rows, ref=ref, cand=cand):
            k = n[0]
            sens = {"grp": rows["grp"][:k], "region": rows["region"][:k]}
            return tables.from_arrays(sens, ref[:k], cand[:k], rows["y"][:k])

        watch = Watch(field.gate_check(table, DEFAULT_POLICY), WatchOptions(check_every=CHECK_EVERY, max_looks=looks))
        for k in range(CHECK_EVERY, CHECK_EVERY * looks + 1, CHECK_EVERY):
            seen[0] = k
            verdict = watch.observe(k)
            if verdict is not None and verdict.verdict == "fail":
                failed += 1
                break
    return failed / runs


BOUNDARY_POLICY = Policy((Check(CheckKind.GROUP_MAX, "negative_flip_rate", 0.02),), bootstrap_replicates=200)


def _boundary_rollbacks(runs: int, looks: int, check_every: int = 50) -> float:
    """The hardest null for repeated looks: in every group the candidate's negative flip rate
    is 0.0195, just under the 0.02 tolerance (exact binomial tests, the gate's sharpest).
    Without the alpha / max_looks split the looks fail such candidates far more than alpha
    (a planted mutant that looks at alpha each time is caught here)."""
    rng = np.random.default_rng(11)
    w = np.array([1.2, -0.8, 0.3])
    big = fk.make_rows(200_000, 99)
    correct = (1 / (1 + np.exp(-(fk.features(big).astype(np.float64) @ w))) >= 0.5) == big["y"]
    accuracy = {g: float(correct[big["grp"] == g].mean()) for g in ("a", "b")}  # the flip rate's denominators
    failed = 0
    for run in range(runs):
        rows = fk.make_rows(check_every * looks, 500 + run)
        ref = (1 / (1 + np.exp(-(fk.features(rows).astype(np.float64) @ w))) >= 0.5).astype(int)
        p_flip = np.where(rows["grp"] == "a", 0.0195 / accuracy["a"], 0.0195 / accuracy["b"])
        flip = (ref == rows["y"]) & (rng.random(len(ref)) < p_flip)
        cand = np.where(flip, 1 - ref, ref)
        seen = [0]

        def table(n=seen, rows=rows, ref=ref, cand=cand):
            k = n[0]
            return tables.from_arrays({"grp": rows["grp"][:k]}, ref[:k], cand[:k], rows["y"][:k])

        options = WatchOptions(check_every=check_every, max_looks=looks)
        watch = Watch(field.gate_check(table, BOUNDARY_POLICY), options)
        for k in range(check_every, check_every * looks + 1, check_every):
            seen[0] = k
            verdict = watch.observe(k)
            if verdict is not None and verdict.verdict == "fail":
                failed += 1
                break
    return failed / runs


def test_false_rollback_rate_is_under_alpha_small():
    assert _boundary_rollbacks(runs=10, looks=10) <= BOUNDARY_POLICY.alpha  # the campaign below has the numbers


@pytest.mark.slow
def test_false_rollback_rate_is_under_alpha_campaign():
    assert _false_rollbacks(runs=200, looks=MAX_LOOKS) <= DEFAULT_POLICY.alpha
    assert _boundary_rollbacks(runs=300, looks=20) <= BOUNDARY_POLICY.alpha
