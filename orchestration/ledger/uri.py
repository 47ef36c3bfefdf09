"""Tracking URIs: which ones an MLflow store can be opened from, checked before any client exists.

MLflow builds a client for any string and fails later, inside a verb, with a registry error and a
traceback (``foo://…``), or creates what it was pointed at: ``sqlite:////no/such/dir/db`` makes
the folders and a database, from a read-only verb too. :func:`check_tracking_uri` refuses an
unsupported scheme and a SQLite database whose folder does not exist, naming the URI;
:func:`sqlite_path` says where a SQLite store lives, so readers can tell "nothing has run" from
"a store exists" without creating one.

Network waits are bounded: :func:`probe_tracking_uri` refuses a tracking server or database that
accepts no TCP connection within seconds (``status``, ``launch``, ``table``, ``plot``, ``report``
probe before reading), and :func:`bounded_request_settings` lowers MLflow's HTTP retry settings
to :data:`HTTP_LIMITS` (the CLI applies them to every verb).
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

from orchestration.errors import TrackingError
from orchestration.network import PROBE_TIMEOUT_S, connect_problem

__all__ = [
    "HTTP_LIMITS",
    "STORE_SCHEMES",
    "bounded_request_settings",
    "check_tracking_uri",
    "probe_tracking_uri",
    "sqlite_path",
]

STORE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "file", "databricks")
"""URI schemes of MLflow tracking stores (a plain path is a file store)."""

DEFAULT_PORTS = {"http": 80, "https": 443, "postgresql": 5432, "mysql": 3306, "mssql": 1433}
"""The port a networked store listens on when its URI names none."""

HTTP_LIMITS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": 2,
    "MLFLOW_HTTP_REQUEST_TIMEOUT": 15,
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": 1,
}
"""The most each of MLflow's HTTP retry settings may be while a verb runs (a larger value in the
environment is lowered to it): a request to a server that stopped answering fails within
3 tries × 15 s + 1 + 2 s of back-off, about 50 s, instead of MLflow's minutes."""


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, else ``None``."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def bounded_request_settings() -> dict[str, str]:
    """MLflow's HTTP retry settings from the environment, each lowered to its :data:`HTTP_LIMITS`."""
    values = {}
    for name, limit in HTTP_LIMITS.items():
        try:
            given = int(os.environ.get(name, limit))
        except ValueError:
            given = limit
        values[name] = str(min(max(given, 0), limit))
    return values


def probe_tracking_uri(uri: str, *, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Refuse a networked store (a tracking server, a database) that accepts no connection.

    A TCP connection to the URI's host and port must open within ``timeout_s``; local stores
    (SQLite, a folder) are not probed.

    Raises:
        TrackingError: Nothing answers; names the URI and the host and port.
    """
    parsed = urlparse(uri)
    scheme = parsed.scheme.split("+", 1)[0].lower()
    if scheme not in DEFAULT_PORTS:
        return
    try:
        host, port = parsed.hostname, parsed.port or DEFAULT_PORTS[scheme]
    except ValueError as error:  # a port that is not a number
        raise TrackingError(f"tracking URI {uri}: {error}") from None
    if not host:  # a database on a local socket: nothing to connect to over TCP
        return
    problem = connect_problem(host, port, timeout_s=timeout_s)
    if problem is not None:
        raise TrackingError(f"tracking URI {uri} is unreachable: {problem}")


def check_tracking_uri(uri: str) -> None:
    """Refuse a tracking URI no MLflow store can be opened from.

    Raises:
        TrackingError: An unsupported scheme (lists the supported ones), or a SQLite database
            whose folder does not exist (it is not created).
    """
    scheme = urlparse(uri).scheme.split("+", 1)[0].lower()  # postgresql+psycopg2 -> postgresql
    if len(scheme) > 1 and scheme not in STORE_SCHEMES:  # a one-letter scheme is a Windows drive
        raise TrackingError(
            f"tracking URI {uri}: unsupported scheme {scheme!r}; an MLflow store is "
            f"{', '.join(s + '://' for s in STORE_SCHEMES)} or a folder"
        )
    database = sqlite_path(uri)
    if database is not None and database.is_dir():
        raise TrackingError(f"tracking URI {uri}: {database} is a folder, not a SQLite database")
    if database is not None and not database.parent.is_dir():
        raise TrackingError(
            f"tracking URI {uri}: the folder {database.parent} does not exist "
            "(it is not created; make it first, or point at another file)"
        )
