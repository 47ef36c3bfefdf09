"""A tracking server lost while a launch runs ends the launch with one line (exit 1) within a
bounded time, and a relaunch against the server, back again, completes the sweep.

``mlflow server`` on 127.0.0.1 over a SQLite backend (``tests/servers.py``); each launch is its own
process with a local Ray (2 CPUs), the first one's workers carrying the fault hook (``faults.py``).
The first trial is held until the test has stopped the server: nothing races the clock.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import faults as fault_injection
import pytest
import yaml
from mlflow import MlflowClient
from servers import start_mlflow
from tiny import TINY_OVERRIDES

from orchestration.sweeps.planning import load_plan

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(900)]

OVERRIDES = {**TINY_OVERRIDES, "optim.epochs": 2}


FIRST_LAUNCH = """
import sys
from pathlib import Path

import faults
from orchestration.cli import main
from orchestration.launch.ray_session import start_local_ray

start_local_ray(num_cpus=2, num_gpus=0, runtime_env=faults.runtime_env(Path(sys.argv[1]), HF_HUB_OFFLINE="1"))
main(sys.argv[2:])
"""
"""The first launch: its own process (it ends, as a launch whose store was lost does) with a local
Ray whose workers carry the fault hook."""


def test_a_server_lost_mid_launch_ends_it_and_a_relaunch_completes(tmp_path: Path) -> None:
    from prometar.toy.miniature import write_miniatures

    data_root = tmp_path / "data"
    write_miniatures(data_root, ["eurosat"])
    sweep = tmp_path / "lost.yaml"
    sweep.write_text(
        yaml.safe_dump(
            {
                "name": "lost",
                "protocol": "base2new",
                "overrides": OVERRIDES,
                "grid": {"method": ["ivlp"], "dataset": ["eurosat"], "seed": [1, 2], "shots": [2]},
                "resources": {"default": {"cpu": 1}},
                "max_failures": 1,
            },
            sort_keys=False,
        )
    )
    keys = sorted(t.key for t in load_plan(sweep).trials)
    faults = tmp_path / "faults.json"
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "disabled",  # throw-away local test instances on 127.0.0.1
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join(
            [str(Path(fault_injection.__file__).parent), os.environ.get("PYTHONPATH", "")]
        ),
    }
    backend = f"sqlite:///{tmp_path / 'server.db'}"
    marker = f"loss-{uuid.uuid4().hex[:8]}"

    def serve():
        return start_mlflow(
            tmp_path, marker, backend_store_uri=backend, artifacts_destination=str(tmp_path / "art"), env={}
        )

    server = serve()
    held = [faults.with_name(f"{key}.held") for key in keys]

    ended = threading.Event()

    def stop_server_then_release() -> None:  # the first held trial is running with a checkpoint
        while not any(path.exists() for path in held):
            if ended.wait(0.1):
                return
        server.process.stop()
        faults.with_name("release").touch()

    faults.write_text(json.dumps({key: "hold" for key in keys}))
    stopper = threading.Thread(target=stop_server_then_release, daemon=True)
    stopper.start()
    args = ["launch", str(sweep), "--data-root", str(data_root), "--max-concurrent", "1"]
    try:
        started = time.monotonic()
        first = subprocess.run(
            [
                sys.executable,
                "-c",
                FIRST_LAUNCH,
                str(faults),
                *args,
                "--output",
                str(tmp_path / "out1"),
                "--tracking-uri",
                server.url,
            ],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=800,
        )
        elapsed = time.monotonic() - started
    finally:
        ended.set()
        faults.with_name("release").touch()
        stopper.join(timeout=60)
        server.process.stop()
    assert first.returncode == 1, first.stdout + first.stderr
    assert "Traceback" not in first.stderr
    assert f"tracking URI {server.url} stopped answering during the launch" in first.stderr
    assert elapsed < 600  # ends within a bounded time (MLflow's own retries would take many minutes)

    again = serve()  # the same backend store, behind a new server
    try:
        relaunch = subprocess.run(
            [
                sys.executable,
                "-m",
                "orchestration.cli",
                *args,
                "--output",
                str(tmp_path / "out2"),
                "--tracking-uri",
                again.url,
            ],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=800,
        )
        assert relaunch.returncode == 0, relaunch.stdout + relaunch.stderr
        client = MlflowClient(again.url)
        experiment = client.get_experiment_by_name("lost").experiment_id
        runs = [r for r in client.search_runs([experiment]) if "prometar.trial_key" in r.data.tags]
    finally:
        again.process.stop()
    assert sorted(r.data.tags["prometar.trial_key"] for r in runs) == keys  # one run per key
    assert all(r.info.status == "FINISHED" for r in runs)
