"""Reading the ledger: MLflow child runs (or a CSV of per-run rows) into one tidy runs table.

Everything downstream (``tables.py``, ``plots.py``) is a pure function of the tidy table this module
returns: one row per (run, final metric) with the columns :data:`RUN_COLUMNS`. The configuration of
each run (MLflow params, dotted keys) travels beside it in a wide frame keyed by ``run_id``.

Writing the ledger belongs to ``tracking.py``; this module only reads it, through the child-run tags
pinned in ``docs/internals.md`` (``prometar.trial_key``, ``prometar.search_group``, ``dataset``,
``method``, ``seed``, ``shots``, ``protocol``). Given a sweep file, only the runs the sweep plans are
read (:class:`PlannedRuns`): the experiment may also hold runs of other configurations of the same
cells (an edited sweep, a launch with ``--set``, another checkpoint).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from orchestration.spec import SpecError, SweepSpec, Trial, load_sweep, plan_search_groups, plan_trials

IDENTITY_COLUMNS: tuple[str, ...] = ("method", "dataset", "protocol", "shots", "seed")
"""Columns that identify where a run sits in the paper's grid."""

RUN_COLUMNS: tuple[str, ...] = (*IDENTITY_COLUMNS, "metric", "value", "run_id")
"""Columns of the tidy runs table, in order."""

CSV_REQUIRED_COLUMNS: tuple[str, ...] = ("method", "dataset", "seed", "shots", "base_acc", "new_acc")
"""Columns a ``--runs`` CSV must have (architecture.md)."""

FINAL_METRIC_PATTERN = re.compile(r"^(base_acc|new_acc|hm|acc|acc/.+|val_.+)$")
"""Names of final metrics (docs/internals.md, ``run.py``); every other metric is a training curve."""

TRIAL_KEY_TAG = "prometar.trial_key"
SEARCH_GROUP_TAG = "prometar.search_group"
DEFAULT_OUTPUT = Path("prometar_runs")
DEFAULT_PROTOCOL = "base2new"


class ResultsError(ValueError):
    """Bad input to the results layer; the message names the file, experiment or key."""


@dataclass(frozen=True)
class Ledger:
    """The runs of one experiment, ready for tables and plots.

    Attributes:
        runs: The tidy runs table, columns :data:`RUN_COLUMNS`, final metrics only.
        params: One row per ``run_id`` (the index), one column per dotted config key.
        curve_metrics: Names of the non-final metrics the runs logged (training curves, gates).
        unplanned_runs: Runs of the experiment (in the statuses read) left out because the sweep
            does not plan them; 0 when no restriction was asked for.
    """

    runs: pd.DataFrame
    params: pd.DataFrame = field(default_factory=pd.DataFrame)
    curve_metrics: tuple[str, ...] = ()
    unplanned_runs: int = 0


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


@dataclass(frozen=True)
class SweepSummary:
    """The facts about a sweep file the results layer needs.

    Attributes:
        name: MLflow experiment name (the sweep's ``name``, default: the file stem).
        datasets: The grid's datasets, in grid order (the Average row is taken over these); the
            ``data.dataset`` override when the dataset is not a grid axis.
        protocol: The sweep's protocol.
        search_space: Dotted keys of the searched hyper-parameters (empty without a search).
        planned: The runs the sweep plans (trial keys, or search-group keys for a search sweep).
        source: The sweep file, as given.
        overrides: The extra dotted overrides (``--set``) the sweep was planned with.
        seeds: Seeds per cell the sweep plans (tables mark cells with fewer as ``(n=k)``).
    """

    name: str
    datasets: tuple[str, ...]
    protocol: str
    search_space: tuple[str, ...] = ()
    planned: PlannedRuns | None = None
    source: str = ""
    overrides: tuple[tuple[str, Any], ...] = ()
    seeds: int = 3


def default_tracking_uri(output: Path | str = DEFAULT_OUTPUT) -> str:
    """The embedded ledger under the output folder: ``sqlite:///<output>/mlflow.db``."""
    return f"sqlite:///{Path(output).resolve() / 'mlflow.db'}"


