"""The Ray session of a launch: a local Ray on 127.0.0.1 (the embedded default), or a cluster joined.

A local instance never listens beyond this machine: every address is 127.0.0.1 and there is no
dashboard. Keeping a loopback address needs one private Ray flag, switched only while Ray starts
or connects (:func:`_loopback`); it is the only use of Ray internals in the project.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from orchestration.errors import LaunchError
from orchestration.network import connect_problem


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

    Raises:
        LaunchError: Something accepts connections there but no Ray cluster answers; names the address.
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
    try:
        if host in ("127.0.0.1", "localhost"):
            with _loopback():
                return ray.init(address=address, _node_ip_address="127.0.0.1", log_to_driver=False)
        return ray.init(address=address, log_to_driver=False)
    except ConnectionError as err:  # something answers there (a proxy, another service), not Ray
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise LaunchError(
            f"--address {address} (or RAY_ADDRESS): no Ray cluster answers there ({first[:300]})"
        ) from None


def check_ray_address(address: str) -> None:
    """Refuse a Ray address where nothing accepts a connection within seconds (``ray.init`` would
    keep retrying for minutes).

    ``host:port`` (the head's GCS) and ``ray://host:port`` (a Ray client server, port 10001 by
    default) are probed; ``auto`` is resolved as :func:`join_ray` resolves it, then probed.

    Raises:
        LaunchError: Nothing answers, or the address is malformed; names the address.
    """
    target = address
    if address == "auto":
        from ray._private.services import get_ray_address_from_environment

        try:
            target = get_ray_address_from_environment("auto", None) or ""
        except Exception:  # no cluster found: ray.init says so at once
            return
    if not target or target in ("auto", "local"):
        return
    rest = target.split("://", 1)[1] if "://" in target else target
    host, _, port_text = rest.rstrip("/").rpartition(":")
    if not host:
        host, port_text = rest.rstrip("/"), "10001" if "://" in target else ""
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise LaunchError(
            f"--address {address} (or RAY_ADDRESS): expected HOST:PORT, ray://HOST:PORT or auto"
        )
    problem = connect_problem(host.strip("[]"), int(port_text))
    if problem is not None:
        raise LaunchError(f"--address {address} (or RAY_ADDRESS): no Ray cluster answers: {problem}")


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
