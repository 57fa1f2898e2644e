"""A small edge app: load a bundle, stream Adult rows through FairSession in small batches,
feed the labels later, print the counters and the drift verdict.

    python examples/edge_app.py [BUNDLE_DIR]

Without a bundle it builds one (the dynamic-int8 reference MLP, certified by verify).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from edgefair import modelio
from edgefair.data import load_adult
from edgefair.runtime import FairSession


def make_bundle(folder: Path) -> Path:
    """Convert, verify and bundle the reference MLP (what a CI job would ship)."""

    import edgefair
    from edgefair import convert as conv
    from edgefair.bundling import build_bundle
    from edgefair.convert.common import load_model, save_model
    from edgefair.convert.quantize import QuantizeOptions, QuantMode
    from edgefair.files import write_text

    root = Path(__file__).resolve().parents[1] / "models" / "adult_mlp.onnx"
    options = conv.ConvertOptions(quantize=QuantizeOptions(mode=QuantMode.DYNAMIC_INT8))
    int8 = save_model(conv.convert(load_model(root), options).model, folder / "adult_mlp.int8.onnx")
    report = edgefair.verify(root, int8, "adult")
    cert = write_text(folder / "certificate.json", edgefair.report.build(report).to_json())
    return build_bundle(int8, folder / "bundle", certificate=cert)


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="edge-app-"))
    bundle = Path(sys.argv[1]) if len(sys.argv) > 1 else make_bundle(work)
    data = load_adult("test")
    with FairSession(bundle, store=work / "counters.db") as session:
        columns = modelio.build_feeds(session.signature, data.columns)  # named columns -> model feeds
        batch = 32
        for start in range(0, data.rows, batch):
            rows = slice(start, start + batch)
            ids = [f"row-{i}" for i in range(start, min(start + batch, data.rows))]
            session.run(
                {k: v[rows] for k, v in columns.items()},
                sensitive={"race": data.columns["race"][rows], "sex": data.columns["sex"][rows]},
                ids=ids,
            )
            # labels arrive later: here, one batch behind
            if start >= batch:
                late = range(start - batch, start)
                session.record_outcomes([f"row-{i}" for i in late], data.columns["income"][late].tolist())
        table = session.table()
        print(
            f"{table.rows:,} predictions, {int(table.counts[:, :2].sum()):,} with outcomes; "
            f"outcomes joined: {session.counters.outcomes.joined:,}"
        )
        from edgefair.core.frame import MetricFrame

        frame = MetricFrame(table.marginal(["race"]), ("count", "selection_rate", "true_positive_rate"))
        for group, row in frame.by_group.items():
            print(
                f"  {group:20s} {int(row['count']):6d}  selection {row['selection_rate']:.3f}  "
                f"TPR {row['true_positive_rate']:.3f}"
            )
        result = session.drift()
        print(f"drift against the verified baseline: {result['verdict']}")
        for row in result["rows"]:
            if row["verdict"] == "fail":
                print(f"  {row['metric']} {row['group']}: {row.get('interval')}")
    print(f"counters stored in {work / 'counters.db'}")


if __name__ == "__main__":
    main()
