"""The Tuner of a launch: the trainable, its resources, the callbacks, Ray storage, retries.

:func:`run_tuner` runs one ``tune.Tuner`` over a :class:`~orchestration.launch.trial_table.TrialTable`
— a grid over trial keys (:func:`grid_space`), or one search group's samples
(``orchestration.launch.search``) — with per-trial resources by dataset (fractional GPUs pack
trials), ``FailureConfig(max_failures)`` with resume from the last epoch checkpoint,
``max_concurrent_trials``, short trial directories, the MLflow callback (the single writer of the
ledger), the progress line, and Tune's JSON and CSV loggers.

Ray storage (``--storage``; default ``<output>/ray``, or ``s3://...``: ``orchestration.storage``)
holds one experiment folder per sweep, ``<storage>/<sweep name>/``, reused by every launch; each
launch's folder of a trial is ``<trial name>-<launch>`` in it (the launch: the first characters of
its parent run id), so no launch overwrites another's checkpoints. Tune keeps a running trial's
last ``checkpoint.keep`` checkpoints; the callback deletes the rest (module
``orchestration.ledger.callback``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestration import layout
from orchestration.environment import temporary_environment
from orchestration.launch.trial_table import GRID_KEY, TrialTable, trial_name
from orchestration.ledger.launches import overrides_tag
from orchestration.ledger.vocabulary import FAILED, FINISHED, KILLED, TRIALS_PLANNED_TAG
from orchestration.logs import quiet
from orchestration.provenance import git_sha
from orchestration.sweeps.planning import Trial

if TYPE_CHECKING:
    from orchestration.launch.state import Launch


def grid_space(trials: list[Trial]) -> dict[str, Any]:
    """The Tune param space of a grid over trial keys, in the given (planned) order."""
    from ray import tune

    return {GRID_KEY: tune.grid_search([t.key for t in trials])}


def tune_config(launch: Launch, **kwargs: Any) -> Any:
    """A ``tune.TuneConfig`` with the launch's concurrency, actor reuse and short trial names.

    The launch's parent run is created here when it does not exist yet: its id names the
    launch's trial folders.
    """
    from ray import tune

    launch_tag = parent_run(launch)[:8]

    def trial_folder(
        trial: Any,
    ) -> str:  # this launch's folder of the trial, in the sweep's experiment folder
        return f"{trial_name(trial)}-{launch_tag}"

    return tune.TuneConfig(
        max_concurrent_trials=launch.options.max_concurrent,
        reuse_actors=True,
        trial_name_creator=trial_name,
        trial_dirname_creator=trial_folder,
        **kwargs,
    )


def parent_run(launch: Launch) -> str:
    """The launch's parent run id (created on first use)."""
    report = launch.report
    if report.parent_run_id is None:
        report.parent_run_id = launch.ledger.start_launch(
            {TRIALS_PLANNED_TAG: str(report.total), **overrides_tag(launch.options.overrides)}
        )
    return report.parent_run_id


