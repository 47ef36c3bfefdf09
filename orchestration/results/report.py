"""A sweep's report: one self-contained HTML page (and its Markdown twin) a person opens.

The page holds what a researcher needs in one place: the sweep's tables (``results.tables``), its
figures (``results.figures``, inline SVG), how many trials were planned, finished and failed with each
failure's reason, and the provenance of the numbers — the code revision of this checkout and of
the runs, the result revision, package versions, the tracking URI and every launch. The HTML loads
nothing from anywhere: styles are inline, figures are inline SVG, and no URL appears in it. The
Markdown twin (``report.md``) links the PNG files written beside it.

:func:`build_report` gathers the page's record — counts, failures, launches, provenance — from the
ledger snapshot the tables and figures ``results.publish`` built came from; ``results.report_page``
renders it (HTML from a Jinja2 template, and Markdown) and writes ``report.html``, ``report.md`` and
``figures/<name>.{png,pdf,svg}`` (``publish`` logs them as artifacts, ``report/``, of the sweep's
launch run). ``launch`` publishes the report at the end of a sweep, ``demo`` the demo's, and the
``report`` verb one on demand.
"""

from __future__ import annotations

import platform
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from typing import Any

import prometar
from orchestration import provenance
from orchestration.errors import ResultsError
from orchestration.ledger.outcomes import count_outcomes, trial_outcomes
from orchestration.ledger.vocabulary import (
    CLOSED_BY_TAG,
    ERROR_TAG,
    FINISHED,
    GIT_SHA_TAG,
    HOST_TAG,
    KILLED,
    LAUNCH_ROLE,
    RESULT_REVISION_TAG,
    ROLE_TAG,
    RUNNING,
    SEARCH_GROUP_TAG,
    TRIAL_KEY_TAG,
    TRIALS_PLANNED_TAG,
)
from orchestration.results.context import ResultsContext
from orchestration.results.display import DisplayTable
from orchestration.results.figure_style import NamedFigure
from orchestration.results.labels import dataset_label, method_label
from orchestration.results.render import RenderedTable
from orchestration.results.source import Source

PACKAGES: tuple[str, ...] = (*provenance.PACKAGES, "optuna", "pandas", "matplotlib")
"""Packages whose versions the provenance lists: a trial's (``provenance.PACKAGES``) and the results'."""
HTML_NAME = "report.html"
MARKDOWN_NAME = "report.md"
FIGURES_DIR = "figures"


# --------------------------------------------------------------------------------------- the record


@dataclass(frozen=True)
class Failure:
    """A planned trial whose latest run did not finish.

    Attributes:
        trial_key: The trial's key.
        run_id: Its latest MLflow run.
        where: Method, dataset, seed and shots, as text.
        status: ``FAILED`` or ``KILLED``.
        reason: The error's last line (the exception), or what closed the run.
        detail: The end of the recorded traceback.
    """

    trial_key: str
    run_id: str
    where: str
    status: str
    reason: str
    detail: str = ""


@dataclass(frozen=True)
class Counts:
    """Where the sweep's planned trials stand in the ledger.

    Attributes:
        planned: Trials the sweep plans (None without a sweep file).
        finished: Planned trials with a FINISHED run.
        failed: Planned trials whose latest run FAILED (and none FINISHED).
        killed: Planned trials whose latest run was KILLED (and none FINISHED).
        running: Planned trials with a RUNNING run only.
    """

    planned: int | None
    finished: int
    failed: int
    killed: int = 0
    running: int = 0

    @property
    def not_started(self) -> int | None:
        """Planned trials the ledger has no run of (None without a sweep file)."""
        if self.planned is None:
            return None
        return max(0, self.planned - self.finished - self.failed - self.killed - self.running)


@dataclass(frozen=True)
class LaunchRecord:
    """One launch of the sweep (a parent run).

    Attributes:
        run_id: The parent run.
        status: Its MLflow status.
        start: Start time (UTC, ISO 8601), from MLflow.
        end: End time, or "".
        host: The launching machine.
        code_revision: Git commit of the launching code.
        result_revision: Result revision of the launching code.
        trials_planned: Trials the launch planned.
    """

    run_id: str
    status: str
    start: str
    end: str
    host: str
    code_revision: str
    result_revision: str
    trials_planned: str


@dataclass(frozen=True)
class Provenance:
    """Where the numbers come from.

    Attributes:
        code_revision: Git commit of the code writing the report.
        result_revision: ``prometar.RESULT_REVISION`` of that code.
        run_code_revisions: Git commit → FINISHED runs it recorded.
        run_result_revisions: Result revision → FINISHED runs it recorded.
        versions: Package → version (Python first).
        tracking_uri: The ledger read (None: a runs CSV).
        experiment: The MLflow experiment.
        sweep_file: The sweep file, as given.
        overrides: The ``--set`` overrides the sweep was planned with.
    """

    code_revision: str
    result_revision: int
    run_code_revisions: dict[str, int]
    run_result_revisions: dict[str, int]
    versions: dict[str, str]
    tracking_uri: str | None
    experiment: str | None
    sweep_file: str
    overrides: tuple[tuple[str, Any], ...] = ()


@dataclass
class Report:
    """Everything the page shows, gathered once.

    Attributes:
        title: The sweep's (or experiment's) name.
        protocol: The sweep's protocol, or "".
        tables: The tables the runs support.
        figures: The figures the runs support.
        counts: Planned / finished / failed trials.
        failures: Each planned trial whose latest run did not finish.
        launches: The sweep's launches, oldest first.
        provenance: Code and result revisions, versions, ledger.
        extra_tables: More tables shown after the sweep's (the demo's toy baselines).
        notes: Lines about what could not be shown (no finished runs, no history).
    """

    title: str
    protocol: str
    tables: list[RenderedTable]
    figures: list[NamedFigure]
    counts: Counts
    failures: list[Failure]
    launches: list[LaunchRecord]
    provenance: Provenance
    extra_tables: list[DisplayTable] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------ gathering


