"""A whole ``edgefair tune`` of the bundled Adult MLP, with its figures.

    python tools/bench/tune.py                 # the full search at batch 1 (target: under 3 minutes)
    python tools/bench/tune.py --batch 256
    python tools/bench/tune.py --max-variants 8   # a quick smoke run

Prints the variants tried and the time, the Pareto table, the chosen variant's latency ratio
to fp32 at batch 1 and at batch 256 (whole model, one thread, after the search: one
interleaved run of 31 rounds, the bench's criterion, and beside it four independent runs
of 31 rounds pooled, tune's own final rule) and its held-out verdict, and where structured 50%
pruning landed (its verdict, whether it is on the frontier, whether it was chosen). Writes
the usual OUT_DIR (default: a temporary folder) so tune.html can be looked at.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from edgefair.tune import TuneOptions, tune  # noqa: E402
from edgefair.tune.measure import time_models  # noqa: E402
from edgefair.tune.output import format_table, tune_document, write  # noqa: E402

MODEL = ROOT / "edgefair" / "demo" / "models" / "adult_mlp.onnx"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1, help="deployment batch of the search")
    parser.add_argument("--max-variants", type=int, default=None)
    parser.add_argument("--budget-minutes", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-o", "--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="edgefair-bench-tune-")) / "out"

    def progress(p: object) -> None:
        best = getattr(p, "best", None)
        sys.stderr.write(f"\r\x1b[K  {getattr(p, 'tried', 0)} variants, best so far: {best or 'none passing yet'}")
        sys.stderr.flush()

    started = time.perf_counter()
    result = tune(
        MODEL,
        "adult",
        options=TuneOptions(
            batch=args.batch, max_variants=args.max_variants, budget_minutes=args.budget_minutes, seed=args.seed
        ),
        cache_dir=None,
        progress=progress,
    )
    elapsed = time.perf_counter() - started
    sys.stderr.write("\n")
    written = write(result, out)
    doc = tune_document(result)
    print(format_table(doc))
    print()
    evaluated = sum(v.evaluated for v in result.variants)
    print(
        f"search: {len(result.variants)} variants tried ({evaluated} built and scored) in {elapsed:.1f} s "
        f"(target: under 180 s on 2 cores); search split {result.split['search_rows']} rows, held-out "
        f"{result.split['holdout_rows']} rows, seed {args.seed}, batch {args.batch}"
    )
    chosen = result.chosen_variant
    if chosen is None or result.chosen_model is None:
        print(f"chosen: none ({result.note})")
    else:
        source = MODEL.read_bytes()
        feeds = _feeds()
        ratios = {b: time_models(source, [result.chosen_model], feeds, b, rounds=31)[0] for b in (1, 256)}
        shown = ", ".join(
            f"batch {b}: {lat.ratio:.3f}x fp32 (upper quartile {lat.ratio_high:.3f}, "
            f"{lat.seconds * 1e6:.0f} vs {lat.source_seconds * 1e6:.0f} us)"
            for b, lat in ratios.items()
        )
        both = all(lat.faster for lat in ratios.values())
        print(f"chosen: {chosen.name}; latency {shown}; faster at both batches: {'yes' if both else 'NO'}")
        pooled = {
            b: time_models(source, [result.chosen_model], feeds, b, rounds=31, seed=100, repeats=4)[0] for b in (1, 256)
        }
        shown = ", ".join(
            f"batch {b}: {lat.ratio:.3f}x (upper quartile {lat.ratio_high:.3f})" for b, lat in pooled.items()
        )
        print(
            f"  pooled, 4 independent runs x 31 rounds: {shown}; faster at both: "
            f"{'yes' if all(lat.faster for lat in pooled.values()) else 'NO'}"
        )
        if chosen.latency is not None:
            print(
                f"  tune's own pooled final timing at batch {args.batch}: {chosen.latency.ratio:.3f}x "
                f"(upper quartile {chosen.latency.ratio_high:.3f}, {chosen.latency.rounds} rounds), "
                f"finalists {len(result.search['finalists'])}"
            )
        print(f"held-out certificate: {result.verdict.upper()} on {result.split['holdout_rows']} rows")
    s50 = [v for v in result.variants if v.name == "structured 50%"]
    if s50 and (fair := s50[0].fairness) is not None:
        v = s50[0]
        lat = f"{v.latency.ratio:.3f}x" if v.latency else "-"
        print(
            f"structured 50%: {fair.verdict} on the search split (worst {fair.worst_check}, excess "
            f"{fair.worst_excess:+.4f}), latency {lat}, on the frontier: {'yes' if v.on_frontier else 'no'}, "
            f"chosen: {'yes' if chosen is not None and chosen.name == v.name else 'no'}"
        )
    else:
        print("structured 50%: not tried (budget)")
    print(f"wrote {', '.join(str(p) for p in written)}")
    return result.exit_code


def _feeds() -> dict[str, np.ndarray]:
    from edgefair import data, modelio

    ds = data.load("adult", 256)
    sig = modelio.signature(modelio.open_session(MODEL.read_bytes()))
    return dict(modelio.build_feeds(sig, ds.columns, exclude=[data.adult.ADULT_LABEL], source="adult"))


if __name__ == "__main__":
    raise SystemExit(main())
