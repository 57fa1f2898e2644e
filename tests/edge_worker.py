"""A tiny edge process for the crash and merge tests: streams Adult rows through a
FairSession with a store, printing "ack N" after each acknowledged batch."""

from __future__ import annotations

import sys

import numpy as np

from edgefair.data import ADULT_FEATURES, load_adult
from edgefair.runtime.session import FairSession


def main() -> None:
    bundle, store, start, stop, batch = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
    flush_rows = int(sys.argv[6]) if len(sys.argv) > 6 else 200
    data = load_adult("test")
    cols = {
        k: data.columns[k].reshape(-1, 1).astype(np.float32 if data.columns[k].dtype.kind == "f" else object)
        for k in ADULT_FEATURES
    }
    sent = 0
    with FairSession(bundle, store=store, flush_rows=flush_rows, flush_seconds=0.2) as fs:
        while True:  # loops over the rows again until killed or done
            for s in range(start, stop, batch):
                e = min(s + batch, stop)
                fs.run(
                    {k: v[s:e] for k, v in cols.items()},
                    {"race": data.columns["race"][s:e], "sex": data.columns["sex"][s:e]},
                )
                sent += e - s
                print(f"ack {sent}", flush=True)
            if "--once" in sys.argv:
                break


if __name__ == "__main__":
    main()
