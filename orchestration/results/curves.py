"""The training curves: per-epoch metrics that vary, and the gate and gradient-alignment statistics.

Drawn from the per-epoch history MLflow keeps (``results.plots.read_history``), not from the final
metrics: a result kind of every protocol whose runs logged a history.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from orchestration.results.context import DEFAULT_SEEDS, ResultsContext
from orchestration.results.figure_style import (
    CURVE_ORDER,
    METRIC_LABELS,
    NamedFigure,
    SeedNotes,
    add_legend,
    figure_style,
    method_style,
    n_note,
    panel_figure,
)
from orchestration.results.labels import order_methods
from prometar.metrics import ALIGNMENT_METRICS, GATE_METRICS

KIND = "training_curves"
"""The figures' kind (not a protocol's table kind: every protocol's runs have curves)."""

# ---------------------------------------------------------------------------------- training curves


def _varies(values: np.ndarray) -> bool:
    """Whether a curve changes (beyond float noise)."""
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return False
    return float(np.ptp(values)) > 1e-9 * max(1.0, float(np.abs(values).max()))


def curve_series(history: pd.DataFrame, runs: pd.DataFrame, metric: str) -> dict[str, pd.DataFrame]:
    """Per method, the mean curve of one metric and its seed spread — only for methods whose runs vary.

    A method's curve counts when at least one of its runs' values of the metric changes over the
    epochs; a metric a method does not have (logged as a constant, e.g. 0) is left out. Each seed's
    curve is first averaged over the method's datasets; the mean and sample std over seeds follow.

    Returns:
        Method → frame ``step, mean, std, n`` (empty dict: nothing varies).
    """
    identity = runs[["run_id", "method", "dataset", "seed"]].drop_duplicates("run_id")
    rows = history[history["metric"] == metric].merge(identity, on="run_id", how="inner")
    series: dict[str, pd.DataFrame] = {}
    for method in order_methods(rows["method"].unique()):
        mine = rows[rows["method"] == method]
        if not any(
            _varies(g.sort_values("step")["value"].to_numpy(dtype=float)) for _, g in mine.groupby("run_id")
        ):
            continue
        per_seed = mine.groupby(["seed", "step"])["value"].mean().reset_index()  # mean over datasets
        grouped = per_seed.groupby("step")["value"]
        series[method] = grouped.agg(mean="mean", std="std", n="count").reset_index()
    return series


def _curve_figure(
    history: pd.DataFrame,
    runs: pd.DataFrame,
    metrics: Sequence[str],
    *,
    expected_seeds: int,
    columns: int = 4,
) -> Figure | None:
    panels = {m: s for m in metrics if (s := curve_series(history, runs, m))}
    if not panels:
        return None
    methods = order_methods({method for series in panels.values() for method in series})
    notes = SeedNotes.of(
        [int(c["n"].min()) for series in panels.values() for c in series.values()], expected_seeds
    )
    with figure_style():
        figure, axes = panel_figure(len(panels), columns=columns, panel_height=1.45)
        for ax, (metric, series) in zip(axes, panels.items(), strict=True):
            for method, curve in series.items():
                style = method_style(method)
                (line,) = ax.plot(
                    curve["step"],
                    curve["mean"],
                    color=style.color,
                    marker=style.marker,
                    markersize=3,
                    label=style.label,
                )
                line.set_gid(f"mean:{method}")
                std = curve["std"].fillna(0).to_numpy(dtype=float)
                if (curve["n"] > 1).any():
                    band = ax.fill_between(
                        curve["step"],
                        curve["mean"] - std,
                        curve["mean"] + std,
                        color=style.color,
                        alpha=0.2,
                        linewidth=0,
                    )
                    band.set_gid(f"band:{method}")
                last = curve.iloc[-1]
                n_note(ax, last["step"], last["mean"], int(curve["n"].min()), notes, style.color)
            ax.set_title(METRIC_LABELS.get(metric, metric))
            ax.set_xlabel("Epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if metric in ("lr", "gate_lr"):
                ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
        add_legend(figure, methods, note=notes.legend())
    return figure


def figure_training_curves(
    history: pd.DataFrame, runs: pd.DataFrame, *, expected_seeds: int = DEFAULT_SEEDS
) -> Figure | None:
    """The per-epoch metrics that vary (losses, training accuracy, learning rate), one panel each.

    Lines: the mean over seeds of each seed's curve averaged over datasets; bands: the seed std.
    Gate statistics and gradient alignment have their own figure (:func:`figure_gate_alignment`).

    Args:
        history: Columns ``run_id, metric, step, value`` (``ledger.runs.read_metric_history``).
        runs: The tidy runs table (each run's method, dataset and seed).
        expected_seeds: The sweep's seeds per cell.
    """
    special = {*GATE_METRICS, *ALIGNMENT_METRICS}
    logged = [m for m in dict.fromkeys(history["metric"]) if m not in special]
    metrics = [m for m in CURVE_ORDER if m in logged] + sorted(m for m in logged if m not in CURVE_ORDER)
    return _curve_figure(history, runs, metrics, expected_seeds=expected_seeds)


def figure_gate_alignment(
    history: pd.DataFrame, runs: pd.DataFrame, *, expected_seeds: int = DEFAULT_SEEDS
) -> Figure | None:
    """Gate statistics and the CE-vs-regulariser gradient cosine over training, per tower.

    Only the methods whose values vary are drawn (the gate is a constant, and the cosine is not
    measured, outside the learned-gate ProMetaR scheme).
    """
    return _curve_figure(
        history, runs, [*GATE_METRICS, *ALIGNMENT_METRICS], expected_seeds=expected_seeds, columns=3
    )


def figures(history: pd.DataFrame | None, runs: pd.DataFrame, ctx: ResultsContext) -> list[NamedFigure]:
    """The curve figures of the runs' per-epoch history (none without one)."""
    if history is None or history.empty:
        return []
    out = []
    curves = figure_training_curves(history, runs, expected_seeds=ctx.expected_seeds)
    if curves is not None:
        caption = (
            "Per-epoch training metrics that vary, mean over seeds of each seed's curve averaged over "
            "datasets; bands: sample standard deviation over seeds."
        )
        out.append(NamedFigure(KIND, curves, caption))
    gates = figure_gate_alignment(history, runs, expected_seeds=ctx.expected_seeds)
    if gates is not None:
        caption = (
            "The gate's effective multiplier of the regulariser gradient (mean and spread over prompt "
            "entries) and the cosine between the cross-entropy and the regulariser gradients, per tower, "
            "for the methods where they vary; bands: sample standard deviation over seeds."
        )
        out.append(NamedFigure("gate_and_alignment", gates, caption))
    return out
