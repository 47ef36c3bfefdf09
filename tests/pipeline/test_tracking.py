"""The MLflow ledger: the driver-side callback's layout, failures, stale runs, dedupe, bad URIs.

The callback is driven here with stand-in Tune trials (the attributes Tune's callbacks read), so
the MLflow layout is checked without starting Ray; ``test_launch.py`` runs the real thing.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from pyarrow import fs as pyarrow_fs
from ray import tune

import prometar
from orchestration.errors import TrackingError
from orchestration.layout import default_tracking_uri
from orchestration.ledger.callback import MlflowTrialCallback
from orchestration.ledger.store import HEARTBEAT_EVERY_S, LAUNCH_ALIVE_S, TrialLedger
from orchestration.ledger.vocabulary import HEARTBEAT_TAG, HOST_TAG, PID_TAG
from orchestration.sweeps.keys import trial_key
from orchestration.sweeps.planning import Trial

CONFIG = {
    "method": "ivlp",
    "seed": 1,
    "data": {"dataset": "eurosat", "shots": 4},
    "optim": {"lr": 0.1, "epochs": 2},
}


@dataclass
class FakeTrial:
    trial_id: str
    config: dict[str, Any]
    last_result: dict[str, Any] = field(default_factory=dict)
    checkpoint: Any = None
    error_file: str | None = None
    num_failures: int = 0


def make_trial(seed: int = 1) -> Trial:
    config = json.loads(json.dumps(CONFIG))
    config["seed"] = seed
    return Trial(key=trial_key(config, "base2new"), protocol="base2new", config=config)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SQLite store for the module (creating one takes seconds); one experiment per test."""
    return tmp_path_factory.mktemp("ledger")


@pytest.fixture()
def ledger(store: Path, request: pytest.FixtureRequest) -> TrialLedger:
    return TrialLedger(default_tracking_uri(store), request.node.name, artifact_root=store / "mlartifacts")


def test_callback_writes_one_child_run_per_trial(tmp_path: Path, ledger: TrialLedger) -> None:
    trials = {t.key: t for t in (make_trial(1), make_trial(2))}
    parent = ledger.start_launch({})
    callback = MlflowTrialCallback(ledger, parent, lambda c: trials[c["trial_key"]], ledger.experiment)
    ok, bad = (FakeTrial(f"id{i}", {"trial_key": key}) for i, key in enumerate(trials))

    callback.on_trial_start(0, [], ok)
    callback.on_trial_start(0, [], ok)  # a restarted trial keeps its run
    for epoch in (1, 2):
        callback.on_trial_result(
            0,
            [],
            ok,
            {
                "epoch": epoch,
                "loss": 1.0 / epoch,
                "prometar_event": "epoch",
                "training_iteration": epoch,
                "time_total_s": 3.0,
                "done": False,
            },
        )
    final = {"base_acc": 80.0, "new_acc": 60.0, "hm": 68.57, "epoch": 2}
    ok.last_result = {**final, "prometar_event": "final"}
    callback.on_trial_result(0, [], ok, ok.last_result)
    artifacts = tmp_path / "final"
    artifacts.mkdir()
    (artifacts / "final.json").write_text(json.dumps(final))
    (artifacts / "config.json").write_text(json.dumps(CONFIG))
    ok.checkpoint = tune.Checkpoint.from_directory(str(artifacts))
    callback.on_trial_complete(0, [], ok)

    callback.on_trial_start(0, [], bad)
    error_file = tmp_path / "error.txt"
    error_file.write_text("Traceback ...\nRuntimeError: boom in epoch 1\n")
    bad.error_file = str(error_file)
    callback.on_trial_error(0, [], bad)
    ledger.end_run(parent, "FAILED")

    client = MlflowClient(ledger.tracking_uri)
    runs = {r.data.tags.get("prometar.trial_key"): r for r in ledger.runs()}
    assert set(runs) == {*trials, None}  # two children and the parent
    assert runs[None].data.tags["prometar.role"] == "launch"
    done = runs[ok.config["trial_key"]]
    assert done.info.status == "FINISHED"
    assert done.data.tags["mlflow.parentRunId"] == parent
    for tag in (
        "dataset",
        "method",
        "seed",
        "shots",
        "protocol",
        "sweep",
        "prometar.version",
        "prometar.git_sha",
    ):
        assert done.data.tags[tag]
    assert done.data.tags["prometar.result_revision"] == str(prometar.RESULT_REVISION)
    assert runs[None].data.tags["prometar.result_revision"] == str(prometar.RESULT_REVISION)
    assert ledger.finished_under_other_revisions() == {}  # this code's own runs
    assert done.data.params["optim.lr"] == "0.1" and done.data.params["data.dataset"] == "eurosat"
    assert done.data.metrics["hm"] == pytest.approx(68.57)
    assert [m.step for m in client.get_metric_history(done.info.run_id, "loss")] == [1, 2]
    assert "time_total_s" not in done.data.metrics and "training_iteration" not in done.data.metrics
    assert {a.path for a in client.list_artifacts(done.info.run_id)} == {"final.json", "config.json"}
    failed = runs[bad.config["trial_key"]]
    assert failed.info.status == "FAILED"
    assert "boom in epoch 1" in failed.data.tags["prometar.error"]
    assert callback.outcomes == {ok.config["trial_key"]: "FINISHED", bad.config["trial_key"]: "FAILED"}
    assert ledger.statuses() == {ok.config["trial_key"]: {"FINISHED"}, bad.config["trial_key"]: {"FAILED"}}


