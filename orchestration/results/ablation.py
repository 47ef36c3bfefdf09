"""The ablation table: base-to-new Averages per setting of the config keys that tell runs apart.

An ablation sweep (a ``variant`` grid axis) puts several configurations in one (method, dataset,
shots, seed) cell; :func:`ablation_params` finds the result-changing config keys that tell them
apart, and the table gives one Average row per setting instead of the base-to-new table.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from collections.abc import Sequence

import pandas as pd

from orchestration.errors import ResultsError
from orchestration.results.base2new import BASE2NEW_DATASETS, PROTOCOL, base2new_summary
from orchestration.results.display import Cell, DisplayTable, bold_best, number
from orchestration.results.labels import AVERAGE, method_label
from orchestration.results.search import IDENTITY_PARAMS
from prometar.config import RunConfig

KIND = "ablation"


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
    rows = runs[runs["protocol"].isin(PROTOCOL.recorded_names) & runs["metric"].isin(PROTOCOL.set_metrics)]
    cells = rows[[*_CELL_KEYS, "run_id"]].drop_duplicates()
    shared = cells[cells.duplicated(list(_CELL_KEYS), keep=False)]
    if shared.empty:
        return []
    ignored = {*IDENTITY_PARAMS, *non_result_params()}
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
        cells += [
            Cell(value=number(row["base"]), text=text),
            Cell(value=number(row["new"])),
            Cell(value=number(row["hm"])),
        ]
        table.rows.append(cells)
    bold_best(table.rows, range(len(header) - 3, len(header)))
    return table
