"""Run data in what researchers open: Markdown shown as text, CSV cells no spreadsheet evaluates,
figure labels drawn literally."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pandas as pd
import pytest
from markdown_it import MarkdownIt

from orchestration.ledger.runs import tidy_from_wide
from orchestration.results.display import Cell, DisplayTable
from orchestration.results.export import per_run_csv
from orchestration.results.figures import figure_base_vs_new, save_figure
from orchestration.results.render import to_csv, to_markdown
from orchestration.results.report import Counts, Failure, LaunchRecord, Provenance, Report
from orchestration.results.report_page import render_markdown
from orchestration.results.safe_text import csv_cell, csv_frame, markdown_code, markdown_text

HOSTILE = [
    "<img src=https://evil.example/x.png onerror=alert(1)>",
    "![x](https://evil.example/y.png) and [click](https://evil.example)",
    "<script>alert(1)</script> &amp; <b>bold</b>",
    "*emph* _under_ `code` ~~gone~~ \\[bracket]",
    "# heading",
    "- list item",
    "1. ordered",
    "line one\n\n<div>two</div>\n---\n",
    "[ref]: https://evil.example/z.png",
    "<https://evil.example/auto>",
    "[x][ref] and [y] [z]",
    "[trailing]",
    "+ plus item",
    "2) paren item",
    "###### six",
    "===",
    "- - -",
]
"""Text from run data that would be markup: HTML, images, links, emphasis, blocks, autolinks."""

RENDERER = MarkdownIt("commonmark").enable("table")
MARKUP_TOKENS = {"image", "link_open", "html_inline", "html_block", "em_open", "strong_open", "s_open"}


def _inline_tokens(markdown: str) -> list:
    tokens = []
    for token in RENDERER.parse(markdown):
        tokens.append(token)
        tokens += token.children or []
    return tokens


def _text(markdown: str) -> str:
    """What a CommonMark renderer shows: the text and code of the inline tokens."""
    return "".join(t.content for t in _inline_tokens(markdown) if t.type in ("text", "code_inline"))


@pytest.mark.parametrize("text", HOSTILE)
def test_markdown_text_renders_as_exactly_the_text(text: str) -> None:
    markdown = markdown_text(text)
    assert "\n" not in markdown
    tokens = RENDERER.parse(markdown)
    assert [t.type for t in tokens] == ["paragraph_open", "inline", "paragraph_close"]
    assert not {t.type for t in _inline_tokens(markdown)} & MARKUP_TOKENS
    assert _text(markdown) == " ".join(text.split())


@pytest.mark.parametrize("text", [*HOSTILE, "a ``b`` c", "`edge`"])
def test_markdown_code_is_one_verbatim_code_span(text: str) -> None:
    inline = [t for t in _inline_tokens(markdown_code(text)) if t.type not in ("inline",)]
    types = [t.type for t in inline if t.type not in ("paragraph_open", "paragraph_close")]
    assert types == ["code_inline"]
    assert _text(markdown_code(text)).strip() == " ".join(text.split()).strip()


def hostile_report() -> Report:
    reason = "OSError: <img src=https://evil.example/r.png> ![r](https://evil.example/r2.png)"
    return Report(
        title="exp<b>x</b>",
        protocol="base2new",
        tables=[],
        figures=[],
        counts=Counts(planned=2, finished=0, failed=1),
        failures=[
            Failure(
                trial_key="k`1",
                run_id="r1",
                where="[m](https://evil.example/w.png) dtd seed 1",
                status="FAILED",
                reason=reason,
            )
        ],
        launches=[
            LaunchRecord(
                run_id="p1",
                status="<i>FINISHED</i>",
                start="2026-01-01",
                end="",
                host="![h](https://evil.example/h.png)",
                code_revision="abc",
                result_revision="1",
                trials_planned="2",
            )
        ],
        provenance=Provenance(
            code_revision="abc",
            result_revision=1,
            run_code_revisions={},
            run_result_revisions={},
            versions={"python": "3"},
            tracking_uri="http://server`<img src=https://evil.example/t.png>",
            experiment="<script>x</script>",
            sweep_file="s.yaml",
        ),
        extra_tables=[
            DisplayTable(
                title="![t](https://evil.example/t.png)",
                header=["method <img src=https://evil.example/h.png>", "HM"],
                rows=[[Cell(text="<img src=https://evil.example/c.png> | x"), Cell(value=50.0)]],
                notes=["<img src=https://evil.example/n.png>"],
            )
        ],
        notes=["# <img src=https://evil.example/note.png>"],
    )


def test_report_markdown_has_no_raw_html_and_no_external_resource() -> None:
    markdown = render_markdown(hostile_report())
    tokens = _inline_tokens(markdown)
    assert not [t for t in tokens if t.type in {"image", "link_open", "html_inline", "html_block"}]
    assert not [t for t in tokens if {"src", "href"} & set(t.attrs)]  # nothing fetched, nothing linked
    assert "<img" not in RENDERER.render(markdown) and "<script" not in RENDERER.render(markdown)
    shown = _text(markdown)
    assert "<img src=https://evil.example/r.png>" in shown  # the reason, shown as text
    assert "<script>x</script>" in shown and "<i>FINISHED</i>" in shown
    headings = [t for t in RENDERER.parse(markdown) if t.type == "heading_open"]
    assert [t.tag for t in headings] == ["h1", "h2", "h3", "h2", "h2", "h3"]  # the note opened none
    table_cells = [t for t in RENDERER.parse(markdown) if t.type == "td_open"]
    assert len(table_cells) == 2 * 4 + 2 + 2 * 8 + 8  # counts, the extra table, provenance, launches


def test_report_markdown_links_only_its_own_figures(tmp_path: Path) -> None:
    from orchestration.results.figures import NamedFigure

    ledger = b2n_ledger(["zeroshot", "ivlp"])
    figure = figure_base_vs_new(ledger.runs, datasets=["dtd"], expected_seeds=1)
    report = hostile_report()
    report.figures = [NamedFigure("base_vs_new", figure, "<img src=https://evil.example/cap.png>")]
    images = [t for t in _inline_tokens(render_markdown(report)) if t.type == "image"]
    assert [t.attrs["src"] for t in images] == ["figures/base_vs_new.png"]


@pytest.mark.parametrize(
    "value, expected",
    [
        ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),
        ("+1+cmd|' /C calc'!A0", "'+1+cmd|' /C calc'!A0"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("-1.5", "-1.5"),
        ("-1e-05", "-1e-05"),
        ("-inf", "-inf"),
        ("ivlp", "ivlp"),
        (-3.25, -3.25),
        (7, 7),
    ],
)
def test_csv_cell_follows_the_owasp_rule_and_keeps_numbers(value, expected) -> None:
    assert csv_cell(value) == expected


def test_csv_frame_keeps_numeric_columns_numeric() -> None:
    frame = pd.DataFrame(
        {"method": ["=cmd|x", "ivlp"], "delta": [-1.5, 2.0], "note": ["-x", "@y"], "=bad": [1, 2]}
    )
    rows = list(csv.reader(io.StringIO(csv_frame(frame).to_csv(index=False))))
    assert rows == [
        ["method", "delta", "note", "'=bad"],
        ["'=cmd|x", "-1.5", "'-x", "1"],
        ["ivlp", "2.0", "'@y", "2"],
    ]


def b2n_ledger(methods: list[str]):
    rows = [(m, "dtd", 1, 70.0 + i, 60.0 + i) for i, m in enumerate(methods)]
    wide = pd.DataFrame(rows, columns=["method", "dataset", "seed", "base_acc", "new_acc"]).assign(shots=16)
    wide["run_id"] = [f"run-{i}" for i in range(len(rows))]
    return tidy_from_wide(wide, source="hand")


def test_per_run_and_table_csv_neutralise_formulas_from_run_data() -> None:
    frame = pd.DataFrame({"trial_key": ["k1"], "method": ["ivlp"], "hm": [-0.5], "optim.name": ["=1+1"]})
    rows = list(csv.reader(io.StringIO(per_run_csv(frame))))
    assert rows[1] == ["k1", "ivlp", "-0.5", "'=1+1"]
    summary = pd.DataFrame({"method": ["@evil"], "delta_hm": [-2.0]})
    assert list(csv.reader(io.StringIO(to_csv(summary))))[1] == ["'@evil", "-2.0000"]


def test_a_method_name_with_tex_markup_is_drawn_literally(tmp_path: Path) -> None:
    name = "$\\frac{1}{$ bad $x^$"
    ledger = b2n_ledger(["ivlp", name])
    figure = figure_base_vs_new(ledger.runs, datasets=["dtd"], expected_seeds=1)
    written = save_figure(figure, tmp_path / "scatter")
    assert [p.suffix for p in written] == [".png", ".pdf", ".svg"]
    texts = [t.get_text() for t in figure.findobj() if hasattr(t, "get_text")]
    assert any(name in text for text in texts)


def test_table_markdown_escapes_cell_text() -> None:
    table = DisplayTable(title="t", header=["method", "HM"], rows=[[Cell(text="<b>x</b>"), Cell(value=1.0)]])
    markdown = to_markdown(table)  # the caption is bold, by design; the cell is text
    assert not [t for t in _inline_tokens(markdown) if t.type in MARKUP_TOKENS - {"strong_open"}]
    assert "<b>x</b>" in _text(markdown)


@pytest.mark.parametrize("text", ["0.165", "[-1.72, +7.13]", "-0.20", "+2.71", "1.5e-3", "#3 of 5", "1.x"])
def test_markdown_text_leaves_plain_numbers_and_intervals_as_written(text: str) -> None:
    """Numbers, signed differences and intervals are not markup: no escape is needed, none is added."""
    markdown = markdown_text(text)
    assert markdown == text
    assert [t.type for t in RENDERER.parse(markdown)] == ["paragraph_open", "inline", "paragraph_close"]
    assert _text(markdown) == text