def _epoch(callback: MlflowTrialCallback, trial: FakeTrial, epoch: int, loss: float) -> None:
    callback.on_trial_result(
        0, [], trial, {"epoch": epoch, "loss": loss, "lr": 0.1, "prometar_event": "epoch"}
    )


def test_a_retry_from_an_older_checkpoint_does_not_log_an_epoch_twice(ledger: TrialLedger) -> None:
    """The node died after epoch 2 was logged but before Tune registered its checkpoint: the retry
    starts after epoch 1 and reports epoch 2 again."""
    trial = make_trial()
    callback = MlflowTrialCallback(ledger, ledger.start_launch({}), lambda c: trial, "sweep")
    fake = FakeTrial("a", {"trial_key": trial.key})
    callback.on_trial_start(0, [], fake)
    for epoch in (1, 2, 2, 3):
        _epoch(callback, fake, epoch, 1.0 / epoch)
    (run,) = [r for r in ledger.runs() if r.data.tags.get("prometar.trial_key")]
    history = MlflowClient(ledger.tracking_uri).get_metric_history(run.info.run_id, "loss")
    assert [m.step for m in history] == [1, 2, 3]


def test_a_later_launch_reopens_the_run_and_deletes_checkpoints_once_finished(
    tmp_path: Path, ledger: TrialLedger
) -> None:
    trial = make_trial()
    first = MlflowTrialCallback(ledger, ledger.start_launch({}), lambda c: trial, "sweep")
    fake = FakeTrial("a", {"trial_key": trial.key})
    first.on_trial_start(0, [], fake)
    _epoch(first, fake, 1, 1.0)
    old_folder = tmp_path / "ray" / "sweep" / f"t_{trial.key}-first"
    for index in (0, 1):  # the registered checkpoint, and one uploaded but never registered
        (old_folder / f"checkpoint_00000{index}").mkdir(parents=True)
    first.on_checkpoint(0, [], fake, tune.Checkpoint.from_directory(str(old_folder / "checkpoint_000000")))
    first.on_experiment_end([fake])  # the launch ends with the trial unfinished: KILLED
    run_id = first.runs["a"]

    reopen = ledger.reopenable({trial.key})
    assert list(reopen) == [trial.key] and reopen[trial.key].info.run_id == run_id
    assert reopen[trial.key].data.tags["prometar.checkpoint"] == str(old_folder / "checkpoint_000000")
    second = MlflowTrialCallback(ledger, ledger.start_launch({}), lambda c: trial, "sweep", reopen=reopen)
    again = FakeTrial("b", {"trial_key": trial.key})
    second.on_trial_start(0, [], again)
    client = MlflowClient(ledger.tracking_uri)
    run = client.get_run(run_id)
    assert run.info.status == "RUNNING" and run.data.tags["prometar.attempt"] == "2"
    assert run.data.tags["mlflow.parentRunId"] == second.parent_run_id
    _epoch(second, again, 1, 1.0)  # resumed from scratch: epoch 1 is held already
    _epoch(second, again, 2, 0.5)
    new_folder = tmp_path / "ray" / "sweep" / f"t_{trial.key}-second"
    (new_folder / "checkpoint_000000").mkdir(parents=True)
    second.on_checkpoint(0, [], again, tune.Checkpoint.from_directory(str(new_folder / "checkpoint_000000")))
    assert not list(old_folder.glob("checkpoint_*"))  # the earlier launch's checkpoints go
    again.storage = type(
        "Storage", (), {"storage_filesystem": pyarrow_fs.LocalFileSystem(), "trial_fs_path": str(new_folder)}
    )()
    again.last_result = {"prometar_event": "final", "hm": 50.0, "epoch": 2}
    second.on_trial_complete(0, [], again)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and "prometar.checkpoint" not in run.data.tags
    assert not list(new_folder.glob("checkpoint_*"))  # FINISHED: no checkpoint is kept
    assert [m.step for m in client.get_metric_history(run_id, "loss")] == [1, 2]
    assert len([r for r in ledger.runs() if r.data.tags.get("prometar.trial_key")]) == 1


def test_reading_a_deleted_experiment_reports_it_and_restores_nothing(store: Path) -> None:
    from orchestration.errors import ResultsError
    from orchestration.ledger.runs import read_experiment

    client = MlflowClient(default_tracking_uri(store))
    experiment = client.create_experiment("deleted-one")
    client.delete_experiment(experiment)
    with pytest.raises(TrackingError, match="'deleted-one' .* is deleted"):
        TrialLedger(default_tracking_uri(store), "deleted-one").statuses()
    with pytest.raises(ResultsError, match="mlflow experiments restore --experiment-id"):
        read_experiment("deleted-one", default_tracking_uri(store))
    assert client.get_experiment(experiment).lifecycle_stage == "deleted"


