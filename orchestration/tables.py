"""The paper's tables as pure functions of the tidy runs table (``ledger.py``).

Each table is computed in two steps. A ``*_summary`` function turns runs into a numeric summary
frame (seed means, sample standard deviations, seed counts, harmonic means, the Average row): that
frame is what the CSV format writes. A ``layout_*`` function turns a summary into a
:class:`DisplayTable` of formatted cells (bold best, ``±`` std, seed counts, flags), which
:func:`to_markdown` and :func:`to_latex` render.

Base-to-new (algorithm.md §6): per (method, dataset) the seeds' base and new accuracies are averaged
and HM = 2BN/(B+N) is taken of those means; the Average row is the mean of the datasets' base
means, the mean of their new means and the HM of those two — never the mean of per-dataset HMs. It
is left empty, naming the missing datasets, when any expected dataset has no runs.

Ablations (a sweep's ``variant`` axis) put several configurations in one (method, dataset, shots,
seed) cell; :func:`build_tables` then groups the runs by the config keys that tell them apart
(:func:`ablation_params`) and gives one Average row per setting instead of the base-to-new table.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Literal

import pandas as pd

from orchestration.ledger import (
    Ledger,
    PlannedRuns,
    ResultsError,
    Source,
    attach_params,
    read_csv_file,
    read_experiment,
)
from prometar.config import RunConfig

AVERAGE = "average"
BASE2NEW_DATASETS: tuple[str, ...] = (
    "imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101",
    "fgvc_aircraft", "sun397", "dtd", "eurosat", "ucf101",
)  # fmt: skip
"""The 11 base-to-new datasets in the paper's column order."""

DOMAIN_TARGETS: tuple[str, ...] = ("imagenet_v2", "imagenet_sketch", "imagenet_a", "imagenet_r")
"""Domain-generalisation targets of an ImageNet-trained model."""

CROSS_DATASET_TARGETS: tuple[str, ...] = BASE2NEW_DATASETS[1:]
"""Cross-dataset targets of an ImageNet-trained model."""

DATASET_LABELS: dict[str, str] = {
    AVERAGE: "Average", "imagenet": "ImageNet", "caltech101": "Caltech101",
    "oxford_pets": "OxfordPets", "stanford_cars": "StanfordCars", "oxford_flowers": "Flowers102",
    "food101": "Food101", "fgvc_aircraft": "FGVCAircraft", "sun397": "SUN397", "dtd": "DTD",
    "eurosat": "EuroSAT", "ucf101": "UCF101", "imagenet_v2": "ImageNetV2",
    "imagenet_sketch": "ImageNet-Sketch", "imagenet_a": "ImageNet-A", "imagenet_r": "ImageNet-R",
}  # fmt: skip

METHOD_ORDER: tuple[str, ...] = (
    "clip", "zeroshot", "coop", "cocoop", "kgcoop", "maple", "vpt", "ivlp", "ivlp_reg", "promptsrc", "prometar",
)  # fmt: skip
"""The paper's methods in its order, with this project's baselines (zeroshot, vpt, ivlp, ivlp_reg) in place."""
METHOD_LABELS: dict[str, str] = {
    "clip": "CLIP", "coop": "CoOp", "cocoop": "CoCoOp", "kgcoop": "KgCoOp", "maple": "MaPLe",
    "promptsrc": "PromptSRC", "prometar": "ProMetaR", "zeroshot": "Zero-shot CLIP", "vpt": "VPT",
    "ivlp": "IVLP", "ivlp_reg": "IVLP + reg.",
}  # fmt: skip

FEW_SHOT_PROTOCOLS: tuple[str, ...] = ("all_classes", "few_shot")
DELTA_POINTS = 1.0
"""A difference to the paper is flagged when it exceeds both this many points..."""
DELTA_STDS = 2.0
"""...and this many of our seed standard deviations."""

Format = Literal["markdown", "latex", "csv"]
FORMATS: tuple[str, ...] = ("markdown", "latex", "csv")


# --------------------------------------------------------------------------------------------- cells


@dataclass(frozen=True)
class Cell:
    """One formatted table cell.

    Attributes:
        value: The number shown (None: an empty cell, or ``text``).
        std: Shown as ``± std`` after the value.
        n: Seed count, shown when fewer seeds than expected.
        text: Plain text instead of a number.
        bold: Best in its column.
        flag: A difference beyond tolerance (marked ``†``).
        approx: An approximate reference value (marked ``~``).
        signed: Show an explicit sign (differences).
    """

    value: float | None = None
    std: float | None = None
    n: int | None = None
    text: str | None = None
    bold: bool = False
    flag: bool = False
    approx: bool = False
    signed: bool = False


@dataclass
class DisplayTable:
    """A table ready to render: a header, rows of cells, rule positions and footnotes.

    Attributes:
        title: Caption.
        header: Column titles.
        rows: Rows of cells, each as long as ``header``.
        rules: Row indices before which a horizontal rule is drawn (dataset blocks).
        notes: Footnotes printed under the table.
        label_columns: How many leading columns hold labels (left-aligned); the rest hold numbers.
        label: LaTeX label (``tab:<sweep>-<table>``); empty: none.
        subrules: Row indices before which a rule under all but the first column is drawn (the
            published rows of a dataset block).
    """

    title: str
    header: list[str]
    rows: list[list[Cell]] = field(default_factory=list)
    rules: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    label_columns: int = 1
    label: str = ""
    subrules: list[int] = field(default_factory=list)


