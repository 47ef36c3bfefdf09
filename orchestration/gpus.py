"""What a node's torch can do with its GPUs: the CUDA probe behind the trial's check, the launch's
preflight and ``doctor``.

:func:`probe` imports torch and reads what it reports (the wheel's CUDA runtime, whether CUDA
initialises, each device's name, bf16/fp16 support and free memory), the NVIDIA driver version
(``/proc/driver/nvidia/version``, else NVML when ``nvidia-ml-py`` is installed) and
``CUDA_VISIBLE_DEVICES``. The launch driver never imports torch: it calls :func:`probe_here`, which
runs the probe in a child process of the same interpreter, or :func:`probe_on_gpu_node`, a Ray task
holding one GPU of the cluster. A trial Ray granted a GPU calls :func:`trial_device`: CUDA, or a
:class:`GpuUnusableError` whose one-line message (:func:`unusable_message`) says what Ray granted,
what torch reports and what to do — it never trains on the CPU instead.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from prometar.errors import PicklableError

DRIVER_FILE = Path("/proc/driver/nvidia/version")
"""Where the NVIDIA kernel module states its version on Linux."""

MIN_DRIVER = {"11": "450.80.02", "12": "525.60.13", "13": "580.65.06"}
"""CUDA major version of a torch wheel → the oldest Linux driver that runs it (NVIDIA's minor
version compatibility); the README lists the install path for each."""

ADVICE = "install a torch for this driver (make venv TORCH_VARIANT=cu126) or set backbone.device: cpu"
PROBE_TIMEOUT_S = 120.0
"""How long the child process or Ray task that imports torch may take."""


class GpuUnusableError(PicklableError, RuntimeError):
    """A trial holds a GPU that torch cannot use (one line: what Ray granted, torch, what to do)."""


@dataclass(frozen=True)
class GpuDevice:
    """One CUDA device as torch sees it."""

    index: int
    name: str
    bf16: bool
    fp16: bool
    free_mib: int
    total_mib: int


@dataclass(frozen=True)
class CudaReport:
    """What torch reports on one node."""

    torch_version: str
    cuda_runtime: str | None
    """``torch.version.cuda``: the CUDA runtime the wheel is built for (``None``: a CPU wheel)."""
    available: bool
    driver: str | None
    visible_devices: str | None
    """``CUDA_VISIBLE_DEVICES`` as the process sees it (``None``: unset)."""
    devices: list[GpuDevice] = field(default_factory=list)
    error: str | None = None
    """Why CUDA did not initialise, when torch says."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CudaReport:
        devices = [GpuDevice(**device) for device in data.get("devices", [])]
        return cls(**{**data, "devices": devices})


def driver_version() -> str | None:
    """The NVIDIA driver's version on this node (``None``: no driver, or it cannot be read)."""
    try:
        match = re.search(r"Kernel Module(?: for \S+)?\s+(\d+(?:\.\d+)+)", DRIVER_FILE.read_text())
        if match:
            return match.group(1)
    except OSError:
        pass
    try:
        import pynvml  # nvidia-ml-py, optional

        pynvml.nvmlInit()
        try:
            version = pynvml.nvmlSystemGetDriverVersion()
        finally:
            pynvml.nvmlShutdown()
        return version.decode() if isinstance(version, bytes) else str(version)
    except Exception:  # no NVML library, no driver, no device: the version is unknown
        return None


def probe() -> CudaReport:
    """What torch reports in this process (imports torch)."""
    import warnings

    import torch

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        available = torch.cuda.is_available()
    error = next((str(w.message).strip().splitlines()[0] for w in caught if "CUDA" in str(w.message)), None)
    devices = []
    if available:
        for index in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(index)
            capability = torch.cuda.get_device_capability(index)
            devices.append(
                GpuDevice(
                    index=index,
                    name=torch.cuda.get_device_name(index),
                    bf16=capability >= (8, 0),
                    fp16=capability >= (5, 3),
                    free_mib=free // 2**20,
                    total_mib=total // 2**20,
                )
            )
    return CudaReport(
        torch_version=torch.__version__,
        cuda_runtime=torch.version.cuda,
        available=available,
        driver=driver_version(),
        visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
        devices=devices,
        error=error,
    )


