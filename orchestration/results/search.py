"""The search table: the best searched configurations, ranked on a validation metric.

Only the search protocol's metrics (``val_*``, held-out base classes) are read: never new-class or
test accuracy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from orchestration.errors import ResultsError
from orchestration.ledger.runs import RunsTable, attach_params
from orchestration.results.context import ResultsContext
from orchestration.results.display import Cell, DisplayTable, bold_best, number
from orchestration.results.figure_style import (
    COLUMN_WIDTH_IN,
    TEXT_WIDTH_IN,
    NamedFigure,
    add_legend,
    figure_style,
    method_style,
    panel_grid,
    sized_figure,
)
from orchestration.results.labels import dataset_label, method_label, order_methods
from prometar import protocols
from prometar.protocols import Protocol

KIND = "search"
PROTOCOL = protocols.for_table(KIND)
"""The protocol whose runs this table shows."""
SEARCH_METRICS: tuple[str, ...] = PROTOCOL.metric_names()
OBJECTIVE = PROTOCOL.combined or ""
"""The default metric ranked on."""


def search_summary(
    runs: pd.DataFrame,
    params: Sequence[str],
    *,
    objective: str = OBJECTIVE,
    mode: Literal["max", "min"] = "max",
    top_k: int = 10,
) -> pd.DataFrame:
    """The best ``top_k`` searched configurations with their validation metrics.

    Args:
        runs: The tidy runs table carrying the ``params`` columns (``ledger.attach_params``).
        params: The searched config columns; one configuration per distinct combination (and
            method), its metrics averaged over the runs (datasets, seeds) that share it.
        objective: The metric ranked on (``val_*``: never new-class or test accuracy).
        mode: ``max`` or ``min``.
        top_k: How many configurations to keep.

    Returns:
        Columns ``rank, method, *params, <val metrics>, n_runs``, best first.
    """
    val_rows = runs[runs["metric"].isin(SEARCH_METRICS)]
    if objective not in set(val_rows["metric"]):
        raise ResultsError(f"search table: no run has the objective metric {objective!r}")
    missing = [c for c in params if c not in runs.columns]
    if missing:
        raise ResultsError(f"search table: runs have no column(s) {', '.join(missing)}")
    keys = ["method", *params]
    by_run = val_rows.groupby([*keys, "run_id", "metric"], dropna=False, sort=False)["value"].first()
    per_run = by_run.unstack("metric").reset_index()  # [runs, keys + run_id + val metrics]
    per_run.columns.name = None
    metrics = sorted(c for c in per_run.columns if c in SEARCH_METRICS)
    grouped = per_run.groupby(keys, dropna=False)
    summary = grouped[metrics].mean()
    summary["n_runs"] = grouped["run_id"].count()
    summary = summary.reset_index().sort_values(objective, ascending=mode == "min", kind="stable")
    summary = summary.dropna(subset=[objective]).head(top_k).reset_index(drop=True)
    summary.insert(0, "rank", range(1, len(summary) + 1))
    return summary


def layout_search(
    summary: pd.DataFrame,
    params: Sequence[str],
    *,
    objective: str = OBJECTIVE,
    mode: Literal["max", "min"] = "max",
) -> DisplayTable:
    """Ranked configurations; the best value of each metric in bold."""
    metrics = [c for c in summary.columns if c in SEARCH_METRICS]
    header = ["Rank", "Method", *params, *metrics, "Runs"]
    table = DisplayTable(
        f"Search results (top {len(summary)} by {objective}, {mode})", header, label_columns=2 + len(params)
    )
    for _, row in summary.iterrows():
        cells = [Cell(text=str(row["rank"])), Cell(text=method_label(str(row["method"])))]
        cells += [Cell(text=_format_param(row[p])) for p in params]
        cells += [Cell(value=number(row[m])) for m in metrics]
        cells.append(Cell(text=str(row["n_runs"])))
        table.rows.append(cells)
    start = 2 + len(params)
    bold_best(table.rows, range(start, start + len(metrics)))
    return table


def _format_param(value: object) -> str:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(value)
    return f"{number:.4g}"


IDENTITY_PARAMS = {"seed", "method", "protocol", "data.dataset", "data.shots"}


def varying_params(params: pd.DataFrame) -> list[str]:
    """Config keys whose value differs between runs (the searched ones), identity keys excluded."""
    return [c for c in params.columns if c not in IDENTITY_PARAMS and params[c].nunique(dropna=False) > 1]


def figure_search(
    runs: pd.DataFrame, params: Sequence[str], *, objective: str = OBJECTIVE, mode: str = "max"
) -> Figure | None:
    """The validation objective of every sampled configuration against each searched parameter.

    One panel per parameter (rows: one per searched dataset and shots); one point per run in its
    method's style, the best run ringed. Each point is one run, so no error bars.

    Args:
        runs: The tidy runs table carrying the ``params`` columns (``ledger.runs.attach_params``).
        params: The searched config keys.
        objective: The metric on the y axis (a ``val_*`` metric).
        mode: ``max`` or ``min``: which run is the best.
    """
    rows = runs[runs["metric"] == objective]
    if rows.empty or not params:
        return None
    groups = list(dict.fromkeys(zip(rows["dataset"], rows["shots"], strict=True)))
    methods = order_methods(rows["method"].unique())
    with figure_style():
        columns = min(len(params), 3)
        figure = sized_figure(
            min(TEXT_WIDTH_IN, max(COLUMN_WIDTH_IN, 2.2 * columns)),
            1.8 * len(groups) * math.ceil(len(params) / columns) + 0.35,
        )
        axes = panel_grid(figure, len(groups) * len(params), columns=columns)
        panels = [(g, p) for g in groups for p in params]
        for ax, ((dataset, shots), param) in zip(axes, panels, strict=True):
            group = rows[(rows["dataset"] == dataset) & (rows["shots"] == shots)]
            numeric = pd.to_numeric(group[param], errors="coerce")
            categorical = numeric.isna().any()
            if categorical:
                categories = sorted(group[param].astype(str).unique())
                positions = (
                    group[param].astype(str).map({c: i for i, c in enumerate(categories)}).astype(float)
                )
            else:
                positions = numeric
            for method in methods:
                mine = group["method"] == method
                if not mine.any():
                    continue
                style = method_style(method)
                points = ax.scatter(
                    positions[mine],
                    group.loc[mine, "value"],
                    s=14,
                    color=style.color,
                    marker=style.marker,
                    alpha=0.85,
                    linewidths=0,
                )
                points.set_gid(f"sample:{method}")
            best = group["value"].idxmax() if mode == "max" else group["value"].idxmin()
            ax.scatter(
                [positions[best]],
                [group.loc[best, "value"]],
                s=60,
                facecolors="none",
                edgecolors="black",
                linewidths=0.8,
                gid="best",
            )
            if categorical:
                ax.set_xticks(range(len(categories)), categories)
            elif (numeric > 0).all() and numeric.max() / numeric.min() > 20:
                ax.set_xscale("log")
            ax.set_xlabel(param)
            ax.set_ylabel(_objective_label(objective))
            if len(groups) > 1:
                ax.set_title(f"{dataset_label(dataset)}, {shots} shots")
        add_legend(
            figure,
            methods,
            kind="marker",
            extra=[
                (
                    Line2D(
                        [],
                        [],
                        marker="o",
                        markerfacecolor="none",
                        markeredgecolor="black",
                        linestyle="",
                        markersize=7,
                    ),
                    "best",
                )
            ],
        )
    return figure


def _objective_label(objective: str) -> str:
    names = {
        "val_hm": "Validation HM (%)",
        "val_base": "Validation base acc. (%)",
        "val_new": "Validation new acc. (%)",
    }
    return names.get(objective, objective)


def figures(ledger: RunsTable, protocol: Protocol, ctx: ResultsContext) -> list[NamedFigure]:
    """The search figure: sampled hyper-parameters against the objective, the best ringed."""
    if not (ledger.runs["metric"] == ctx.objective).any():
        return []
    space = list(ctx.search_space) or varying_params(ledger.params)
    if not space:
        return []
    figure = figure_search(attach_params(ledger.runs, ledger.params, space), space, objective=ctx.objective)
    caption = (
        f"Sampled hyper-parameters against {ctx.objective} (validation on base classes only), "
        "one point per run; ringed: the best."
    )
    return [NamedFigure(KIND, figure, caption)] if figure is not None else []
