"""Verify: verdicts on the reference models, honesty and power by simulation, reports."""

from __future__ import annotations

import json
import warnings

import jsonschema
import numpy as np
import onnx
import onnx.parser
import pytest
import sklearn.metrics as skm
from fairlearn import metrics as flm

import edgefair
from edgefair import convert as conv
from edgefair import data
from edgefair.convert.common import load_model, save_model
from edgefair.convert.quantize import QuantizeOptions, QuantMode
from edgefair.core import tables
from edgefair.report import schema
from edgefair.verification.gate import gate
from edgefair.verification.policy import DEFAULT_POLICY, Policy, policy_from_dict
from tests.conftest import MODELS, assert_one_line_error, run_cli


@pytest.fixture(scope="module")
def variants(tmp_path_factory):
    out = tmp_path_factory.mktemp("variants")
    source = load_model(MODELS / "adult_mlp.onnx")
    made = {}
    for name, options in {
        "dynamic": conv.ConvertOptions(quantize=QuantizeOptions(mode=QuantMode.DYNAMIC_INT8)),
        "structured": conv.ConvertOptions(prune_structured=0.5),
    }.items():
        made[name] = save_model(conv.convert(source, options).model, out / f"{name}.onnx")
    return made


@pytest.fixture(scope="module")
def adult_csv(tmp_path_factory):
    ds = data.load_adult("test")
    path = tmp_path_factory.mktemp("data") / "adult_test.csv"
    names = list(ds.columns)
    lines = [",".join(names)]
    for i in range(ds.rows):
        lines.append(
            ",".join(
                str(ds.columns[n][i]) if not isinstance(ds.columns[n][i], float) else repr(float(ds.columns[n][i]))
                for n in names
            )
        )
    path.write_text("\n".join(lines) + "\n")
    return path


def test_structured_pruning_fails_on_race_tpr_and_int8_passes(variants):
    report = edgefair.compare(
        MODELS / "adult_mlp.onnx",
        [variants["dynamic"], variants["structured"]],
        "adult",
        measure_latency=False,
    )
    dynamic, structured = report.reports
    assert dynamic.passed and dynamic.exit_code == 0
    assert not structured.passed and structured.exit_code == 1
    failing = [r for r in structured.gate.failures() if r.check.kind.value == "difference_increase"]
    assert any(r.check.metric == "true_positive_rate" and r.scope == "race" for r in failing)
    doc = edgefair.report.build(structured).doc
    tpr = next(
        c for c in doc["checks"] if c["metric"] == "true_positive_rate" and c["scope"] == "race" and c["group"] is None
    )
    assert "Asian-Pac-Islander" in tpr["note"] or "Black" in tpr["note"]
    overall = doc["by_group"]["race"]["overall"]
    assert overall["reference"]["accuracy"] - overall["candidate"]["accuracy"] < 0.01
    jsonschema.validate(doc, schema())
    jsonschema.validate(edgefair.report.build(report).doc, schema())


