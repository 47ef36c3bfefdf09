"""Running a sweep on a cluster: Ray Jobs submission, SLURM and KubeRay rendering.

Three ways to put ``prometar-sweep launch`` on a multi-node Ray cluster, all running the same
launch (and therefore the same ledger, dedupe and tables) as the local default:

- :func:`submit_sweep` sends the launch to a running cluster as a Ray Job (``JobSubmissionClient``)
  with the working directory shipped as the job's ``working_dir`` (bulky folders excluded). The
  submission id is ``<sweep name>-<attempt>``, so a second submission of the same attempt is
  refused instead of running the sweep twice; :func:`follow_job` streams the logs and returns the
  job's final status; :func:`job_status` reads it back later.
- :func:`render_slurm` writes an sbatch script: a Ray head on the first node of the allocation,
  workers on the others (``srun``), a wait until all nodes joined, the launch, and a trap that
  stops every Ray process it started.
- :func:`render_rayjob` writes a KubeRay ``RayJob`` manifest (plus a ``ConfigMap`` carrying the
  sweep file): a head without GPUs, one GPU worker group, the image, the entrypoint, and volumes
  for data and outputs.

Ray token authentication (``RAY_AUTH_MODE=token``): the Jobs client sends
``Authorization: Bearer <token>`` when a token is given (``--token`` / ``RAY_AUTH_TOKEN`` /
``RAY_AUTH_TOKEN_PATH``); the sbatch script passes the caller's ``RAY_AUTH_*`` environment to every
node; the RayJob manifest enables KubeRay's ``authOptions``.

Also runnable as ``python -m orchestration.cluster wait ADDRESS N`` (the sbatch script's wait for N
alive nodes).
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

import yaml

TERMINAL_STATUSES = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})

DEFAULT_EXCLUDES: tuple[str, ...] = (
    "/.git/",
    "/.venv/",
    "/venv/",
    "/prometar_runs/",
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

JOB_ENV_VARS: dict[str, str] = {"PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
"""Set in the job's environment (logs stream line by line); ``--env`` adds more."""

TOKEN_ENV = "RAY_AUTH_TOKEN"
TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"


class ClusterError(RuntimeError):
    """The cluster cannot take the request (bad address, refused token, duplicate submission,
    sweep outside the shipped folder); the message names the address, option or file."""


# --------------------------------------------------------------------------------------------
# The launch command line


def launch_args(sweep: str, *, address: str, tracking_uri: str | None = None, data_root: str | None = None,
                output: str | None = None, overrides: Sequence[str] = (), storage: str | None = None) -> list[str]:
    """The arguments of ``prometar-sweep launch`` (after the verb's name) for a cluster run.

    Args:
        sweep: The sweep file, as the cluster sees it.
        address: The Ray address the launch connects to (``auto`` inside a Ray Job).
        tracking_uri: MLflow tracking URI (a server or a SQLite file on shared storage).
        data_root: Dataset root on the cluster's nodes.
        output: Output folder (Ray storage, artifacts) on shared storage.
        overrides: ``KEY=VALUE`` run-config overrides (``--set``).
        storage: Ray storage every node reaches (``s3://...`` or a shared folder).

    Returns:
        ``["launch", sweep, "--address", address, ...]``.
    """
    args = ["launch", sweep, "--address", address]
    for flag, value in (("--tracking-uri", tracking_uri), ("--data-root", data_root), ("--output", output),
                        ("--storage", storage)):
        if value:
            args += [flag, value]
    for item in overrides:
        args += ["--set", item]
    return args


def parse_env(items: Sequence[str]) -> dict[str, str]:
    """``KEY=VALUE`` strings (``--env``) → a mapping.

    Raises:
        ClusterError: An item without ``=`` or with an empty key.
    """
    env: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ClusterError(f"--env: expected KEY=VALUE, got {item!r}")
        env[key.strip()] = value
    return env


def submission_id(sweep_name: str, attempt: int) -> str:
    """The Ray Job submission id of one attempt at a sweep: ``<sweep name>-<attempt>``."""
    if attempt < 1:
        raise ClusterError(f"--attempt: must be 1 or more, got {attempt}")
    return f"{sweep_name}-{attempt}"


