"""The runs reader: MLflow child runs (or a CSV of per-run rows) into one tidy :class:`RunsTable`.

Everything downstream (``orchestration.results``) is a pure function of the tidy table this module
returns: one row per (run, final metric) with the columns :data:`RUN_COLUMNS`. The configuration of
each run (MLflow params, dotted keys) travels beside it in a wide frame keyed by ``run_id``.

Writing the ledger belongs to the store and the callback; this module only reads it, through the
child-run tags of ``orchestration.ledger.vocabulary``; which metrics are final results is the
protocol registry's word (``prometar.protocols``). Given a sweep's plan, only the runs it plans
are read (:class:`PlannedRuns`): the experiment may also hold runs of other configurations of the
same cells (an edited sweep, a launch with ``--set``, another checkpoint).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from orchestration.errors import ResultsError, TrackingError
from orchestration.ledger.store import deleted_experiment_message, search_runs
from orchestration.ledger.vocabulary import (
    FINISHED,
    IDENTITY_TAGS,
    PROTOCOL_TAG,
    SEARCH_GROUP_TAG,
    TRIAL_KEY_TAG,
    is_measurement,
)
from orchestration.sweeps.planning import SweepPlan
from prometar import protocols
from prometar.config import MAX_SEED
from prometar.data.catalog import list_datasets
from prometar.errors import InputFileError
from prometar.files import MAX_DATA_FILE_BYTES, read_input_bytes
from prometar.methods import list_methods
from prometar.yamlio import shorten

IDENTITY_COLUMNS: tuple[str, ...] = tuple(IDENTITY_TAGS)
"""Columns that identify where a run sits in the paper's grid."""

RUN_COLUMNS: tuple[str, ...] = (*IDENTITY_COLUMNS, "metric", "value", "run_id")
"""Columns of the tidy runs table, in order."""

CSV_REQUIRED_COLUMNS: tuple[str, ...] = (
    "method",
    "dataset",
    "seed",
    "shots",
    *protocols.get_protocol(protocols.DEFAULT).set_metrics,
)
"""Columns a ``--runs`` CSV of base-to-new runs must have (architecture.md): ``base_acc`` and ``new_acc``
as metrics; runs of other protocols (a ``protocol`` column) need the first four and their own metrics."""
TRIAL_KEY_COLUMN = "trial_key"
"""Optional column of a runs CSV holding each run's trial key (``table --per-run`` writes it)."""

DEFAULT_PROTOCOL = protocols.get_protocol(protocols.DEFAULT).tag
"""The protocol of runs-CSV rows without a ``protocol`` column."""


@dataclass(frozen=True)
class RunsTable:
    """The runs of one experiment (or runs CSV), ready for tables and plots.

    Attributes:
        runs: The tidy runs table, columns :data:`RUN_COLUMNS`, final metrics only.
        params: One row per ``run_id`` (the index), one column per dotted config key.
        curve_metrics: Names of the non-final metrics the runs logged (training curves, gates).
        unplanned_runs: Runs of the experiment (in the statuses read) left out because the sweep
            does not plan them; 0 when no restriction was asked for.
        trial_keys: ``run_id`` → trial key, where known (MLflow runs; a CSV's ``trial_key`` column).
        records: Every MLflow run of the experiment the table was built from, any status, parents
            included — the one ledger read the report's counts, failures and launches come from
            (empty for a runs CSV).
    """

    runs: pd.DataFrame
    params: pd.DataFrame = field(default_factory=pd.DataFrame)
    curve_metrics: tuple[str, ...] = ()
    unplanned_runs: int = 0
    trial_keys: Mapping[str, str] = field(default_factory=dict)
    records: tuple[Any, ...] = field(default=(), repr=False)


@dataclass(frozen=True)
class PlannedRuns:
    """The child runs a sweep plans: those whose tag ``tag`` holds one of ``keys``.

    Attributes:
        tag: :data:`TRIAL_KEY_TAG` (grid sweeps: one key per planned trial) or
            :data:`SEARCH_GROUP_TAG` (search sweeps: one key per planned search group, whose sampled
            trials are not known in advance).
        keys: The planned trial keys or search-group keys.
    """

    tag: str
    keys: frozenset[str]


def planned_runs(plan: SweepPlan) -> PlannedRuns:
    """The runs a sweep's plan plans, to restrict :func:`read_experiment` to them.

    Args:
        plan: The sweep's plan (with any ``--set`` overrides already applied).

    Returns:
        The planned search-group keys for a search sweep (child runs carry
        :data:`SEARCH_GROUP_TAG`), else the planned trial keys.
    """
    if plan.groups:
        return PlannedRuns(SEARCH_GROUP_TAG, frozenset(g.key for g in plan.groups))
    return PlannedRuns(TRIAL_KEY_TAG, frozenset(t.key for t in plan.trials))


