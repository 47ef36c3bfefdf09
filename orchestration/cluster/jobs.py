"""Ray Jobs: submit a sweep's launch to a running cluster, follow it, read its state back.

:func:`submit_sweep` sends ``prometar-sweep launch SWEEP --address auto`` as a Ray Job
(``JobSubmissionClient``) with the working directory shipped as the job's ``working_dir`` (bulky
folders excluded). The submission id is ``<sweep name>-<attempt>``, so a second submission of the
same attempt is refused instead of running the sweep twice; :func:`follow_job` streams the logs
and returns the job's final status; :func:`job_status` reads it back later.

Ray token authentication (``RAY_AUTH_MODE=token``): the client sends ``Authorization: Bearer
<token>`` when a token is given (``--token`` / ``RAY_AUTH_TOKEN`` / ``RAY_AUTH_TOKEN_PATH``).
"""

from __future__ import annotations

import asyncio
import re
import shlex
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestration.cluster.common import JOB_ENV_VARS, launch_args, submission_id, validated_plan
from orchestration.errors import ClusterError
from orchestration.layout import DEFAULT_OUTPUT

TERMINAL_STATUSES = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})

DEFAULT_EXCLUDES: tuple[str, ...] = (
    "/.git/",
    "/.venv/",
    "/venv/",
    f"/{DEFAULT_OUTPUT}/",
    "__pycache__/",
    "*.pyc",
    "/.pytest_cache/",
    "/.ruff_cache/",
    "/.mypy_cache/",
    "*.egg-info/",
    "/build/",
    "/dist/",
    "/.cache/",
)
"""Never shipped with a Ray Job (gitignore syntax, relative to the working directory); Ray also
honours the working directory's ``.gitignore``. The ``--output`` folder is excluded too when it
lies inside the working directory."""

TOKEN_ENV = "RAY_AUTH_TOKEN"
TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"


def resolve_token(token: str | None = None) -> str | None:
    """The Ray auth token to send: ``token``, else ``$RAY_AUTH_TOKEN``, else the file named by
    ``$RAY_AUTH_TOKEN_PATH``; ``None`` when none is set (Ray's own lookup then applies when the
    client runs with ``RAY_AUTH_MODE=token``).

    Raises:
        ClusterError: ``RAY_AUTH_TOKEN_PATH`` names a missing or empty file.
    """
    import os

    if token:
        return token.strip()
    if os.environ.get(TOKEN_ENV, "").strip():
        return os.environ[TOKEN_ENV].strip()
    path = os.environ.get(TOKEN_PATH_ENV)
    if path:
        try:
            text = Path(path).read_text().strip()
        except OSError as err:
            raise ClusterError(
                f"{TOKEN_PATH_ENV}={path}: cannot read the token file ({err.strerror})"
            ) from None
        if not text:
            raise ClusterError(f"{TOKEN_PATH_ENV}={path}: the token file is empty")
        return text
    return None


def auth_headers(token: str | None) -> dict[str, str]:
    """HTTP headers for a Ray dashboard with token authentication (empty without a token)."""
    return {"Authorization": f"Bearer {token}"} if token else {}


def connect(address: str, token: str | None = None) -> Any:
    """A ``JobSubmissionClient`` for ``address`` (``http://HEAD:8265``), authenticated if a token
    is given or found (:func:`resolve_token`).

    Raises:
        ClusterError: Nothing answers at ``address``, or the cluster refused the token.
    """
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address, headers=auth_headers(resolve_token(token)) or None)
    except AuthenticationError as err:
        raise ClusterError(
            f"--address {address}: the cluster refused the request: {err.message}. "
            f"Pass the cluster's token with --token or ${TOKEN_ENV}"
        ) from None
    except (ConnectionError, ValueError, RuntimeError) as err:
        raise ClusterError(f"--address {address}: no Ray dashboard answers there ({err})") from None


def _job_info(client: Any, sub_id: str) -> Any | None:
    """The job's details, or ``None`` when the cluster has no job with this submission id."""
    try:
        return client.get_job_info(sub_id)
    except RuntimeError as err:
        if "404" in str(err) or "does not exist" in str(err):
            return None
        raise


@dataclass(frozen=True)
class Submission:
    """What :func:`submit_sweep` sent.

    Attributes:
        submission_id: ``<sweep name>-<attempt>``.
        entrypoint: The shell command the job runs on the head node.
        runtime_env: The job's runtime environment (``working_dir``, ``excludes``, ``env_vars``).
        address: The dashboard address it went to.
    """

    submission_id: str
    entrypoint: str
    runtime_env: dict[str, Any]
    address: str
    warnings: list[str] = field(default_factory=list)


