"""``prometar-sweep doctor``: can this node (and the cluster it names) run a sweep? One line per check.

Python, torch, the CUDA runtime torch is built for, the NVIDIA driver, the GPUs torch sees (with
bf16/fp16 support and free memory) and the GPUs Ray advertises (a joined cluster), the tracking
store and Ray storage reachable, the data root and, with a sweep file, every trial's inputs (split
files, images, weights). It writes nothing. The GPU checks report ``none`` on a machine without a
GPU, and fail only when the sweep asks for GPUs. ``launch --dry-run`` runs the same checks.
"""

from __future__ import annotations

import platform
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from orchestration import layout
from orchestration.gpus import CudaReport, min_driver, probe_here
from orchestration.launch.preflight import (
    check_data_root,
    check_inputs,
    check_output,
    check_storage,
    wants_gpus,
)
from orchestration.sweeps.planning import SweepPlan
from prometar.errors import InputError

OK, FAIL, INFO = "ok", "FAIL", "info"
"""A check's outcome: passed, failed (``doctor`` exits 1), or a fact that cannot fail here."""


@dataclass(frozen=True)
class Check:
    """One check: its name, outcome (:data:`OK`, :data:`FAIL`, :data:`INFO`) and what it found."""

    name: str
    status: str
    detail: str

    def line(self) -> str:
        return f"{self.status:<4}  {self.name:<12}  {self.detail}"


@dataclass(frozen=True, kw_only=True)
class DoctorOptions:
    """Where to look: the same options as ``launch``."""

    data_root: Path = layout.DEFAULT_DATA_ROOT
    output: Path = layout.DEFAULT_OUTPUT
    tracking_uri: str | None = None
    storage: str | None = None
    address: str | None = None
    inputs: bool = True
    """Check the data root and every trial's inputs (``launch --dry-run`` has just done so)."""


def _version(version: str | None, minimum: str | None) -> bool:
    """``version`` is at least ``minimum`` (dotted numbers)."""
    if not version or not minimum:
        return True

    def numbers(text: str) -> tuple[int, ...]:
        return tuple(int(part) for part in text.split(".") if part.isdigit())

    return numbers(version) >= numbers(minimum)


def gpu_checks(report: CudaReport, *, need_gpus: bool) -> list[Check]:
    """The CUDA runtime, the driver and the GPUs torch sees; failing only when ``need_gpus``."""
    need = min_driver(report.cuda_runtime)
    runtime = report.cuda_runtime or "none (a CPU-only torch)"
    checks = [Check("cuda runtime", FAIL if need_gpus and not report.cuda_runtime else INFO, runtime)]
    if report.driver is None:
        checks.append(Check("driver", FAIL if need_gpus else INFO, "none"))
    elif not _version(report.driver, need):
        detail = f"{report.driver}: torch's CUDA {report.cuda_runtime} needs >= {need}"
        checks.append(Check("driver", FAIL if need_gpus else INFO, detail))
    else:
        checks.append(Check("driver", OK, report.driver + (f" (>= {need})" if need else "")))
    visible = f"CUDA_VISIBLE_DEVICES={report.visible_devices}" if report.visible_devices is not None else ""
    if not report.devices:
        why = f" ({report.error})" if report.error else ""
        detail = f"none{why}" + (f"; {visible}" if visible else "")
        checks.append(Check("gpus (torch)", FAIL if need_gpus else INFO, detail))
    for device in report.devices:
        precision = "bf16" if device.bf16 else "fp16" if device.fp16 else "fp32 only"
        detail = (
            f"cuda:{device.index} {device.name}: {precision}, "
            f"{device.free_mib / 1024:.1f} GiB free of {device.total_mib / 1024:.1f} GiB"
        )
        checks.append(Check("gpus (torch)", OK, detail))
    return checks


