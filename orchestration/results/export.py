"""The per-run export (``table --per-run``): one row per FINISHED trial, for people's own notebooks.

Each row holds the trial's key and run id, where it sits in the grid (method, dataset, protocol,
seed, shots), the resolved hyper-parameters that differ across the exported runs (dotted config
keys; the searched ones always), and every final metric. The CSV is a runs CSV in the sense of
``ledger.runs.read_runs_csv``: ``table --runs FILE`` renders the same tables from it as from the ledger.
Parquet is written when pandas has a Parquet engine (pyarrow).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from orchestration.errors import ResultsError
from orchestration.ledger.runs import IDENTITY_COLUMNS, TRIAL_KEY_COLUMN, RunsTable
from orchestration.results.ablation import non_result_params
from orchestration.results.safe_text import csv_frame
from orchestration.results.search import varying_params
from prometar import protocols
from prometar.files import write_atomic

LEADING_COLUMNS: tuple[str, ...] = (
    TRIAL_KEY_COLUMN,
    "run_id",
    "method",
    "dataset",
    "protocol",
    "seed",
    "shots",
)
"""The first columns of the export, in order."""
ALWAYS_EXPORTED: tuple[str, ...] = ("backbone.name", "backbone.pretrained")
"""Config keys exported even when every run shares them (captions state the backbone)."""

_METRIC_ORDER: tuple[str, ...] = tuple(
    dict.fromkeys(
        name
        for protocol in protocols.list_protocols()
        for name in protocols.get_protocol(protocol).metric_names()
    )
)
"""Final metrics in the protocol registry's order (per-target accuracies come after them)."""


def exported_params(params: pd.DataFrame, *, include: Sequence[str] = ()) -> list[str]:
    """Config keys worth a column: those whose value differs between runs and can change a result.

    Args:
        params: The ledger's config frame (one row per run).
        include: Keys always exported when the runs have them (the searched ones), besides
            :data:`ALWAYS_EXPORTED`.

    Returns:
        The keys in the frame's column order; identity keys and keys that never change a result
        (``results.ablation.non_result_params``) left out.
    """
    varying = set(varying_params(params)) - non_result_params()
    wanted = {*include, *ALWAYS_EXPORTED}
    return [c for c in params.columns if c in wanted or c in varying]


def _metric_key(name: str) -> tuple[int, str]:
    """The registry's order (base, new, HM, ...), then the per-target accuracies by name."""
    return (_METRIC_ORDER.index(name), "") if name in _METRIC_ORDER else (len(_METRIC_ORDER), name)


def per_run_frame(ledger: RunsTable, *, include: Sequence[str] = ()) -> pd.DataFrame:
    """One row per run of the ledger (FINISHED runs only, as the ledger reads them).

    Args:
        ledger: The runs.
        include: Config keys exported even when they do not vary (the sweep's search space).

    Returns:
        Columns :data:`LEADING_COLUMNS`, the exported params (:func:`exported_params`), then the
        final metrics; rows ordered by method, dataset, shots, seed and run id.

    Raises:
        ResultsError: No runs.
    """
    runs = ledger.runs
    if runs.empty:
        raise ResultsError("no FINISHED runs to export")
    wide = runs.pivot_table(
        index=[*IDENTITY_COLUMNS, "run_id"], columns="metric", values="value", aggfunc="first"
    ).reset_index()  # [runs, identity + run_id + metrics]
    wide.columns.name = None
    metrics = sorted((c for c in wide.columns if c not in {*IDENTITY_COLUMNS, "run_id"}), key=_metric_key)
    wide.insert(0, TRIAL_KEY_COLUMN, wide["run_id"].map(dict(ledger.trial_keys)))
    params = exported_params(ledger.params, include=include) if len(ledger.params.columns) else []
    if params:
        wide = wide.merge(ledger.params[params], left_on="run_id", right_index=True, how="left")
    wide = wide.sort_values(["method", "dataset", "shots", "seed", "run_id"], kind="stable")
    return wide[[*LEADING_COLUMNS, *params, *metrics]].reset_index(drop=True)


def per_run_csv(frame: pd.DataFrame) -> str:
    """The export as CSV text: numbers at full precision (reading it back changes nothing), text
    cells a spreadsheet would evaluate neutralised (:func:`~.safe_text.csv_frame`)."""
    return csv_frame(frame).to_csv(index=False, lineterminator="\n")


def write_per_run(frame: pd.DataFrame, path: Path | str) -> Path:
    """Write the export to ``path``: Parquet for a ``.parquet`` suffix, else CSV.

    Raises:
        ResultsError: Parquet asked for without a Parquet engine (pyarrow) installed.
    """
    path = Path(path)
    if path.suffix == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ResultsError(
                f"{path}: writing Parquet needs pyarrow (pip install pyarrow); write a .csv instead"
            ) from None
        frame.astype({c: "string" for c in frame.columns if frame[c].dtype == object}).to_parquet(
            path, index=False
        )
    else:
        text = per_run_csv(frame)
        write_atomic(path, lambda handle: handle.write(text))
    return path


__all__ = [
    "ALWAYS_EXPORTED",
    "LEADING_COLUMNS",
    "exported_params",
    "per_run_csv",
    "per_run_frame",
    "write_per_run",
]
