"""A sweep's results, published once: tables, figures and the report from the same objects.

:func:`publish` is the one road from runs to results. It builds the tables once and the figures
once (by the result-kind registry, ``results.tables`` and ``results.figures``), assembles the
report from those same objects and the same ledger snapshot (``RunsTable.records``), writes what
was asked for, and logs every file once on the sweep's launch run. The launch's end, the demo and
the ``table``/``plot``/``report`` verbs all call it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from orchestration.errors import ResultsError
from orchestration.ledger.runs import RunsTable
from orchestration.ledger.store import TrialLedger
from orchestration.ledger.vocabulary import REPORT_ARTIFACT_PATH, TABLES_ARTIFACT_PATH
from orchestration.results.context import ResultsContext
from orchestration.results.display import DisplayTable
from orchestration.results.figure_style import NamedFigure
from orchestration.results.plots import collect_figures, save_figures
from orchestration.results.render import RenderedTable
from orchestration.results.report import FIGURES_DIR, Report, build_report, latest_launch
from orchestration.results.report_page import write_report
from orchestration.results.source import Source
from orchestration.results.tables import build_tables, write_tables


@dataclass
class Publication:
    """What :func:`publish` built and wrote.

    Attributes:
        tables: The tables of the runs (empty when none applies: see ``notes``).
        figures: Their figures.
        notes: Why a table or figure could not be built.
        report: The report's record, when one was asked for.
        tables_files: ``<tables_dir>/<table>.{md,tex,csv}``.
        plot_files: ``<plots_dir>/<figure>.{png,pdf,svg}``.
        report_files: ``report.html``, ``report.md`` and the report's figures.
        logged_to: The launch run the files were logged on, or None.
    """

    tables: list[RenderedTable] = field(default_factory=list)
    figures: list[NamedFigure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    report: Report | None = None
    tables_files: list[Path] = field(default_factory=list)
    plot_files: list[Path] = field(default_factory=list)
    report_files: list[Path] = field(default_factory=list)
    logged_to: str | None = None

    @property
    def report_html(self) -> Path | None:
        """The report's HTML page, if one was written."""
        return next((p for p in self.report_files if p.suffix == ".html"), None)


def publish(
    context: ResultsContext,
    runs: RunsTable,
    *,
    tables: bool = True,
    figures: bool = True,
    tables_dir: Path | str | None = None,
    plots_dir: Path | str | None = None,
    report_dir: Path | str | None = None,
    log_to: str | None = None,
    log_latest: bool = False,
    extra_tables: Sequence[DisplayTable] = (),
    strict: bool = True,
) -> Publication:
    """Build a sweep's tables and figures once, then write and log what was asked for.

    Args:
        context: The sweep's facts (``results.context``).
        runs: Its runs (one ledger read; ``runs.records`` feeds the report).
        tables: Build the tables.
        figures: Build the figures.
        tables_dir: Write each table as ``<table>.{md,tex,csv}`` here.
        plots_dir: Write each figure as ``<figure>.{png,pdf,svg}`` here.
        report_dir: Write ``report.html``, ``report.md`` and ``figures/`` here.
        log_to: The launch run the written files are logged on (the context's tracking URI).
        log_latest: Without ``log_to``, log on the sweep's latest launch.
        extra_tables: Tables the report shows after the sweep's.
        strict: Raise when no table (or figure) applies; otherwise keep going and say why in
            ``notes`` (the end of a launch, the demo, a report).

    Raises:
        ResultsError: ``strict`` and nothing to tabulate or draw; a report of a runs CSV.
    """
    out = Publication()
    source = Source(runs, context)
    if runs.runs.empty:
        if strict:
            raise ResultsError(f"no FINISHED runs to {'tabulate' if tables else 'plot'}")
        out.notes.append("No FINISHED run yet: no table and no figure.")
    else:
        if tables:
            out.tables = _attempt(lambda: build_tables(runs, context), "table", strict, out.notes)
        if figures:
            out.figures = _attempt(lambda: collect_figures(runs, context), "figure", strict, out.notes)
    report_files: list[Path] = []
    if report_dir is not None:
        out.report = build_report(
            source, tables=out.tables, figures=out.figures, notes=out.notes, extra_tables=extra_tables
        )
        written = write_report(out.report, report_dir)
        report_files = [written.html, written.markdown]
        out.report_files = [*report_files, *written.figures]
    if tables_dir is not None and out.tables:
        out.tables_files = list(write_tables(out.tables, tables_dir).values())
    if plots_dir is not None and out.figures:
        out.plot_files = save_figures(out.figures, plots_dir)
    if log_to is None and log_latest and out.report is not None:
        log_to = latest_launch(out.report)
    if log_to is not None and context.tracking_uri is not None:
        store = TrialLedger(context.tracking_uri, context.experiment or context.name)
        store.log_files(log_to, out.tables_files, TABLES_ARTIFACT_PATH)
        store.log_files(log_to, report_files, REPORT_ARTIFACT_PATH)
        store.log_files(
            log_to, out.report_files[len(report_files) :], f"{REPORT_ARTIFACT_PATH}/{FIGURES_DIR}"
        )
        out.logged_to = log_to
    return out


def _attempt(build, what: str, strict: bool, notes: list[str]) -> list:
    """``build()``; a ``ResultsError`` is raised when ``strict``, else noted ("No table: ...")."""
    try:
        return build()
    except ResultsError as error:
        if strict:
            raise
        notes.append(f"No {what}: {error}")
        return []
