"""Bounded network waits: whether something answers at a host and port, within a short timeout.

Every verb that talks to a server (a tracking server or its database, a Ray cluster) first asks
:func:`connect_problem` with :data:`PROBE_TIMEOUT_S`, so an address where nothing listens, or a
host that drops packets, is one message naming it after seconds, not a client's retries for minutes.
"""

from __future__ import annotations

import socket

__all__ = ["PROBE_TIMEOUT_S", "connect_problem"]

PROBE_TIMEOUT_S = 5.0
"""How long a probe waits for a TCP connection (name resolution included)."""


def connect_problem(host: str, port: int, *, timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """Why nothing accepts a TCP connection at ``host:port`` within ``timeout_s``, else ``None``."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return None
    except TimeoutError:
        return f"no answer from {host}:{port} within {timeout_s:g} s"
    except socket.gaierror as error:
        return f"cannot resolve host {host!r} ({error.strerror or error})"
    except OSError as error:
        return f"cannot connect to {host}:{port} ({error.strerror or error})"
