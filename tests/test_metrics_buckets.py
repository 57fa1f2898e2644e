"""Request latencies land in Prometheus buckets by `le` (less than or equal): a latency equal
to a bound counts in that bound's bucket, one just above it in the next, past the last in +Inf.
The oracle is the definition, written out here."""

from __future__ import annotations

import math

from edgefair.serve.metrics import BUCKETS, Metrics


def test_latencies_land_in_the_first_bucket_whose_bound_is_not_below_them():
    for k, bound in enumerate(BUCKETS):
        for seconds, expected in ((bound, k), (math.nextafter(bound, 0.0), k), (math.nextafter(bound, 9.0), k + 1)):
            metrics = Metrics()
            metrics.request("infer", 200, seconds)
            assert metrics.latency["infer"].index(1) == expected, (seconds, expected)
    metrics = Metrics()
    for seconds in (0.0, 1e-9, 99.0):
        metrics.request("other", 200, seconds)
    assert metrics.latency["other"][0] == 2 and metrics.latency["other"][-1] == 1
    assert metrics.latency_sum["other"] == 99.0 + 1e-9
    assert metrics.requests == {("other", 200): 3}