# --------------------------------------------------------------------------------------------
# Ray Jobs


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
            raise ClusterError(f"{TOKEN_PATH_ENV}={path}: cannot read the token file ({err.strerror})") from None
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
        raise ClusterError(f"--address {address}: the cluster refused the request: {err.message}. "
                           f"Pass the cluster's token with --token or ${TOKEN_ENV}") from None
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


def build_submission(sweep: str | Path, *, attempt: int = 1, working_dir: str | Path = ".",
                     tracking_uri: str | None = None, data_root: str | None = None,
                     output: str | None = None, overrides: Sequence[str] = (),
                     env_vars: Mapping[str, str] | None = None,
                     storage: str | None = None) -> tuple[str, str, dict[str, Any], list[str]]:
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

    Returns:
        ``(submission_id, entrypoint, runtime_env, warnings)``.

    Raises:
        ClusterError: The sweep lies outside the working directory.
        orchestration.spec.SpecError: A bad sweep file or override.
    """
    from orchestration.spec import load_sweep
    from prometar.config import parse_override

    work = Path(working_dir).resolve()
    if not work.is_dir():
        raise ClusterError(f"--working-dir {working_dir}: no such folder")
    sweep_path = Path(sweep).resolve()
    try:
        relative = sweep_path.relative_to(work)
    except ValueError:
        raise ClusterError(f"{sweep}: the sweep file lies outside the shipped working directory {work}; "
                           "move it there or pass --working-dir") from None
    parsed = dict(parse_override(item) for item in overrides)
    spec = load_sweep(sweep_path, overrides=parsed or None)
    sub_id = submission_id(spec.name, attempt)

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
            warnings.append(f"--output {output} is relative: it resolves inside the job's temporary working "
                            "directory on the head node; pass an absolute path on shared storage")
    elif not tracking_uri:
        warnings.append("neither --output nor --tracking-uri given: the ledger and Ray storage land in the "
                        "job's temporary working directory on the head node")

    args = launch_args(relative.as_posix(), address="auto", tracking_uri=tracking_uri, data_root=data_root,
                       output=output, overrides=overrides, storage=storage)
    entrypoint = shlex.join(["python", "-m", "orchestration.cli", *args])
    runtime_env = {"working_dir": str(work), "excludes": excludes,
                   "env_vars": {**JOB_ENV_VARS, **dict(env_vars or {})}}
    return sub_id, entrypoint, runtime_env, warnings


def submit_sweep(sweep: str | Path, *, address: str, attempt: int = 1, token: str | None = None,
                 working_dir: str | Path = ".", tracking_uri: str | None = None,
                 data_root: str | None = None, output: str | None = None,
                 overrides: Sequence[str] = (), env_vars: Mapping[str, str] | None = None,
                 storage: str | None = None) -> Submission:
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

    Returns:
        The :class:`Submission`.

    Raises:
        ClusterError: Unreachable address, refused token, or a job with this submission id already
            exists on the cluster (whatever its state): nothing is submitted.
        orchestration.spec.SpecError: A bad sweep file or override.
    """
    sub_id, entrypoint, runtime_env, warnings = build_submission(
        sweep, attempt=attempt, working_dir=working_dir, tracking_uri=tracking_uri, data_root=data_root,
        output=output, overrides=overrides, env_vars=env_vars, storage=storage)
    client = connect(address, token)
    existing = _job_info(client, sub_id)
    if existing is not None:
        raise ClusterError(_duplicate_message(sub_id, address, str(existing.status), attempt))
    try:
        client.submit_job(entrypoint=entrypoint, submission_id=sub_id, runtime_env=runtime_env,
                          metadata={"prometar.sweep": sub_id.rsplit("-", 1)[0], "prometar.attempt": str(attempt)})
    except RuntimeError as err:
        if "already exists" in str(err):  # lost a race with another submitter
            raise ClusterError(_duplicate_message(sub_id, address, "submitted concurrently", attempt)) from None
        raise ClusterError(f"--address {address}: the cluster refused the job: {err}") from None
    return Submission(sub_id, entrypoint, runtime_env, address, warnings)


def _duplicate_message(sub_id: str, address: str, state: str, attempt: int) -> str:
    return (f"submission {sub_id!r} already exists on {address} (status {state}); refusing to submit it "
            f"twice. Follow it with `prometar-sweep status ... --address {address}`, or submit a new attempt "
            f"with --attempt {attempt + 1} (finished trials are not rerun)")


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