def build_submission(
    sweep: str | Path,
    *,
    attempt: int = 1,
    working_dir: str | Path = ".",
    tracking_uri: str | None = None,
    data_root: str | None = None,
    output: str | None = None,
    overrides: Sequence[str] = (),
    env_vars: Mapping[str, str] | None = None,
    storage: str | None = None,
) -> tuple[str, str, dict[str, Any], list[str]]:
    """Validate the sweep and build the job's submission id, entrypoint and runtime environment.

    The entrypoint runs ``python -m orchestration.cli launch <sweep> --address auto ...`` in the
    shipped working directory, so the code shipped with the job (when the working directory is
    the project) is the code that runs; otherwise the package installed on the nodes runs.

    Args:
        sweep: The sweep file; it must lie inside ``working_dir``.
        attempt: The attempt number (1, 2, ...): a new attempt after a failed or stopped job.
        working_dir: The folder shipped to the cluster.
        tracking_uri: MLflow tracking URI the cluster can reach.
        data_root: Dataset root on the cluster.
        output: Output folder on shared storage.
        overrides: ``KEY=VALUE`` overrides (``--set``).
        env_vars: Extra environment for the job.
        storage: Ray storage every node reaches (``s3://...`` or a shared folder).

    Returns:
        ``(submission_id, entrypoint, runtime_env, warnings)``.

    Raises:
        ClusterError: The sweep lies outside the working directory.
        orchestration.errors.SpecError: A bad sweep file or override.
    """
    work = Path(working_dir).resolve()
    if not work.is_dir():
        raise ClusterError(f"--working-dir {working_dir}: no such folder")
    sweep_path = Path(sweep).resolve()
    try:
        relative = sweep_path.relative_to(work)
    except ValueError:
        raise ClusterError(
            f"{sweep}: the sweep file lies outside the shipped working directory {work}; "
            "move it there or pass --working-dir"
        ) from None
    plan = validated_plan(sweep_path, overrides)
    sub_id = submission_id(plan.name, attempt)

    excludes = list(DEFAULT_EXCLUDES)
    warnings: list[str] = []
    if output:
        out = Path(output)
        if out.is_absolute():
            try:
                excludes.append("/" + out.resolve().relative_to(work).as_posix() + "/")
            except ValueError:
                pass
        else:
            warnings.append(
                f"--output {output} is relative: it resolves inside the job's temporary working "
                "directory on the head node; pass an absolute path on shared storage"
            )
    elif not tracking_uri:
        warnings.append(
            "neither --output nor --tracking-uri given: the ledger and Ray storage land in the "
            "job's temporary working directory on the head node"
        )

    args = launch_args(
        relative.as_posix(),
        address="auto",
        tracking_uri=tracking_uri,
        data_root=data_root,
        output=output,
        overrides=overrides,
        storage=storage,
    )
    entrypoint = shlex.join(["python", "-m", "orchestration.cli", *args])
    runtime_env = {
        "working_dir": str(work),
        "excludes": excludes,
        "env_vars": {**JOB_ENV_VARS, **dict(env_vars or {})},
    }
    return sub_id, entrypoint, runtime_env, warnings


