"""The one writer of benchmark blocks in docs/results.md (imported by the benchmark scripts)."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "results.md"


def write_block(name: str, text: str, heading: str | None = None) -> None:
    """Replace the block between ``<!-- bench:NAME:start -->`` and ``<!-- bench:NAME:end -->`` in
    docs/results.md with ``text``, or append it (after ``heading``, if given) when there is none."""
    start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
    body = DOC.read_text()
    block = f"{start}\n{text}\n{end}"
    if start in body:
        body = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: block, body, flags=re.DOTALL)
    else:
        body = body.rstrip() + (f"\n\n{heading}" if heading else "") + f"\n\n{block}\n"
    DOC.write_text(body)