def _is_number(value: float | None) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _number(value: object) -> float | None:
    """A float, or None for missing values."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    return float(value)  # type: ignore[arg-type]


def bold_best(rows: list[list[Cell]], columns: Iterable[int], *, lower_is_better: bool = False) -> None:
    """Mark the best value of each given column in bold (ties all bold; needs two values or more)."""
    for column in columns:
        values = [r[column].value for r in rows if _is_number(r[column].value)]
        if len(values) < 2:
            continue
        best = min(values) if lower_is_better else max(values)
        for row in rows:
            cell = row[column]
            if _is_number(cell.value) and round(cell.value, 2) == round(best, 2):
                row[column] = replace(cell, bold=True)


def dataset_label(key: str) -> str:
    """Display name of a dataset key (the key itself when unknown)."""
    return DATASET_LABELS.get(key, key)


def method_label(key: str) -> str:
    """Display name of a method key (the key itself when unknown)."""
    return METHOD_LABELS.get(key, key)


def order_datasets(keys: Iterable[str]) -> list[str]:
    """Known datasets in the paper's order, then the others in first-seen order (no duplicates)."""
    keys = list(dict.fromkeys(keys))
    known = [k for k in (*BASE2NEW_DATASETS, *DOMAIN_TARGETS) if k in keys]
    return known + [k for k in keys if k not in known]


def order_methods(keys: Iterable[str]) -> list[str]:
    """Methods in the paper's order (baselines first, ProMetaR last), then the others sorted."""
    keys = set(keys)
    return [m for m in METHOD_ORDER if m in keys] + sorted(keys - set(METHOD_ORDER))


# ------------------------------------------------------------------------------------------ numbers


def harmonic_mean(base: float, new: float) -> float:
    """HM = 2BN/(B+N); NaN when either is missing, 0 when both are 0."""
    if not (_is_number(base) and _is_number(new)):
        return math.nan
    if base + new == 0:
        return 0.0
    return 2 * base * new / (base + new)


def _per_run(runs: pd.DataFrame, metrics: Sequence[str], keys: Sequence[str], *, what: str) -> pd.DataFrame:
    """One row per run with the given metrics as columns; refuses two runs for one seed."""
    rows = runs[runs["metric"].isin(metrics)]
    wide = rows.pivot_table(
        index=[*keys, "seed", "run_id"], columns="metric", values="value", aggfunc="first"
    ).reset_index()
    wide.columns.name = None
    for metric in metrics:
        if metric not in wide.columns:
            wide[metric] = math.nan
    duplicated = wide.duplicated([*keys, "seed"], keep=False)
    if duplicated.any():
        first = wide[duplicated].iloc[0]
        where = ", ".join(f"{k}={first[k]}" for k in [*keys, "seed"])
        ids = ", ".join(
            wide[duplicated & (wide[[*keys, "seed"]] == first[[*keys, "seed"]]).all(axis=1)]["run_id"]
        )
        raise ResultsError(
            f"{what}: several runs for {where} (runs {ids}); they differ in configuration — "
            "tabulate them with an ablation table grouped by the params that differ"
        )
    return wide


def _seed_stats(per_run: pd.DataFrame, keys: Sequence[str], metric: str) -> pd.DataFrame:
    """Mean, sample std (ddof=1) and count over seeds of one metric."""
    grouped = per_run.dropna(subset=[metric]).groupby(list(keys), sort=False)[metric]
    return grouped.agg(mean="mean", std="std", n="count").reset_index()


# ------------------------------------------------------------------------------------- base-to-new


BASE2NEW_COLUMNS: tuple[str, ...] = (
    "method", "dataset", "base", "new", "hm", "base_std", "new_std", "n_seeds", "shots", "missing",
)  # fmt: skip


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
    rows = runs[runs["protocol"] == "base2new"]
    keys = ["method", "shots", "dataset"]
    per_run = _per_run(rows, ["base_acc", "new_acc"], keys, what="base-to-new table")
    per_run = per_run.dropna(subset=["base_acc", "new_acc"])
    base = _seed_stats(per_run, keys, "base_acc").set_index(keys)
    new = _seed_stats(per_run, keys, "new_acc").set_index(keys)
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
                    block.append({
                        "method": method, "dataset": dataset, "base": b["mean"], "new": n["mean"],
                        "hm": harmonic_mean(b["mean"], n["mean"]), "base_std": b["std"],
                        "new_std": n["std"], "n_seeds": int(b["n"]), "shots": int(shots), "missing": "",
                    })  # fmt: skip
                else:
                    block.append({
                        "method": method, "dataset": dataset, "base": math.nan, "new": math.nan,
                        "hm": math.nan, "base_std": math.nan, "new_std": math.nan, "n_seeds": 0,
                        "shots": int(shots), "missing": "no runs",
                    })  # fmt: skip
            in_average = [r for r in block if r["dataset"] in expected]
            missing = [str(r["dataset"]) for r in in_average if r["n_seeds"] == 0]
            average: dict[str, object] = {
                "method": method, "dataset": AVERAGE, "base": math.nan, "new": math.nan, "hm": math.nan,
                "base_std": math.nan, "new_std": math.nan, "n_seeds": 0, "shots": int(shots),
                "missing": ", ".join(missing),
            }  # fmt: skip
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


PUBLISHED_COLUMNS: tuple[str, ...] = ("method", "dataset", "base", "new", "hm", "provenance")


def default_published_path() -> Path:
    """The published base-to-new numbers shipped with the package."""
    return Path(str(resources.files("orchestration") / "resources" / "published_base2new.csv"))


