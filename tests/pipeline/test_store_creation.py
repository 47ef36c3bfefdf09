"""A fresh SQLite store created by several launches at once: one schema, no failed launch.

Two different sweeps launched at the same moment into one new output folder used to race on
MLflow's schema creation; the second failed with "tracking URI … is unreachable". Four processes
now open the same fresh store at once (a barrier lines them up) and all of them can use it.
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path


def _open_store(uri: str, experiment: str, barrier, results) -> None:
    from orchestration.ledger.store import TrialLedger

    ledger = TrialLedger(uri, experiment)
    barrier.wait()
    try:
        ledger.check_reachable()
        results.put((experiment, ledger.experiment_id(create=True) is not None))
    except Exception as error:  # reported to the test, not raised in the child
        results.put((experiment, f"{type(error).__name__}: {error}"))


def test_launches_creating_one_fresh_store_at_once_all_succeed(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(4), context.Queue()
    workers = [
        context.Process(target=_open_store, args=(uri, f"sweep{i}", barrier, results)) for i in range(4)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=300)  # fails fast instead of hanging (generous guard)
    outcomes = dict(results.get(timeout=10) for _ in workers)
    assert outcomes == {f"sweep{i}": True for i in range(4)}, outcomes
    from mlflow import MlflowClient

    names = {e.name for e in MlflowClient(uri).search_experiments()}
    assert {f"sweep{i}" for i in range(4)} <= names