def follow_job(address: str, submission_id: str, *, token: str | None = None,
               echo: Callable[[str], None] | None = None, poll_s: float = 1.0) -> str:
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


# --------------------------------------------------------------------------------------------
# SLURM

_SLURM_TEMPLATE = r"""#!/usr/bin/env bash
# Generated by `prometar-sweep slurm` for the sweep @SWEEP_NAME@ (@SWEEP@).
# A Ray head on the first node of the allocation, one Ray worker on each other node (srun), a
# wait until all @NODES@ nodes joined, the launch against that cluster, and a trap that stops
# every Ray process this script started. Submit with: sbatch @SCRIPT_NAME@
#SBATCH --job-name=prometar-@SWEEP_NAME@
#SBATCH --nodes=@NODES@
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=@CPUS@
#SBATCH --exclusive
@SBATCH_EXTRA@#SBATCH --output=prometar-@SWEEP_NAME@-%j.out
#
# Environment knobs (all optional): PROMETAR_HEAD_IP (default: the head node's first address),
# PROMETAR_RAY_PORT (6379), PROMETAR_DASHBOARD_PORT (8265), PROMETAR_RAY_TEMP_DIR
# (/tmp/ray-$SLURM_JOB_ID), PROMETAR_RAY_WAIT_S (600), PROMETAR_RAY_HEAD_ARGS and
# PROMETAR_RAY_WORKER_ARGS (extra `ray start` flags). Ray token authentication: export
# RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH on a shared filesystem) before
# sbatch; srun passes the environment to every node.
set -euo pipefail

SWEEP=@SWEEP_Q@
GPUS_PER_NODE=@GPUS@
CPUS_PER_NODE=${SLURM_CPUS_PER_TASK:-@CPUS@}
RAY_PORT=${PROMETAR_RAY_PORT:-6379}
DASHBOARD_PORT=${PROMETAR_DASHBOARD_PORT:-8265}
RAY_TEMP_DIR=${PROMETAR_RAY_TEMP_DIR:-/tmp/ray-${SLURM_JOB_ID}}
WAIT_S=${PROMETAR_RAY_WAIT_S:-600}
read -r -a HEAD_ARGS <<< "${PROMETAR_RAY_HEAD_ARGS:-}"
read -r -a WORKER_ARGS <<< "${PROMETAR_RAY_WORKER_ARGS:-}"
export PYTHONUNBUFFERED=1
@SETUP@
if command -v scontrol >/dev/null 2>&1; then
    mapfile -t NODES < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
else
    IFS=',' read -r -a NODES <<< "$SLURM_JOB_NODELIST"
fi
if (( ${#NODES[@]} != @NODES@ )); then
    echo "prometar: expected @NODES@ nodes in SLURM_JOB_NODELIST, got ${#NODES[@]}: ${NODES[*]}" >&2
    exit 2
fi
HEAD_NODE=${NODES[0]}
HEAD_IP=${PROMETAR_HEAD_IP:-$(srun --nodes=1 --ntasks=1 -w "$HEAD_NODE" hostname --ip-address | awk '{print $1}')}
ADDRESS="${HEAD_IP}:${RAY_PORT}"

RAY_PIDS=()
stop_ray() {
    # Stop only what this script started: SIGTERM each srun step (srun forwards it; `ray start
    # --block` then stops its node's Ray processes), then wait for them.
    local pid
    for pid in "${RAY_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${RAY_PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
}
trap stop_ray EXIT
trap 'exit 143' TERM INT

echo "prometar: Ray head on $HEAD_NODE ($ADDRESS)"
srun --nodes=1 --ntasks=1 -w "$HEAD_NODE" \
    ray start --head --block --node-ip-address="$HEAD_IP" --port="$RAY_PORT" \
    --dashboard-host=127.0.0.1 --dashboard-port="$DASHBOARD_PORT" \
    --num-cpus="$CPUS_PER_NODE" --num-gpus="$GPUS_PER_NODE" --temp-dir="$RAY_TEMP_DIR" \
    ${HEAD_ARGS[@]+"${HEAD_ARGS[@]}"} &
RAY_PIDS+=("$!")
python -m orchestration.cluster wait "$ADDRESS" 1 --timeout "$WAIT_S"

for node in "${NODES[@]:1}"; do
    echo "prometar: Ray worker on $node"
    srun --nodes=1 --ntasks=1 -w "$node" \
        ray start --block --address="$ADDRESS" \
        --num-cpus="$CPUS_PER_NODE" --num-gpus="$GPUS_PER_NODE" --temp-dir="$RAY_TEMP_DIR" \
        ${WORKER_ARGS[@]+"${WORKER_ARGS[@]}"} &
    RAY_PIDS+=("$!")
done
python -m orchestration.cluster wait "$ADDRESS" "${#NODES[@]}" --timeout "$WAIT_S"

status=0
prometar-sweep @LAUNCH@ || status=$?
echo "prometar: launch exited with status $status"
exit "$status"
"""


