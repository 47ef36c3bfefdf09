"""The embedded demo (``prometar-sweep demo``): the toy world end to end through the real orchestration.

Four steps, each a call into the code a real sweep uses:

1. :func:`prometar.toy.build.build_toy` builds (or reuses) the toy world, its datasets and the toy
   CLIP under ``<output>/toy/``;
2. :func:`orchestration.launch.runner.launch` runs the demo sweep (``sweeps/demo.yaml``) on a local Ray
   with the MLflow ledger at ``<output>/mlflow.db`` — the toy data root as the launch's data root,
   the toy checkpoint as a ``backbone.pretrained`` override — so a second demo finds every trial
   FINISHED and starts none;
3. the base / new / HM table (``orchestration.results.tables``) of the runs this sweep plans, with
   95% intervals and without the published comparison (toy numbers are not the paper's), the
   paired comparisons ProMetaR − IVLP and ProMetaR − zero-shot (``orchestration.results.comparison``),
   and the toy datasets' chance and single-attribute (colour-only, shape-only) baselines from the
   toy build;
4. the figures (``orchestration.results.figures``) under ``<output>/plots/`` (PNG, PDF, SVG), and
   the report (``orchestration.results.report``: tables, figures, trial counts, provenance) at
   ``<output>/reports/demo/report.html``, logged on the launch's parent run.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import IO, Any

from orchestration import layout
from orchestration.launch.runner import LaunchOptions, LaunchReport, launch
from orchestration.layout import DEFAULT_OUTPUT, default_tracking_uri
from orchestration.ledger.runs import RunsTable, planned_runs, read_experiment
from orchestration.results.base2new import PROTOCOL as BASE2NEW
from orchestration.results.display import Cell, DisplayTable
from orchestration.results.figures import NamedFigure, save_figure
from orchestration.results.labels import AVERAGE, dataset_label, order_datasets
from orchestration.results.render import RenderedTable, to_markdown
from orchestration.results.source import Source, summarize_plan
from orchestration.results.tables import build_tables, comparison_table, write_tables
from orchestration.sweeps.planning import SweepPlan

DEMO_SWEEP_FILE = "demo.yaml"


def demo_sweep_path() -> Path:
    """The demo sweep file: ``sweeps/demo.yaml`` of the source checkout.

    ``orchestration/resources/sweeps`` is a link to the checkout's ``sweeps/`` folder, so a source
    checkout and an installed package (whose package data follows the link) read the same file.
    """
    return Path(str(resources.files("orchestration") / "resources" / "sweeps" / DEMO_SWEEP_FILE))


@dataclass
class DemoReport:
    """What a demo did.

    Attributes:
        toy_reused: True if the toy build was taken from the cache.
        launch: The launch's report (trials run, skipped, failed).
        tables: Paths of the written tables (``<output>/tables/<sweep>/``).
        plots: Paths of the written figures (``<output>/plots/``: PNG, PDF, SVG of each).
        report: The report page (``<output>/reports/<sweep>/report.html``), or None.
        seconds: Wall-clock time of the whole demo.
    """

    toy_reused: bool
    launch: LaunchReport
    tables: list[Path] = field(default_factory=list)
    plots: list[Path] = field(default_factory=list)
    report: Path | None = None
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        """0 when no trial failed, else 1 (as ``launch``)."""
        return self.launch.exit_code


def run_demo(
    output: Path | str = DEFAULT_OUTPUT,
    *,
    sweep: Path | str | None = None,
    toy_options: Mapping[str, Any] | None = None,
    max_concurrent: int | None = None,
    stream: IO[str] | None = None,
) -> DemoReport:
    """Build the toy world, run the demo sweep on it, print the table, write the figures and the report.

    Args:
        output: The output folder: ``toy/`` (the toy build), ``mlflow.db``, ``ray/``, ``trials/``,
            ``tables/``, ``plots/`` and ``reports/``.
        sweep: The sweep file; default :func:`demo_sweep_path`. Its datasets must be toy datasets.
        toy_options: Keyword arguments of :func:`prometar.toy.build.build_toy` (``seed``,
            ``steps``, reduced sizes and ``min_heldout_acc`` for tests); default: the standard toy build.
        max_concurrent: At most this many trials at once (default: as the resources allow).
        stream: Where progress, the table and the baselines go (stdout by default).

    Returns:
        The demo's report; ``exit_code`` 1 when a trial failed.

    Raises:
        SpecError, LaunchError, TrackingError, ConfigError: Bad sweep file or unusable output
            folder, as ``launch`` raises them (before any trial starts).
        ToyBuildError: The toy build failed its quality floor or time limit (no trial starts).
    """
    from prometar.toy.build import build_toy

    out = stream or sys.stdout
    started = time.perf_counter()
    output = Path(output).resolve()
    path = Path(sweep) if sweep is not None else demo_sweep_path()

    print(f"[demo] toy world and toy CLIP in {layout.toy_folder(output)} ...", file=out, flush=True)
    build = build_toy(layout.toy_folder(output), **dict(toy_options or {}))  # one torch thread by default
    print(_toy_line(build), file=out, flush=True)

    overrides = {"backbone.name": build.model_name, "backbone.pretrained": str(build.checkpoint)}
    options = LaunchOptions(
        data_root=build.data_root,
        output=output,
        overrides=overrides,
        max_concurrent=max_concurrent,
        tables=False,
        report=False,
    )
    report = DemoReport(toy_reused=build.reused, launch=launch(path, options, stream=out))

    plan = report.launch.plan
    assert plan is not None
    uri = default_tracking_uri(output)
    # Only the runs this sweep plans: the experiment may also hold runs of other configurations of
    # the same cells (an earlier toy build's checkpoint, an edited demo sweep).
    ledger = read_experiment(plan.name, uri, planned=planned_runs(plan))
    if ledger.runs.empty:
        print(f"[demo] no FINISHED trial to tabulate in {uri}", file=out)
    else:
        table = _base2new_table(ledger, plan)
        comparisons = _comparisons(ledger, plan)
        written = write_tables([table, *comparisons], layout.tables_folder(output, plan.name))
        report.tables = list(written.values())
        print(f"\n{table.render('markdown')}", file=out)
        for compared in comparisons:
            print(compared.render("markdown"), file=out)
        baselines = baseline_table(build.results["datasets"], order_datasets(plan.datasets))
        print(to_markdown(baselines), file=out)
        source = Source(ledger, summarize_plan(plan, overrides), uri, plan.name)
        figures = _figures(source)
        report.plots = [
            path for f in figures for path in save_figure(f.figure, layout.plots_folder(output) / f.name)
        ]
        print(
            "plots: " + ", ".join(str(p) for p in report.plots if p.suffix == ".png") + " (and PDF, SVG)",
            file=out,
        )
        report.report = _write_report(
            source, figures, baselines, layout.reports_folder(output, plan.name), report.launch.parent_run_id
        )
        print(f"report: {report.report}", file=out)
    report.seconds = time.perf_counter() - started
    print(
        f"[demo] done in {report.seconds:.0f}s · ledger {uri}"
        + (f" · open {report.report}" if report.report else ""),
        file=out,
    )
    return report


def _toy_line(build: Any) -> str:
    r = build.results
    how = "reused" if build.reused else f"built in {r['build_seconds']:.0f}s"
    return (
        f"[demo] toy CLIP {how}: {r['steps']} pretraining steps; zero-shot on held-out colour x shape "
        f"combinations {100 * r['heldout_acc']:.1f}% ({r['heldout_acc'] / r['chance']:.0f}x chance "
        f"{100 * r['chance']:.1f}%), seen {100 * r['seen_acc']:.1f}%; checkpoint sha256 "
        f"{r['checkpoint_sha256'][:12]}"
    )


def _base2new_table(ledger: RunsTable, plan: SweepPlan) -> RenderedTable:
    (table,) = build_tables(
        ledger, protocol=BASE2NEW.name, datasets=plan.datasets, published=None, expected_seeds=plan.seeds
    )
    return table


DEMO_COMPARISONS: tuple[tuple[str, str], ...] = (("ivlp", "prometar"), ("zeroshot", "prometar"))
"""The paired comparisons the demo prints (A, B: B − A), where the sweep ran both methods."""


def _comparisons(ledger: RunsTable, plan: SweepPlan) -> list[RenderedTable]:
    """ProMetaR against IVLP and against zero-shot CLIP, paired by seed (each file named by its pair)."""
    methods = set(ledger.runs["method"])
    tables = []
    for a, b in DEMO_COMPARISONS:
        if {a, b} <= methods:
            compared = comparison_table(ledger, a, b, datasets=plan.datasets)
            tables.append(replace(compared, name=f"compare_{b}_vs_{a}"))
    return tables


def _figures(source: Source) -> list[NamedFigure]:
    """The demo's figures: its sweep's, without the published numbers (toy numbers are not the paper's)."""
    from orchestration.results.plots import collect_figures

    sweep = source.sweep
    assert sweep is not None
    return collect_figures(
        source.ledger,
        tracking_uri=source.tracking_uri,
        protocol=sweep.protocol,
        datasets=sweep.datasets,
        published=None,
        expected_seeds=sweep.seeds,
    )


def _write_report(
    source: Source,
    figures: list[NamedFigure],
    baselines: DisplayTable,
    folder: Path,
    parent_run_id: str | None,
) -> Path:
    """The demo's report (its figures, the toy baselines after the table), logged on the launch's parent
    run (the latest launch's when this one had nothing to do)."""
    from orchestration.results.report import build_report, latest_launch, write_report

    built = build_report(source, compare=False, figures=figures, extra_tables=[baselines])
    return write_report(built, folder, log_to=parent_run_id or latest_launch(built)).html


def baseline_table(toy_datasets: Mapping[str, Mapping[str, Any]], keys: list[str]) -> DisplayTable:
    """Reference points of the toy datasets: chance and single-attribute oracles, base / new.

    Args:
        toy_datasets: ``build.results["datasets"]`` of a toy build.
        keys: The datasets to show (in this order); an Average row comes first when there are
            several.

    Returns:
        The table: style, whether the shift is systematic, chance, colour-only and shape-only
        accuracy (an oracle knowing one attribute, guessing among the classes that share it), each
        base / new, in percent.
    """
    metrics = (
        "chance_base",
        "chance_new",
        "colour_only_base",
        "colour_only_new",
        "shape_only_base",
        "shape_only_new",
    )
    header = [
        "Dataset",
        "Style",
        "Shift",
        "Chance base",
        "Chance new",
        "Colour-only base",
        "Colour-only new",
        "Shape-only base",
        "Shape-only new",
    ]
    table = DisplayTable("Toy datasets: chance and single-attribute baselines (%)", header, label_columns=3)
    if len(keys) > 1:
        means = [sum(100 * float(toy_datasets[k][m]) for k in keys) / len(keys) for m in metrics]
        table.rows.append(
            [Cell(text=dataset_label(AVERAGE)), Cell(text=""), Cell(text=""), *(Cell(value=v) for v in means)]
        )
    for key in keys:
        row = toy_datasets[key]
        table.rows.append(
            [
                Cell(text=dataset_label(key)),
                Cell(text=str(row["style"])),
                Cell(text="systematic" if row["systematic"] else "random"),
                *(Cell(value=100 * float(row[m])) for m in metrics),
            ]
        )
    table.notes = [
        "Colour-only: knows the colour, guesses among the classes of that colour "
        "(a checkerboard of a 4 x 4 colour x shape grid: 50%)."
    ]
    return table


__all__ = ["DemoReport", "baseline_table", "demo_sweep_path", "run_demo"]
