"""The base-to-new table (docs/algorithm.md §6): seed means of base and new accuracy, HM, the Average row.

Per (method, dataset) the seeds' base and new accuracies are averaged and HM = 2BN/(B+N) is taken
of those means; the Average row is the mean of the datasets' base means, the mean of their new
means and the HM of those two — never the mean of per-dataset HMs. It is left empty, naming the
missing datasets, when any expected dataset has no runs. The published comparison is added by
``orchestration.results.published``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import pandas as pd

from orchestration.results.context import DEFAULT_SEEDS
from orchestration.results.display import Cell, DisplayTable, bold_best, number
from orchestration.results.figure_style import (
    fill_stats,
    per_seed_table,
    seed_averages,
    std_and_count,
)
from orchestration.results.labels import AVERAGE, dataset_label, method_label, order_datasets, order_methods
from orchestration.results.published import DELTA_POINTS, DELTA_STDS
from orchestration.results.statistics import per_run_table, seed_stats
from prometar import protocols
from prometar.data import catalog
from prometar.protocols import harmonic_mean

KIND = "base2new"
PROTOCOL = protocols.for_table(KIND)
"""The protocol whose runs this table shows."""
BASE_METRIC, NEW_METRIC = PROTOCOL.set_metrics
BASE2NEW_DATASETS: tuple[str, ...] = catalog.BASE_TO_NEW_DATASETS
"""The 11 base-to-new datasets in the paper's column order."""


BASE2NEW_COLUMNS: tuple[str, ...] = (
    "method",
    "dataset",
    "base",
    "new",
    "hm",
    "base_std",
    "new_std",
    "n_seeds",
    "shots",
    "missing",
)


def base2new_summary(runs: pd.DataFrame, *, datasets: Sequence[str] = BASE2NEW_DATASETS) -> pd.DataFrame:
    """Seed means per (method, dataset) and the Average row, for base-to-new runs.

    Args:
        runs: The tidy runs table; rows of protocol ``base2new`` with metrics ``base_acc`` and
            ``new_acc`` are used.
        datasets: The datasets the Average row is taken over (the sweep's grid; the paper's 11 by
            default). Datasets with runs but not in this list get rows after these, outside the
            Average.

    Returns:
        Columns :data:`BASE2NEW_COLUMNS`: one Average row (dataset ``average``) then one row per
        dataset for every (method, shots), methods in the paper's order. ``n_seeds`` counts the
        seeds with both metrics; ``missing`` names, on Average rows, the expected datasets without
        runs (the Average values are then empty) and says ``no runs`` on an empty dataset row.

    Raises:
        ResultsError: Two runs for the same (method, dataset, shots, seed).
    """
    rows = runs[runs["protocol"].isin(PROTOCOL.recorded_names)]
    keys = ["method", "shots", "dataset"]
    per_run = per_run_table(rows, [BASE_METRIC, NEW_METRIC], keys, what="base-to-new table")
    per_run = per_run.dropna(subset=[BASE_METRIC, NEW_METRIC])
    base = seed_stats(per_run, keys, BASE_METRIC).set_index(keys)
    new = seed_stats(per_run, keys, NEW_METRIC).set_index(keys)
    expected = order_datasets(datasets)
    present = per_run["dataset"].unique().tolist()
    shown = expected + [d for d in order_datasets(present) if d not in expected]
    records: list[dict[str, object]] = []
    for method in order_methods(per_run["method"].unique()):
        for shots in sorted(per_run.loc[per_run["method"] == method, "shots"].unique()):
            block: list[dict[str, object]] = []
            for dataset in shown:
                key = (method, shots, dataset)
                if key in base.index:
                    b, n = base.loc[key], new.loc[key]
                    block.append(
                        {
                            "method": method,
                            "dataset": dataset,
                            "base": b["mean"],
                            "new": n["mean"],
                            "hm": harmonic_mean(b["mean"], n["mean"]),
                            "base_std": b["std"],
                            "new_std": n["std"],
                            "n_seeds": int(b["n"]),
                            "shots": int(shots),
                            "missing": "",
                        }
                    )
                else:
                    block.append(
                        {
                            "method": method,
                            "dataset": dataset,
                            "base": math.nan,
                            "new": math.nan,
                            "hm": math.nan,
                            "base_std": math.nan,
                            "new_std": math.nan,
                            "n_seeds": 0,
                            "shots": int(shots),
                            "missing": "no runs",
                        }
                    )
            in_average = [r for r in block if r["dataset"] in expected]
            missing = [str(r["dataset"]) for r in in_average if r["n_seeds"] == 0]
            average: dict[str, object] = {
                "method": method,
                "dataset": AVERAGE,
                "base": math.nan,
                "new": math.nan,
                "hm": math.nan,
                "base_std": math.nan,
                "new_std": math.nan,
                "n_seeds": 0,
                "shots": int(shots),
                "missing": ", ".join(missing),
            }
            if not missing and in_average:
                mean_base = sum(float(r["base"]) for r in in_average) / len(in_average)  # type: ignore[arg-type]
                mean_new = sum(float(r["new"]) for r in in_average) / len(in_average)  # type: ignore[arg-type]
                average.update(
                    base=mean_base,
                    new=mean_new,
                    hm=harmonic_mean(mean_base, mean_new),
                    n_seeds=min(int(r["n_seeds"]) for r in in_average),
                )  # type: ignore[call-overload]
            records.append(average)
            records.extend(block)
    summary = pd.DataFrame.from_records(records, columns=list(BASE2NEW_COLUMNS))
    return summary.astype({"n_seeds": "int64", "shots": "int64"}) if len(summary) else summary