def render_slurm(sweep: str | Path, *, nodes: int, gpus_per_node: int, cpus_per_node: int = 8,
                 partition: str | None = None, time_limit: str | None = None, account: str | None = None,
                 tracking_uri: str | None = None, data_root: str | None = None, output: str | None = None,
                 overrides: Sequence[str] = (), setup: Sequence[str] = (),
                 script_name: str = "prometar.sbatch") -> str:
    """An sbatch script running the sweep on a Ray cluster made of a SLURM allocation.

    Args:
        sweep: The sweep file, as seen from the submission folder (sbatch runs there).
        nodes: Nodes to allocate (1 head + ``nodes - 1`` workers; trials run on all of them).
        gpus_per_node: GPUs per node (``--gpus-per-node``; 0 for CPU nodes).
        cpus_per_node: CPUs per node given to Ray.
        partition: SLURM partition.
        time_limit: SLURM time limit (``HH:MM:SS`` or ``D-HH:MM:SS``).
        account: SLURM account.
        tracking_uri: MLflow tracking URI (a server, or SQLite on the shared filesystem).
        data_root: Dataset root on the shared filesystem.
        output: Output folder on the shared filesystem.
        overrides: ``KEY=VALUE`` overrides passed to the launch.
        setup: Shell lines run first on the batch node (``module load ...``, ``source .venv/bin/activate``).
        script_name: The script's file name, for the usage line.

    Returns:
        The script text.

    Raises:
        ClusterError: Bad node, GPU or CPU counts (names the option).
        orchestration.spec.SpecError: A bad sweep file or override.
    """
    if nodes < 1:
        raise ClusterError(f"--nodes: must be 1 or more, got {nodes}")
    if gpus_per_node < 0:
        raise ClusterError(f"--gpus-per-node: must be 0 or more, got {gpus_per_node}")
    if cpus_per_node < 1:
        raise ClusterError(f"--cpus-per-node: must be 1 or more, got {cpus_per_node}")
    if time_limit is not None and not re.fullmatch(r"(\d+-)?\d+(:\d{1,2}){0,2}", time_limit):
        raise ClusterError(f"--time: expected MINUTES, HH:MM:SS or D-HH:MM:SS, got {time_limit!r}")
    spec = _validated(sweep, overrides)
    extra = ""
    if gpus_per_node:
        extra += f"#SBATCH --gpus-per-node={gpus_per_node}\n"
    for flag, value in (("partition", partition), ("time", time_limit), ("account", account)):
        if value:
            extra += f"#SBATCH --{flag}={_sbatch_value(flag, value)}\n"
    launch = shlex.join(launch_args(str(sweep), address="@ADDR@", tracking_uri=tracking_uri, data_root=data_root,
                                    output=output, overrides=overrides)).replace("@ADDR@", '"$ADDRESS"')
    replacements = {
        "@SWEEP_NAME@": _slug(spec.name), "@SWEEP@": str(sweep), "@SCRIPT_NAME@": script_name,
        "@NODES@": str(nodes), "@CPUS@": str(cpus_per_node), "@GPUS@": str(gpus_per_node),
        "@SBATCH_EXTRA@": extra, "@SWEEP_Q@": shlex.quote(str(sweep)),
        "@SETUP@": "\n".join(setup) + ("\n" if setup else ""), "@LAUNCH@": launch,
    }
    text = _SLURM_TEMPLATE
    for marker, value in replacements.items():
        text = text.replace(marker, value)
    return text


def _sbatch_value(flag: str, value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.,:+-]+", value):
        raise ClusterError(f"--{flag}: unexpected characters in {value!r}")
    return value


