"""The tables an experiment's runs support, by the runs' protocols.

Each table is computed in two steps by its own module: a ``*_summary`` function turns the tidy
runs table into a numeric summary frame (seed means, sample standard deviations, seed counts,
harmonic means, the Average row) — what the CSV format writes —, and a ``layout_*`` function
turns the summary into a :class:`~orchestration.results.display.DisplayTable` that
``orchestration.results.render`` writes as Markdown or LaTeX. Which table a protocol's runs go
into is the protocol registry's word (``Protocol.table``); ``results.kinds.RESULT_KINDS`` maps each
kind to its builders. Base-to-new runs give the ablation table instead when several configurations share
a (method, dataset, shots, seed) cell.

Everything here is a pure function of the runs (``orchestration.ledger.runs``) and the sweep's
facts; writing files is :func:`write_tables`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from orchestration.errors import ResultsError
from orchestration.ledger.runs import RunsTable
from orchestration.results import comparison, search
from orchestration.results.context import ResultsContext
from orchestration.results.kinds import RESULT_KINDS
from orchestration.results.render import EXTENSIONS, FORMATS, Format, RenderedTable, render_tables
from orchestration.results.source import Source
from prometar import protocols
from prometar.files import write_atomic
from prometar.protocols import Protocol


def build_tables(ledger: RunsTable, context: ResultsContext | None = None) -> list[RenderedTable]:
    """The tables an experiment's runs support, by protocol (in the registry's order).

    Args:
        ledger: The runs.
        context: The sweep's facts (``results.context``): its protocol (default: every protocol
            found in the runs), the Average rows' datasets, the published numbers to compare with,
            the seeds per cell, the search space (with it, or runs of the search protocol, a search
            table is added, ranked on the objective), the transfer targets, and the name each
            table's LaTeX label carries (``tab:<name>-<table>``).

    Every caption ends with the seeds, shots and backbone of the runs (:func:`caption_context`).

    Raises:
        ResultsError: No runs, no table applies to them, or base-to-new runs share a cell without a
            config param telling them apart.
    """
    ctx = context or ResultsContext()
    runs = ledger.runs
    if runs.empty:
        raise ResultsError("no FINISHED runs to tabulate")
    recorded = set(runs["protocol"])
    tables: list[RenderedTable] = []
    for entry in chosen_protocols(recorded, ctx):
        tables.extend(RESULT_KINDS[entry.table].tables(ledger, entry, ctx))
    if not tables:
        raise ResultsError(f"no table applies to these runs (protocols: {', '.join(sorted(recorded))})")
    pairs = comparison.default_comparisons(runs) if ctx.comparisons is None else ctx.comparisons
    tables += [comparison_table(ledger, a, b, datasets=ctx.datasets or None) for a, b in pairs]
    context_line = caption_context(ledger)
    for table in tables:
        for display in (table.display, table.latex_display):
            if display is not None:
                display.title = f"{display.title}; {context_line}"
                display.label = latex_label(ctx.name, table.name)
    return tables


def chosen_protocols(recorded: set[str], ctx: ResultsContext) -> list[Protocol]:
    """The protocols whose results are shown, in the registry's order: the context's protocol (or
    every one found in the runs), and the search when a search space is given or searched."""
    present = {found.name for found in map(protocols.lookup, recorded) if found is not None}
    if ctx.protocol is None:
        wanted = present
    else:
        found = protocols.lookup(ctx.protocol)
        wanted = {found.name} if found is not None else set()
    chosen = wanted & present
    if ctx.search_space or search.PROTOCOL.name in present:
        chosen.add(search.PROTOCOL.name)
    return [protocols.get_protocol(name) for name in protocols.list_protocols() if name in chosen]


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


def table_text(source: Source, fmt: Format = "markdown") -> str:
    """The tables of a resolved source (``results.source.load_source``) in one format: the ``table`` verb.

    The source's context carries the published numbers to compare with, the seeds per cell and
    the paired comparisons to add; with CSV and comparisons, only the comparisons are written.
    """
    tables = build_tables(source.ledger, source.context)
    if fmt == "csv" and source.context.comparisons:
        tables = [t for t in tables if t.name.startswith(comparison.KIND)]
    return render_tables(tables, fmt)


def comparison_table(
    ledger: RunsTable, method_a: str, method_b: str, *, datasets: Sequence[str] | None = None
) -> RenderedTable:
    """The paired comparison B − A of two methods' base-to-new runs, as table ``compare_<B>_vs_<A>``."""
    summary = comparison.compare_summary(ledger.runs, method_a, method_b, datasets=datasets)
    name = f"{comparison.KIND}_{method_b}_vs_{method_a}"
    return RenderedTable(name, summary, comparison.layout_comparison(summary))


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
            text = table.render(fmt)  # type: ignore[arg-type]
            write_atomic(path, lambda handle, text=text: handle.write(text))
            written[path.name] = path
    return written
