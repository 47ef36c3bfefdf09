"""Display tables: formatted cells (bold best, ``± std``, seed counts, flags), before rendering.

A table kind lays out its numeric summary as a :class:`DisplayTable` of :class:`Cell` s;
``orchestration.results.render`` writes it as Markdown or LaTeX.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

import pandas as pd


@dataclass(frozen=True)
class Cell:
    """One formatted table cell.

    Attributes:
        value: The number shown (None: an empty cell, or ``text``).
        std: Shown as ``± std`` after the value.
        n: Seed count, shown when fewer seeds than expected.
        text: Plain text instead of a number.
        bold: Best in its column.
        flag: A difference beyond tolerance (marked ``†``).
        approx: An approximate reference value (marked ``~``).
        signed: Show an explicit sign (differences).
        low, high: A 95% interval, shown as ``[low, high]`` (Markdown, HTML) or as ``± half-width``
            in place of the std (LaTeX).
    """

    value: float | None = None
    std: float | None = None
    n: int | None = None
    text: str | None = None
    bold: bool = False
    flag: bool = False
    approx: bool = False
    signed: bool = False
    low: float | None = None
    high: float | None = None

    @property
    def has_interval(self) -> bool:
        return self.low is not None and self.high is not None


INTERVAL_NOTE = "a ± s [l, h]: seed mean ± sample std [95% interval]"
"""The note under a Markdown or HTML table whose cells carry intervals (``render.table_notes``)."""


def has_intervals(table: DisplayTable) -> bool:
    """Whether any cell of the table carries an interval."""
    return any(cell.has_interval for row in table.rows for cell in row)


@dataclass
class DisplayTable:
    """A table ready to render: a header, rows of cells, rule positions and footnotes.

    Attributes:
        title: Caption.
        header: Column titles.
        rows: Rows of cells, each as long as ``header``.
        rules: Row indices before which a horizontal rule is drawn (dataset blocks).
        notes: Footnotes printed under the table.
        label_columns: How many leading columns hold labels (left-aligned); the rest hold numbers.
        label: LaTeX label (``tab:<sweep>-<table>``); empty: none.
        subrules: Row indices before which a rule under all but the first column is drawn (the
            published rows of a dataset block).
    """

    title: str
    header: list[str]
    rows: list[list[Cell]] = field(default_factory=list)
    rules: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    label_columns: int = 1
    label: str = ""
    subrules: list[int] = field(default_factory=list)


def is_number(value: float | None) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def number(value: object) -> float | None:
    """A float, or None for missing values."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    return float(value)  # type: ignore[arg-type]


def bold_best(rows: list[list[Cell]], columns: Iterable[int], *, lower_is_better: bool = False) -> None:
    """Mark the best value of each given column in bold (ties all bold; needs two values or more)."""
    for column in columns:
        values = [r[column].value for r in rows if is_number(r[column].value)]
        if len(values) < 2:
            continue
        best = min(values) if lower_is_better else max(values)
        for row in rows:
            cell = row[column]
            if is_number(cell.value) and round(cell.value, 2) == round(best, 2):
                row[column] = replace(cell, bold=True)