def _ray_gpus(address: str | None) -> Check:
    """The GPUs a joined cluster advertises (a local Ray detects this node's when a launch starts it)."""
    if address is None:
        return Check("gpus (ray)", INFO, "no cluster joined (a local Ray counts this node's at start)")
    import ray

    from orchestration.launch.ray_session import ray_session

    try:
        with ray_session(address):
            resources = ray.cluster_resources()
    except Exception as error:  # any failure to join is this check's finding
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        return Check("gpus (ray)", FAIL, f"cannot join {address}: {first[:200]}")
    return Check("gpus (ray)", OK, f"{resources.get('GPU', 0):g} GPU(s), {resources.get('CPU', 0):g} CPU(s)")


def _tracking(options: DoctorOptions, plan: SweepPlan | None) -> Check:
    from orchestration.ledger.store import TrialLedger

    output = Path(options.output).resolve()
    uri = options.tracking_uri or layout.default_tracking_uri(output)
    if not TrialLedger.exists(output, options.tracking_uri):  # an absent SQLite store is not created
        return Check("tracking", OK, f"{uri} (created by the first launch)")
    ledger = TrialLedger.for_output(plan.name if plan else "doctor", output, options.tracking_uri)
    ledger.check_reachable()
    return Check("tracking", OK, f"{uri} answers")


def _storage(options: DoctorOptions) -> Check:
    from orchestration.storage import is_uri

    location = options.storage or str(layout.ray_storage(Path(options.output).resolve()))
    if is_uri(location):
        check_storage(location)
        return Check("storage", OK, f"{location} answers")
    check_output(Path(location))
    return Check("storage", OK, f"{location} can be written")


def _data(options: DoctorOptions, plan: SweepPlan | None) -> Check:
    root = Path(options.data_root)
    if plan is None:
        if not root.is_dir():
            return Check("data root", FAIL, f"{root} does not exist (--data-root)")
        return Check("data root", OK, str(root))
    check_data_root(plan, root)
    return Check("data root", OK, f"{root}: every dataset the sweep reads")


def _inputs(options: DoctorOptions, plan: SweepPlan | None) -> Check:
    if plan is None:
        return Check("inputs", INFO, "no sweep file given: weights and split files not checked")
    check_inputs(plan, Path(options.data_root))
    return Check("inputs", OK, f"weights, split files and images of {len(plan.trials)} trial(s)")


def _guarded(name: str, check: Callable[[], Check]) -> Check:
    """A check whose input error is its failing line."""
    try:
        return check()
    except InputError as error:
        return Check(name, FAIL, str(error))


def run_checks(options: DoctorOptions, plan: SweepPlan | None = None) -> list[Check]:
    """Every check, in order; with ``plan`` the GPU checks fail when its trials ask for GPUs."""
    need_gpus = plan is not None and wants_gpus(plan)
    checks = [Check("python", OK, f"{platform.python_version()} ({sys.executable})")]
    try:
        report = probe_here()
    except (RuntimeError, OSError, ValueError) as error:
        checks.append(Check("torch", FAIL, str(error)))
    else:
        checks.append(Check("torch", OK, report.torch_version))
        checks.extend(gpu_checks(report, need_gpus=need_gpus))
    checks.append(_ray_gpus(options.address))
    checks.append(_guarded("tracking", lambda: _tracking(options, plan)))
    checks.append(_guarded("storage", lambda: _storage(options)))
    if options.address is None and options.inputs:  # on a cluster, the data and weights are on its nodes
        checks.append(_guarded("data root", lambda: _data(options, plan)))
        checks.append(_guarded("inputs", lambda: _inputs(options, plan)))
    return checks


def failing(checks: list[Check]) -> list[Check]:
    """The checks that failed."""
    return [check for check in checks if check.status == FAIL]


def as_json(checks: list[Check]) -> dict[str, Any]:
    """``{"ok": bool, "checks": [{name, status, detail}, ...]}`` (``doctor --json``)."""
    return {"ok": not failing(checks), "checks": [asdict(check) for check in checks]}


__all__ = ["Check", "DoctorOptions", "as_json", "failing", "gpu_checks", "run_checks"]
