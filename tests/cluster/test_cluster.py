"""A real multi-node Ray cluster on 127.0.0.1: ``submit``, the cluster drill (node loss with a
tracking server and object storage), duplicate submissions, and the generated SLURM script run
under a fake one-node allocation.

The drill: a sweep submitted with ``--tracking-uri`` (``mlflow server`` over PostgreSQL, artifacts
proxied to S3) and ``--storage s3://...`` (moto's S3 server; ``tests/servers.py``), so the nodes
share no local folder for trial outputs; the worker node is killed while it runs trials held after
their first checkpoint (``tests/pipeline/faults.py``, released by the test); the sweep completes,
PostgreSQL holds exactly one FINISHED run per trial key and none RUNNING, the trials retried on the
head continue their own runs with each epoch logged once, and no checkpoint is left in the bucket.

The cluster (module-scoped, shared by the tests that need it) is two ``ray start --block``
processes: a head (1 CPU, dashboard with the Jobs API) and a worker node (2 CPUs, its own
``--temp-dir``), both with token authentication on (``RAY_AUTH_MODE=token`` and a random
``RAY_AUTH_TOKEN``). Everything stays on 127.0.0.1: on Linux Ray replaces a loopback node address
by the machine's routable one unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, and with that setting
``ray start --address`` refuses to add a node, so the worker node is started through a two-line
wrapper that lifts only that refusal (:data:`LOOPBACK_WORKER`). Every process the tests start
carries a marker in its environment; at the end
(also on failure) each is stopped by its own id: the process groups of the ``ray start`` processes,
then every remaining descendant and every process carrying the marker. Nothing runs ``ray stop``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from servers import free_port
from tiny import TINY_OVERRIDES

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MARKER = "PROMETAR_TEST_CLUSTER"
DATASETS = ["caltech101", "eurosat"]
OBJECT_STORE = "100000000"
LOOPBACK_WORKER = """
import sys
import ray._private.ray_constants as constants
import ray._private.services as services
constants.ENABLE_RAY_CLUSTER = True  # allow `ray start --address` ...
services.resolve_ip_for_localhost = lambda host: host  # ... and keep its 127.0.0.1 addresses
from ray.scripts.scripts import main
sys.argv = ["ray", *sys.argv[1:]]
main()
"""
"""``python -c LOOPBACK_WORKER start ...`` = ``ray start ...`` for a worker node on 127.0.0.1 (test only)."""


# --------------------------------------------------------------------------------------------
# Processes: start, find, stop (by id only)


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (children first)."""
    children, found, todo = _children_map(), [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def marked(marker: str) -> list[int]:
    """Live processes whose environment carries ``MARKER=marker`` (started by these tests)."""
    needle = f"{MARKER}={marker}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if needle in (entry / "environ").read_bytes().split(b"\0"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def survivors(marker: str, grace_s: float = 15.0) -> list[int]:
    """Marked processes still alive after ``grace_s``: a SIGKILLed process needs a moment to exit."""
    deadline = time.monotonic() + grace_s
    while True:
        alive = [pid for pid in marked(marker) if _alive(pid)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


def kill_pids(pids: list[int], sig: int = signal.SIGKILL) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def stop_tree(proc: subprocess.Popen, marker: str | None = None, *, grace_s: float = 20.0) -> None:
    """Stop a process started with ``start_new_session=True`` and everything it spawned; with
    ``marker``, also every process carrying it (what the whole test started)."""
    tree = descendants(proc.pid)
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)
    kill_pids([pid for pid in tree if _alive(pid)])
    if marker is not None:
        kill_pids(marked(marker))


def wait_for(predicate, timeout_s: float, what: str, poll_s: float = 1.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")


# --------------------------------------------------------------------------------------------
# Test data: a shipped project folder, miniature datasets, tiny sweeps


def write_sweep(
    folder: Path, name: str, *, seeds: list[int], datasets: list[str] = DATASETS, epochs: int = 1
) -> Path:
    data = {
        "name": name,
        "protocol": "base2new",
        "overrides": {**TINY_OVERRIDES, "optim.epochs": epochs},
        "grid": {"method": ["ivlp"], "dataset": datasets, "seed": seeds, "shots": [2]},
        "resources": {"default": {"cpu": 1, "gpu": 0}},
        "max_failures": 2,
    }
    path = folder / "sweeps" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def make_project(root: Path) -> Path:
    """What a user ships: the code (copied, so the job runs the shipped copy) and sweep files."""
    project = root / "project"
    for package in ("prometar", "orchestration"):
        shutil.copytree(
            REPO / package, project / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
    return project


def finished_runs(tracking_uri: str, experiment: str) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return [
        r
        for r in client.search_runs([exp.experiment_id], max_results=1000)
        if "prometar.trial_key" in r.data.tags
    ]


def base_env(root: Path, marker: str, token: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RAY_", "PYTEST_", "MLFLOW_")) and k not in ("PYTHONPATH",)
    }
    env.update(
        {
            "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            MARKER: marker,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": token,
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # node addresses stay 127.0.0.1
            "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
            # notice a lost node within seconds rather than the default half minute
            "RAY_health_check_period_ms": "1000",
            "RAY_health_check_timeout_ms": "1000",
            "RAY_health_check_failure_threshold": "3",
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "OMP_NUM_THREADS": "1",
            "HOME": str(root / "home"),  # ~/.ray/auth_token of the user is neither read nor written
        }
    )
    (root / "home").mkdir(exist_ok=True)
    return env


@dataclass
class LocalCluster:
    root: Path
    marker: str
    token: str
    env: dict[str, str]
    gcs: str
    dashboard: str
    head: subprocess.Popen
    worker: subprocess.Popen
    project: Path
    data_root: Path
    tracking_uri: str
    logs: list[Path] = field(default_factory=list)

    def submit(self, sweep: Path, *extra: str, token: str | None = None) -> list[str]:
        return [
            str(BIN / "prometar-sweep"),
            "submit",
            str(sweep),
            "--address",
            self.dashboard,
            "--working-dir",
            str(self.project),
            "--token",
            token or self.token,
            "--tracking-uri",
            self.tracking_uri,
            "--data-root",
            str(self.data_root),
            "--output",
            str(self.root / "out"),
            *extra,
        ]


def alive_nodes(dashboard: str, token: str) -> int:
    return len(alive_node_ips(dashboard, token))


def alive_node_ips(dashboard: str, token: str) -> list[str]:
    try:
        response = requests.get(
            f"{dashboard}/api/v0/nodes",
            headers={"Authorization": f"Bearer {token}"},
            params={"limit": 100},
            timeout=5,
        )
        if response.status_code != 200:
            return []
        rows = response.json()["data"]["result"]["result"]
    except (requests.RequestException, KeyError, ValueError):
        return []
    return [row.get("node_ip", "") for row in rows if row.get("state") == "ALIVE"]


def start_node(args: list[str], env: dict[str, str], log: Path, *, head: bool) -> subprocess.Popen:
    ray = [str(BIN / "ray")] if head else [sys.executable, "-c", LOOPBACK_WORKER]
    with log.open("wb") as sink:
        return subprocess.Popen(
            [*ray, "start", "--block", *args],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


@pytest.fixture(scope="module")
def cluster(server_stack) -> Iterator[LocalCluster]:
    from prometar.toy.miniature import write_miniatures

    root = Path(tempfile.mkdtemp(prefix="pmrc", dir="/tmp"))  # short: Ray's socket paths are length-limited
    marker = root.name
    token = secrets.token_hex(16)
    env = base_env(root, marker, token)
    env.update(server_stack.env())  # every node reaches the S3 server through the standard AWS variables
    gcs_port, dash_port = free_port(), free_port()
    started: list[subprocess.Popen] = []
    try:
        head = start_node(
            [
                "--head",
                "--node-ip-address=127.0.0.1",
                f"--port={gcs_port}",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={dash_port}",
                f"--ray-client-server-port={free_port()}",
                f"--dashboard-agent-listen-port={free_port()}",
                "--num-cpus=1",
                "--num-gpus=0",
                f"--object-store-memory={OBJECT_STORE}",
                f"--temp-dir={root / 'head'}",
                "--disable-usage-stats",
            ],
            env,
            root / "head.log",
            head=True,
        )
        started.append(head)
        dashboard = f"http://127.0.0.1:{dash_port}"
        wait_for(lambda: alive_nodes(dashboard, token) >= 1 or head.poll() is not None, 180, "the Ray head")
        assert head.poll() is None, (root / "head.log").read_text()[-3000:]
        worker = start_node(
            [
                f"--address=127.0.0.1:{gcs_port}",
                "--node-ip-address=127.0.0.1",
                "--num-cpus=2",
                "--num-gpus=0",
                '--resources={"worker_node": 1}',
                f"--dashboard-agent-listen-port={free_port()}",
                f"--object-store-memory={OBJECT_STORE}",
                f"--temp-dir={root / 'worker'}",
            ],
            env,
            root / "worker.log",
            head=False,
        )
        started.append(worker)
        wait_for(
            lambda: alive_nodes(dashboard, token) >= 2 or worker.poll() is not None, 180, "the worker node"
        )
        assert worker.poll() is None, (root / "worker.log").read_text()[-3000:]
        assert alive_node_ips(dashboard, token) == ["127.0.0.1", "127.0.0.1"]
        data_root = root / "data"
        write_miniatures(data_root, DATASETS)
        yield LocalCluster(
            root=root,
            marker=marker,
            token=token,
            env=env,
            gcs=f"127.0.0.1:{gcs_port}",
            dashboard=dashboard,
            head=head,
            worker=worker,
            project=make_project(root),
            data_root=data_root,
            tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
            logs=[root / "head.log", root / "worker.log"],
        )
    finally:
        for proc in reversed(started):
            stop_tree(proc, marker)
        kill_pids(marked(marker))
        leftovers = survivors(marker)
        shutil.rmtree(root, ignore_errors=True)
        assert not leftovers, f"processes left running: {[(p, cmdline(p)) for p in leftovers]}"


# --------------------------------------------------------------------------------------------
# SLURM: the generated script under a fake one-node allocation (runs before the shared cluster
# exists, so the two do not compete for the CPUs)

SRUN_SHIM = """#!/usr/bin/env bash
# Stand-in for srun on a one-node fake allocation: drop srun's options, run the command here.
while (( $# )); do
    case "$1" in
        -w|-N|-n|-c|--nodelist|--nodes|--ntasks) shift 2 ;;
        -*) shift ;;
        *) break ;;
    esac
done
exec "$@"
"""


def test_slurm_script_runs_a_sweep_on_a_fake_allocation(tmp_path_factory) -> None:
    from prometar.toy.miniature import write_miniatures

    root = Path(tempfile.mkdtemp(prefix="pmrs", dir="/tmp"))
    marker = root.name
    token = secrets.token_hex(16)
    env = base_env(root, marker, token)
    shim = root / "shim"
    shim.mkdir()
    (shim / "srun").write_text(SRUN_SHIM)
    (shim / "srun").chmod(0o755)
    project = root / "project"
    write_sweep(project, "tiny-slurm", seeds=[1], datasets=["eurosat"])
    write_miniatures(root / "data", ["eurosat"])
    script = root / "job.sbatch"
    tracking = f"sqlite:///{root / 'mlflow.db'}"
    render = subprocess.run(
        [
            str(BIN / "prometar-sweep"),
            "slurm",
            "sweeps/tiny-slurm.yaml",
            "--nodes",
            "1",
            "--gpus-per-node",
            "0",
            "--cpus-per-node",
            "1",
            "--time",
            "00:20:00",
            "--data-root",
            str(root / "data"),
            "--output",
            str(root / "out"),
            "--tracking-uri",
            tracking,
            "-o",
            str(script),
        ],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert render.returncode == 0, render.stderr
    subprocess.run(["bash", "-n", str(script)], check=True)
    env.update(
        {
            "PATH": f"{shim}{os.pathsep}{env['PATH']}",
            "SLURM_JOB_ID": "4242",
            "SLURM_JOB_NODELIST": "localhost",
            "SLURM_NNODES": "1",
            "SLURM_CPUS_PER_TASK": "1",
            "SLURM_SUBMIT_DIR": str(project),
            "PROMETAR_HEAD_IP": "127.0.0.1",
            "PROMETAR_RAY_PORT": str(free_port()),
            "PROMETAR_DASHBOARD_PORT": str(free_port()),
            "PROMETAR_RAY_TEMP_DIR": str(root / "ray"),
            "PROMETAR_RAY_WAIT_S": "180",
            "PROMETAR_RAY_HEAD_ARGS": f"--ray-client-server-port={free_port()} "
            f"--dashboard-agent-listen-port={free_port()} "
            f"--object-store-memory={OBJECT_STORE} --disable-usage-stats",
        }
    )
    log = root / "slurm.out"
    with log.open("wb") as sink:
        job = subprocess.Popen(
            ["bash", str(script)],
            cwd=project,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        try:
            rc = job.wait(timeout=600)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the sbatch script did not finish:\n{log.read_text()[-4000:]}")
        text = log.read_text()
        assert rc == 0, text[-4000:]
        assert "1 Ray node(s) alive at 127.0.0.1" in text
        runs = finished_runs(tracking, "tiny-slurm")
        assert [r.info.status for r in runs] == ["FINISHED"], text[-4000:]
        # the trap stopped every Ray process of the script (nothing of ours is left running)
        wait_for(
            lambda: not [p for p in marked(marker) if _alive(p)], 60, "the script's Ray processes to stop"
        )
    finally:
        stop_tree(job, marker)
        shutil.rmtree(root, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Ray Jobs on the two-node cluster


def test_submit_follow_runs_the_sweep_on_the_cluster(cluster: LocalCluster) -> None:
    sweep = write_sweep(cluster.project, "tiny-submit", seeds=[1, 2])
    result = subprocess.run(
        cluster.submit(sweep, "--follow"), env=cluster.env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "submitted tiny-submit-1" in result.stderr and "job tiny-submit-1: SUCCEEDED" in result.stderr
    assert "[tiny-submit] finished 4" in result.stdout  # the launch's own summary, streamed from the job
    runs = finished_runs(cluster.tracking_uri, "tiny-submit")
    assert sorted(r.info.status for r in runs) == ["FINISHED"] * 4
    assert len({r.data.tags["prometar.trial_key"] for r in runs}) == 4
    # the job ran the shipped copy of the code, not the installed package
    assert "python -m orchestration.cli launch sweeps/tiny-submit.yaml --address auto" in result.stderr

    from orchestration.cluster.jobs import job_status

    assert job_status(cluster.dashboard, "tiny-submit-1", token=cluster.token) == "SUCCEEDED"
    assert job_status(cluster.dashboard, "tiny-submit-9", token=cluster.token) is None
    status = subprocess.run(
        [
            str(BIN / "prometar-sweep"),
            "status",
            str(sweep),
            "--tracking-uri",
            cluster.tracking_uri,
            "--address",
            cluster.dashboard,
            "--token",
            cluster.token,
        ],
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert status.returncode == 0, status.stderr
    assert "done 4" in status.stdout and "job tiny-submit-1: SUCCEEDED" in status.stdout


def test_duplicate_submission_is_refused(cluster: LocalCluster) -> None:
    from orchestration.cluster.jobs import connect

    sweep = write_sweep(cluster.project, "tiny-dup", seeds=[1], datasets=["eurosat"])
    first = subprocess.run(
        cluster.submit(sweep), env=cluster.env, capture_output=True, text=True, timeout=180
    )
    try:
        assert first.returncode == 0, first.stderr
        again = subprocess.run(
            cluster.submit(sweep), env=cluster.env, capture_output=True, text=True, timeout=180
        )
        assert again.returncode == 2
        assert "submission 'tiny-dup-1' already exists" in again.stderr and "--attempt 2" in again.stderr
        jobs = [
            job
            for job in connect(cluster.dashboard, cluster.token).list_jobs()
            if job.submission_id == "tiny-dup-1"
        ]
        assert len(jobs) == 1  # refused, not duplicated
    finally:
        connect(cluster.dashboard, cluster.token).stop_job("tiny-dup-1")  # no need to train it


def test_wrong_token_is_refused_with_a_clear_message(cluster: LocalCluster) -> None:
    sweep = write_sweep(cluster.project, "tiny-auth", seeds=[1], datasets=["eurosat"])
    result = subprocess.run(
        cluster.submit(sweep, token="not-the-token"),
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 2
    assert "refused" in result.stderr and "--token" in result.stderr


SERVICE_TITLES = ("ray::IDLE", "ray::JobSupervisor", "ray::DashboardAgent", "ray::RuntimeEnvAgent")


def _trial_processes(node_pid: int) -> list[int]:
    """Ray worker processes of a node that are busy with a task or actor (a trial)."""
    busy = []
    for pid in descendants(node_pid):
        line = cmdline(pid)
        if line.startswith("ray::") and not line.startswith(SERVICE_TITLES):
            busy.append(pid)
    return busy


def _runs_with_epochs(stack, experiment: str) -> list[tuple[str, bool]]:
    """(status, has logged an epoch) of the experiment's trial runs, read from PostgreSQL."""
    return [
        (status, bool(epochs))
        for status, epochs in stack.postgres.query(
            "SELECT r.status, EXISTS (SELECT 1 FROM metrics m WHERE m.run_uuid = r.run_uuid "
            "AND m.key = 'lr') FROM runs r JOIN experiments e ON r.experiment_id = e.experiment_id "
            "JOIN tags t ON t.run_uuid = r.run_uuid AND t.key = 'prometar.trial_key' WHERE e.name = %s",
            stack.database,
            (experiment,),
        )
    ]


TERMINAL_JOB_STATES = ("SUCCEEDED", "FAILED", "STOPPED")
CLUSTER_CPUS = 3
"""The head's CPU and the worker node's two (the ``cluster`` fixture): trials running at once."""


def _fault_injection() -> Any:
    """``tests/pipeline/faults.py``, the fault-injection hook of the Ray workers."""
    spec = importlib.util.spec_from_file_location("faults", REPO / "tests" / "pipeline" / "faults.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _job_state(cluster: LocalCluster, sub_id: str) -> str | None:
    from orchestration.cluster.jobs import job_status

    try:
        return job_status(cluster.dashboard, sub_id, token=cluster.token)
    except Exception:  # the dashboard busy while a node goes: ask again
        return None


def test_drill_node_loss_with_tracking_server_and_object_storage(cluster: LocalCluster, server_stack) -> None:
    """The cluster drill (module docstring): kill the worker node while its trials have checkpoints.

    Every trial is held after its first epoch (its checkpoint stored, its epoch logged) by the
    workers' fault-injection hook (``tests/pipeline/faults.py``) until the test releases them, so
    the kill finds the worker node busy with checkpointed trials however fast the machine is.
    """
    from mlflow import MlflowClient

    from orchestration.cluster.jobs import build_submission, connect
    from orchestration.sweeps.planning import load_plan

    fault_injection = _fault_injection()
    epochs = 3
    sweep = write_sweep(cluster.project, "drill", seeds=[3, 4], epochs=epochs)
    planned = {t.key for t in load_plan(sweep).trials}
    prefix = "drill/ray"
    output = cluster.root / "drill-out"
    faults = cluster.root / "drill-faults" / "faults.json"
    faults.parent.mkdir()
    faults.write_text(json.dumps({key: "hold" for key in planned}))
    # the submission `prometar-sweep submit` makes, with the workers' fault-injection hook added
    sub_id, entrypoint, runtime_env, _ = build_submission(
        sweep,
        working_dir=cluster.project,
        tracking_uri=server_stack.tracking_uri,
        data_root=str(cluster.data_root),
        output=str(output),
        storage=server_stack.storage(prefix),
    )
    hook = fault_injection.runtime_env(faults)
    runtime_env = {
        **runtime_env,
        "worker_process_setup_hook": hook["worker_process_setup_hook"],
        "env_vars": {**runtime_env["env_vars"], **hook["env_vars"]},
    }
    started = time.monotonic()
    client = connect(cluster.dashboard, cluster.token)
    client.submit_job(entrypoint=entrypoint, submission_id=sub_id, runtime_env=runtime_env)
    worker_node = cluster.worker.pid
    try:

        def held() -> list[str]:
            return [key for key in planned if faults.with_name(f"{key}.held").exists()]

        def every_cpu_holds_a_checkpointed_trial() -> bool:
            if _job_state(cluster, sub_id) in TERMINAL_JOB_STATES:
                return True
            logged = [
                epoch for status, epoch in _runs_with_epochs(server_stack, "drill") if status == "RUNNING"
            ]
            # the head's CPU and the worker node's two each hold a trial whose first epoch is logged
            return len(held()) == CLUSTER_CPUS and sum(logged) >= CLUSTER_CPUS

        wait_for(every_cpu_holds_a_checkpointed_trial, 600, "held trials with checkpoints", poll_s=0.5)
        assert _job_state(cluster, sub_id) not in TERMINAL_JOB_STATES, client.get_job_logs(sub_id)[-3000:]
        victims = _trial_processes(worker_node)
        assert victims, "no trial runs on the worker node"
        print(
            f"\nkilling the worker node (ray start pid {worker_node}) while it holds "
            f"{[cmdline(pid) for pid in victims]}"
        )
        tree = descendants(worker_node)
        os.killpg(worker_node, signal.SIGKILL)
        kill_pids(tree)
        cluster.worker.wait(timeout=30)
        faults.with_name("release").touch()  # the head's trial goes on; nothing is held from now on
        wait_for(lambda: _job_state(cluster, sub_id) in TERMINAL_JOB_STATES, 600, "the drill's end", poll_s=1)
        text = client.get_job_logs(sub_id)
        assert _job_state(cluster, sub_id) == "SUCCEEDED", text[-4000:]
        print("\n".join(line for line in text.splitlines() if line.startswith("[drill]")))
    finally:
        faults.with_name("release").touch()  # nothing stays held, whatever happened
    print(f"drill: {time.monotonic() - started:.0f} s from submission to the job's end")

    # PostgreSQL itself: every planned key FINISHED exactly once, nothing RUNNING, nothing else
    rows = server_stack.runs("drill")
    trial_rows = [(run_id, status, key) for run_id, status, key in rows if key]
    assert sorted(key for _, _, key in trial_rows) == sorted(planned)
    assert {status for _, status, _ in trial_rows} == {"FINISHED"}
    assert "RUNNING" not in {status for _, status, _ in rows}
    # the trials the lost node ran were retried on the head and continued their own runs
    client = MlflowClient(server_stack.tracking_uri)
    runs = [client.get_run(run_id) for run_id, _, _ in trial_rows]
    retried = [r for r in runs if int(r.data.tags.get("prometar.retries", "0") or 0) > 0]
    print(f"trials retried: {len(retried)}, runs lost: {len(planned) - len(trial_rows)}")
    assert retried
    for run in runs:  # epoch 1 of a retried trial was logged before the kill, and is not logged again
        assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == list(
            range(1, epochs + 1)
        )
        assert "prometar.checkpoint" not in run.data.tags
    # storage: the bucket, and nothing shared between the nodes' trial files
    objects = server_stack.s3.keys(server_stack.bucket, f"{prefix}/")
    assert objects and not [key for key in objects if "/checkpoint_" in key]
    experiment = client.get_experiment_by_name("drill").experiment_id
    artifacts = server_stack.s3.keys(server_stack.bucket, f"mlartifacts/{experiment}/")
    assert {key.split("/")[2] for key in artifacts if key.endswith("/prompts.pt")} == {
        r.info.run_id for r in runs
    }
    assert not (output / "trials").exists()
    assert alive_nodes(cluster.dashboard, cluster.token) == 1
