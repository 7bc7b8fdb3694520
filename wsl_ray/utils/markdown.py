"""The one Markdown table writer of the project (sweep summaries, confirmation, analysis,
benchmarks)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def markdown_table(header: Sequence[Any], rows: Sequence[Sequence[Any]]) -> str:
    """`| h1 | h2 |`, `|---|---|`, then one `| c1 | c2 |` line per row (cells via str)."""
    lines = ["| " + " | ".join(str(h) for h in header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def markdown_records(rows: Sequence[dict[str, Any]]) -> str:
    """A table of dicts: the columns are their keys in first-seen order, a missing cell is
    empty."""
    header = list(dict.fromkeys(k for r in rows for k in r))
    return markdown_table(header, [[r.get(h, "") for h in header] for r in rows])
