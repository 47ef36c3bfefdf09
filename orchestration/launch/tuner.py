"""The Tuner of a launch: the trainable, its resources, the callbacks, Ray storage, retries.

:func:`run_tuner` runs one ``tune.Tuner`` over a :class:`~orchestration.launch.trial_table.TrialTable`
— a grid over trial keys (:func:`grid_space`), or one search group's samples
(``orchestration.launch.search``) — with per-trial resources by dataset (fractional GPUs pack
trials), ``FailureConfig(max_failures)`` with resume from the last epoch checkpoint,
``max_concurrent_trials``, short trial directories, Ray storage under ``<output>/ray``, the MLflow
callback (the single writer of the ledger), the progress line, and Tune's JSON and CSV loggers.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestration import layout
from orchestration.environment import temporary_environment
from orchestration.launch.trial_table import GRID_KEY, TrialTable, trial_name
from orchestration.ledger.vocabulary import FAILED, FINISHED, KILLED, TRIALS_PLANNED_TAG
from orchestration.provenance import git_sha
from orchestration.sweeps.planning import Trial

if TYPE_CHECKING:
    from orchestration.launch.runner import Launch


def grid_space(trials: list[Trial]) -> dict[str, Any]:
    """The Tune param space of a grid over trial keys, in the given (planned) order."""
    from ray import tune

    return {GRID_KEY: tune.grid_search([t.key for t in trials])}


def tune_config(launch: Launch, **kwargs: Any) -> Any:
    """A ``tune.TuneConfig`` with the launch's concurrency, actor reuse and short trial names."""
    from ray import tune

    return tune.TuneConfig(
        max_concurrent_trials=launch.options.max_concurrent,
        reuse_actors=True,
        trial_name_creator=trial_name,
        trial_dirname_creator=trial_name,
        **kwargs,
    )


def run_tuner(
    launch: Launch, table: TrialTable, param_space: Mapping[str, Any], config: Any, progress: Any
) -> None:
    """Fit one Tuner; its trials' outcomes are added to the launch's report.

    The launch's parent run is created on the first Tuner (``report.parent_run_id``).

    Args:
        launch: The launch in progress (plan, ledger, report, output, options).
        table: The trials and search groups the Tune configs stand for.
        param_space: The Tune param space (grid over keys, or one group's search space).
        config: The ``tune.TuneConfig``.
        progress: The progress-line callback.
    """
    from ray import tune

    from orchestration.launch.trainable import train_trial
    from orchestration.ledger.callback import MlflowTrialCallback

    plan, report = launch.plan, launch.report
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: only our progress line
    parent = report.parent_run_id or launch.ledger.start_launch({TRIALS_PLANNED_TAG: str(report.total)})
    report.parent_run_id = parent
    tracker = MlflowTrialCallback(launch.ledger, parent, table.resolve, plan.name)
    trainable = tune.with_parameters(
        train_trial,
        table=table,
        data_root=str(Path(launch.options.data_root).resolve()),
        output_root=str(launch.output),
        git_sha=git_sha(),
        resume_local=not launch.options.force,
    )
    trainable = tune.with_resources(trainable, resources_request(plan.spec, table))
    run_config = tune.RunConfig(
        name=f"{plan.name}-{time.strftime('%Y%m%d-%H%M%S')}",
        storage_path=str(layout.ray_storage(launch.output)),
        callbacks=[tracker, progress, *_tune_loggers()],
        failure_config=tune.FailureConfig(max_failures=plan.spec.max_failures),
        verbose=0,
    )
    try:
        # Tune's automatic loggers include a TensorBoard writer whose import pulls torch into the
        # driver (~3 s per launch); MLflow is the record, so only the JSON and CSV loggers run.
        with temporary_environment(TUNE_DISABLE_AUTO_CALLBACK_LOGGERS="1"):
            tune.Tuner(
                trainable, param_space=dict(param_space), tune_config=config, run_config=run_config
            ).fit()
    finally:
        outcomes = list(tracker.outcomes.values())
        report.finished += outcomes.count(FINISHED)
        report.failed += outcomes.count(FAILED)
        report.killed += outcomes.count(KILLED)
    # Tune returns normally when it was stopped (Ctrl-C, SIGTERM: see launch.signals): the trials
    # asked for that neither finished nor failed (killed mid-run, or never started) make the launch
    # an interrupted one, never a success.
    asked = len(table.trials) if table.trials else max(config.num_samples, 0)
    report.interrupted += max(0, asked - outcomes.count(FINISHED) - outcomes.count(FAILED))


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
