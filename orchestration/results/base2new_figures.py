"""The base-to-new figures: base against new accuracy with curves of equal HM, and the HM bars.

Both draw the table's seed means (``results.base2new.base2new_stats``: the summary with its seed
spread) and, when given, the published numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from orchestration.ledger.runs import RunsTable
from orchestration.results.base2new import BASE2NEW_DATASETS, base2new_stats
from orchestration.results.context import DEFAULT_SEEDS, ResultsContext
from orchestration.results.figure_style import (
    COLUMN_WIDTH_IN,
    MIN_FONT_PT,
    TEXT_WIDTH_IN,
    NamedFigure,
    SeedNotes,
    add_legend,
    axes_width,
    bar_n_notes,
    draw_errorbar,
    figure_style,
    method_style,
    n_note,
    panel_figure,
    sized_figure,
    tag_artists,
)
from orchestration.results.labels import AVERAGE, dataset_label, order_methods
from orchestration.results.published import subset_average
from prometar.protocols import Protocol

# ------------------------------------------------------------------------------------ base-to-new

INTERVAL_BARS_NOTE = "error bars: 95% interval over seeds"
"""The legend's word on what the error bars of the base-to-new figures are."""
INTERVAL_CAPTION = (
    "Error bars: the table's 95% intervals (Student t over seeds; the Average a paired bootstrap); "
    "n=k marks a mean of fewer seeds than planned."
)


def _interval_bars(row: pd.Series, metric: str) -> list[list[float]] | None:
    """Asymmetric error-bar lengths (below, above) of one point's 95% interval; None without one."""
    low, high = row[f"{metric}_low"], row[f"{metric}_high"]
    if pd.isna(low) or pd.isna(high):
        return None
    return [[max(0.0, float(row[metric]) - float(low))], [max(0.0, float(high) - float(row[metric]))]]


def _iso_hm_levels(low: float, high: float) -> list[float]:
    """Round HM values inside (low, high), three to six of them."""
    span = max(high - low, 1e-6)
    step = next((s for s in (1, 2, 5, 10, 20) if span / s <= 6), 25)
    first = math.ceil(low / step) * step
    return [float(v) for v in np.arange(first, high, step) if low < v < high]


def _draw_iso_hm(ax, low: float, high: float) -> None:
    """Dashed grey curves of constant HM = 2BN/(B+N) across the panel, each labelled at its end."""
    for level in _iso_hm_levels(low, high):
        base = np.linspace(max(low, level / 2 + 1e-3), high, 200)
        new = level * base / (2 * base - level)  # HM(base, new) = level
        new = np.where((new >= low) & (new <= high), new, np.nan)
        if np.isfinite(new).sum() < 10:  # no curve, or one that only touches the panel's corner
            continue
        (line,) = ax.plot(base, new, linestyle="--", linewidth=0.6, color="0.65", zorder=0)
        line.set_gid(f"iso-hm:{level:g}")
        top = int(np.nanargmax(new))  # where the curve leaves the panel at the top (or the left)
        ax.annotate(
            f"{level:g}",
            (base[top], new[top]),
            xytext=(2, -2),
            textcoords="offset points",
            ha="left",
            va="top",
            fontsize=MIN_FONT_PT,
            color="0.45",
            gid=f"iso-hm-label:{level:g}",
        )