def run_tuner(
    launch: Launch,
    table: TrialTable,
    param_space: Mapping[str, Any],
    config: Any,
    progress: Any,
    reopen: Mapping[str, Any] | None = None,
) -> None:
    """Fit one Tuner; its trials' outcomes are added to the launch's report.

    The launch's parent run is created on the first Tuner (``report.parent_run_id``).

    Args:
        launch: The launch in progress (plan, ledger, report, output, options).
        table: The trials and search groups the Tune configs stand for.
        param_space: The Tune param space (grid over keys, or one group's search space).
        config: The ``tune.TuneConfig``.
        progress: The progress-line callback.
        reopen: Trial key → the MLflow run (of an earlier launch) the trial continues; it resumes
            from the checkpoint that run names.
    """
    from ray import tune

    from orchestration.launch.trainable import train_trial
    from orchestration.ledger.callback import MlflowTrialCallback
    from orchestration.ledger.vocabulary import CHECKPOINT_TAG
    from orchestration.storage import open_storage

    plan = launch.plan
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: only our progress line
    parent = parent_run(launch)
    reopen = dict(reopen or {})
    resume = {
        key: run.data.tags[CHECKPOINT_TAG] for key, run in reopen.items() if run.data.tags.get(CHECKPOINT_TAG)
    }
    table = replace(table, resume=resume)
    storage = open_storage(launch.options.storage or layout.ray_storage(launch.output))
    tracker = MlflowTrialCallback(
        launch.ledger,
        parent,
        table.resolve,
        plan.name,
        reopen=reopen,
        trial_logs=None if storage.remote else launch.output,
        make_room=launch.reserve.release if launch.reserve is not None else None,
    )
    trainable = tune.with_parameters(
        train_trial,
        table=table,
        data_root=str(Path(launch.options.data_root).resolve()),
        output_root=str(launch.output),
        git_sha=git_sha(),
        resume_local=not launch.options.force,
        node_local=storage.remote,
        keep_checkpoints=plan.spec.checkpoint_keep,
    )
    trainable = tune.with_resources(trainable, resources_request(plan.spec, table))
    run_config = tune.RunConfig(
        name=plan.name,  # one experiment folder per sweep, reused by every launch
        **storage.ray_run_config(),
        callbacks=[tracker, progress, *_tune_loggers()],
        failure_config=tune.FailureConfig(max_failures=plan.spec.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=plan.spec.checkpoint_keep),
        verbose=0,
    )
    report = launch.report
    try:
        # Tune's automatic loggers include a TensorBoard writer whose import pulls torch into the
        # driver (~3 s per launch); MLflow is the record, so only the JSON and CSV loggers run.
        # A failed trial is one line of ours (launch.progress) and its full error is an MLflow
        # artifact (error.txt): Tune's own traceback log of it stays out of the console.
        # Keeping few checkpoints makes Tune snapshot its state often; its warning about that is noise.
        with (
            temporary_environment(
                TUNE_DISABLE_AUTO_CALLBACK_LOGGERS="1",
                TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S="0",
            ),
            quiet(*QUIET_LOGGERS),
        ):
            tune.Tuner(
                trainable, param_space=dict(param_space), tune_config=config, run_config=run_config
            ).fit()
    finally:
        outcomes = list(tracker.outcomes.values())
        report.finished += outcomes.count(FINISHED)
        report.failed += outcomes.count(FAILED)
        report.killed += outcomes.count(KILLED)
        report.disk_full += len(tracker.disk_full)
        report.unrecorded += tracker.unrecorded
    # Tune returns normally when it was stopped (Ctrl-C, SIGTERM: see launch.signals): the trials
    # asked for that neither finished nor failed (killed mid-run, or never started) make the launch
    # an interrupted one, never a success.
    asked = len(table.trials) if table.trials else max(config.num_samples, 0)
    report.interrupted += max(0, asked - outcomes.count(FINISHED) - outcomes.count(FAILED))


MLFLOW_DATABASE_LOGGER = "mlflow.store.db.utils"
"""MLflow's SQL store logs each failed database write with its traceback (and raises it)."""
QUIET_LOGGERS = (
    "ray.tune.execution.tune_controller",
    "ray.tune.execution.experiment_state",
    "ray.train._internal.syncer",
    MLFLOW_DATABASE_LOGGER,
)
"""Loggers that print a traceback for what the launch reports itself: Tune's of a trial's error
(one line of ours, ``launch.progress``), Tune's and MLflow's of a write that failed (Tune's state,
its copy into Ray storage, the ledger's database: on a full disk the callback makes room and
writes again, or the launch ends with one line saying so)."""


def resources_request(spec: Any, table: TrialTable) -> Any:
    """Per-trial resources by dataset (``resources:`` of the sweep file) as a placement group."""
    from ray import tune

    def request(config: Mapping[str, Any]) -> Any:
        resources = spec.resources_for(table.dataset(config))
        bundle = {"CPU": resources.cpu}
        if resources.gpu > 0:
            bundle["GPU"] = resources.gpu
        return tune.PlacementGroupFactory([bundle])

    return request


def _tune_loggers() -> list[Any]:
    """Tune's per-trial ``result.json`` and ``progress.csv`` (no TensorBoard files)."""
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    return [JsonLoggerCallback(), CSVLoggerCallback()]
