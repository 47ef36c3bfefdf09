"""The tables an experiment's runs support: the table-kind registry, by the runs' protocols.

Each table is computed in two steps by its own module: a ``*_summary`` function turns the tidy
runs table into a numeric summary frame (seed means, sample standard deviations, seed counts,
harmonic means, the Average row) — what the CSV format writes —, and a ``layout_*`` function
turns the summary into a :class:`~orchestration.results.display.DisplayTable` that
``orchestration.results.render`` writes as Markdown or LaTeX. Which table a protocol's runs go
into is the protocol registry's word (``Protocol.table``); :data:`TABLE_KINDS` maps each kind to
its builder. Base-to-new runs give the ablation table instead when several configurations share
a (method, dataset, shots, seed) cell.

Everything here is a pure function of the runs (``orchestration.ledger.runs``) and the sweep's
facts; writing files is :func:`write_tables`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from orchestration.errors import ResultsError
from orchestration.ledger.runs import RunsTable, attach_params
from orchestration.results import ablation, base2new, comparison, few_shot, search, transfer
from orchestration.results.published import DEFAULT_VARIANT, add_published, load_published
from orchestration.results.render import EXTENSIONS, FORMATS, Format, RenderedTable, render_tables
from orchestration.results.source import Source
from prometar import protocols
from prometar.protocols import Protocol


@dataclass(frozen=True)
class TableContext:
    """What a table builder needs besides the runs.

    Attributes:
        datasets: Datasets of the Average rows (the sweep's grid).
        published: Published base-to-new numbers to compare against, or ``None``.
        expected_seeds: Seeds per cell; fewer are shown as ``(n=k)``.
        search_space: Searched config keys (the search table's columns).
        objective: The search metric.
        targets: Targets of the transfer tables; empty: the protocol's standard targets.
    """

    datasets: tuple[str, ...]
    published: pd.DataFrame | None
    expected_seeds: int
    search_space: tuple[str, ...]
    objective: str
    targets: tuple[str, ...]


TableBuilder = Callable[[RunsTable, Protocol, TableContext], list[RenderedTable]]


def _base2new(ledger: RunsTable, protocol: Protocol, ctx: TableContext) -> list[RenderedTable]:
    runs = ledger.runs
    if not runs["metric"].isin(protocol.set_metrics).any():
        return []
    by = ablation.ablation_params(runs, ledger.params)
    if by:
        summary = ablation.ablation_summary(attach_params(runs, ledger.params, by), by, datasets=ctx.datasets)
        return [RenderedTable(ablation.KIND, summary, ablation.layout_ablation(summary, by))]
    summary = base2new.base2new_summary(runs, datasets=ctx.datasets)
    latex = None
    if ctx.published is not None:
        summary = add_published(summary, ctx.published, datasets=ctx.datasets)
        latex = base2new.layout_base2new(summary, expected_seeds=ctx.expected_seeds, published_rows=True)
        if latex.subrules:
            latex.title += "; published numbers in the lower rows of each block"
    return [
        RenderedTable(
            protocol.table,
            summary,
            base2new.layout_base2new(summary, expected_seeds=ctx.expected_seeds),
            latex,
        )
    ]


def _transfer(ledger: RunsTable, protocol: Protocol, ctx: TableContext) -> list[RenderedTable]:
    summary = transfer.transfer_summary(
        ledger.runs, protocol=protocol.name, targets=ctx.targets or protocol.default_targets
    )
    layout = transfer.layout_transfer(
        summary, title=transfer.TITLES[protocol.table], expected_seeds=ctx.expected_seeds
    )
    return [RenderedTable(protocol.table, summary, layout)]


def _few_shot(ledger: RunsTable, protocol: Protocol, ctx: TableContext) -> list[RenderedTable]:
    summary = few_shot.few_shot_summary(ledger.runs, datasets=ctx.datasets)
    return [
        RenderedTable(
            protocol.table, summary, few_shot.layout_few_shot(summary, expected_seeds=ctx.expected_seeds)
        )
    ]


def _search(ledger: RunsTable, protocol: Protocol, ctx: TableContext) -> list[RenderedTable]:
    space = list(ctx.search_space) or search.varying_params(ledger.params)
    with_params = attach_params(ledger.runs, ledger.params, space)
    summary = search.search_summary(with_params, space, objective=ctx.objective)
    return [
        RenderedTable(protocol.table, summary, search.layout_search(summary, space, objective=ctx.objective))
    ]


TABLE_KINDS: dict[str, TableBuilder] = {
    base2new.KIND: _base2new,
    **dict.fromkeys(transfer.KINDS, _transfer),
    few_shot.KIND: _few_shot,
    search.KIND: _search,
}
"""Table kind (``Protocol.table``) → its builder."""


def build_tables(
    ledger: RunsTable,
    *,
    protocol: str | None = None,
    datasets: Sequence[str] | None = None,
    published: pd.DataFrame | None = None,
    expected_seeds: int = 3,
    search_space: Sequence[str] = (),
    objective: str = search.OBJECTIVE,
    targets: Sequence[str] = (),
    name: str | None = None,
) -> list[RenderedTable]:
    """The tables an experiment's runs support, by protocol (in the registry's order).

    Args:
        ledger: The runs.
        protocol: The sweep's protocol (a ``prometar.protocols`` tag or name); by default every
            protocol found in the runs.
        datasets: Datasets of the Average rows (the sweep's grid); default: the paper's 11.
        published: Published base-to-new numbers to compare against (None: no comparison).
        expected_seeds: Seeds per cell; fewer are shown as ``(n=k)``.
        search_space: Searched config keys; with them (or runs of the search protocol) a search
            table is added, ranked on ``objective``.
        objective: The search metric.
        targets: Targets of the transfer tables (the sweep's ``eval.targets``); default: the
            protocol's standard targets.
        name: The sweep (or experiment) name: each table's LaTeX label is ``tab:<name>-<table>``.

    Every caption ends with the seeds, shots and backbone of the runs (:func:`caption_context`).

    Raises:
        ResultsError: No runs, no table applies to them, or base-to-new runs share a cell without a
            config param telling them apart.
    """
    runs = ledger.runs
    label_name = name
    if runs.empty:
        raise ResultsError("no FINISHED runs to tabulate")
    recorded = set(runs["protocol"])
    present = {found.name for found in map(protocols.lookup, recorded) if found is not None}
    if protocol is None:
        wanted = present
    else:
        found = protocols.lookup(protocol)
        wanted = {found.name} if found is not None else set()
    chosen = wanted & present
    if search_space or search.PROTOCOL.name in present:
        chosen.add(search.PROTOCOL.name)
    ctx = TableContext(
        tuple(datasets) if datasets else base2new.BASE2NEW_DATASETS,
        published,
        expected_seeds,
        tuple(search_space),
        objective,
        tuple(targets),
    )
    tables: list[RenderedTable] = []
    for name in protocols.list_protocols():
        if name in chosen:
            entry = protocols.get_protocol(name)
            tables.extend(TABLE_KINDS[entry.table](ledger, entry, ctx))
    if not tables:
        raise ResultsError(f"no table applies to these runs (protocols: {', '.join(sorted(recorded))})")
    context = caption_context(ledger)
    for table in tables:
        for display in (table.display, table.latex_display):
            if display is not None:
                display.title = f"{display.title}; {context}"
                display.label = latex_label(label_name, table.name) if label_name else ""
    return tables


def caption_context(ledger: RunsTable) -> str:
    """What a caption states about the runs: their seeds, shots and backbone.

    Example: ``seeds 1, 2, 3; 16 shots; backbone ViT-B-16-quickgelu (openai)``. The backbone comes
    from the runs' ``backbone.name`` and ``backbone.pretrained`` params (a checkpoint path shows its
    file name) and is left out when the runs do not carry them (a runs CSV without those columns).
    """
    runs = ledger.runs
    seeds = sorted(int(s) for s in runs["seed"].unique())
    shots = sorted(int(k) for k in runs["shots"].unique())
    parts = [
        f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}",
        f"{', '.join(map(str, shots))} shot{'s' if shots != [1] else ''}",
    ]
    params = ledger.params
    if "backbone.name" in params.columns:
        backbones = []
        pairs = params[[c for c in ("backbone.name", "backbone.pretrained") if c in params.columns]]
        for values in pairs.drop_duplicates().itertuples(index=False):
            model, pretrained = str(values[0]), str(values[1]) if len(values) > 1 else ""
            if pretrained and pretrained not in ("None", "nan"):
                shown = Path(pretrained).name if ("/" in pretrained or "\\" in pretrained) else pretrained
                backbones.append(f"{model} ({shown})")
            else:
                backbones.append(model)
        parts.append("backbone " + ", ".join(dict.fromkeys(backbones)))
    return "; ".join(parts)


def latex_label(sweep: str, table: str) -> str:
    """``tab:<sweep>-<table>``, with characters LaTeX labels cannot hold replaced by ``-``."""
    safe = re.sub(r"[^A-Za-z0-9_.:-]", "-", f"{sweep}-{table}")
    return f"tab:{safe}"


def table_text(
    source: Source,
    fmt: Format = "markdown",
    *,
    published: Path | str | None = None,
    compare: bool = True,
    expected_seeds: int | None = None,
    variant: str = DEFAULT_VARIANT,
    methods: tuple[str, str] | None = None,
) -> str:
    """The tables of a resolved source (``results.source.load_source``) in one format: the ``table`` verb.

    Args:
        source: The runs, and the sweep's datasets and protocol when a sweep file was given.
        fmt: ``markdown``, ``latex`` or ``csv``.
        published: Published numbers to compare with (default: the shipped reference).
        compare: Add the published comparison to base-to-new tables.
        expected_seeds: Seeds per cell; default: the sweep's seed count, else 3 (the paper's).
        variant: The published reference's variant (``results.published.VARIANTS``).
        methods: (A, B): add the paired comparison B − A (``results.comparison``); with CSV,
            only the comparison is written.
    """
    sweep = source.sweep
    if expected_seeds is None:
        expected_seeds = sweep.seeds if sweep else 3
    tables = build_tables(
        source.ledger,
        protocol=sweep.protocol if sweep else None,
        datasets=sweep.datasets if sweep and sweep.datasets else None,
        published=load_published(published, variant=variant) if compare else None,
        expected_seeds=expected_seeds,
        search_space=sweep.search_space if sweep else (),
        targets=sweep.targets if sweep else (),
        name=sweep.name if sweep else source.experiment or "runs",
    )
    if methods is not None:
        compared = comparison_table(source.ledger, *methods, datasets=sweep.datasets if sweep else None)
        tables = [compared] if fmt == "csv" else [*tables, compared]
    return render_tables(tables, fmt)


def comparison_table(
    ledger: RunsTable, method_a: str, method_b: str, *, datasets: Sequence[str] | None = None
) -> RenderedTable:
    """The paired comparison B − A of two methods' base-to-new runs as a table."""
    summary = comparison.compare_summary(ledger.runs, method_a, method_b, datasets=datasets)
    return RenderedTable(comparison.KIND, summary, comparison.layout_comparison(summary))


def write_tables(tables: Sequence[RenderedTable], folder: Path | str) -> dict[str, Path]:
    """Write each table in every format: ``<folder>/<table>.{md,tex,csv}``.

    Returns:
        ``{"<table>.<ext>": path}`` of the files written.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for table in tables:
        for fmt in FORMATS:
            path = folder / f"{table.name}.{EXTENSIONS[fmt]}"
            path.write_text(table.render(fmt))  # type: ignore[arg-type]
            written[path.name] = path
    return written
