"""Numbers only, no ONNX: the counts table, metrics declared on its cells, intervals and
tests, and fairlearn's MetricFrame answers computed from a table."""
