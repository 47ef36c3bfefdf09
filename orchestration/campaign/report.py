"""The reproduction report: every table of a campaign, our numbers beside the paper's, a verdict on each.

For each table: its results table(s) as the ``table`` verb builds them (``results.tables.build_tables``
over the FINISHED runs its sweeps plan, with the transfer source models another sweep trained),
then every cell — ours (mean, 95 % interval, n) beside the published value and its source, the
difference, the verdict (``orchestration.campaign.verdicts``) — and the table's verdict; a table
with ``pairs`` adds each pair's paired comparison (``results.comparison``) and is judged on it.
At the top: the summary (cells reproduced, per table and in all) and the caveats every cell shares.
Written as one self-contained HTML page (inline styles, every value escaped), its Markdown twin
and the LaTeX of every table, then logged on a run of the campaign's own MLflow experiment (tag
``prometar.role=campaign``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from jinja2 import Environment, PackageLoader
from markupsafe import Markup

from orchestration.campaign.cells import (
    Cell,
    Expectation,
    estimate_cells,
    judge_cells,
    pair_cells,
    paired_cells,
)
from orchestration.campaign.plan import CampaignPlan
from orchestration.campaign.published import PublishedValue, cited_values
from orchestration.campaign.spec import CampaignTable
from orchestration.campaign.tables import protocol_of
from orchestration.campaign.verdicts import (
    INCONCLUSIVE,
    NOT_COMPARABLE,
    NOT_REPRODUCED,
    REPRODUCED,
    VERDICTS,
    TableVerdict,
    judge_table,
)
from orchestration.errors import ResultsError
from orchestration.ledger.runs import PlannedRuns, RunsTable, planned_runs, read_experiment, tabulate_runs
from orchestration.ledger.store import TrialLedger
from orchestration.ledger.vocabulary import TRIAL_KEY_TAG
from orchestration.results import base2new
from orchestration.results.comparison import layout_comparison
from orchestration.results.context import DEFAULT_SEEDS, ResultsContext
from orchestration.results.labels import AVERAGE, dataset_label, method_label
from orchestration.results.published import load_published
from orchestration.results.render import RenderedTable, to_markdown
from orchestration.results.safe_text import markdown_code, markdown_text
from orchestration.results.tables import build_tables
from prometar.data.catalog import BASE_TO_NEW_DATASETS as PAPER_DATASETS

HTML_NAME = "reproduction.html"
MARKDOWN_NAME = "reproduction.md"
LATEX_DIR = "latex"
ARTIFACT_PATH = "reproduction"
"""Where the files go on the campaign's MLflow run."""
CELLS_NOTE = (
    "Cells: ours is the mean over seeds of each run's value with its 95% Student-t interval and n "
    "(HM: the mean of the seeds' HMs, which can differ from the table's HM of the means; rows "
    "'A − B': the per-seed difference of the first cited method and another, beside the paper's "
    "difference). The verdict is 'reproduced' when the published value lies within our interval (a "
    "toy-world floor: when our interval lies above it), 'not reproduced' otherwise (by how much; a "
    "floor: when our interval lies below it), 'inconclusive' when our interval spans a floor, "
    "'not comparable' when a named deviation, a missing reference value or run, or a single seed "
    "stands in the way. Average cells are compared only over the paper's 11 datasets."
)


@dataclass(frozen=True, kw_only=True)
class TableResult:
    """One table of the report: its results tables, its judged cells and its verdict."""

    table: CampaignTable
    rendered: tuple[RenderedTable, ...]
    cells: tuple[Cell, ...]
    verdict: TableVerdict
    runs: int
    note: str = ""


@dataclass(frozen=True)
class Reproduction:
    """The whole report."""

    campaign: str
    description: str
    tables: tuple[TableResult, ...]
    caveats: tuple[tuple[str, str], ...] = ()
    expectations: str = ""
    tracking_uri: str = ""
    counts: dict[str, int] = field(default_factory=dict)

    def summary_line(self) -> str:
        counts = {verdict: self.counts.get(verdict, 0) for verdict in VERDICTS}
        comparable = counts[REPRODUCED] + counts[NOT_REPRODUCED]
        not_run = sum(1 for t in self.tables for c in t.cells if c.ours is None)
        return (
            f"{counts[REPRODUCED]} of {comparable} comparable cells reproduced, "
            f"{counts[NOT_REPRODUCED]} not reproduced, {counts[INCONCLUSIVE]} inconclusive, "
            f"{counts[NOT_COMPARABLE]} not comparable "
            f"({not_run} of them without a finished run; {len(self.tables)} tables)"
        )


