"""The result kinds: for each protocol's table kind (``Protocol.table``), how its runs become tables
and figures — the one dispatch ``results.tables`` and ``results.figures`` go through.

Each kind's module owns its summary (the seed statistics of a cell: ``statistics.seed_stats``), its
spread, its table layout and its figures: ``base2new`` (+ ``base2new_figures``; ``ablation`` when
configurations share a cell), ``transfer`` (domain generalisation, cross-dataset), ``few_shot``,
``search``; the training curves (``curves``) are drawn for every protocol whose runs logged a
history. Adding a protocol's results is one entry of :data:`RESULT_KINDS` and one module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from orchestration.ledger.runs import RunsTable, attach_params
from orchestration.results import ablation, base2new, base2new_figures, few_shot, search, transfer
from orchestration.results.context import ResultsContext
from orchestration.results.figure_style import NamedFigure
from orchestration.results.published import add_published
from orchestration.results.render import RenderedTable
from prometar.protocols import Protocol

TableBuilder = Callable[[RunsTable, Protocol, ResultsContext], list[RenderedTable]]
FigureBuilder = Callable[[RunsTable, Protocol, ResultsContext], list[NamedFigure]]


def _noting_the_average(tables: list[RenderedTable], ctx: ResultsContext) -> list[RenderedTable]:
    """The tables, each layout noting what its Average rows cover when no sweep gave the grid."""
    note = ctx.average_note
    if note is not None:
        for table in tables:
            for display in (table.display, table.latex_display):
                if display is not None:
                    display.notes.append(note)
    return tables


def _base2new(ledger: RunsTable, protocol: Protocol, ctx: ResultsContext) -> list[RenderedTable]:
    runs = ledger.runs
    if not runs["metric"].isin(protocol.set_metrics).any():
        return []
    by = ablation.ablation_params(runs, ledger.params)
    if by:
        summary = ablation.ablation_summary(attach_params(runs, ledger.params, by), by, datasets=ctx.grid)
        return _noting_the_average(
            [RenderedTable(ablation.KIND, summary, ablation.layout_ablation(summary, by))], ctx
        )
    summary = base2new.base2new_summary(runs, datasets=ctx.grid)
    latex = None
    if ctx.published is not None:
        summary = add_published(summary, ctx.published, datasets=ctx.grid)
        latex = base2new.layout_base2new(summary, expected_seeds=ctx.expected_seeds, published_rows=True)
        if latex.subrules:
            latex.title += "; published numbers in the lower rows of each block"
    return _noting_the_average(
        [
            RenderedTable(
                protocol.table,
                summary,
                base2new.layout_base2new(summary, expected_seeds=ctx.expected_seeds),
                latex,
            )
        ],
        ctx,
    )


def _transfer(ledger: RunsTable, protocol: Protocol, ctx: ResultsContext) -> list[RenderedTable]:
    summary = transfer.transfer_summary(
        ledger.runs, protocol=protocol.name, targets=ctx.targets or protocol.default_targets
    )
    layout = transfer.layout_transfer(
        summary, title=transfer.TITLES[protocol.table], expected_seeds=ctx.expected_seeds
    )
    return [RenderedTable(protocol.table, summary, layout)]


def _few_shot(ledger: RunsTable, protocol: Protocol, ctx: ResultsContext) -> list[RenderedTable]:
    summary = few_shot.few_shot_summary(ledger.runs, datasets=ctx.grid)
    return _noting_the_average(
        [
            RenderedTable(
                protocol.table, summary, few_shot.layout_few_shot(summary, expected_seeds=ctx.expected_seeds)
            )
        ],
        ctx,
    )


def _search(ledger: RunsTable, protocol: Protocol, ctx: ResultsContext) -> list[RenderedTable]:
    space = list(ctx.search_space) or search.varying_params(ledger.params)
    with_params = attach_params(ledger.runs, ledger.params, space)
    summary = search.search_summary(with_params, space, objective=ctx.objective)
    return [
        RenderedTable(protocol.table, summary, search.layout_search(summary, space, objective=ctx.objective))
    ]


def _nothing(ledger: RunsTable, protocol: Protocol, ctx: ResultsContext) -> list:
    """A transfer's source models have no table or figure of their own: each transfer run reports
    its source model's accuracy, the transfer tables' source column."""
    return []


@dataclass(frozen=True)
class ResultKind:
    """How one table kind's runs become results.

    Attributes:
        tables: Its tables (empty when the runs hold none of its metrics).
        figures: Its figures.
    """

    tables: TableBuilder
    figures: FigureBuilder


RESULT_KINDS: dict[str, ResultKind] = {
    base2new.KIND: ResultKind(_base2new, base2new_figures.figures),
    **dict.fromkeys(transfer.KINDS, ResultKind(_transfer, transfer.figures)),
    transfer.SOURCE_KIND: ResultKind(_nothing, _nothing),
    few_shot.KIND: ResultKind(_few_shot, few_shot.figures),
    search.KIND: ResultKind(_search, search.figures),
}
"""Table kind (``Protocol.table``) → its tables and figures."""