def layout_base2new(
    summary: pd.DataFrame, *, expected_seeds: int = DEFAULT_SEEDS, published_rows: bool = False
) -> DisplayTable:
    """Lay out a base-to-new summary (with or without the published comparison).

    One block per dataset (Average first), one row per method; columns Base, New, HM (ours), then,
    when the summary carries published numbers, Paper and Δ for each. Best of each of our columns
    within a block in bold.

    With ``published_rows`` (the LaTeX layout), the published numbers are rows instead: each dataset
    block lists our methods, then, under a partial rule, the published row of each of them (``†``
    still marks our cells beyond tolerance).
    """
    if published_rows and "paper_base" in summary.columns:
        return _layout_published_rows(summary, expected_seeds=expected_seeds)
    with_paper = "paper_base" in summary.columns
    several_shots = summary["shots"].nunique() > 1 if len(summary) else False
    header = ["Dataset", "Method"]
    for metric in ("Base", "New", "HM"):
        header += [metric, f"{metric} (paper)", f"Δ {metric}"] if with_paper else [metric]
    table = DisplayTable("Base-to-new generalisation (seed means ± std)", header, label_columns=2)
    notes: set[str] = set()
    for dataset in dict.fromkeys(summary["dataset"]):
        block_rows = summary[summary["dataset"] == dataset]
        block: list[list[Cell]] = []
        for i, (_, row) in enumerate(block_rows.iterrows()):
            label = method_label(str(row["method"])) + (f" ({row['shots']}-shot)" if several_shots else "")
            cells = [Cell(text=dataset_label(dataset) if i == 0 else ""), Cell(text=label)]
            empty_text = f"missing: {row['missing']}" if dataset == AVERAGE and row["missing"] else None
            n_shown = int(row["n_seeds"]) if 0 < row["n_seeds"] < expected_seeds else None
            for metric in ("base", "new", "hm"):
                std = number(row.get(f"{metric}_std")) if metric != "hm" else None
                value = number(row[metric])
                ours = Cell(
                    value=value,
                    std=std,
                    n=n_shown if metric != "hm" else None,
                    text=empty_text if value is None and metric == "base" else None,
                )
                cells.append(ours)
                if with_paper:
                    approx = bool(row["provenance"]) and row["provenance"] != "published"
                    cells.append(Cell(value=number(row[f"paper_{metric}"]), approx=approx))
                    delta = number(row[f"delta_{metric}"])
                    cells.append(
                        Cell(value=delta, signed=True, flag=bool(row[f"flag_{metric}"]) and delta is not None)
                    )
                    if approx and number(row[f"paper_{metric}"]) is not None:
                        notes.add("~ paper value approximate (provenance not 'published')")
                    if bool(row[f"flag_{metric}"]) and delta is not None:
                        notes.add(f"† |Δ| > {DELTA_POINTS:g} point and > {DELTA_STDS:g} std")
            if n_shown is not None:
                notes.add(f"(n=k): only k of {expected_seeds} seeds")
            block.append(cells)
        step = 3 if with_paper else 1
        bold_best(block, [2 + step * k for k in range(3)])
        table.rules.append(len(table.rows))
        table.rows.extend(block)
    table.notes = sorted(notes)
    return table


