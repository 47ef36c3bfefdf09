"""``prometar-sweep launch`` end to end: local Ray, SQLite MLflow, tiny CLIP on miniature datasets.

One Ray instance (2 CPUs, 127.0.0.1, no dashboard, token auth disabled for the test) serves the
module. The first launch (2 datasets × 2 seeds) is shared by the tests that read its ledger.
Bad input is checked without Ray: exit 2, a message naming the file and key, nothing written.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import faults as fault_injection
import pytest
import torch
import yaml
from click.testing import CliRunner
from mlflow import MlflowClient
from servers import wait_until
from tiny import TINY_OVERRIDES, local_test_ray

import prometar
from orchestration.cli import main
from orchestration.launch.runner import LaunchOptions, launch
from orchestration.launch.state import LaunchReport
from orchestration.launch.status import sweep_status
from orchestration.layout import default_tracking_uri
from orchestration.sweeps.planning import load_plan, plan_sweep

REPO = Path(__file__).resolve().parents[2]
OVERRIDES = {**TINY_OVERRIDES, "optim.epochs": 2}
DATASETS = ["caltech101", "eurosat"]


def write_sweep(
    folder: Path, name: str, *, seeds: list[int], datasets: list[str] = DATASETS, **extra
) -> Path:
    data = {
        "name": name,
        "protocol": "base2new",
        "overrides": OVERRIDES,
        "grid": {"method": ["ivlp"], "dataset": datasets, "seed": seeds, "shots": [2]},
        "resources": {"default": {"cpu": 1}},
        "max_failures": 1,
        **extra,
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def child_runs(output: Path, experiment: str) -> list:
    client = MlflowClient(default_tracking_uri(output))
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return [
        r
        for r in client.search_runs([exp.experiment_id], max_results=1000)
        if "prometar.trial_key" in r.data.tags
    ]


def peek_child_statuses(db: Path, *, with_epochs: bool = False) -> list[str]:
    """Child-run statuses read straight from SQLite, read-only: an MLflow client here would race
    the launch that is still creating the store's tables. ``with_epochs``: only runs that have
    logged at least one epoch."""
    if not db.exists():
        return []
    epochs = " AND EXISTS (SELECT 1 FROM metrics m WHERE m.run_uuid = runs.run_uuid AND m.key = 'lr')"
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as connection:
            rows = connection.execute(
                "SELECT runs.status FROM runs JOIN tags ON tags.run_uuid = runs.run_uuid "
                "WHERE tags.key = 'prometar.trial_key'" + (epochs if with_epochs else "")
            ).fetchall()
    except sqlite3.Error:
        return []
    return [status for (status,) in rows]


def joined_driver(ray_address: str, faults: Path, args: list[str]) -> str:
    """Python source of a ``prometar-sweep`` command (``args``) in its own process, joined to the
    test's Ray with the fault-injection hook (``faults.py``) in its workers."""
    return (
        "import sys; from pathlib import Path\n"
        f"sys.path.insert(0, {str(Path(fault_injection.__file__).parent)!r})\n"
        "import faults, ray\n"
        "from orchestration.launch.ray_session import _loopback\n"
        "from orchestration.cli import main\n"
        "with _loopback():\n"
        f"    ray.init(address={ray_address!r}, _node_ip_address='127.0.0.1', log_to_driver=False,\n"
        f"             runtime_env=faults.runtime_env(Path({str(faults)!r}), HF_HUB_OFFLINE='1'))\n"
        f"main({args!r})\n"
    )


def checkpointed_running(db: Path) -> list[str]:
    """Trial keys of RUNNING child runs whose checkpoint tag is recorded, read-only from SQLite."""
    if not db.exists():
        return []
    query = (
        "SELECT key_tag.value FROM runs "
        "JOIN tags key_tag ON key_tag.run_uuid = runs.run_uuid AND key_tag.key = 'prometar.trial_key' "
        "JOIN tags ckpt ON ckpt.run_uuid = runs.run_uuid AND ckpt.key = 'prometar.checkpoint' "
        "WHERE runs.status = 'RUNNING'"
    )
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as connection:
            return [key for (key,) in connection.execute(query).fetchall()]
    except sqlite3.Error:
        return []


# --------------------------------------------------------------------------------------------
# Bad input: no Ray, nothing written


BAD_SWEEPS = {
    "unknown_key": ("name: x\ncolour: red\ngrid: {method: [ivlp], dataset: [eurosat]}\n", "colour"),
    "wrong_type": ("max_failures: two\ngrid: {method: [ivlp], dataset: [eurosat]}\n", "max_failures"),
    "unknown_dataset": ("grid: {method: [ivlp], dataset: [mnist]}\n", "grid.dataset[0]"),
    "unknown_method": ("grid: {method: [clipper], dataset: [eurosat]}\n", "grid.method[0]"),
    "empty_grid": ("grid: {}\n", "grid"),
    "non_numeric_search": (
        "grid: {method: [prometar], dataset: [eurosat]}\n"
        "search: {space: {backbone.name: {uniform: [0, 1]}}}\n",
        "search.space.backbone.name",
    ),
    "yaml_syntax": ("grid:\n  method: [ivlp\n  dataset: [eurosat]\n", "line 3"),
}


@pytest.mark.parametrize("case", sorted(BAD_SWEEPS))
def test_bad_sweep_exits_2_and_writes_nothing(tmp_path: Path, case: str) -> None:
    text, key = BAD_SWEEPS[case]
    sweep = tmp_path / f"{case}.yaml"
    sweep.write_text(text)
    output = tmp_path / "out"
    for verb in (
        ["launch", str(sweep), "--output", str(output), "--data-root", str(tmp_path)],
        ["validate", str(sweep)],
        ["status", str(sweep), "--output", str(output)],
    ):
        result = CliRunner().invoke(main, verb)
        assert result.exit_code == 2, result.output
        assert str(sweep) in result.output and key in result.output
    assert not output.exists()  # no MLflow store, experiment or run; no Ray storage


def test_unreachable_tracking_uri_fails_before_any_trial(tmp_path: Path, data_root: Path) -> None:
    sweep = write_sweep(tmp_path, "unreachable", seeds=[1])
    output = tmp_path / "out"
    start = time.monotonic()
    result = CliRunner().invoke(
        main,
        [
            "launch",
            str(sweep),
            "--output",
            str(output),
            "--data-root",
            str(data_root),
            "--tracking-uri",
            "http://127.0.0.1:9",
        ],
    )
    assert result.exit_code == 2, result.output
    assert "tracking URI http://127.0.0.1:9 is unreachable" in result.output
    assert not (output / "ray").exists() and not (output / "trials").exists()
    assert time.monotonic() - start < 60  # fails fast instead of hanging (generous guard)


