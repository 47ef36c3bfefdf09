"""The transfer tables: a model trained on a source (ImageNet), tested on other datasets' classes.

One row per method: the source accuracy, each target's, and the mean of the target seed means
(the source left out, as the papers average); domain generalisation (ImageNet's four variants)
and cross-dataset transfer (the 10 other datasets) share this layout. A launched transfer run
evaluates the source model a ``transfer_source`` run trained and reports that model's source
accuracy (``acc/<source>``) beside its targets'.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from orchestration.results.display import Cell, DisplayTable, bold_best, is_number, number
from orchestration.results.few_shot import ACC_METRIC  # a source's accuracy logged as ``acc`` (runs CSV)
from orchestration.results.labels import dataset_label, method_label, order_methods
from orchestration.results.statistics import per_run_table
from prometar import protocols

KINDS: tuple[str, ...] = ("domain_generalization", "cross_dataset")
"""The table kinds this module lays out."""
TITLES: dict[str, str] = dict(
    zip(KINDS, ("Domain generalisation (source ImageNet)", "Cross-dataset transfer"), strict=True)
)
PROTOCOLS: tuple[protocols.Protocol, ...] = tuple(protocols.for_table(kind) for kind in KINDS)
TARGET_METRIC = PROTOCOLS[0].set_metrics[0]
"""``acc/{}``: a target's accuracy."""
DOMAIN_TARGETS: tuple[str, ...] = PROTOCOLS[0].default_targets
"""Domain-generalisation targets of an ImageNet-trained model."""
SOURCE_KIND = protocols.get_protocol(protocols.SOURCE).table
"""The table kind of the source models' runs: none of its own (their accuracy is the source column)."""


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
    found = protocols.lookup(protocol)
    rows = runs[runs["protocol"].isin(found.recorded_names if found else (protocol,))].copy()
    source_metric = rows["dataset"].map(TARGET_METRIC.format)
    rows.loc[rows["metric"] == source_metric, "metric"] = SOURCE_METRIC
    has_source = set(rows.loc[rows["metric"] == SOURCE_METRIC, "run_id"])
    rows.loc[(rows["metric"] == ACC_METRIC) & ~rows["run_id"].isin(has_source), "metric"] = SOURCE_METRIC
    rows = rows.rename(columns={"dataset": "source"})
    target_columns = {TARGET_METRIC.format(t): t for t in targets}
    columns = [SOURCE_METRIC, *target_columns]
    keys = ["method", "shots", "source"]
    per_run = per_run_table(rows, columns, keys, what=f"{protocol} table")
    records: list[dict[str, object]] = []
    groups = per_run[keys].drop_duplicates()
    for method in order_methods(groups["method"]):
        for _, group in groups[groups["method"] == method].sort_values(["shots", "source"]).iterrows():
            mask = (per_run[keys] == group[keys]).all(axis=1)
            subset = per_run[mask]
            means = []
            for column in columns:
                values = subset[column].dropna()
                key = "source" if column == SOURCE_METRIC else target_columns[column]
                record = {
                    "method": method,
                    "source": group["source"],
                    "column": key,
                    "mean": values.mean() if len(values) else math.nan,
                    "std": values.std() if len(values) > 1 else math.nan,
                    "n_seeds": len(values),
                    "shots": int(group["shots"]),
                    "missing": "" if len(values) else "no runs",
                }
                records.append(record)
                if column != SOURCE_METRIC:
                    means.append((key, record["mean"]))
            missing = [k for k, m in means if not is_number(m)]
            records.append(
                {
                    "method": method,
                    "source": group["source"],
                    "column": TARGET_MEAN,
                    "mean": math.nan if missing else sum(m for _, m in means) / len(means),
                    "std": math.nan,
                    "n_seeds": 0,
                    "shots": int(group["shots"]),
                    "missing": ", ".join(missing),
                }
            )
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
            cells.append(Cell(value=number(row["mean"]), std=number(row["std"]), n=n_shown, text=text))
        table.rows.append(cells)
    bold_best(table.rows, range(1, len(header)))
    table.notes = sorted(notes)
    return table
