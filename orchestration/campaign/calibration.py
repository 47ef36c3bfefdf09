"""Calibration: measured seconds per training epoch, by (method, dataset, backbone), and their basis.

Two sources, in this order, and nothing else — a trial no measurement covers has an unknown cost:

- the ledger: the ``epoch_seconds`` metric FINISHED runs of the campaign's sweeps recorded (the
  last epoch's value; the median over runs of one (method, dataset, backbone));
- a benchmark CSV (``--calibration FILE``; columns ``method,dataset,backbone,epoch_seconds,source``),
  e.g. figures measured with ``benchmarks/gpu_check.sh`` on the cluster's GPUs (``docs/benchmarks.md``).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from orchestration.errors import ResultsError

EPOCH_SECONDS = "epoch_seconds"
"""The per-epoch wall time a run records (seconds)."""
CALIBRATION_COLUMNS: tuple[str, ...] = ("method", "dataset", "backbone", "epoch_seconds", "source")
LEDGER_BASIS = "ledger"

CalibrationKey = tuple[str, str, str]
"""(method, dataset, backbone name)."""


@dataclass(frozen=True)
class EpochTime:
    """Seconds per epoch and where the figure comes from (``ledger`` or the benchmark's source)."""

    seconds: float
    basis: str


@dataclass(frozen=True)
class Calibration:
    """Measured epoch times; :meth:`lookup` gives None where nothing was measured."""

    ledger: Mapping[CalibrationKey, float] = field(default_factory=dict)
    benchmark: Mapping[CalibrationKey, EpochTime] = field(default_factory=dict)
    benchmark_file: str = ""

    def lookup(self, method: str, dataset: str, backbone: str) -> EpochTime | None:
        key = (method, dataset, backbone)
        if key in self.ledger:
            return EpochTime(self.ledger[key], LEDGER_BASIS)
        return self.benchmark.get(key)


def ledger_epoch_times(runs: Iterable[object]) -> dict[CalibrationKey, float]:
    """Median last-epoch ``epoch_seconds`` per (method, dataset, backbone) of MLflow runs that have it."""
    from orchestration.ledger.vocabulary import DATASET_TAG, METHOD_TAG

    found: dict[CalibrationKey, list[float]] = defaultdict(list)
    for run in runs:
        metrics = run.data.metrics  # type: ignore[attr-defined]
        if EPOCH_SECONDS not in metrics:
            continue
        tags, params = run.data.tags, run.data.params  # type: ignore[attr-defined]
        key = (tags.get(METHOD_TAG, ""), tags.get(DATASET_TAG, ""), params.get("backbone.name", ""))
        found[key].append(float(metrics[EPOCH_SECONDS]))
    return {key: statistics.median(values) for key, values in found.items()}


def read_benchmark_csv(path: Path | str) -> dict[CalibrationKey, EpochTime]:
    """A benchmark calibration CSV → epoch times, each with its row's source.

    Raises:
        ResultsError: The file cannot be read, a column is missing, a time is not a positive number
            or a source is empty; the message names the file and the row.
    """
    from orchestration.ledger.runs import read_csv_file

    path = Path(path)
    table = read_csv_file(path, "calibration", dtype=str, keep_default_na=False)
    missing = [c for c in CALIBRATION_COLUMNS if c not in table.columns]
    if missing:
        raise ResultsError(f"{path}: missing column(s) {', '.join(missing)}")
    found: dict[CalibrationKey, EpochTime] = {}
    for i, row in enumerate(table.to_dict("records"), start=2):
        try:
            seconds = float(row["epoch_seconds"])
        except ValueError:
            seconds = float("nan")
        if not seconds > 0 or seconds == float("inf"):
            raise ResultsError(f"{path}: row {i}: epoch_seconds must be a positive number")
        if not row["source"].strip():
            raise ResultsError(f"{path}: row {i}: source is empty (say where the figure was measured)")
        found[(row["method"], row["dataset"], row["backbone"])] = EpochTime(
            seconds, f"benchmark {path.name}: {row['source'].strip()}"
        )
    return found
