"""The tables a launch writes when its sweep ends, and logs on its parent run.

The runs read are the ones the launch's plan plans (the experiment may also hold runs of other
configurations); the files go to ``<output>/tables/<sweep>/<table>.{md,tex,csv}`` and under the
artifact path ``tables`` of the launch's parent run, as ``table SWEEP`` would render them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from orchestration.ledger.runs import PlannedRuns, read_experiment
from orchestration.ledger.store import TrialLedger
from orchestration.ledger.vocabulary import TABLES_ARTIFACT_PATH
from orchestration.results.published import load_published
from orchestration.results.tables import build_tables, write_tables


def write_experiment_tables(
    experiment: str,
    tracking_uri: str,
    output_dir: Path | str,
    *,
    datasets: Sequence[str] | None = None,
    protocol: str | None = None,
    search_space: Sequence[str] = (),
    published: Path | str | None = None,
    expected_seeds: int = 3,
    parent_run_id: str | None = None,
    planned: PlannedRuns | None = None,
    targets: Sequence[str] = (),
) -> dict[str, Path]:
    """Write an experiment's tables in every format and log them on the launch's parent run.

    Args:
        experiment: The experiment (the sweep's name).
        tracking_uri: Its tracking URI.
        output_dir: The folder of the files, ``<table>.{md,tex,csv}`` for each table the runs support.
        datasets, protocol, search_space, expected_seeds, targets: As ``results.tables.build_tables``.
        published: Published numbers to compare with (default: the shipped reference).
        parent_run_id: The launch's parent run: the files are logged under its ``tables`` artifacts.
        planned: Only these runs (``ledger.runs.planned_runs``), as ``table SWEEP`` reads them.

    Returns:
        ``{"<table>.<ext>": path}`` of the files written.

    Raises:
        ResultsError: No runs, or no table applies to them.
    """
    ledger = read_experiment(experiment, tracking_uri, planned=planned)
    tables = build_tables(
        ledger,
        protocol=protocol,
        datasets=datasets,
        published=load_published(published),
        expected_seeds=expected_seeds,
        search_space=search_space,
        targets=targets,
        name=experiment,
    )
    written = write_tables(tables, output_dir)
    if parent_run_id is not None:
        TrialLedger(tracking_uri, experiment).log_files(parent_run_id, written.values(), TABLES_ARTIFACT_PATH)
    return written
