"""Checks before a launch writes anything: what a bad input would otherwise break mid-sweep.

Every check raises :class:`~orchestration.errors.LaunchError` naming the path or option, before
any run, trial or file exists.
"""

from __future__ import annotations

from pathlib import Path

from orchestration.errors import LaunchError
from orchestration.sweeps.planning import SweepPlan


def check_data_root(plan: SweepPlan, data_root: Path) -> None:
    """Every dataset the trials read (sources and evaluation targets) is present under ``data_root``."""
    from prometar.data.catalog import get_dataset

    root = Path(data_root)
    if not root.is_dir():
        raise LaunchError(f"data root {root} does not exist (--data-root)")
    needed = sorted({t.dataset for t in plan.trials} | set(plan.targets))
    for key in needed:
        folder = root / get_dataset(key).folder
        if not folder.is_dir():
            raise LaunchError(
                f"{plan.spec.source}: dataset {key!r} not found: {folder} does not exist (--data-root)"
            )