def tidy_from_wide(wide: pd.DataFrame, *, source: str) -> RunsTable:
    """Turn one row per run (identity columns, metric columns, config columns) into a :class:`RunsTable`.

    Metric columns are the final metrics of a protocol (``prometar.protocols``); the remaining
    non-identity columns (other than ``run_id`` and :data:`TRIAL_KEY_COLUMN`) become the params frame.

    Args:
        wide: One row per run; must hold ``method``, ``dataset``, ``seed`` and ``shots``;
            ``protocol`` defaults to ``base2new`` and ``run_id`` to ``<source>:<row>``.
        source: Where the rows came from, for error messages and default run ids.

    Returns:
        The ledger; rows with a missing metric value are dropped from ``runs``.
    """
    wide = wide.copy()
    for column in ("method", "dataset", "seed", "shots"):
        if column not in wide.columns:
            raise ResultsError(f"{source}: missing column {column!r}")
    if "protocol" not in wide.columns:
        wide["protocol"] = DEFAULT_PROTOCOL
    if "run_id" not in wide.columns:
        wide["run_id"] = [f"{source}:{i + 2}" for i in range(len(wide))]
    for column, top in (("seed", MAX_SEED), ("shots", MAX_SEED)):
        numbers = pd.to_numeric(wide[column], errors="coerce")
        bad = wide.index[numbers.isna() | ~numbers.between(0, top) | (numbers != numbers.round())]
        if len(bad):
            raise ResultsError(
                f"{source}: column {column!r} must hold integers in 0..{top} (run "
                f"{wide.loc[bad[0], 'run_id']}: {shorten(wide.loc[bad[0], column])})"
            )
        wide[column] = numbers.astype("int64")
    for column in ("method", "dataset", "protocol", "run_id"):
        wide[column] = wide[column].astype(str)
    metrics = [c for c in wide.columns if protocols.is_final_metric(str(c))]
    for column in metrics:
        numbers = pd.to_numeric(wide[column], errors="coerce")
        bad = wide.index[
            (numbers.isna() & wide[column].notna()) | (numbers.notna() & ~numbers.between(0, 100))
        ]
        if len(bad):
            raise ResultsError(
                f"{source}: metric {column!r} must be an accuracy in 0..100 (run "
                f"{wide.loc[bad[0], 'run_id']}: {shorten(wide.loc[bad[0], column])})"
            )
        wide[column] = numbers.astype("float64")
    runs = wide.melt(
        id_vars=[*IDENTITY_COLUMNS, "run_id"], value_vars=metrics, var_name="metric", value_name="value"
    )
    runs = runs.dropna(subset=["value"])[list(RUN_COLUMNS)].reset_index(drop=True)
    param_columns = [
        c for c in wide.columns if c not in {*IDENTITY_COLUMNS, "run_id", TRIAL_KEY_COLUMN, *metrics}
    ]
    params = wide.set_index("run_id")[param_columns]
    keys = {}
    if TRIAL_KEY_COLUMN in wide.columns:
        known = wide[wide[TRIAL_KEY_COLUMN].notna()]
        keys = dict(zip(known["run_id"], known[TRIAL_KEY_COLUMN].astype(str), strict=True))
    return RunsTable(runs=runs, params=params, trial_keys=keys)


def read_csv_file(path: Path, what: str, **options: Any) -> pd.DataFrame:
    """Read a CSV file (``options``: of ``pandas.read_csv``); a missing or unreadable one raises
    ``ResultsError`` naming ``path`` and ``what``."""
    try:
        raw = read_input_bytes(path, max_bytes=MAX_DATA_FILE_BYTES)
    except InputFileError as error:
        reason = f"{what} not found" if error.reason == "no such file" else f"{what} {error.reason}"
        raise ResultsError(f"{path}: {reason}") from None
    try:
        header = next(csv.reader(io.StringIO(raw.decode("utf-8").partition("\n")[0])), [])
        table = pd.read_csv(io.BytesIO(raw), **options)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, csv.Error) as error:
        raise ResultsError(f"{path}: not a readable CSV ({error})") from None
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise ResultsError(f"{path}: column(s) {', '.join(map(repr, repeated))} appear more than once")
    return table


