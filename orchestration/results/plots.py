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
from orchestration.results import search
from orchestration.results.figures import (
    ALIGNMENT_METRICS,
    GATE_METRICS,
    NamedFigure,
    build_figures,
    save_figure,
)
from orchestration.results.published import load_published
from orchestration.results.source import Source

__all__ = [
    "ALIGNMENT_METRICS",
    "GATE_METRICS",
    "collect_figures",
    "plot_source",
    "read_history",
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
    ledger: RunsTable,
    *,
    tracking_uri: str | None = None,
    protocol: str | None = None,
    datasets: Sequence[str] | None = None,
    published: pd.DataFrame | None = None,
    expected_seeds: int = 3,
    search_space: Sequence[str] = (),
    objective: str = search.OBJECTIVE,
    targets: Sequence[str] = (),
    max_history_runs: int = 60,
) -> list[NamedFigure]:
    """Every figure the runs support (the histories read from ``tracking_uri`` when given).

    Raises:
        ResultsError: No FINISHED runs, or nothing to draw.
    """
    if ledger.runs.empty:
        raise ResultsError("no FINISHED runs to plot")
    history = read_history(ledger, tracking_uri, max_runs=max_history_runs)
    figures = build_figures(
        ledger,
        history=history,
        protocol=protocol,
        datasets=datasets,
        published=published,
        expected_seeds=expected_seeds,
        search_space=search_space,
        objective=objective,
        targets=targets,
    )
    if not figures:
        raise ResultsError(
            "nothing to plot: no base-to-new, few-shot, transfer or search results, and no "
            "training history that varies"
        )
    return figures


def write_plots(
    ledger: RunsTable,
    out_dir: Path | str,
    *,
    tracking_uri: str | None = None,
    protocol: str | None = None,
    datasets: Sequence[str] | None = None,
    published: pd.DataFrame | None = None,
    expected_seeds: int = 3,
    search_space: Sequence[str] = (),
    objective: str = search.OBJECTIVE,
    targets: Sequence[str] = (),
    max_history_runs: int = 60,
) -> list[Path]:
    """Every figure the runs support, each as ``<out_dir>/<name>.{png,pdf,svg}``.

    Args:
        ledger: The runs.
        out_dir: Folder for the files.
        tracking_uri: Where to read per-epoch histories (no curves without it).
        protocol: The sweep's protocol (default: every protocol in the runs).
        datasets: Datasets of the Average (default: the paper's 11).
        published: Published base-to-new numbers to mark.
        expected_seeds: Seeds per cell the sweep plans (fewer are marked ``n=k``).
        search_space: Searched config keys (search figure).
        objective: The search metric.
        targets: Targets of the transfer figures (default: the protocol's standard ones).
        max_history_runs: At most this many runs' histories are read.

    Returns:
        The files written, figure by figure (PNG, PDF, SVG).
    """
    figures = collect_figures(
        ledger,
        tracking_uri=tracking_uri,
        protocol=protocol,
        datasets=datasets,
        published=published,
        expected_seeds=expected_seeds,
        search_space=search_space,
        objective=objective,
        targets=targets,
        max_history_runs=max_history_runs,
    )
    written: list[Path] = []
    for named in figures:
        written += save_figure(named.figure, Path(out_dir) / named.name)
    return written


def plot_source(
    source: Source, out_dir: Path | str, *, published: Path | str | None = None, compare: bool = True
) -> list[Path]:
    """Every figure of a resolved source (``results.source.load_source``): the ``plot`` verb.

    Args:
        source: The runs, and the sweep's datasets, protocol, seeds and search space when a sweep
            file was given.
        out_dir: Folder for the files.
        published: Published base-to-new numbers to mark (default: the shipped reference).
        compare: Mark the published numbers at all.
    """
    sweep = source.sweep
    return write_plots(
        source.ledger,
        out_dir,
        tracking_uri=source.tracking_uri,
        protocol=sweep.protocol if sweep else None,
        datasets=sweep.datasets if sweep and sweep.datasets else None,
        published=load_published(published) if compare else None,
        expected_seeds=sweep.seeds if sweep else 3,
        search_space=sweep.search_space if sweep else (),
        targets=sweep.targets if sweep else (),
    )