def _utc(milliseconds: int | None) -> str:
    if not milliseconds:
        return ""
    return datetime.fromtimestamp(milliseconds / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def package_versions(packages: Sequence[str] = PACKAGES) -> dict[str, str]:
    """Python's and each installed package's version ("not installed" otherwise)."""
    versions = {"python": platform.python_version()}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _reason(error: str) -> str:
    """The last non-empty line of a traceback (the exception and its message)."""
    lines = [line.strip() for line in error.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _ledger_state(
    context: ResultsContext, runs: Sequence[Any]
) -> tuple[Counts, list[Failure], list[LaunchRecord], dict[str, int], dict[str, int]]:
    """Counts, failures, launches and the revisions of the FINISHED runs, from one ledger snapshot."""
    planned = context.planned
    launches = []
    for run in sorted(
        (r for r in runs if r.data.tags.get(ROLE_TAG) == LAUNCH_ROLE), key=lambda r: r.info.start_time or 0
    ):
        tags = run.data.tags
        launches.append(
            LaunchRecord(
                run_id=run.info.run_id,
                status=run.info.status,
                start=_utc(run.info.start_time),
                end=_utc(run.info.end_time),
                host=tags.get(HOST_TAG, ""),
                code_revision=tags.get(GIT_SHA_TAG, ""),
                result_revision=tags.get(RESULT_REVISION_TAG, "1"),
                trials_planned=tags.get(TRIALS_PLANNED_TAG, ""),
            )
        )
    children = [r for r in runs if r.data.tags.get(TRIAL_KEY_TAG)]
    if planned is not None:
        children = [r for r in children if r.data.tags.get(planned.tag) in planned.keys]
    outcomes = trial_outcomes(children)
    counted = count_outcomes(outcomes)
    failures: list[Failure] = []
    code: dict[str, int] = {}
    results: dict[str, int] = {}
    for key, outcome in outcomes.items():
        latest, status = outcome.run, outcome.status
        if status == FINISHED:
            sha = latest.data.tags.get(GIT_SHA_TAG, "unknown")
            code[sha] = code.get(sha, 0) + 1
            revision = latest.data.tags.get(RESULT_REVISION_TAG, "1")
            results[revision] = results.get(revision, 0) + 1
            continue
        if status == RUNNING:
            continue
        tags = latest.data.tags
        if status == KILLED:
            reason = (
                "closed by a later launch (its launch had died)"
                if tags.get(CLOSED_BY_TAG)
                else "killed (the launch was interrupted)"
            )
            detail = ""
        else:
            detail = tags.get(ERROR_TAG, "")
            reason = _reason(detail) or "failed without a recorded error"
        where = (
            f"{method_label(tags.get('method', '?'))} · {dataset_label(tags.get('dataset', '?'))} · seed "
            f"{tags.get('seed', '?')} · {tags.get('shots', '?')} shots"
        )
        if tags.get(SEARCH_GROUP_TAG):
            where += " (search sample)"
        failures.append(
            Failure(
                trial_key=key,
                run_id=latest.info.run_id,
                where=where,
                status=status,
                reason=reason,
                detail=detail[-3000:],
            )
        )
    counts = Counts(
        planned=context.trials or None,
        finished=counted.finished,
        failed=counted.failed,
        killed=counted.killed,
        running=counted.running,
    )
    failures.sort(key=lambda f: (f.where, f.trial_key))
    return counts, failures, launches, dict(sorted(code.items())), dict(sorted(results.items()))


def build_report(
    source: Source,
    *,
    tables: Sequence[RenderedTable] = (),
    figures: Sequence[NamedFigure] = (),
    notes: Sequence[str] = (),
    extra_tables: Sequence[DisplayTable] = (),
) -> Report:
    """The page's record, in memory: the tables and figures already built (``results.publish``),
    and the counts, failures, launches and provenance gathered from the source's ledger snapshot
    (``RunsTable.records``: the same single read the tables came from).

    Args:
        source: The runs of an MLflow experiment (a sweep file's planned runs, or ``--experiment``).
        tables: The tables of the runs.
        figures: Their figures.
        notes: Lines about what could not be shown.
        extra_tables: Tables shown after the sweep's (the demo's toy baselines).

    Raises:
        ResultsError: The source is a runs CSV (a report reads the ledger).
    """
    context = source.context
    if context.tracking_uri is None or context.experiment is None:
        raise ResultsError("a report reads the MLflow ledger: give a sweep file or --experiment, not --runs")
    counts, failures, launches, code, results = _ledger_state(context, source.ledger.records)
    origin = Provenance(
        code_revision=provenance.git_sha(),
        result_revision=prometar.RESULT_REVISION,
        run_code_revisions=code,
        run_result_revisions=results,
        versions=package_versions(),
        tracking_uri=context.tracking_uri,
        experiment=context.experiment,
        sweep_file=context.sweep_file,
        overrides=context.overrides,
    )
    return Report(
        title=context.name,
        protocol=context.protocol or "",
        tables=list(tables),
        figures=list(figures),
        counts=counts,
        failures=failures,
        launches=launches,
        provenance=origin,
        extra_tables=list(extra_tables),
        notes=list(notes),
    )


def latest_launch(report: Report) -> str | None:
    """The run id of the sweep's latest launch (its parent run), or None if it has none."""
    return report.launches[-1].run_id if report.launches else None


__all__ = [
    "Counts",
    "Failure",
    "LaunchRecord",
    "Provenance",
    "Report",
    "build_report",
    "latest_launch",
    "package_versions",
]
