"""The ledger store: one sweep's MLflow records — who finished, who runs where, the launch runs.

MLflow is the ledger (``architecture.md``): experiment = the sweep's name; one parent run per
launch; one child run per trial key (the names: ``orchestration.ledger.vocabulary``). Only the
driver writes (the Tune callback, ``orchestration.ledger.callback``), so the default SQLite store
``<output>/mlflow.db`` has a single writer. Before fan-out :meth:`TrialLedger.statuses` says which
keys already FINISHED (they are skipped) and :meth:`TrialLedger.close_stale_runs` closes, as
KILLED, runs a dead launch left RUNNING.

A tracking server (``http://``) is used the same way over HTTP: no node needs the store's files.
One run per trial key across launches: :meth:`TrialLedger.reopenable` names the run a new launch
of an unfinished trial continues (the callback reopens it). Reading never writes: a deleted
experiment is reported (:class:`TrackingError`), never restored.

Which launches are alive: a launch's parent run carries its host and pid and a heartbeat tag the
callback refreshes every :data:`HEARTBEAT_EVERY_S`. A RUNNING parent is alive while its heartbeat
is younger than :data:`LAUNCH_ALIVE_S` and — on this host — its pid still exists. Runs of a live
launch (another output folder, another machine, one tracking server) are neither closed nor
started again.

Claims: before its trials fan out, a launch claims their keys (:meth:`TrialLedger.claim`), so
two launches that share one ledger never run the same key, queued trials included. It creates one
claim run per key (``ROLE_TAG`` ``claim``, the key in ``CLAIM_KEY_TAG``, its parent run), then
reads every claim back: among the claims of live launches a settled one (``CLAIM_HELD_TAG``: its
launch won it) holds the key, else the earliest (start time, then run id); the others delete theirs
and count the key as running elsewhere, and the winner marks its claim settled. Launches settling
at the same time compute the same winner from the same committed rows, so this needs no lock and
works on any store (SQLite, a server on PostgreSQL); across machines it assumes clocks that agree
to within the few milliseconds between one launch's claim and its settling. A key another launch
FINISHED meanwhile is dropped (statuses read after claiming). A launch deletes its claims when it
ends (:meth:`TrialLedger.release`); a dead launch's are ignored, and deleted by the next launch
(:meth:`TrialLedger.close_stale_runs`).

:func:`search_runs` is the one paginated reader of MLflow runs (this store and the runs reader of
the results layer use it).
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestration import layout
from orchestration.environment import temporary_environment
from orchestration.errors import TrackingError
from orchestration.layout import default_tracking_uri
from orchestration.ledger.uri import check_tracking_uri, probe_tracking_uri, sqlite_path
from orchestration.ledger.vocabulary import (
    ACTIVE,
    CLAIM_HELD_TAG,
    CLAIM_KEY_TAG,
    CLAIM_ROLE,
    CLOSED_BY_RELAUNCH,
    CLOSED_BY_TAG,
    ERROR_TAG,
    FAILED,
    FINISHED,
    GIT_SHA_TAG,
    HEARTBEAT_TAG,
    HOST_TAG,
    KILLED,
    LAUNCH_ROLE,
    PARENT_TAG,
    PID_TAG,
    RESULT_REVISION_TAG,
    ROLE_TAG,
    RUNNING,
    SEARCH_GROUP_TAG,
    SWEEP_TAG,
    TRIAL_KEY_TAG,
    VERSION_TAG,
)
from orchestration.provenance import code_version, git_sha
from prometar import RESULT_REVISION

HEARTBEAT_EVERY_S = 60.0
"""How often a launch refreshes its parent run's heartbeat (from the Tune callback)."""
_KEY = re.compile(r"[0-9a-f]{1,64}")
"""A trial key: hex digits (``orchestration.sweeps.keys``)."""
LAUNCH_ALIVE_S = 600.0
"""A launch whose heartbeat is older than this is dead (its RUNNING runs are closed as KILLED)."""