def figure_base_vs_new(
    runs: pd.DataFrame,
    *,
    datasets: Sequence[str] = BASE2NEW_DATASETS,
    published: pd.DataFrame | None = None,
    expected_seeds: int = DEFAULT_SEEDS,
) -> Figure | None:
    """Base (x) against new (y) accuracy per dataset (Average first), with iso-HM curves.

    Points are seed means with their 95% intervals (the table's) as error bars in both directions;
    published numbers of the methods run are hollow markers of the same colour (the paper's Average
    recomputed over the same datasets).

    Args:
        runs: The tidy runs table (base-to-new rows are used).
        datasets: The sweep's datasets (the Average is taken over them).
        published: Published numbers (``results.published.load_published``), or None.
        expected_seeds: The sweep's seeds per cell (fewer are marked ``n=k``).
    """
    stats = base2new_stats(runs, datasets=datasets)
    if stats.empty:
        return None
    panels = list(dict.fromkeys(stats["dataset"]))
    methods = order_methods(stats["method"].unique())
    shown_published = False
    notes = SeedNotes.of(stats["n_seeds"], expected_seeds)
    with figure_style():
        figure, axes = panel_figure(len(panels))
        for ax, dataset in zip(axes, panels, strict=True):
            rows = stats[stats["dataset"] == dataset]
            paper = _published_rows(published, dataset, methods, datasets)
            values = [
                *rows["base_low"].fillna(rows["base"]),
                *rows["base_high"].fillna(rows["base"]),
                *rows["new_low"].fillna(rows["new"]),
                *rows["new_high"].fillna(rows["new"]),
                *paper["base"],
                *paper["new"],
            ]
            low, high = min(values), max(values)
            pad = max(2.0, 0.08 * (high - low))
            low, high = max(0.0, low - pad), min(100.0, high + pad)
            for _, row in rows.iterrows():
                method = str(row["method"])
                draw_errorbar(
                    ax,
                    [row["base"]],
                    [row["new"]],
                    xerr=_interval_bars(row, "base"),
                    yerr=_interval_bars(row, "new"),
                    method=method,
                    linestyle="",
                    markersize=6 if method == "prometar" else 4.5,
                    zorder=3,
                )
                n_note(ax, row["base"], row["new"], int(row["n_seeds"]), notes, method_style(method).color)
            for _, row in paper.iterrows():
                style = method_style(str(row["method"]))
                (mark,) = ax.plot(
                    [row["base"]],
                    [row["new"]],
                    linestyle="",
                    marker=style.marker,
                    markersize=5,
                    markerfacecolor="none",
                    markeredgecolor=style.color,
                    zorder=2,
                )
                mark.set_gid(f"published:{row['method']}")
                shown_published = True
            _draw_iso_hm(ax, low, high)
            ax.set_xlim(low, high)
            ax.set_ylim(low, high)
            ax.set_aspect("equal", adjustable="box")
            ax.set_title(dataset_label(dataset))
            ax.set_xlabel("Base accuracy (%)")
            ax.set_ylabel("New accuracy (%)")
        iso = Line2D([], [], linestyle="--", linewidth=0.6, color="0.65")
        add_legend(
            figure,
            methods,
            kind="marker",
            published=shown_published,
            extra=[(iso, "equal HM"), (Line2D([], [], linestyle=""), INTERVAL_BARS_NOTE)],
            note=notes.legend(),
        )
    return figure


def _published_rows(
    published: pd.DataFrame | None, dataset: str, methods: Sequence[str], datasets: Sequence[str]
) -> pd.DataFrame:
    """Published rows of the methods run, for one dataset; the paper's Average is over the same
    datasets as ours (``results.published.subset_average``)."""
    empty = pd.DataFrame(columns=["method", "dataset", "base", "new", "hm"])
    if published is None:
        return empty
    if dataset == AVERAGE:
        published = subset_average(published, datasets)
    return published[(published["dataset"] == dataset) & published["method"].isin(methods)]