# --------------------------------------------------------------------------------------------
# KubeRay

DEFAULT_IMAGE = "prometar:latest"
SWEEP_MOUNT = "/etc/prometar/sweep"
DATA_MOUNT = "/data"
OUTPUT_MOUNT = "/outputs"
IMAGE_UID = 1000
"""The non-root user of ``docker/Dockerfile``; pods run as it and own the mounted volumes."""


def render_rayjob(sweep: str | Path, *, image: str = DEFAULT_IMAGE, workers: int = 1, gpus_per_worker: int = 1,
                  worker_cpus: int = 8, worker_memory: str = "32Gi", head_cpus: int = 4,
                  head_memory: str = "16Gi", data_claim: str = "prometar-data",
                  output_claim: str = "prometar-outputs", tracking_uri: str | None = None,
                  namespace: str | None = None, overrides: Sequence[str] = (), token_auth: bool = True,
                  ttl_seconds: int = 3600) -> str:
    """A KubeRay ``RayJob`` manifest (preceded by a ``ConfigMap`` holding the sweep file).

    The head runs the launch and no trials (``num-gpus: 0``, and it gets no GPU); a worker group of
    ``workers`` pods with ``gpus_per_worker`` GPUs each runs the trials. Data is mounted read-only
    from the ``data_claim`` PersistentVolumeClaim at ``/data``; outputs (Ray storage, artifacts,
    and the SQLite ledger when no ``tracking_uri`` is given) go to ``output_claim`` at ``/outputs``
    on every pod (a ReadWriteMany claim).

    Args:
        sweep: The sweep file; its text is embedded in the ConfigMap.
        image: The container image (``docker/Dockerfile``).
        workers: Worker pods.
        gpus_per_worker: GPUs per worker pod (``nvidia.com/gpu``).
        worker_cpus: CPUs per worker pod.
        worker_memory: Memory per worker pod (Kubernetes quantity).
        head_cpus: CPUs of the head pod.
        head_memory: Memory of the head pod.
        data_claim: PVC with the datasets.
        output_claim: PVC for outputs.
        tracking_uri: MLflow tracking URI (default: SQLite under ``/outputs``).
        namespace: Namespace written into the manifests (default: none, ``kubectl -n`` decides).
        overrides: ``KEY=VALUE`` overrides passed to the launch.
        token_auth: Enable Ray token authentication (KubeRay ≥ 1.5.1 ``authOptions``).
        ttl_seconds: Seconds the finished RayJob's cluster is kept before deletion.

    Returns:
        Multi-document YAML: the ConfigMap, then the RayJob.

    Raises:
        ClusterError: Bad counts (names the option).
        orchestration.spec.SpecError: A bad sweep file or override.
    """
    import ray

    for flag, value, low in (("--workers", workers, 1), ("--gpus-per-worker", gpus_per_worker, 0),
                             ("--worker-cpus", worker_cpus, 1), ("--head-cpus", head_cpus, 1)):
        if value < low:
            raise ClusterError(f"{flag}: must be {low} or more, got {value}")
    spec = _validated(sweep, overrides)
    name = _slug(f"prometar-{spec.name}")
    sweep_file = f"{_slug(spec.name)}.yaml"
    entry = launch_args(f"{SWEEP_MOUNT}/{sweep_file}", address="auto",
                        tracking_uri=tracking_uri or f"sqlite:///{OUTPUT_MOUNT}/mlflow.db",
                        data_root=DATA_MOUNT, output=OUTPUT_MOUNT, overrides=overrides)
    meta = {"name": name, "labels": {"app.kubernetes.io/name": "prometar", "prometar/sweep": _slug(spec.name)}}
    if namespace:
        meta["namespace"] = namespace
    volumes = [
        {"name": "data", "persistentVolumeClaim": {"claimName": data_claim, "readOnly": True}},
        {"name": "outputs", "persistentVolumeClaim": {"claimName": output_claim}},
        {"name": "sweep", "configMap": {"name": f"{name}-sweep"}},
        {"name": "shm", "emptyDir": {"medium": "Memory"}},
    ]
    mounts = [
        {"name": "data", "mountPath": DATA_MOUNT, "readOnly": True},
        {"name": "outputs", "mountPath": OUTPUT_MOUNT},
        {"name": "sweep", "mountPath": SWEEP_MOUNT, "readOnly": True},
        {"name": "shm", "mountPath": "/dev/shm"},
    ]
    env = [{"name": key, "value": value} for key, value in JOB_ENV_VARS.items()]
    security = {"runAsUser": IMAGE_UID, "runAsGroup": IMAGE_UID, "fsGroup": IMAGE_UID}  # the image's user
    head = {
        "rayStartParams": {"num-gpus": "0", "dashboard-host": "0.0.0.0"},
        "template": {"spec": {"containers": [{
            "name": "ray-head", "image": image, "env": env,
            "ports": [{"containerPort": 6379, "name": "gcs-server"}, {"containerPort": 8265, "name": "dashboard"},
                      {"containerPort": 10001, "name": "client"}],
            "resources": {"requests": {"cpu": str(head_cpus), "memory": head_memory},
                          "limits": {"cpu": str(head_cpus), "memory": head_memory}},
            "volumeMounts": mounts,
        }], "volumes": volumes, "securityContext": security}},
    }
    gpu = {"nvidia.com/gpu": str(gpus_per_worker)} if gpus_per_worker else {}
    worker = {
        "groupName": "gpu-workers" if gpus_per_worker else "cpu-workers",
        "replicas": workers, "minReplicas": workers, "maxReplicas": workers,
        "rayStartParams": {"num-gpus": str(gpus_per_worker)},
        "template": {"spec": {"containers": [{
            "name": "ray-worker", "image": image, "env": env,
            "resources": {"requests": {"cpu": str(worker_cpus), "memory": worker_memory, **gpu},
                          "limits": {"cpu": str(worker_cpus), "memory": worker_memory, **gpu}},
            "volumeMounts": mounts,
        }], "volumes": volumes, "securityContext": security}},
    }
    cluster: dict[str, Any] = {"rayVersion": ray.__version__}
    if token_auth:
        cluster["authOptions"] = {"mode": "token"}
    cluster.update({"headGroupSpec": head, "workerGroupSpecs": [worker]})
    rayjob = {
        "apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": meta,
        "spec": {
            "entrypoint": shlex.join(["prometar-sweep", *entry]),
            "submissionMode": "K8sJobMode",
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": ttl_seconds,
            "backoffLimit": 0,
            "rayClusterSpec": cluster,
        },
    }
    config_map = {"apiVersion": "v1", "kind": "ConfigMap",
                  "metadata": {**meta, "name": f"{name}-sweep"},
                  "data": {sweep_file: Path(sweep).read_text()}}
    header = (f"# Generated by `prometar-sweep k8s` for the sweep {spec.name} ({sweep}).\n"
              f"# Apply with: kubectl apply -f <this file>; follow with: kubectl get rayjob {name} -w\n")
    return header + yaml.dump_all([config_map, rayjob], Dumper=_ManifestDumper, sort_keys=False,
                                  default_flow_style=False)