EMPTY_COLUMNS = ("method", "dataset", "protocol", "shots", "seed", "metric", "value", "run_id")


def sweep_runs(plan: CampaignPlan, name: str, tracking_uri: str) -> RunsTable | None:
    """The FINISHED runs a sweep plans, from its experiment (None when it has none), with the
    transfer source models it plans that another sweep trained: found by trial key in any
    experiment of the store, as the launch finds them (``TrialLedger.finished_anywhere``)."""
    sweep = plan.sweep(name)
    tables: list[RunsTable] = []
    try:
        tables.append(read_experiment(sweep.plan.name, tracking_uri, planned=planned_runs(sweep.plan)))
    except ResultsError:
        pass
    have = set(tables[0].trial_keys.values()) if tables else set()
    missing = {t.key for t in sweep.plan.sources} - have
    if missing:
        found = TrialLedger(tracking_uri, sweep.plan.name).finished_anywhere(missing)
        if found:
            planned = PlannedRuns(TRIAL_KEY_TAG, frozenset(found))
            tables.append(tabulate_runs(list(found.values()), "source models", planned=planned))
    tables = [t for t in tables if not t.runs.empty]
    return merge_runs(tables) if tables else None


def merge_runs(tables: Sequence[RunsTable]) -> RunsTable:
    """One runs table of several (each run once)."""
    if not tables:
        return RunsTable(runs=pd.DataFrame(columns=list(EMPTY_COLUMNS)))
    params = pd.concat([t.params for t in tables])
    keys: dict[str, str] = {}
    for table in tables:
        keys.update(table.trial_keys)
    runs = pd.concat([t.runs for t in tables], ignore_index=True)
    return RunsTable(
        runs=runs.drop_duplicates(subset=["run_id", "metric"], ignore_index=True),
        params=params[~params.index.duplicated()],
        trial_keys=keys,
    )


def comparable_published(values: Sequence[PublishedValue], datasets: Sequence[str]) -> list[PublishedValue]:
    """The published values our cells can meet: the paper's Average rows only when our table's
    datasets are the paper's 11 (its Average is over them)."""
    if set(datasets) == set(PAPER_DATASETS):
        return list(values)
    return [v for v in values if v.dataset != AVERAGE]


def build_table_result(
    plan: CampaignPlan,
    table: CampaignTable,
    tracking_uri: str,
    *,
    expectation: Expectation | None = None,
    runs: Mapping[str, RunsTable | None] | None = None,
) -> TableResult:
    """Read, tabulate and judge one table of the campaign (``expectation``: the toy world's, instead
    of the published values; ``runs``: each sweep's runs already read, by name)."""
    read = dict(runs or {})
    for name in table.sweeps:
        if name not in read:
            read[name] = sweep_runs(plan, name, tracking_uri)
    runs_of = merge_runs([read[n] for n in table.sweeps if read[n] is not None])
    plans = [plan.sweep(name).plan for name in table.sweeps]
    datasets = tuple(dict.fromkeys(d for p in plans for d in p.datasets))
    targets = tuple(dict.fromkeys(t for p in plans for t in p.targets))
    seeds = max((p.seeds for p in plans), default=DEFAULT_SEEDS)
    deviation = "; ".join(f"{d.name} (source: {d.source})" for d in table.deviations)
    cited = cited_values(table.published.resource, table.published.methods) if table.published else []
    published = comparable_published(cited, datasets)
    rendered: tuple[RenderedTable, ...] = ()
    note = ""
    if runs_of.runs.empty:
        note = "no FINISHED run yet"
    else:
        try:
            compare = table.published is not None and table.kind == base2new.KIND and expectation is None
            context = ResultsContext(
                name=table.name,
                protocol=protocol_of(table.kind).name,
                datasets=datasets,
                expected_seeds=seeds,
                targets=targets,
                published=load_published() if compare and not table.pairs else None,
            )
            rendered = tuple(build_tables(runs_of, context))
        except ResultsError as err:
            note = f"no table: {err}"
    if table.pairs:
        # the per-method cells of the sweeps an earlier table shares are judged there, once
        shared = set(next((t.shared for t in plan.tables if t.table.name == table.name), ()))
        own = merge_runs([read[n] for n in table.sweeps if n not in shared and read[n] is not None])
        estimates = estimate_cells(own, kind=table.kind, datasets=datasets)
        cells = tuple(judge_cells(estimates, [], expectation=expectation))
        paired, summaries = pair_cells(
            runs_of,
            table.pairs,
            published if expectation is None else [],
            datasets=datasets,
            deviation=deviation if expectation is None else "",
            no_reference="the toy world expects no sign of this difference" if expectation else "",
        )
        cells += tuple(paired)
        rendered += tuple(
            RenderedTable(f"compare-{s.iloc[0]['method_b']}-{s.iloc[0]['method_a']}", s, layout_comparison(s))
            for s in summaries
        )
    else:
        estimates = estimate_cells(runs_of, kind=table.kind, datasets=datasets)
        cells = tuple(judge_cells(estimates, published, deviation=deviation, expectation=expectation))
        if table.published is not None and expectation is None:  # the paper's method against each baseline
            cells += tuple(
                paired_cells(runs_of, published, lead=table.published.methods[0], deviation=deviation)
            )
    return TableResult(
        table=table,
        rendered=rendered,
        cells=cells,
        verdict=judge_table(c.verdict for c in cells),
        runs=runs_of.runs["run_id"].nunique() if not runs_of.runs.empty else 0,
        note=note,
    )