def probe_here() -> CudaReport:
    """:func:`probe` in a child process of this interpreter (this process does not import torch).

    Raises:
        RuntimeError: The child failed (torch cannot be imported); names its last line.
    """
    code = "import json; from orchestration.gpus import probe; print(json.dumps(probe().to_dict()))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, check=False
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"the torch probe ({sys.executable}) failed: {last}")
    return CudaReport.from_dict(json.loads(done.stdout.strip().splitlines()[-1]))


def probe_on_gpu_node() -> tuple[CudaReport, list[str]] | None:
    """:func:`probe` as a Ray task holding one GPU of the joined cluster, with the GPU ids Ray gave it.

    ``None`` when no GPU is free within :data:`PROBE_TIMEOUT_S` (the cluster is busy, or its GPU
    nodes have not joined yet).
    """
    import ray

    def remote_probe() -> tuple[dict[str, Any], list[str]]:
        return probe().to_dict(), [str(i) for i in ray.get_gpu_ids()]

    task = ray.remote(num_gpus=1, num_cpus=0, max_retries=0)(remote_probe).remote()
    ready, _ = ray.wait([task], timeout=PROBE_TIMEOUT_S)
    if not ready:
        ray.cancel(task, force=True)
        return None
    report, ids = ray.get(task)
    return CudaReport.from_dict(report), ids


def min_driver(cuda_runtime: str | None) -> str | None:
    """The oldest driver a wheel built for ``cuda_runtime`` runs on (``None``: unknown or CPU wheel)."""
    return MIN_DRIVER.get((cuda_runtime or "").split(".")[0])


def unusable_message(report: CudaReport, subject: str) -> str:
    """One line: ``subject`` (what asks for a GPU: ``Ray granted GPU 0``), what torch reports, what to do."""
    if report.cuda_runtime is None:
        torch_says = f"torch {report.torch_version} is a CPU-only build"
    else:
        need = min_driver(report.cuda_runtime)
        torch_says = f"torch {report.torch_version} is built for CUDA {report.cuda_runtime}" + (
            f" (needs driver >= {need})" if need else ""
        )
    driver = f"NVIDIA driver {report.driver}" if report.driver else "NVIDIA driver: none found"
    visible = report.visible_devices if report.visible_devices is not None else "unset"
    return (
        f"{subject} but torch cannot use CUDA: {torch_says}; {driver}; "
        f"CUDA_VISIBLE_DEVICES={visible}; {ADVICE}"
    )


def trial_device(granted_gpus: float, configured: str, granted_ids: list[str] | None = None) -> str:
    """The device a trial trains on: ``cpu`` without a GPU or with ``backbone.device: cpu``, else CUDA.

    Args:
        granted_gpus: GPUs (or a fraction of one) Ray granted the trial.
        configured: The run config's ``backbone.device``.
        granted_ids: The GPU ids Ray granted (named in the error).

    Raises:
        GpuUnusableError: A GPU was granted and torch cannot use CUDA (never a silent CPU run).
    """
    if granted_gpus <= 0 or configured == "cpu":
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"  # the devices Ray granted (CUDA_VISIBLE_DEVICES), numbered from 0
    held = f"GPU {','.join(granted_ids)}" if granted_ids else "a GPU"
    raise GpuUnusableError(unusable_message(probe(), f"Ray granted {held}"))


__all__ = [
    "CudaReport",
    "GpuDevice",
    "GpuUnusableError",
    "driver_version",
    "min_driver",
    "probe",
    "probe_here",
    "probe_on_gpu_node",
    "trial_device",
    "unusable_message",
]
