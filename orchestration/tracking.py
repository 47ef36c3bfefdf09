"""MLflow as the ledger: experiment per sweep, parent run per launch, one child run per trial key.

Layout (``architecture.md``, ``docs/internals.md``):

- experiment = the sweep's name; one parent run per launch tagged ``prometar.role=launch``;
- one child run per trial, tagged ``prometar.trial_key``, ``dataset``, ``method``, ``seed``,
  ``shots``, ``protocol``, ``sweep``, ``prometar.version``, ``prometar.git_sha``; params = the
  flattened resolved config; metrics = per-epoch curves (step = epoch) and the final metrics;
  artifacts = resolved config, prompt weights, per-class accuracies, environment.

Only the driver writes (:class:`MlflowTrialCallback`, a Tune callback), so the default SQLite
store ``<output>/mlflow.db`` has a single writer; with a tracking server (``http://``) the same
callback talks to it over HTTP, and no node needs the store's files. Before fan-out
:meth:`TrialLedger.statuses` says which keys already FINISHED (they are skipped) and
:meth:`TrialLedger.close_stale_runs` closes, as KILLED, runs a dead launch left RUNNING.

One run per trial key across launches: a trial a later launch runs again (its run ended KILLED or
FAILED) reopens its run (:meth:`TrialLedger.reopenable`): same run id, status RUNNING again,
:data:`ATTEMPT_TAG` counting the launches, the parent tag moved to the new launch; epochs the run
already holds are not logged twice (nor after a retry within a launch that resumed from an older
checkpoint than the last epoch logged). The run's :data:`CHECKPOINT_TAG` names its latest checkpoint
Tune registered (the trial resumes from it in the next launch); once the run is FINISHED (its
prompts and metrics are artifacts) the callback deletes the trial's checkpoints.

Reading never writes: a deleted experiment is reported (:class:`TrackingError`), never restored.

Which launches are alive: a launch's parent run carries its host and pid and a heartbeat tag
(:data:`HEARTBEAT_TAG`, Unix seconds) the callback refreshes every :data:`HEARTBEAT_EVERY_S`. A
RUNNING parent is alive while its heartbeat is younger than :data:`LAUNCH_ALIVE_S` and — on this
host — its pid still exists. Runs of a live launch (another output folder, another machine, one
tracking server) are neither closed nor started again.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray import tune

import prometar
from orchestration.environment import temporary_environment
from orchestration.spec import Trial

TRIAL_KEY_TAG = "prometar.trial_key"
ROLE_TAG = "prometar.role"
GROUP_TAG = "prometar.search_group"
ERROR_TAG = "prometar.error"
PARENT_TAG = "mlflow.parentRunId"
HOST_TAG = "prometar.host"
PID_TAG = "prometar.pid"
HEARTBEAT_TAG = "prometar.heartbeat"
ATTEMPT_TAG = "prometar.attempt"
"""How many launches ran this trial's run (1, then 2 when a later launch reopened it, ...)."""
CHECKPOINT_TAG = "prometar.checkpoint"
"""URI of the run's latest checkpoint registered by Tune (removed when the run FINISHED)."""
EPOCH_METRIC = "lr"
"""A metric every epoch report carries: its history says which epochs a run already holds."""
HEARTBEAT_EVERY_S = 60.0
"""How often a launch refreshes its parent run's heartbeat (from the Tune callback)."""
LAUNCH_ALIVE_S = 600.0
"""A launch whose heartbeat is older than this is dead (its RUNNING runs are closed as KILLED)."""
MAX_TAG_LENGTH = 5000
PARAM_BATCH = 100

# Keys Tune adds to every result; everything else numeric the trainable reported is a metric.
TUNE_RESULT_KEYS = frozenset({
    "done", "training_iteration", "time_this_iter_s", "time_total_s", "time_since_restore",
    "iterations_since_restore", "timestamp", "date", "pid", "hostname", "node_ip", "trial_id",
    "experiment_id", "experiment_tag", "config", "checkpoint_dir_name", "should_checkpoint",
    "timesteps_total", "episodes_total", "timesteps_since_restore", "warmup_time",
    "epoch", "prometar_event",
})


