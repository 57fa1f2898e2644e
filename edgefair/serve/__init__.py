"""Serve: the Open Inference Protocol (KServe v2) over HTTP, with fairness counters."""
