"""Looking at the runs: the MLflow UI on a launch's ledger (``prometar-sweep ui``).

A tracking server (``http://``, ``https://``) already serves its UI: :func:`ui_target` names its
address and nothing is started. A file store (the default SQLite ``<output>/mlflow.db``) is shown
by ``mlflow ui`` started on it, bound to 127.0.0.1 unless another host is asked for; the store is
never created (a missing ledger is an error naming it).
"""

from __future__ import annotations

import shlex
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from orchestration.errors import TrackingError
from orchestration.layout import DEFAULT_OUTPUT, default_tracking_uri

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5000


@dataclass(frozen=True)
class UiTarget:
    """What ``ui`` shows.

    Attributes:
        tracking_uri: The ledger.
        url: Where to point a browser.
        command: The ``mlflow ui`` command line to start, or ``None`` when a server already serves it.
    """

    tracking_uri: str
    url: str
    command: list[str] | None


def is_server(tracking_uri: str) -> bool:
    """Whether the tracking URI is a server (it serves its own UI)."""
    return tracking_uri.startswith(("http://", "https://"))


def ui_target(tracking_uri: str, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> UiTarget:
    """The UI of a ledger: a server's own address, or an ``mlflow ui`` command on a file store.

    Raises:
        TrackingError: A SQLite ledger that does not exist.
    """
    if is_server(tracking_uri):
        return UiTarget(tracking_uri, tracking_uri.rstrip("/"), None)
    if tracking_uri.startswith("sqlite:///"):
        path = Path(tracking_uri.removeprefix("sqlite:///"))
        if not path.is_file():
            raise TrackingError(
                f"no MLflow ledger at {path} (tracking URI {tracking_uri}): nothing has been launched "
                "into this output folder yet (--output / --tracking-uri)"
            )
    mlflow = Path(sys.executable).with_name("mlflow")
    command = [
        str(mlflow) if mlflow.exists() else "mlflow",
        "ui",
        "--backend-store-uri",
        tracking_uri,
        "--host",
        host,
        "--port",
        str(port),
    ]
    shown = "localhost" if host in ("127.0.0.1", "0.0.0.0") else host
    return UiTarget(tracking_uri, f"http://{shown}:{port}", command)


def check_port_free(host: str, port: int) -> None:
    """Fail unless ``host:port`` can be listened on (``mlflow ui`` would print "Address already in
    use" and still exit 0).

    Raises:
        TrackingError: The address is taken or cannot be bound; names ``--host`` / ``--port``.
    """
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds: TIME_WAIT is free
        try:
            probe.bind((host, port))
        except OSError as err:
            raise TrackingError(
                f"--host {host} --port {port}: cannot listen there ({err.strerror or err}); "
                "pick another --port"
            ) from None


def ui_hint(tracking_uri: str, *, output: Path | str = DEFAULT_OUTPUT) -> str:
    """The command a launch into ``output`` prints at its end to look at its runs."""
    if is_server(tracking_uri):
        url = tracking_uri.rstrip("/")
        return f"look at the runs: {url} (or prometar-sweep ui --tracking-uri {tracking_uri})"
    if tracking_uri == default_tracking_uri(output):
        args = [] if Path(output).resolve() == DEFAULT_OUTPUT.resolve() else ["--output", str(output)]
    else:
        args = ["--tracking-uri", tracking_uri]
    return f"look at the runs: {shlex.join(['prometar-sweep', 'ui', *args])}"
