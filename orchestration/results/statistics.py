"""Statistics over seeds: one row per run, then mean, sample std and count per cell.

The harmonic mean of base and new accuracy is the protocol registry's
(``prometar.protocols.harmonic_mean``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from orchestration.errors import ResultsError


def per_run_table(
    runs: pd.DataFrame, metrics: Sequence[str], keys: Sequence[str], *, what: str
) -> pd.DataFrame:
    """One row per run with the given metrics as columns; refuses two runs for one seed.

    Raises:
        ResultsError: Two runs for one (keys, seed) cell (``what`` names the table).
    """
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


def seed_stats(per_run: pd.DataFrame, keys: Sequence[str], metric: str) -> pd.DataFrame:
    """Mean, sample std (ddof=1) and count over seeds of one metric."""
    grouped = per_run.dropna(subset=[metric]).groupby(list(keys), sort=False)[metric]
    return grouped.agg(mean="mean", std="std", n="count").reset_index()
