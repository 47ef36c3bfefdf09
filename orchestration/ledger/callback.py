"""The driver-side Tune callback: one MLflow child run per trial, the single writer of the ledger.

It creates a trial's child run when Tune starts it (tags: ``vocabulary.trial_tags``, params: the
flattened resolved config), logs each result's metrics (per-epoch curves at step = epoch, then the
final metrics), the artifacts of the last report's checkpoint, retries and errors, and ends the
run FINISHED, FAILED or — when the experiment ends without an outcome — KILLED. It also refreshes
the launch's heartbeat. With a tracking server (``http://``) it talks to it over HTTP.

One run per trial key across launches: a trial a later launch runs again (its run ended KILLED or
FAILED) reopens its run (``reopen``, from ``TrialLedger.reopenable``): same run id, status RUNNING
again, :data:`ATTEMPT_TAG` counting the launches, the parent tag moved to the new launch. An epoch
a run already holds is not logged again (a reopened run, or a retry that resumed from an earlier
checkpoint than the last epoch logged: the node died before Tune registered the newer one;
training is deterministic, so the values are the same).

A full disk: a trial whose error is :class:`~prometar.errors.DiskFullError` is counted in
:attr:`MlflowTrialCallback.disk_full`; a ledger write that finds the disk full (the SQLite file, a
file artifact store) calls ``make_room`` (the launch's space reserve) and is tried once more, and
one that still cannot be written is counted in :attr:`MlflowTrialCallback.unrecorded` instead of
stopping Tune (the launch then ends saying so, and a relaunch closes what stayed RUNNING).

Checkpoints: the run's :data:`CHECKPOINT_TAG` names its latest checkpoint Tune registered (a later
launch resumes from it); when the tag moves to a new launch's trial folder, the earlier folder's
checkpoints are deleted; once the run FINISHED (its prompts and metrics are artifacts), every
checkpoint of the trial is deleted, and a search sample's (it never resumes in another launch)
when its Tuner ends.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ray import tune

from orchestration import layout
from orchestration.ledger.store import HEARTBEAT_EVERY_S, TrialLedger
from orchestration.ledger.vocabulary import (
    ACTIVE,
    ATTEMPT_TAG,
    CHECKPOINT_TAG,
    CLOSED_BY_TAG,
    EPOCH_METRIC,
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
    PREVIOUS_ERROR_TAG,
    PROTOCOL_PARAM,
    REOPENED_FROM_TAG,
    RESULT_REVISION_TAG,
    RETRIES_TAG,
    RUNNING,
    STOPPED_EARLY_TAG,
    TRIAL_LOG_ARTIFACT,
    TUNE_RESULT_KEYS,
    TUNE_TRIAL_ID_TAG,
    VERSION_TAG,
    trial_tags,
)
from orchestration.logs import split_error
from orchestration.provenance import code_version, git_sha
from orchestration.sweeps.planning import Trial
from prometar import RESULT_REVISION, events
from prometar.files import is_disk_full, out_of_space

PARAM_BATCH = 100
REASON_LENGTH = 400
"""Longest one-line reason of a failed trial (the console's failure line)."""
METRIC_BATCH = 1000


def _numeric_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in result.items():
        if key in TUNE_RESULT_KEYS or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(float(value)):
            out[key] = float(value)
    return out


def _read_error(trial: Any, *, with_log: bool = False) -> str:
    """The trial's error text; ``with_log``: with the lines of its ``trial.log`` it quotes."""
    path = getattr(trial, "error_file", None)
    if path and Path(path).is_file():
        text = Path(path).read_text(errors="replace")
        return text if with_log else split_error(text)[0]
    return f"trial {getattr(trial, 'trial_id', '?')} failed (no error file)"


def error_reason(trial: Any) -> str:
    """The real reason a trial failed, in one line: the innermost exception and its message.

    Ray wraps a trial's exception (``RayTaskError(DataError): ray::ImplicitFunc.train() ...``);
    the last ``Type: message`` line of its traceback is what the trial raised.
    """
    lines = [line.strip() for line in _read_error(trial).splitlines() if line.strip()]
    for line in reversed(lines):
        head = line.split(":", 1)[0]
        if ":" in line and " " not in head and head[:1].isalpha() and not head.startswith("File"):
            name = head.rsplit(".", 1)[-1]
            if name.endswith(("Error", "Exception", "Fault", "Interrupt")) or name == "AssertionError":
                return line if len(line) <= REASON_LENGTH else line[: REASON_LENGTH - 1] + "…"
    return (lines[-1] if lines else "failed")[:REASON_LENGTH]


def trial_disk_full(trial: Any) -> bool:
    """Whether the trial's last error is a full disk: its pickled error (or the cause Ray wrapped)
    says so; without one — when the callbacks run, Tune has written it to the driver's staging
    folder but not yet synced it to the run's storage, which ``get_pickled_error`` reads — the
    error's text (``error_file``, the staging folder's) names a full disk (``DiskFullError``,
    ``ENOSPC``); or that file could not be written and the disk under the trial's folder is full."""
    local = getattr(trial, "local_path", None)
    try:
        error = trial.get_pickled_error()
    except Exception:  # written empty or not at all: on a full disk, Tune's own error file is too
        return bool(local) and out_of_space(local)
    if error is None:  # no error object in storage (yet): what the trial raised, from its text
        reason = error_reason(trial)
        named = reason.split(":", 1)[0].endswith("DiskFullError") or "[Errno 28]" in reason
        return named or (bool(local) and out_of_space(local))
    return is_disk_full(error) or is_disk_full(getattr(error, "cause", None))


def _recording(method: Callable[..., None]) -> Callable[..., None]:
    """A ledger write that finds the disk full makes room (``make_room``) and runs once more; if it
    still cannot be written it is counted (``unrecorded``) and Tune goes on."""

    @functools.wraps(method)
    def guarded(self: MlflowTrialCallback, *args: Any, **kwargs: Any) -> None:
        try:
            return method(self, *args, **kwargs)
        except Exception as error:
            if not is_disk_full(error):
                raise
        if self.make_room is not None and self.make_room():
            try:
                return method(self, *args, **kwargs)
            except Exception as error:
                if not is_disk_full(error):
                    raise
        self.unrecorded += 1
        return None

    return guarded


class MlflowTrialCallback(tune.Callback):
    """Driver-side Tune callback: one MLflow child run per trial, the single writer of the ledger.

    Args:
        ledger: The sweep's ledger.
        parent_run_id: The launch's parent run.
        resolve: Tune trial config → :class:`~orchestration.sweeps.planning.Trial`.
        sweep: The sweep's name (the ``sweep`` tag).
        reopen: Trial key → the run this launch reopens for it (``TrialLedger.reopenable``); other
            keys get a new run.
        trial_logs: The output folder whose ``trials/<key>/trial.log`` the driver can read (Ray
            storage on a local or shared folder); a failed trial's whole log is logged from there.
            ``None`` (object storage): its log as of its last checkpoint, and the lines its error
            quotes.
        make_room: Called when a ledger write finds the disk full (the launch's space reserve
            released); True when it freed some, and the write is tried once more.

    Attributes:
        disk_full: Trial keys whose trial failed for a full disk (``DiskFullError``).
        unrecorded: Ledger writes a full disk prevented (the runs they were for may stay RUNNING).
    """

    def __init__(
        self,
        ledger: TrialLedger,
        parent_run_id: str,
        resolve: Callable[[Mapping[str, Any]], Trial],
        sweep: str,
        reopen: Mapping[str, Any] | None = None,
        trial_logs: Path | None = None,
        make_room: Callable[[], bool] | None = None,
    ) -> None:
        self.ledger = ledger
        self.make_room = make_room
        self.disk_full: set[str] = set()
        self.unrecorded = 0
        self.trial_logs = trial_logs
        self.parent_run_id = parent_run_id
        self.resolve = resolve
        self.sweep = sweep
        self.reopen = dict(reopen or {})
        self.sha = git_sha()
        self.runs: dict[str, str] = {}  # Tune trial id -> MLflow run id
        self.keys: dict[str, str] = {}  # Tune trial id -> trial key
        self.outcomes: dict[str, str] = {}  # trial key -> FINISHED / FAILED / KILLED
        self.logged_epochs: dict[str, int] = {}  # run id -> the last epoch it holds
        self.checkpoints: dict[str, str] = {}  # run id -> URI of its latest registered checkpoint
        self.searched: set[str] = set()  # Tune trial ids of search samples
        self._last_beat = time.monotonic()  # start_launch wrote the first heartbeat

    def _run_for(self, trial: Any) -> str:
        if trial.trial_id in self.runs:
            return self.runs[trial.trial_id]
        spec_trial = self.resolve(trial.config)
        previous = self.reopen.pop(spec_trial.key, None)
        run_id = self._reopen(previous, trial) if previous is not None else self._create(spec_trial, trial)
        self.runs[trial.trial_id] = run_id
        self.keys[trial.trial_id] = spec_trial.key
        if spec_trial.group:
            self.searched.add(trial.trial_id)
        return run_id

    def _create(self, spec_trial: Trial, trial: Any) -> str:
        """A new child run: the trial's tags and its flattened config as params."""
        from mlflow.entities import Param

        from prometar.config import flatten

        exp = self.ledger.experiment_id(create=True)
        assert exp is not None
        tags = {
            **trial_tags(spec_trial, self.sweep),
            PARENT_TAG: self.parent_run_id,
            VERSION_TAG: code_version(),
            GIT_SHA_TAG: self.sha,
            TUNE_TRIAL_ID_TAG: trial.trial_id,
            RESULT_REVISION_TAG: str(RESULT_REVISION),
            ATTEMPT_TAG: "1",
        }
        run = self.ledger.client.create_run(
            exp,
            tags=tags,
            run_name=f"{spec_trial.dataset}-{spec_trial.method}-s{spec_trial.seed}-{spec_trial.key}",
        )
        run_id = run.info.run_id
        self.runs[trial.trial_id] = run_id  # known at once: a write retried after this reuses the run
        self.keys[trial.trial_id] = spec_trial.key
        params = [
            Param(k, json.dumps(v) if isinstance(v, (list, dict)) else str(v))
            for k, v in sorted(flatten(spec_trial.config).items())
        ]
        params.append(Param(PROTOCOL_PARAM, spec_trial.protocol))
        for i in range(0, len(params), PARAM_BATCH):
            self.ledger.client.log_batch(run_id, params=params[i : i + PARAM_BATCH])
        return run_id

    def _reopen(self, run: Any, trial: Any) -> str:
        """The same run again: RUNNING, one more attempt, owned by this launch; an earlier error set aside."""
        from mlflow.entities import RunTag

        client, run_id, tags = self.ledger.client, run.info.run_id, run.data.tags
        try:
            attempt = int(tags.get(ATTEMPT_TAG, "1")) + 1
        except ValueError:
            attempt = 2
        # a run still RUNNING in the launch's snapshot was a dead launch's, closed as KILLED before fan-out
        was = KILLED if run.info.status in ACTIVE else run.info.status
        new_tags = {
            PARENT_TAG: self.parent_run_id,
            ATTEMPT_TAG: str(attempt),
            TUNE_TRIAL_ID_TAG: trial.trial_id,
            GIT_SHA_TAG: self.sha,
            VERSION_TAG: code_version(),
            REOPENED_FROM_TAG: was,
        }
        if ERROR_TAG in tags:
            new_tags[PREVIOUS_ERROR_TAG] = tags[ERROR_TAG]
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in new_tags.items()])
        for stale in (ERROR_TAG, CLOSED_BY_TAG, STOPPED_EARLY_TAG):
            if stale in tags:
                client.delete_tag(run_id, stale)
        client.update_run(run_id, status=RUNNING)
        history = client.get_metric_history(run_id, EPOCH_METRIC)
        self.logged_epochs[run_id] = max((m.step for m in history), default=0)
        if tags.get(CHECKPOINT_TAG):
            self.checkpoints[run_id] = tags[CHECKPOINT_TAG]
        return run_id

    @_recording
    def on_step(self, iteration: int, trials: list, **info: Any) -> None:
        if time.monotonic() - self._last_beat >= HEARTBEAT_EVERY_S:
            self._last_beat = time.monotonic()
            self.ledger.heartbeat(self.parent_run_id)

    @_recording
    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._run_for(trial)

    @_recording
    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        from mlflow.entities import Metric

        run_id = self._run_for(trial)
        metrics = _numeric_metrics(result)
        if result.get(EVENT_KEY) == FINAL_EVENT:
            step = int(result.get(events.EPOCH_KEY, 0) or 0)
        else:
            step = int(result.get(events.EPOCH_KEY, result.get("training_iteration", 0)) or 0)
            if step <= self.logged_epochs.get(run_id, 0):
                return  # the run holds this epoch already (module docstring)
        now = int(time.time() * 1000)
        batch = [Metric(k, v, now, step) for k, v in sorted(metrics.items())]
        for i in range(0, len(batch), METRIC_BATCH):
            self.ledger.client.log_batch(run_id, metrics=batch[i : i + METRIC_BATCH])
        if result.get(EVENT_KEY) != FINAL_EVENT:
            self.logged_epochs[run_id] = step

    @_recording
    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        run_id = self._run_for(trial)
        self.ledger.client.set_tag(run_id, RETRIES_TAG, str(trial.num_failures))
        self.ledger.client.set_tag(run_id, LAST_RETRY_ERROR_TAG, _read_error(trial)[-MAX_TAG_LENGTH:])

    @_recording
    def on_checkpoint(self, iteration: int, trials: list, trial: Any, checkpoint: Any, **info: Any) -> None:
        """Tune registered a checkpoint (after the result it came with was logged): the run names
        it, and the checkpoints an earlier launch left for this run are deleted."""
        from orchestration.storage import uri_of

        run_id = self._run_for(trial)
        uri = uri_of(checkpoint.filesystem, checkpoint.path)
        self.ledger.client.set_tag(run_id, CHECKPOINT_TAG, uri)
        self._log_checkpoint_log(run_id, checkpoint)
        previous = self.checkpoints.get(run_id)
        self.checkpoints[run_id] = uri
        if previous and previous.rsplit("/", 1)[0] != uri.rsplit("/", 1)[0]:
            _delete_earlier_checkpoints(previous)  # another launch's trial folder: Tune does not prune it

    def _log_checkpoint_log(self, run_id: str, checkpoint: Any) -> None:
        """The ``trial.log`` an epoch checkpoint carries, as the run's artifact (the log so far)."""
        try:
            with checkpoint.filesystem.open_input_stream(f"{checkpoint.path}/{TRIAL_LOG_ARTIFACT}") as stream:
                text = stream.read().decode("utf-8", errors="replace")
        except (OSError, ValueError):  # a checkpoint without a log (the earlier launch's, the final one)
            return
        self.ledger.client.log_text(run_id, text, TRIAL_LOG_ARTIFACT)

    def _delete_trial_checkpoints(self, trial: Any, run_id: str) -> None:
        """Every checkpoint of the trial: this launch's (Tune's trial folder) and an earlier one's."""
        from orchestration.storage import delete_checkpoints

        storage = getattr(trial, "storage", None)
        if storage is not None:
            delete_checkpoints(storage.storage_filesystem, storage.trial_fs_path)
        previous = self.checkpoints.pop(run_id, None)
        if previous:
            _delete_earlier_checkpoints(previous)

    @_recording
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
        # FINISHED: the prompts and metrics are artifacts now, the checkpoints are not needed
        self._delete_trial_checkpoints(trial, run_id)
        with contextlib.suppress(Exception):  # the tag names nothing any more
            self.ledger.client.delete_tag(run_id, CHECKPOINT_TAG)

    @_recording
    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """The run ends FAILED with its error tagged first; then, as far as there is room, the
        whole error text and the trial's log as artifacts."""
        run_id = self._run_for(trial)
        key = self.keys[trial.trial_id]
        self.outcomes[key] = FAILED  # the trial's outcome, whether or not the ledger has room for it
        if trial_disk_full(trial):
            self.disk_full.add(key)
        text = _read_error(trial, with_log=True)
        error = split_error(text)[0]
        self.ledger.client.set_tag(run_id, ERROR_TAG, error[-MAX_TAG_LENGTH:])
        self.ledger.client.set_terminated(run_id, FAILED)
        try:
            self.ledger.client.log_text(run_id, text, ERROR_ARTIFACT)  # the error, then the log's last lines
            log = layout.trial_folder(self.trial_logs, key) / TRIAL_LOG_ARTIFACT if self.trial_logs else None
            if log is not None and log.is_file():
                self.ledger.client.log_artifact(run_id, str(log))
        except Exception as err:
            if not is_disk_full(err):
                raise
            # no room for them: the run's error tag holds the reason

    @_recording
    def on_experiment_end(self, trials: list, **info: Any) -> None:
        for trial_id, run_id in self.runs.items():
            if self.keys[trial_id] not in self.outcomes:
                self.ledger.client.set_terminated(run_id, KILLED)
                self.outcomes[self.keys[trial_id]] = KILLED
        for trial in trials:  # a search sample never resumes in another launch: its checkpoints go
            if trial.trial_id in self.searched:
                self._delete_trial_checkpoints(trial, self.runs[trial.trial_id])


def _delete_earlier_checkpoints(uri: str) -> None:
    """Delete the checkpoint at ``uri`` and every other checkpoint in its trial folder (an earlier
    launch's folder of the same trial; best effort: storage trouble must not stop a sweep)."""
    from orchestration.storage import StorageError, delete_checkpoints, open_storage

    try:
        storage = open_storage(uri.rsplit("/", 1)[0])
    except StorageError:
        return
    delete_checkpoints(storage.filesystem, storage.path)
