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
from orchestration.gpus import probe_here, probe_on_gpu_node, unusable_message
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


def check_storage(location: str | None) -> None:
    """A ``--storage`` URI must open and answer before anything is written (``LaunchError`` otherwise)."""
    from orchestration.storage import StorageError, is_uri, open_storage

    if not location or not is_uri(location):
        return
    try:
        storage = open_storage(location)
        storage.filesystem.get_file_info(storage.path)
    except (StorageError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise LaunchError(f"--storage {location}: cannot be used: {first[:300]}") from None


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


def wants_gpus(plan: SweepPlan, datasets: Iterable[str] | None = None) -> bool:
    """Whether a trial on one of ``datasets`` (default: every trial's) asks Ray for a GPU."""
    keys = set(datasets) if datasets is not None else {t.dataset for t in plan.trials}
    return any(plan.spec.resources_for(dataset).gpu > 0 for dataset in keys)


SKIP_HINT = "--no-gpu-check skips this check (each trial then fails on its own)"


def check_local_gpus(plan: SweepPlan) -> None:
    """A sweep asking for GPUs, launched here: torch on this node can use CUDA (probed in a child
    process: the driver never imports torch).

    Raises:
        LaunchError: torch sees no usable GPU (one line: torch's CUDA runtime, the driver,
            ``CUDA_VISIBLE_DEVICES``, what to do), before anything is written.
    """
    if not wants_gpus(plan):
        return
    try:
        report = probe_here()
    except (RuntimeError, OSError, ValueError) as error:
        raise LaunchError(f"{plan.spec.source}: resources: the sweep asks for GPUs: {error}") from None
    if not report.available or not report.devices:
        reason = unusable_message(report, "the sweep's resources ask for GPUs")
        raise LaunchError(f"{plan.spec.source}: {reason}; {SKIP_HINT}")


def check_cluster_gpus(plan: SweepPlan, datasets: Iterable[str], *, stream: IO[str]) -> None:
    """A sweep asking for GPUs, on a joined cluster: a small Ray task holding one GPU imports torch
    on that node and checks that CUDA works there (a GPU not free in time: a warning).

    Raises:
        LaunchError: The GPU node's torch cannot use CUDA (what Ray granted, torch, the driver).
    """
    if not wants_gpus(plan, datasets):
        return
    probed = probe_on_gpu_node()
    if probed is None:
        print(
            f"warning: {plan.spec.source}: no GPU of the cluster was free to check that torch can use it; "
            "trials on an unusable GPU fail at once",
            file=stream,
        )
        return
    report, ids = probed
    if not report.available:
        held = f"GPU {','.join(ids)}" if ids else "a GPU"
        reason = unusable_message(report, f"on a GPU node of the cluster, Ray granted {held}")
        raise LaunchError(f"{plan.spec.source}: {reason}; {SKIP_HINT}")


def check_cluster(
    plan: SweepPlan, datasets: Iterable[str], *, joined: bool, gpu_check: bool, stream: IO[str]
) -> None:
    """Once Ray is up: the trials' requests fit a node (:func:`check_cluster_fits`; refused on the
    embedded Ray, a warning on a joined cluster) and, on a joined cluster, a GPU node's torch can
    use CUDA (:func:`check_cluster_gpus`, unless ``gpu_check`` is off)."""
    wanted = sorted(set(datasets))
    check_cluster_fits(plan, wanted, strict=not joined, stream=stream)
    if joined and gpu_check:
        check_cluster_gpus(plan, wanted, stream=stream)