class _ManifestDumper(yaml.SafeDumper):
    """Plain Kubernetes YAML: no anchors or aliases, multi-line strings as ``|`` blocks."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_ManifestDumper.add_representer(str, _represent_str)


# --------------------------------------------------------------------------------------------
# Helpers


def _validated(sweep: str | Path, overrides: Sequence[str]) -> Any:
    from orchestration.spec import load_sweep
    from prometar.config import parse_override

    parsed = dict(parse_override(item) for item in overrides)
    return load_sweep(sweep, overrides=parsed or None)


def _slug(name: str) -> str:
    """A DNS-1123 label (Kubernetes names, SLURM job names): lower case, digits and ``-``."""
    slug = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    return slug[:63].rstrip("-") or "sweep"


def _main(argv: Sequence[str] | None = None) -> int:
    """``python -m orchestration.cluster wait ADDRESS N [--timeout S]`` (used by the sbatch script)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m orchestration.cluster")
    sub = parser.add_subparsers(dest="command", required=True)
    wait = sub.add_parser("wait", help="wait until N Ray nodes are alive")
    wait.add_argument("address")
    wait.add_argument("count", type=int)
    wait.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    try:
        alive = wait_for_nodes(args.address, args.count, timeout_s=args.timeout)
    except (ClusterError, ConnectionError) as err:
        print(f"prometar: {err}", file=sys.stderr)
        return 1
    print(f"prometar: {alive} Ray node(s) alive at {args.address}")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
