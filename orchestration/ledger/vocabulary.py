"""The ledger's vocabulary: every MLflow tag, param, run status and Tune result key, defined once.

Writers (the store, the Tune callback, the trainable) and readers (status, the runs reader, the
tables) import these names; nobody spells them. The layout (``docs/internals.md``):

- a launch's parent run: ``prometar.role=launch``, the sweep, the code version, its host, pid and
  heartbeat, the planned trial count;
- one child run per trial key: the trial's identity (:data:`IDENTITY_TAGS` and
  :data:`TRIAL_KEY_TAG`, :data:`SEARCH_GROUP_TAG` for searched trials), the code version, the Tune
  trial id, retries and errors; params = the flattened resolved config plus :data:`PROTOCOL_PARAM`;
- the trainable's Tune results carry :data:`EVENT_KEY` (``epoch`` or ``final``, the run's events
  of ``prometar.events``) beside the metrics; :data:`TUNE_RESULT_KEYS` are Tune's own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometar import events
from prometar import metrics as run_metrics

if TYPE_CHECKING:
    from orchestration.sweeps.planning import Trial

# -- tags of child runs (one per trial key) ---------------------------------------------------
TRIAL_KEY_TAG = "prometar.trial_key"
SEARCH_GROUP_TAG = "prometar.search_group"
DATASET_TAG = "dataset"
METHOD_TAG = "method"
SEED_TAG = "seed"
SHOTS_TAG = "shots"
PROTOCOL_TAG = "protocol"
SWEEP_TAG = "sweep"
IDENTITY_TAGS: dict[str, str] = {
    "method": METHOD_TAG,
    "dataset": DATASET_TAG,
    "protocol": PROTOCOL_TAG,
    "shots": SHOTS_TAG,
    "seed": SEED_TAG,
}
"""Where a run sits in the paper's grid: column of the tidy runs table → its tag."""
PARENT_TAG = "mlflow.parentRunId"
TUNE_TRIAL_ID_TAG = "prometar.tune_trial_id"
RETRIES_TAG = "prometar.retries"
LAST_RETRY_ERROR_TAG = "prometar.last_retry_error"
ERROR_TAG = "prometar.error"
STOPPED_EARLY_TAG = "prometar.stopped_early"
CLOSED_BY_TAG = "prometar.closed_by"
CLOSED_BY_RELAUNCH = "relaunch"
ATTEMPT_TAG = "prometar.attempt"
"""How many launches ran the run of a trial key (1; 2 once a later launch reopened it; ...)."""
REOPENED_FROM_TAG = "prometar.reopened_from"
"""The status (KILLED, FAILED) a run had when a later launch reopened it."""
PREVIOUS_ERROR_TAG = "prometar.previous_error"
"""The error of a FAILED run a later launch reopened (its ``prometar.error`` moves here)."""
CHECKPOINT_TAG = "prometar.checkpoint"
"""URI of the latest checkpoint Tune registered for the run (removed once the run FINISHED)."""
EPOCH_METRIC = "lr"
"""A metric every epoch result carries: its history says which epochs a run already holds."""

# -- tags of both ------------------------------------------------------------------------------
VERSION_TAG = "prometar.version"
GIT_SHA_TAG = "prometar.git_sha"
RESULT_REVISION_TAG = "prometar.result_revision"
"""The result revision (``prometar.RESULT_REVISION``) of the code that recorded a run; absent = 1."""

# -- tags of a launch's parent run -------------------------------------------------------------
ROLE_TAG = "prometar.role"
LAUNCH_ROLE = "launch"
CAMPAIGN_ROLE = "campaign"
"""The role of a ``reproduce`` run in its campaign's experiment (it holds the reproduction report)."""
HOST_TAG = "prometar.host"
PID_TAG = "prometar.pid"
HEARTBEAT_TAG = "prometar.heartbeat"
TRIALS_PLANNED_TAG = "prometar.trials_planned"
OVERRIDES_TAG = "prometar.overrides"
"""The ``--set`` overrides the launch planned its sweep with, as a JSON object (dotted key → value):
the reading verbs select the runs of a sweep's latest launch by them."""