def test_report_by_group_equals_fairlearn(variants, adult_test):
    report = edgefair.verify(MODELS / "adult_mlp.onnx", variants["structured"], "adult")
    doc = edgefair.report.build(report).doc
    from edgefair import modelio

    for path, side in ((MODELS / "adult_mlp.onnx", "reference"), (variants["structured"], "candidate")):
        sess = modelio.open_session(path)
        sig = modelio.signature(sess)
        choice = modelio.choose_output(sig)
        _, pred = modelio.decisions(
            sess.run([choice.name], modelio.build_feeds(sig, adult_test.columns))[0], choice, 0.5
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            oracle = flm.MetricFrame(
                metrics={
                    "selection_rate": flm.selection_rate,
                    "true_positive_rate": flm.true_positive_rate,
                    "false_positive_rate": flm.false_positive_rate,
                    "accuracy": skm.accuracy_score,
                },
                y_true=adult_test.columns["income"],
                y_pred=pred,
                sensitive_features=adult_test.columns["race"],
            )
        for group, row in oracle.by_group.iterrows():
            for metric in oracle.by_group.columns:
                assert abs(doc["by_group"]["race"][side][group][metric] - row[metric]) <= 1e-12


def simulate(rng, n_groups=3, rows=3000, noise=0.0, regress_group=None):
    g = rng.integers(0, n_groups, rows)
    y = rng.binomial(1, 0.3 + 0.05 * g)
    ref = np.where(y == 1, rng.binomial(1, 0.7, rows), rng.binomial(1, 0.1, rows))
    cand = ref.copy()
    if noise:
        flip = rng.random(rows) < noise
        cand[flip] = 1 - cand[flip]
    if regress_group is not None:
        hit = (g == regress_group) & (cand == 1) & (rng.random(rows) < 0.25)
        cand[hit] = 0
    return tables.from_arrays({"g": g}, ref, cand, y)


FAST = Policy(DEFAULT_POLICY.checks, bootstrap_replicates=300)


def test_identical_candidate_never_fails():
    rng = np.random.default_rng(0)
    fails = sum(not gate(simulate(rng), FAST).passed for _ in range(40))
    assert fails == 0


def test_symmetric_noise_fails_at_most_alpha():
    """Random symmetric flips on 0.5% of decisions keep every property within tolerance in
    expectation: the share of simulated datasets that fail stays under the policy's alpha."""
    rng = np.random.default_rng(1)
    trials = 80
    fails = sum(not gate(simulate(rng, noise=0.005), FAST).passed for _ in range(trials))
    rate = fails / trials
    print(f"observed false-fail rate {rate:.3f} (alpha {FAST.alpha})")
    assert rate <= FAST.alpha


def test_injected_regression_fails_with_high_power():
    rng = np.random.default_rng(2)
    trials = 30
    fails = sum(not gate(simulate(rng, regress_group=0), FAST).passed for _ in range(trials))
    assert fails / trials >= 0.9


def test_small_groups_are_inconclusive_not_passed():
    rng = np.random.default_rng(3)
    g = np.array(["big"] * 2000 + ["tiny"] * 10)
    y = rng.integers(0, 2, 2010)
    ref = rng.integers(0, 2, 2010)
    result = gate(tables.from_arrays({"g": g}, ref, ref.copy(), y), FAST)
    tiny = [r for r in result.results if r.group == "tiny"]
    assert tiny and all(r.verdict == "inconclusive" and not r.gated for r in tiny)
    strict = Policy(DEFAULT_POLICY.checks, bootstrap_replicates=300, inconclusive_fails=True)
    assert not gate(tables.from_arrays({"g": g}, ref, ref.copy(), y), strict).passed


def test_cli_exit_codes_and_reports(tmp_path, variants, adult_csv):
    ref = str(MODELS / "adult_mlp.onnx")
    ok = run_cli(
        "verify",
        ref,
        str(variants["dynamic"]),
        "--data",
        str(adult_csv),
        "--label",
        "income",
        "--sensitive",
        "race,sex",
        "--json",
        str(tmp_path / "r.json"),
        "--markdown",
        str(tmp_path / "r.md"),
        "--html",
        str(tmp_path / "r.html"),
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("PASS")
    jsonschema.validate(json.loads((tmp_path / "r.json").read_text()), schema())
    assert "<svg" in (tmp_path / "r.html").read_text() and "http" not in (tmp_path / "r.html").read_text()
    bad = run_cli("verify", ref, str(variants["structured"]))
    assert bad.returncode == 1, bad.stderr
    assert "FAIL true_positive_rate" in bad.stdout and "race" in bad.stdout
    cmp = run_cli("compare", ref, str(variants["dynamic"]), str(variants["structured"]), "--no-latency")
    assert cmp.returncode == 1 and "structured.onnx" in cmp.stdout
    schema_out = run_cli("schema")
    assert json.loads(schema_out.stdout)["$defs"]["verify"]["properties"]["kind"]["const"]


def test_policy_errors_name_the_key(tmp_path):
    with pytest.raises(edgefair.PolicyError, match="unknown key 'confidenc'"):
        policy_from_dict({"confidenc": 0.9})
    with pytest.raises(edgefair.PolicyError, match=r"checks\[0\]: kind 'nope'"):
        policy_from_dict({"checks": [{"kind": "nope", "metric": "accuracy", "tolerance": 0.1}]})
    with pytest.raises(edgefair.PolicyError, match="'confidence' must be float"):
        policy_from_dict({"confidence": "high"})
    p = policy_from_dict(
        {"confidence": 0.9, "checks": [{"kind": "overall_drop", "metric": "accuracy", "tolerance": 0.01}]}
    )
    assert p.confidence == 0.9 and len(p.checks) == 1


@pytest.mark.parametrize(
    "case",
    ["missing_input", "not_classifier", "mismatched", "three_labels", "unknown_policy_key", "empty_group"],
)
def test_verify_bad_input(tmp_path, case, variants):
    from tests import models

    ref, cand = str(MODELS / "adult_mlp.onnx"), str(variants["dynamic"])
    csv = tmp_path / "d.csv"
    csv.write_text("age,race,income\n30,White,1\n40,Black,0\n")
    args = ["--data", str(csv), "--label", "income", "--sensitive", "race"]
    fragments: tuple[str, ...]
    if case == "missing_input":
        fragments = ("no column 'workclass'", "columns are")
    elif case == "not_classifier":
        model = onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 3] x) => (float[N, 3] y) { y = Relu (x) }""")
        onnx.save(model, tmp_path / "m.onnx")
        ref = cand = str(tmp_path / "m.onnx")
        # a [N, 3] float output is read as a 3-class model (argmax); here its input is not fed
        fragments = ("takes 3 values per row",)
    elif case == "mismatched":
        onnx_path = tmp_path / "tiny.onnx"
        onnx.save(models.mlp(), onnx_path)
        cand = str(onnx_path)
        fragments = ("do not match the reference",)
    elif case == "three_labels":
        csv.write_text("income,race,race_x\n1,a,0.5\n2,b,0.1\n")
        args = ["--data", str(csv), "--label", "income", "--sensitive", "race"]
        ref = cand = str(tmp_path / "t.onnx")
        one = onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 1] race_x) => (float[N, 1] score) { score = Sigmoid (race_x) }""")
        onnx.save(one, ref)
        args = ["--data", str(csv), "--label", "income", "--sensitive", "race"]
        fragments = ("label", "not 0 or 1")
    elif case == "unknown_policy_key":
        pol = tmp_path / "p.toml"
        pol.write_text("confidence = 0.9\ntolerance = 3\n")
        args += ["--policy", str(pol)]
        fragments = ("unknown key 'tolerance'",)
    else:
        csv.write_text("income,race\n1,a\n0,\n")
        ref = cand = str(tmp_path / "t.onnx")
        one = onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 1] income) => (float[N, 1] score) { score = Sigmoid (income) }""")
        onnx.save(one, ref)
        fragments = ("line 3", "'race' is empty")
    proc = run_cli("verify", ref, cand, *args)
    assert_one_line_error(proc, *fragments)


def test_example_policy_file_is_the_default_policy():
    from edgefair.verification.policy import load_policy
    from tests.conftest import ROOT

    assert load_policy(ROOT / "examples" / "policy.toml") == DEFAULT_POLICY
