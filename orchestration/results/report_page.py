"""A sweep's report page: the record ``results.report`` gathered, rendered and written.

The HTML page comes from a Jinja2 template (:data:`TEMPLATE`, autoescaping on) and loads
nothing from anywhere: styles are inline, figures inline SVG, and no URL appears in it. The
Markdown twin (``report.md``) links the PNG files :func:`write_report` writes beside it.
"""

from __future__ import annotations

import html
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from jinja2 import Environment, PackageLoader
from markupsafe import Markup

from orchestration.results.display import DisplayTable
from orchestration.results.figure_style import NamedFigure, figure_style, save_figure
from orchestration.results.render import HTML, cell_text, table_notes, to_markdown
from orchestration.results.report import (
    FIGURES_DIR,
    HTML_NAME,
    MARKDOWN_NAME,
    Counts,
    Report,
)
from orchestration.results.safe_text import markdown_code, markdown_text
from prometar.files import write_atomic

# -------------------------------------------------------------------------------------------- HTML

TEMPLATE = "report.html.j2"
"""The page's Jinja2 template, in ``orchestration/results/templates/``."""
_PAGE = Environment(
    loader=PackageLoader("orchestration.results", "templates"), autoescape=True, keep_trailing_newline=True
).get_template(TEMPLATE)


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
            f'<td class="{"label" if j < table.label_columns else "number"}">{cell_text(c, HTML)}</td>'
            for j, c in enumerate(row)
        )
        rows.append(f'<tr class="{" ".join(classes)}">{cells}</tr>' if classes else f"<tr>{cells}</tr>")
    notes = "".join(f'<p class="note">{html.escape(n)}</p>' for n in table_notes(table))
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
    """The report as one self-contained HTML page (inline styles and SVG; no URL), from the Jinja2
    template :data:`TEMPLATE` with autoescaping on: every text is escaped by the engine, only
    the tables' and figures' own markup (built escaped) is passed as safe."""
    return _PAGE.render(
        title=report.title,
        style=Markup(_STYLE),
        subtitle=_subtitle(report),
        counts=_counts_rows(report.counts),
        failures=report.failures,
        notes=report.notes,
        tables=[Markup(table_html(t.display)) for t in report.tables]
        + [Markup(table_html(t)) for t in report.extra_tables],
        figures=[(figure.name, Markup(inline_svg(figure)), figure.caption) for figure in report.figures],
        provenance=_provenance_rows(report),
        launch_header=_LAUNCH_HEADER,
        launches=_launch_rows(report),
    )


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
    write_atomic(html_path, lambda handle: handle.write(page))
    markdown_path = out_dir / MARKDOWN_NAME
    write_atomic(markdown_path, lambda handle: handle.write(markdown))
    return ReportFiles(html_path, markdown_path, figure_files)