def read_runs_csv(path: Path | str) -> RunsTable:
    """Read a CSV of per-run rows (``method,dataset,seed,shots,base_acc,new_acc`` at least).

    Optional columns: ``protocol`` (default ``base2new``; with no base-to-new row, ``base_acc`` and
    ``new_acc`` are not required), ``run_id``, ``trial_key``, further final metrics (``hm``, ``acc``,
    ``acc/<target>``, ``val_*``) and config columns (dotted keys), which become params — as text, like
    the MLflow params they stand for. The files ``table --per-run`` writes are such CSVs.

    Raises:
        ResultsError: The file is missing or unreadable, or a required column is missing or malformed.
    """
    path = Path(path)
    wide = read_csv_file(path, "runs CSV", dtype=str)  # numbers are parsed by tidy_from_wide
    base2new = "protocol" not in wide.columns or (wide["protocol"].astype(str) == DEFAULT_PROTOCOL).any()
    required = CSV_REQUIRED_COLUMNS if base2new else CSV_REQUIRED_COLUMNS[:4]
    missing = [c for c in required if c not in wide.columns]
    if missing:
        raise ResultsError(f"{path}: missing column(s) {', '.join(missing)} (need {','.join(required)})")
    known = {
        "method": list_methods(),
        "dataset": list_datasets(),
        "protocol": [
            p for name in protocols.list_protocols() for p in {name, protocols.get_protocol(name).tag}
        ],
    }
    for column, valid in known.items():
        if column not in wide.columns:
            continue
        unknown = wide.index[~wide[column].isin(valid)]
        if len(unknown):
            raise ResultsError(
                f"{path}: row {unknown[0] + 2}: unknown {column} {shorten(wide.loc[unknown[0], column])}; "
                f"valid: {', '.join(dict.fromkeys(valid))}"
            )
    return tidy_from_wide(wide, source=str(path))


def experiment_records(experiment: str, tracking_uri: str) -> list[Any]:
    """Every run of an MLflow experiment (parents and children, any status): one ledger read.

    Raises:
        ResultsError: The experiment does not exist or was deleted (reading never restores it), or
            the URI names no store.
        TrackingError: The store cannot be read (a garbage or truncated SQLite file); names the URI.
    """
    from mlflow import MlflowClient

    _require_sqlite_file(tracking_uri)
    with _unreadable_store(tracking_uri):
        client = MlflowClient(tracking_uri)
        found = client.get_experiment_by_name(experiment)
    if found is None:
        raise ResultsError(f"experiment {experiment!r} not found in {tracking_uri}")
    if found.lifecycle_stage == "deleted":  # reported, never restored: reading does not write
        raise ResultsError(deleted_experiment_message(experiment, found.experiment_id, tracking_uri))
    with _unreadable_store(tracking_uri):
        return search_runs(client, found.experiment_id, page_size=50_000)


def read_experiment(
    experiment: str,
    tracking_uri: str,
    *,
    statuses: Sequence[str] = (FINISHED,),
    planned: PlannedRuns | None = None,
) -> RunsTable:
    """Read the child runs of an MLflow experiment into a :class:`RunsTable` (one ledger read).

    When a trial key was run more than once (``launch --force``), the latest start wins.

    Args:
        experiment: The experiment name (the sweep's name).
        tracking_uri: The MLflow tracking URI.
        statuses: Run statuses to keep (tables use FINISHED runs only).
        planned: Keep only these runs (:func:`planned_runs`), before the latest-per-key choice;
            ``None`` keeps every child run.

    Returns:
        The ledger of those runs (``records``: every run read); ``unplanned_runs`` counts the runs
        ``planned`` left out.

    Raises:
        ResultsError: The experiment does not exist, or a run lacks an identity tag.
        TrackingError: The store cannot be read (a garbage or truncated SQLite file); names the URI.
    """
    records = experiment_records(experiment, tracking_uri)
    return tabulate_runs(records, experiment, statuses=statuses, planned=planned)


