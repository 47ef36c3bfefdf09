"""A sweep's report: one self-contained HTML page (and its Markdown twin) a person opens.

The page holds what a researcher needs in one place: the sweep's tables (``results.tables``), its
figures (``results.figures``, inline SVG), how many trials were planned, finished and failed with each
failure's reason, and the provenance of the numbers — the code revision of this checkout and of
the runs, the result revision, package versions, the tracking URI and every launch. The HTML loads
nothing from anywhere: styles are inline, figures are inline SVG, and no URL appears in it. The
Markdown twin (``report.md``) links the PNG files written beside it.

:func:`build_report` assembles the page from the tables and figures ``results.publish`` built and
the ledger snapshot they came from; :func:`write_report` writes ``report.html``, ``report.md`` and
``figures/<name>.{png,pdf,svg}`` (``publish`` logs them as artifacts, ``report/``, of the sweep's
launch run). ``launch`` publishes the report at the end of a sweep, ``demo`` the demo's, and the
``report`` verb one on demand.
"""

from __future__ import annotations

import html
import io
import platform
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import quote

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
from orchestration.results.base2new import KIND as BASE2NEW_KIND
from orchestration.results.base2new import published_sources
from orchestration.results.context import ResultsContext
from orchestration.results.display import INTERVAL_NOTE, Cell, DisplayTable, cell_text, has_intervals
from orchestration.results.figures import NamedFigure, figure_style, save_figure
from orchestration.results.labels import dataset_label, method_label
from orchestration.results.render import RenderedTable, to_markdown
from orchestration.results.safe_text import markdown_code, markdown_text
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
        published_sources: (methods, source) of each published number the tables show.
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
    published_sources: tuple[tuple[str, str], ...] = ()


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
                run.info.run_id,
                run.info.status,
                _utc(run.info.start_time),
                _utc(run.info.end_time),
                tags.get(HOST_TAG, ""),
                tags.get(GIT_SHA_TAG, ""),
                tags.get(RESULT_REVISION_TAG, "1"),
                tags.get(TRIALS_PLANNED_TAG, ""),
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
        failures.append(Failure(key, latest.info.run_id, where, status, reason, detail[-3000:]))
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
        published_sources=tuple(
            pair
            for table in tables
            if table.name == BASE2NEW_KIND and "source" in table.summary.columns
            for pair in published_sources(table.summary)
        ),
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


# -------------------------------------------------------------------------------------------- HTML


def _cell_html(cell: Cell) -> str:
    if cell.value is None:
        return html.escape(cell.text if cell.text is not None else "–")
    text = html.escape(cell_text(cell))
    if cell.bold:
        text = f"<strong>{text}</strong>"
    if cell.flag:
        text += " †"
    return text


def table_html(table: DisplayTable) -> str:
    """A table as an HTML ``<table>`` with its caption and notes (block rules as row classes)."""
    head = "".join(
        f'<th class="{"label" if i < table.label_columns else "number"}">{html.escape(h)}</th>'
        for i, h in enumerate(table.header)
    )
    rows = []
    for i, row in enumerate(table.rows):
        classes = ["block"] if i in table.rules and i > 0 else []
        if i in table.subrules:
            classes.append("published")
        cells = "".join(
            f'<td class="{"label" if j < table.label_columns else "number"}">{_cell_html(c)}</td>'
            for j, c in enumerate(row)
        )
        rows.append(f'<tr class="{" ".join(classes)}">{cells}</tr>' if classes else f"<tr>{cells}</tr>")
    shown = [*table.notes, INTERVAL_NOTE] if has_intervals(table) else table.notes
    notes = "".join(f'<p class="note">{html.escape(n)}</p>' for n in shown)
    return (
        f'<figure class="table"><figcaption>{html.escape(table.title)}</figcaption><table><thead><tr>{head}'
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table>{notes}</figure>"
    )


_SVG_PROLOGUE = re.compile(r"^.*?(?=<svg\b)", re.DOTALL)
_SVG_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.DOTALL)
_SVG_NAMESPACES = re.compile(r'\s+xmlns(:\w+)?="[^"]*"')


def inline_svg(figure: NamedFigure) -> str:
    """The figure as SVG markup for inline use in HTML: no XML prologue, doctype, metadata or namespace
    declarations (HTML parsers supply them), so no URL remains."""
    buffer = io.StringIO()
    with figure_style():
        figure.figure.savefig(buffer, format="svg", metadata={"Date": None})
    text = _SVG_PROLOGUE.sub("", buffer.getvalue(), count=1)
    text = _SVG_METADATA.sub("", text)
    text = _SVG_NAMESPACES.sub("", text)
    return text.replace("<svg ", f'<svg role="img" aria-label="{html.escape(figure.caption)}" ', 1)


_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 72rem;
       padding: 0 1rem; color: #1b1b1b; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; } h2 { font-size: 1.25rem; margin-top: 2.2rem;
     border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; }
