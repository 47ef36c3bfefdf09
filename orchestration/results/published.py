"""Published numbers: the paper's base-to-new results, and our difference to them (flags).

The shipped reference (``orchestration/resources/published_base2new.csv``) or a CSV of the same
columns. Every shipped row names its ``source`` (a repository file at a commit, or ``recalled:``
and the paper table it was recalled from, or ``derived:`` and how). Rows may belong to one
``variant`` of the reference (the papers print two CoOp rows): :data:`DEFAULT_VARIANT` unless
asked otherwise. A difference is flagged when it exceeds both :data:`DELTA_POINTS` points and
:data:`DELTA_STDS` of our seed standard deviations.

The paper's Average is an average over its 11 datasets; it stands only beside an Average of ours
over the same 11. For an Average over a subset, :func:`subset_average` recomputes the paper's
from its per-dataset numbers (none when one is missing).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import pandas as pd

from orchestration.errors import ResultsError
from orchestration.ledger.runs import read_csv_file
from orchestration.results.labels import AVERAGE
from prometar.data import catalog
from prometar.protocols import harmonic_mean

DELTA_POINTS = 1.0
"""A difference to the paper is flagged when it exceeds both this many points..."""
DELTA_STDS = 2.0
"""...and this many of our seed standard deviations."""

PUBLISHED_COLUMNS: tuple[str, ...] = ("method", "dataset", "base", "new", "hm", "provenance", "source")

VARIANTS: dict[str, str] = {
    "promptsrc": "the CoOp row of PromptSRC's and ProMetaR's tables (82.69 / 63.22 / 71.66; per dataset from "
    "CoCoOp's Table 1)",
    "kgcoop": "the CoOp row of KgCoOp's README (82.63 / 67.99 / 74.60; average only)",
}
"""Variants of the shipped reference: rows with an empty ``variant`` belong to all of them."""
DEFAULT_VARIANT = "promptsrc"
"""The variant compared with by default: the one ProMetaR's paper compares with."""

PUBLISHED_METHOD_NAMES: dict[str, str] = {"clip": "zeroshot"}
"""The papers' names for our methods: their "CLIP" row is zero-shot CLIP (``zeroshot`` here)."""


def default_published_path() -> Path:
    """The published base-to-new numbers shipped with the package."""
    return Path(str(resources.files("orchestration") / "resources" / "published_base2new.csv"))


