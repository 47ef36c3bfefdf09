"""Text from run data entering what researchers open: Markdown that stays text, CSV cells no
spreadsheet evaluates.

Names, failure reasons, error tags and experiment names come from the ledger, a runs CSV or a
shared tracking server; in a generated file they are data, never markup or formulas:

- :func:`markdown_text` and :func:`markdown_code` — one line of Markdown that a CommonMark
  renderer shows as exactly the text: no raw HTML, no link or image (so no external resource), no
  emphasis, no block started mid-report.
- :func:`csv_cell` and :func:`csv_frame` — the OWASP rule for CSV injection: a text cell starting
  with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return gets a leading ``'``; numbers (and
  text that is a plain number, ``inf`` or ``nan``) stay as they are.

Figure labels are drawn literally by the figures' style (``text.parse_math`` off,
``orchestration.results.figure_style.STYLE``).
"""

from __future__ import annotations

import re
from typing import Any

import pandas as pd

_HTML = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_MARKDOWN_PUNCTUATION = set("\\`*_~")
_BRACKETS = set("[]")
_LINK_FORMING = re.compile(r"\][(\[:]")
"""A ``]`` that closes a link, an image, a full reference or a reference definition."""
_LINE_START = re.compile(r"(#{1,6}|[-+]|\d{1,9}[.)])(?=[ \t]|$)|[-=]+$")
"""What opens a block at the start of a line (CommonMark): an ATX heading, a bullet or an ordered
list marker followed by a space or the line's end, a thematic break or setext underline."""
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
"""What a spreadsheet evaluates at the start of a cell (OWASP, CSV injection)."""
_PLAIN_NUMBER = re.compile(r"[+-]?((\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|inf|infinity|nan)", re.IGNORECASE)


def markdown_text(text: Any) -> str:
    """``text`` as one line of Markdown shown literally: line breaks become spaces, ``& < >``
    become entities (no raw HTML, no autolink), the punctuation of emphasis and code spans is
    backslash-escaped, brackets too wherever a ``]`` could close a link, an image or a reference
    (so a plain ``[-1.72, +7.13]`` or ``0.165`` stays as written), and nothing at its start can
    open a block (heading, list, thematic break). A table cell's ``|`` is the table's to escape."""
    line = " ".join(str(text).split())
    punctuation = _MARKDOWN_PUNCTUATION | (_BRACKETS if _LINK_FORMING.search(line) else set())
    out = []
    for char in line:
        if char in _HTML:
            out.append(_HTML[char])
        elif char in punctuation:
            out.append("\\" + char)
        else:
            out.append(char)
    escaped = "".join(out)
    start = _LINE_START.match(escaped)
    if start is not None:  # escape an ordered list's delimiter, else the opening punctuation
        at = start.end(1) - 1 if start[1] and start[1][0].isdigit() else 0
        escaped = escaped[:at] + "\\" + escaped[at:]
    return escaped


def markdown_code(text: Any) -> str:
    """``text`` as one inline code span (shown verbatim, never markup): line breaks become spaces,
    and the fence is longer than any run of backticks inside."""
    line = " ".join(str(text).split())
    longest = max((len(run) for run in re.findall(r"`+", line)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if line.startswith("`") or line.endswith("`") else ""
    return f"{fence}{pad}{line}{pad}{fence}"


def csv_cell(value: Any) -> Any:
    """``value`` for a CSV cell: a text starting with a formula trigger (and not a plain number)
    gets a leading ``'``; every other value is returned unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_TRIGGERS) and not _PLAIN_NUMBER.fullmatch(value):
        return "'" + value
    return value


def csv_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with :func:`csv_cell` applied to its text columns (numeric columns untouched) and
    to its column names."""
    text_columns = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    safe = frame.copy()
    for column in text_columns:
        safe[column] = safe[column].map(csv_cell)
    return safe.rename(columns=lambda name: csv_cell(name) if isinstance(name, str) else name)


__all__ = [
    "FORMULA_TRIGGERS",
    "csv_cell",
    "csv_frame",
    "markdown_code",
    "markdown_text",
]