def test_missing_data_root_exits_2(tmp_path: Path) -> None:
    sweep = write_sweep(tmp_path, "nodata", seeds=[1])
    result = CliRunner().invoke(
        main,
        ["launch", str(sweep), "--output", str(tmp_path / "out"), "--data-root", str(tmp_path / "nowhere")],
    )
    assert result.exit_code == 2 and "nowhere" in result.output
    assert not (tmp_path / "out").exists()


def test_environment_conventions_are_read_and_shown_in_help(tmp_path: Path) -> None:
    sweep = write_sweep(tmp_path, "envs", seeds=[1])
    result = CliRunner().invoke(
        main,
        ["launch", str(sweep), "--output", str(tmp_path / "out")],
        env={"PROMETAR_DATA_ROOT": str(tmp_path / "from-env")},
    )
    assert result.exit_code == 2 and "from-env" in result.output  # the data root came from the variable
    assert not (tmp_path / "out").exists()
    launch_verb = main.get_command(None, "launch")
    with launch_verb.make_context("launch", [str(sweep)]) as ctx:
        assert ctx.params["address"] is None
    os.environ["RAY_ADDRESS"], saved = "10.1.2.3:6379", os.environ.get("RAY_ADDRESS")
    try:
        with launch_verb.make_context("launch", [str(sweep)]) as ctx:
            assert ctx.params["address"] == "10.1.2.3:6379"
    finally:
        os.environ.pop("RAY_ADDRESS") if saved is None else os.environ.__setitem__("RAY_ADDRESS", saved)
    shown = {
        verb: " ".join(CliRunner().invoke(main, [verb, "--help"]).output.split())  # unwrapped
        for verb in ("launch", "status", "table", "plot", "ui", "submit", "slurm", "k8s", "train")
    }
    for verb in ("launch", "status", "table", "plot", "ui", "submit", "slurm", "k8s"):
        assert "env var: MLFLOW_TRACKING_URI" in shown[verb], verb
    for verb in ("launch", "submit"):
        assert "env var: RAY_ADDRESS" in shown[verb], verb
    for verb in ("launch", "train"):
        assert "env var: PROMETAR_DATA_ROOT" in shown[verb], verb
    assert "$DATA" not in "".join(shown.values())


def test_an_object_store_output_folder_is_refused(tmp_path: Path, data_root: Path) -> None:
    sweep = write_sweep(tmp_path, "s3out", seeds=[1], datasets=["eurosat"])
    result = CliRunner().invoke(
        main, ["launch", str(sweep), "--output", "s3://bucket/out", "--data-root", str(data_root)]
    )
    assert result.exit_code == 2 and "--storage URI" in result.output


HOLD_LOCK = """
import sys, time
from pathlib import Path
from orchestration.launch.lock import launch_lock
with launch_lock(Path(sys.argv[1]), sys.argv[2]):
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_second_launch_of_the_same_sweep_is_refused_until_the_first_ends(
    tmp_path: Path, data_root: Path
) -> None:
    from orchestration.launch.lock import launch_lock

    sweep = write_sweep(tmp_path, "twice", seeds=[1])
    output = tmp_path / "out"
    output.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(output), "twice"], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        result = CliRunner().invoke(
            main, ["launch", str(sweep), "--output", str(output), "--data-root", str(data_root)]
        )
        assert result.exit_code == 2, result.output
        assert "'twice' is already being launched" in result.output and f"pid {holder.pid}" in result.output
        assert str(sweep) in result.output
        assert not (output / "mlflow.db").exists() and not (output / "ray").exists()  # nothing written
        with launch_lock(output, "other"):  # another sweep into the same folder is not blocked
            pass
    finally:
        holder.kill()  # SIGKILL: no clean-up code runs; the kernel drops the lock with the process
        holder.wait()
    with launch_lock(output, "twice"):
        assert json.loads((output / ".launch-twice.lock").read_text())["pid"] == os.getpid()


def test_status_names_a_live_launch_and_counts_what_a_dead_one_left(tmp_path: Path) -> None:
    """Two RUNNING trials in the store: one of a launch alive in this process, one of a dead launch."""
    import socket

    from orchestration.ledger.callback import MlflowTrialCallback
    from orchestration.ledger.store import TrialLedger
    from orchestration.ledger.vocabulary import PID_TAG

    sweep = write_sweep(tmp_path, "shared", seeds=[1, 2], datasets=["eurosat"])
    trials = list(load_plan(sweep).trials)
    output = tmp_path / "out"
    output.mkdir()
    ledger = TrialLedger(default_tracking_uri(output), "shared")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for trial, pid in zip(trials, (os.getpid(), dead.pid), strict=True):
        parent = ledger.start_launch({PID_TAG: str(pid)})
        MlflowTrialCallback(ledger, parent, lambda c, t=trial: t, "shared").on_trial_start(
            0, [], type("T", (), {"trial_id": f"t{pid}", "config": {"trial_key": trial.key}})()
        )
    result = CliRunner().invoke(main, ["status", str(sweep), "--output", str(output)])
    assert result.exit_code == 0, result.output
    assert "running 2 · to do 0 · total 2" in result.output
    assert "1 of the running left by a dead launch" in result.output
    assert f"live launch: pid {os.getpid()} on {socket.gethostname()}" in result.output


def test_runs_finished_under_an_earlier_result_revision_are_not_done(
    tmp_path: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ledger holds FINISHED runs of every planned trial, recorded by revision-1 code (no Ray)."""
    import io
    from contextlib import nullcontext

    import prometar
    from orchestration.launch import runner
    from orchestration.ledger.store import TrialLedger
    from orchestration.ledger.vocabulary import RESULT_REVISION_TAG, trial_tags
    from orchestration.sweeps.keys import trial_key
    from prometar.config import build_config

    sweep = write_sweep(tmp_path, "revised", seeds=[1, 2], datasets=["eurosat"])
    trials = load_plan(sweep).trials
    output = tmp_path / "out"
    output.mkdir()
    ledger = TrialLedger(default_tracking_uri(output), "revised")
    parent = ledger.start_launch({})
    ledger.client.delete_tag(parent, RESULT_REVISION_TAG)
    for trial in trials:  # as the code before the result revision recorded them: old keys, no revision tag
        old_key = trial_key(build_config(trial.config).scientific_dict(), trial.protocol, revision=1)
        assert old_key != trial.key
        child = ledger.client.create_run(
            ledger.experiment_id(),
            tags={
                **trial_tags(trial, "revised"),
                "prometar.trial_key": old_key,
                "mlflow.parentRunId": parent,
            },
        )
        ledger.client.set_terminated(child.info.run_id, "FINISHED")
    ledger.end_run(parent, "FINISHED")
    note = (
        "2 runs finished under an earlier result revision (r1) are not counted; "
        f"this code is r{prometar.RESULT_REVISION}"
    )

    result = CliRunner().invoke(main, ["status", str(sweep), "--output", str(output)])
    assert result.exit_code == 0, result.output
    assert "done 0 · failed 0 · running 0 · to do 2 · total 2" in result.output and note in result.output
    result = CliRunner().invoke(
        main, ["launch", str(sweep), "--output", str(output), "--data-root", str(data_root), "--dry-run"]
    )
    assert "done 0 · to do 2 · total 2" in result.output and note in result.output

    started: list[str] = []
    monkeypatch.setattr(runner, "ray_session", lambda address: nullcontext())
    monkeypatch.setattr(runner, "check_cluster", lambda *args, **kwargs: None)  # no Ray here
    monkeypatch.setattr(
        runner, "run_tuner", lambda launch, table, *args, **kwargs: started.extend(table.trials)
    )
    stream = io.StringIO()
    report = launch(
        sweep, LaunchOptions(data_root=data_root, output=output, tables=False, report=False), stream=stream
    )
    assert report.done_before == 0 and report.to_run == 2 and started == [t.key for t in trials]
    assert note in stream.getvalue()