class TrackingError(RuntimeError):
    """The tracking store cannot be used (unreachable server, bad URI); names the URI."""


def default_tracking_uri(output: Path) -> str:
    """The embedded default ledger: a SQLite file ``<output>/mlflow.db``."""
    return f"sqlite:///{Path(output).resolve() / 'mlflow.db'}"


def git_sha() -> str:
    """The commit of the checkout ``prometar`` runs from, or ``unknown`` outside git."""
    root = Path(prometar.__file__).resolve().parents[1]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10, check=True)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _fail_fast() -> AbstractContextManager[None]:
    """No HTTP retries while probing: an unreachable server fails in seconds, not minutes."""
    return temporary_environment(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="10")


@dataclass
class TrialLedger:
    """The MLflow records of one sweep (one experiment).

    Attributes:
        tracking_uri: The MLflow tracking URI.
        experiment: The experiment name (the sweep's name).
        artifact_root: Where a new experiment stores artifacts (SQLite default), or ``None``.
    """

    tracking_uri: str
    experiment: str
    artifact_root: Path | None = None

    def __post_init__(self) -> None:
        self._client: Any = None
        self._experiment_id: str | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_client": None}  # Tune pickles callbacks; the client is remade

    @property
    def client(self) -> Any:
        """The MLflow client, made on first use (making one creates a missing SQLite store)."""
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    # -- reading ---------------------------------------------------------------------------

    def check_reachable(self) -> None:
        """Fail with :class:`TrackingError` unless the store answers and the sweep's experiment,
        if it exists, is not deleted (no trial has started yet)."""
        try:
            with _fail_fast():
                self.client.search_experiments(max_results=1)
        except Exception as err:  # any failure to talk to the store means: do not start
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise TrackingError(f"tracking URI {self.tracking_uri} is unreachable: {first[:300]}") from None
        self.experiment_id()

    def experiment_id(self, *, create: bool = False) -> str | None:
        """The experiment's id; created (with ``artifact_root``) when ``create`` and missing.

        Raises:
            TrackingError: The experiment exists but is deleted. It is not restored (reading
                never writes, and a launch does not bring back runs someone deleted); the message
                says how to restore it or remove it for good.
        """
        if self._experiment_id is None:
            found = self.client.get_experiment_by_name(self.experiment)
            if found is not None and found.lifecycle_stage == "deleted":
                raise TrackingError(deleted_experiment_message(self.experiment, found.experiment_id, self.tracking_uri))
            if found is not None:
                self._experiment_id = found.experiment_id
            elif create:
                location = self.artifact_root.resolve().as_uri() if self.artifact_root else None
                self._experiment_id = self.client.create_experiment(self.experiment, artifact_location=location)
        return self._experiment_id

    def runs(self) -> list[Any]:
        """Every run of the experiment (parents and children); empty if it does not exist."""
        exp = self.experiment_id()
        if exp is None:
            return []
        runs, token = [], None
        while True:
            page = self.client.search_runs([exp], max_results=1000, page_token=token)
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def statuses(self, runs: list[Any] | None = None) -> dict[str, set[str]]:
        """Trial key → the statuses of its child runs (``FINISHED``, ``FAILED``, ``RUNNING``, ...).

        ``runs``: a snapshot from :meth:`runs` to read instead of querying the store again.
        """
        out: dict[str, set[str]] = {}
        for run in self.runs() if runs is None else runs:
            key = run.data.tags.get(TRIAL_KEY_TAG)
            if key:
                out.setdefault(key, set()).add(run.info.status)
        return out

    def reopenable(self, keys: set[str] | frozenset[str], runs: list[Any] | None = None) -> dict[str, Any]:
        """Trial key → its latest run, for the keys whose latest run ended without finishing
        (KILLED or FAILED, or RUNNING in a dead launch): the run a new launch of the key reopens."""
        latest: dict[str, Any] = {}
        for run in self.runs() if runs is None else runs:
            key = run.data.tags.get(TRIAL_KEY_TAG)
            if key in keys and (key not in latest or (run.info.start_time or 0) > (latest[key].info.start_time or 0)):
                latest[key] = run
        return {key: run for key, run in latest.items() if run.info.status != "FINISHED"}

    def finished_in_group(self, group: str) -> list[Any]:
        """FINISHED child runs of one search group (to resume a search where it stopped)."""
        return [r for r in self.runs()
                if r.data.tags.get(GROUP_TAG) == group and r.info.status == "FINISHED"]

    # -- writing ---------------------------------------------------------------------------

    def live_launches(self, runs: list[Any] | None = None, *, now: float | None = None) -> dict[str, str]:
        """Parent runs of launches still alive: run id → ``"pid P on HOST"`` (module docstring)."""
        now = time.time() if now is None else now
        live = {}
        for run in self.runs() if runs is None else runs:
            tags = run.data.tags
            if tags.get(ROLE_TAG) == "launch" and run.info.status == "RUNNING" and _alive(tags, now):
                live[run.info.run_id] = f"pid {tags.get(PID_TAG)} on {tags.get(HOST_TAG)}"
        return live

    def running_in_live_launches(self, runs: list[Any] | None = None, *,
                                 now: float | None = None) -> list[tuple[Any, str]]:
        """The RUNNING child runs of live launches, each with its launch (``"pid P on HOST"``)."""
        runs = self.runs() if runs is None else runs
        live = self.live_launches(runs, now=now)
        return [(run, live[run.data.tags[PARENT_TAG]]) for run in runs
                if run.info.status in ("RUNNING", "SCHEDULED") and run.data.tags.get(TRIAL_KEY_TAG)
                and run.data.tags.get(PARENT_TAG) in live]

    def running_elsewhere(self, runs: list[Any] | None = None, *, now: float | None = None) -> dict[str, str]:
        """Trial key → the live launch (``"pid P on HOST"``) whose RUNNING run holds it."""
        return {run.data.tags[TRIAL_KEY_TAG]: holder for run, holder in self.running_in_live_launches(runs, now=now)}

    def close_stale_runs(self, runs: list[Any] | None = None, *, now: float | None = None) -> int:
        """Close as KILLED every run a dead launch left RUNNING (runs of live launches stay); returns how many."""
        runs = self.runs() if runs is None else runs
        live = self.live_launches(runs, now=now)
        stale = [r for r in runs if r.info.status in ("RUNNING", "SCHEDULED")
                 and r.info.run_id not in live and r.data.tags.get(PARENT_TAG) not in live]
        for run in stale:
            self.client.set_tag(run.info.run_id, "prometar.closed_by", "relaunch")
            self.client.set_terminated(run.info.run_id, "KILLED")
        return len(stale)

    def start_launch(self, tags: Mapping[str, str]) -> str:
        """Create the parent run of this launch (host, pid, a first heartbeat); returns its id."""
        exp = self.experiment_id(create=True)
        assert exp is not None
        all_tags = {ROLE_TAG: "launch", "sweep": self.experiment, "prometar.version": prometar.__version__,
                    "prometar.git_sha": git_sha(), HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid()),
                    HEARTBEAT_TAG: f"{time.time():.0f}", **tags}
        run = self.client.create_run(exp, tags=all_tags, run_name=f"launch-{time.strftime('%Y%m%d-%H%M%S')}")
        return run.info.run_id

    def heartbeat(self, parent_run_id: str) -> None:
        """Mark the launch of ``parent_run_id`` alive now."""
        self.client.set_tag(parent_run_id, HEARTBEAT_TAG, f"{time.time():.0f}")

    def end_run(self, run_id: str, status: str) -> None:
        self.client.set_terminated(run_id, status)


