"""The Ray session of a launch: a local Ray on 127.0.0.1 (the embedded default), or a cluster joined.

A local instance never listens beyond this machine: every address is 127.0.0.1 and there is no
dashboard. Keeping a loopback address needs one private Ray flag, switched only while Ray starts
or connects (:func:`_loopback`); it is the only use of Ray internals in the project.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def _loopback() -> Iterator[None]:
    """Keep a 127.0.0.1 node address as it is.

    On Linux Ray swaps a loopback node address for the machine's routable one unless its cluster
    mode is off (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER``, read once at import); it is switched off
    while Ray starts or connects, so a local instance never listens beyond this machine.
    """
    from ray._private import ray_constants

    saved = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved


def start_local_ray(**kwargs: Any) -> Any:
    """Start a local Ray instance in this process, every address on 127.0.0.1, no dashboard.

    Args:
        **kwargs: More ``ray.init`` arguments (``num_cpus``, ``runtime_env``, ...).
    """
    import ray

    with _loopback():
        return ray.init(
            address="local",
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            dashboard_host="127.0.0.1",
            log_to_driver=False,
            configure_logging=False,
            **kwargs,
        )


def join_ray(address: str) -> Any:
    """Connect this process to a running Ray cluster (a loopback one as a loopback node).

    Args:
        address: ``host:port`` of the head, ``auto`` (``RAY_ADDRESS`` or the latest local cluster,
            as in a Ray Job), or a ``ray://`` client address.
    """
    import ray

    target = address
    if address == "auto":
        from ray._private.services import get_ray_address_from_environment

        try:
            target = get_ray_address_from_environment("auto", None) or address
        except Exception:  # ray.init reports a missing cluster itself
            target = address
    host = target.rsplit(":", 1)[0] if "://" not in target else ""
    if host in ("127.0.0.1", "localhost"):
        with _loopback():
            return ray.init(address=address, _node_ip_address="127.0.0.1", log_to_driver=False)
    return ray.init(address=address, log_to_driver=False)


@contextmanager
def ray_session(address: str | None) -> Iterator[None]:
    """Start Ray (embedded default: local, 127.0.0.1, no dashboard) or join ``address``.

    A Ray already initialised in this process (a test, a notebook) is used as it is and left running.
    """
    import ray

    if ray.is_initialized():
        yield
        return
    if address:
        join_ray(address)
    else:
        start_local_ray()
    try:
        yield
    finally:
        ray.shutdown()
