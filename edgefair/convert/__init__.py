"""Convert: export to ONNX, quantise, prune, check. Knows nothing of fairness."""