def test_unended_trials_are_killed_at_experiment_end(ledger: TrialLedger) -> None:
    trial = make_trial()
    callback = MlflowTrialCallback(ledger, ledger.start_launch({}), lambda c: trial, "sweep")
    callback.on_trial_start(0, [], FakeTrial("a", {"trial_key": trial.key}))
    callback.on_experiment_end([])
    assert ledger.statuses() == {trial.key: {"KILLED"}}


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_running_runs_are_closed_as_killed(ledger: TrialLedger) -> None:
    trial = make_trial()
    parent = ledger.start_launch({PID_TAG: str(dead_pid())})  # a launch on this host, killed since
    callback = MlflowTrialCallback(ledger, parent, lambda c: trial, "sweep")
    callback.on_trial_start(0, [], FakeTrial("a", {"trial_key": trial.key}))
    assert ledger.statuses() == {trial.key: {"RUNNING"}}
    assert ledger.live_launches() == {} and ledger.running_elsewhere() == {}
    assert ledger.close_stale_runs() == 2  # the child and its parent
    assert ledger.statuses() == {trial.key: {"KILLED"}}
    assert all(r.info.status == "KILLED" for r in ledger.runs())


@pytest.mark.parametrize("where", ["this host", "another host"])
def test_runs_of_a_live_launch_are_left_alone_until_its_heartbeat_stops(
    ledger: TrialLedger, where: str
) -> None:
    """Another launch of the sweep against the same store (another output folder or machine)."""
    trial = make_trial()
    tags = {PID_TAG: str(os.getpid())} if where == "this host" else {HOST_TAG: "elsewhere", PID_TAG: "1"}
    parent = ledger.start_launch(tags)
    MlflowTrialCallback(ledger, parent, lambda c: trial, "sweep").on_trial_start(
        0, [], FakeTrial("a", {"trial_key": trial.key})
    )
    holder = f"pid {tags[PID_TAG]} on {tags.get(HOST_TAG, socket.gethostname())}"
    assert ledger.live_launches() == {parent: holder}
    assert ledger.running_elsewhere() == {trial.key: holder}
    assert ledger.close_stale_runs() == 0 and ledger.statuses() == {trial.key: {"RUNNING"}}
    later = time.time() + LAUNCH_ALIVE_S + 1  # no heartbeat for longer than that: the launch is dead
    assert ledger.running_elsewhere(now=later) == {}
    assert ledger.close_stale_runs(now=later) == 2 and ledger.statuses() == {trial.key: {"KILLED"}}


def test_a_launch_without_a_heartbeat_is_dead(ledger: TrialLedger) -> None:
    """Parent runs written before heartbeats existed are closed as before."""
    parent = ledger.start_launch({HEARTBEAT_TAG: ""})
    assert ledger.live_launches() == {} and ledger.close_stale_runs() == 1
    assert MlflowClient(ledger.tracking_uri).get_run(parent).info.status == "KILLED"


def test_the_callback_refreshes_the_heartbeat_at_most_once_a_minute(
    ledger: TrialLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    trial = make_trial()
    parent = ledger.start_launch({HEARTBEAT_TAG: "1000"})
    callback = MlflowTrialCallback(ledger, parent, lambda c: trial, "sweep")
    client = MlflowClient(ledger.tracking_uri)
    callback.on_step(0, [])  # just started: no write
    assert client.get_run(parent).data.tags[HEARTBEAT_TAG] == "1000"
    clock = time.monotonic()
    monkeypatch.setattr("orchestration.ledger.store.time.monotonic", lambda: clock + HEARTBEAT_EVERY_S + 1)
    before = time.time()
    callback.on_step(1, [])
    assert float(client.get_run(parent).data.tags[HEARTBEAT_TAG]) >= before - 1
    client.set_tag(parent, HEARTBEAT_TAG, "2000")
    callback.on_step(2, [])  # the same (mocked) minute: no second write
    assert client.get_run(parent).data.tags[HEARTBEAT_TAG] == "2000"


def test_reading_a_missing_experiment_creates_nothing(store: Path) -> None:
    ledger = TrialLedger(default_tracking_uri(store), "nothing-here")
    assert ledger.statuses() == {}
    assert MlflowClient(ledger.tracking_uri).get_experiment_by_name("nothing-here") is None


def test_unreachable_server_fails_fast() -> None:
    ledger = TrialLedger("http://127.0.0.1:9", "sweep")  # the discard port: nothing listens
    start = time.monotonic()
    with pytest.raises(TrackingError, match="127.0.0.1:9"):
        ledger.check_reachable()
    assert time.monotonic() - start < 60  # fails fast instead of hanging (generous guard)