def search_runs(
    client: Any,
    experiment_id: str,
    *,
    filter_string: str = "",
    statuses: Sequence[str] | None = None,
    page_size: int = 1000,
) -> list[Any]:
    """Every run of an experiment matching ``filter_string`` (all pages), in ``statuses`` if given."""
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs(
            [experiment_id], filter_string=filter_string, max_results=page_size, page_token=token
        )
        runs.extend(r for r in page if statuses is None or r.info.status in statuses)
        token = page.token
        if not token:
            return runs


def _fail_fast() -> AbstractContextManager[None]:
    """No HTTP retries while probing: an unreachable server fails in seconds, not minutes."""
    return temporary_environment(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="10")


@dataclass(frozen=True)
class Claims:
    """What :meth:`TrialLedger.claim` obtained.

    Attributes:
        held: Trial key → this launch's claim run id: the keys this launch runs.
        elsewhere: Trial key → the live launch holding it (``"pid P on HOST"``).
        finished: Keys another launch finished while this one claimed them.
    """

    held: dict[str, str]
    elsewhere: dict[str, str]
    finished: frozenset[str]


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

    @classmethod
    def for_output(cls, experiment: str, output: Path | str, tracking_uri: str | None = None) -> TrialLedger:
        """The ledger of a sweep launched into ``output``: ``tracking_uri``, else the embedded one.

        The embedded default is the SQLite file ``<output>/mlflow.db``, its new experiments'
        artifacts under ``<output>/mlartifacts``; a given tracking URI keeps the server's own.
        """
        if tracking_uri is not None:
            check_tracking_uri(tracking_uri)  # before MLflow makes a client (or folders) of it
            return cls(tracking_uri, experiment)
        if layout.ledger_file(output).is_dir():  # the launch makes <output>; a folder there is no store
            check_tracking_uri(default_tracking_uri(output))
        return cls(default_tracking_uri(output), experiment, artifact_root=layout.artifact_root(output))

    @staticmethod
    def exists(output: Path | str, tracking_uri: str | None = None) -> bool:
        """Whether the ledger may hold runs: a store at a given URI (a SQLite file must exist), or an
        existing embedded store. Reading verbs ask first, so they never create a store."""
        if tracking_uri is None:
            if layout.ledger_file(output).exists():
                check_tracking_uri(default_tracking_uri(output))  # a folder there is no store
            return layout.ledger_file(output).is_file()
        check_tracking_uri(tracking_uri)
        database = sqlite_path(tracking_uri)
        return database is None or database.is_file()

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_client": None}  # Tune pickles callbacks; the client is remade

    @property
    def client(self) -> Any:
        """The MLflow client, made on first use (making one creates a missing SQLite store).

        A SQLite store is created and migrated under an ``flock`` beside it: two launches of
        different sweeps into one fresh output folder would otherwise both create the schema, and
        one would fail half-way ("unreachable: dimension_attributes").
        """
        if self._client is None:
            from mlflow.tracking import MlflowClient

            database = sqlite_path(self.tracking_uri)
            if database is None or not database.parent.is_dir():
                self._client = MlflowClient(tracking_uri=self.tracking_uri)
            else:
                with _store_lock(database):
                    client = MlflowClient(tracking_uri=self.tracking_uri)
                    client.search_experiments(max_results=1)  # the schema exists, migrated, from here on
                self._client = client
        return self._client

    # -- reading ---------------------------------------------------------------------------

    def check_reachable(self) -> None:
        """Fail with :class:`TrackingError` unless the store answers and the sweep's experiment,
        if it exists, is not deleted (no trial has started yet)."""
        probe_tracking_uri(self.tracking_uri)  # a host that drops packets: seconds, not a TCP timeout
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
                raise TrackingError(
                    deleted_experiment_message(self.experiment, found.experiment_id, self.tracking_uri)
                )
            if found is not None:
                self._experiment_id = found.experiment_id
            elif create:
                location = self.artifact_root.resolve().as_uri() if self.artifact_root else None
                self._experiment_id = self.client.create_experiment(
                    self.experiment, artifact_location=location
                )
        return self._experiment_id

    def runs(self) -> list[Any]:
        """Every run of the experiment (parents and children); empty if it does not exist."""
        exp = self.experiment_id()
        if exp is None:
            return []
        return search_runs(self.client, exp)

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

    def finished_under_other_revisions(self, runs: list[Any] | None = None) -> dict[int, int]:
        """Result revision → how many FINISHED trial runs code of that revision (not this one) recorded.

        Their trial keys are not this code's, so launches do not count them as done.
        """
        out: dict[int, int] = {}
        for run in self.runs() if runs is None else runs:
            if run.info.status == FINISHED and run.data.tags.get(TRIAL_KEY_TAG):
                revision = run_revision(run)
                if revision != RESULT_REVISION:
                    out[revision] = out.get(revision, 0) + 1
        return dict(sorted(out.items()))

    def reopenable(self, keys: set[str] | frozenset[str], runs: list[Any] | None = None) -> dict[str, Any]:
        """Trial key → its latest run, for the keys whose latest run ended without finishing
        (KILLED or FAILED, or RUNNING in a dead launch): the run a new launch of the key reopens."""
        latest: dict[str, Any] = {}
        for run in self.runs() if runs is None else runs:
            key = run.data.tags.get(TRIAL_KEY_TAG)
            if key in keys and (
                key not in latest or (run.info.start_time or 0) > (latest[key].info.start_time or 0)
            ):
                latest[key] = run
        return {key: run for key, run in latest.items() if run.info.status != FINISHED}

    def finished_anywhere(self, keys: Iterable[str]) -> dict[str, Any]:
        """Trial key → a FINISHED run of it in any experiment of the store, this sweep's first,
        then the latest: how a transfer sweep finds the source model another sweep trained."""
        keys = sorted(key for key in set(keys) if _KEY.fullmatch(key))  # trial keys are hex digests
        if not keys:
            return {}
        own = self.experiment_id()
        experiments = [e.experiment_id for e in self.client.search_experiments(max_results=50_000)]
        found: dict[str, Any] = {}
        for key in keys:
            runs = [
                run
                for experiment in experiments
                for run in search_runs(
                    self.client,
                    experiment,
                    filter_string=f"tags.`{TRIAL_KEY_TAG}` = '{key}'",
                    statuses=(FINISHED,),
                )
            ]
            if runs:
                found[key] = max(runs, key=lambda r: (r.info.experiment_id == own, r.info.end_time or 0))
        return found

    def finished_in_group(self, group: str) -> list[Any]:
        """FINISHED child runs of one search group (to resume a search where it stopped)."""
        return [
            r for r in self.runs() if r.data.tags.get(SEARCH_GROUP_TAG) == group and r.info.status == FINISHED
        ]

    # -- writing ---------------------------------------------------------------------------

    def live_launches(self, runs: list[Any] | None = None, *, now: float | None = None) -> dict[str, str]:
        """Parent runs of launches still alive: run id → ``"pid P on HOST"`` (module docstring)."""
        now = time.time() if now is None else now
        live = {}
        for run in self.runs() if runs is None else runs:
            tags = run.data.tags
            if tags.get(ROLE_TAG) == LAUNCH_ROLE and run.info.status == RUNNING and _alive(tags, now):
                live[run.info.run_id] = f"pid {tags.get(PID_TAG)} on {tags.get(HOST_TAG)}"
        return live

    def running_in_live_launches(
        self, runs: list[Any] | None = None, *, now: float | None = None
    ) -> list[tuple[Any, str]]:
        """The RUNNING child runs of live launches, each with its launch (``"pid P on HOST"``)."""
        runs = self.runs() if runs is None else runs
        live = self.live_launches(runs, now=now)
        return [
            (run, live[run.data.tags[PARENT_TAG]])
            for run in runs
            if run.info.status in ACTIVE
            and run.data.tags.get(TRIAL_KEY_TAG)
            and run.data.tags.get(PARENT_TAG) in live
        ]

    def running_elsewhere(self, runs: list[Any] | None = None, *, now: float | None = None) -> dict[str, str]:
        """Trial key → the live launch (``"pid P on HOST"``) whose RUNNING run holds it."""
        return {
            run.data.tags[TRIAL_KEY_TAG]: holder
            for run, holder in self.running_in_live_launches(runs, now=now)
        }

    def close_stale_runs(self, runs: list[Any] | None = None, *, now: float | None = None) -> int:
        """Close as KILLED every run a dead launch left RUNNING (runs of live launches stay).

        Returns:
            How many runs were closed.
        """
        runs = self.runs() if runs is None else runs
        live = self.live_launches(runs, now=now)
        stale = [
            r
            for r in runs
            if r.info.status in ACTIVE
            and r.info.run_id not in live
            and r.data.tags.get(PARENT_TAG) not in live
        ]
        closed = 0
        for run in stale:
            if run.data.tags.get(ROLE_TAG) == CLAIM_ROLE:  # a dead launch's claim: nothing to keep
                self.client.delete_run(run.info.run_id)
                continue
            self.client.set_tag(run.info.run_id, CLOSED_BY_TAG, CLOSED_BY_RELAUNCH)
            self.client.set_terminated(run.info.run_id, KILLED)
            closed += 1
        return closed

    def fail_running(self, parent_run_id: str, reason: str) -> int:
        """End the trial runs the launch ``parent_run_id`` left RUNNING as FAILED with ``reason``
        (its fan-out broke off: a full disk); returns how many."""
        failed = 0
        for run in self.runs():
            tags = run.data.tags
            ours = tags.get(PARENT_TAG) == parent_run_id
            if run.info.status in ACTIVE and tags.get(TRIAL_KEY_TAG) and ours:
                self.client.set_tag(run.info.run_id, ERROR_TAG, reason)
                self.client.set_terminated(run.info.run_id, FAILED)
                failed += 1
        return failed

    def claim(self, keys: Iterable[str], parent_run_id: str) -> Claims:
        """Claim trial keys for the launch ``parent_run_id`` (the module docstring: Claims).

        Returns:
            The keys this launch holds (with its claim run ids), those another live launch holds,
            and those that FINISHED meanwhile (not held).
        """
        return self.settle(self.stake(keys, parent_run_id))

    def stake(self, keys: Iterable[str], parent_run_id: str) -> dict[str, str]:
        """Create this launch's claim run for each key (the first half of :meth:`claim`)."""
        exp = self.experiment_id(create=True)
        assert exp is not None
        staked = {}
        for key in dict.fromkeys(keys):
            tags = {
                ROLE_TAG: CLAIM_ROLE,
                CLAIM_KEY_TAG: key,
                PARENT_TAG: parent_run_id,
                SWEEP_TAG: self.experiment,
            }
            staked[key] = self.client.create_run(exp, tags=tags, run_name=f"claim-{key}").info.run_id
        return staked

    def settle(self, staked: Mapping[str, str], *, now: float | None = None) -> Claims:
        """Read every claim back; keep the keys whose earliest live claim is this launch's (the
        second half of :meth:`claim`) and delete the claims that lost."""
        runs = self.runs()
        live = self.live_launches(runs, now=now)
        ours = set(staked.values())
        earliest: dict[str, tuple[tuple[int, int, str], Any]] = {}
        for run in runs:
            tags = run.data.tags
            key = tags.get(CLAIM_KEY_TAG)
            if (
                key in staked
                and tags.get(ROLE_TAG) == CLAIM_ROLE
                and run.info.status in ACTIVE
                and (tags.get(PARENT_TAG) in live or run.info.run_id in ours)
            ):
                confirmed = tags.get(CLAIM_HELD_TAG) == "1"  # a settled claim: its launch runs the key
                rank = (0 if confirmed else 1, run.info.start_time or 0, run.info.run_id)
                if key not in earliest or rank < earliest[key][0]:
                    earliest[key] = (rank, run)
        held: dict[str, str] = {}
        elsewhere: dict[str, str] = {}
        for key, run_id in staked.items():
            winner = earliest[key][1] if key in earliest else None
            if winner is not None and winner.info.run_id == run_id:
                held[key] = run_id
                continue
            self.client.delete_run(run_id)
            holder = live.get(winner.data.tags.get(PARENT_TAG, "")) if winner is not None else None
            elsewhere[key] = holder or "another launch"
        statuses = self.statuses()  # read after claiming: a key another launch finished and let go
        finished = frozenset(key for key in held if FINISHED in statuses.get(key, set()))
        for key in finished:
            self.client.delete_run(held.pop(key))
        for run_id in held.values():
            self.client.set_tag(run_id, CLAIM_HELD_TAG, "1")
        return Claims(held=held, elsewhere=elsewhere, finished=finished)

    def release(self, claims: Mapping[str, str]) -> None:
        """Delete this launch's claim runs (trial key → claim run id): its hold on the keys ends."""
        for run_id in claims.values():
            self.client.delete_run(run_id)

    def start_launch(self, tags: Mapping[str, str]) -> str:
        """Create the parent run of this launch (host, pid, a first heartbeat); returns its id."""
        exp = self.experiment_id(create=True)
        assert exp is not None
        all_tags = {
            ROLE_TAG: LAUNCH_ROLE,
            SWEEP_TAG: self.experiment,
            VERSION_TAG: code_version(),
            RESULT_REVISION_TAG: str(RESULT_REVISION),
            GIT_SHA_TAG: git_sha(),
            HOST_TAG: socket.gethostname(),
            PID_TAG: str(os.getpid()),
            HEARTBEAT_TAG: f"{time.time():.0f}",
            **tags,
        }
        run = self.client.create_run(exp, tags=all_tags, run_name=f"launch-{time.strftime('%Y%m%d-%H%M%S')}")
        return run.info.run_id

    def heartbeat(self, parent_run_id: str) -> None:
        """Mark the launch of ``parent_run_id`` alive now."""
        self.client.set_tag(parent_run_id, HEARTBEAT_TAG, f"{time.time():.0f}")

    def end_run(self, run_id: str, status: str) -> None:
        """End a run (the launch's parent) with ``status``."""
        self.client.set_terminated(run_id, status)

    def log_files(self, run_id: str, paths: Iterable[Path], artifact_path: str) -> None:
        """Log files as artifacts of a run, under ``artifact_path``."""
        for path in paths:
            self.client.log_artifact(run_id, str(path), artifact_path=artifact_path)