def load_published(path: Path | str | None = None, *, variant: str = DEFAULT_VARIANT) -> pd.DataFrame:
    """Read published base-to-new numbers (``method,dataset,base,new,hm[,provenance,variant,source]``).

    Args:
        path: The CSV; the shipped reference by default.
        variant: Keep the rows of this variant (and those of none); a file without a ``variant``
            column keeps every row.

    Raises:
        ResultsError: The file is missing, a column is missing or not numeric, the variant is not
            one of the file's, or one (method, dataset) has several rows.
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
    if "source" not in table.columns:
        table["source"] = ""
    table["source"] = table["source"].fillna("").astype(str)
    if "variant" in table.columns:
        variants = table["variant"].fillna("").astype(str)
        known = sorted(set(variants) - {""})
        if known and variant not in known:
            raise ResultsError(f"{path}: no published variant {variant!r} (variants: {', '.join(known)})")
        table = table[variants.isin(["", variant])].reset_index(drop=True)
    table["method"] = table["method"].astype(str).replace(PUBLISHED_METHOD_NAMES)
    table["dataset"] = table["dataset"].astype(str)
    duplicated = table.duplicated(["method", "dataset"], keep=False)
    if duplicated.any():
        first = table[duplicated].iloc[0]
        raise ResultsError(
            f"{path}: several rows for method {first['method']!r}, dataset {first['dataset']!r} "
            "(tell them apart with a 'variant' column)"
        )
    return table[list(PUBLISHED_COLUMNS)]


def subset_average(published: pd.DataFrame, datasets: Sequence[str]) -> pd.DataFrame:
    """The paper's Average recomputed over ``datasets``, as our Average row is, per method.

    Base and new are the means of the per-dataset numbers and HM is taken of those two (never the
    mean of HMs). A method without a number for one of the datasets gets no row. Over the paper's
    own 11 datasets this is the paper's printed Average row instead.

    Returns:
        Rows ``method, dataset="average", base, new, hm, provenance, source``; ``source`` says
        ``paper, same k datasets`` (and the per-dataset sources) for a recomputed row.
    """
    chosen = list(dict.fromkeys(datasets))
    if set(chosen) == set(catalog.BASE_TO_NEW_DATASETS):
        return published[published["dataset"] == AVERAGE].reset_index(drop=True)
    rows: list[dict[str, object]] = []
    for method, group in published[published["dataset"].isin(chosen)].groupby("method", sort=False):
        if set(group["dataset"]) != set(chosen):
            continue
        base, new = float(group["base"].mean()), float(group["new"].mean())
        exact = (group["provenance"] == "published").all()
        rows.append(
            {
                "method": method,
                "dataset": AVERAGE,
                "base": base,
                "new": new,
                "hm": harmonic_mean(base, new),
                "provenance": "published" if exact else "recomputed",
                "source": f"{subset_label(len(chosen))}: "
                + "; ".join(dict.fromkeys(str(s) for s in group["source"] if s)),
            }
        )
    return pd.DataFrame.from_records(rows, columns=list(PUBLISHED_COLUMNS))


def subset_label(count: int) -> str:
    """How a paper Average recomputed over ``count`` datasets is labelled."""
    return f"paper, same {count} dataset{'s' if count != 1 else ''}"


def for_average_over(published: pd.DataFrame, datasets: Sequence[str]) -> pd.DataFrame:
    """The published rows with the Average replaced by :func:`subset_average` over ``datasets``."""
    per_dataset = published[published["dataset"] != AVERAGE]
    return pd.concat([per_dataset, subset_average(published, datasets)], ignore_index=True)


def add_published(summary: pd.DataFrame, published: pd.DataFrame, *, datasets: Sequence[str]) -> pd.DataFrame:
    """Add the paper's numbers, our difference to them and flags to a base-to-new summary.

    A difference is flagged when |Δ| exceeds both :data:`DELTA_POINTS` points and
    :data:`DELTA_STDS` of our seed standard deviations (HM and Average rows have no std: 1 point).

    Args:
        summary: A base-to-new summary (``results.base2new.base2new_summary``).
        published: Published numbers (:func:`load_published`).
        datasets: The datasets our Average row is taken over (the summary's ``datasets``). Over a
            subset the paper's Average is recomputed over the same datasets
            (:func:`subset_average`); the paper's 11-dataset Average only stands beside ours over
            the same 11.

    Returns:
        The summary plus ``paper_base, paper_new, paper_hm, delta_base, delta_new, delta_hm,
        flag_base, flag_new, flag_hm, provenance, source, paper_over`` (empty where the paper has no
        number; ``paper_over`` says on Average rows what the paper's Average covers).
    """
    over = list(datasets)
    for column, default in (("provenance", "published"), ("source", "")):
        if column not in published.columns:
            published = published.assign(**{column: default})
    published = for_average_over(published, over)
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
    ours_missing = (merged["dataset"] == AVERAGE) & merged["base"].isna()
    merged.loc[ours_missing, ["paper_base", "paper_new", "paper_hm"]] = math.nan
    merged.loc[ours_missing, ["provenance", "source"]] = ""
    merged["provenance"] = merged["provenance"].fillna("")
    merged["source"] = merged["source"].fillna("")
    full = set(over) == set(catalog.BASE_TO_NEW_DATASETS)
    scope = f"paper, {len(catalog.BASE_TO_NEW_DATASETS)} datasets" if full else subset_label(len(set(over)))
    merged["paper_over"] = [
        scope if dataset == AVERAGE and pd.notna(paper_base) else ""
        for dataset, paper_base in zip(merged["dataset"], merged["paper_base"], strict=True)
    ]
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
        "source",
        "paper_over",
    ]
    return merged[columns]
