"""Verify: run reference and candidates over labelled data, gate on a policy."""