def test_a_search_counts_the_samples_a_live_launch_is_running(tmp_path: Path, data_root: Path) -> None:
    """The group's only sample runs in a live launch elsewhere: this launch adds none (no Ray)."""
    import io

    from orchestration.ledger.callback import MlflowTrialCallback
    from orchestration.ledger.store import TrialLedger
    from orchestration.ledger.vocabulary import PID_TAG

    search = {
        "metric": "val_hm",
        "mode": "max",
        "num_samples": 1,
        "space": {"optim.lr": {"loguniform": [0.001, 0.1]}},
    }
    sweep = write_sweep(tmp_path, "busy", seeds=[1], datasets=["eurosat"], search=search)
    (group,) = list(load_plan(sweep).groups)
    sample = group.resolve({"optim.lr": 0.01})
    output = tmp_path / "out"
    output.mkdir()
    ledger = TrialLedger(default_tracking_uri(output), "busy")
    parent = ledger.start_launch({PID_TAG: str(os.getpid())})  # alive: this process
    MlflowTrialCallback(ledger, parent, lambda c: sample, "busy").on_trial_start(
        0, [], type("T", (), {"trial_id": "t1", "config": {"group": group.key}})()
    )
    stream = io.StringIO()
    report = launch(
        sweep, LaunchOptions(data_root=data_root, output=output, tables=False, report=False), stream=stream
    )
    assert report.to_run == 0 and report.exit_code == 0, stream.getvalue()
    assert "search done (0 samples, 1 running in another live launch)" in stream.getvalue()
    assert ledger.statuses() == {sample.key: {"RUNNING"}}  # left to its launch, not closed