# -- tags of a trial key's claim run (a launch holds the key while its claim lives) ---------------
CLAIM_ROLE = "claim"
"""``ROLE_TAG`` of a claim run: one per (trial key, launch), deleted when the launch ends."""
CLAIM_KEY_TAG = "prometar.claimed_trial_key"
"""The trial key a claim run holds (never ``TRIAL_KEY_TAG``: a claim is not a trial's record)."""
CLAIM_HELD_TAG = "prometar.claim_held"
"""``"1"`` on a claim its launch won: it holds the key against any later claim."""

# -- params and artifacts ----------------------------------------------------------------------
PROTOCOL_PARAM = "protocol_sweep"
"""The trial's protocol tag, beside the flattened config (whose ``protocol`` is the run's)."""
ERROR_ARTIFACT = "error.txt"
TRIAL_LOG_ARTIFACT = "trial.log"
"""A trial's stdout, stderr and log records (``orchestration.logs``): logged at every epoch, with the
final artifacts, and when the trial fails."""
TABLES_ARTIFACT_PATH = "tables"
REPORT_ARTIFACT_PATH = "report"
"""Where a sweep's report (``report.html``, ``report.md``, ``figures/``) goes among its parent run's
artifacts."""
MAX_TAG_LENGTH = 5000

# -- run statuses (MLflow's) -------------------------------------------------------------------
FINISHED = "FINISHED"
FAILED = "FAILED"
RUNNING = "RUNNING"
SCHEDULED = "SCHEDULED"
KILLED = "KILLED"
ACTIVE = (RUNNING, SCHEDULED)
"""Statuses of a run that has not ended."""

# -- the trainable's Tune results --------------------------------------------------------------
EVENT_KEY = "prometar_event"
"""Which run event a Tune result reports: ``events.EPOCH`` or ``events.FINAL``."""
EPOCH_EVENT = events.EPOCH
FINAL_EVENT = events.FINAL
FINAL_FILE = "final.json"
"""The final metrics, in the checkpoint of the trainable's last report (with the artifacts)."""
TUNE_RESULT_KEYS = frozenset(
    {
        "done",
        "training_iteration",
        "time_this_iter_s",
        "time_total_s",
        "time_since_restore",
        "iterations_since_restore",
        "timestamp",
        "date",
        "pid",
        "hostname",
        "node_ip",
        "trial_id",
        "experiment_id",
        "experiment_tag",
        "config",
        "checkpoint_dir_name",
        "should_checkpoint",
        "timesteps_total",
        "episodes_total",
        "timesteps_since_restore",
        "warmup_time",
        events.EPOCH_KEY,
        EVENT_KEY,
    }
)
"""Keys of a Tune result that are not metrics (Tune's own, the epoch and the event)."""


SYSTEM_METRIC_PREFIX = "system/"
"""MLflow's prefix of system metrics (CPU, RAM, GPU utilisation and memory of the trial's node)."""
MEASUREMENTS = frozenset(run_metrics.MEASUREMENTS)
"""Per-epoch wall-clock measurements (``epoch_seconds``, ``images_per_second``)."""


def is_measurement(metric: str) -> bool:
    """A metric that measures the machine (time, throughput, system), not the method: never a
    result, never a training curve."""
    return metric in MEASUREMENTS or metric.startswith(SYSTEM_METRIC_PREFIX)


def trial_tags(trial: Trial, sweep: str) -> dict[str, str]:
    """The tags that identify a trial's child run."""
    tags = {
        TRIAL_KEY_TAG: trial.key,
        DATASET_TAG: trial.dataset,
        METHOD_TAG: trial.method,
        SEED_TAG: str(trial.seed),
        SHOTS_TAG: str(trial.shots),
        PROTOCOL_TAG: trial.protocol,
        SWEEP_TAG: sweep,
    }
    if trial.group:
        tags[SEARCH_GROUP_TAG] = trial.group
    return tags