def planned_runs(spec: SweepSpec, trials: Sequence[Trial] | None = None) -> PlannedRuns:
    """The runs a validated sweep plans, to restrict :func:`read_experiment` to them.

    Args:
        spec: The sweep (with any ``--set`` overrides already applied).
        trials: ``plan_trials(spec)`` when the caller has it (saves expanding the grid again).

    Returns:
        The planned search-group keys for a search sweep (child runs carry
        :data:`SEARCH_GROUP_TAG`), else the planned trial keys.
    """
    if spec.search is not None:
        return PlannedRuns(SEARCH_GROUP_TAG, frozenset(g.key for g in plan_search_groups(spec)))
    return PlannedRuns(TRIAL_KEY_TAG, frozenset(t.key for t in (trials if trials is not None else plan_trials(spec))))


def summarize_sweep(spec: SweepSpec, overrides: Mapping[str, Any] | None = None) -> SweepSummary:
    """The :class:`SweepSummary` of a validated sweep.

    Args:
        spec: The sweep (``load_sweep``).
        overrides: The extra overrides it was loaded with (recorded for messages only).

    Returns:
        Its name, datasets in grid order, protocol, search space, planned runs and seeds per cell.
    """
    grid = spec.grid.get("data.dataset")
    datasets = tuple(str(d) for d in grid) if grid else (str(spec.overrides["data.dataset"]),)
    space = tuple(spec.search.space) if spec.search is not None else ()
    seeds = len(spec.grid.get("seed") or [None])  # no seed axis: one seed per cell
    return SweepSummary(spec.name, datasets, spec.protocol, space, planned_runs(spec), spec.source,
                        tuple((overrides or {}).items()), seeds)


def load_sweep_summary(path: Path | str, *, overrides: Mapping[str, Any] | None = None) -> SweepSummary:
    """Read and validate a sweep file (``orchestration.spec.load_sweep``) into its summary.

    Args:
        path: The sweep YAML file.
        overrides: Extra dotted run-config overrides (``--set``), applied as ``launch`` applies them.

    Returns:
        The sweep's summary, with the trial keys (or search-group keys) it plans.

    Raises:
        ResultsError: The file is missing or not a valid sweep, or an override is rejected; the
            message (the ``SpecError``'s) names the file and the key.
    """
    try:
        spec = load_sweep(path, overrides=overrides)
    except SpecError as error:
        raise ResultsError(str(error)) from None
    return summarize_sweep(spec, overrides)


