"""A tracking server lost while a launch runs ends the launch with one line (exit 1) within a
bounded time, and a relaunch against the server, back again, completes the sweep.

``mlflow server`` on 127.0.0.1 over a SQLite backend (``tests/servers.py``); one local Ray
instance (2 CPUs) whose workers carry the fault hook (``faults.py``). The first trial is held
until the test has stopped the server: nothing races the clock.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import faults as fault_injection
import pytest
import yaml
from click.testing import CliRunner
from mlflow import MlflowClient
from servers import start_mlflow

from orchestration.cli import main
from orchestration.launch.ray_session import start_local_ray
from orchestration.sweeps.planning import load_plan

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(900)]

OVERRIDES = {
    "backbone.name": "tiny-test",
    "backbone.pretrained": None,
    "backbone.precision": "fp32",
    "optim.epochs": 2,
    "data.batch_size": 2,
    "data.num_workers": 0,
    "prompts.text_depth": 1,
    "prompts.vision_depth": 1,
}


@pytest.fixture(scope="module")
def faults(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("faults") / "faults.json"
    path.write_text("{}")
    return path


@pytest.fixture(scope="module")
def ray_address(faults: Path) -> Iterator[str]:
    import ray

    saved = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"  # a throw-away local test instance on 127.0.0.1
    start_local_ray(
        num_cpus=2, num_gpus=0, runtime_env=fault_injection.runtime_env(faults, HF_HUB_OFFLINE="1")
    )
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        if saved is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = saved


def test_a_server_lost_mid_launch_ends_it_and_a_relaunch_completes(
    tmp_path: Path, faults: Path, ray_address: str
) -> None:
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
    backend = f"sqlite:///{tmp_path / 'server.db'}"
    marker = f"loss-{uuid.uuid4().hex[:8]}"

    def serve():
        return start_mlflow(
            tmp_path, marker, backend_store_uri=backend, artifacts_destination=str(tmp_path / "art"), env={}
        )

    server = serve()
    held = [faults.with_name(f"{key}.held") for key in keys]

    def stop_server_then_release() -> None:  # the first held trial is running with a checkpoint
        while not any(path.exists() for path in held):
            time.sleep(0.1)
        server.process.stop()
        faults.with_name("release").touch()

    faults.write_text(json.dumps({key: "hold" for key in keys}))
    stopper = threading.Thread(target=stop_server_then_release, daemon=True)
    stopper.start()
    args = ["launch", str(sweep), "--data-root", str(data_root), "--address", ray_address]
    args += ["--max-concurrent", "1"]
    try:
        started = time.monotonic()
        result = CliRunner().invoke(
            main, [*args, "--output", str(tmp_path / "out1"), "--tracking-uri", server.url]
        )
        elapsed = time.monotonic() - started
    finally:
        faults.with_name("release").touch()
        stopper.join(timeout=60)
        server.process.stop()
        faults.write_text("{}")
        for path in (*held, faults.with_name("release")):
            path.unlink(missing_ok=True)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert f"tracking URI {server.url} stopped answering during the launch" in result.output
    assert elapsed < 600  # ends within a bounded time (MLflow's own retries would take many minutes)

    again = serve()  # the same backend store, behind a new server
    try:
        result = CliRunner().invoke(
            main, [*args, "--output", str(tmp_path / "out2"), "--tracking-uri", again.url]
        )
        assert result.exit_code == 0, result.output
        client = MlflowClient(again.url)
        experiment = client.get_experiment_by_name("lost").experiment_id
        runs = [r for r in client.search_runs([experiment]) if "prometar.trial_key" in r.data.tags]
    finally:
        again.process.stop()
    assert sorted(r.data.tags["prometar.trial_key"] for r in runs) == keys  # one run per key
    assert all(r.info.status == "FINISHED" for r in runs)
