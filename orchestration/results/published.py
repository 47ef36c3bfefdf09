"""Published numbers: the paper's base-to-new results, and our difference to them (flags).

The shipped reference (``orchestration/resources/published_base2new.csv``) or a CSV of the same
columns. A difference is flagged when it exceeds both :data:`DELTA_POINTS` points and
:data:`DELTA_STDS` of our seed standard deviations.
"""

from __future__ import annotations

import math
from importlib import resources
from pathlib import Path

import pandas as pd

from orchestration.errors import ResultsError
from orchestration.ledger.runs import read_csv_file

DELTA_POINTS = 1.0
"""A difference to the paper is flagged when it exceeds both this many points..."""
DELTA_STDS = 2.0
"""...and this many of our seed standard deviations."""

PUBLISHED_COLUMNS: tuple[str, ...] = ("method", "dataset", "base", "new", "hm", "provenance")

PUBLISHED_METHOD_NAMES: dict[str, str] = {"clip": "zeroshot"}
"""The papers' names for our methods: their "CLIP" row is zero-shot CLIP (``zeroshot`` here)."""


def default_published_path() -> Path:
    """The published base-to-new numbers shipped with the package."""
    return Path(str(resources.files("orchestration") / "resources" / "published_base2new.csv"))


def load_published(path: Path | str | None = None) -> pd.DataFrame:
    """Read published base-to-new numbers (``method,dataset,base,new,hm[,provenance]``).

    Args:
        path: The CSV; the shipped reference by default.

    Raises:
        ResultsError: The file is missing or a column is missing or not numeric.
    """
    path = Path(path) if path is not None else default_published_path()
    table = read_csv_file(path, "published numbers")
    missing = [c for c in PUBLISHED_COLUMNS[:5] if c not in table.columns]
    if missing:
        raise ResultsError(f"{path}: missing column(s) {', '.join(missing)}")
    for column in ("base", "new", "hm"):
        numbers = pd.to_numeric(table[column], errors="coerce")
        if numbers.isna().any():
            raise ResultsError(
                f"{path}: column {column!r} must be numeric (row {int(numbers.isna().argmax()) + 2})"
            )
        table[column] = numbers.astype("float64")
    if "provenance" not in table.columns:
        table["provenance"] = "published"
    table["method"] = table["method"].astype(str).replace(PUBLISHED_METHOD_NAMES)
    table["dataset"] = table["dataset"].astype(str)
    return table[list(PUBLISHED_COLUMNS)]


def add_published(summary: pd.DataFrame, published: pd.DataFrame) -> pd.DataFrame:
    """Add the paper's numbers, our difference to them and flags to a base-to-new summary.

    A difference is flagged when |Δ| exceeds both :data:`DELTA_POINTS` points and
    :data:`DELTA_STDS` of our seed standard deviations (HM and Average rows have no std: 1 point).

    Returns:
        The summary plus ``paper_base, paper_new, paper_hm, delta_base, delta_new, delta_hm,
        flag_base, flag_new, flag_hm, provenance`` (empty where the paper has no number).
    """
    paper = published.rename(columns={"base": "paper_base", "new": "paper_new", "hm": "paper_hm"})
    merged = summary.merge(paper, on=["method", "dataset"], how="left")
    for metric in ("base", "new", "hm"):
        delta = merged[metric] - merged[f"paper_{metric}"]
        std = (
            merged[f"{metric}_std"] if f"{metric}_std" in merged else pd.Series(math.nan, index=merged.index)
        )
        tolerance = (DELTA_STDS * std).where(std.notna() & (DELTA_STDS * std > DELTA_POINTS), DELTA_POINTS)
        merged[f"delta_{metric}"] = delta
        merged[f"flag_{metric}"] = delta.abs() > tolerance
    merged["provenance"] = merged["provenance"].fillna("")
    columns = [
        *summary.columns,
        "paper_base",
        "paper_new",
        "paper_hm",
        "delta_base",
        "delta_new",
        "delta_hm",
        "flag_base",
        "flag_new",
        "flag_hm",
        "provenance",
    ]
    return merged[columns]