def tidy_from_wide(wide: pd.DataFrame, *, source: str) -> Ledger:
    """Turn one row per run (identity columns, metric columns, config columns) into a :class:`Ledger`.

    Metric columns are those whose names match :data:`FINAL_METRIC_PATTERN`; the remaining
    non-identity columns (other than ``run_id``) become the params frame.

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
    for column in ("seed", "shots"):
        numbers = pd.to_numeric(wide[column], errors="coerce")
        bad = wide.index[numbers.isna() | (numbers != numbers.round())]
        if len(bad):
            raise ResultsError(
                f"{source}: column {column!r} must hold integers (run {wide.loc[bad[0], 'run_id']}: "
                f"{wide.loc[bad[0], column]!r})"
            )
        wide[column] = numbers.astype("int64")
    for column in ("method", "dataset", "protocol", "run_id"):
        wide[column] = wide[column].astype(str)
    metrics = [c for c in wide.columns if FINAL_METRIC_PATTERN.match(str(c))]
    for column in metrics:
        numbers = pd.to_numeric(wide[column], errors="coerce")
        bad = wide.index[numbers.isna() & wide[column].notna()]
        if len(bad):
            raise ResultsError(
                f"{source}: metric {column!r} is not a number (run {wide.loc[bad[0], 'run_id']}: "
                f"{wide.loc[bad[0], column]!r})"
            )
        wide[column] = numbers.astype("float64")
    runs = wide.melt(
        id_vars=[*IDENTITY_COLUMNS, "run_id"], value_vars=metrics, var_name="metric", value_name="value"
    )
    runs = runs.dropna(subset=["value"])[list(RUN_COLUMNS)].reset_index(drop=True)
    param_columns = [c for c in wide.columns if c not in {*IDENTITY_COLUMNS, "run_id", *metrics}]
    params = wide.set_index("run_id")[param_columns]
    return Ledger(runs=runs, params=params)


def read_csv_file(path: Path, what: str) -> pd.DataFrame:
    """Read a CSV file; a missing or unreadable one raises ``ResultsError`` naming ``path`` and ``what``."""
    try:
        return pd.read_csv(path)
    except FileNotFoundError as error:
        raise ResultsError(f"{path}: {what} not found") from error
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise ResultsError(f"{path}: not a readable CSV ({error})") from error


def read_runs_csv(path: Path | str) -> Ledger:
    """Read a CSV of per-run rows (``method,dataset,seed,shots,base_acc,new_acc`` at least).

    Optional columns: ``protocol`` (default ``base2new``), ``run_id``, further final metrics
    (``hm``, ``acc``, ``acc/<target>``, ``val_*``) and config columns (dotted keys), which become
    params.

    Raises:
        ResultsError: The file is missing or unreadable, or a required column is missing or malformed.
    """
    path = Path(path)
    wide = read_csv_file(path, "runs CSV")
    missing = [c for c in CSV_REQUIRED_COLUMNS if c not in wide.columns]
    if missing:
        raise ResultsError(
            f"{path}: missing column(s) {', '.join(missing)} (need {','.join(CSV_REQUIRED_COLUMNS)})"
        )
    return tidy_from_wide(wide, source=str(path))


def _search_child_runs(client: Any, experiment_id: str, statuses: Sequence[str]) -> list[Any]:
    """All runs of an experiment carrying a trial key, in the given statuses (paginated)."""
    status_filter = " or ".join(f"attributes.status = '{s}'" for s in statuses)
    filter_string = f"tags.`{TRIAL_KEY_TAG}` != ''"
    if len(statuses) == 1:
        filter_string += f" and {status_filter}"
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs(
            [experiment_id], filter_string=filter_string, max_results=50_000, page_token=token
        )
        runs.extend(r for r in page if r.info.status in statuses)
        token = page.token
        if not token:
            return runs


def read_experiment(
    experiment: str,
    tracking_uri: str,
    *,
    statuses: Sequence[str] = ("FINISHED",),
    planned: PlannedRuns | None = None,
) -> Ledger:
    """Read the child runs of an MLflow experiment into a :class:`Ledger`.

    When a trial key was run more than once (``launch --force``), the latest start wins.

    Args:
        experiment: The experiment name (the sweep's name).
        tracking_uri: The MLflow tracking URI.
        statuses: Run statuses to keep (tables use FINISHED runs only).
        planned: Keep only these runs (:func:`planned_runs`), before the latest-per-key choice;
            ``None`` keeps every child run.

    Returns:
        The ledger of those runs; ``unplanned_runs`` counts the runs ``planned`` left out.

    Raises:
        ResultsError: The experiment does not exist, or a run lacks an identity tag.
    """
    from mlflow import MlflowClient

    _require_sqlite_file(tracking_uri)
    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise ResultsError(f"experiment {experiment!r} not found in {tracking_uri}")
    if found.lifecycle_stage == "deleted":  # reported, never restored: reading does not write
        from orchestration.tracking import deleted_experiment_message

        raise ResultsError(deleted_experiment_message(experiment, found.experiment_id, tracking_uri))
    records: list[dict[str, Any]] = []
    params: dict[str, dict[str, str]] = {}
    curve_metrics: set[str] = set()
    unplanned = 0
    for run in _search_child_runs(client, found.experiment_id, statuses):
        tags = run.data.tags
        if planned is not None and tags.get(planned.tag) not in planned.keys:
            unplanned += 1
            continue
        record: dict[str, Any] = {
            "run_id": run.info.run_id,
            "_trial_key": tags[TRIAL_KEY_TAG],
            "_start": run.info.start_time or 0,
        }
        for column in IDENTITY_COLUMNS:
            if column not in tags:
                if column == "protocol":
                    record[column] = DEFAULT_PROTOCOL
                    continue
                raise ResultsError(f"experiment {experiment!r}: run {run.info.run_id} has no tag {column!r}")
            record[column] = tags[column]
        for key, value in run.data.metrics.items():
            if FINAL_METRIC_PATTERN.match(key):
                record[key] = value
            else:
                curve_metrics.add(key)
        records.append(record)
        params[run.info.run_id] = dict(run.data.params)
    if not records:
        empty = pd.DataFrame({c: pd.Series(dtype=object) for c in RUN_COLUMNS})
        return Ledger(runs=empty, params=pd.DataFrame(), curve_metrics=tuple(sorted(curve_metrics)),
                      unplanned_runs=unplanned)
    wide = pd.DataFrame.from_records(records)
    wide = wide.sort_values("_start").drop_duplicates("_trial_key", keep="last")
    wide = wide.drop(columns=["_trial_key", "_start"])
    ledger = tidy_from_wide(wide, source=f"experiment {experiment!r}")
    param_frame = pd.DataFrame.from_dict(params, orient="index").reindex(wide["run_id"])
    param_frame.index.name = "run_id"
    return Ledger(runs=ledger.runs, params=param_frame, curve_metrics=tuple(sorted(curve_metrics)),
                  unplanned_runs=unplanned)


def _require_sqlite_file(tracking_uri: str) -> None:
    """Refuse a SQLite ledger that does not exist (MLflow would create an empty one)."""
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


@dataclass(frozen=True)
class Source:
    """Where a table or plot command reads its runs from, resolved.

    Attributes:
        ledger: The runs.
        sweep: The sweep file's summary, when one was given.
        tracking_uri: The MLflow tracking URI read (None for a runs CSV).
        experiment: The experiment name (None for a runs CSV).
    """

    ledger: Ledger
    sweep: SweepSummary | None
    tracking_uri: str | None
    experiment: str | None

    def unplanned_note(self) -> str | None:
        """One line saying how many FINISHED runs the sweep file left out, or None if none were."""
        count = self.ledger.unplanned_runs
        if not count or self.sweep is None:
            return None
        shown = " ".join(f"--set {key}={value if isinstance(value, str) else json.dumps(value)}"
                         for key, value in self.sweep.overrides)
        planned_by = f"{self.sweep.source} {shown}" if shown else self.sweep.source
        return (f"note: {count} FINISHED run(s) of experiment {self.experiment!r} are not planned by "
                f"{planned_by} (other configurations); --experiment {self.experiment} shows every run")


def load_source(
    sweep: Path | str | None = None,
    *,
    experiment: str | None = None,
    runs_csv: Path | str | None = None,
    tracking_uri: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Source:
    """Resolve the ``table``/``plot`` arguments into runs: a runs CSV, or an experiment's child runs.

    Args:
        sweep: A sweep file: gives the experiment name, grid datasets, protocol and search space,
            and restricts the experiment's runs to those the sweep plans (its trial keys, or its
            search groups).
        experiment: An experiment name (instead of a sweep file): every FINISHED child run.
        runs_csv: A CSV of per-run rows; read instead of MLflow, without restriction (the sweep
            file, if any, still gives the datasets, protocol and search space).
        tracking_uri: The MLflow tracking URI; default ``sqlite:///./prometar_runs/mlflow.db``.
        overrides: Extra dotted overrides (``--set``) the sweep was launched with; they change the
            planned trial keys. Only with a sweep file.

    Returns:
        The resolved source; ``source.ledger.unplanned_runs`` counts the runs the sweep left out.

    Raises:
        ResultsError: Neither or both of ``sweep`` and ``experiment``, overrides without a sweep
            file, a bad sweep file, or bad input.
    """
    if sweep is not None and experiment is not None:
        raise ResultsError("give a sweep file or --experiment, not both")
    if overrides and sweep is None:
        raise ResultsError("--set needs a sweep file: the overrides change the trials it plans")
    summary = load_sweep_summary(sweep, overrides=overrides) if sweep is not None else None
    if runs_csv is not None:
        return Source(read_runs_csv(runs_csv), summary, None, None)
    name = summary.name if summary is not None else experiment
    if name is None:
        raise ResultsError("give a sweep file, --experiment NAME or --runs CSV")
    uri = tracking_uri or default_tracking_uri()
    planned = summary.planned if summary is not None else None
    return Source(read_experiment(name, uri, planned=planned), summary, uri, name)