def test_dry_run_and_status_write_nothing(tmp_path: Path, data_root: Path) -> None:
    sweep = write_sweep(tmp_path, "dry", seeds=[1, 2])
    output = tmp_path / "out"
    result = CliRunner().invoke(
        main,
        [
            "launch",
            str(sweep),
            "--output",
            str(output),
            "--data-root",
            str(data_root),
            "--dry-run",
            "--set",
            "optim.lr=0.01",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "done 0 · to do 4 · total 4" in result.output
    result = CliRunner().invoke(main, ["status", str(sweep), "--output", str(output)])
    assert result.exit_code == 0 and "done 0 · failed 0 · running 0 · to do 4 · total 4" in result.output
    assert not output.exists()


def test_bad_override_exits_2(tmp_path: Path, data_root: Path) -> None:
    sweep = write_sweep(tmp_path, "override", seeds=[1])
    result = CliRunner().invoke(
        main,
        [
            "launch",
            str(sweep),
            "--output",
            str(tmp_path / "out"),
            "--data-root",
            str(data_root),
            "--set",
            "optim.colour=1",
        ],
    )
    assert result.exit_code == 2 and "optim.colour" in result.output and str(sweep) in result.output
    assert not (tmp_path / "out").exists()


def test_resources_by_dataset_pack_fractional_gpus(tmp_path: Path) -> None:
    from orchestration.launch.trial_table import TrialTable
    from orchestration.launch.tuner import resources_request

    sweep = write_sweep(
        tmp_path,
        "resources",
        seeds=[1],
        resources={"default": {"cpu": 4, "gpu": 0.5}, "eurosat": {"cpu": 8, "gpu": 1}},
    )
    spec = load_plan(sweep).spec
    table = TrialTable(trials={t.key: t for t in plan_sweep(spec).trials})
    request = resources_request(spec, table)
    bundles = {t.dataset: request({"trial_key": t.key}).bundles for t in table.trials.values()}
    assert bundles == {"caltech101": [{"CPU": 4.0, "GPU": 0.5}], "eurosat": [{"CPU": 8.0, "GPU": 1.0}]}


def test_progress_line_counts_and_eta() -> None:
    import io
    from types import SimpleNamespace

    from orchestration.launch.progress import ProgressLine, format_duration

    stream = io.StringIO()
    progress = ProgressLine("demo", total=5, done_before=1, stream=stream)
    a, b, c = (SimpleNamespace(trial_id=x) for x in "abc")
    for trial in (a, b):
        progress.on_trial_start(0, [], trial)
    assert progress.line().startswith("[demo] done 1/5 · running 2 · failed 0 · to do 2 · ETA ?")
    progress.on_trial_recover(0, [], b)
    progress.on_trial_start(0, [], b)
    progress.on_trial_complete(0, [], a)
    progress.on_trial_error(0, [], b)
    progress.on_trial_start(0, [], c)
    line = progress.line()
    assert line.startswith("[demo] done 2/5 · running 1 · failed 1 · to do 1 · retried 1 · ETA ")
    printed = stream.getvalue().splitlines()
    assert "ETA ?" not in line and len(printed) == 8  # 7 progress lines and the failure's own line
    assert "[demo] trial b FAILED: trial b failed (no error file)" in printed
    assert (format_duration(12), format_duration(250), format_duration(11100)) == ("12s", "4m10s", "3h05m")


# --------------------------------------------------------------------------------------------
# Real launches on a local Ray


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from prometar.toy.miniature import write_miniatures

    root = tmp_path_factory.mktemp("data")
    write_miniatures(root, DATASETS)
    return root


@pytest.fixture(scope="module")
def faults(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fault-injection file the Ray workers read (empty: no fault; ``faults.py``)."""
    path = tmp_path_factory.mktemp("faults") / "faults.json"
    path.write_text("{}")
    return path


@pytest.fixture(scope="module")
def ray_address(faults: Path) -> Iterator[str]:
    with local_test_ray(runtime_env=fault_injection.runtime_env(faults, HF_HUB_OFFLINE="1")) as address:
        yield address


@pytest.fixture(scope="module")
def first_launch(tmp_path_factory: pytest.TempPathFactory, data_root: Path, ray_address: str) -> dict:
    folder = tmp_path_factory.mktemp("launch")
    sweep = write_sweep(folder, "grid", seeds=[1, 2])
    output = folder / "out"
    report = launch(sweep, LaunchOptions(data_root=data_root, output=output, tables=False))
    return {"folder": folder, "sweep": sweep, "output": output, "report": report}


@pytest.mark.ray
@pytest.mark.slow
def test_launch_leaves_four_finished_child_runs(first_launch: dict, data_root: Path) -> None:
    from prometar.data.fewshot import sample_few_shot, subset_listing
    from prometar.data.readers import read_dataset

    report, output = first_launch["report"], first_launch["output"]
    assert report.exit_code == 0 and report.finished == 4 and report.to_run == 4
    runs = child_runs(output, "grid")
    assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {report.parent_run_id}
    expected = {t.key: t for t in load_plan(first_launch["sweep"]).trials}
    assert {r.data.tags["prometar.trial_key"] for r in runs} == set(expected)
    # Tune numbers trials in the order of the grid it was given: the planned order, longest first
    by_tune_id = sorted(runs, key=lambda r: r.data.tags["prometar.tune_trial_id"].rsplit("_", 1)[1])
    assert [r.data.tags["prometar.trial_key"] for r in by_tune_id] == list(expected)
    assert [r.data.tags["dataset"] for r in by_tune_id] == ["caltech101", "caltech101", "eurosat", "eurosat"]
    client = MlflowClient(default_tracking_uri(output))
    parent = client.get_run(report.parent_run_id)
    assert parent.data.tags["prometar.role"] == "launch" and parent.info.status == "FINISHED"
    # the report (written by default), after the parent run ended, and logged on it
    page = (output / "reports" / "grid" / "report.html").read_text()
    assert "<dt>planned</dt><dd>4</dd><dt>finished</dt><dd>4</dd><dt>failed</dt><dd>0</dd>" in page
    assert page.count('<figure class="plot"') >= 2 and report.parent_run_id in page
    logged = {Path(a.path).name for a in client.list_artifacts(report.parent_run_id, "report")}
    assert logged >= {"report.html", "report.md", "figures"}
    for run in runs:
        trial = expected[run.data.tags["prometar.trial_key"]]
        tags = run.data.tags
        assert (
            tags["dataset"],
            tags["method"],
            tags["seed"],
            tags["shots"],
            tags["protocol"],
            tags["sweep"],
        ) == (trial.dataset, "ivlp", str(trial.seed), "2", "base2new", "grid")
        assert tags["prometar.version"] and tags["prometar.git_sha"]
        assert run.data.params["optim.epochs"] == "2" and run.data.params["backbone.name"] == "tiny-test"
        for metric in ("base_acc", "new_acc", "hm"):
            assert 0.0 <= run.data.metrics[metric] <= 100.0
        assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1, 2]
        # the published schedule: warm-up epoch, then the cosine restarted at its peak
        assert [m.value for m in client.get_metric_history(run.info.run_id, "lr")] == [1e-5, 0.0025]
        # measurements of the machine per epoch: wall-clock, throughput, the node's CPU and RAM
        for metric in ("epoch_seconds", "images_per_second", "system/cpu_utilization_percentage",
                       "system/system_memory_usage_megabytes"):  # fmt: skip
            history = client.get_metric_history(run.info.run_id, metric)
            assert [m.step for m in history] == [1, 2] and all(m.value > 0 for m in history), metric
        assert tags["prometar.result_revision"] == str(prometar.RESULT_REVISION)
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {
            "config.json",
            "fewshot_subset.json",
            "prompts.pt",
            "per_class.json",
            "environment.json",
            "final.json",
            "trial.log",
        } <= artifacts
        local = first_launch["folder"] / run.info.run_id
        local.mkdir(exist_ok=True)
        subset = json.loads(
            Path(client.download_artifacts(run.info.run_id, "fewshot_subset.json", str(local))).read_text()
        )
        sampled = sample_few_shot(read_dataset(trial.dataset, data_root), trial.shots, trial.seed)
        assert subset == subset_listing(sampled, trial.dataset, data_root) and len(subset["train"]) > 0
        environment = json.loads(
            Path(client.download_artifacts(run.info.run_id, "environment.json", str(local))).read_text()
        )
        assert environment["device"] == "cpu" and environment["packages"]["torch"]
    # Tune's own per-trial logs: JSON and CSV, no TensorBoard writer (it would import torch in the driver)
    trial_folders = [p for p in (output / "ray").glob("*/t_*") if p.is_dir()]
    assert len(trial_folders) == 4
    for folder in trial_folders:
        assert (folder / "result.json").is_file() and (folder / "progress.csv").is_file()
        assert not list(folder.glob("events.out.tfevents*"))


@pytest.mark.ray
@pytest.mark.slow
def test_relaunch_starts_nothing_and_status_counts(first_launch: dict, data_root: Path) -> None:
    output = first_launch["output"]
    before = {
        r.info.run_id
        for r in MlflowClient(default_tracking_uri(output)).search_runs(
            [MlflowClient(default_tracking_uri(output)).get_experiment_by_name("grid").experiment_id]
        )
    }
    report = launch(
        first_launch["sweep"], LaunchOptions(data_root=data_root, output=output, tables=False, report=False)
    )
    assert report.to_run == 0 and report.done_before == 4 and report.parent_run_id is None
    client = MlflowClient(default_tracking_uri(output))
    after = {r.info.run_id for r in client.search_runs([client.get_experiment_by_name("grid").experiment_id])}
    assert after == before  # no parent, no child
    result = CliRunner().invoke(main, ["status", str(first_launch["sweep"]), "--output", str(output)])
    assert result.exit_code == 0 and "done 4 · failed 0 · running 0 · to do 0 · total 4" in result.output
    result = CliRunner().invoke(
        main,
        [
            "launch",
            str(first_launch["sweep"]),
            "--output",
            str(output),
            "--data-root",
            str(data_root),
            "--dry-run",
        ],
    )
    assert "done 4 · to do 0 · total 4" in result.output


@pytest.mark.ray
@pytest.mark.slow
def test_new_seed_runs_only_new_trials_and_survives_failures(
    first_launch: dict, data_root: Path, faults: Path, tmp_path: Path
) -> None:
    """Seed 3 is added: caltech101 fails once (retried from its epoch-1 checkpoint), eurosat always."""
    from prometar.config import build_config
    from prometar.run import run

    output = first_launch["output"]
    sweep = write_sweep(first_launch["folder"], "grid", seeds=[1, 2, 3])
    new = {t.dataset: t for t in load_plan(sweep).trials if t.seed == 3}
    faults.write_text(json.dumps({new["caltech101"].key: "once", new["eurosat"].key: "always"}))
    try:
        report = launch(sweep, LaunchOptions(data_root=data_root, output=output, tables=False, report=False))
    finally:
        faults.write_text("{}")
    assert report.to_run == 2 and report.done_before == 4
    assert report.finished == 1 and report.failed == 1 and report.exit_code == 1

    runs = child_runs(output, "grid")
    by_key: dict[str, list] = {}
    for r in runs:
        by_key.setdefault(r.data.tags["prometar.trial_key"], []).append(r)
    assert len(runs) == 6 and all(len(v) == 1 for v in by_key.values())
    (retried,), (failed,) = by_key[new["caltech101"].key], by_key[new["eurosat"].key]
    assert retried.info.status == "FINISHED" and retried.data.tags["prometar.retries"] == "1"
    assert "injected failure" in retried.data.tags["prometar.last_retry_error"]
    assert failed.info.status == "FAILED" and "injected failure" in failed.data.tags["prometar.error"]
    client = MlflowClient(default_tracking_uri(output))
    # resumed at epoch 2 from the epoch-1 checkpoint (epoch 1 is not trained twice)
    assert [m.step for m in client.get_metric_history(retried.info.run_id, "loss")] == [1, 2]

    # the same trial, undisturbed and without Ray: same final metrics, same prompts, same epoch-2 loss
    torch.set_num_threads(1)
    reference = run(
        build_config(new["caltech101"].config), data_root=data_root, output_dir=tmp_path / "ref", device="cpu"
    )
    for name, value in reference.metrics.items():
        assert retried.data.metrics[name] == pytest.approx(value, abs=1e-9)
    assert retried.data.metrics["loss"] == pytest.approx(reference.history[-1]["loss"], rel=1e-6)
    prompts = torch.load(client.download_artifacts(retried.info.run_id, "prompts.pt", str(tmp_path)))
    expected = torch.load(tmp_path / "ref" / "prompts.pt")
    assert prompts.keys() == expected.keys()
    for name in prompts:
        torch.testing.assert_close(prompts[name], expected[name])


def launch_beside_a_second(
    tmp_path: Path, sweep: Path, data_root: Path, faults: Path, ray_address: str, uri: str, *, held: str
) -> tuple[LaunchReport, str]:
    """Launch ``sweep`` here (output ``out1``, one trial at a time) while a second launch of it
    (a subprocess, output ``out2``, the same tracking ``uri``) starts once the shell test ``held``
    is true — the first launch's trials are held by ``faults.py`` until the second has ended and
    touched ``release``: no clock is raced. Returns the first launch's report and the second's
    output, after asserting that the second exited 0; no trial is left held, whatever happened."""
    second = (
        f"while ! {held}; do sleep 0.1; done; "
        f"{sys.executable} -m orchestration.cli launch {sweep} --output {tmp_path / 'out2'} "
        f"--tracking-uri {uri} --data-root {data_root} --address {ray_address} "
        f"> {tmp_path / 'second.txt'} 2>&1; echo $? > {tmp_path / 'second.rc'}; "
        f"touch {faults.with_name('release')}"
    )
    process = subprocess.Popen(["bash", "-c", second], cwd=tmp_path, start_new_session=True)
    try:
        with (tmp_path / "first.txt").open("w") as stream:
            options = LaunchOptions(
                data_root=data_root,
                output=tmp_path / "out1",
                tracking_uri=uri,
                max_concurrent=1,
                tables=False,
                report=False,
            )
            report = launch(sweep, options, stream=stream)
    finally:
        faults.with_name("release").touch()  # never leave a trial held, whatever happened
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        faults.write_text("{}")
        for marker in (faults.with_name("release"), *faults.parent.glob("*.held")):
            marker.unlink(missing_ok=True)
    second_log = (tmp_path / "second.txt").read_text()
    assert (tmp_path / "second.rc").read_text().strip() == "0", second_log
    return report, second_log


@pytest.mark.ray
@pytest.mark.slow
def test_two_launches_sharing_one_ledger_run_each_key_once(
    tmp_path: Path, data_root: Path, faults: Path, ray_address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One sweep launched into two output folders on one tracking URI: the second launch starts no
    key the first one holds, running or queued, and every key FINISHED exactly once.

    The first launch (this process, one trial at a time) holds its first trial until the second
    launch (a subprocess that starts once that trial is held) has ended: no clock is raced."""
    sweep = write_sweep(tmp_path, "shared", seeds=[1, 2])
    keys = sorted(t.key for t in load_plan(sweep).trials)
    uri = f"sqlite:///{tmp_path / 'ledger.db'}"
    held = "[ " + " -o ".join(f"-e {faults.with_name(key + '.held')}" for key in keys) + " ]"
    monkeypatch.chdir(tmp_path)  # MLflow's default artifact folder of a given SQLite URI: ./mlruns
    faults.write_text(json.dumps({key: "hold" for key in keys}))
    report, second_log = launch_beside_a_second(
        tmp_path, sweep, data_root, faults, ray_address, uri, held=held
    )
    assert "nothing to do here" in second_log and "claimed by another live launch" in second_log
    assert report.exit_code == 0 and report.finished == 4
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("shared").experiment_id], max_results=100)
    finished = sorted(r.data.tags["prometar.trial_key"] for r in runs if "prometar.trial_key" in r.data.tags)
    assert finished == keys  # each key once, and nothing else recorded as a trial
    assert all(r.info.status == "FINISHED" for r in runs if "prometar.trial_key" in r.data.tags)
    assert not [r for r in runs if r.data.tags.get("prometar.role") == "claim"]  # claims released


@pytest.mark.ray
@pytest.mark.slow
def test_two_launches_of_a_search_sweep_sharing_one_ledger_search_each_group_once(
    tmp_path: Path, data_root: Path, faults: Path, ray_address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A search sweep (one group, two samples) launched into two output folders on one tracking
    URI: the second launch, started while the first holds its first sample (``faults.py``: every
    trial held until the test's ``release``), searches nothing; the group gets its two samples,
    all from the first launch, and no claim is left."""
    search = {"metric": "val_hm", "mode": "max", "num_samples": 2, "seed": 3}
    search["space"] = {"optim.lr": {"loguniform": [0.001, 0.1]}}
    sweep = write_sweep(tmp_path, "shared_search", seeds=[1], datasets=["eurosat"], search=search)
    (group,) = load_plan(sweep).groups
    uri = f"sqlite:///{tmp_path / 'ledger.db'}"
    monkeypatch.chdir(tmp_path)  # MLflow's default artifact folder of a given SQLite URI: ./mlruns
    faults.write_text(json.dumps({"*": "hold"}))
    held = f"ls {faults.parent}/*.held > /dev/null 2>&1"
    report, second_log = launch_beside_a_second(
        tmp_path, sweep, data_root, faults, ray_address, uri, held=held
    )
    assert "1 search group(s) are claimed by another live launch" in second_log, second_log
    assert report.exit_code == 0 and report.finished == 2
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("shared_search").experiment_id], max_results=100)
    samples = [r for r in runs if r.data.tags.get("prometar.search_group") == group.key]
    assert len(samples) == 2 and all(r.info.status == "FINISHED" for r in samples)  # num_samples, once
    assert {r.data.tags["mlflow.parentRunId"] for r in samples} == {report.parent_run_id}
    assert not [r for r in runs if r.data.tags.get("prometar.role") == "claim"]  # claims released


@pytest.mark.ray
@pytest.mark.slow
def test_killed_launch_is_finished_by_relaunch_in_the_same_runs(
    tmp_path: Path, data_root: Path, ray_address: str, faults: Path
) -> None:
    """Two launches, one run per trial key: the trial the first launch was killed in continues its
    own MLflow run (attempt 2) from the checkpoint the run names, with each epoch logged once.

    The victim is held, not raced: both trials are held after their first epoch (``faults.py``); the
    first one held is released and finishes, the second is held with its checkpoint recorded, and
    only then is the launch killed.
    """
    epochs = 3
    sweep = write_sweep(
        tmp_path,
        "killed",
        seeds=[1, 2],
        datasets=["eurosat"],
        overrides={**OVERRIDES, "optim.epochs": epochs},
    )
    keys = [trial.key for trial in load_plan(sweep).trials]
    output = tmp_path / "out"
    launch_args = [
        "launch", str(sweep), "--output", str(output), "--data-root", str(data_root),
        "--address", ray_address, "--max-concurrent", "1",
    ]  # fmt: skip
    driver = joined_driver(ray_address, faults, launch_args)
    faults.write_text(json.dumps({key: "hold" for key in keys}))
    process = subprocess.Popen(
        [sys.executable, "-c", driver],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )

    def held() -> list[str]:
        return [key for key in keys if faults.with_name(f"{key}.held").exists()]

    try:
        wait_until(lambda: held() or process.poll() is not None, 600, "the first trial held")
        assert process.poll() is None, "the launch ended before its first trial was held"
        (first,) = held()
        faults.with_name(f"{first}.release").touch()  # the first trial finishes
        (second,) = [key for key in keys if key != first]
        wait_until(
            lambda: (
                process.poll() is not None
                or (second in held() and checkpointed_running(output / "mlflow.db") == [second])
            ),
            600,
            "the second trial held with its checkpoint recorded",
        )
        assert process.poll() is None, "the launch ended before it could be killed"
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.wait()
        faults.write_text("{}")
    before = {r.info.run_id: r for r in child_runs(output, "killed")}
    assert sorted(r.info.status for r in before.values()) == ["FINISHED", "RUNNING"]
    (interrupted,) = [r for r in before.values() if r.info.status == "RUNNING"]
    assert interrupted.data.tags["prometar.checkpoint"].startswith(str(output / "ray" / "killed" / "t_"))
    status = sweep_status(sweep, output=output)  # the RUNNING one is known to be stale: its launch died
    assert (status.done, status.running, status.stale, status.launches) == (1, 1, 1, ())
    assert "1 of the running left by a dead launch" in status.line()

    log = tmp_path / "relaunch.txt"
    with log.open("w") as stream:
        report = launch(
            sweep,
            LaunchOptions(data_root=data_root, output=output, tables=False, report=False),
            stream=stream,
        )
    assert report.to_run == 1 and report.done_before == 1 and report.exit_code == 0
    assert "1 trial(s) continue the MLflow run an earlier launch left unfinished" in log.read_text()
    runs = child_runs(output, "killed")
    finished = [r.data.tags["prometar.trial_key"] for r in runs if r.info.status == "FINISHED"]
    assert sorted(finished) == sorted(t.key for t in load_plan(sweep).trials)  # each key once
    assert sorted(r.info.status for r in runs) == ["FINISHED", "FINISHED"]  # one run per key, none left over
    assert {r.info.run_id for r in runs} == set(before)  # the interrupted trial's own run, reopened
    client = MlflowClient(default_tracking_uri(output))
    resumed = client.get_run(interrupted.info.run_id)
    assert (
        resumed.data.tags["prometar.attempt"] == "2"
        and resumed.data.tags["prometar.reopened_from"] == "KILLED"
    )
    assert "prometar.checkpoint" not in resumed.data.tags  # FINISHED: its checkpoints are gone
    assert [m.step for m in client.get_metric_history(resumed.info.run_id, "loss")] == list(
        range(1, epochs + 1)
    )
    # one Ray experiment folder for the sweep, reused; no checkpoint of a FINISHED trial is left
    assert [p.name for p in (output / "ray").iterdir() if p.is_dir()] == ["killed"]
    assert not list((output / "ray").rglob("checkpoint_*")) and not list((output / "trials").rglob("epoch_*"))
    assert "look at the runs: prometar-sweep ui --output " in log.read_text()
    parents = [
        r
        for r in client.search_runs([client.get_experiment_by_name("killed").experiment_id])
        if r.data.tags.get("prometar.role") == "launch"
    ]
    assert sorted(p.info.status for p in parents) == ["FINISHED", "KILLED"]


@pytest.mark.ray
@pytest.mark.slow
def test_a_disk_filling_during_trials_fails_them_in_one_line_each_and_a_relaunch_completes(
    tmp_path: Path, data_root: Path, ray_address: str, faults: Path
) -> None:
    """The disk fills under two of four trials after their first epoch (``faults.py`` ``enospc``:
    every later ``torch.save`` of theirs finds no space, retries included): each fails with one
    line naming its checkpoint and "no space left on device", its run ends FAILED with that reason,
    and the launch exits 1 with one summary naming the output folder and no traceback. The two
    finished trials stay; the relaunch runs only the other two."""
    sweep = write_sweep(tmp_path, "full", seeds=[1, 2])
    keys = sorted(t.key for t in load_plan(sweep).trials)
    victims = keys[:2]
    output = tmp_path / "out"
    args = [
        "launch",
        str(sweep),
        "--output",
        str(output),
        "--data-root",
        str(data_root),
        "--address",
        ray_address,
    ]
    faults.write_text(json.dumps({key: "enospc" for key in victims}))
    try:
        result = subprocess.run(
            [sys.executable, "-c", joined_driver(ray_address, faults, args)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=900,  # fails fast instead of hanging
        )
    finally:
        faults.write_text("{}")
        for key in victims:
            faults.with_name(f"{key}.full").unlink(missing_ok=True)
    console = result.stdout + result.stderr
    assert result.returncode == 1, console
    assert "Traceback" not in console, console
    failures = [line for line in console.splitlines() if " FAILED: " in line]
    assert len(failures) == 2, console
    for key in victims:
        (line,) = [line for line in failures if f"trial {key} FAILED: " in line]
        checkpoint = output / "trials" / key / "checkpoints" / "epoch_2" / "state.pt"
        assert line.endswith(f"DiskFullError: cannot write {checkpoint}: no space left on device"), line
    summaries = [line for line in console.splitlines() if "no space left on device: " in line]
    assert len(summaries) == 1 and f"the output folder {output} " in summaries[0], console
    assert "free space and launch again" in summaries[0]
    assert not (output / ".launch-full.reserve").exists()  # the launch's reserve is given back

    runs = {r.data.tags["prometar.trial_key"]: r for r in child_runs(output, "full")}
    assert sorted(runs) == keys  # one run per key
    assert {key for key, r in runs.items() if r.info.status == "FAILED"} == set(victims)
    assert {key for key, r in runs.items() if r.info.status == "FINISHED"} == set(keys[2:])
    for key in victims:
        assert "no space left on device" in runs[key].data.tags["prometar.error"]

    log = tmp_path / "relaunch.txt"
    with log.open("w") as stream:
        report = launch(
            sweep,
            LaunchOptions(data_root=data_root, output=output, tables=False, report=False),
            stream=stream,
        )
    assert report.exit_code == 0 and report.done_before == 2 and report.to_run == 2, log.read_text()
    after = {r.data.tags["prometar.trial_key"]: r for r in child_runs(output, "full")}
    assert sorted(after) == keys and all(r.info.status == "FINISHED" for r in after.values())
    for key in keys[2:]:  # finished before: not run again
        assert after[key].info.run_id == runs[key].info.run_id
        assert after[key].info.end_time == runs[key].info.end_time
    for key in victims:  # the failed ones continue their own runs
        assert after[key].info.run_id == runs[key].info.run_id
        assert after[key].data.tags["prometar.attempt"] == "2"


@pytest.mark.ray
@pytest.mark.slow
def test_search_runs_optuna_on_validation_and_writes_the_best_sweep(
    tmp_path: Path, data_root: Path, ray_address: str
) -> None:
    search = {
        "metric": "val_hm",
        "mode": "max",
        "num_samples": 2,
        "seed": 3,
        "space": {"optim.lr": {"loguniform": [0.001, 0.1]}},
    }
    sweep = write_sweep(tmp_path, "search", seeds=[1], datasets=["eurosat"], search=search)
    output, best_file = tmp_path / "out", tmp_path / "best.yaml"
    out = tmp_path / "stdout.txt"
    with out.open("w") as stream:
        report = launch(
            sweep,
            LaunchOptions(data_root=data_root, output=output, tables=False, write_best=best_file),
            stream=stream,
        )
    assert report.exit_code == 0 and report.to_run == 2 and report.finished == 2
    runs = child_runs(output, "search")
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    assert {r.data.tags["protocol"] for r in runs} == {"search"}
    assert len({r.data.tags["prometar.trial_key"] for r in runs}) == 2  # each sample is its own trial
    assert len({r.data.tags["prometar.search_group"] for r in runs}) == 1
    for run in runs:
        assert run.data.params["protocol"] == "search"
        assert 0.001 <= float(run.data.params["optim.lr"]) <= 0.1
        assert {"val_base", "val_new", "val_hm"} <= set(run.data.metrics)
        assert not {"base_acc", "new_acc", "hm"} & set(run.data.metrics)  # never test data or new classes
        history = MlflowClient(default_tracking_uri(output)).get_metric_history(run.info.run_id, "val_hm")
        assert {m.step for m in history} == {1, 2}  # reported every epoch (early stopping), then final
    best_run = max(runs, key=lambda r: r.data.metrics["val_hm"])
    assert report.best[0]["value"] == best_run.data.metrics["val_hm"]
    assert "best ivlp/eurosat/2shots/seed1: val_hm=" in out.read_text()

    best = load_plan(best_file).spec  # a valid sweep for the real protocol, with the winner's values
    assert best.protocol == "base2new" and best.search is None
    (trial,) = list(plan_sweep(best).trials)
    assert trial.config["optim"]["lr"] == pytest.approx(float(best_run.data.params["optim.lr"]))
    assert trial.config["protocol"] == "base2new" and trial.dataset == "eurosat"

    again = launch(
        sweep,
        LaunchOptions(data_root=data_root, output=output, tables=False, report=False),
        stream=stream_null(),
    )
    assert again.to_run == 0 and again.done_before == 2 and len(child_runs(output, "search")) == 2


def stream_null():
    return open(os.devnull, "w")  # noqa: SIM115 - closed with the process


def test_sigterm_stops_a_launch_like_ctrl_c(tmp_path: Path, data_root: Path, ray_address: str) -> None:
    """SIGTERM mid-sweep: the running trial's run ends KILLED (none left RUNNING), the launch's
    parent run ends KILLED, one line says so, and the exit code is non-zero (130)."""
    sweep = write_sweep(
        tmp_path, "termed", seeds=[1, 2], datasets=["eurosat"], overrides={**OVERRIDES, "optim.epochs": 8}
    )
    output = tmp_path / "out"
    command = [sys.executable, "-m", "orchestration.cli", "launch", str(sweep), "--output", str(output),
               "--data-root", str(data_root), "--address", ray_address, "--max-concurrent", "1"]  # fmt: skip
    log = tmp_path / "launch.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command, cwd=REPO, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline and process.poll() is None:
                if "RUNNING" in peek_child_statuses(output / "mlflow.db"):
                    break
                time.sleep(0.2)
            assert process.poll() is None, "the launch ended before it could be stopped"
            os.kill(process.pid, signal.SIGTERM)
            code = process.wait(timeout=300)  # fails fast instead of hanging (generous guard)
        finally:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
    text = log.read_text()
    assert code == 130, text[-3000:]
    assert "[termed] interrupted:" in text and "launch again" in text
    statuses = [r.info.status for r in child_runs(output, "termed")]
    assert "RUNNING" not in statuses and "KILLED" in statuses, statuses
    client = MlflowClient(default_tracking_uri(output))
    experiment = client.get_experiment_by_name("termed")
    parents = [
        r for r in client.search_runs([experiment.experiment_id]) if "prometar.trial_key" not in r.data.tags
    ]
    assert [r.info.status for r in parents] == ["KILLED"]


def test_a_failed_trial_is_one_line_with_its_real_reason(
    tmp_path: Path, data_root: Path, ray_address: str
) -> None:
    """A diverging trial: the launch prints one line naming the real error (no Ray traceback),
    and the FAILED run records the same reason (the error survived Ray's pickling)."""
    overrides = {**OVERRIDES, "optim.lr": 1e30, "optim.warmup_epochs": 0}
    sweep = write_sweep(tmp_path, "diverge", seeds=[1], datasets=["eurosat"], overrides=overrides)
    output = tmp_path / "out"
    command = [sys.executable, "-m", "orchestration.cli", "launch", str(sweep), "--output", str(output),
               "--data-root", str(data_root), "--address", ray_address]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    text = done.stdout + done.stderr
    assert done.returncode == 1, text[-3000:]
    failed = [line for line in text.splitlines() if "FAILED: " in line]
    assert len(failed) == 1 and "NonFiniteLossError: non-finite" in failed[0], text[-3000:]
    assert "Traceback" not in text and "TypeError" not in text, text[-3000:]
    (run,) = child_runs(output, "diverge")
    assert run.info.status == "FAILED" and "NonFiniteLossError: non-finite" in run.data.tags["prometar.error"]
    # the full text in MLflow: the error, then the last lines of the trial's log; the whole log
    client = MlflowClient(default_tracking_uri(output))
    error = Path(client.download_artifacts(run.info.run_id, "error.txt", str(tmp_path))).read_text()
    head, quoted = error.split("--- the last lines of trial.log ---", 1)
    assert "NonFiniteLossError: non-finite" in head and "trains on cpu" in quoted
    log = Path(client.download_artifacts(run.info.run_id, "trial.log", str(tmp_path))).read_text()
    assert quoted.strip().splitlines()[0] in log and "trains on cpu" in log


@pytest.mark.ray
@pytest.mark.slow
def test_search_groups_run_side_by_side_in_one_tuner(
    tmp_path: Path, data_root: Path, ray_address: str
) -> None:
    """Two groups (two seeds), one sample each, two CPUs: both samples run at once, each scheduled
    (ASHA) and searched by its own group."""
    search = {
        "metric": "val_hm",
        "mode": "max",
        "num_samples": 1,
        "seed": 3,
        "scheduler": "asha",
        "space": {"optim.lr": {"loguniform": [0.001, 0.1]}},
    }
    sweep = write_sweep(
        tmp_path,
        "groups",
        seeds=[1, 2],
        datasets=["eurosat"],
        search=search,
        overrides={**OVERRIDES, "optim.epochs": 6},
    )  # long enough to overlap
    output = tmp_path / "out"
    report = launch(
        sweep, LaunchOptions(data_root=data_root, output=output, tables=False), stream=stream_null()
    )
    assert report.exit_code == 0 and report.to_run == 2 and report.finished == 2
    runs = child_runs(output, "groups")
    groups = {g.key for g in load_plan(sweep).groups}
    assert len(groups) == 2 and sorted(r.data.tags["prometar.search_group"] for r in runs) == sorted(groups)
    first, second = sorted(runs, key=lambda r: r.info.start_time)
    assert second.info.start_time < first.info.end_time  # side by side, not one group after the other
    assert {r.data.tags["seed"] for r in runs} == {"1", "2"}


def test_a_corrupt_image_fails_its_trial_naming_the_file_and_the_sweep_goes_on(
    tmp_path: Path, ray_address: str
) -> None:
    from prometar.data.readers import read_dataset
    from prometar.toy.miniature import write_miniatures

    root = tmp_path / "data"
    write_miniatures(root, ["eurosat", "dtd"])
    for item in read_dataset("eurosat", root).train:  # every training image: whichever the shots pick
        Path(item.path).write_text("not an image")
    sweep = write_sweep(tmp_path, "corrupt", seeds=[1], datasets=["eurosat", "dtd"])
    output = tmp_path / "out"
    command = [sys.executable, "-m", "orchestration.cli", "launch", str(sweep), "--output", str(output),
               "--data-root", str(root), "--address", ray_address]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    text = done.stdout + done.stderr
    assert done.returncode == 1, text[-3000:]
    failed = [line for line in text.splitlines() if "FAILED: " in line]
    assert (
        len(failed) == 1
        and "DataError: cannot read image" in failed[0]
        and str(root / "eurosat") in failed[0]
    )
    assert "Traceback" not in text
    statuses = {r.data.tags["dataset"]: r.info.status for r in child_runs(output, "corrupt")}
    assert statuses == {"eurosat": "FAILED", "dtd": "FINISHED"}


@pytest.mark.ray
@pytest.mark.slow
def test_domain_generalisation_then_cross_dataset_train_one_source_model(
    tmp_path: Path, ray_address: str
) -> None:
    """The second transfer sweep trains nothing: it evaluates the source model the first trained,
    and both tables print that model's ImageNet accuracy as the source column."""
    import io

    from prometar.toy.miniature import write_miniatures

    root = tmp_path / "data"
    write_miniatures(root, ["imagenet", "imagenet_v2", "imagenet_a", "caltech101", "eurosat"])
    output = tmp_path / "out"
    sweeps = {
        name: write_sweep(
            tmp_path,
            name,
            seeds=[1],
            datasets=["imagenet"],
            protocol=protocol,
            overrides={**OVERRIDES, "eval.targets": targets},
            grid={"method": ["prometar"], "dataset": ["imagenet"], "seed": [1], "shots": [2]},
        )
        for name, protocol, targets in (
            ("dg", "domain_generalization", ["imagenet_v2", "imagenet_a"]),
            ("xd", "cross_dataset", ["caltech101", "eurosat"]),
        )
    }
    printed = {}
    reports = {}
    for name in ("dg", "xd"):  # the domain-generalisation sweep first, then the cross-dataset one
        stream = io.StringIO()
        reports[name] = launch(
            sweeps[name], LaunchOptions(data_root=root, output=output, report=False), stream=stream
        )
        printed[name] = stream.getvalue()
    assert reports["dg"].exit_code == 0 and reports["dg"].finished == 2  # the source model, its evaluation
    assert reports["xd"].exit_code == 0, printed["xd"]
    assert reports["xd"].finished == 1 and reports["xd"].done_before == 1  # evaluation only

    client = MlflowClient(default_tracking_uri(output))
    runs = {name: child_runs(output, name) for name in ("dg", "xd")}
    sources = [r for r in runs["dg"] + runs["xd"] if r.data.tags["protocol"] == "transfer_source"]
    assert len(sources) == 1 and sources[0].data.tags["sweep"] == "dg"  # one ImageNet model, trained once
    source = sources[0]
    assert len(client.get_metric_history(source.info.run_id, "loss")) == 2  # it trained its 2 epochs
    source_prompts = torch.load(
        client.download_artifacts(source.info.run_id, "prompts.pt", str(tmp_path)), weights_only=True
    )
    for name, targets in (("dg", ["imagenet_v2", "imagenet_a"]), ("xd", ["caltech101", "eurosat"])):
        (transfer,) = [r for r in runs[name] if r.data.tags["protocol"] != "transfer_source"]
        assert client.get_metric_history(transfer.info.run_id, "loss") == []  # trained nothing
        metrics = transfer.data.metrics
        assert metrics["acc/imagenet"] == source.data.metrics["acc/imagenet"]  # the source column
        assert metrics["acc/mean"] == pytest.approx(sum(metrics[f"acc/{t}"] for t in targets) / 2)
        folder = tmp_path / name
        folder.mkdir()
        evaluated = torch.load(
            client.download_artifacts(transfer.info.run_id, "prompts.pt", str(folder)), weights_only=True
        )
        assert all(torch.equal(evaluated[k], source_prompts[k]) for k in source_prompts)
        # the table: a source column beside the targets, the target mean over the targets alone
        header = next(line for line in printed[name].splitlines() if line.startswith("| Method"))
        assert "| Source |" in header and header.index("Source") < header.index("Target mean")
        row = next(line for line in printed[name].splitlines() if line.startswith("| ProMetaR"))
        assert f"{source.data.metrics['acc/imagenet']:.2f}" in row
    status = sweep_status(sweeps["xd"], output=output)
    assert (status.done, status.todo, status.total) == (2, 0, 2)
