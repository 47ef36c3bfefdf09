"""The few-shot table: accuracy per (method, dataset, K) over seeds, with an Average row per K."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd
from matplotlib.figure import Figure

from orchestration.ledger.runs import RunsTable
from orchestration.results.context import DEFAULT_SEEDS, ResultsContext
from orchestration.results.display import Cell, DisplayTable, bold_best, number
from orchestration.results.figure_style import (
    SPREAD_CAPTION,
    NamedFigure,
    SeedNotes,
    add_legend,
    draw_errorbar,
    figure_style,
    fill_stats,
    method_style,
    n_note,
    panel_figure,
    per_seed_table,
    seed_averages,
    std_and_count,
    std_value,
)
from orchestration.results.labels import AVERAGE, dataset_label, method_label, order_datasets, order_methods
from orchestration.results.statistics import per_run_table, seed_stats
from prometar import protocols
from prometar.data import catalog
from prometar.protocols import Protocol

KIND = "few_shot"
PROTOCOL = protocols.for_table(KIND)
"""The protocol whose runs this table shows."""
(ACC_METRIC,) = PROTOCOL.set_metrics
BASE2NEW_DATASETS: tuple[str, ...] = catalog.BASE_TO_NEW_DATASETS


FEW_SHOT_COLUMNS: tuple[str, ...] = ("method", "dataset", "shots", "acc", "acc_std", "n_seeds", "missing")


def few_shot_summary(runs: pd.DataFrame, *, datasets: Sequence[str] = BASE2NEW_DATASETS) -> pd.DataFrame:
    """Accuracy per (method, dataset, K) over seeds, with an Average row per (method, K).

    Args:
        runs: The tidy runs table; rows of protocol ``all_classes`` (or ``few_shot``) with metric
            ``acc`` are used.
        datasets: Datasets of the Average row.

    Returns:
        Columns :data:`FEW_SHOT_COLUMNS`, Average rows (dataset ``average``) first per method.
    """
    rows = runs[runs["protocol"].isin(PROTOCOL.recorded_names)]
    keys = ["method", "dataset", "shots"]
    per_run = per_run_table(rows, [ACC_METRIC], keys, what="few-shot table").dropna(subset=[ACC_METRIC])
    stats = seed_stats(per_run, keys, ACC_METRIC).set_index(keys)
    expected = order_datasets(datasets)
    shown = expected + [d for d in order_datasets(per_run["dataset"].unique()) if d not in expected]
    records: list[dict[str, object]] = []
    for method in order_methods(per_run["method"].unique()):
        for shots in sorted(per_run.loc[per_run["method"] == method, "shots"].unique()):
            block = []
            for dataset in shown:
                key = (method, dataset, shots)
                found = key in stats.index
                block.append(
                    {
                        "method": method,
                        "dataset": dataset,
                        "shots": int(shots),
                        "acc": stats.loc[key, "mean"] if found else math.nan,
                        "acc_std": stats.loc[key, "std"] if found else math.nan,
                        "n_seeds": int(stats.loc[key, "n"]) if found else 0,
                        "missing": "" if found else "no runs",
                    }
                )
            inside = [r for r in block if r["dataset"] in expected]
            missing = [str(r["dataset"]) for r in inside if r["n_seeds"] == 0]
            records.append(
                {
                    "method": method,
                    "dataset": AVERAGE,
                    "shots": int(shots),
                    "acc": math.nan if missing or not inside else sum(r["acc"] for r in inside) / len(inside),
                    "acc_std": math.nan,
                    "n_seeds": 0,
                    "missing": ", ".join(missing),
                }
            )
            records.extend(block)
    return pd.DataFrame.from_records(records, columns=list(FEW_SHOT_COLUMNS))


def layout_few_shot(summary: pd.DataFrame, *, expected_seeds: int = DEFAULT_SEEDS) -> DisplayTable:
    """Blocks per dataset (Average first), rows per method, one column per K; best per column bold."""
    shots = sorted(summary["shots"].unique())
    table = DisplayTable(
        "Few-shot classification (top-1, seed means ± std)",
        ["Dataset", "Method", *[f"K={k}" for k in shots]],
        label_columns=2,
    )
    notes: set[str] = set()
    datasets = [AVERAGE] + order_datasets(d for d in summary["dataset"] if d != AVERAGE)
    for dataset in datasets:
        block_rows = summary[summary["dataset"] == dataset]
        block = []
        for i, method in enumerate(order_methods(block_rows["method"].unique())):
            cells = [Cell(text=dataset_label(dataset) if i == 0 else ""), Cell(text=method_label(method))]
            for k in shots:
                row = block_rows[(block_rows["method"] == method) & (block_rows["shots"] == k)]
                if row.empty:
                    cells.append(Cell())
                    continue
                row = row.iloc[0]
                n = int(row["n_seeds"])
                n_shown = n if 0 < n < expected_seeds else None
                if n_shown is not None:
                    notes.add(f"(n=k): only k of {expected_seeds} seeds")
                text = f"missing: {row['missing']}" if dataset == AVERAGE and row["missing"] else None
                cells.append(Cell(value=number(row["acc"]), std=number(row["acc_std"]), n=n_shown, text=text))
            block.append(cells)
        bold_best(block, range(2, 2 + len(shots)))
        table.rules.append(len(table.rows))
        table.rows.extend(block)
    table.notes = sorted(notes)
    return table


def few_shot_stats(runs: pd.DataFrame, *, datasets: Sequence[str] = BASE2NEW_DATASETS) -> pd.DataFrame:
    """The few-shot summary (``results.few_shot.few_shot_summary``) with the Average row's seed spread.

    Returns:
        Columns ``method, dataset, shots, acc, acc_std, n_seeds`` (rows without runs left out); on
        Average rows the std and count are over the seeds that have every dataset of the Average.
    """
    summary = few_shot_summary(runs, datasets=datasets)
    summary = summary[summary["acc"].notna()].copy()
    acc = ACC_METRIC
    per_seed = per_seed_table(runs, PROTOCOL.recorded_names, [acc], ["method", "dataset", "shots"])
    averages = seed_averages(per_seed, ["method", "shots"], order_datasets(datasets), [acc])
    stats = std_and_count(averages, ["method", "shots"], acc).rename(columns={f"{acc}_std": "acc_std"})
    summary = fill_stats(
        summary,
        summary["dataset"] == AVERAGE,
        stats,
        ["method", "shots"],
        {"acc_std": "acc_std", "n_seeds": "n"},
    )
    return summary[["method", "dataset", "shots", "acc", "acc_std", "n_seeds"]].reset_index(drop=True)


def figure_few_shot(
    runs: pd.DataFrame, *, datasets: Sequence[str] = BASE2NEW_DATASETS, expected_seeds: int = DEFAULT_SEEDS
) -> Figure | None:
    """Accuracy against the number of shots K (log-2 axis), per dataset and on Average.

    Means over seeds with the seed std as error bars; Average: the mean over datasets, its std over
    the seeds that have every dataset.
    """
    stats = few_shot_stats(runs, datasets=datasets)
    if stats.empty:
        return None
    panels = [AVERAGE] + [d for d in order_datasets(stats["dataset"]) if d != AVERAGE]
    panels = [p for p in panels if (stats["dataset"] == p).any()]
    methods = order_methods(stats["method"].unique())
    shots = sorted(stats["shots"].unique())
    notes = SeedNotes.of(stats["n_seeds"], expected_seeds)
    with figure_style():
        figure, axes = panel_figure(len(panels))
        for ax, dataset in zip(axes, panels, strict=True):
            rows = stats[stats["dataset"] == dataset]
            for method in methods:
                series = rows[rows["method"] == method].sort_values("shots")
                if series.empty:
                    continue
                draw_errorbar(
                    ax,
                    series["shots"],
                    series["acc"],
                    yerr=[std_value(s) for s in series["acc_std"]],
                    method=method,
                    linestyle="-",
                    zorder=3,
                )
                for _, row in series.iterrows():
                    n_note(
                        ax, row["shots"], row["acc"], int(row["n_seeds"]), notes, method_style(method).color
                    )
            ax.set_xscale("log", base=2)
            ax.set_xticks(shots, [str(k) for k in shots])
            ax.minorticks_off()
            ax.set_title(dataset_label(dataset))
            ax.set_xlabel("Shots per class (K)")
            ax.set_ylabel("Accuracy (%)")
        add_legend(figure, methods, note=notes.legend())
    return figure


def figures(ledger: RunsTable, protocol: Protocol, ctx: ResultsContext) -> list[NamedFigure]:
    """The few-shot figure: accuracy against K per dataset and on Average."""
    figure = figure_few_shot(ledger.runs, datasets=ctx.grid, expected_seeds=ctx.expected_seeds)
    caption = (
        "Few-shot accuracy against shots per class K (log-2 axis), per dataset and on Average. "
        + SPREAD_CAPTION
    )
    return [NamedFigure(KIND, figure, caption)] if figure is not None else []