def load_published(path: Path | str | None = None) -> pd.DataFrame:
    """Read published base-to-new numbers (``method,dataset,base,new,hm[,provenance]``).

    Args:
        path: The CSV; the shipped reference by default.

    Raises:
        ResultsError: The file is missing or a column is missing or not numeric.
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
    table["method"] = table["method"].astype(str)
    table["dataset"] = table["dataset"].astype(str)
    return table[list(PUBLISHED_COLUMNS)]


def add_published(summary: pd.DataFrame, published: pd.DataFrame) -> pd.DataFrame:
    """Add the paper's numbers, our difference to them and flags to a base-to-new summary.

    A difference is flagged when |Δ| exceeds both :data:`DELTA_POINTS` points and
    :data:`DELTA_STDS` of our seed standard deviations (HM and Average rows have no std: 1 point).

    Returns:
        The summary plus ``paper_base, paper_new, paper_hm, delta_base, delta_new, delta_hm,
        flag_base, flag_new, flag_hm, provenance`` (empty where the paper has no number).
    """
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
    merged["provenance"] = merged["provenance"].fillna("")
    columns = [*summary.columns, "paper_base", "paper_new", "paper_hm", "delta_base", "delta_new", "delta_hm",
               "flag_base", "flag_new", "flag_hm", "provenance"]  # fmt: skip
    return merged[columns]


def layout_base2new(summary: pd.DataFrame, *, expected_seeds: int = 3, published_rows: bool = False) -> DisplayTable:
    """Lay out a base-to-new summary (with or without the published comparison).

    One block per dataset (Average first), one row per method; columns Base, New, HM (ours), then,
    when the summary carries published numbers, Paper and Δ for each. Best of each of our columns
    within a block in bold.

    With ``published_rows`` (the LaTeX layout), the published numbers are rows instead: each dataset
    block lists our methods, then, under a partial rule, the published row of each of them (``†``
    still marks our cells beyond tolerance).
    """
    if published_rows and "paper_base" in summary.columns:
        return _layout_base2new_published_rows(summary, expected_seeds=expected_seeds)
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
                std = _number(row.get(f"{metric}_std")) if metric != "hm" else None
                value = _number(row[metric])
                ours = Cell(
                    value=value,
                    std=std,
                    n=n_shown if metric != "hm" else None,
                    text=empty_text if value is None and metric == "base" else None,
                )
                cells.append(ours)
                if with_paper:
                    approx = bool(row["provenance"]) and row["provenance"] != "published"
                    cells.append(Cell(value=_number(row[f"paper_{metric}"]), approx=approx))
                    delta = _number(row[f"delta_{metric}"])
                    cells.append(
                        Cell(value=delta, signed=True, flag=bool(row[f"flag_{metric}"]) and delta is not None)
                    )
                    if approx and _number(row[f"paper_{metric}"]) is not None:
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


def _layout_base2new_published_rows(summary: pd.DataFrame, *, expected_seeds: int) -> DisplayTable:
    """:func:`layout_base2new` with the published numbers as a block of rows under ours."""
    plain = layout_base2new(summary.drop(columns=[c for c in summary.columns if c.startswith(("paper_", "delta_"))]
                                         + ["flag_base", "flag_new", "flag_hm", "provenance"]),
                            expected_seeds=expected_seeds)
    table = DisplayTable(plain.title, plain.header, label_columns=2)
    notes = set(plain.notes)
    starts = [*plain.rules, len(plain.rows)]
    several_shots = summary["shots"].nunique() > 1
    for block_index, (start, end) in enumerate(zip(starts[:-1], starts[1:], strict=True)):
        dataset = list(dict.fromkeys(summary["dataset"]))[block_index]
        ours = summary[summary["dataset"] == dataset].reset_index(drop=True)
        table.rules.append(len(table.rows))
        for i, cells in enumerate(plain.rows[start:end]):
            row = ours.iloc[i]
            cells = list(cells)
            for k, metric in enumerate(("base", "new", "hm")):
                if bool(row[f"flag_{metric}"]) and _number(row[f"delta_{metric}"]) is not None:
                    cells[2 + k] = replace(cells[2 + k], flag=True)
                    notes.add(f"† differs from the published number by > {DELTA_POINTS:g} point and > "
                              f"{DELTA_STDS:g} std")
            table.rows.append(cells)
        paper = ours[ours["paper_base"].notna()]
        if paper.empty:
            continue
        table.subrules.append(len(table.rows))
        for _, row in paper.iterrows():
            approx = bool(row["provenance"]) and row["provenance"] != "published"
            label = method_label(str(row["method"])) + (f" ({row['shots']}-shot)" if several_shots else "")
            table.rows.append([Cell(text=""), Cell(text=f"{label} (published)")]
                              + [Cell(value=_number(row[f"paper_{m}"]), approx=approx) for m in ("base", "new", "hm")])
            if approx:
                notes.add("~ paper value approximate (provenance not 'published')")
    table.notes = sorted(notes)
    return table


# ---------------------------------------------------------------------------------------- transfer


TRANSFER_COLUMNS: tuple[str, ...] = (
    "method",
    "source",
    "column",
    "mean",
    "std",
    "n_seeds",
    "shots",
    "missing",
)
TARGET_MEAN = "target_mean"
SOURCE_METRIC = "acc/<source>"  # internal name of the source accuracy while pivoting


def transfer_targets(runs: pd.DataFrame, protocol: str) -> tuple[str, ...]:
    """The target datasets of a transfer protocol's runs: the ``acc/<target>`` they logged (not the
    source's, not ``acc/mean``), in the standard order; the standard list when they logged none.

    A cross-dataset sweep's grid holds its source (ImageNet), not its targets, so the targets come
    from the runs (a sweep may also set its own ``eval.targets``).
    """
    standard = DOMAIN_TARGETS if protocol == "domain_generalization" else CROSS_DATASET_TARGETS
    rows = runs[runs["protocol"] == protocol]
    sources = set(rows["dataset"])
    logged = {m.removeprefix("acc/") for m in rows["metric"].unique() if str(m).startswith("acc/")}
    logged -= sources | {"mean"}
    if not logged:
        return standard
    return tuple(t for t in standard if t in logged) + tuple(sorted(logged - set(standard)))


def transfer_summary(runs: pd.DataFrame, *, protocol: str, targets: Sequence[str]) -> pd.DataFrame:
    """Source and target accuracies of models trained on one dataset (ImageNet) and tested on others.

    Args:
        runs: The tidy runs table; rows of ``protocol`` with metrics ``acc/<target>`` are used. The
            source accuracy is ``acc/<source>`` (or ``acc``) of the same runs.
        protocol: ``domain_generalization`` or ``cross_dataset``.
        targets: Target dataset keys, in column order.

    Returns:
        Long summary, columns :data:`TRANSFER_COLUMNS`: one row per (method, shots, source, column)
        where column is ``source``, each target, then ``target_mean`` — the mean of the target seed
        means, empty with ``missing`` naming the targets that have no runs.
    """
    rows = runs[runs["protocol"] == protocol].copy()
    source_metric = "acc/" + rows["dataset"]
    rows.loc[rows["metric"] == source_metric, "metric"] = SOURCE_METRIC
    has_source = set(rows.loc[rows["metric"] == SOURCE_METRIC, "run_id"])
    rows.loc[(rows["metric"] == "acc") & ~rows["run_id"].isin(has_source), "metric"] = SOURCE_METRIC
    rows = rows.rename(columns={"dataset": "source"})
    columns = [SOURCE_METRIC, *[f"acc/{t}" for t in targets]]
    keys = ["method", "shots", "source"]
    per_run = _per_run(rows, columns, keys, what=f"{protocol} table")
    records: list[dict[str, object]] = []
    groups = per_run[keys].drop_duplicates()
    for method in order_methods(groups["method"]):
        for _, group in groups[groups["method"] == method].sort_values(["shots", "source"]).iterrows():
            mask = (per_run[keys] == group[keys]).all(axis=1)
            subset = per_run[mask]
            means = []
            for column in columns:
                values = subset[column].dropna()
                key = "source" if column == SOURCE_METRIC else column.removeprefix("acc/")
                record = {"method": method, "source": group["source"], "column": key,
                          "mean": values.mean() if len(values) else math.nan,
                          "std": values.std() if len(values) > 1 else math.nan, "n_seeds": len(values),
                          "shots": int(group["shots"]), "missing": "" if len(values) else "no runs"}  # fmt: skip
                records.append(record)
                if column != SOURCE_METRIC:
                    means.append((key, record["mean"]))
            missing = [k for k, m in means if not _is_number(m)]
            records.append({"method": method, "source": group["source"], "column": TARGET_MEAN,
                            "mean": math.nan if missing else sum(m for _, m in means) / len(means),
                            "std": math.nan, "n_seeds": 0, "shots": int(group["shots"]),
                            "missing": ", ".join(missing)})  # fmt: skip
    return pd.DataFrame.from_records(records, columns=list(TRANSFER_COLUMNS))


def layout_transfer(summary: pd.DataFrame, *, title: str, expected_seeds: int = 3) -> DisplayTable:
    """One row per method: source accuracy, each target, target mean; best per column in bold."""
    columns = list(dict.fromkeys(summary["column"]))
    header = ["Method"]
    for column in columns:
        if column == "source":
            header.append("Source")
        elif column == TARGET_MEAN:
            header.append("Target mean")
        else:
            header.append(dataset_label(column))
    table = DisplayTable(title, header)
    notes: set[str] = set()
    for (method, shots, source), group in summary.groupby(["method", "shots", "source"], sort=False):
        cells = [Cell(text=f"{method_label(str(method))}")]
        if summary["source"].nunique() > 1 or summary["shots"].nunique() > 1:
            cells[0] = Cell(text=f"{method_label(str(method))} ({dataset_label(str(source))}, {shots}-shot)")
        for _, row in group.iterrows():
            n = int(row["n_seeds"])
            n_shown = n if 0 < n < expected_seeds else None
            if n_shown is not None:
                notes.add(f"(n=k): only k of {expected_seeds} seeds")
            text = f"missing: {row['missing']}" if row["column"] == TARGET_MEAN and row["missing"] else None
            cells.append(Cell(value=_number(row["mean"]), std=_number(row["std"]), n=n_shown, text=text))
        table.rows.append(cells)
    bold_best(table.rows, range(1, len(header)))
    table.notes = sorted(notes)
    return table


# ---------------------------------------------------------------------------------------- few-shot


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
    rows = runs[runs["protocol"].isin(FEW_SHOT_PROTOCOLS)]
    keys = ["method", "dataset", "shots"]
    per_run = _per_run(rows, ["acc"], keys, what="few-shot table").dropna(subset=["acc"])
    stats = _seed_stats(per_run, keys, "acc").set_index(keys)
    expected = order_datasets(datasets)
    shown = expected + [d for d in order_datasets(per_run["dataset"].unique()) if d not in expected]
    records: list[dict[str, object]] = []
    for method in order_methods(per_run["method"].unique()):
        for shots in sorted(per_run.loc[per_run["method"] == method, "shots"].unique()):
            block = []
            for dataset in shown:
                key = (method, dataset, shots)
                found = key in stats.index
                block.append({"method": method, "dataset": dataset, "shots": int(shots),
                              "acc": stats.loc[key, "mean"] if found else math.nan,
                              "acc_std": stats.loc[key, "std"] if found else math.nan,
                              "n_seeds": int(stats.loc[key, "n"]) if found else 0,
                              "missing": "" if found else "no runs"})  # fmt: skip
            inside = [r for r in block if r["dataset"] in expected]
            missing = [str(r["dataset"]) for r in inside if r["n_seeds"] == 0]
            records.append({"method": method, "dataset": AVERAGE, "shots": int(shots),
                            "acc": math.nan if missing or not inside else sum(r["acc"] for r in inside) / len(inside),
                            "acc_std": math.nan, "n_seeds": 0, "missing": ", ".join(missing)})  # fmt: skip
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
                cells.append(
                    Cell(value=_number(row["acc"]), std=_number(row["acc_std"]), n=n_shown, text=text)
                )
            block.append(cells)
        bold_best(block, range(2, 2 + len(shots)))
        table.rules.append(len(table.rows))
        table.rows.extend(block)
    table.notes = sorted(notes)
    return table


# ---------------------------------------------------------------------------------------- ablation


def ablation_summary(
    runs: pd.DataFrame, by: Sequence[str], *, datasets: Sequence[str] = BASE2NEW_DATASETS
) -> pd.DataFrame:
    """One row per switch setting (and method): the base-to-new Average over ``datasets``.

    Args:
        runs: The tidy runs table carrying the ``by`` columns (see ``ledger.attach_params``).
        by: Config columns whose values define a setting (e.g. ``meta.gate``, ``meta.task_aug``).
        datasets: Datasets of the Average.

    Returns:
        Columns ``*by, method, shots, base, new, hm, n_seeds, missing``, settings in sorted order.
    """
    missing = [c for c in by if c not in runs.columns]
    if missing:
        raise ResultsError(f"ablation table: runs have no column(s) {', '.join(missing)}")
    records = []
    for setting, group in runs.groupby(list(by), dropna=False, sort=True):
        setting = setting if isinstance(setting, tuple) else (setting,)
        summary = base2new_summary(group, datasets=datasets)
        for _, row in summary[summary["dataset"] == AVERAGE].iterrows():
            record = dict(zip(by, setting, strict=True))
            record.update({c: row[c] for c in ("method", "shots", "base", "new", "hm", "n_seeds", "missing")})
            records.append(record)
    return pd.DataFrame.from_records(
        records, columns=[*by, "method", "shots", "base", "new", "hm", "n_seeds", "missing"]
    )


_CELL_KEYS: tuple[str, ...] = ("method", "shots", "dataset", "seed")
"""Where a base-to-new run sits: runs sharing these differ in configuration (ablation arms)."""


@functools.cache
def non_result_params() -> frozenset[str]:
    """Dotted run-config keys that never change a result (device, cache folders, loader workers, ...).

    The run config's fields marked non-scientific: the keys ``RunConfig.scientific_dict`` leaves out
    of trial keys.
    """

    def walk(cls: type, prefix: str) -> set[str]:
        hints = typing.get_type_hints(cls)
        keys: set[str] = set()
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(hints[f.name]):
                keys |= walk(hints[f.name], f"{prefix}{f.name}.")
            elif not f.metadata.get("scientific", True):
                keys.add(prefix + f.name)
        return keys

    return frozenset(walk(RunConfig, ""))


def ablation_params(runs: pd.DataFrame, params: pd.DataFrame) -> list[str]:
    """Config keys that tell apart base-to-new runs sharing one (method, dataset, shots, seed).

    A key counts when its value differs between the runs of at least one such cell; identity keys
    and keys that never change a result (:func:`non_result_params`) are left out.

    Args:
        runs: The tidy runs table; base-to-new runs with ``base_acc`` or ``new_acc`` are looked at.
        params: The ledger's config frame, one row per ``run_id``.

    Returns:
        The keys in the params frame's column order; empty when no cell holds several runs.

    Raises:
        ResultsError: A cell holds several runs that no such key tells apart.
    """
    rows = runs[(runs["protocol"] == "base2new") & runs["metric"].isin(["base_acc", "new_acc"])]
    cells = rows[[*_CELL_KEYS, "run_id"]].drop_duplicates()
    shared = cells[cells.duplicated(list(_CELL_KEYS), keep=False)]
    if shared.empty:
        return []
    ignored = {*_IDENTITY_PARAMS, *non_result_params()}
    candidates = [c for c in params.columns if c not in ignored]
    config = shared.merge(params[candidates], left_on="run_id", right_index=True, how="left")
    by = [c for c in candidates if (config.groupby(list(_CELL_KEYS))[c].nunique(dropna=False) > 1).any()]
    # [cells x runs]: two runs of one cell with the same values of every key in `by` are unexplained
    clash = config[config.duplicated([*_CELL_KEYS, *by], keep=False)]
    if not clash.empty:
        first = clash.iloc[0]
        same = clash[(clash[list(_CELL_KEYS)] == first[list(_CELL_KEYS)]).all(axis=1)]
        where = ", ".join(f"{k}={first[k]}" for k in _CELL_KEYS)
        raise ResultsError(
            f"base-to-new table: several runs for {where} (runs {', '.join(same['run_id'])}) and no "
            "result-changing config param tells them apart"
            + (f" (params that differ elsewhere: {', '.join(by)})" if by else "")
        )
    return by


def layout_ablation(summary: pd.DataFrame, by: Sequence[str]) -> DisplayTable:
    """One row per setting (and method); Base, New, HM averages; best per column bold."""
    several_methods = summary["method"].nunique() > 1
    header = [*by, *(["Method"] if several_methods else []), "Base", "New", "HM"]
    table = DisplayTable("Ablation (base-to-new Average)", header, label_columns=len(header) - 3)
    for _, row in summary.iterrows():
        cells = [Cell(text=str(row[c])) for c in by]
        if several_methods:
            cells.append(Cell(text=method_label(str(row["method"]))))
        text = f"missing: {row['missing']}" if row["missing"] else None
        cells += [Cell(value=_number(row["base"]), text=text), Cell(value=_number(row["new"])),
                  Cell(value=_number(row["hm"]))]  # fmt: skip
        table.rows.append(cells)
    bold_best(table.rows, range(len(header) - 3, len(header)))
    return table


# ------------------------------------------------------------------------------------------ search


def search_summary(
    runs: pd.DataFrame,
    params: Sequence[str],
    *,
    objective: str = "val_hm",
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
    val_rows = runs[runs["metric"].str.startswith("val_")]
    if objective not in set(val_rows["metric"]):
        raise ResultsError(f"search table: no run has the objective metric {objective!r}")
    missing = [c for c in params if c not in runs.columns]
    if missing:
        raise ResultsError(f"search table: runs have no column(s) {', '.join(missing)}")
    keys = ["method", *params]
    by_run = val_rows.groupby([*keys, "run_id", "metric"], dropna=False, sort=False)["value"].first()
    per_run = by_run.unstack("metric").reset_index()  # [runs, keys + run_id + val metrics]
    per_run.columns.name = None
    metrics = sorted(c for c in per_run.columns if str(c).startswith("val_"))
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
    objective: str = "val_hm",
    mode: Literal["max", "min"] = "max",
) -> DisplayTable:
    """Ranked configurations; the best value of each metric in bold."""
    metrics = [c for c in summary.columns if str(c).startswith("val_")]
    header = ["Rank", "Method", *params, *metrics, "Runs"]
    table = DisplayTable(
        f"Search results (top {len(summary)} by {objective}, {mode})", header, label_columns=2 + len(params)
    )
    for _, row in summary.iterrows():
        cells = [Cell(text=str(row["rank"])), Cell(text=method_label(str(row["method"])))]
        cells += [Cell(text=_format_param(row[p])) for p in params]
        cells += [Cell(value=_number(row[m])) for m in metrics]
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


# --------------------------------------------------------------------------------------- rendering


def _format_value(cell: Cell) -> str:
    """The number with two decimals (signed for differences; never ``-0.00``)."""
    value = cell.value if cell.value is not None and abs(cell.value) >= 0.005 else 0.0
    return f"{value:+.2f}" if cell.signed and value != 0 else f"{value:.2f}"


def _cell_markdown(cell: Cell) -> str:
    if cell.value is None:
        return cell.text if cell.text is not None else "–"
    text = _format_value(cell)
    if cell.std is not None:
        text += f" ± {cell.std:.2f}"
    if cell.n is not None:
        text += f" (n={cell.n})"
    if cell.approx:
        text = "~" + text
    if cell.bold:
        text = f"**{text}**"
    if cell.flag:
        text += " †"
    return text


def to_markdown(table: DisplayTable) -> str:
    """Render as a GitHub-flavoured Markdown table with the caption above and notes below."""
    lines = [f"**{table.title}**", "", "| " + " | ".join(table.header) + " |",
             "|" + "|".join(":---" if i < table.label_columns else "---:" for i, _ in enumerate(table.header)) + "|"]  # fmt: skip
    for row in table.rows:
        lines.append("| " + " | ".join(_cell_markdown(c).replace("|", "\\|") for c in row) + " |")
    if table.notes:
        lines += [""] + [f"{note}  " for note in table.notes]
    return "\n".join(lines) + "\n"


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}", "Δ": r"$\Delta$",
                  "†": r"$^\dagger$", "±": r"$\pm$", "<": r"$<$", ">": r"$>$"}  # fmt: skip


def latex_escape(text: str) -> str:
    """Escape LaTeX special characters (and map Δ, †, ± to math)."""
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)


def _cell_latex(cell: Cell) -> str:
    if cell.value is None:
        return latex_escape(cell.text) if cell.text is not None else "--"
    text = _format_value(cell)
    if cell.std is not None:
        text += rf" $\pm$ {cell.std:.2f}"
    if cell.n is not None:
        text += f" (n={cell.n})"
    if cell.approx:
        text = r"$\approx$" + text
    if cell.bold:
        text = rf"\textbf{{{text}}}"
    if cell.flag:
        text += r"$^\dagger$"
    return text


def to_latex(table: DisplayTable) -> str:
    """Render as a booktabs ``table`` environment (needs ``\\usepackage{booktabs}``)."""
    spec = "l" * table.label_columns + "r" * (len(table.header) - table.label_columns)
    lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{latex_escape(table.title)}}}",
             *([rf"\label{{{table.label}}}"] if table.label else []),
             rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(latex_escape(h) for h in table.header) + r" \\", r"\midrule"]  # fmt: skip
    for i, row in enumerate(table.rows):
        if i in table.rules and i > 0:
            lines.append(r"\midrule")
        if i in table.subrules:
            lines.append(rf"\cmidrule(l){{2-{len(table.header)}}}")
        lines.append(" & ".join(_cell_latex(c) for c in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if table.notes:
        lines.append(r"\\[2pt]{\footnotesize " + r"; ".join(latex_escape(n) for n in table.notes) + "}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def to_csv(summary: pd.DataFrame) -> str:
    """The numeric summary as CSV (numbers rounded to 4 decimals, empty cells for missing values)."""
    return summary.to_csv(index=False, float_format="%.4f", lineterminator="\n")


# ----------------------------------------------------------------------------------- whole ledgers


@dataclass(frozen=True)
class RenderedTable:
    """One table of an experiment: its name, numeric summary and layout.

    Attributes:
        name: The table's kind (``base2new``, ``few_shot``, ...).
        summary: The numeric summary (the CSV).
        display: The layout Markdown (and, without ``latex_display``, LaTeX) renders.
        latex_display: The LaTeX layout when it differs (published numbers as rows).
    """

    name: str
    summary: pd.DataFrame
    display: DisplayTable
    latex_display: DisplayTable | None = None

    def render(self, fmt: Format) -> str:
        """The table in ``markdown``, ``latex`` or ``csv``."""
        if fmt == "markdown":
            return to_markdown(self.display)
        if fmt == "latex":
            return to_latex(self.latex_display or self.display)
        if fmt == "csv":
            return to_csv(self.summary)
        raise ResultsError(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}")


def build_tables(
    ledger: Ledger,
    *,
    protocol: str | None = None,
    datasets: Sequence[str] | None = None,
    published: pd.DataFrame | None = None,
    expected_seeds: int = 3,
    search_space: Sequence[str] = (),
    objective: str = "val_hm",
    name: str | None = None,
) -> list[RenderedTable]:
    """The tables an experiment's runs support, by protocol.

    Base-to-new runs give the base-to-new table or, when several configurations share a (method,
    dataset, shots, seed) cell (an ablation sweep), the ablation table grouped by the config keys
    that differ (:func:`ablation_params`).

    Args:
        ledger: The runs.
        protocol: The sweep's protocol (``base2new``, ``domain_generalization``,
            ``cross_dataset``, ``few_shot``); by default every protocol found in the runs.
        datasets: Datasets of the Average rows (the sweep's grid); default: the paper's 11.
        published: Published base-to-new numbers to compare against (None: no comparison).
        expected_seeds: Seeds per cell; fewer are shown as ``(n=k)``.
        search_space: Searched config keys; with them (or runs of protocol ``search``) a search
            table is added, ranked on ``objective``.
        objective: The search metric.
        name: The sweep (or experiment) name: each table's LaTeX label is ``tab:<name>-<table>``.

    Every caption ends with the seeds, shots and backbone of the runs (:func:`caption_context`).

    Raises:
        ResultsError: No runs, no table applies to them, or base-to-new runs share a cell without a
            config param telling them apart.
    """
    runs = ledger.runs
    label_name = name
    if runs.empty:
        raise ResultsError("no FINISHED runs to tabulate")
    present = set(runs["protocol"])
    if protocol is None:
        wanted = present
    elif protocol == "few_shot":
        wanted = {protocol, *FEW_SHOT_PROTOCOLS}
    else:
        wanted = {protocol}
    grid = tuple(datasets) if datasets else BASE2NEW_DATASETS
    tables: list[RenderedTable] = []
    if "base2new" in wanted & present and runs["metric"].isin(["base_acc", "new_acc"]).any():
        by = ablation_params(runs, ledger.params)
        if by:
            summary = ablation_summary(attach_params(runs, ledger.params, by), by, datasets=grid)
            tables.append(RenderedTable("ablation", summary, layout_ablation(summary, by)))
        else:
            summary = base2new_summary(runs, datasets=grid)
            latex = None
            if published is not None:
                summary = add_published(summary, published)
                latex = layout_base2new(summary, expected_seeds=expected_seeds, published_rows=True)
                if latex.subrules:
                    latex.title += "; published numbers in the lower rows of each block"
            tables.append(RenderedTable("base2new", summary, layout_base2new(summary, expected_seeds=expected_seeds),
                                        latex))
    for name, title in (("domain_generalization", "Domain generalisation (source ImageNet)"),
                        ("cross_dataset", "Cross-dataset transfer")):
        if name in wanted & present:
            summary = transfer_summary(runs, protocol=name, targets=transfer_targets(runs, name))
            tables.append(
                RenderedTable(
                    name, summary, layout_transfer(summary, title=title, expected_seeds=expected_seeds)
                )
            )
    if wanted & present & set(FEW_SHOT_PROTOCOLS):
        summary = few_shot_summary(runs, datasets=grid)
        tables.append(
            RenderedTable("few_shot", summary, layout_few_shot(summary, expected_seeds=expected_seeds))
        )
    if search_space or "search" in present:
        space = list(search_space) or varying_params(ledger.params)
        with_params = attach_params(runs, ledger.params, space)
        summary = search_summary(with_params, space, objective=objective)
        tables.append(RenderedTable("search", summary, layout_search(summary, space, objective=objective)))
    if not tables:
        raise ResultsError(f"no table applies to these runs (protocols: {', '.join(sorted(present))})")
    context = caption_context(ledger)
    for table in tables:
        for display in (table.display, table.latex_display):
            if display is not None:
                display.title = f"{display.title}; {context}"
                display.label = latex_label(label_name, table.name) if label_name else ""
    return tables


def caption_context(ledger: Ledger) -> str:
    """What a caption states about the runs: their seeds, shots and backbone.

    Example: ``seeds 1, 2, 3; 16 shots; backbone ViT-B-16-quickgelu (openai)``. The backbone comes
    from the runs' ``backbone.name`` and ``backbone.pretrained`` params (a checkpoint path shows its
    file name) and is left out when the runs do not carry them (a runs CSV without those columns).
    """
    runs = ledger.runs
    seeds = sorted(int(s) for s in runs["seed"].unique())
    shots = sorted(int(k) for k in runs["shots"].unique())
    parts = [f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}",
             f"{', '.join(map(str, shots))} shot{'s' if shots != [1] else ''}"]
    params = ledger.params
    if "backbone.name" in params.columns:
        backbones = []
        pairs = params[[c for c in ("backbone.name", "backbone.pretrained") if c in params.columns]]
        for values in pairs.drop_duplicates().itertuples(index=False):
            model, pretrained = str(values[0]), str(values[1]) if len(values) > 1 else ""
            if pretrained and pretrained not in ("None", "nan"):
                shown = Path(pretrained).name if ("/" in pretrained or "\\" in pretrained) else pretrained
                backbones.append(f"{model} ({shown})")
            else:
                backbones.append(model)
        parts.append("backbone " + ", ".join(dict.fromkeys(backbones)))
    return "; ".join(parts)


def latex_label(sweep: str, table: str) -> str:
    """``tab:<sweep>-<table>``, with characters LaTeX labels cannot hold replaced by ``-``."""
    safe = re.sub(r"[^A-Za-z0-9_.:-]", "-", f"{sweep}-{table}")
    return f"tab:{safe}"


_IDENTITY_PARAMS = {"seed", "method", "protocol", "data.dataset", "data.shots"}


def varying_params(params: pd.DataFrame) -> list[str]:
    """Config keys whose value differs between runs (the searched ones), identity keys excluded."""
    return [c for c in params.columns if c not in _IDENTITY_PARAMS and params[c].nunique(dropna=False) > 1]


def render_tables(tables: Sequence[RenderedTable], fmt: Format) -> str:
    """Render several tables in one format (CSV: only one table at a time)."""
    if fmt == "csv" and len(tables) > 1:
        names = ", ".join(t.name for t in tables)
        raise ResultsError(f"--format csv writes one table, but these runs give several ({names})")
    return "\n".join(t.render(fmt) for t in tables)


# ------------------------------------------------------------------------------------- entry points


def table_text(
    source: Source,
    fmt: Format = "markdown",
    *,
    published: Path | str | None = None,
    compare: bool = True,
    expected_seeds: int | None = None,
) -> str:
    """The tables of a resolved source (``ledger.load_source``) in one format: the ``table`` verb.

    Args:
        source: The runs, and the sweep's datasets and protocol when a sweep file was given.
        fmt: ``markdown``, ``latex`` or ``csv``.
        published: Published numbers to compare with (default: the shipped reference).
        compare: Add the published comparison to base-to-new tables.
        expected_seeds: Seeds per cell; default: the sweep's seed count, else 3 (the paper's).
    """
    sweep = source.sweep
    if expected_seeds is None:
        expected_seeds = sweep.seeds if sweep else 3
    tables = build_tables(
        source.ledger,
        protocol=sweep.protocol if sweep else None,
        datasets=sweep.datasets if sweep and sweep.datasets else None,
        published=load_published(published) if compare else None,
        expected_seeds=expected_seeds,
        search_space=sweep.search_space if sweep else (),
        name=sweep.name if sweep else source.experiment or "runs",
    )
    return render_tables(tables, fmt)


def render_tables_for_experiment(
    experiment: str,
    tracking_uri: str,
    output_dir: Path | str,
    *,
    datasets: Sequence[str] | None = None,
    protocol: str | None = None,
    search_space: Sequence[str] = (),
    published: Path | str | None = None,
    expected_seeds: int = 3,
    parent_run_id: str | None = None,
    planned: PlannedRuns | None = None,
) -> dict[str, Path]:
    """Write an experiment's tables in every format and log them on the launch's parent run.

    Called by ``launch`` at the end of a sweep. Files: ``<output_dir>/<table>.{md,tex,csv}`` for each
    table the runs support; the same files are logged under the artifact path ``tables`` of
    ``parent_run_id`` when given. ``planned`` restricts the runs to those a sweep plans
    (``ledger.planned_runs``), as ``table SWEEP`` does.

    Returns:
        ``{"<table>.<ext>": path}`` of the files written.
    """
    ledger = read_experiment(experiment, tracking_uri, planned=planned)
    tables = build_tables(
        ledger,
        protocol=protocol,
        datasets=datasets,
        published=load_published(published),
        expected_seeds=expected_seeds,
        search_space=search_space,
        name=experiment,
    )
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for table in tables:
        for fmt, extension in (("markdown", "md"), ("latex", "tex"), ("csv", "csv")):
            path = output_dir / f"{table.name}.{extension}"
            path.write_text(table.render(fmt))  # type: ignore[arg-type]
            written[path.name] = path
    if parent_run_id is not None:
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri)
        for path in written.values():
            client.log_artifact(parent_run_id, str(path), artifact_path="tables")
    return written
