"""The few-shot table: accuracy per (method, dataset, K) over seeds, with an Average row per K."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from orchestration.results.display import Cell, DisplayTable, bold_best, number
from orchestration.results.labels import AVERAGE, dataset_label, method_label, order_datasets, order_methods
from orchestration.results.statistics import per_run_table, seed_stats
from prometar import protocols
from prometar.data import catalog

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


def layout_few_shot(summary: pd.DataFrame, *, expected_seeds: int = 3) -> DisplayTable:
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
