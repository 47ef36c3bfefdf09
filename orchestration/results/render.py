"""Rendering tables: Markdown (GitHub), LaTeX (booktabs) and CSV (the numeric summary)."""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import pandas as pd

from orchestration.errors import ResultsError
from orchestration.results.display import Cell, DisplayTable
from orchestration.results.safe_text import csv_frame, markdown_text

Format = Literal["markdown", "latex", "csv"]
FORMATS: tuple[str, ...] = ("markdown", "latex", "csv")
EXTENSIONS: dict[str, str] = {"markdown": "md", "latex": "tex", "csv": "csv"}
"""File extension of each format."""


def _format_value(cell: Cell) -> str:
    """The number with two decimals (signed for differences; never ``-0.00``)."""
    value = cell.value if cell.value is not None and abs(cell.value) >= 0.005 else 0.0
    return f"{value:+.2f}" if cell.signed and value != 0 else f"{value:.2f}"


def to_markdown(table: DisplayTable) -> str:
    """Render as a GitHub-flavoured Markdown table with the caption above and notes below."""
    lines = [
        f"**{markdown_text(table.title)}**",
        "",
        "| " + " | ".join(markdown_text(h).replace("|", "\\|") for h in table.header) + " |",
        "|"
        + "|".join(":---" if i < table.label_columns else "---:" for i, _ in enumerate(table.header))
        + "|",
    ]
    for row in table.rows:
        lines.append("| " + " | ".join(cell_text(c, MARKDOWN).replace("|", "\\|") for c in row) + " |")
    if table.notes:
        lines += [""] + [f"{markdown_text(note)}  " for note in table.notes]
    return "\n".join(lines) + "\n"


_LATEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\^{}",
    "Δ": r"$\Delta$",
    "†": r"$^\dagger$",
    "±": r"$\pm$",
    "<": r"$<$",
    ">": r"$>$",
}


def latex_escape(text: str) -> str:
    """Escape LaTeX special characters (and map Δ, †, ± to math)."""
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)


@dataclass(frozen=True)
class CellMarkup:
    """How one output format writes a cell's parts (:func:`cell_text`).

    Attributes:
        escape: Escapes a cell's plain text.
        empty: An empty cell.
        plus_minus: Between a value and its std.
        approx: Before an approximate value.
        bold: Wraps the best value.
        flag: After a difference beyond tolerance.
    """

    escape: Callable[[str], str]
    empty: str
    plus_minus: str
    approx: str
    bold: Callable[[str], str]
    flag: str


MARKDOWN = CellMarkup(
    escape=markdown_text, empty="–", plus_minus=" ± ", approx="~", bold=lambda text: f"**{text}**", flag=" †"
)
LATEX = CellMarkup(
    escape=latex_escape,
    empty="--",
    plus_minus=r" $\pm$ ",
    approx=r"$\approx$",
    bold=lambda text: rf"\textbf{{{text}}}",
    flag=r"$^\dagger$",
)
HTML = CellMarkup(
    escape=html.escape,
    empty="–",
    plus_minus=" ± ",
    approx="~",
    bold=lambda text: f"<strong>{text}</strong>",
    flag=" †",
)


def cell_text(cell: Cell, markup: CellMarkup) -> str:
    """A cell as text of one format — the one place a cell's value, spread, seed count and marks are
    written, for Markdown (:data:`MARKDOWN`), LaTeX (:data:`LATEX`) and HTML (:data:`HTML`)."""
    if cell.value is None:
        return markup.escape(cell.text) if cell.text is not None else markup.empty
    text = _format_value(cell)
    if cell.std is not None:
        text += f"{markup.plus_minus}{cell.std:.2f}"
    if cell.n is not None:
        text += f" (n={cell.n})"
    if cell.approx:
        text = markup.approx + text
    if cell.bold:
        text = markup.bold(text)
    if cell.flag:
        text += markup.flag
    return text


def to_latex(table: DisplayTable) -> str:
    """Render as a booktabs ``table`` environment (needs ``\\usepackage{booktabs}``)."""
    spec = "l" * table.label_columns + "r" * (len(table.header) - table.label_columns)
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{latex_escape(table.title)}}}",
        *([rf"\label{{{table.label}}}"] if table.label else []),
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        " & ".join(latex_escape(h) for h in table.header) + r" \\",
        r"\midrule",
    ]
    for i, row in enumerate(table.rows):
        if i in table.rules and i > 0:
            lines.append(r"\midrule")
        if i in table.subrules:
            lines.append(rf"\cmidrule(l){{2-{len(table.header)}}}")
        lines.append(" & ".join(cell_text(c, LATEX) for c in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if table.notes:
        lines.append(r"\\[2pt]{\footnotesize " + r"; ".join(latex_escape(n) for n in table.notes) + "}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def to_csv(summary: pd.DataFrame) -> str:
    """The numeric summary as CSV: numbers rounded to 4 decimals, empty cells for missing values,
    text cells a spreadsheet would evaluate neutralised (:func:`~.safe_text.csv_frame`)."""
    return csv_frame(summary).to_csv(index=False, float_format="%.4f", lineterminator="\n")


@dataclass(frozen=True)
class RenderedTable:
    """One table of an experiment: its name, numeric summary and layout.

    Attributes:
        name: The table's kind (``base2new``, ``few_shot``, ...).
        summary: The numeric summary (the CSV).
        display: The layout Markdown (and, without ``latex_display``, LaTeX) renders.
        latex_display: The LaTeX layout when it differs (published numbers as rows).
    """

    name: str
    summary: pd.DataFrame
    display: DisplayTable
    latex_display: DisplayTable | None = None

    def render(self, fmt: Format) -> str:
        """The table in ``markdown``, ``latex`` or ``csv``."""
        if fmt == "markdown":
            return to_markdown(self.display)
        if fmt == "latex":
            return to_latex(self.latex_display or self.display)
        if fmt == "csv":
            return to_csv(self.summary)
        raise ResultsError(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}")


def render_tables(tables: Sequence[RenderedTable], fmt: Format) -> str:
    """Render several tables in one format (CSV: only one table at a time)."""
    if fmt == "csv" and len(tables) > 1:
        names = ", ".join(t.name for t in tables)
        raise ResultsError(f"--format csv writes one table, but these runs give several ({names})")
    return "\n".join(t.render(fmt) for t in tables)
