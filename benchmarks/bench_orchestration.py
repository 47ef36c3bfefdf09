"""Benchmark: orchestration overhead — N tiny trials through ``prometar-sweep launch`` vs in process.

The same N trials (IVLP, ``tiny-test`` backbone with random weights, prompt depth 1, 2 epochs,
2 shots, base-to-new on the miniature EuroSAT from ``prometar.toy.miniature.write_miniatures``,
seeds 1..N) run twice:

- in process, back to back: ``prometar.run.run`` per trial, with the config resolved the way the
  trainable resolves it (``resolve_config("official", overrides)``); Python, torch and open_clip
  are imported before the clock starts;
- through the CLI: one ``prometar-sweep launch`` subprocess (a local Ray started for it, the
  SQLite MLflow ledger, one trial at a time: ``--max-concurrent 1``), timed from process start to
  exit — interpreter start, imports, Ray start and shutdown all count.

The launch runs twice, with 1 trial and with N (fresh output folders), which separates the fixed
cost of a launch (interpreter, imports, Ray start and stop, the ledger) from the cost per trial:
marginal launch time per trial = (T_launch(N) − T_launch(1)) / (N − 1); overhead per trial = that
minus the in-process time per trial (target ≤ 2 s); fixed cost = T_launch(1) − the marginal time.
The all-in figure (T_launch(N) − T_in_process(N)) / N is printed too.

Run: ``.venv/bin/python benchmarks/bench_orchestration.py [--trials 4]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import report
import yaml

OVERRIDES = {
    "backbone.name": "tiny-test",
    "backbone.pretrained": None,
    "backbone.precision": "fp32",
    "optim.epochs": 2,
    "data.batch_size": 2,
    "data.num_workers": 0,
    "prompts.text_depth": 1,
    "prompts.vision_depth": 1,
}
DATASET, METHOD, SHOTS = "eurosat", "ivlp", 2
TARGET_S = 2.0


def in_process(data_root: Path, output: Path, seeds: list[int]) -> float:
    """Wall time of the trials run back to back in this process."""
    from prometar.config import resolve_config
    from prometar.run import run

    start = time.perf_counter()
    for seed in seeds:
        config = resolve_config(
            "official",
            {**OVERRIDES, "method": METHOD, "data.dataset": DATASET, "seed": seed, "data.shots": SHOTS},
        )
        run(config, data_root=data_root, output_dir=output / f"seed{seed}", device="cpu")
    return time.perf_counter() - start


def through_launch(data_root: Path, output: Path, seeds: list[int]) -> float:
    """Wall time of one ``prometar-sweep launch`` process running the same trials."""
    sweep = output / "bench_orchestration.yaml"  # a fresh output folder: a fresh ledger, nothing skipped
    output.mkdir(parents=True, exist_ok=True)
    sweep.write_text(
        yaml.safe_dump(
            {
                "name": "bench_orchestration",
                "protocol": "base2new",
                "overrides": OVERRIDES,
                "grid": {"method": [METHOD], "dataset": [DATASET], "seed": seeds, "shots": [SHOTS]},
                "resources": {"default": {"cpu": 1}},
                "max_failures": 0,
            },
            sort_keys=False,
        )
    )
    command = [
        str(Path(sys.executable).parent / "prometar-sweep"),
        "launch",
        str(sweep),
        "--data-root",
        str(data_root),
        "--output",
        str(output / "launch"),
        "--max-concurrent",
        "1",
    ]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"prometar-sweep launch failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8, help="trials N (seeds 1..N)")
    args = parser.parse_args(argv)
    import torch  # noqa: F401  (imports are not what is measured in process)

    from prometar.toy.miniature import write_miniatures

    if args.trials < 2:
        parser.error("--trials must be at least 2 (the launch is also timed with 1 trial)")
    seeds = list(range(1, args.trials + 1))
    with tempfile.TemporaryDirectory() as folder:
        data_root = Path(folder) / "data"
        write_miniatures(data_root, [DATASET])
        direct = in_process(data_root, Path(folder) / "direct", seeds)
        launched_one = through_launch(data_root, Path(folder) / "sweep_1", seeds[:1])
        launched = through_launch(data_root, Path(folder) / f"sweep_{args.trials}", seeds)
    n = args.trials
    marginal = (launched - launched_one) / (n - 1)
    overhead = marginal - direct / n
    fixed = launched_one - marginal
    rows = [
        (
            f"in process: prometar.run.run × {n}, back to back",
            f"{direct:.1f} s",
            f"{direct / n:.2f} s",
            "1.00×",
        ),
        ("prometar-sweep launch, 1 trial", f"{launched_one:.1f} s", "", ""),
        (
            f"prometar-sweep launch, {n} trials",
            f"{launched:.1f} s",
            f"{launched / n:.2f} s",
            f"{launched / direct:.2f}×",
        ),
        ("launch: marginal time per trial", "", f"{marginal:.2f} s", f"{marginal / (direct / n):.2f}×"),
        (
            "**overhead per trial** (marginal − in process)",
            "",
            f"{overhead:.2f} s",
            f"target ≤ {TARGET_S:g} s: {'met' if overhead <= TARGET_S else 'NOT met'}",
        ),
        ("fixed cost of a launch (start, Ray, ledger, stop)", f"{fixed:.1f} s", "", ""),
        (f"all-in overhead per trial at N = {n}", "", f"{(launched - direct) / n:.2f} s", ""),
    ]
    report.print_block(
        "Orchestration overhead",
        f"{args.trials} trials: {METHOD}, tiny-test backbone, depth 1, 2 epochs, {SHOTS} shots, miniature "
        f"{DATASET}, base2new, CPU; launch with --max-concurrent 1",
        ("path", "wall time", "per trial", "ratio"),
        rows,
        [
            "wall clock: on a shared machine the launch (several Ray processes) suffers more from other "
            "load than the single in-process loop; read it with the load average"
        ],
    )


if __name__ == "__main__":
    main()
