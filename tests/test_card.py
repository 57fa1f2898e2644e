"""Model cards: every number in a card traces to the bundle's certificate or manifest; the
certificate's inconclusive checks are named as caveats; about.toml is checked key by key.
The bundle is the demo's shipped MLP certified on the first 6,000 rows of the bundled Adult test split."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import numpy as np
import pytest
from typer.testing import CliRunner

import edgefair
from edgefair.bundling import build_bundle
from edgefair.cli import app as cli_app
from edgefair.data import load_adult
from edgefair.errors import InputError
from edgefair.files import write_text
from edgefair.report.card import build_card
from tests import fieldkit as fk
from tests.conftest import MODELS
from tests.fieldkit import cli as fk_cli

DECIMAL = re.compile(r"(?<![\w.])[+-]?\d+\.\d+(?![\w.])")
HEADINGS = ("Model Details", "Uses", "Bias, Risks, and Limitations", "Evaluation", "Testing Data", "Results")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("card")
    adult = load_adult("test")  # the demo's data; 6,000 rows keep this test quick
    rows = fk.dataset({k: v[:6000] for k, v in adult.columns.items()}, "adult:test[:6000]")
    report = edgefair.verify(
        MODELS / "adult_mlp.onnx", MODELS / "adult_mlp.onnx", rows, label="income", sensitive=["race", "sex"]
    )
    cert = write_text(out / "cert.json", edgefair.report.build(report).to_json())
    path = build_bundle(MODELS / "adult_mlp.onnx", out / "bundle", certificate=cert)
    about = out / "about.toml"
    about.write_text('intended_use = "Teaching"\nlimitations = "Trained on 1994 census data."\nauthors = ["A", "B"]\n')
    return path, about, json.loads((path / "certificate.json").read_text())


def _traceable(cert, manifest):
    """Every decimal the certificate and manifest hold, written the ways a card may write it."""
    found = set()

    def walk(x):
        if isinstance(x, float):
            found.update({f"{x:.4f}", f"{x:+.4f}", f"{x:.6f}", repr(x)})
        elif isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk({k: v for k, v in cert.items() if k != "table"})
    walk(manifest["threshold"])
    return found


def test_every_number_in_the_card_comes_from_the_certificate(bundle):
    path, about, cert = bundle
    card = build_card(path, about)
    md = card.to_markdown()
    manifest = json.loads((path / "manifest.json").read_text())
    numbers = DECIMAL.findall(md)
    assert len(numbers) > 100  # the card carries the certificate's numbers, not a summary
    untraced = sorted(set(numbers) - _traceable(cert, manifest))
    assert untraced == []
    for c in cert["checks"]:  # each check's row, with its estimate, interval and verdict
        low, high = c["interval"]
        shown = "n/a" if low is None else f"[{low:+.4f}, {high:+.4f}]"  # untested (small) groups have none
        row = f"| {c['check']} | {c['group'] or c['scope']} | {c['estimate']:+.4f} | {shown} |"
        assert row in md, row
    for section in cert["by_group"].values():
        for group, values in section["candidate"].items():
            iv = section["intervals"]["candidate"][group]["accuracy"]
            assert (
                f"| {group} | {int(values['count']):,} | {values['accuracy']:.4f} | [{iv[0]:.4f}, {iv[1]:.4f}] |" in md
            )
    assert manifest["files"]["model.onnx"]["sha256"] in md and cert["data"]["sha256"] in md
    for heading in HEADINGS:
        assert re.search(rf"^#+ {re.escape(heading)}$", md, re.M), heading


def test_inconclusive_checks_are_caveats_and_the_users_words_are_kept(bundle):
    path, about, cert = bundle
    md = build_card(path, about).to_markdown()
    assert cert["summary"]["unsettled"]  # Adult's small groups leave checks undecided
    risks = md.split("## Bias, Risks, and Limitations", 1)[1].split("\n## ", 1)[0]
    for caveat in cert["summary"]["unsettled"]:
        assert f"- {caveat}" in risks
    assert "Trained on 1994 census data." in risks and "Direct use: Teaching" in md and "A, B" in md
    assert "Out-of-scope use: Not stated" in md  # what the authors did not say is said to be missing


class _Cells(HTMLParser):
    def __init__(self):
        super().__init__()
        self.cells, self.open = [], []

    def handle_starttag(self, tag, attrs):
        if tag not in ("meta", "br", "hr", "img", "link"):  # void elements have no end tag
            self.open.append(tag)

    def handle_endtag(self, tag):
        assert self.open.pop() == tag, tag  # balanced tags

    def handle_data(self, data):
        if self.open and self.open[-1] == "td":
            self.cells.append(data)


def test_html_card_from_the_cli_holds_the_same_numbers(bundle, tmp_path):
    path, about, cert = bundle
    out = tmp_path / "card.html"
    result = CliRunner().invoke(cli_app, ["card", str(path), "--about", str(about), "-o", str(out)])
    assert result.exit_code == 0, result.output
    parser = _Cells()
    parser.feed(out.read_text())
    cells = parser.cells
    for c in cert["checks"]:
        low, high = c["interval"]
        assert f"{c['estimate']:+.4f}" in cells and ("n/a" if low is None else f"[{low:+.4f}, {high:+.4f}]") in cells
    assert parser.open == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('intended_use = "x"\nmaintainer = "me"\n', "unknown key 'maintainer'"),
        ("limitations = 3\n", "'limitations' must be a string"),
        ("authors = [1]\n", "'authors' must be a string or a list of strings"),
    ],
)
def test_bad_about_files_are_one_line(bundle, tmp_path, text, message):
    about = tmp_path / "about.toml"
    about.write_text(text)
    with pytest.raises(InputError, match=re.escape(message)):
        build_card(bundle[0], about)


def test_card_cli_exits_2_on_unknown_about_keys(bundle, tmp_path):
    about = tmp_path / "about.toml"
    about.write_text('licence = "MIT"\n')
    code, _, err = fk_cli("card", str(bundle[0]), "--about", str(about), "-o", str(tmp_path / "c.md"))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "unknown key 'licence'" in err
    assert not (tmp_path / "c.md").exists()


def test_a_failed_certificate_shows_the_candidates_numbers_and_its_failures(tmp_path):
    rows = fk.make_rows(600, 5)
    w, b = fk.train(rows)
    ref = fk.save(fk.linear_model(w, b), tmp_path / "ref.onnx")
    cand = fk.save(fk.linear_model(w + np.array([0.0, 0.0, 2.0]), b), tmp_path / "cand.onnx")
    path = fk.certified_bundle(cand, ref, rows, tmp_path / "bundle")
    cert = json.loads((path / "certificate.json").read_text())
    md = build_card(path).to_markdown()
    assert cert["verdict"] == "fail" and "Certificate verdict | FAIL" in md
    for failing in cert["summary"]["failing"]:
        assert f"- {failing}" in md
    section = cert["by_group"]["grp"]
    for group in ("a", "b"):
        ours, theirs = section["candidate"][group], section["reference"][group]
        assert f"| {group} | {int(ours['count']):,} | {ours['accuracy']:.4f} |" in md  # this model's numbers
        assert group == "a" or f"{ours['accuracy']:.4f}" != f"{theirs['accuracy']:.4f}"  # b: not the reference's
    assert f"{section['candidate']['b']['selection_rate']:.4f}" != f"{section['reference']['b']['selection_rate']:.4f}"
    assert f"| {section['reference']['b']['selection_rate']:.4f} |" not in md.split("Results by group: grp", 1)[1]


def test_field_counters_from_a_store_follow_the_privacy_rule(bundle, tmp_path):
    from edgefair.data import ADULT_FEATURES
    from edgefair.runtime.session import FairSession

    path, about, _ = bundle
    adult = load_adult("test")
    race = adult.columns["race"][6000:8000]
    other = np.flatnonzero(race == "Other")
    keep = 6000 + np.sort(np.concatenate([np.flatnonzero(race != "Other"), other[:5]]))  # 5 rows of one group
    cols = {k: v[keep] for k, v in adult.columns.items()}
    n = len(keep)
    db = tmp_path / "field.db"
    decisions = []
    with FairSession(path, store=db) as fs:
        for start in range(0, n, 500):
            sl = slice(start, start + 500)
            feeds = {
                k: cols[k][sl].reshape(-1, 1).astype(np.float32 if cols[k].dtype.kind == "f" else object)
                for k in ADULT_FEATURES
            }
            out = fs.run(feeds, {"race": cols["race"][sl], "sex": cols["sex"][sl]})
            scores = out[fs.choice.name][:, fs.choice.column]
            decisions.append(scores >= fs.threshold)
    decided = np.concatenate(decisions)
    md = build_card(path, about, store=db).to_markdown()
    field = md.split("## Field Counters", 1)[1]
    assert f"{n:,} predictions counted in the field, 0 with outcomes" in field
    for sex in ("Female", "Male"):  # the field's selection rate, from numpy over the model's own answers
        expected = decided[cols["sex"] == sex].mean()
        assert f"| selection_rate | sex={sex} | {expected:.4f} |" in field
    assert "race=Other |" not in field and "race=White |" in field  # 5 rows: withheld; the verdict still covers it
    asian = int((cols["race"] == "Asian-Pac-Islander").sum())
    assert 30 <= asian < 100 and "| selection_rate | race=Asian-Pac-Islander |" in field
    stricter = build_card(path, about, store=db, min_cell=100).to_markdown().split("## Field Counters", 1)[1]
    assert "race=Asian-Pac-Islander |" not in stricter and "race=White |" in stricter
    code, _, err = fk_cli("card", str(path), "--store", str(db), "--min-cell", "1", "-o", str(tmp_path / "c.md"))
    assert code == 2 and "--min-cell must be at least 2" in err
