"""The driver-side Tune callback: one MLflow child run per trial, the single writer of the ledger.

It creates a trial's child run when Tune starts it (tags: ``vocabulary.trial_tags``, params: the
flattened resolved config), logs each result's metrics (per-epoch curves at step = epoch, then the
final metrics), the artifacts of the last report's checkpoint, retries and errors, and ends the
run FINISHED, FAILED or — when the experiment ends without an outcome — KILLED. It also refreshes
the launch's heartbeat.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ray import tune

from orchestration.ledger.store import HEARTBEAT_EVERY_S, TrialLedger
from orchestration.ledger.vocabulary import (
    ERROR_ARTIFACT,
    ERROR_TAG,
    EVENT_KEY,
    FAILED,
    FINAL_EVENT,
    FINAL_FILE,
    FINISHED,
    GIT_SHA_TAG,
    KILLED,
    LAST_RETRY_ERROR_TAG,
    MAX_TAG_LENGTH,
    PARENT_TAG,
    PROTOCOL_PARAM,
    RESULT_REVISION_TAG,
    RETRIES_TAG,
    STOPPED_EARLY_TAG,
    TUNE_RESULT_KEYS,
    TUNE_TRIAL_ID_TAG,
    VERSION_TAG,
    trial_tags,
)
from orchestration.provenance import code_version, git_sha
from orchestration.sweeps.planning import Trial
from prometar import RESULT_REVISION, events

PARAM_BATCH = 100
METRIC_BATCH = 1000


def _numeric_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in result.items():
        if key in TUNE_RESULT_KEYS or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(float(value)):
            out[key] = float(value)
    return out


def _read_error(trial: Any) -> str:
    path = getattr(trial, "error_file", None)
    if path and Path(path).is_file():
        return Path(path).read_text(errors="replace")
    return f"trial {getattr(trial, 'trial_id', '?')} failed (no error file)"


class MlflowTrialCallback(tune.Callback):
    """Driver-side Tune callback: one MLflow child run per trial, the single writer of the ledger.

    Args:
        ledger: The sweep's ledger.
        parent_run_id: The launch's parent run.
        resolve: Tune trial config → :class:`~orchestration.sweeps.planning.Trial`.
        sweep: The sweep's name (the ``sweep`` tag).
    """

    def __init__(
        self,
        ledger: TrialLedger,
        parent_run_id: str,
        resolve: Callable[[Mapping[str, Any]], Trial],
        sweep: str,
    ) -> None:
        self.ledger = ledger
        self.parent_run_id = parent_run_id
        self.resolve = resolve
        self.sweep = sweep
        self.sha = git_sha()
        self.runs: dict[str, str] = {}  # Tune trial id -> MLflow run id
        self.keys: dict[str, str] = {}  # Tune trial id -> trial key
        self.outcomes: dict[str, str] = {}  # trial key -> FINISHED / FAILED / KILLED
        self._last_beat = time.monotonic()  # start_launch wrote the first heartbeat

    def _run_for(self, trial: Any) -> str:
        if trial.trial_id in self.runs:
            return self.runs[trial.trial_id]
        from mlflow.entities import Param

        from prometar.config import flatten

        spec_trial = self.resolve(trial.config)
        exp = self.ledger.experiment_id(create=True)
        assert exp is not None
        tags = {
            **trial_tags(spec_trial, self.sweep),
            PARENT_TAG: self.parent_run_id,
            VERSION_TAG: code_version(),
            GIT_SHA_TAG: self.sha,
            TUNE_TRIAL_ID_TAG: trial.trial_id,
            RESULT_REVISION_TAG: str(RESULT_REVISION),
        }
        run = self.ledger.client.create_run(
            exp,
            tags=tags,
            run_name=f"{spec_trial.dataset}-{spec_trial.method}-s{spec_trial.seed}-{spec_trial.key}",
        )
        run_id = run.info.run_id
        params = [
            Param(k, json.dumps(v) if isinstance(v, (list, dict)) else str(v))
            for k, v in sorted(flatten(spec_trial.config).items())
        ]
        params.append(Param(PROTOCOL_PARAM, spec_trial.protocol))
        for i in range(0, len(params), PARAM_BATCH):
            self.ledger.client.log_batch(run_id, params=params[i : i + PARAM_BATCH])
        self.runs[trial.trial_id] = run_id
        self.keys[trial.trial_id] = spec_trial.key
        return run_id

    def on_step(self, iteration: int, trials: list, **info: Any) -> None:
        if time.monotonic() - self._last_beat >= HEARTBEAT_EVERY_S:
            self._last_beat = time.monotonic()
            self.ledger.heartbeat(self.parent_run_id)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._run_for(trial)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        from mlflow.entities import Metric

        run_id = self._run_for(trial)
        metrics = _numeric_metrics(result)
        if result.get(EVENT_KEY) == FINAL_EVENT:
            step = int(result.get(events.EPOCH_KEY, 0) or 0)
        else:
            step = int(result.get(events.EPOCH_KEY, result.get("training_iteration", 0)) or 0)
        now = int(time.time() * 1000)
        batch = [Metric(k, v, now, step) for k, v in sorted(metrics.items())]
        for i in range(0, len(batch), METRIC_BATCH):
            self.ledger.client.log_batch(run_id, metrics=batch[i : i + METRIC_BATCH])

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        run_id = self._run_for(trial)
        self.ledger.client.set_tag(run_id, RETRIES_TAG, str(trial.num_failures))
        self.ledger.client.set_tag(run_id, LAST_RETRY_ERROR_TAG, _read_error(trial)[-MAX_TAG_LENGTH:])

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        run_id = self._run_for(trial)
        checkpoint = trial.checkpoint
        if checkpoint is not None:
            with tempfile.TemporaryDirectory(prefix="prometar-artifacts-") as tmp:
                folder = Path(checkpoint.to_directory(tmp))
                if (folder / FINAL_FILE).is_file():
                    self.ledger.client.log_artifacts(run_id, str(folder))
        final = (trial.last_result or {}).get(EVENT_KEY) == FINAL_EVENT
        if not final:
            self.ledger.client.set_tag(run_id, STOPPED_EARLY_TAG, "1")
        self.ledger.client.set_terminated(run_id, FINISHED)
        self.outcomes[self.keys[trial.trial_id]] = FINISHED

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        run_id = self._run_for(trial)
        error = _read_error(trial)
        self.ledger.client.set_tag(run_id, ERROR_TAG, error[-MAX_TAG_LENGTH:])
        self.ledger.client.log_text(run_id, error, ERROR_ARTIFACT)
        self.ledger.client.set_terminated(run_id, FAILED)
        self.outcomes[self.keys[trial.trial_id]] = FAILED

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        for trial_id, run_id in self.runs.items():
            if self.keys[trial_id] not in self.outcomes:
                self.ledger.client.set_terminated(run_id, KILLED)
                self.outcomes[self.keys[trial_id]] = KILLED
