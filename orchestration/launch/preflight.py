"""Checks before a launch writes anything: what a bad input would otherwise break mid-sweep.

Every check raises :class:`~orchestration.errors.LaunchError` naming the path or option, before
any run, trial or file exists.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import IO

from orchestration.errors import LaunchError, SpecError
from orchestration.sweeps.planning import SweepPlan

NAME_MAX = 255
"""Longest file or folder name most file systems take (bytes)."""


def check_output(output: Path) -> None:
    """The output folder can be made and written: every name fits, and its nearest existing
    folder is a folder this process may write into.

    Raises:
        LaunchError: A name too long for the file system, a file in the way, or no permission
            (names the path and the option).
    """
    for part in output.parts:
        if len(part.encode()) > NAME_MAX:
            raise LaunchError(
                f"output folder {str(output)[:120]}…: the name {part[:40]!r}… is "
                f"{len(part.encode())} bytes, more than a file system takes ({NAME_MAX}) (--output)"
            )
    existing = output
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise LaunchError(f"output folder {output}: {existing} is a file, not a folder (--output)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise LaunchError(
            f"output folder {output}: {existing} cannot be written (permission denied) (--output)"
        )


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


def check_inputs(plan: SweepPlan, data_root: Path | None, *, weights: bool = True) -> None:
    """Every trial's inputs, as a run would meet them (``prometar.preflight``), each distinct one once.

    The backbone name, its weights (a missing or unreadable checkpoint, one of another architecture,
    a hub tag not available offline; ``weights=False``: not loaded), prompt depths against the
    backbone's towers and, with a ``data_root``, the split files and images of every dataset a
    trial reads. A problem is one
    error naming the sweep file and the key or path, raised before any trial starts.
    """
    from prometar.config import ConfigError, build_config
    from prometar.preflight import Preflight

    checker = Preflight(data_root, weights=weights)
    for trial in plan.trials:
        config = trial.run_config or build_config(trial.config, source=plan.spec.source)
        try:
            checker.check(config, source=plan.spec.source)
        except ConfigError as error:
            raise SpecError(plan.spec.source, error.key, error.reason) from None


def check_cluster_fits(plan: SweepPlan, datasets: Iterable[str], *, strict: bool, stream: IO[str]) -> None:
    """Every trial's resource request fits on one alive node of the Ray cluster this process joined.

    A request no node can meet (GPUs on a machine without any, more CPUs than a node has) would
    leave its trials pending forever. ``strict`` (the embedded local Ray, whose nodes are all there
    is) refuses the launch; a joined cluster may add nodes (an autoscaler), so it gets a warning
    naming the numbers instead.

    Raises:
        LaunchError: ``strict`` and a request that no node can meet (names the sweep's
            ``resources`` key and what the cluster has).
    """
    import ray

    nodes = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]
    have = ", ".join(sorted({f"CPU={n.get('CPU', 0):g} GPU={n.get('GPU', 0):g}" for n in nodes})) or "no node"
    for dataset in sorted(set(datasets)):
        want = plan.spec.resources_for(dataset)
        if any(n.get("CPU", 0) >= want.cpu and n.get("GPU", 0) >= want.gpu for n in nodes):
            continue
        key = "resources." + (dataset if dataset in plan.spec.resources else "default")
        message = (
            f"{plan.spec.source}: {key}: a {dataset} trial asks for cpu={want.cpu:g} gpu={want.gpu:g}, "
            f"but no node of the cluster has that much (nodes: {have})"
        )
        if strict:
            raise LaunchError(
                message + "; lower the request in the sweep's resources, or launch where it fits"
            )
        print(f"warning: {message}; its trials wait until a node that fits joins", file=stream)
