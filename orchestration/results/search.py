"""The search table: the best searched configurations, ranked on a validation metric.

Only the search protocol's metrics (``val_*``, held-out base classes) are read: never new-class or
test accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import pandas as pd

from orchestration.errors import ResultsError
from orchestration.results.display import Cell, DisplayTable, bold_best, number
from orchestration.results.labels import method_label
from prometar import protocols

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
