"""Benchmark: read 1,000 FINISHED child runs from a SQLite MLflow store and render the tables.

Creates a throwaway store in a temporary folder (runs written with one batch call each), then times
reading the runs into the tidy table and rendering the base-to-new table in every format. Prints a
small table of figures; the target is under 10 s for reading and rendering together. The store
lives in ``/dev/shm`` where available, so that setup is quick.

Run: ``.venv/bin/python benchmarks/bench_tables.py [--runs 1000]``.
"""

from __future__ import annotations

import argparse
import logging
import random
import tempfile
import time
from pathlib import Path

from orchestration.ledger.runs import read_experiment
from orchestration.results.base2new import BASE2NEW_DATASETS
from orchestration.results.context import ResultsContext
from orchestration.results.tables import build_tables

METHODS = ("clip", "coop", "cocoop", "kgcoop", "maple", "promptsrc", "prometar")
TARGET_S = 10.0


def populate(uri: str, n_runs: int) -> None:
    """Write ``n_runs`` finished base-to-new child runs (plus a parent) with tags, params and metrics."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    client = MlflowClient(uri)
    experiment_id = client.create_experiment("bench")
    parent = client.create_run(experiment_id, tags={"prometar.role": "launch"}).info.run_id
    rng = random.Random(0)
    for i in range(n_runs):
        method = METHODS[i % len(METHODS)]
        dataset = BASE2NEW_DATASETS[(i // len(METHODS)) % len(BASE2NEW_DATASETS)]
        seed = i // (len(METHODS) * len(BASE2NEW_DATASETS)) + 1
        tags = {
            "prometar.trial_key": f"k{i}",
            "method": method,
            "dataset": dataset,
            "seed": str(seed),
            "shots": "16",
            "protocol": "base2new",
            "sweep": "bench",
            "mlflow.parentRunId": parent,
        }
        run = client.create_run(experiment_id, tags=tags).info.run_id
        base, new = rng.uniform(60, 95), rng.uniform(50, 90)
        metrics = [
            Metric("base_acc", base, 0, 0),
            Metric("new_acc", new, 0, 0),
            Metric("hm", 2 * base * new / (base + new), 0, 0),
        ]
        metrics += [Metric("loss", 1.0 / (epoch + 1), 0, epoch) for epoch in range(5)]
        params = [Param(f"group.key{j}", str(j)) for j in range(20)]
        client.log_batch(run, metrics=metrics, params=params)
        client.set_terminated(run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000, help="number of child runs")
    args = parser.parse_args()
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    shm = Path("/dev/shm")  # memory-backed when available: setup time is not what is measured
    with tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else None) as folder:
        uri = f"sqlite:///{Path(folder) / 'mlflow.db'}"
        start = time.perf_counter()
        populate(uri, args.runs)
        write_s = time.perf_counter() - start

        start = time.perf_counter()
        ledger = read_experiment("bench", uri)
        read_s = time.perf_counter() - start

        start = time.perf_counter()
        context = ResultsContext.from_experiment("bench", uri).with_published()
        tables = build_tables(ledger, context)
        sizes = {fmt: sum(len(t.render(fmt)) for t in tables) for fmt in ("markdown", "latex", "csv")}
        render_s = time.perf_counter() - start

    total = read_s + render_s
    rows = [
        ("runs written (setup, not timed)", f"{ledger.runs['run_id'].nunique()}", f"{write_s:.2f} s"),
        ("read runs -> tidy table", f"{len(ledger.runs)} rows", f"{read_s:.2f} s"),
        ("base-to-new table, 3 formats", f"{sum(sizes.values())} chars", f"{render_s:.2f} s"),
        ("read + render", f"target < {TARGET_S:g} s", f"{total:.2f} s"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'step':<{width}}  {'size':>18}  {'time':>9}")
    for step, size, seconds in rows:
        print(f"{step:<{width}}  {size:>18}  {seconds:>9}")
    print("PASS" if total < TARGET_S else "SLOW")


if __name__ == "__main__":
    main()
