"""Rendering tables: Markdown (GitHub), LaTeX (booktabs) and CSV (the numeric summary)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import pandas as pd

from orchestration.errors import ResultsError
from orchestration.results.display import (
    INTERVAL_NOTE,
    Cell,
    DisplayTable,
    cell_text,
    format_value,
    has_intervals,
)
from orchestration.results.safe_text import csv_frame, markdown_text

Format = Literal["markdown", "latex", "csv"]
FORMATS: tuple[str, ...] = ("markdown", "latex", "csv")
EXTENSIONS: dict[str, str] = {"markdown": "md", "latex": "tex", "csv": "csv"}
"""File extension of each format."""


LATEX_INTERVAL_CAPTION = (
    "mean $\\pm$ half-width of the 95\\% interval (Student t over seeds; HM and Average rows: half the "
    "width of a paired bootstrap interval); exact bounds and the std in the CSV"
)


def _cell_markdown(cell: Cell) -> str:
    if cell.value is None:
        return markdown_text(cell.text) if cell.text is not None else "–"
    text = cell_text(cell)
    if cell.bold:
        text = f"**{text}**"
    if cell.flag:
        text += " †"
    return text


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
        lines.append("| " + " | ".join(_cell_markdown(c).replace("|", "\\|") for c in row) + " |")
    notes = [*table.notes, INTERVAL_NOTE] if has_intervals(table) else table.notes
    if notes:
        lines += [""] + [f"{markdown_text(note)}  " for note in notes]
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
    "−": r"$-$",
    "†": r"$^\dagger$",
    "±": r"$\pm$",
    "<": r"$<$",
    ">": r"$>$",
}


def latex_escape(text: str) -> str:
    """Escape LaTeX special characters (and map Δ, †, ± to math)."""
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)


def _cell_latex(cell: Cell) -> str:
    if cell.value is None:
        return latex_escape(cell.text) if cell.text is not None else "--"
    text = format_value(cell)
    if cell.has_interval:
        text += rf"\,$\pm$\,{(cell.high - cell.low) / 2:.2f}"  # type: ignore[operator]
    elif cell.std is not None:
        text += rf" $\pm$ {cell.std:.2f}"
    if cell.n is not None:
        text += f" (n={cell.n})"
    if cell.approx:
        text = r"$\approx$" + text
    if cell.bold:
        text = rf"\textbf{{{text}}}"
    if cell.flag:
        text += r"$^\dagger$"
    return text


def to_latex(table: DisplayTable) -> str:
    """Render as a booktabs ``table`` environment (needs ``\\usepackage{booktabs}``)."""
    spec = "l" * table.label_columns + "r" * (len(table.header) - table.label_columns)
    caption_tail = "; " + LATEX_INTERVAL_CAPTION if has_intervals(table) else ""
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{latex_escape(table.title)}{caption_tail}}}",
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
        lines.append(" & ".join(_cell_latex(c) for c in row) + r" \\")
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