def _layout_published_rows(summary: pd.DataFrame, *, expected_seeds: int) -> DisplayTable:
    """:func:`layout_base2new` with the published numbers as a block of rows under ours."""
    plain = layout_base2new(
        summary.drop(
            columns=[c for c in summary.columns if c.startswith(("paper_", "delta_"))]
            + ["flag_base", "flag_new", "flag_hm", "provenance"]
        ),
        expected_seeds=expected_seeds,
    )
    table = DisplayTable(plain.title, plain.header, label_columns=2)
    notes = set(plain.notes)
    starts = [*plain.rules, len(plain.rows)]
    datasets = list(dict.fromkeys(summary["dataset"]))
    several_shots = summary["shots"].nunique() > 1
    for dataset, start, end in zip(datasets, starts[:-1], starts[1:], strict=True):
        ours = summary[summary["dataset"] == dataset].reset_index(drop=True)
        table.rules.append(len(table.rows))
        for i, cells in enumerate(plain.rows[start:end]):
            row = ours.iloc[i]
            cells = list(cells)
            for k, metric in enumerate(("base", "new", "hm")):
                if bool(row[f"flag_{metric}"]) and number(row[f"delta_{metric}"]) is not None:
                    cells[2 + k] = replace(cells[2 + k], flag=True)
                    notes.add(
                        f"† differs from the published number by > {DELTA_POINTS:g} point and > "
                        f"{DELTA_STDS:g} std"
                    )
            table.rows.append(cells)
        paper = ours[ours["paper_base"].notna()]
        if paper.empty:
            continue
        table.subrules.append(len(table.rows))
        for _, row in paper.iterrows():
            approx = bool(row["provenance"]) and row["provenance"] != "published"
            label = method_label(str(row["method"])) + (f" ({row['shots']}-shot)" if several_shots else "")
            table.rows.append(
                [Cell(text=""), Cell(text=f"{label} (published)")]
                + [Cell(value=number(row[f"paper_{m}"]), approx=approx) for m in ("base", "new", "hm")]
            )
            if approx:
                notes.add("~ paper value approximate (provenance not 'published')")
    table.notes = sorted(notes)
    return table


def base2new_stats(runs: pd.DataFrame, *, datasets: Sequence[str] = BASE2NEW_DATASETS) -> pd.DataFrame:
    """The base-to-new summary with the seed spread of every value, the Average row's included.

    The means are the table's (``results.base2new.base2new_summary``). ``hm_std`` is the sample std over seeds
    of each seed's HM; on Average rows every std is taken over the seeds that have all the Average's
    datasets (each seed's mean over datasets, and its HM), and ``n_seeds`` counts those seeds.

    Returns:
        Columns ``method, shots, dataset, base, new, hm, base_std, new_std, hm_std, n_seeds`` (rows
        without runs left out).
    """
    summary = base2new_summary(runs, datasets=datasets)
    summary = summary[summary["base"].notna()]
    keys = ["method", "shots", "dataset"]
    base_metric, new_metric = BASE_METRIC, NEW_METRIC
    per_seed = per_seed_table(runs, PROTOCOL.recorded_names, [base_metric, new_metric], keys)
    per_seed = per_seed.dropna(subset=[base_metric, new_metric])
    per_seed["hm"] = [
        harmonic_mean(b, n) for b, n in zip(per_seed[base_metric], per_seed[new_metric], strict=True)
    ]
    hm = std_and_count(per_seed, keys, "hm").drop(columns="n")
    averages = seed_averages(
        per_seed, ["method", "shots"], order_datasets(datasets), [base_metric, new_metric]
    )
    averages["hm"] = [
        harmonic_mean(b, n) for b, n in zip(averages[base_metric], averages[new_metric], strict=True)
    ]
    average_stats = std_and_count(averages, ["method", "shots"], base_metric).rename(
        columns={f"{base_metric}_std": "base_std"}
    )
    for metric, name in ((new_metric, "new_std"), ("hm", "hm_std")):
        average_stats = average_stats.merge(
            std_and_count(averages, ["method", "shots"], metric)
            .drop(columns="n")
            .rename(columns={f"{metric}_std": name}),
            on=["method", "shots"],
            how="left",
        )
    stats = summary.merge(hm, on=keys, how="left")
    stats = fill_stats(
        stats,
        stats["dataset"] == AVERAGE,
        average_stats,
        ["method", "shots"],
        {"base_std": "base_std", "new_std": "new_std", "hm_std": "hm_std", "n_seeds": "n"},
    )
    columns = ["method", "shots", "dataset", "base", "new", "hm", "base_std", "new_std", "hm_std", "n_seeds"]
    return stats[columns].reset_index(drop=True)