def submit_sweep(
    sweep: str | Path,
    *,
    address: str,
    attempt: int = 1,
    token: str | None = None,
    working_dir: str | Path = ".",
    tracking_uri: str | None = None,
    data_root: str | None = None,
    output: str | None = None,
    overrides: Sequence[str] = (),
    env_vars: Mapping[str, str] | None = None,
    storage: str | None = None,
) -> Submission:
    """Submit ``prometar-sweep launch SWEEP --address auto`` to a Ray cluster as a Ray Job.

    Args:
        sweep: The sweep file, inside ``working_dir``.
        address: The cluster's dashboard, ``http://HEAD:8265``.
        attempt: The attempt number; the submission id is ``<sweep name>-<attempt>``.
        token: Ray auth token (default: ``$RAY_AUTH_TOKEN`` or ``$RAY_AUTH_TOKEN_PATH``).
        working_dir: The folder shipped with the job.
        tracking_uri: MLflow tracking URI reachable from the head node.
        data_root: Dataset root on the nodes.
        output: Output folder on shared storage.
        overrides: ``KEY=VALUE`` run-config overrides.
        env_vars: Extra environment for the job.
        storage: Ray storage every node reaches.

    Returns:
        The :class:`Submission`.

    Raises:
        ClusterError: Unreachable address, refused token, or a job with this submission id already
            exists on the cluster (whatever its state): nothing is submitted.
        orchestration.errors.SpecError: A bad sweep file or override.
    """
    sub_id, entrypoint, runtime_env, warnings = build_submission(
        sweep,
        attempt=attempt,
        working_dir=working_dir,
        tracking_uri=tracking_uri,
        data_root=data_root,
        output=output,
        overrides=overrides,
        env_vars=env_vars,
        storage=storage,
    )
    client = connect(address, token)
    existing = _job_info(client, sub_id)
    if existing is not None:
        raise ClusterError(_duplicate_message(sub_id, address, str(existing.status), attempt))
    try:
        client.submit_job(
            entrypoint=entrypoint,
            submission_id=sub_id,
            runtime_env=runtime_env,
            metadata={"prometar.sweep": sub_id.rsplit("-", 1)[0], "prometar.attempt": str(attempt)},
        )
    except RuntimeError as err:
        if "already exists" in str(err):  # lost a race with another submitter
            raise ClusterError(
                _duplicate_message(sub_id, address, "submitted concurrently", attempt)
            ) from None
        raise ClusterError(f"--address {address}: the cluster refused the job: {err}") from None
    return Submission(sub_id, entrypoint, runtime_env, address, warnings)


def _duplicate_message(sub_id: str, address: str, state: str, attempt: int) -> str:
    return (
        f"submission {sub_id!r} already exists on {address} (status {state}); refusing to submit it "
        f"twice. Follow it with `prometar-sweep status ... --address {address}`, or submit a new attempt "
        f"with --attempt {attempt + 1} (finished trials are not rerun)"
    )


def job_status(address: str, submission_id: str, token: str | None = None) -> str | None:
    """The state of a submitted sweep (``PENDING``, ``RUNNING``, ``SUCCEEDED``, ``FAILED``,
    ``STOPPED``), or ``None`` when the cluster has no such submission.

    Raises:
        ClusterError: Unreachable address or refused token.
    """
    info = _job_info(connect(address, token), submission_id)
    return None if info is None else str(info.status)


def latest_submission(address: str, sweep_name: str, token: str | None = None) -> tuple[str, str] | None:
    """The sweep's latest attempt on the cluster: ``(submission id, state)``, or ``None``.

    Raises:
        ClusterError: Unreachable address or refused token.
    """
    pattern = re.compile(rf"{re.escape(sweep_name)}-(\d+)")
    best: tuple[int, str, str] | None = None
    for job in connect(address, token).list_jobs():
        match = pattern.fullmatch(job.submission_id or "")
        if match and (best is None or int(match.group(1)) > best[0]):
            best = (int(match.group(1)), job.submission_id, str(job.status))
    return None if best is None else (best[1], best[2])


def job_line(address: str, sweep_name: str, token: str | None = None) -> str:
    """``job <sweep>-<attempt>: <STATE>`` for the ``status`` verb (the latest attempt)."""
    found = latest_submission(address, sweep_name, token)
    return f"job {found[0]}: {found[1]}" if found else f"job: no submission of {sweep_name} on {address}"


def follow_job(
    address: str,
    submission_id: str,
    *,
    token: str | None = None,
    echo: Callable[[str], None] | None = None,
    poll_s: float = 1.0,
) -> str:
    """Stream a job's logs until it ends, then return its terminal status.

    Args:
        address: The dashboard address.
        submission_id: The job.
        token: Ray auth token (see :func:`resolve_token`).
        echo: Receives each chunk of log text (default: written to stdout as it comes).
        poll_s: Seconds between status polls once the log stream closed.

    Returns:
        ``SUCCEEDED``, ``FAILED`` or ``STOPPED``.
    """
    client = connect(address, token)
    write = echo or (lambda text: (sys.stdout.write(text), sys.stdout.flush()))

    async def tail() -> None:
        async for chunk in client.tail_job_logs(submission_id):
            write(chunk)

    try:
        asyncio.run(tail())
    except RuntimeError as err:  # the stream broke (head restarted, proxy timeout): poll instead
        write(f"[prometar] log stream closed ({err}); waiting for the job's status\n")
    while True:
        status = str(client.get_job_status(submission_id))
        if status in TERMINAL_STATUSES:
            return status
        time.sleep(poll_s)
