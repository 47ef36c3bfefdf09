"""A trial's system metrics, sampled on its own node and reported with each epoch.

MLflow's system metrics (``mlflow.system_metrics``) are sampled by a thread beside the process that
logs the run; here that process is the launch driver, on another node than the trials. So each
trial samples its own node with MLflow's monitors — CPU and RAM (``psutil``), and the node's GPUs'
utilisation and memory through NVML when ``nvidia-ml-py`` is installed — and reports their means
over the epoch with the epoch's result, under MLflow's names (``system/cpu_utilization_percentage``,
``system/gpu_0_utilization_percentage``, ...); the ledger's callback logs them at step = epoch. A
trial on CUDA adds its own peak memory (``system/torch_max_memory_allocated_megabytes``).

The sampling thread waits ``MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL`` seconds (default 10) between
samples, and every epoch takes one more sample at its end, so no epoch reports nothing and no test
waits on the clock. Measurements of the machine: never an input to a result.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from orchestration.ledger.vocabulary import SYSTEM_METRIC_PREFIX

logger = logging.getLogger(__name__)

INTERVAL_ENV = "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL"
DEFAULT_INTERVAL_S = 10.0


def _monitors() -> list[Any]:
    """MLflow's CPU monitor, and its GPU monitor where NVML answers."""
    from mlflow.system_metrics.metrics.cpu_monitor import CPUMonitor

    monitors: list[Any] = [CPUMonitor()]
    try:
        import pynvml  # noqa: F401  (nvidia-ml-py, optional: MLflow's GPU monitor needs it imported)
        from mlflow.system_metrics.metrics.gpu_monitor import GPUMonitor

        monitors.append(GPUMonitor())
    except Exception:  # no nvidia-ml-py, no driver or no GPU: CPU and RAM only
        pass
    return monitors


class SystemSampler:
    """Samples the node in a daemon thread; :meth:`epoch_metrics` gives the epoch's means and restarts.

    Args:
        device: The trial's device (``cuda``: its own peak memory is added).
        interval_s: Seconds between samples (default: ``$MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL``
            or 10).
    """

    def __init__(self, device: str = "cpu", interval_s: float | None = None) -> None:
        self.device = device
        self.interval_s = interval_s or float(os.environ.get(INTERVAL_ENV) or DEFAULT_INTERVAL_S)
        self.monitors = _monitors()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="prometar-system-metrics", daemon=True)

    def __enter__(self) -> SystemSampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval_s + 5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def _sample(self) -> None:
        with self._lock:
            for monitor in self.monitors:
                try:
                    monitor.collect_metrics()
                except Exception as error:  # a failing probe must not fail the trial
                    logger.debug("system metrics: %s", error)

    def epoch_metrics(self) -> dict[str, float]:
        """The means since the last call (one more sample taken now), ``system/``-prefixed."""
        self._sample()
        out: dict[str, float] = {}
        with self._lock:
            for monitor in self.monitors:
                if monitor.metrics:
                    out.update(monitor.aggregate_metrics())
                monitor.clear_metrics()
        if self.device.startswith("cuda"):
            import torch

            out["torch_max_memory_allocated_megabytes"] = torch.cuda.max_memory_allocated() / 1e6
            torch.cuda.reset_peak_memory_stats()
        return {SYSTEM_METRIC_PREFIX + name: float(value) for name, value in out.items()}


__all__ = ["SystemSampler"]