.subtitle { color: #555; margin-top: 0; }
table { border-collapse: collapse; font-size: 0.9rem; margin: 0.4rem 0; }
th, td { padding: 0.2rem 0.6rem; } thead th { border-top: 2px solid #333; border-bottom: 1px solid #333; }
tbody tr:last-child td { border-bottom: 2px solid #333; } tr.block td { border-top: 1px solid #999; }
tr.published td { border-top: 1px dashed #bbb; font-style: italic; }
td.number, th.number { text-align: right; font-variant-numeric: tabular-nums; }
td.label, th.label { text-align: left; }
figure { margin: 1.2rem 0; } figcaption { font-weight: 600; margin-bottom: 0.3rem; }
figure.plot figcaption { font-weight: normal; color: #333; max-width: 50rem; }
figure.plot svg { max-width: 100%; height: auto; }
.note { font-size: 0.85rem; color: #444; margin: 0.2rem 0; }
dl.counts { display: grid; grid-template-columns: max-content max-content; gap: 0.1rem 1rem; }
dl.counts dt { color: #555; } dl.counts dd { margin: 0; font-variant-numeric: tabular-nums; }
.failed { color: #b00020; } details pre { font-size: 0.75rem; white-space: pre-wrap; background: #f6f6f6;
  padding: 0.5rem; } code { font-size: 0.85rem; }
"""


def _counts_rows(counts: Counts) -> list[tuple[str, str]]:
    rows = [
        ("planned", "–" if counts.planned is None else str(counts.planned)),
        ("finished", str(counts.finished)),
        ("failed", str(counts.failed)),
    ]
    if counts.killed:
        rows.append(("killed", str(counts.killed)))
    if counts.running:
        rows.append(("running", str(counts.running)))
    if counts.not_started is not None:
        rows.append(("not started", str(counts.not_started)))
    return rows


def _provenance_rows(report: Report) -> list[tuple[str, str]]:
    p = report.provenance
    rows = [
        ("code revision (this report)", p.code_revision),
        ("result revision (this code)", str(p.result_revision)),
        (
            "code revisions of the finished runs",
            ", ".join(f"{sha} ({n} runs)" for sha, n in p.run_code_revisions.items()) or "–",
        ),
        (
            "result revisions of the finished runs",
            ", ".join(f"r{rev} ({n} runs)" for rev, n in p.run_result_revisions.items()) or "–",
        ),
        ("tracking URI", p.tracking_uri or "–"),
        ("experiment", p.experiment or "–"),
    ]
    if p.sweep_file:
        rows.append(("sweep file", p.sweep_file))
    if p.overrides:
        rows.append(("overrides (--set)", ", ".join(f"{k}={v}" for k, v in p.overrides)))
    rows += [(f"published numbers: {methods}", source) for methods, source in p.published_sources]
    rows += [(f"version of {name}", version) for name, version in p.versions.items()]
    return rows


def _launch_rows(report: Report) -> list[list[str]]:
    return [
        [
            launch.start,
            launch.end or "–",
            launch.status,
            launch.host or "–",
            launch.trials_planned or "–",
            launch.code_revision[:12] or "–",
            f"r{launch.result_revision}",
            launch.run_id,
        ]
        for launch in report.launches
    ]


_LAUNCH_HEADER = [
    "started",
    "ended",
    "status",
    "host",
    "trials planned",
    "code",
    "result revision",
    "parent run",
]


def render_html(report: Report) -> str:
    """The report as one self-contained HTML page (inline styles and SVG; no URL)."""
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{e(report.title)} — prometar report</title>",
        f"<style>{_STYLE}</style>",
        "</head>",
        "<body>",
        f"<h1>{e(report.title)}</h1>",
        f'<p class="subtitle">{e(_subtitle(report))}</p>',
    ]
    parts.append(
        '<h2 id="trials">Trials</h2><dl class="counts">'
        + "".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in _counts_rows(report.counts))
        + "</dl>"
    )
    if report.failures:
        parts.append('<h3 class="failed">Failures</h3><ul>')
        for failure in report.failures:
            detail = (
                f"<details><summary>traceback</summary><pre>{e(failure.detail)}</pre></details>"
                if failure.detail
                else ""
            )
            parts.append(
                f"<li><strong>{e(failure.where)}</strong> — {e(failure.status)}: {e(failure.reason)} "
                f"<code>trial {e(failure.trial_key)}, run {e(failure.run_id)}</code>{detail}</li>"
            )
        parts.append("</ul>")
    for note in report.notes:
        parts.append(f'<p class="note">{e(note)}</p>')
    if report.tables or report.extra_tables:
        parts.append('<h2 id="tables">Tables</h2>')
        parts += [table_html(t.display) for t in report.tables]
        parts += [table_html(t) for t in report.extra_tables]
    if report.figures:
        parts.append('<h2 id="figures">Figures</h2>')
        for figure in report.figures:
            parts.append(
                f'<figure class="plot" id="figure-{e(figure.name)}">{inline_svg(figure)}'
                f"<figcaption><strong>{e(figure.name)}</strong>: {e(figure.caption)}</figcaption></figure>"
            )
    parts.append(
        '<h2 id="provenance">Provenance</h2><table><tbody>'
        + "".join(
            f'<tr><td class="label">{e(k)}</td><td class="label"><code>{e(v)}</code></td></tr>'
            for k, v in _provenance_rows(report)
        )
        + "</tbody></table>"
    )
    if report.launches:
        parts.append(
            "<h3>Launches</h3><table><thead><tr>"
            + "".join(f'<th class="label">{e(h)}</th>' for h in _LAUNCH_HEADER)
            + "</tr></thead><tbody>"
            + "".join(
                "<tr>" + "".join(f'<td class="label">{e(v)}</td>' for v in row) + "</tr>"
                for row in _launch_rows(report)
            )
            + "</tbody></table>"
        )
    parts += ["</body>", "</html>"]
    return "\n".join(parts) + "\n"


def _subtitle(report: Report) -> str:
    bits = ["prometar sweep report"]
    if report.protocol:
        bits.append(f"protocol {report.protocol}")
    bits.append(f"result revision r{report.provenance.result_revision}")
    return " · ".join(bits)


# ---------------------------------------------------------------------------------------- Markdown


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def render_markdown(report: Report, *, figures_dir: str = FIGURES_DIR) -> str:
    """The report as Markdown: the same sections, figures linked as ``<figures_dir>/<name>.png``.

    Text from run data is :func:`~orchestration.results.safe_text.markdown_text` (or a code span):
    no raw HTML, no link and no image but the report's own figures beside it.
    """
    t = markdown_text
    parts = [
        f"# {t(report.title)}",
        "",
        t(_subtitle(report)),
        "",
        "## Trials",
        "",
        _markdown_table(["", "trials"], [(t(k), t(v)) for k, v in _counts_rows(report.counts)]),
    ]
    if report.failures:
        parts += ["### Failures", ""]
        parts += [
            f"- **{t(f.where)}** — {t(f.status)}: {t(f.reason)} "
            f"({markdown_code(f'trial {f.trial_key}')}, {markdown_code(f'run {f.run_id}')})"
            for f in report.failures
        ]
        parts.append("")
    parts += [f"{t(note)}\n" for note in report.notes]
    if report.tables or report.extra_tables:
        parts += ["## Tables", ""]
        parts += [to_markdown(table.display) for table in report.tables]
        parts += [to_markdown(table) for table in report.extra_tables]
    if report.figures:
        parts += ["## Figures", ""]
        for figure in report.figures:
            parts += [
                f"![{figure.name}]({figures_dir}/{quote(figure.name)}.png)",  # a name of the registry
                "",
                f"*{t(figure.name)}*: {t(figure.caption)} (PDF and SVG beside the PNG.)",
                "",
            ]
    parts += [
        "## Provenance",
        "",
        _markdown_table(["", "value"], [(t(k), markdown_code(v)) for k, v in _provenance_rows(report)]),
    ]
    if report.launches:
        rows = [[t(value) for value in row] for row in _launch_rows(report)]
        parts += ["### Launches", "", _markdown_table(_LAUNCH_HEADER, rows)]
    return "\n".join(parts).rstrip() + "\n"


# ------------------------------------------------------------------------------------------ writing


@dataclass(frozen=True)
class ReportFiles:
    """What :func:`write_report` wrote.

    Attributes:
        html: ``<out>/report.html``.
        markdown: ``<out>/report.md``.
        figures: ``<out>/figures/<name>.{png,pdf,svg}``.
    """

    html: Path
    markdown: Path
    figures: list[Path]


def write_report(report: Report, out_dir: Path | str) -> ReportFiles:
    """Write the report's files (``results.publish`` logs them on the launch run under ``report/``).

    Everything is rendered before the first file is written.

    Args:
        report: From :func:`build_report`.
        out_dir: Folder for ``report.html``, ``report.md`` and ``figures/``.
    """
    page = render_html(report)
    markdown = render_markdown(report)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    figure_files: list[Path] = []
    for figure in report.figures:
        figure_files += save_figure(figure.figure, out_dir / FIGURES_DIR / figure.name)
    html_path = out_dir / HTML_NAME
    html_path.write_text(page, encoding="utf-8")
    markdown_path = out_dir / MARKDOWN_NAME
    markdown_path.write_text(markdown, encoding="utf-8")
    return ReportFiles(html_path, markdown_path, figure_files)


def latest_launch(report: Report) -> str | None:
    """The run id of the sweep's latest launch (its parent run), or None if it has none."""
    return report.launches[-1].run_id if report.launches else None


__all__ = [
    "Counts",
    "Failure",
    "LaunchRecord",
    "Provenance",
    "Report",
    "ReportFiles",
    "build_report",
    "inline_svg",
    "latest_launch",
    "package_versions",
    "render_html",
    "render_markdown",
    "table_html",
    "write_report",
]