def build_reproduction(
    plan: CampaignPlan, tracking_uri: str, *, expectations: str = "", expectation: Expectation | None = None
) -> Reproduction:
    """The report of every chosen table of a planned campaign (``expectation``: see ``judge_cells``,
    bound to the campaign's runs first; ``expectations``: the sentence saying what it is)."""
    runs = {sweep.name: sweep_runs(plan, sweep.name, tracking_uri) for sweep in plan.sweeps}
    if expectation is not None:
        expectation = expectation.with_runs(merge_runs([r for r in runs.values() if r is not None]).runs)
    results = tuple(
        build_table_result(plan, table.table, tracking_uri, expectation=expectation, runs=runs)
        for table in plan.tables
    )
    counts = {v: sum(r.verdict.counts[v] for r in results) for v in VERDICTS}
    campaign = plan.campaign
    return Reproduction(
        campaign.name,
        campaign.description,
        results,
        tuple((c.name, c.source) for c in campaign.caveats),
        expectations,
        tracking_uri,
        counts,
    )


# -- rendering -----------------------------------------------------------------------------------


def _number(value: float | None) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.2f}"


def _cell_row(cell: Cell) -> list[str]:
    ours = cell.ours
    if ours is None:
        ours_text = "–"
    elif ours.n < 2:
        ours_text = f"{ours.mean:.2f} (n=1)"
    else:
        ours_text = f"{ours.mean:.2f} [{ours.low:.2f}, {ours.high:.2f}] (n={ours.n})"
    published = f"{cell.published.value:.2f}" if cell.published else "–"
    source = cell.published.source if cell.published else ""
    verdict = cell.verdict.verdict
    if cell.verdict.by is not None:
        verdict += f" (by {cell.verdict.by:.2f})"
    elif cell.verdict.reason:
        verdict += f" ({cell.verdict.reason})"
    return [
        method_label(cell.method),
        dataset_label(cell.dataset),
        str(cell.shots),
        cell.setting,
        cell.metric,
        ours_text,
        published,
        source,
        _number(cell.verdict.difference),
        verdict,
    ]


CELL_HEADER = (
    "method",
    "dataset",
    "shots",
    "setting",
    "metric",
    "ours (95% CI, n)",
    "reference (published or expected)",
    "source",
    "Δ",
    "verdict",
)


CELL_NUMBER_COLUMNS = frozenset({2, 5, 6, 8})
"""Columns of :data:`CELL_HEADER` that hold numbers formatted here (the others are texts)."""


def _markdown_row(values: list[str] | tuple[str, ...], numbers: frozenset[int] = frozenset()) -> str:
    """One Markdown table row; every text shown literally (``results.safe_text.markdown_text``), the
    numbers formatted here as they are."""
    cells = (v if i in numbers else markdown_text(v).replace("|", "\\|") for i, v in enumerate(values))
    return "| " + " | ".join(cells) + " |"


def _markdown_rule(columns: int) -> str:
    return "|" + "|".join("---" for _ in range(columns)) + "|"


