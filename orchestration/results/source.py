"""Where a ``table`` or ``plot`` command reads its runs: a sweep's plan, an experiment, or a CSV.

With a sweep file the command plans it once (as ``launch`` did, ``--set`` included): its
:class:`~orchestration.results.context.ResultsContext` gives the experiment name, the datasets of
the Average rows, the protocol, the search space, the seeds per cell, the evaluation targets and
the runs it plans — only those are read from the experiment
(:class:`~orchestration.ledger.runs.PlannedRuns`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestration.errors import ResultsError, SpecError
from orchestration.layout import DEFAULT_OUTPUT, default_tracking_uri
from orchestration.ledger.launches import latest_overrides, launches
from orchestration.ledger.runs import RunsTable, experiment_records, read_runs_csv, tabulate_runs
from orchestration.ledger.uri import probe_tracking_uri
from orchestration.results.context import ResultsContext
from orchestration.sweeps.planning import load_plan

MAX_LAUNCHES_SHOWN = 5
"""How many of the latest launches a message names."""


def load_sweep_context(
    path: Path | str, *, overrides: Mapping[str, Any] | None = None, tracking_uri: str | None = None
) -> ResultsContext:
    """Read, validate and plan a sweep file (``orchestration.sweeps.planning.load_plan``): its context.

    Args:
        path: The sweep YAML file.
        overrides: Extra dotted run-config overrides (``--set``), applied as ``launch`` applies them.
        tracking_uri: The ledger its runs are read from (None: not read from MLflow).

    Returns:
        The sweep's :class:`ResultsContext`, with the trial keys (or search-group keys) it plans.

    Raises:
        ResultsError: The file is missing or not a valid sweep, or an override is rejected; the
            message (the ``SpecError``'s) names the file and the key.
    """
    try:
        plan = load_plan(path, overrides=overrides)
    except SpecError as error:
        raise ResultsError(str(error)) from None
    return ResultsContext.from_plan(plan, overrides=overrides, tracking_uri=tracking_uri)


@dataclass(frozen=True)
class Source:
    """Where a table or plot command reads its runs from, resolved.

    Attributes:
        ledger: The runs.
        context: The facts about them (a sweep file's, an experiment's or a CSV's).
    """

    ledger: RunsTable
    context: ResultsContext

    @property
    def tracking_uri(self) -> str | None:
        """The MLflow tracking URI read (None for a runs CSV)."""
        return self.context.tracking_uri

    @property
    def experiment(self) -> str | None:
        """The experiment name (None for a runs CSV)."""
        return self.context.experiment

    def nothing_planned(self) -> str | None:
        """Why a sweep file selects none of its experiment's FINISHED runs — the launches there
        are and the overrides each planned with —, or None when it selects some (or there are none)."""
        if not self.ledger.runs.empty or not self.ledger.unplanned_runs or not self.context.from_sweep:
            return None
        shown = "; ".join(
            f"{launch.run_id} ({launch.shown()})"
            for launch in launches(self.ledger.records)[-MAX_LAUNCHES_SHOWN:]
        )
        return (
            f"no FINISHED run of experiment {self.experiment!r} is planned by "
            f"{self.context.planned_by()} ({self.ledger.unplanned_runs} are runs of other "
            "configurations); "
            + (f"its latest launches, oldest first: {shown}; " if shown else "")
            + f"give the launch's --set overrides, or --experiment {self.experiment} for every run"
        )

    def unplanned_note(self) -> str | None:
        """One line saying how many FINISHED runs the sweep file left out, or None if none were."""
        count = self.ledger.unplanned_runs
        if not count or not self.context.from_sweep:
            return None
        return (
            f"note: {count} FINISHED run(s) of experiment {self.experiment!r} are not planned by "
            f"{self.context.planned_by()} (other configurations); --experiment {self.experiment} shows "
            "every run"
        )


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
        tracking_uri: The MLflow tracking URI; default: the ledger of ``layout.DEFAULT_OUTPUT``.
        overrides: Extra dotted overrides (``--set``) the sweep was launched with; they change the
            planned trial keys. Only with a sweep file. None (not given): the overrides the
            sweep's latest launch recorded on its parent run.

    Returns:
        The resolved source; ``source.ledger.unplanned_runs`` counts the runs the sweep left out.

    Raises:
        ResultsError: Neither or both of ``sweep`` and ``experiment``, overrides without a sweep
            file, a bad sweep file, or bad input.
        TrackingError: A tracking server (or database) that accepts no connection within
            ``orchestration.network.PROBE_TIMEOUT_S``; names the URI.
    """
    if sweep is not None and experiment is not None:
        raise ResultsError("give a sweep file or --experiment, not both")
    if overrides and sweep is None:
        raise ResultsError("--set needs a sweep file: the overrides change the trials it plans")
    uri = tracking_uri or default_tracking_uri(DEFAULT_OUTPUT)
    if runs_csv is None:
        probe_tracking_uri(uri)  # a server or database that does not answer: one message, in seconds
    if sweep is not None:
        context = load_sweep_context(sweep, overrides=overrides, tracking_uri=uri)
    elif experiment is not None:
        context = ResultsContext.from_experiment(experiment, uri)
    elif runs_csv is not None:
        context = ResultsContext()
    else:
        raise ResultsError("give a sweep file, --experiment NAME or --runs CSV")
    if runs_csv is not None:
        ledger = read_runs_csv(runs_csv)
        return Source(ledger, context.for_csv(ledger.runs))
    records = experiment_records(context.name, uri)  # the one ledger read
    if sweep is not None and overrides is None:
        recorded = latest_overrides(records)
        if recorded:  # the runs of the sweep's latest launch
            context = load_sweep_context(sweep, overrides=recorded, tracking_uri=uri)
    ledger = tabulate_runs(records, context.name, planned=context.planned)
    if sweep is None:  # no grid: the Average rows span the experiment's datasets, said under each table
        context = context.with_datasets_of(ledger.runs, f"experiment {context.name}")
    return Source(ledger, context)
