"""The paper's figures as PNG files, drawn headless with matplotlib's Agg canvas.

Base vs new accuracy per dataset (with the published points), HM per dataset per method, training
curves, the gate's statistics and the gradient alignment over training (the cosine between each
tower's cross-entropy and regulariser gradients, ``prometar.metrics.ALIGNMENT_METRICS``), and the search
objective against each searched hyper-parameter. Every plot function takes summary frames or the
tidy runs table (``orchestration.ledger.runs``, ``orchestration.results.base2new``) and a path,
and returns the path it wrote.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from orchestration.errors import ResultsError
from orchestration.ledger.runs import RunsTable, attach_params, read_metric_history
from orchestration.results import search
from orchestration.results.base2new import BASE2NEW_DATASETS, BASE_METRIC, base2new_summary
from orchestration.results.base2new import PROTOCOL as BASE2NEW
from orchestration.results.labels import AVERAGE, dataset_label, method_label, order_methods
from orchestration.results.published import load_published
from orchestration.results.search import varying_params
from orchestration.results.source import Source
from prometar.metrics import ALIGNMENT_METRICS, GATE_METRICS

DPI = 120


def _new_figure(n_panels: int, *, width: float = 3.2, height: float = 2.8) -> tuple[Figure, list]:
    """A figure with ``n_panels`` axes on a grid (at most 4 per row)."""
    columns = min(4, max(1, n_panels))
    rows = int(np.ceil(n_panels / columns))
    figure = Figure(figsize=(width * columns, height * rows), dpi=DPI)
    FigureCanvasAgg(figure)
    axes = [figure.add_subplot(rows, columns, i + 1) for i in range(n_panels)]
    return figure, axes


def _save(
    figure: Figure, path: Path | str, *, rect: tuple[float, float, float, float] = (0, 0, 1, 1)
) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout(rect=rect)
    figure.savefig(path, format="png")
    return path


def _colors(methods: Sequence[str]) -> dict[str, tuple]:
    palette = [
        "#1f77b4",
        "#ff7f0e",
        "#2ca02c",
        "#d62728",
        "#9467bd",
        "#8c564b",
        "#e377c2",
        "#7f7f7f",
        "#bcbd22",
    ]
    return {m: palette[i % len(palette)] for i, m in enumerate(methods)}


def plot_base_vs_new(
    summary: pd.DataFrame, path: Path | str, *, published: pd.DataFrame | None = None
) -> Path:
    """Base (x) against new (y) accuracy, one panel per dataset, one colour per method.

    Args:
        summary: A base-to-new summary (``tables.base2new_summary``).
        path: The PNG to write.
        published: Published numbers (``tables.load_published``): drawn as hollow squares.
    """
    datasets = list(dict.fromkeys(summary["dataset"]))
    methods = order_methods(summary["method"].unique())
    colors = _colors(methods)
    figure, axes = _new_figure(len(datasets))
    for ax, dataset in zip(axes, datasets, strict=True):
        ours = summary[summary["dataset"] == dataset]
        for method in methods:
            row = ours[ours["method"] == method]
            if not row.empty and row["base"].notna().any():
                ax.scatter(row["base"], row["new"], color=colors[method], s=36, label=method_label(method))
            if published is not None:
                paper = published[(published["dataset"] == dataset) & (published["method"] == method)]
                if not paper.empty:
                    ax.scatter(
                        paper["base"],
                        paper["new"],
                        marker="s",
                        s=36,
                        facecolors="none",
                        edgecolors=colors[method],
                    )
        ax.set_title(dataset_label(dataset), fontsize=9)
        ax.set_xlabel("base", fontsize=8)
        ax.set_ylabel("new", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    if published is not None:
        from matplotlib.lines import Line2D

        handles.append(Line2D([], [], marker="s", linestyle="", markerfacecolor="none", markeredgecolor="k"))
        labels.append("published")
    figure.legend(handles, labels, loc="lower center", ncols=min(8, len(labels)), fontsize=8)
    rows = int(np.ceil(len(datasets) / min(4, max(1, len(datasets)))))
    return _save(figure, path, rect=(0, 0.3 / (2.8 * rows), 1, 1))


def plot_hm(summary: pd.DataFrame, path: Path | str) -> Path:
    """Harmonic mean per dataset (Average first) as grouped bars, one bar per method."""
    datasets = list(dict.fromkeys(summary["dataset"]))
    methods = order_methods(summary["method"].unique())
    colors = _colors(methods)
    figure = Figure(figsize=(max(6.0, 0.9 * len(datasets) + 2), 3.6), dpi=DPI)
    FigureCanvasAgg(figure)
    ax = figure.add_subplot(1, 1, 1)
    width = 0.8 / max(1, len(methods))
    x = np.arange(len(datasets))
    for i, method in enumerate(methods):
        rows = summary[summary["method"] == method].set_index("dataset").reindex(datasets)
        ax.bar(
            x + (i - (len(methods) - 1) / 2) * width,
            rows["hm"].to_numpy(dtype=float),
            width,
            color=colors[method],
            label=method_label(method),
        )
    ax.set_xticks(x, [dataset_label(d) for d in datasets], rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("HM")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncols=min(4, len(methods)))
    return _save(figure, path)


def plot_history(
    history: pd.DataFrame, runs: pd.DataFrame, metrics: Sequence[str], path: Path | str, *, title: str = ""
) -> Path:
    """Per-step metrics, one panel per metric, one line per (method, dataset) averaged over seeds.

    Args:
        history: Columns ``run_id, metric, step, value`` (``ledger.read_metric_history``).
        runs: The tidy runs table (gives each run's method and dataset).
        metrics: Metric names, one panel each (panels without data say so).
        path: The PNG to write.
        title: Figure title.
    """
    identity = runs[["run_id", "method", "dataset"]].drop_duplicates("run_id")
    merged = history.merge(identity, on="run_id", how="left")
    figure, axes = _new_figure(len(metrics))
    for ax, metric in zip(axes, metrics, strict=True):
        rows = merged[merged["metric"] == metric]
        if rows.empty:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes)
        for (method, dataset), group in rows.groupby(["method", "dataset"], sort=True):
            curve = group.groupby("step")["value"].mean()
            ax.plot(
                curve.index,
                curve.to_numpy(),
                marker=".",
                label=f"{method_label(method)} · {dataset_label(dataset)}",
            )
        ax.set_title(metric, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    if axes and axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize=6)
    if title:
        figure.suptitle(title, fontsize=10)
    return _save(figure, path)


def plot_search(
    runs: pd.DataFrame, params: Sequence[str], path: Path | str, *, objective: str = search.OBJECTIVE
) -> Path:
    """The search objective against each searched parameter, one panel per parameter.

    Args:
        runs: The tidy runs table carrying the ``params`` columns (``ledger.attach_params``).
        params: The searched config columns.
        path: The PNG to write.
        objective: The metric on the y axis.
    """
    rows = runs[runs["metric"] == objective]
    if rows.empty:
        raise ResultsError(f"search plot: no run has the objective metric {objective!r}")
    figure, axes = _new_figure(len(params))
    for ax, param in zip(axes, params, strict=True):
        values = pd.to_numeric(rows[param], errors="coerce")
        if values.notna().all():
            ax.scatter(values, rows["value"], s=18)
            if (values > 0).all() and values.max() / values.min() > 20:
                ax.set_xscale("log")
        else:
            categories = sorted(rows[param].astype(str).unique())
            positions = rows[param].astype(str).map({c: i for i, c in enumerate(categories)})
            ax.scatter(positions, rows["value"], s=18)
            ax.set_xticks(range(len(categories)), categories, fontsize=7)
        ax.set_xlabel(param, fontsize=8)
        ax.set_ylabel(objective, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    return _save(figure, path)


def write_plots(
    ledger: RunsTable,
    out_dir: Path | str,
    *,
    tracking_uri: str | None = None,
    datasets: Sequence[str] | None = None,
    published: pd.DataFrame | None = None,
    search_space: Sequence[str] = (),
    objective: str = search.OBJECTIVE,
    max_history_runs: int = 60,
) -> list[Path]:
    """Every plot the runs support, written under ``out_dir``.

    Args:
        ledger: The runs.
        out_dir: Folder for the PNG files.
        tracking_uri: Where to read per-epoch histories (no curves without it).
        datasets: Datasets of the base-to-new Average (default: the paper's 11).
        published: Published base-to-new numbers for the scatter.
        search_space: Searched config keys (search plot).
        objective: The search metric.
        max_history_runs: At most this many runs' histories are read (one per (method, dataset,
            seed) cell first, lowest seeds first).

    Returns:
        The PNG paths written.
    """

    out_dir = Path(out_dir)
    runs = ledger.runs
    written: list[Path] = []
    if runs.empty:
        raise ResultsError("no FINISHED runs to plot")
    if runs["protocol"].isin(BASE2NEW.recorded_names).any() and runs["metric"].isin([BASE_METRIC]).any():
        summary = base2new_summary(runs, datasets=tuple(datasets) if datasets else BASE2NEW_DATASETS)
        summary = summary[(summary["dataset"] == AVERAGE) | (summary["n_seeds"] > 0)]
        written.append(plot_base_vs_new(summary, out_dir / "base_vs_new.png", published=published))
        written.append(plot_hm(summary, out_dir / "hm.png"))
    if tracking_uri is not None and ledger.curve_metrics:
        chosen = (
            runs[["run_id", "method", "dataset", "seed"]]
            .drop_duplicates("run_id")
            .sort_values(["seed", "method", "dataset"])
            .head(max_history_runs)["run_id"]
        )
        special = set(GATE_METRICS) | set(ALIGNMENT_METRICS)
        curves = [m for m in ledger.curve_metrics if m not in special]
        gates = [m for m in (*GATE_METRICS, *ALIGNMENT_METRICS) if m in ledger.curve_metrics]
        history = read_metric_history(tracking_uri, chosen, [*curves, *gates])
        if curves:
            written.append(
                plot_history(history, runs, curves, out_dir / "training_curves.png", title="Training")
            )
        if gates:
            written.append(
                plot_history(
                    history,
                    runs,
                    gates,
                    out_dir / "gate_and_alignment.png",
                    title="Gate and gradient alignment",
                )
            )
    has_objective = (runs["metric"] == objective).any()
    if has_objective and (search_space or runs["protocol"].isin(search.PROTOCOL.recorded_names).any()):
        space = list(search_space) or varying_params(ledger.params)
        if space:
            with_params = attach_params(runs, ledger.params, space)
            written.append(plot_search(with_params, space, out_dir / "search.png", objective=objective))
    if not written:
        raise ResultsError("nothing to plot: no base-to-new results, training histories or search results")
    return written


def plot_source(source: Source, out_dir: Path | str, *, published: Path | str | None = None) -> list[Path]:
    """Every plot of a resolved source (``results.source.load_source``): the ``plot`` verb.

    Args:
        source: The runs, and the sweep's datasets when a sweep file was given.
        out_dir: Folder for the PNG files.
        published: Published base-to-new numbers for the scatter (default: the shipped reference).
    """
    sweep = source.sweep
    return write_plots(
        source.ledger,
        out_dir,
        tracking_uri=source.tracking_uri,
        datasets=sweep.datasets if sweep and sweep.datasets else None,
        published=load_published(published),
        search_space=sweep.search_space if sweep else (),
    )
