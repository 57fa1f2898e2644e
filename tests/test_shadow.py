"""ShadowSession: the field's paired table is exactly the one ``edgefair verify`` builds
offline on the same rows; canary routes an exact share; the CLI gates a field table."""

from __future__ import annotations

import json

import numpy as np
import pytest

import edgefair
from edgefair.errors import InputError
from edgefair.runtime.session import FairSession
from edgefair.runtime.shadow import ShadowOptions, ShadowSession
from edgefair.verification.gate import gate
from edgefair.verification.policy import DEFAULT_POLICY
from tests import fieldkit as fk

SHIFT = np.array([0.0, 0.0, 1.5])  # the candidate leans towards 1 for group b only


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    out = tmp_path_factory.mktemp("shadow")
    rows = fk.make_rows(1500, 1)
    w, b = fk.train(rows)
    ref = fk.save(fk.linear_model(w, b), out / "ref.onnx")
    cand = fk.save(fk.linear_model(w + SHIFT, b), out / "cand.onnx")
    serving = fk.certified_bundle(ref, ref, rows, out / "serving")
    candidate = fk.certified_bundle(cand, ref, rows, out / "candidate")
    field = fk.make_rows(700, 2)  # field traffic: other rows than the certificate's
    return {"rows": field, "ref": ref, "cand": cand, "serving": serving, "candidate": candidate, "w": w, "b": b}


def _serve_rows(shadow, rows, sizes):
    """Run every row through ``shadow`` in batches of the given sizes (cycled); ids per row."""
    n, start, i = len(rows["y"]), 0, 0
    answers = []
    while start < n:
        stop = min(n, start + sizes[i % len(sizes)])
        sl = slice(start, stop)
        ids = [f"r{j}" for j in range(start, stop)]
        out = shadow.run({"x": fk.features(rows, sl)}, {"grp": rows["grp"][sl], "region": rows["region"][sl]}, ids)
        answers.append((sl, shadow.last_answered_by, out["score"].reshape(-1)))
        start, i = stop, i + 1
    return answers


def test_field_table_equals_verifys_table_on_the_same_rows(setup):
    rows = setup["rows"]
    with FairSession(setup["serving"]) as s, FairSession(setup["candidate"], allow_failed_certificate=True) as c:
        shadow = ShadowSession(s, c)
        _serve_rows(shadow, rows, [1, 7, 40, 3, 100])  # the few-rows and the batch paths
        order = np.random.default_rng(0).permutation(len(rows["y"]))  # labels arrive in any order
        for part in np.array_split(order, 9):
            shadow.record_outcomes([f"r{j}" for j in part], rows["y"][part].tolist())
        field = shadow.paired_table()
    offline = edgefair.verify(
        setup["ref"], setup["cand"], fk.dataset(rows), label="y", sensitive=fk.SENSITIVE, feature_columns=fk.FEATURES
    )
    assert field.paired and field == offline.table  # counts and both score histograms, exactly
    assert field.counts[:, 0:2, 0, 1].sum() > 20  # the shift shows: the candidate says 1 where the reference said 0
    # so the gate decides the same on field traffic as offline
    assert gate(field, DEFAULT_POLICY).results == offline.gate.results


def test_labels_move_rows_and_unknown_ids_are_counted(setup):
    rows = setup["rows"]
    with FairSession(setup["serving"]) as s, FairSession(setup["candidate"], allow_failed_certificate=True) as c:
        shadow = ShadowSession(s, c)
        _serve_rows(shadow, {k: v[:30] for k, v in rows.items()}, [5])
        assert int(shadow.paired_table().counts[:, 2].sum()) == 30  # all unlabelled yet
        stats = shadow.record_outcomes(["r0", "r1", "nope"], [1, 0, 1])
        again = shadow.paired.record_outcomes(["r0"], [1])
        table = shadow.paired_table()
    assert stats.joined == 2 and shadow.paired.outcomes.unknown_id == 1 and again.duplicate == 1
    assert int(table.counts[:, :2].sum()) == 2 and table.rows == 30
    with pytest.raises(InputError, match="label 0 is 2"):
        shadow.record_outcomes(["r3"], [2])


def test_canary_answers_an_exact_share_with_the_candidate(setup):
    rows = {k: v[:80] for k, v in setup["rows"].items()}
    with FairSession(setup["serving"]) as s, FairSession(setup["candidate"], allow_failed_certificate=True) as c:
        shadow = ShadowSession(s, c, ShadowOptions(mode="canary", share=0.25))
        answers = _serve_rows(shadow, rows, [2])
    by = [who for _, who, _ in answers]
    assert len(by) == 40 and by.count("candidate") == 10 and by[3] == "candidate" and by[0] == "serving"
    for sl, who, score in answers:
        w = setup["w"] + (SHIFT if who == "candidate" else 0)
        expected = 1 / (1 + np.exp(-(fk.features(rows, sl).astype(np.float64) @ w + setup["b"])))
        assert np.allclose(score, expected, atol=1e-5)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(mode="blue"), "shadow mode must be one of"),
        (dict(mode="canary", share=1.5), "canary share must be"),
        (dict(mode="shadow", share=0.5), "only in canary mode"),
    ],
)
def test_bad_options_are_one_line(options, message):
    with pytest.raises(InputError, match=message):
        ShadowOptions(**options)


def test_counters_gate_cli_on_a_field_table(setup, tmp_path):
    rows = setup["rows"]
    with FairSession(setup["serving"]) as s, FairSession(setup["candidate"], allow_failed_certificate=True) as c:
        shadow = ShadowSession(s, c)
        _serve_rows(shadow, rows, [50])
        shadow.record_outcomes([f"r{j}" for j in range(len(rows["y"]))], rows["y"].tolist())
        path = tmp_path / "field.json"
        path.write_text(shadow.paired_table().to_json())
        single = tmp_path / "single.json"
        single.write_text(s.table().to_json())
    expected = gate(shadow.paired_table(), DEFAULT_POLICY)
    code, out, _ = fk.cli("counters", "gate", str(path), "--json")
    doc = json.loads(out)
    assert code == {"pass": 0, "fail": 1, "inconclusive": 3}[expected.verdict]
    assert doc["verdict"] == expected.verdict and len(doc["checks"]) == len(expected.results)
    code, _, err = fk.cli("counters", "gate", str(single))
    assert code == 2 and "not a paired table" in err and len(err.strip().splitlines()) == 1
