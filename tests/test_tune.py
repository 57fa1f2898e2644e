"""edgefair tune: the search, its honest selection, its cache and its outputs, on a network
built here whose decisions sit close to the threshold for one group.

The network: x[N, 6] -> MatMul -> Add -> Relu -> MatMul -> Add -> Sigmoid. One hidden unit
spikes (40 * x0) for group A only; group B's logit is x1 (small, near 0). Dynamic int8 at
batch 256 quantises the second layer's input per call over a range set by A's spikes, so
B's small activations round away and B's decisions flip: plain dynamic int8 fails the
default policy, while keeping the second MatMul in float passes. Oracles: fresh verifies on
rows the test selects itself, numpy and onnxruntime run by hand, gzip, jsonschema.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnx.parser
import onnxruntime as ort
import pytest
from onnx import numpy_helper

import edgefair
from edgefair import convert as conv
from edgefair.convert.quantize import QuantizeOptions
from edgefair.core import tables
from edgefair.errors import InputError, ModelError
from edgefair.tune import TuneOptions, output
from edgefair.tune import tune as run_tune
from edgefair.tune.stages import FINAL_REPEATS
from edgefair.verification.policy import DEFAULT_POLICY
from tests.models import no_weights

FEATURES = tuple(f"f{i}" for i in range(6))
SENSITIVE = ("group", "region")
ROWS = 3500
SEED = 3
# the default checks, with fewer bootstrap replicates (the gate runs once per variant)
POLICY = dataclasses.replace(DEFAULT_POLICY, bootstrap_replicates=500)
MAX_VARIANTS = 8  # base 4, node screening 2, then the first fallbacks: the passing one is among them


def near_threshold_model(extra: int = 120, seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    hidden = 5 + extra
    w1 = np.zeros((6, hidden), np.float32)
    w1[0, 0] = 40.0  # the spike: large for group A (x0 > 0), zero for group B (x0 < 0)
    w1[1, 1], w1[1, 2] = 1.0, -1.0  # relu(x1) - relu(-x1) = x1: group B's decision
    w1[2, 3], w1[2, 4] = 1.0, -1.0
    w1[:, 5:] = rng.normal(0, 0.3, (6, extra))  # bulk, so that int8 saves size
    w2 = np.zeros((hidden, 1), np.float32)
    w2[:5, 0] = [0.05, 1.0, -1.0, 2.0, -2.0]
    w2[5:, 0] = rng.normal(0, 0.002, extra)
    model = onnx.parser.parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    near (float[N, 6] x) => (float[N, 1] score) {
    m = MatMul (x, w1)
    a = Add (m, b1)
    r = Relu (a)
    z = MatMul (r, w2)
    y = Add (z, b2)
    score = Sigmoid (y)
    }""")
    model.graph.initializer.extend(
        [
            numpy_helper.from_array(w1, "w1"),
            numpy_helper.from_array(np.zeros(hidden, np.float32), "b1"),
            numpy_helper.from_array(w2, "w2"),
            numpy_helper.from_array(np.zeros(1, np.float32), "b2"),
        ]
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def near_rows(n: int, seed: int = 1) -> list[dict[str, str]]:
    rng = np.random.default_rng(seed)
    group = rng.choice(["A", "B"], n)
    region = rng.choice(["north", "south"], n)
    x = rng.normal(0, 1, (n, 6)).astype(np.float32)
    b = group == "B"
    x[:, 0] = np.where(b, -rng.uniform(0.5, 2, n), rng.uniform(0.5, 2, n))
    x[b, 1] = rng.normal(0, 0.6, b.sum())
    x[b, 2] = rng.normal(0, 0.1, b.sum())
    logit = np.where(b, x[:, 1] + 2 * x[:, 2], 2.0 * x[:, 0] + 2 * x[:, 2])
    y = (logit + rng.normal(0, 0.3, n) > 0).astype(int)
    return [
        {
            **{f: repr(float(x[i, j])) for j, f in enumerate(FEATURES)},
            "group": group[i],
            "region": region[i],
            "y": str(y[i]),
        }
        for i in range(n)
    ]


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def options(**kw: object) -> TuneOptions:
    base: dict[str, object] = dict(
        label="y",
        sensitive=SENSITIVE,
        feature_columns=FEATURES,
        batch=256,
        objective="size",
        families=("dynamic",),
        timing_rounds=1,
        seed=SEED,
        max_variants=MAX_VARIANTS,
    )
    base.update(kw)
    return TuneOptions(**base)  # type: ignore[arg-type]


def held_out(n: int, holdout: float, seed: int) -> list[int]:
    """The documented split rule, recomputed here."""
    perm = np.random.default_rng(seed).permutation(n)
    return sorted(perm[: round(n * holdout)].tolist())


@pytest.fixture(scope="module")
def near(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("near")
    model = d / "near.onnx"
    onnx.save(near_threshold_model(), model)
    rows = near_rows(ROWS)
    return {"dir": d, "model": model, "csv": write_csv(d / "near.csv", rows)}


@pytest.fixture(scope="module")
def runs(near: dict[str, Path]):  # type: ignore[no-untyped-def]
    """A search stopped after 3 variants, then resumed from its cache with the full budget."""
    cache = near["dir"] / "cache"
    short = run_tune(near["model"], near["csv"], POLICY, options=options(max_variants=3), cache_dir=cache)
    return short, run_tune(near["model"], near["csv"], POLICY, options=options(), cache_dir=cache)


@pytest.fixture(scope="module")
def tuned(runs):  # type: ignore[no-untyped-def]
    return runs[1]


def _verify_kwargs() -> dict[str, object]:
    return dict(policy=POLICY, label="y", sensitive=list(SENSITIVE), feature_columns=list(FEATURES))


def test_plain_dynamic_int8_fails_and_tune_keeps_the_harmful_node_float(near, tuned, tmp_path):  # type: ignore[no-untyped-def]
    # the oracle: plain dynamic int8 built by convert and judged by verify on the search rows
    held = set(held_out(ROWS, 0.3, SEED))
    rows = [r for i, r in enumerate(near_rows(ROWS)) if i not in held]
    search_csv = write_csv(tmp_path / "search.csv", rows)
    plain = conv.quantize(conv.load_model(near["model"]), QuantizeOptions()).model
    conv.save_model(plain, tmp_path / "plain.onnx")
    report = edgefair.verify(near["model"], tmp_path / "plain.onnx", search_csv, batch_size=256, **_verify_kwargs())
    assert report.verdict == "fail"
    assert any(r.group == "B" and r.check.metric == "negative_flip_rate" for r in report.gate.failures())
    # tune saw the same: its plain dynamic variant is that very model, and it fails
    first = tuned.variants[0]
    assert first.name == "dynamic int8 per-tensor" and first.stage == "base"
    assert first.sha256 == hashlib.sha256(plain.SerializeToString()).hexdigest()
    assert first.fairness.verdict == "fail"
    # its search-split table (from the cache) is verify's, row for row at batch 256
    (cached,) = (near["dir"] / "cache").glob(f"*/tables/{first.sha256}.json")
    table = tables.from_dict(json.loads(cached.read_text())["table"])
    assert np.array_equal(table.counts, report.table.counts) and first.scored == "at batch 256"
    # ... and it found a passing int8 variant by keeping the second MatMul in float
    chosen = tuned.chosen_variant
    assert chosen is not None and chosen.family == "dynamic" and chosen.fairness.verdict == "pass"
    kept = chosen.spec["quantize"]["nodes_to_exclude"]
    assert len(kept) == 1 and "MatMul_3" in kept[0], kept
    blob = tuned.chosen_model
    assert hashlib.sha256(blob).hexdigest() == chosen.sha256
    assert len(gzip.compress(blob, mtime=0)) < len(gzip.compress(near["model"].read_bytes(), mtime=0))
    graph = onnx.load_from_string(blob).graph
    assert sum(n.op_type == "MatMulInteger" for n in graph.node) == 1  # one layer int8, one float


def test_certificate_is_a_fresh_verify_on_the_held_out_rows_only(near, tuned, tmp_path):  # type: ignore[no-untyped-def]
    held = held_out(ROWS, 0.3, SEED)
    rows = near_rows(ROWS)
    held_csv = write_csv(tmp_path / "held.csv", [rows[i] for i in held])
    (tmp_path / "chosen.onnx").write_bytes(tuned.chosen_model)
    independent = edgefair.verify(near["model"], tmp_path / "chosen.onnx", held_csv, batch_size=256, **_verify_kwargs())
    cert = tuned.certificate
    assert cert.verdict == independent.verdict == "pass"
    assert cert.evaluation.rows == len(held) == tuned.split["holdout_rows"]
    assert np.array_equal(cert.table.counts, independent.table.counts)
    assert tuned.split["search_rows"] + tuned.split["holdout_rows"] == ROWS
    doc = output.certificate_document(tuned)
    assert doc["tune"]["split"]["seed"] == SEED and doc["tune"]["variant"]["name"] == tuned.chosen_variant.name


def test_rerun_resumes_from_the_cache_and_the_same_seed_gives_the_same_choice(near, runs):  # type: ignore[no-untyped-def]
    short, resumed = runs
    assert len(short.variants) == 3 and short.search["stopped_by_budget"] and short.chosen is None
    assert [v.cached for v in resumed.variants[:3]] == [True, True, True]
    assert not any(v.cached for v in resumed.variants[3:])
    assert resumed.search["variants_cached"] == 3
    # a fresh run (no cache) with the same seed: the same models, tables, verdicts and choice
    fresh = run_tune(near["model"], near["csv"], POLICY, options=options())
    key = [json.dumps(v.spec, sort_keys=True) for v in fresh.variants]
    assert [json.dumps(v.spec, sort_keys=True) for v in resumed.variants] == key
    for a, b in zip(resumed.variants, fresh.variants, strict=True):
        assert (a.sha256, a.fairness) == (b.sha256, b.fairness), a.name
    assert resumed.chosen_variant.sha256 == fresh.chosen_variant.sha256
    assert np.array_equal(resumed.certificate.table.counts, fresh.certificate.table.counts)


def test_outputs_validate_and_the_bundle_loads(near, runs, tuned, tmp_path):  # type: ignore[no-untyped-def]
    import jsonschema

    from edgefair.report import schema as report_schema
    from edgefair.runtime.bundle import load_bundle

    written = output.write(tuned, tmp_path / "out", [near["model"], near["csv"]])
    names = {p.name for p in written}
    assert names == {"tune.json", "tune.html", "model.onnx", "certificate.json", "bundle"}
    doc = json.loads((tmp_path / "out" / "tune.json").read_text())
    jsonschema.validate(doc, output.schema())
    jsonschema.validate(json.loads((tmp_path / "out" / "certificate.json").read_text()), report_schema())
    assert doc["frontier"] and all(doc["variants"][i]["on_frontier"] for i in doc["frontier"])
    html = (tmp_path / "out" / "tune.html").read_text()
    assert "<svg" in html and "<script" not in html
    bundle = load_bundle(tmp_path / "out" / "bundle")
    assert hashlib.sha256((tmp_path / "out" / "model.onnx").read_bytes()).hexdigest() == tuned.chosen_variant.sha256
    assert bundle is not None
    table = output.format_table(doc)
    assert "*" in table and tuned.chosen_variant.name in table
    # a rerun into the same folder that chooses nothing leaves no earlier model behind,
    # and removes only the bundle files edgefair listed
    (tmp_path / "out" / "bundle" / "notes.txt").write_text("mine")
    output.write(runs[0], tmp_path / "out")
    left = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert left == ["bundle", "tune.html", "tune.json"], left
    assert [p.name for p in (tmp_path / "out" / "bundle").iterdir()] == ["notes.txt"]


def test_frontier_is_the_non_dominated_set_and_the_choice_the_smallest_passing(near, tuned):  # type: ignore[no-untyped-def]
    src = len(gzip.compress(near["model"].read_bytes(), compresslevel=6, mtime=0))
    assert tuned.source["compressed_bytes"] == src
    sizes = {}
    for v in tuned.variants:
        if v.evaluated and v.fairness.verdict == "pass":
            blob = (near["dir"] / "cache" / "models" / f"{v.sha256}.onnx").read_bytes()
            assert hashlib.sha256(blob).hexdigest() == v.sha256
            sizes[v.sha256] = len(gzip.compress(blob, compresslevel=6, mtime=0))
    smallest = min(sizes.values())
    assert smallest < src and sizes[tuned.chosen_variant.sha256] == smallest
    points = [
        (v.objective("size", src), v.fairness.worst_excess, i) for i, v in enumerate(tuned.variants) if v.evaluated
    ]
    dominated = {i for a, b, i in points for c, e, j in points if j != i and c <= a and e <= b and (c < a or e < b)}
    assert {i for i, v in enumerate(tuned.variants) if v.on_frontier} == {i for _, _, i in points} - dominated


def test_nothing_passing_exits_1_with_the_frontier_written(near, tmp_path, capsys, monkeypatch):  # type: ignore[no-untyped-def]
    out = tmp_path / "out"
    args = ["tune", str(near["model"]), "--data", str(near["csv"]), "--label", "y", "--sensitive", "group,region"]
    args += ["--features", ",".join(FEATURES), "--batch", "256", "--objective", "size", "--max-variants", "1"]
    code, _ = _main([*args, "--seed", str(SEED), "-o", str(out)], capsys, monkeypatch)
    assert code == 1
    doc = json.loads((out / "tune.json").read_text())
    assert doc["chosen"] is None and doc["variants"][0]["fairness"]["verdict"] == "fail"
    assert doc["exit_code"] == 1 and "no variant passes" in doc["note"]
    assert not (out / "model.onnx").exists() and not (out / "bundle").exists()


def _main(argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    from edgefair.cli import main

    monkeypatch.setattr(sys, "argv", ["edgefair", *argv])
    with pytest.raises(SystemExit) as exc:
        main()
    captured = capsys.readouterr()
    if exc.value.code == 1:
        assert "nothing chosen" in captured.out
    return int(exc.value.code or 0), captured.err.strip()


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--holdout", "0"], "holdout must be a fraction between 0 and 1"),
        (["--holdout", "1"], "holdout must be a fraction between 0 and 1"),
        (["--budget-minutes", "0"], "budget_minutes must be above 0"),
        (["--batch", "0"], "batch must be a whole number of at least 1"),
        (["--objective", "speed"], "objective 'speed' is not one of latency, size"),
    ],
)
def test_bad_options_are_one_line_exit_2(near, tmp_path, capsys, monkeypatch, extra, fragment):  # type: ignore[no-untyped-def]
    args = ["tune", str(near["model"]), "--data", str(near["csv"]), "--label", "y", "--sensitive", "group,region"]
    code, err = _main([*args, *extra, "-o", str(tmp_path / "out")], capsys, monkeypatch)
    assert code == 2 and len(err.splitlines()) == 1 and fragment in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("label, sensitive", [("nope", "group,region"), ("y", "group,nope")])
def test_a_missing_column_is_one_line_exit_2(near, tmp_path, capsys, monkeypatch, label, sensitive):  # type: ignore[no-untyped-def]
    args = ["tune", str(near["model"]), "--data", str(near["csv"]), "--label", label, "--sensitive", sensitive]
    code, err = _main([*args, "-o", str(tmp_path / "out")], capsys, monkeypatch)
    assert code == 2 and len(err.splitlines()) == 1 and "no column 'nope'" in err, err
    assert not (tmp_path / "out").exists()


def test_nothing_to_compress_is_one_line_exit_2(near, tmp_path, capsys, monkeypatch):  # type: ignore[no-untyped-def]
    onnx.save(no_weights(), tmp_path / "plain.onnx")
    code, err = _main(
        ["tune", str(tmp_path / "plain.onnx"), "--data", str(near["csv"]), "-o", str(tmp_path / "o")],
        capsys,
        monkeypatch,
    )
    assert code == 2 and "nothing to compress" in err and len(err.splitlines()) == 1, err


def test_too_few_rows_says_how_many_would_decide(near, tmp_path):  # type: ignore[no-untyped-def]
    small = write_csv(tmp_path / "small.csv", near_rows(400, seed=5))
    with pytest.raises(InputError, match=r"about ([\d,]+) rows would") as exc:
        run_tune(near["model"], small, POLICY, options=options(max_variants=1))
    needed = int(str(exc.value).rsplit("about ", 1)[1].split(" rows")[0].replace(",", ""))
    assert needed > 400
    # the number is not a guess: 15% more rows of the same kind decide, 30% fewer do not
    enough = write_csv(tmp_path / "enough.csv", near_rows(int(needed * 1.15), seed=5))
    run_tune(near["model"], enough, POLICY, options=options(max_variants=1))
    few = write_csv(tmp_path / "few.csv", near_rows(int(needed * 0.7), seed=5))
    with pytest.raises(InputError, match="too few"):
        run_tune(near["model"], few, POLICY, options=options(max_variants=1))


def test_verify_batch_size_scores_in_calls_of_that_many_rows(near, tmp_path):  # type: ignore[no-untyped-def]
    plain = conv.quantize(conv.load_model(near["model"]), QuantizeOptions()).model
    conv.save_model(plain, tmp_path / "plain.onnx")
    rows = near_rows(1000, seed=9)
    data = write_csv(tmp_path / "d.csv", rows)
    x = np.array([[float(r[f]) for f in FEATURES] for r in rows], np.float32)
    sess = ort.InferenceSession(str(tmp_path / "plain.onnx"), providers=["CPUExecutionProvider"])
    for batch in (1, 256, None):
        size = batch or len(rows)
        scores = np.concatenate([sess.run(None, {"x": x[i : i + size]})[0] for i in range(0, len(rows), size)])
        expected = int((scores[:, 0] >= 0.5).sum())
        report = edgefair.verify(near["model"], tmp_path / "plain.onnx", data, batch_size=batch, **_verify_kwargs())
        positive = int(report.table.counts[:, :, :, 1].sum())  # candidate decisions 1
        assert positive == expected, (batch, positive, expected)
    with pytest.raises(InputError, match="batch_size"):
        edgefair.verify(near["model"], tmp_path / "plain.onnx", data, batch_size=0, **_verify_kwargs())


def test_tune_is_callable_after_its_package_is_imported(tmp_path: Path) -> None:
    path = tmp_path / "plain.onnx"
    onnx.save(no_weights(), path)
    import edgefair.tune.search

    assert callable(edgefair.tune) and edgefair.TuneResult.__name__ == "TuneResult"
    with pytest.raises(ModelError, match="nothing to compress"):
        edgefair.tune(path, "adult")


def test_a_batch_dependent_reference_is_scored_at_the_deployment_batch_for_every_candidate(near, tmp_path):  # type: ignore[no-untyped-def]
    from edgefair.tune.splits import SplitScorer, subset
    from edgefair.verification import api

    plain = conv.quantize(conv.load_model(near["model"]), QuantizeOptions()).model
    conv.save_model(plain, tmp_path / "plain.onnx")  # the reference now depends on the batch
    data = write_csv(tmp_path / "d.csv", near_rows(1500, seed=11))
    ds = edgefair.data.load(data)
    options = api._options(edgefair.data.resolve(data), POLICY, "y", SENSITIVE, 0.5, None, None, FEATURES)
    options = dataclasses.replace(options, batch_size=256)
    scorer = SplitScorer(tmp_path / "plain.onnx", subset(ds, np.arange(ds.rows), "search", "all"), options)
    ((table, how),) = scorer.tables([near["model"]])  # fp32: the same in one call, so scored in chunks
    assert how.startswith("in chunks")
    independent = edgefair.verify(tmp_path / "plain.onnx", near["model"], data, batch_size=256, **_verify_kwargs())
    assert np.array_equal(table.counts, independent.table.counts)


def test_latency_objective_re_times_the_fastest_passing_variants_before_choosing(near, runs):  # type: ignore[no-untyped-def]
    # the cache holds the size search's builds and tables (the latency search may try others)
    result = run_tune(
        near["model"], near["csv"], POLICY, options=options(objective="latency"), cache_dir=near["dir"] / "cache"
    )
    assert any(v.cached for v in result.variants)
    finalists = result.search["finalists"]
    passing = [i for i, v in enumerate(result.variants) if v.evaluated and v.fairness.verdict == "pass"]
    assert finalists and set(finalists) <= set(passing)
    assert len({result.variants[i].sha256 for i in finalists}) == len(finalists)
    for i in finalists:
        assert result.variants[i].latency.rounds == FINAL_REPEATS * 2  # twice timing_rounds, pooled over repeats
    if result.chosen is not None:
        chosen = result.chosen_variant
        assert chosen.sha256 in {result.variants[i].sha256 for i in finalists}
        assert chosen.latency.ratio_high < 1.0 and chosen.latency.ratio == min(
            result.variants[i].latency.ratio for i in finalists if result.variants[i].latency.ratio_high < 1.0
        )