def tabulate_runs(
    records: Sequence[Any],
    experiment: str,
    *,
    statuses: Sequence[str] = (FINISHED,),
    planned: PlannedRuns | None = None,
) -> RunsTable:
    """The :class:`RunsTable` of a snapshot of an experiment's runs (:func:`read_experiment`'s rules)."""
    children = [r for r in records if r.data.tags.get(TRIAL_KEY_TAG) and r.info.status in statuses]
    rows: list[dict[str, Any]] = []
    params: dict[str, dict[str, str]] = {}
    curve_metrics: set[str] = set()
    unplanned = 0
    for run in children:
        tags = run.data.tags
        if planned is not None and tags.get(planned.tag) not in planned.keys:
            unplanned += 1
            continue
        record: dict[str, Any] = {
            "run_id": run.info.run_id,
            "_trial_key": tags[TRIAL_KEY_TAG],
            "_start": run.info.start_time or 0,
        }
        for column, tag in IDENTITY_TAGS.items():
            if tag not in tags:
                if tag == PROTOCOL_TAG:
                    record[column] = DEFAULT_PROTOCOL
                    continue
                raise ResultsError(f"experiment {experiment!r}: run {run.info.run_id} has no tag {tag!r}")
            record[column] = tags[tag]
        for key, value in run.data.metrics.items():
            if protocols.is_final_metric(key):
                record[key] = value
            elif not is_measurement(key):  # machine measurements are not training curves
                curve_metrics.add(key)
        rows.append(record)
        params[run.info.run_id] = dict(run.data.params)
    if not rows:
        empty = pd.DataFrame({c: pd.Series(dtype=object) for c in RUN_COLUMNS})
        return RunsTable(
            runs=empty,
            params=pd.DataFrame(),
            curve_metrics=tuple(sorted(curve_metrics)),
            unplanned_runs=unplanned,
            records=tuple(records),
        )
    wide = pd.DataFrame.from_records(rows)
    wide = wide.sort_values("_start").drop_duplicates("_trial_key", keep="last")
    keys = dict(zip(wide["run_id"], wide["_trial_key"], strict=True))
    wide = wide.drop(columns=["_trial_key", "_start"])
    ledger = tidy_from_wide(wide, source=f"experiment {experiment!r}")
    param_frame = pd.DataFrame.from_dict(params, orient="index").reindex(wide["run_id"])
    param_frame.index.name = "run_id"
    return RunsTable(
        runs=ledger.runs,
        params=param_frame,
        curve_metrics=tuple(sorted(curve_metrics)),
        unplanned_runs=unplanned,
        trial_keys=keys,
        records=tuple(records),
    )


@contextmanager
def _unreadable_store(tracking_uri: str) -> Iterator[None]:
    """A store that cannot be read (a truncated or garbage SQLite file, a database or server that
    refuses the query) raises :class:`~orchestration.errors.TrackingError` naming the URI."""
    import sqlite3

    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError

    try:
        yield
    except (MlflowException, SQLAlchemyError, sqlite3.Error) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise TrackingError(f"tracking URI {tracking_uri} cannot be read: {first[:300]}") from None


def _require_sqlite_file(tracking_uri: str) -> None:
    """Refuse a URI no store opens from, and a SQLite ledger that does not exist (MLflow would
    create an empty one)."""
    from orchestration.ledger.uri import check_tracking_uri

    check_tracking_uri(tracking_uri)
    if tracking_uri.startswith("sqlite:///"):
        path = Path(tracking_uri.removeprefix("sqlite:///"))
        if str(path) != ":memory:" and not path.exists():
            raise ResultsError(f"no MLflow ledger at {path} (tracking URI {tracking_uri})")


def read_metric_history(tracking_uri: str, run_ids: Iterable[str], metrics: Iterable[str]) -> pd.DataFrame:
    """Per-step values of the given metrics for the given runs (training curves, gate statistics).

    Args:
        tracking_uri: The MLflow tracking URI.
        run_ids: Runs to read (one request per run and metric: select a few runs).
        metrics: Metric names.

    Returns:
        Columns ``run_id, metric, step, value``, sorted by run, metric and step.
    """
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    metrics = list(metrics)
    rows = [
        (run_id, key, m.step, m.value)
        for run_id in run_ids
        for key in metrics
        for m in client.get_metric_history(run_id, key)
    ]
    history = pd.DataFrame(rows, columns=["run_id", "metric", "step", "value"])
    return history.sort_values(["run_id", "metric", "step"]).reset_index(drop=True)


def attach_params(runs: pd.DataFrame, params: pd.DataFrame, names: Sequence[str]) -> pd.DataFrame:
    """Add the named config columns (by ``run_id``) to the tidy runs table.

    Raises:
        ResultsError: A name is not a param of these runs.
    """
    missing = [n for n in names if n not in params.columns]
    if missing:
        known = ", ".join(sorted(map(str, params.columns))[:20]) or "none"
        raise ResultsError(f"unknown param(s) {', '.join(missing)}; known: {known}")
    return runs.merge(params[list(names)], left_on="run_id", right_index=True, how="left")