def deleted_experiment_message(experiment: str, experiment_id: str, tracking_uri: str) -> str:
    """What a verb says about a deleted experiment (and how to restore it or remove it for good)."""
    return (f"experiment {experiment!r} (id {experiment_id}) is deleted in {tracking_uri}; it is left as it is. "
            f"Restore it with `mlflow experiments restore --experiment-id {experiment_id}` (with "
            f"MLFLOW_TRACKING_URI={tracking_uri}), or remove it for good with `mlflow gc`, then run this again")


def _alive(tags: Mapping[str, str], now: float) -> bool:
    """Whether the launch with these parent-run tags is alive (recent heartbeat; on this host, its pid)."""
    try:
        beat = float(tags.get(HEARTBEAT_TAG, ""))
    except ValueError:  # no heartbeat: a launch of a version without one, treated as dead
        return False
    if now - beat > LAUNCH_ALIVE_S:
        return False
    if tags.get(HOST_TAG) == socket.gethostname():
        try:
            os.kill(int(tags.get(PID_TAG, "")), 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # exists, another user's
            return True
        except (ValueError, OverflowError):
            return False
    return True


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
        resolve: Tune trial config → :class:`~orchestration.spec.Trial`.
        sweep: The sweep's name (the ``sweep`` tag).
        reopen: Trial key → the run this launch reopens for it (:meth:`TrialLedger.reopenable`);
            other keys get a new run.
    """

    def __init__(self, ledger: TrialLedger, parent_run_id: str, resolve: Callable[[Mapping[str, Any]], Trial],
                 sweep: str, reopen: Mapping[str, Any] | None = None) -> None:
        self.ledger = ledger
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
        self._last_beat = time.monotonic()  # start_launch wrote the first heartbeat

    def _run_for(self, trial: Any) -> str:
        if trial.trial_id in self.runs:
            return self.runs[trial.trial_id]
        spec_trial = self.resolve(trial.config)
        previous = self.reopen.pop(spec_trial.key, None)
        run_id = self._reopen(previous, trial) if previous is not None else self._create(spec_trial, trial)
        self.runs[trial.trial_id] = run_id
        self.keys[trial.trial_id] = spec_trial.key
        return run_id

    def _create(self, spec_trial: Trial, trial: Any) -> str:
        from mlflow.entities import Param

        from prometar.config import flatten

        exp = self.ledger.experiment_id(create=True)
        assert exp is not None
        tags = {**spec_trial.tags(self.sweep), PARENT_TAG: self.parent_run_id,
                "prometar.version": prometar.__version__, "prometar.git_sha": self.sha,
                "prometar.tune_trial_id": trial.trial_id, ATTEMPT_TAG: "1"}
        run = self.ledger.client.create_run(exp, tags=tags, run_name=f"{spec_trial.dataset}-{spec_trial.method}-"
                                                              f"s{spec_trial.seed}-{spec_trial.key}")
        run_id = run.info.run_id
        params = [Param(k, json.dumps(v) if isinstance(v, (list, dict)) else str(v))
                  for k, v in sorted(flatten(spec_trial.config).items())]
        params.append(Param("protocol_sweep", spec_trial.protocol))
        for i in range(0, len(params), PARAM_BATCH):
            self.ledger.client.log_batch(run_id, params=params[i:i + PARAM_BATCH])
        return run_id

    def _reopen(self, run: Any, trial: Any) -> str:
        """The same run again: RUNNING, one more attempt, owned by this launch; earlier errors kept aside."""
        from mlflow.entities import RunTag

        client, run_id, tags = self.ledger.client, run.info.run_id, run.data.tags
        try:
            attempt = int(tags.get(ATTEMPT_TAG, "1")) + 1
        except ValueError:
            attempt = 2
        new_tags = {PARENT_TAG: self.parent_run_id, ATTEMPT_TAG: str(attempt), "prometar.tune_trial_id": trial.trial_id,
                    "prometar.git_sha": self.sha, "prometar.version": prometar.__version__,
                    # a run still RUNNING in the snapshot was a dead launch's, closed as KILLED before fan-out
                    "prometar.reopened_from": "KILLED" if run.info.status in ("RUNNING", "SCHEDULED")
                    else run.info.status}
        if ERROR_TAG in tags:
            new_tags["prometar.previous_error"] = tags[ERROR_TAG]
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in new_tags.items()])
        for stale in (ERROR_TAG, "prometar.closed_by", "prometar.stopped_early"):
            if stale in tags:
                client.delete_tag(run_id, stale)
        client.update_run(run_id, status="RUNNING")
        history = client.get_metric_history(run_id, EPOCH_METRIC)
        self.logged_epochs[run_id] = max((m.step for m in history), default=0)
        if tags.get(CHECKPOINT_TAG):
            self.checkpoints[run_id] = tags[CHECKPOINT_TAG]
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
        if result.get("prometar_event") == "final":
            step = int(result.get("epoch", 0) or 0)
        else:
            step = int(result.get("epoch", result.get("training_iteration", 0)) or 0)
            if step <= self.logged_epochs.get(run_id, 0):
                # the run holds this epoch already: a retry resumed from an earlier checkpoint than
                # the last epoch logged (the node died before Tune registered the newer one), or a
                # reopened run; training is deterministic, so the values are the same
                return
            self.logged_epochs[run_id] = step
        now = int(time.time() * 1000)
        batch = [Metric(k, v, now, step) for k, v in sorted(metrics.items())]
        for i in range(0, len(batch), 1000):
            self.ledger.client.log_batch(run_id, metrics=batch[i:i + 1000])

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        run_id = self._run_for(trial)
        self.ledger.client.set_tag(run_id, "prometar.retries", str(trial.num_failures))
        self.ledger.client.set_tag(run_id, "prometar.last_retry_error", _read_error(trial)[-MAX_TAG_LENGTH:])

    def on_checkpoint(self, iteration: int, trials: list, trial: Any, checkpoint: Any, **info: Any) -> None:
        """Tune registered a checkpoint (after the result it came with was logged): the run names
        it, and the checkpoint an earlier launch left for this run is deleted."""
        from orchestration.storage import uri_of

        run_id = self._run_for(trial)
        uri = uri_of(checkpoint.filesystem, checkpoint.path)
        self.ledger.client.set_tag(run_id, CHECKPOINT_TAG, uri)
        previous = self.checkpoints.get(run_id)
        self.checkpoints[run_id] = uri
        if previous and previous.rsplit("/", 1)[0] != uri.rsplit("/", 1)[0]:
            _delete_earlier_checkpoints(previous)  # another launch's trial folder: Tune does not prune it

    def _delete_trial_checkpoints(self, trial: Any, run_id: str) -> None:
        """Every checkpoint of the trial: this launch's (Tune's trial folder) and an earlier one's."""
        from orchestration.storage import delete_checkpoints

        storage = getattr(trial, "storage", None)
        if storage is not None:
            delete_checkpoints(storage.storage_filesystem, storage.trial_fs_path)
        previous = self.checkpoints.pop(run_id, None)
        if previous:
            _delete_earlier_checkpoints(previous)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        run_id = self._run_for(trial)
        checkpoint = trial.checkpoint
        if checkpoint is not None:
            with tempfile.TemporaryDirectory(prefix="prometar-artifacts-") as tmp:
                folder = Path(checkpoint.to_directory(tmp))
                if (folder / "final.json").is_file():
                    self.ledger.client.log_artifacts(run_id, str(folder))
        final = (trial.last_result or {}).get("prometar_event") == "final"
        if not final:
            self.ledger.client.set_tag(run_id, "prometar.stopped_early", "1")
        self.ledger.client.set_terminated(run_id, "FINISHED")
        self.outcomes[self.keys[trial.trial_id]] = "FINISHED"
        # FINISHED: the prompts and metrics are artifacts now, the checkpoints are not needed
        self._delete_trial_checkpoints(trial, run_id)
        with contextlib.suppress(Exception):  # the tag names nothing any more
            self.ledger.client.delete_tag(run_id, CHECKPOINT_TAG)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        run_id = self._run_for(trial)
        error = _read_error(trial)
        self.ledger.client.set_tag(run_id, ERROR_TAG, error[-MAX_TAG_LENGTH:])
        self.ledger.client.log_text(run_id, error, "error.txt")
        self.ledger.client.set_terminated(run_id, "FAILED")
        self.outcomes[self.keys[trial.trial_id]] = "FAILED"

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        for trial_id, run_id in self.runs.items():
            if self.keys[trial_id] not in self.outcomes:
                self.ledger.client.set_terminated(run_id, "KILLED")
                self.outcomes[self.keys[trial_id]] = "KILLED"
        for trial in trials:  # a search sample never resumes in another launch: its checkpoints go
            if "group" in getattr(trial, "config", {}) and trial.trial_id in self.runs:
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
