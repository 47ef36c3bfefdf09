"""Shared set-up of the tests that launch real trials: the tiny model's overrides and a local Ray.

- :data:`TINY_OVERRIDES`: a sweep's ``overrides`` that make a trial a one-epoch run of the
  ``tiny-test`` backbone (no weights, fp32, batches of 2, one prompt layer per encoder, no loader
  workers); a test that needs another value spells only that one (``{**TINY_OVERRIDES,
  "optim.epochs": 2}``).
- :func:`local_test_ray`: a throw-away local Ray instance in the test process, every address on
  127.0.0.1 (``start_local_ray``), without token authentication (``RAY_AUTH_MODE=disabled`` while it
  runs, the caller's value restored after); its session folder goes where ``conftest.py`` points
  ``RAY_TMPDIR`` (removed at the end of the test session).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

TINY_OVERRIDES: dict[str, Any] = {
    "backbone.name": "tiny-test",
    "backbone.pretrained": None,
    "backbone.precision": "fp32",
    "optim.epochs": 1,
    "data.batch_size": 2,
    "data.num_workers": 0,
    "prompts.text_depth": 1,
    "prompts.vision_depth": 1,
}
"""One-epoch trials of the tiny backbone (module docstring)."""

OFFLINE_RUNTIME_ENV: Mapping[str, Any] = {"env_vars": {"HF_HUB_OFFLINE": "1"}}
"""The runtime environment of a local test Ray without fault injection: workers stay offline."""


@contextmanager
def local_test_ray(
    *, num_gpus: int = 0, num_cpus: int = 2, runtime_env: Mapping[str, Any] = OFFLINE_RUNTIME_ENV
) -> Iterator[str]:
    """A local Ray for the duration of the block; yields its GCS address (``127.0.0.1:PORT``).

    Args:
        num_gpus: GPUs Ray advertises (whether or not the machine has them).
        num_cpus: CPUs Ray advertises.
        runtime_env: The workers' runtime environment (``faults.runtime_env(...)`` for fault hooks).
    """
    import ray

    from orchestration.launch.ray_session import start_local_ray

    saved = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"  # a throw-away local test instance on 127.0.0.1
    try:
        start_local_ray(num_cpus=num_cpus, num_gpus=num_gpus, runtime_env=dict(runtime_env))
        try:
            address = ray.get_runtime_context().gcs_address
            assert address.startswith("127.0.0.1:"), address
            yield address
        finally:
            ray.shutdown()
    finally:
        if saved is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = saved
