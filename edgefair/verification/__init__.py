"""Verify: run reference and candidates over labelled data into paired tables (evaluate),
read policies (policy), gate them (gate), and the ``verify``/``compare`` calls (api)."""
