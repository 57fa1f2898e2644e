"""The runtime part of ``edgefair demo``: certify, bundle, serve rows, count, check drift."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


def runtime_demo(reference: Path, out: Path, echo: Callable[[str], None]) -> Path:
    """Bundle the dynamic-int8 variant with its certificate and stream the test split through
    a FairSession (labels arriving one batch late). Returns the bundle path."""
    from edgefair import modelio
    from edgefair import report as reports
    from edgefair.bundling import build_bundle
    from edgefair.data import load_adult
    from edgefair.runtime.session import FairSession
    from edgefair.verification.api import verify

    candidate = out / "adult_mlp.dynamic_int8.onnx"
    batch = 256  # the batch the device runs: dynamic int8 scores depend on it, so it is certified at it
    report = verify(reference, candidate, "adult", batch_size=batch)
    (cert,) = reports.write(reports.build(report), json=out / "dynamic_int8.certificate.json")
    bundle = build_bundle(candidate, out / "bundle", certificate=cert)
    echo(
        f"\n3. Bundle {candidate.name} with its certificate ({report.gate.verdict}, verified in calls of "
        f"{batch} rows, as it is served) -> {bundle}"
    )
    data = load_adult("test")
    store = out / "counters.db"
    store.unlink(missing_ok=True)
    with FairSession(bundle, store=store) as session:
        cols = modelio.build_feeds(session.signature, data.columns)  # named columns -> model feeds
        for start in range(0, data.rows, batch):
            rows = slice(start, start + batch)
            n = min(start + batch, data.rows) - start
            session.run(
                {k: v[rows] for k, v in cols.items()},
                {"race": data.columns["race"][rows], "sex": data.columns["sex"][rows]},
                ids=[str(start + i) for i in range(n)],
            )
            if start:
                late = range(start - batch, start)
                session.record_outcomes([str(i) for i in late], data.columns["income"][late].tolist())
        table = session.table()
        result = session.drift()
    echo(
        f"4. FairSession served {table.rows:,} rows ({int(table.counts[:, :2].sum()):,} with late labels); "
        f"counters in {store}"
    )
    not_pass = [r for r in result["rows"] if r["verdict"] != "pass"]
    echo(
        f"   drift against the certificate's baseline: {result['verdict']} "
        f"({len(result['rows']) - len(not_pass)} of {len(result['rows'])} group checks pass; the rest "
        "need more field rows)"
    )
    return bundle
