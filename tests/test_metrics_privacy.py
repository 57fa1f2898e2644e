"""/metrics withholds small cells so that subtraction cannot give them back.

A user trial scraped /metrics with every row labelled: predictions with decision 0 in group x
were 42 and outcomes (decision 0, label 0) 36, so the withheld (decision 0, label 1) cell was
6. The rule now: an outcome cell is shown only with its pair, and one small prediction cell in
an attribute gets a complement. The oracle solves for each hidden cell from what is shown
plus the totals /fairness publishes (rows, labelled rows), by brute force over the cells.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from edgefair.runtime import FairSession
from edgefair.serve.metrics import Metrics
from tests.models import sklearn_onnx

MIN_CELL = 11


@pytest.fixture(scope="module")
def session_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(12)
    x = rng.normal(size=(500, 2)).astype(np.float32)
    model = LogisticRegression().fit(x, (x[:, 0] > 0).astype(int))
    path = tmp_path_factory.mktemp("privacy") / "lr.onnx"
    path.write_bytes(sklearn_onnx(model, x))
    return path


def scrape(text: str) -> dict[tuple[str, ...], int]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name in ("edgefair_predictions_total", "edgefair_outcomes_total"):
                labels = s.labels
                out[s.name, labels["attribute"], labels["group"], labels["decision"], labels.get("label", "")] = int(
                    s.value
                )
    return out


@pytest.mark.parametrize("seed", range(6))
def test_no_withheld_cell_follows_from_the_shown_ones(session_file: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 300
    x = rng.normal(size=(n, 2)).astype(np.float32)
    region = rng.choice(["north", "south", "x"], n, p=[0.5, 0.3, 0.2])
    band = rng.choice(["young", "old", "rare"], n, p=[0.55, 0.4, 0.05])
    ids = [str(i) for i in range(n)]
    with FairSession(session_file, sensitive=["region", "band"]) as fs:
        out = fs.run({"X": x}, {"region": region, "band": band}, ids=ids)
        decision = (out["probabilities"][:, 1] >= 0.5).astype(int)
        y = rng.integers(0, 2, n)
        zeros = np.flatnonzero((region == "x") & (decision == 0))
        y[zeros] = 0
        y[zeros[:6]] = 1  # the trial's case: a 6-row outcome cell beside a large prediction count
        fs.record_outcomes(ids, y.tolist())  # every row labelled: the unknown cells are 0
        shown = scrape(Metrics().exposition(fs, min_cell=MIN_CELL))
    assert all(v >= MIN_CELL for v in shown.values())
    for attr, values in (("region", region), ("band", band)):
        truth = {}
        for g in sorted(set(values)):
            for d in (0, 1):
                rows = (values == g) & (decision == d)
                truth["edgefair_predictions_total", attr, g, str(d), ""] = int(rows.sum())
                for label in (0, 1):
                    truth["edgefair_outcomes_total", attr, g, str(d), str(label)] = int((rows & (y == label)).sum())
        assert all(truth[k] == v for k, v in shown.items() if k[1] == attr)  # what is shown is true
        hidden = [k for k in truth if k not in shown and truth[k] < MIN_CELL and truth[k] > 0]
        # what an attacker knows: the shown cells, rows (n), labelled rows (n), and that each
        # group and decision's predictions are its two outcome cells (every row labelled)
        for k in hidden:
            _, _, g, d, label = k
            if k[0] == "edgefair_outcomes_total":
                other = ("edgefair_outcomes_total", attr, g, d, str(1 - int(label)))
                total = ("edgefair_predictions_total", attr, g, d, "")
                assert not (other in shown and total in shown), f"{k} = {truth[total]} - {truth[other]}"
            else:
                pairs = [("edgefair_outcomes_total", attr, g, d, lab) for lab in ("0", "1")]
                assert not all(p in shown for p in pairs), f"{k} is the sum of its two outcome cells"
                others = [c for c in truth if c[0] == k[0] and c != k]
                assert not all(c in shown for c in others), f"{k} = {n} rows - the other prediction cells"