def figure_hm(
    runs: pd.DataFrame,
    *,
    datasets: Sequence[str] = BASE2NEW_DATASETS,
    published: pd.DataFrame | None = None,
    expected_seeds: int = DEFAULT_SEEDS,
) -> Figure | None:
    """HM per dataset (Average first) as grouped bars, one per method, with the published HM marked.

    Bars are the HM of the seed means (the table's); error bars are its 95% interval (the table's
    paired bootstrap over seeds). A published HM is a black bar-wide tick over the method's bar.
    """
    stats = base2new_stats(runs, datasets=datasets)
    if stats.empty:
        return None
    groups = list(dict.fromkeys(stats["dataset"]))
    methods = order_methods(stats["method"].unique())
    width = 0.8 / len(methods)
    x = np.arange(len(groups))
    lows: list[float] = []
    shown_published = False
    notes = SeedNotes.of(stats["n_seeds"], expected_seeds)
    with figure_style():
        figure = sized_figure(COLUMN_WIDTH_IN if len(groups) * len(methods) <= 16 else TEXT_WIDTH_IN, 2.4)
        ax = figure.add_subplot(1, 1, 1)
        for i, method in enumerate(methods):
            style = method_style(method)
            rows = stats[stats["method"] == method].set_index("dataset").reindex(groups)
            positions = x + (i - (len(methods) - 1) / 2) * width
            heights = rows["hm"].to_numpy(dtype=float)
            below = np.nan_to_num(np.clip(heights - rows["hm_low"].to_numpy(dtype=float), 0.0, None))
            above = np.nan_to_num(np.clip(rows["hm_high"].to_numpy(dtype=float) - heights, 0.0, None))
            errors = above
            bars = ax.bar(
                positions,
                heights,
                width * 0.92,
                yerr=np.vstack([below, above]),  # [2, groups]: below, above
                color=style.color,
                label=style.label,
                error_kw={"elinewidth": 0.8, "capsize": 1.5, "ecolor": "0.15"},
            )
            tag_artists(bars.patches, f"bar:{method}")
            if bars.errorbar is not None:
                tag_artists(bars.errorbar.lines[2], f"error:{method}")
            lows += [h for h in heights if not math.isnan(h)]
            bar_n_notes(ax, positions, heights, errors, rows["n_seeds"].fillna(0), notes)
            for group, position in zip(groups, positions, strict=True):
                paper = _published_rows(published, group, [method], datasets)
                if not paper.empty:
                    (tick,) = ax.plot(
                        [position],
                        [float(paper["hm"].iloc[0])],
                        marker="_",
                        color="black",
                        markersize=max(4.0, 72 * width * 0.9 * axes_width(figure) / len(groups)),
                        markeredgewidth=1.4,
                        linestyle="",
                        zorder=4,
                    )
                    tick.set_gid(f"published:{method}")
                    lows.append(float(paper["hm"].iloc[0]))
                    shown_published = True
        bottom = max(0.0, 5 * math.floor((min(lows) - 8) / 5)) if lows else 0.0
        ax.set_ylim(bottom=bottom)
        ax.set_xticks(
            x,
            [dataset_label(g) for g in groups],
            rotation=30 if len(groups) > 3 else 0,
            ha="right" if len(groups) > 3 else "center",
        )
        ax.set_ylabel("HM (%)")
        ax.grid(axis="x", visible=False)
        extra = (
            [
                (
                    Line2D(
                        [], [], marker="_", color="black", markersize=8, markeredgewidth=1.4, linestyle=""
                    ),
                    "published",
                )
            ]
            if shown_published
            else []
        )
        extra.append((Line2D([], [], linestyle=""), INTERVAL_BARS_NOTE))
        add_legend(figure, methods, kind="bar", extra=extra, note=notes.legend())
    return figure


def figures(ledger: RunsTable, protocol: Protocol, ctx: ResultsContext) -> list[NamedFigure]:
    """The base-to-new figures of the runs (with the published numbers when the context has them)."""
    runs, grid, published = ledger.runs, ctx.grid, ctx.published
    out = []
    base_vs_new = figure_base_vs_new(
        runs, datasets=grid, published=published, expected_seeds=ctx.expected_seeds
    )
    if base_vs_new is not None:
        caption = (
            "Base against new accuracy per dataset (Average first): seed means, dashed curves of equal "
            "harmonic mean (HM)"
            + (", hollow markers the published numbers" if published is not None else "")
            + ". "
            + INTERVAL_CAPTION
        )
        out.append(NamedFigure("base_vs_new", base_vs_new, caption))
    hm = figure_hm(runs, datasets=grid, published=published, expected_seeds=ctx.expected_seeds)
    if hm is not None:
        caption = (
            "Harmonic mean of base and new accuracy per dataset (HM of the seed means)"
            + ("; black ticks: published HM" if published is not None else "")
            + ". Error bars: the table's 95% interval of the HM (paired bootstrap over seeds)."
        )
        out.append(NamedFigure("hm", hm, caption))
    return out
