"""Where a ``table`` or ``plot`` command reads its runs: a sweep's plan, an experiment, or a CSV.

With a sweep file the command plans it once (as ``launch`` did, ``--set`` included): the
:class:`SweepSummary` gives the experiment name, the datasets of the Average rows, the protocol,
the search space, the seeds per cell, the evaluation targets and the runs it plans — only those
are read from the experiment (:class:`~orchestration.ledger.runs.PlannedRuns`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestration.errors import ResultsError, SpecError
from orchestration.layout import DEFAULT_OUTPUT, default_tracking_uri
from orchestration.ledger.runs import PlannedRuns, RunsTable, planned_runs, read_experiment, read_runs_csv
from orchestration.ledger.uri import probe_tracking_uri
from orchestration.sweeps.planning import SweepPlan, load_plan


@dataclass(frozen=True)
class SweepSummary:
    """The facts about a sweep file the results layer needs.

    Attributes:
        name: MLflow experiment name (the sweep's ``name``, default: the file stem).
        datasets: The grid's datasets, in grid order (the Average row is taken over these); the
            ``data.dataset`` override when the dataset is not a grid axis.
        protocol: The protocol its trials carry (``Protocol.tag``: ``search`` for a search sweep).
        search_space: Dotted keys of the searched hyper-parameters (empty without a search).
        targets: The evaluation targets its trials plan (transfer protocols), in first-seen order.
        planned: The runs the sweep plans (trial keys, or search-group keys for a search sweep).
        source: The sweep file, as given.
        overrides: The extra dotted overrides (``--set``) the sweep was planned with.
        seeds: Seeds per cell the sweep plans (tables mark cells with fewer as ``(n=k)``).
        trials: Trials the sweep plans (the grid, times ``num_samples`` for a search).
    """

    name: str
    datasets: tuple[str, ...]
    protocol: str
    search_space: tuple[str, ...] = ()
    planned: PlannedRuns | None = None
    source: str = ""
    overrides: tuple[tuple[str, Any], ...] = ()
    seeds: int = 3
    targets: tuple[str, ...] = ()
    trials: int = 0


def summarize_plan(plan: SweepPlan, overrides: Mapping[str, Any] | None = None) -> SweepSummary:
    """The :class:`SweepSummary` of a sweep's plan.

    Args:
        plan: The sweep's plan (``orchestration.sweeps.planning.load_plan``).
        overrides: The extra overrides it was planned with (recorded for messages only).

    Returns:
        Its name, datasets in grid order, protocol, search space, planned runs, seeds per cell,
        evaluation targets and planned trial count.
    """
    spec = plan.spec
    space = tuple(spec.search.space) if spec.search is not None else ()
    return SweepSummary(
        plan.name,
        plan.datasets,
        plan.protocol,
        space,
        planned_runs(plan),
        spec.source,
        tuple((overrides or {}).items()),
        plan.seeds,
        plan.targets,
        plan.total,
    )


def load_sweep_summary(path: Path | str, *, overrides: Mapping[str, Any] | None = None) -> SweepSummary:
    """Read, validate and plan a sweep file (``orchestration.sweeps.planning.load_plan``): its summary.

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
        plan = load_plan(path, overrides=overrides)
    except SpecError as error:
        raise ResultsError(str(error)) from None
    return summarize_plan(plan, overrides)


@dataclass(frozen=True)
class Source:
    """Where a table or plot command reads its runs from, resolved.

    Attributes:
        ledger: The runs.
        sweep: The sweep file's summary, when one was given.
        tracking_uri: The MLflow tracking URI read (None for a runs CSV).
        experiment: The experiment name (None for a runs CSV).
    """

    ledger: RunsTable
    sweep: SweepSummary | None
    tracking_uri: str | None
    experiment: str | None

    def unplanned_note(self) -> str | None:
        """One line saying how many FINISHED runs the sweep file left out, or None if none were."""
        count = self.ledger.unplanned_runs
        if not count or self.sweep is None:
            return None
        shown = " ".join(
            f"--set {key}={value if isinstance(value, str) else json.dumps(value)}"
            for key, value in self.sweep.overrides
        )
        planned_by = f"{self.sweep.source} {shown}" if shown else self.sweep.source
        return (
            f"note: {count} FINISHED run(s) of experiment {self.experiment!r} are not planned by "
            f"{planned_by} (other configurations); --experiment {self.experiment} shows every run"
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
        tracking_uri: The MLflow tracking URI; default ``sqlite:///./prometar_runs/mlflow.db``.
        overrides: Extra dotted overrides (``--set``) the sweep was launched with; they change the
            planned trial keys. Only with a sweep file.

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
    summary = load_sweep_summary(sweep, overrides=overrides) if sweep is not None else None
    if runs_csv is not None:
        return Source(read_runs_csv(runs_csv), summary, None, None)
    name = summary.name if summary is not None else experiment
    if name is None:
        raise ResultsError("give a sweep file, --experiment NAME or --runs CSV")
    uri = tracking_uri or default_tracking_uri(DEFAULT_OUTPUT)
    probe_tracking_uri(uri)  # a server or database that does not answer: one message, in seconds
    planned = summary.planned if summary is not None else None
    return Source(read_experiment(name, uri, planned=planned), summary, uri, name)
