"""The embedded demo (``prometar-sweep demo``): the toy world end to end through the real orchestration.

Three steps, each a call into the code a real sweep uses:

1. :func:`prometar.toy.build.build_toy` builds (or reuses) the toy world, its datasets and the toy
   CLIP under ``<output>/toy/``;
2. :func:`orchestration.launch.runner.launch` runs the demo sweep (``sweeps/demo.yaml``) on a local Ray
   with the MLflow ledger at ``<output>/mlflow.db`` — the toy data root as the launch's data root,
   the toy checkpoint as a ``backbone.pretrained`` override — so a second demo finds every trial
   FINISHED and starts none;
3. :func:`orchestration.results.publish.publish` of the runs this sweep plans, without the
   published comparison (toy numbers are not the paper's): the base / new / HM table, and beside
   it the toy datasets' chance and single-attribute (colour-only, shape-only) baselines from the
   toy build; the figures under ``<output>/plots/`` (PNG, PDF, SVG); the report (tables, figures,
   trial counts, provenance) at ``<output>/reports/demo/report.html``, logged on the launch's
   parent run.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import IO, Any

from orchestration import layout
from orchestration.launch.runner import LaunchOptions, LaunchReport, launch
from orchestration.layout import DEFAULT_OUTPUT, default_tracking_uri
from orchestration.ledger.runs import read_experiment
from orchestration.results.context import ResultsContext
from orchestration.results.display import Cell, DisplayTable
from orchestration.results.labels import AVERAGE, dataset_label, order_datasets
from orchestration.results.publish import publish
from orchestration.results.render import to_markdown

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
    # the same cells (an earlier toy build's checkpoint, an edited demo sweep). Toy numbers are not
    # the paper's: no published comparison.
    context = ResultsContext.from_plan(plan, overrides=overrides, tracking_uri=uri)
    runs = read_experiment(plan.name, uri, planned=context.planned)
    if runs.runs.empty:
        print(f"[demo] no FINISHED trial to tabulate in {uri}", file=out)
    else:
        baselines = baseline_table(build.results["datasets"], order_datasets(plan.datasets))
        done = publish(
            context,
            runs,
            tables_dir=layout.tables_folder(output, plan.name),
            plots_dir=layout.plots_folder(output),
            report_dir=layout.reports_folder(output, plan.name),
            log_to=report.launch.parent_run_id,
            log_latest=True,
            extra_tables=[baselines],
            strict=False,
        )
        report.tables = done.tables_files
        report.plots = done.plot_files
        for table in done.tables:
            print(f"\n{table.render('markdown')}", file=out)
        print(to_markdown(baselines), file=out)
        for note in done.notes:
            print(f"[demo] {note}", file=out)
        print(
            "plots: " + ", ".join(str(p) for p in report.plots if p.suffix == ".png") + " (and PDF, SVG)",
            file=out,
        )
        report.report = done.report_html
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