def render_markdown(report: Reproduction) -> str:
    """The report as Markdown; every text from the campaign, the runs or a resource is shown literally
    (``results.safe_text``)."""
    t = markdown_text
    lines = [f"# Reproduction: {t(report.campaign)}", ""]
    if report.description:
        lines += [t(report.description), ""]
    lines += [f"**Summary: {t(report.summary_line())}.**", ""]
    if report.expectations:
        lines += [t(report.expectations), ""]
    lines += [_markdown_row(("table", "kind", "verdict", "cells")), _markdown_rule(4)]
    for result in report.tables:
        lines.append(
            _markdown_row(
                (result.table.name, result.table.kind, result.verdict.verdict, result.verdict.line())
            )
        )
    lines.append("")
    for name, source in report.caveats:
        lines.append(f"- Caveat: {t(name)} (source: {t(source)})")
    lines += ["", t(CELLS_NOTE)]
    for result in report.tables:
        table = result.table
        lines += [
            "",
            f"## {t(table.title)}",
            "",
            f"Table {markdown_code(table.name)} ({t(table.kind)}); sweeps: {t(', '.join(table.sweeps))}; "
            f"{result.runs} finished run(s). **Verdict: {t(result.verdict.verdict)}** — "
            f"{t(result.verdict.line())}.",
        ]
        lines += [f"- {t(note)}" for note in _notes(result)]
        for rendered in result.rendered:
            lines += ["", to_markdown(rendered.display)]
        if result.cells:
            lines += ["", _markdown_row(CELL_HEADER), _markdown_rule(len(CELL_HEADER))]
            lines += [_markdown_row(_cell_row(cell), CELL_NUMBER_COLUMNS) for cell in result.cells]
    return "\n".join(lines) + "\n"


_STYLE = (
    "body{font-family:sans-serif;max-width:72em;margin:2em auto;color:#222}"
    "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:2px 6px;font-size:90%}"
    ".reproduced{background:#dfd}.not-reproduced{background:#fdd}.not-comparable{background:#eee}"
)


_PAGE = Environment(
    loader=PackageLoader("orchestration.campaign", "templates"), autoescape=True, keep_trailing_newline=True
)


def _notes(result: TableResult) -> list[str]:
    notes = [f"Not comparable: {d.name} (source: {d.source})" for d in result.table.deviations]
    return notes + ([result.note] if result.note else [])


def render_html(report: Reproduction) -> str:
    """The report as one self-contained HTML page: a Jinja2 template with autoescaping (every value
    of the campaign, the runs and the published resource is escaped; the results tables come as
    escaped HTML from ``results.report_page.table_html``)."""
    from orchestration.results.report_page import table_html

    sections = [
        {
            "result": result,
            "notes": _notes(result),
            "tables": [Markup(table_html(rendered.display)) for rendered in result.rendered],
            "rows": [(cell.verdict.verdict, _cell_row(cell)) for cell in result.cells],
        }
        for result in report.tables
    ]
    return _PAGE.get_template("reproduction.html.j2").render(
        report=report, sections=sections, header=CELL_HEADER, cells_note=CELLS_NOTE, style=Markup(_STYLE)
    )


@dataclass(frozen=True)
class ReproductionFiles:
    """What :func:`write_reproduction` wrote, and the run it logged them on."""

    html: Path
    markdown: Path
    latex: tuple[Path, ...]
    logged_to: str | None = None


def write_reproduction(
    report: Reproduction, out_dir: Path, *, log_to: tuple[object, str] | None = None
) -> ReproductionFiles:
    """Write the report (HTML, Markdown, one ``.tex`` per table) into ``out_dir``; everything is
    rendered before the first file is written. ``log_to``: (ledger, run id) to log the files on."""
    page = render_html(report)
    markdown = render_markdown(report)
    latex = {
        f"{result.table.name}-{rendered.name}.tex": rendered.render("latex")
        for result in report.tables
        for rendered in result.rendered
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    html_path = out_dir / HTML_NAME
    html_path.write_text(page, encoding="utf-8")
    markdown_path = out_dir / MARKDOWN_NAME
    markdown_path.write_text(markdown, encoding="utf-8")
    latex_paths = []
    if latex:
        (out_dir / LATEX_DIR).mkdir(exist_ok=True)
        for name, text in latex.items():
            path = out_dir / LATEX_DIR / name
            path.write_text(text, encoding="utf-8")
            latex_paths.append(path)
    logged = None
    if log_to is not None:
        ledger, run_id = log_to
        ledger.log_files(run_id, [html_path, markdown_path], ARTIFACT_PATH)  # type: ignore[attr-defined]
        if latex_paths:
            ledger.log_files(run_id, latex_paths, f"{ARTIFACT_PATH}/{LATEX_DIR}")  # type: ignore[attr-defined]
        logged = run_id
    return ReproductionFiles(html_path, markdown_path, tuple(latex_paths), logged)
