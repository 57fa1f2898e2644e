"""Reports: the JSON certificate and its schema, Markdown for pull requests, HTML to look
at, and plain text for terminals. They read verification results; verification never
imports them.

    rendered = edgefair.report.build(edgefair.verify(...))   # the document, built once
    rendered.doc, rendered.to_markdown(), rendered.to_html()
    edgefair.report.write(rendered, json="r.json", html="r.html")
"""

from __future__ import annotations

import json as _json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgefair.files import refuse_overwriting_inputs, write_text
from edgefair.report.document import compare_document, json_safe, schema, verify_document
from edgefair.report.html import compare_html, verify_html
from edgefair.report.markdown import compare_markdown, verify_markdown
from edgefair.verification.api import CompareReport, VerifyReport


@dataclass(frozen=True)
class Report:
    """A verify or compare result as a JSON-ready document, with its renderings."""

    doc: dict[str, Any]

    @property
    def is_compare(self) -> bool:
        return bool(self.doc.get("kind") == "edgefair.compare_report")

    def to_json(self) -> str:
        return _json.dumps(self.doc, indent=2, allow_nan=False) + "\n"

    def to_markdown(self) -> str:
        return compare_markdown(self.doc) if self.is_compare else verify_markdown(self.doc)

    def to_html(self) -> str:
        return compare_html(self.doc) if self.is_compare else verify_html(self.doc)


def build(result: VerifyReport | CompareReport) -> Report:
    """The report document of a verify or compare result (built once; render it as you like)."""
    if isinstance(result, CompareReport):
        return Report(compare_document(result))
    return Report(verify_document(result))


def write(
    report: Report,
    *,
    json: str | Path | None = None,
    markdown: str | Path | None = None,
    html: str | Path | None = None,
    inputs: Sequence[str | Path] = (),
) -> list[Path]:
    """Write the requested renderings atomically; refuse a target that is one of ``inputs``."""
    targets = [(p, r) for p, r in ((json, report.to_json), (markdown, report.to_markdown), (html, report.to_html)) if p]
    refuse_overwriting_inputs([p for p, _ in targets], inputs)
    return [write_text(path, render()) for path, render in targets]


__all__ = ["Report", "build", "json_safe", "schema", "write", "write_text"]
