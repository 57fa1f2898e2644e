"""The Prometheus recording rules and the Grafana dashboard in examples/: promtool checks the
rules and runs their unit tests (synthetic series with known group rates); the rules and the
dashboard read only series the server really exports or the rules record; the dashboard's
panels are well formed. promtool comes from Debian's prometheus package, installed by
scripts/ensure-tools.sh when it is missing: a failed install fails these tests, never skips."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from edgefair.runtime import FairSession
from edgefair.serve.metrics import Metrics
from tests import models

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "examples" / "prometheus" / "edgefair.rules.yml"
RULE_TESTS = ROOT / "examples" / "prometheus" / "edgefair.rules.test.yml"
DASHBOARD = ROOT / "examples" / "grafana" / "edgefair-dashboard.json"
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset"}


@pytest.fixture(scope="module")
def promtool() -> str:
    proc = subprocess.run(
        ["sh", str(ROOT / "scripts" / "ensure-tools.sh")], capture_output=True, text=True, timeout=900
    )
    if proc.returncode != 0 or not shutil.which("promtool"):
        pytest.fail(f"promtool is needed and scripts/ensure-tools.sh could not provide it: {proc.stderr.strip()}")
    return str(shutil.which("promtool"))


def run(promtool: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_promtool_checks_the_rules_and_their_unit_tests_pass(promtool):
    check = run(promtool, "check", "rules", str(RULES), cwd=RULES.parent)
    assert check.returncode == 0 and "SUCCESS: 8 rules found" in check.stdout, check.stdout + check.stderr
    tested = run(promtool, "test", "rules", RULE_TESTS.name, cwd=RULES.parent)
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ('{decision="1"}', '{decision="0"}'),  # selected rows read from the wrong decision
        ('label="1", decision="1"', 'decision="1"'),  # TPR numerator over every label
        (
            "sum by (attribute, group) (rate(edgefair_predictions_total[5m]))",
            "sum by (attribute) (rate(edgefair_predictions_total[5m]))",
        ),
    ],
)
def test_the_rule_tests_catch_a_wrong_rule(promtool, tmp_path, old, new):
    text = RULES.read_text()
    assert old in text
    (tmp_path / RULES.name).write_text(text.replace(old, new, 1))
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    assert run(promtool, "test", "rules", RULE_TESTS.name, cwd=tmp_path).returncode != 0


def metric_names(expr: str) -> set[str]:
    """Series names a PromQL expression reads (labels, ranges, functions and keywords aside)."""
    text = re.sub(r"\{[^}]*\}", "", expr)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", text)
    found = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        rest = text[match.end() :].lstrip()
        if rest.startswith("(") or match.group() in PROMQL_WORDS:
            continue
        found.add(match.group())
    return found


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> set[str]:
    """Every sample name /metrics gives for a real session with predictions and outcomes."""
    path = tmp_path_factory.mktemp("m") / "m.onnx"
    onnx.save(models.mlp(inputs=3, hidden=4, seed=1), str(path))
    rng = np.random.default_rng(0)
    with FairSession(path, sensitive=["sex"]) as session:
        n = 400
        ids = [f"r{i}" for i in range(n)]
        session.run(
            {"x": rng.normal(size=(n, 3)).astype(np.float32)}, sensitive={"sex": ["F", "M"] * (n // 2)}, ids=ids
        )
        session.record_outcomes(ids, rng.integers(0, 2, n))
        text = Metrics().exposition(session, min_cell=11)
    names = {s.name for family in text_string_to_metric_families(text) for s in family.samples}
    assert {"edgefair_predictions_total", "edgefair_outcomes_total"} <= names, names
    return names


def recorded() -> dict[str, str]:
    doc = yaml.safe_load(RULES.read_text())
    return {r["record"]: r["expr"] for g in doc["groups"] for r in g["rules"]}


def test_rules_read_only_exported_or_recorded_series_and_aggregate_by_attribute_and_group(exported):
    rules = recorded()
    for name, expr in rules.items():
        unknown = metric_names(expr) - exported - set(rules)
        assert not unknown, (name, unknown)
        if metric_names(expr) & exported:  # a rule over the servers' own counters
            assert expr.startswith("sum by (attribute, group) (rate("), name


def test_the_dashboard_is_well_formed_and_queries_only_recorded_series(exported):
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text())
    rules = recorded()
    variables = {v["name"] for v in doc["templating"]["list"]}
    assert {"datasource", "attribute"} <= variables
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids)) and doc["uid"] and doc["title"]
    cells: set[tuple[int, int]] = set()
    for panel in doc["panels"]:
        assert panel["type"] in {"timeseries", "stat"} and panel["title"], panel
        g = panel["gridPos"]
        assert g["x"] >= 0 and g["w"] >= 1 and g["x"] + g["w"] <= 24 and g["h"] >= 1, panel["title"]
        for x in range(g["x"], g["x"] + g["w"]):  # panels do not overlap
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, panel["title"]
                cells.add((x, y))
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            names = metric_names(target["expr"])
            assert names and names <= set(rules), (panel["title"], names - set(rules))
            assert set(re.findall(r"\$(\w+)", target["expr"])) <= variables, panel["title"]
    query = doc["templating"]["list"][1]["query"]["query"]
    assert metric_names(query.replace("label_values", "").replace(", attribute", "")) <= set(rules) | exported
