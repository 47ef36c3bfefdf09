"""Waiting for a Ray cluster's nodes: the sbatch script's ``prometar-sweep wait-nodes ADDRESS N``."""

from __future__ import annotations

import time

from orchestration.errors import ClusterError


def wait_for_nodes(address: str, count: int, *, timeout_s: float = 300.0, poll_s: float = 2.0) -> int:
    """Block until ``count`` nodes are alive in the Ray cluster at ``address`` (GCS address).

    Returns:
        The number of alive nodes.

    Raises:
        ClusterError: Fewer than ``count`` nodes joined within ``timeout_s``.
    """
    import ray

    ray.init(address=address, logging_level="WARNING", log_to_driver=False)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            alive = sum(1 for node in ray.nodes() if node.get("Alive"))
            if alive >= count:
                return alive
            if time.monotonic() > deadline:
                raise ClusterError(f"{address}: {alive} of {count} Ray nodes joined within {timeout_s:.0f} s")
            time.sleep(poll_s)
    finally:
        ray.shutdown()
