"""Launches through a real tracking server with object storage: ``mlflow server`` over PostgreSQL
with artifacts proxied to S3, and Ray storage on ``s3://`` (moto's server, all on 127.0.0.1;
``tests/servers.py``). One local Ray instance (2 CPUs) runs the trials; the AWS variables of the
S3 server reach the driver and the Ray workers as they would on a cluster's nodes.

The two-launch test is the acceptance test of "one MLflow run per trial key": a trial fails in the
first launch after its first epoch, and the second launch continues the same run from the
checkpoint that run names, in S3; each epoch is logged once, and no checkpoint of a FINISHED
trial is left in the bucket.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

import faults as fault_injection
import pytest
import yaml
from click.testing import CliRunner
from tiny import TINY_OVERRIDES, local_test_ray

from orchestration.cli import main
from orchestration.launch.runner import LaunchOptions, launch
from orchestration.sweeps.planning import load_plan

pytestmark = [pytest.mark.servers, pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(900)]

OVERRIDES = {key: value for key, value in TINY_OVERRIDES.items() if key != "optim.epochs"}
"""The epochs come from the launch (``--set optim.epochs=3``), not the sweep file."""
EPOCHS = 3


def write_sweep(folder: Path, name: str, seeds: list[int]) -> Path:
    data = {
        "name": name,
        "protocol": "base2new",
        "overrides": OVERRIDES,
        "grid": {"method": ["ivlp"], "dataset": ["eurosat"], "seed": seeds, "shots": [2]},
        "resources": {"default": {"cpu": 1}},
        "max_failures": 0,
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from prometar.toy.miniature import write_miniatures

    root = tmp_path_factory.mktemp("data")
    write_miniatures(root, ["eurosat"])
    return root


@pytest.fixture(scope="module")
def faults(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("faults") / "faults.json"
    path.write_text("{}")
    return path


@pytest.fixture(scope="module")
def aws_env(server_stack) -> Iterator[dict[str, str]]:
    """The S3 server's AWS variables in this process (the launch's driver) for the module."""
    env = server_stack.env()
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield env
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def local_ray(aws_env: dict[str, str], faults: Path) -> Iterator[None]:
    with local_test_ray(runtime_env=fault_injection.runtime_env(faults, HF_HUB_OFFLINE="1", **aws_env)):
        yield


def test_two_launches_one_run_per_trial_key_through_the_server(
    server_stack, local_ray, data_root: Path, faults: Path, tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    sweep = write_sweep(tmp_path, "srv-two", seeds=[1, 2])
    launched_with = {"optim.epochs": EPOCHS}  # as `launch --set optim.epochs=3`
    keys = {t.seed: t.key for t in load_plan(sweep, overrides=launched_with).trials}
    prefix = "two/ray"
    options = LaunchOptions(
        data_root=data_root,
        output=tmp_path / "out",
        tracking_uri=server_stack.tracking_uri,
        storage=server_stack.storage(prefix),
        overrides=launched_with,
        tables=False,
    )
    faults.write_text(json.dumps({keys[1]: "once"}))  # fails after its first epoch's checkpoint
    try:
        first = launch(sweep, options, stream=(tmp_path / "first.txt").open("w"))
    finally:
        faults.write_text("{}")
    assert (first.finished, first.failed) == (1, 1)

    rows = {key: (run_id, status) for run_id, status, key in server_stack.runs("srv-two") if key}
    assert {key: status for key, (_, status) in rows.items()} == {keys[1]: "FAILED", keys[2]: "FINISHED"}
    client = MlflowClient(server_stack.tracking_uri)
    failed = client.get_run(rows[keys[1]][0])
    checkpoint = failed.data.tags["prometar.checkpoint"]
    assert checkpoint.startswith(f"s3://{server_stack.bucket}/{prefix}/srv-two/t_{keys[1]}-")
    objects = server_stack.s3.keys(server_stack.bucket, f"{prefix}/")
    with_checkpoints = {key.split("/")[3] for key in objects if "/checkpoint_" in key}
    assert with_checkpoints == {checkpoint.split("/")[-2]}  # the FINISHED trial's are gone already

    second = launch(sweep, options, stream=(tmp_path / "second.txt").open("w"))
    assert (second.finished, second.failed, second.done_before) == (1, 0, 1)
    assert (
        "1 trial(s) continue the MLflow run an earlier launch left unfinished"
        in (tmp_path / "second.txt").read_text()
    )

    # PostgreSQL itself: one run per key, both FINISHED, the same run ids as before
    after = {key: (run_id, status) for run_id, status, key in server_stack.runs("srv-two") if key}
    assert after == {keys[1]: (rows[keys[1]][0], "FINISHED"), keys[2]: (rows[keys[2]][0], "FINISHED")}
    resumed = client.get_run(rows[keys[1]][0])
    tags = resumed.data.tags
    assert (tags["prometar.attempt"], tags["prometar.reopened_from"]) == ("2", "FAILED")
    assert "injected failure" in tags["prometar.previous_error"] and "prometar.error" not in tags
    assert tags["mlflow.parentRunId"] == second.parent_run_id
    for run_id in (rows[keys[1]][0], rows[keys[2]][0]):
        assert [m.step for m in client.get_metric_history(run_id, "loss")] == list(range(1, EPOCHS + 1))
    # artifacts went through the server to S3; no checkpoint is left; one experiment folder in Ray storage
    experiment = client.get_experiment_by_name("srv-two").experiment_id
    objects = server_stack.s3.keys(server_stack.bucket)
    assert f"mlartifacts/{experiment}/{resumed.info.run_id}/artifacts/prompts.pt" in objects
    ray_objects = [key for key in objects if key.startswith(f"{prefix}/")]
    assert not [key for key in ray_objects if "/checkpoint_" in key]
    assert {key.split("/")[2] for key in ray_objects if key.count("/") > 2} == {"srv-two"}
    assert not (tmp_path / "out" / "trials").exists()  # trial files stayed node-local
    assert f"look at the runs: {server_stack.tracking_uri}" in (tmp_path / "second.txt").read_text()

    # reading verbs through the server, by MLFLOW_TRACKING_URI: without --set, status reads the
    # overrides the latest launch recorded on its parent run; an explicit --set selects other trials
    env = {"MLFLOW_TRACKING_URI": server_stack.tracking_uri}
    latest = CliRunner().invoke(main, ["status", str(sweep), "--output", str(tmp_path / "nowhere")], env=env)
    assert latest.exit_code == 0 and "done 2 · failed 0 · running 0 · to do 0 · total 2" in latest.output
    counted = CliRunner().invoke(main, ["status", str(sweep), "--set", f"optim.epochs={EPOCHS}"], env=env)
    assert counted.exit_code == 0 and "done 2 · failed 0 · running 0 · to do 0 · total 2" in counted.output
    other = CliRunner().invoke(main, ["status", str(sweep), "--set", f"optim.epochs={EPOCHS + 1}"], env=env)
    assert other.exit_code == 0 and "done 0 · failed 0 · running 0 · to do 2" in other.output
    table = CliRunner().invoke(
        main,
        ["table", str(sweep), "--set", f"optim.epochs={EPOCHS}", "--no-published", "--format", "csv"],
        env=env,
    )
    assert table.exit_code == 0, table.output
    (row,) = [r for r in csv.DictReader(io.StringIO(table.output)) if r["dataset"] == "eurosat"]
    assert row["method"] == "ivlp" and row["n_seeds"] == "2"  # both seeds, read from the server
    assert not (tmp_path / "nowhere").exists()


def test_a_deleted_experiment_is_reported_not_restored(server_stack, tmp_path: Path, data_root: Path) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(server_stack.tracking_uri)
    experiment = client.create_experiment("srv-deleted")
    client.delete_experiment(experiment)
    sweep = write_sweep(tmp_path, "srv-deleted", seeds=[1])
    env = {"MLFLOW_TRACKING_URI": server_stack.tracking_uri}
    for verb in (
        ["status", str(sweep)],
        ["table", str(sweep), "--no-published"],
        ["launch", str(sweep), "--data-root", str(data_root), "--output", str(tmp_path / "out")],
    ):
        result = CliRunner().invoke(main, verb, env=env)
        assert result.exit_code == 2, (verb, result.output)
        assert "'srv-deleted'" in result.output and "is deleted" in result.output
        assert "mlflow experiments restore" in result.output
    assert client.get_experiment(experiment).lifecycle_stage == "deleted"
    assert not (tmp_path / "out").exists()  # the launch stopped before writing anything


def test_ui_names_the_servers_own_ui(server_stack) -> None:
    result = CliRunner().invoke(main, ["ui"], env={"MLFLOW_TRACKING_URI": server_stack.tracking_uri})
    assert result.exit_code == 0 and server_stack.tracking_uri in result.output
