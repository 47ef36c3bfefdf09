"""Tracking URIs: which ones an MLflow store can be opened from, checked before any client exists.

MLflow builds a client for any string and fails later, inside a verb, with a registry error and a
traceback (``foo://…``), or creates what it was pointed at: ``sqlite:////no/such/dir/db`` makes
the folders and a database, from a read-only verb too. :func:`check_tracking_uri` refuses an
unsupported scheme and a SQLite database whose folder does not exist, naming the URI;
:func:`sqlite_path` says where a SQLite store lives, so readers can tell "nothing has run" from
"a store exists" without creating one.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from orchestration.errors import TrackingError

__all__ = ["STORE_SCHEMES", "check_tracking_uri", "sqlite_path"]

STORE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "file", "databricks")
"""URI schemes of MLflow tracking stores (a plain path is a file store)."""


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, else ``None``."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


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
