"""The paper's figures as files: each figure of ``results.figures`` written as PNG (300 dpi), PDF and SVG.

This module does the I/O around the pure figure functions: it reads the per-epoch histories the
training-curve figures need from MLflow (a bounded number of runs), builds every figure the runs
support (:func:`orchestration.results.figures.build_figures`) and writes them under one folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from orchestration.errors import ResultsError
from orchestration.ledger.runs import RunsTable, read_metric_history
from orchestration.results.context import ResultsContext
from orchestration.results.figures import (
    ALIGNMENT_METRICS,
    GATE_METRICS,
    NamedFigure,
    build_figures,
    save_figure,
)
from orchestration.results.source import Source

__all__ = [
    "ALIGNMENT_METRICS",
    "GATE_METRICS",
    "collect_figures",
    "plot_source",
    "read_history",
    "save_figures",
    "write_plots",
]


def read_history(ledger: RunsTable, tracking_uri: str | None, *, max_runs: int = 60) -> pd.DataFrame | None:
    """The per-epoch metrics of at most ``max_runs`` runs (lowest seeds first), or None without MLflow.

    Args:
        ledger: The runs (``curve_metrics`` names what to read).
        tracking_uri: Where the histories are; None (a runs CSV) gives None.
        max_runs: One request per run and metric: at most this many runs are read, one per (method,
            dataset, seed) cell, the lowest seeds first.
    """
    if tracking_uri is None or not ledger.curve_metrics or ledger.runs.empty:
        return None
    chosen = (
        ledger.runs[["run_id", "method", "dataset", "seed"]]
        .drop_duplicates("run_id")
        .sort_values(["seed", "method", "dataset"])
        .head(max_runs)["run_id"]
    )
    return read_metric_history(tracking_uri, chosen, ledger.curve_metrics)


def collect_figures(
    ledger: RunsTable, context: ResultsContext | None = None, *, max_history_runs: int = 60
) -> list[NamedFigure]:
    """Every figure the runs support (the histories read from the context's tracking URI, if any).

    Raises:
        ResultsError: No FINISHED runs, or nothing to draw.
    """
    ctx = context or ResultsContext()
    if ledger.runs.empty:
        raise ResultsError("no FINISHED runs to plot")
    history = read_history(ledger, ctx.tracking_uri, max_runs=max_history_runs)
    figures = build_figures(ledger, ctx, history=history)
    if not figures:
        raise ResultsError(
            "nothing to plot: no base-to-new, few-shot, transfer or search results, and no "
            "training history that varies"
        )
    return figures


def save_figures(figures: Sequence[NamedFigure], out_dir: Path | str) -> list[Path]:
    """Each figure as ``<out_dir>/<name>.{png,pdf,svg}``; returns the files written, figure by figure."""
    written: list[Path] = []
    for named in figures:
        written += save_figure(named.figure, Path(out_dir) / named.name)
    return written


def write_plots(ledger: RunsTable, out_dir: Path | str, context: ResultsContext | None = None) -> list[Path]:
    """Every figure the runs support, each as ``<out_dir>/<name>.{png,pdf,svg}``.

    Returns:
        The files written, figure by figure (PNG, PDF, SVG).
    """
    return save_figures(collect_figures(ledger, context), out_dir)


def plot_source(source: Source, out_dir: Path | str) -> list[Path]:
    """Every figure of a resolved source (``results.source.load_source``): the ``plot`` verb (the
    source's context carries the published numbers to mark)."""
    return write_plots(source.ledger, out_dir, source.context)