def download_run_artifact(tracking_uri: str, run_id: str, path: str, target: Path) -> Path:
    """One artifact of a run (``prompts.pt``), downloaded into the folder ``target``.

    Raises:
        TrackingError: The run or the artifact cannot be read (names both).
    """
    from mlflow.artifacts import download_artifacts

    try:
        return Path(
            download_artifacts(
                run_id=run_id, artifact_path=path, dst_path=str(target), tracking_uri=tracking_uri
            )
        )
    except Exception as err:  # any failure to fetch it is the same problem to the user
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise TrackingError(
            f"run {run_id}: cannot download {path} from {tracking_uri}: {first[:300]}"
        ) from None


def run_revision(run: Any) -> int:
    """The result revision a run was recorded under (its tag; runs from before the tag: 1)."""
    try:
        return int(run.data.tags.get(RESULT_REVISION_TAG, "1"))
    except ValueError:
        return 1


def deleted_experiment_message(experiment: str, experiment_id: str, tracking_uri: str) -> str:
    """What a verb says about a deleted experiment (and how to restore it or remove it for good)."""
    return (
        f"experiment {experiment!r} (id {experiment_id}) is deleted in {tracking_uri}; it is left as it is. "
        f"Restore it with `mlflow experiments restore --experiment-id {experiment_id}` (with "
        f"MLFLOW_TRACKING_URI={tracking_uri}), or remove it for good with `mlflow gc`, then run this again"
    )


@contextmanager
def _store_lock(database: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``<database>.lock`` (released by the kernel however we end)."""
    import fcntl

    with open(database.with_name(database.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


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
