"""What the results wing knows besides the runs: one frozen :class:`ResultsContext`.

Every table, figure and report is a function of two things: the runs (``ledger.runs.RunsTable``)
and this context — the sweep's name, protocol, grid datasets, seeds per cell, search space,
evaluation targets, the runs it plans, the published numbers to compare with, and where the runs
were read. A context is built once, from a sweep's plan (:meth:`ResultsContext.from_plan`), from an
experiment name (:meth:`ResultsContext.from_experiment`) or for a runs CSV
(:meth:`ResultsContext.for_csv`), and passed on unchanged; defaults (the paper's three seeds, its
eleven datasets, the search objective) are written here and nowhere else.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestration.ledger.runs import PlannedRuns, planned_runs
from orchestration.results.labels import dataset_label, order_datasets
from prometar import protocols
from prometar.data import catalog

if TYPE_CHECKING:
    import pandas as pd

    from orchestration.sweeps.planning import SweepPlan

DEFAULT_SEEDS = 3
"""Seeds per cell when no sweep file says otherwise (the paper's)."""
PAPER_DATASETS: tuple[str, ...] = catalog.BASE_TO_NEW_DATASETS
"""The datasets of the Average rows when no sweep file names its grid (the paper's eleven)."""
SEARCH_OBJECTIVE: str = protocols.for_table("search").combined or ""
"""The metric a search ranks its samples on."""


@dataclass(frozen=True, eq=False)
class ResultsContext:
    """The facts about a sweep (or experiment, or CSV) every result kind reads.

    Attributes:
        name: The sweep's (or experiment's) name; LaTeX labels are ``tab:<name>-<table>``.
        protocol: The sweep's protocol tag or name; None: every protocol found in the runs.
        datasets: The grid's datasets, in grid order (the Average rows); empty: the paper's eleven.
        expected_seeds: Seeds per cell the sweep plans (fewer are marked ``n=k``).
        search_space: Dotted keys of the searched hyper-parameters (empty without a search).
        objective: The search metric.
        targets: Evaluation targets of the transfer tables; empty: the protocol's standard ones.
        published: Published base-to-new numbers to compare with, or None.
        planned: The runs the sweep plans (trial keys, or search-group keys); None: every run.
        sweep_file: The sweep file, as given ("" without one).
        overrides: The ``--set`` overrides it was planned with.
        trials: Trials the sweep plans (None without a sweep file).
        tracking_uri: The MLflow ledger read (None: a runs CSV).
        experiment: The MLflow experiment read (None: a runs CSV).
        comparisons: (A, B) method pairs whose paired comparison B − A is added to the tables
            (``results.comparison``); None: ProMetaR against every other method that ran.
        datasets_from: Where ``datasets`` came from when no sweep file gave the grid ("the runs
            CSV", "experiment NAME": :meth:`with_datasets_of`), else None; the tables then say
            what the Average covers.
    """

    name: str = "runs"
    protocol: str | None = None
    datasets: tuple[str, ...] = ()
    expected_seeds: int = DEFAULT_SEEDS
    search_space: tuple[str, ...] = ()
    objective: str = SEARCH_OBJECTIVE
    targets: tuple[str, ...] = ()
    published: pd.DataFrame | None = None
    planned: PlannedRuns | None = None
    sweep_file: str = ""
    overrides: tuple[tuple[str, Any], ...] = ()
    trials: int | None = None
    tracking_uri: str | None = None
    experiment: str | None = None
    comparisons: tuple[tuple[str, str], ...] | None = ()
    datasets_from: str | None = None

    @classmethod
    def from_plan(
        cls,
        plan: SweepPlan,
        *,
        overrides: Mapping[str, Any] | None = None,
        tracking_uri: str | None = None,
    ) -> ResultsContext:
        """The context of a planned sweep (its runs read from ``tracking_uri`` when given)."""
        spec = plan.spec
        return cls(
            name=plan.name,
            protocol=plan.protocol,
            datasets=plan.datasets,
            expected_seeds=plan.seeds,
            search_space=tuple(spec.search.space) if spec.search is not None else (),
            targets=plan.targets,
            planned=planned_runs(plan),
            sweep_file=spec.source,
            overrides=tuple((overrides or {}).items()),
            trials=plan.total,
            tracking_uri=tracking_uri,
            experiment=plan.name if tracking_uri is not None else None,
        )

    @classmethod
    def from_experiment(cls, experiment: str, tracking_uri: str) -> ResultsContext:
        """An experiment read without a sweep file: every FINISHED run, every protocol found."""
        return cls(name=experiment, tracking_uri=tracking_uri, experiment=experiment)

    def for_csv(self, runs: pd.DataFrame | None = None) -> ResultsContext:
        """The same facts for runs read from a CSV (no ledger, no restriction to planned runs);
        without a sweep's grid, the Average rows span the CSV's datasets (:meth:`with_datasets_of`)."""
        chosen = replace(self, planned=None, tracking_uri=None, experiment=None)
        return chosen.with_datasets_of(runs, "the runs CSV")

    def with_datasets_of(self, runs: pd.DataFrame | None, where: str) -> ResultsContext:
        """Without a sweep's grid (``datasets`` empty), the Average rows taken over the datasets the
        ``runs`` hold (in the paper's order) — a partial CSV or experiment would otherwise leave the
        paper's eleven-dataset Average empty —, and :attr:`average_note` saying so; ``where`` names
        the runs ("the runs CSV", "experiment NAME"). With a grid, or no runs: unchanged."""
        if self.datasets or runs is None or runs.empty:
            return self
        present = order_datasets(str(d) for d in runs["dataset"].dropna().unique())
        return replace(self, datasets=tuple(present), datasets_from=where)

    @property
    def average_note(self) -> str | None:
        """What the Average rows cover when no sweep gave the grid (a runs CSV, an experiment), or None."""
        if self.datasets_from is None:
            return None
        count = len(self.datasets)
        note = (
            f"Average: over the {count} dataset{'s' if count != 1 else ''} of {self.datasets_from} "
            f"({', '.join(dataset_label(d) for d in self.datasets)}; no sweep file gives the grid)"
        )
        if self.published is not None and set(self.datasets) != set(PAPER_DATASETS):
            note += (
                f"; the paper's Average (over its {len(PAPER_DATASETS)}) is not compared with it, only "
                "the paper's numbers averaged over the same datasets"
            )
        return note

    def with_published(
        self, path: Path | str | None = None, *, compare: bool = True, variant: str | None = None
    ) -> ResultsContext:
        """The same context comparing with the published numbers at ``path`` (default: the shipped
        ones; ``variant``: which of its variants, default ``published.DEFAULT_VARIANT``), or with
        none when ``compare`` is false."""
        from orchestration.results.published import DEFAULT_VARIANT, load_published

        chosen = variant or DEFAULT_VARIANT
        return replace(self, published=load_published(path, variant=chosen) if compare else None)

    @property
    def grid(self) -> tuple[str, ...]:
        """The datasets of the Average rows: the sweep's, else the paper's eleven."""
        return self.datasets or PAPER_DATASETS

    @property
    def from_sweep(self) -> bool:
        """Whether a sweep file gave these facts."""
        return bool(self.sweep_file)

    def planned_by(self) -> str:
        """The sweep file and its ``--set`` overrides, as a command line would give them."""
        shown = " ".join(
            f"--set {key}={value if isinstance(value, str) else json.dumps(value)}"
            for key, value in self.overrides
        )
        return f"{self.sweep_file} {shown}" if shown else self.sweep_file
