"""Launching a sweep: plan → dedupe against the ledger → Ray Tune fan-out → outcome.

:func:`launch` validates the sweep file, checks the data root and the tracking store (bad input
raises :class:`LaunchError` / ``SpecError`` / ``TrackingError`` before anything is written),
closes runs a dead launch left RUNNING, skips trial keys already FINISHED (``force`` reruns them)
and runs the rest on a ``tune.Tuner``: a grid over trial keys, longest trials first, per-trial
resources by dataset (fractional GPUs pack trials), ``FailureConfig(max_failures)`` with resume
from the last epoch checkpoint, ``max_concurrent_trials``, and short trial directories. A sweep
with a ``search:`` section runs one Optuna search (optionally with ASHA) per grid point on the
``search`` run protocol, resuming from the samples already finished.

Ray storage (``--storage``; default ``<output>/ray``, or ``s3://...``, see
:mod:`orchestration.storage`) holds one experiment folder per sweep, ``<storage>/<sweep name>/``,
reused by every launch; each launch's trial folders are ``t_<key>-<launch>`` in it. Tune keeps the
last ``checkpoint.keep`` checkpoints of a running trial; the tracker deletes a trial's
checkpoints once its run FINISHED, and a trial an earlier launch left unfinished reopens its
MLflow run and resumes from the checkpoint the run names.

Embedded default: a local Ray started in-process, bound to 127.0.0.1, no dashboard; ``address``
joins a running cluster instead.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ray.tune.search.optuna import OptunaSearch

from orchestration.environment import temporary_environment
from orchestration.spec import (
    SearchGroup,
    SweepSpec,
    Trial,
    describe_trial,
    load_sweep,
    plan_search_groups,
    plan_trials,
    spec_to_yaml,
)
from orchestration.storage import is_uri
from orchestration.tracking import (
    GROUP_TAG,
    TRIAL_KEY_TAG,
    TrackingError,
    TrialLedger,
    default_tracking_uri,
    git_sha,
)

DEFAULT_OUTPUT = Path("prometar_runs")
DEFAULT_DATA_ROOT = Path("data")


class LaunchError(ValueError):
    """Bad launch input other than the sweep file (data root, overrides); names the path or key."""


@dataclass(frozen=True)
class LaunchOptions:
    """How to launch a sweep (the ``launch`` verb's options)."""

    data_root: Path = DEFAULT_DATA_ROOT
    output: Path = DEFAULT_OUTPUT
    storage: str | None = None
    address: str | None = None
    tracking_uri: str | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)
    dry_run: bool = False
    force: bool = False
    max_concurrent: int | None = None
    write_best: Path | None = None
    tables: bool = True


@dataclass
class LaunchReport:
    """What a launch did; ``exit_code`` is 0 when no trial failed, else 1."""

    sweep: str
    total: int
    done_before: int
    to_run: int
    finished: int = 0
    failed: int = 0
    killed: int = 0
    parent_run_id: str | None = None
    best: list[dict[str, Any]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed or self.killed else 0


@dataclass(frozen=True)
class SweepStatus:
    """Ledger state of a sweep's planned trials.

    ``running`` counts trials with a RUNNING run; ``stale`` how many of those a dead launch left
    RUNNING (the next launch closes them as KILLED and runs them again); ``launches`` names the
    live launches holding the others.
    """

    sweep: str
    total: int
    done: int
    failed: int
    running: int
    todo: int
    stale: int = 0
    launches: tuple[str, ...] = ()

    def line(self) -> str:
        text = (f"{self.sweep}: done {self.done} · failed {self.failed} · running {self.running} · "
                f"to do {self.todo} · total {self.total}")
        if self.stale:
            text += f" · {self.stale} of the running left by a dead launch (the next launch reruns them)"
        if self.launches:
            text += f" · live launch: {', '.join(self.launches)}"
        return text


# --------------------------------------------------------------------------------------------
# validate / status


def validate_sweep(path: str | Path, overrides: Mapping[str, Any] | None = None) -> tuple[SweepSpec, list[Trial]]:
    """Load and fully expand a sweep file (``SpecError`` on any problem)."""
    spec = load_sweep(path, overrides=overrides)
    return spec, plan_trials(spec)


def describe_validation(spec: SweepSpec, trials: list[Trial]) -> str:
    """What ``validate`` prints: the trial count and a sample trial."""
    import json

    lines = [f"{spec.source}: valid sweep {spec.name!r} ({spec.protocol})", f"trials: {spec.trial_count}"]
    if spec.search:
        lines.append(f"search: {len(trials)} group(s) × {spec.search.num_samples} samples on "
                     f"{spec.search.metric} ({spec.search.mode}); space: {', '.join(spec.search.space)}")
    lines.append(f"sample trial: {describe_trial(trials[0])}")
    lines.append(json.dumps(trials[0].config, indent=2, sort_keys=True))
    return "\n".join(lines)


def _ledger(spec: SweepSpec, output: Path, tracking_uri: str | None) -> TrialLedger:
    uri = tracking_uri or default_tracking_uri(output)
    artifacts = None if tracking_uri else Path(output).resolve() / "mlartifacts"
    return TrialLedger(uri, spec.name, artifact_root=artifacts)


def _store_exists(output: Path, tracking_uri: str | None) -> bool:
    return tracking_uri is not None or (Path(output) / "mlflow.db").is_file()


def _count(trials: list[Trial], statuses: Mapping[str, set[str]], spec: SweepSpec,
           live: Mapping[str, str] | None = None) -> SweepStatus:
    """Counts per planned trial; ``live``: trial key → live launch holding its RUNNING run."""
    live = live or {}
    done = failed = running = stale = 0
    for trial in trials:
        seen = statuses.get(trial.key, set())
        if "FINISHED" in seen:
            done += 1
        elif "RUNNING" in seen:
            running += 1
            stale += trial.key not in live
        elif "FAILED" in seen:
            failed += 1
    return SweepStatus(spec.name, len(trials), done, failed, running, len(trials) - done - failed - running,
                       stale, tuple(sorted(set(live.values()))))


def _ledger_status(spec: SweepSpec, trials: list[Trial], ledger: TrialLedger) -> SweepStatus:
    if spec.search is None:
        runs = ledger.runs()  # one snapshot of the store for both counts
        return _count(trials, ledger.statuses(runs), spec, ledger.running_elsewhere(runs))
    groups = plan_search_groups(spec)
    keys = {g.key for g in groups}
    runs = [r for r in ledger.runs() if r.data.tags.get("prometar.search_group") in keys]
    done = sum(min(sum(r.data.tags.get("prometar.search_group") == g.key and r.info.status == "FINISHED"
                       for r in runs), spec.search.num_samples) for g in groups)
    failed = sum(r.info.status == "FAILED" for r in runs)
    running = sum(r.info.status == "RUNNING" for r in runs)
    return SweepStatus(spec.name, spec.trial_count, done, failed, running, max(0, spec.trial_count - done - running))


def _status(spec: SweepSpec, trials: list[Trial], output: Path, tracking_uri: str | None) -> SweepStatus:
    """Counts from the ledger; an absent default store means nothing has run (and is not created)."""
    if not _store_exists(output, tracking_uri):
        total = spec.trial_count
        return SweepStatus(spec.name, total, 0, 0, 0, total)
    ledger = _ledger(spec, output, tracking_uri)
    ledger.check_reachable()
    return _ledger_status(spec, trials, ledger)


def sweep_status(path: str | Path, *, output: Path = DEFAULT_OUTPUT, tracking_uri: str | None = None,
                 overrides: Mapping[str, Any] | None = None) -> SweepStatus:
    """done / failed / running / to do of a sweep, from the ledger (reads only: nothing is created,
    restored or closed; a deleted experiment is a ``TrackingError``).

    ``overrides``: the ``--set`` overrides the sweep was launched with (they change its trial keys).
    """
    spec, trials = validate_sweep(path, overrides or None)
    return _status(spec, trials, Path(output), tracking_uri)


# --------------------------------------------------------------------------------------------
# launch


def check_data_root(spec: SweepSpec, trials: list[Trial], data_root: Path) -> None:
    """Every dataset the trials read (sources and evaluation targets) is present under ``data_root``."""
    from prometar.data.catalog import get_dataset

    root = Path(data_root)
    if not root.is_dir():
        raise LaunchError(f"data root {root} does not exist (--data-root)")
    needed = sorted({t.dataset for t in trials} | {x for t in trials for x in t.config["eval"]["targets"]})
    for key in needed:
        folder = root / get_dataset(key).folder
        if not folder.is_dir():
            raise LaunchError(f"{spec.source}: dataset {key!r} not found: {folder} does not exist (--data-root)")


def launch(path: str | Path, options: LaunchOptions = LaunchOptions(), *, stream: IO[str] | None = None) -> LaunchReport:
    """Run a sweep: the trials the ledger does not have FINISHED, on Ray Tune, recorded in MLflow.

    Args:
        path: The sweep file.
        options: Data root, output folder, cluster address, tracking URI, overrides, flags.
        stream: Where progress and summaries go (stdout by default).

    Returns:
        The launch report (``exit_code`` 1 when a trial failed).

    Raises:
        SpecError: Bad sweep file. LaunchError: bad data root, or the same sweep is being launched
            into the same output folder by another process. TrackingError: unusable store.
            All raised before any run or trial starts.
    """
    out = stream or sys.stdout
    spec, trials = validate_sweep(path, options.overrides)
    if is_uri(options.output):
        raise LaunchError(f"--output {options.output}: the output folder is a local folder (lock, tables, the "
                          "default SQLite ledger); put Ray storage on object storage with --storage URI")
    output = Path(options.output).resolve()
    if options.address is None:
        check_data_root(spec, trials, Path(options.data_root))
    ledger = _ledger(spec, output, options.tracking_uri)

    if options.dry_run:
        status = _status(spec, trials, output, options.tracking_uri)
        done = 0 if options.force else status.done
        print(f"[{spec.name}] dry run: done {done} · to do {status.total - done} · total {status.total}", file=out)
        return LaunchReport(spec.name, status.total, done, status.total - done)

    if options.tracking_uri is not None:
        ledger.check_reachable()  # a remote store: before anything is written locally
    _check_storage(options.storage)
    output.mkdir(parents=True, exist_ok=True)
    with launch_lock(output, spec.name, source=spec.source):
        return _launch_locked(spec, trials, ledger, output, options, out)


def _launch_locked(spec: SweepSpec, trials: list[Trial], ledger: TrialLedger, output: Path,
                   options: LaunchOptions, out: IO[str]) -> LaunchReport:
    """The launch proper, while this process holds the sweep's launch lock."""
    if options.tracking_uri is None:
        ledger.check_reachable()  # creates the SQLite ledger in the output folder
    runs = ledger.runs()  # one snapshot: closing stale runs does not change which keys FINISHED
    closed = ledger.close_stale_runs(runs)
    if closed:
        print(f"[{spec.name}] closed {closed} run(s) a previous launch left RUNNING as KILLED", file=out)
    busy = ledger.running_in_live_launches(runs)  # another live launch (another output, another machine)
    elsewhere = {run.data.tags[TRIAL_KEY_TAG]: holder for run, holder in busy}
    if elsewhere:
        holders = ", ".join(sorted(set(elsewhere.values())))
        print(f"[{spec.name}] {len(elsewhere)} trial(s) are running in another live launch ({holders}); "
              "not started here", file=out)

    if spec.search:
        report = LaunchReport(spec.name, spec.trial_count, 0, 0)
        busy_groups = Counter(run.data.tags.get(GROUP_TAG) for run, _ in busy)
        with _closing_parent(ledger, report):
            _launch_search(spec, ledger, output, options, out, report, busy_groups)
    else:
        statuses = {} if options.force else ledger.statuses(runs)
        done = [t for t in trials if "FINISHED" in statuses.get(t.key, set())]
        todo = [t for t in trials if t not in done and t.key not in elsewhere]
        report = LaunchReport(spec.name, len(trials), len(done), len(todo))
        # one run per trial key: a trial an earlier launch left unfinished continues its run
        reopen = {} if options.force else ledger.reopenable({t.key for t in todo}, runs)
        if not todo and len(done) == len(trials):
            print(f"[{spec.name}] nothing to do: all {len(trials)} trials FINISHED", file=out)
        elif not todo:
            print(f"[{spec.name}] nothing to do here: {len(done)} of {len(trials)} trials FINISHED, the rest "
                  "running in another live launch", file=out)
        else:
            print(f"[{spec.name}] {len(todo)} to run, {report.done_before} already done, {len(trials)} in total",
                  file=out)
            if reopen:
                print(f"[{spec.name}] {len(reopen)} trial(s) continue the MLflow run an earlier launch left "
                      "unfinished", file=out)
            with _closing_parent(ledger, report), _ray(options.address):
                _fan_out(spec, {t.key: t for t in todo}, {}, ledger, report, output, options, out, reopen=reopen)
    _finish(spec, ledger, output, report, options, out)
    return report


def storage_location(options: LaunchOptions, output: Path) -> str:
    """Where Ray storage lives: ``--storage`` (a local folder or a URI), else ``<output>/ray``."""
    return options.storage or str(Path(output) / "ray")


def _check_storage(location: str | None) -> None:
    """A ``--storage`` URI must open and answer before anything is written (``LaunchError`` otherwise)."""
    if not location or not is_uri(location):
        return
    from orchestration.storage import StorageError, open_storage

    try:
        storage = open_storage(location)
        storage.filesystem.get_file_info(storage.path)
    except (StorageError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise LaunchError(f"--storage {location}: cannot be used: {first[:300]}") from None


@contextmanager
def launch_lock(output: Path, sweep: str, *, source: str = "") -> Iterator[None]:
    """Hold ``<output>/.launch-<sweep>.lock`` for the duration of a launch.

    A second launch of the same sweep into the same output folder would close the first one's
    RUNNING runs as KILLED and run its trials twice; it is refused instead (``LaunchError``, exit
    2), naming the process holding the lock. The lock is an ``flock`` on an open file: the kernel
    drops it when the holding process ends, however it ends, so a killed launch never leaves a
    stale lock behind.

    Args:
        output: The launch's output folder (must exist).
        sweep: The sweep's name.
        source: The sweep file, for the error message.
    """
    import fcntl
    import json

    path = Path(output) / f".launch-{sweep}.lock"
    handle = open(path, "a+")  # noqa: SIM115 (held open for the whole launch)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            try:
                holder = json.loads(handle.read() or "{}")
            except ValueError:
                holder = {}
            who = (f"pid {holder.get('pid')} on {holder.get('host')}, since {holder.get('started')}"
                   if holder else "another process")
            raise LaunchError(f"{source or sweep}: sweep {sweep!r} is already being launched into {output} "
                              f"({who}); wait for it to end or stop it (lock: {path})") from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}))
        handle.flush()
        yield
    finally:
        handle.close()  # releases the lock


@contextmanager
def _closing_parent(ledger: TrialLedger, report: LaunchReport) -> Iterator[None]:
    """If the fan-out itself breaks (Ray lost, interrupted), the launch's parent run ends FAILED."""
    try:
        yield
    except BaseException:
        if report.parent_run_id:
            ledger.end_run(report.parent_run_id, "FAILED")
        raise


@contextmanager
def _loopback() -> Iterator[None]:
    """Keep a 127.0.0.1 node address as it is.

    On Linux Ray swaps a loopback node address for the machine's routable one unless its cluster
    mode is off (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER``, read once at import); it is switched off
    while Ray starts or connects, so a local instance never listens beyond this machine.
    """
    from ray._private import ray_constants

    saved = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved


def start_local_ray(**kwargs: Any) -> Any:
    """Start a local Ray instance in this process, every address on 127.0.0.1, no dashboard.

    Args:
        **kwargs: More ``ray.init`` arguments (``num_cpus``, ``runtime_env``, ...).
    """
    import ray

    with _loopback():
        return ray.init(address="local", include_dashboard=False, _node_ip_address="127.0.0.1",
                        dashboard_host="127.0.0.1", log_to_driver=False, configure_logging=False, **kwargs)


def join_ray(address: str) -> Any:
    """Connect this process to a running Ray cluster (a loopback one as a loopback node).

    Args:
        address: ``host:port`` of the head, ``auto`` (``RAY_ADDRESS`` or the latest local cluster,
            as in a Ray Job), or a ``ray://`` client address.
    """
    import ray

    target = address
    if address == "auto":
        from ray._private.services import get_ray_address_from_environment

        try:
            target = get_ray_address_from_environment("auto", None) or address
        except Exception:  # ray.init reports a missing cluster itself
            target = address
    host = target.rsplit(":", 1)[0] if "://" not in target else ""
    if host in ("127.0.0.1", "localhost"):
        with _loopback():
            return ray.init(address=address, _node_ip_address="127.0.0.1", log_to_driver=False)
    return ray.init(address=address, log_to_driver=False)


@contextmanager
def _ray(address: str | None) -> Iterator[None]:
    """Start Ray (embedded default: local, 127.0.0.1, no dashboard) or join ``address``.

    A Ray already initialised in this process (a test, a notebook) is used as it is and left running.
    """
    import ray

    if ray.is_initialized():
        yield
        return
    if address:
        join_ray(address)
    else:
        start_local_ray()
    try:
        yield
    finally:
        ray.shutdown()


def _resources_fn(spec: SweepSpec, table: Any) -> Any:
    from ray import tune

    def request(config: Mapping[str, Any]) -> Any:
        resources = spec.resources_for(table.resolve(config).dataset)
        bundle = {"CPU": resources.cpu}
        if resources.gpu > 0:
            bundle["GPU"] = resources.gpu
        return tune.PlacementGroupFactory([bundle])

    return request


def _fan_out(spec: SweepSpec, trials: dict[str, Trial], groups: dict[str, SearchGroup], ledger: TrialLedger,
             report: LaunchReport, output: Path, options: LaunchOptions, out: IO[str],
             search: tuple[SearchGroup, int, list[dict[str, Any]], list[float]] | None = None,
             reopen: Mapping[str, Any] | None = None) -> None:
    """One Tuner: a grid over ``trials`` (by key, in order), or one search group's samples.

    ``reopen``: trial key → the MLflow run (of an earlier launch) the trial continues.
    """
    from ray import tune

    from orchestration.progress import ProgressLine
    from orchestration.storage import open_storage
    from orchestration.tracking import CHECKPOINT_TAG, MlflowTrialCallback
    from orchestration.trainable import TrialTable, train_trial

    reopen = dict(reopen or {})
    resume = {key: run.data.tags[CHECKPOINT_TAG] for key, run in reopen.items() if run.data.tags.get(CHECKPOINT_TAG)}
    table = TrialTable(trials=trials, groups=groups, resume=resume)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: only our progress line
    parent = report.parent_run_id or ledger.start_launch({"prometar.trials_planned": str(report.total)})
    report.parent_run_id = parent
    storage = open_storage(storage_location(options, output))
    tracker = MlflowTrialCallback(ledger, parent, table.resolve, spec.name, reopen=reopen)
    trainable = tune.with_parameters(train_trial, table=table, data_root=str(Path(options.data_root).resolve()),
                                     output_root=str(output), git_sha=git_sha(), resume_local=not options.force,
                                     node_local=storage.remote, keep_checkpoints=spec.checkpoint_keep)
    trainable = tune.with_resources(trainable, _resources_fn(spec, table))
    launch_tag = parent[:8]

    def trial_folder(trial: Any) -> str:  # this launch's folder of the trial, in the sweep's one experiment folder
        return f"{_trial_name(trial)}-{launch_tag}"

    if search is None:
        param_space: dict[str, Any] = {"trial_key": tune.grid_search(list(trials))}
        progress = ProgressLine(spec.name, report.total, report.done_before, out)
        tune_config = tune.TuneConfig(max_concurrent_trials=options.max_concurrent, reuse_actors=True,
                                      trial_name_creator=_trial_name, trial_dirname_creator=trial_folder)
    else:
        group, samples, points, rewards = search
        assert spec.search is not None
        param_space = {"group": group.key, **{k: _domain(kind, args) for k, (kind, args) in spec.search.space.items()}}
        progress = ProgressLine(f"{spec.name}:{group.label}", spec.search.num_samples,
                                spec.search.num_samples - samples, out)
        tune_config = tune.TuneConfig(
            search_alg=_searcher(spec, points, rewards), scheduler=_scheduler(spec, group),
            num_samples=samples, max_concurrent_trials=options.max_concurrent, reuse_actors=True,
            trial_name_creator=_trial_name, trial_dirname_creator=trial_folder)

    run_config = tune.RunConfig(
        name=spec.name,  # one experiment folder per sweep, reused by every launch
        **storage.ray_run_config(),
        callbacks=[tracker, progress, *_tune_loggers()],
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=spec.checkpoint_keep),
        verbose=0,
    )
    try:
        # Tune's automatic loggers include a TensorBoard writer whose import pulls torch into the
        # driver (~3 s per launch); MLflow is the record, so only the JSON and CSV loggers run.
        # Keeping few checkpoints makes Tune snapshot its state often; its warning about that is noise.
        with temporary_environment(TUNE_DISABLE_AUTO_CALLBACK_LOGGERS="1",
                                   TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S="0"):
            tune.Tuner(trainable, param_space=param_space, tune_config=tune_config, run_config=run_config).fit()
    finally:
        outcomes = list(tracker.outcomes.values())
        report.finished += outcomes.count("FINISHED")
        report.failed += outcomes.count("FAILED")
        report.killed += outcomes.count("KILLED")


def _tune_loggers() -> list[Any]:
    """Tune's per-trial ``result.json`` and ``progress.csv`` (no TensorBoard files)."""
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    return [JsonLoggerCallback(), CSVLoggerCallback()]


def _trial_name(trial: Any) -> str:
    config = trial.config
    if "trial_key" in config:
        return f"t_{config['trial_key']}"
    return f"s_{config.get('group', 'x')[:6]}_{trial.trial_id[-5:]}"


def _domain(kind: str, args: list[Any]) -> Any:
    from ray import tune

    if kind == "uniform":
        return tune.uniform(args[0], args[1])
    if kind == "loguniform":
        return tune.loguniform(args[0], args[1])
    if kind == "randint":
        return tune.randint(int(args[0]), int(args[1]) + 1)  # the sweep's bounds are inclusive
    return tune.choice(list(args))


class FinalMetricOptunaSearch(OptunaSearch):
    """Optuna through Tune, fed only the results that carry the searched metric.

    A searched trial reports per-epoch training metrics (with its checkpoints) before its final
    ``val_*`` metrics; Tune's ``OptunaSearch`` would read the metric from every report.
    """

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if self.metric in result:
            super().on_trial_result(trial_id, result)


def _searcher(spec: SweepSpec, points: list[dict[str, Any]], rewards: list[float]) -> Any:
    assert spec.search is not None
    return FinalMetricOptunaSearch(metric=spec.search.metric, mode=spec.search.mode, seed=spec.search.seed,
                        points_to_evaluate=points or None, evaluated_rewards=rewards or None)


def _scheduler(spec: SweepSpec, group: SearchGroup) -> Any:
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    assert spec.search is not None
    if spec.search.scheduler != "asha":
        return FIFOScheduler()
    epochs = int(group.base_config["optim"]["epochs"])
    # stops trials on the searched metric at epoch rungs (needs it in the per-epoch reports)
    return ASHAScheduler(metric=spec.search.metric, mode=spec.search.mode, time_attr="training_iteration",
                         grace_period=1, max_t=max(2, epochs + 1))


def _launch_search(spec: SweepSpec, ledger: TrialLedger, output: Path, options: LaunchOptions,
                   out: IO[str], report: LaunchReport, busy_groups: Mapping[str, int]) -> None:
    """One Optuna search per group, resumed from the group's FINISHED samples; then the best.

    ``busy_groups``: search-group key → samples a live launch elsewhere is running; they count as
    taken, so the group never gets more than ``num_samples`` samples.
    """
    assert spec.search is not None
    groups = plan_search_groups(spec)
    with ExitStack() as stack:
        stack.enter_context(temporary_environment(TUNE_DISABLE_STRICT_METRIC_CHECKING="1"))  # val_* come last
        for group in groups:
            prior = [] if options.force else ledger.finished_in_group(group.key)
            prior = [r for r in prior if spec.search.metric in r.data.metrics]
            busy = busy_groups.get(group.key, 0)
            samples = spec.search.num_samples - len(prior) - busy
            report.done_before += min(len(prior), spec.search.num_samples)
            if samples <= 0:
                running = f", {busy} running in another live launch" if busy else ""
                print(f"[{spec.name}] {group.label}: search done ({len(prior)} samples{running})", file=out)
                continue
            if report.to_run == 0:
                stack.enter_context(_ray(options.address))
            report.to_run += samples
            points = [{k: _param_value(r.data.params[k]) for k in spec.search.space} for r in prior]
            rewards = [r.data.metrics[spec.search.metric] for r in prior]
            running = f", {busy} running in another live launch" if busy else ""
            print(f"[{spec.name}] {group.label}: {samples} sample(s) to run, {len(prior)} done{running}", file=out)
            _fan_out(spec, {}, {group.key: group}, ledger, report, output, options, out,
                     search=(group, samples, points, rewards))
    report.best = _best(spec, groups, ledger)
    for best in report.best:
        values = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in best["params"].items())
        print(f"[{spec.name}] best {best['label']}: {spec.search.metric}={best['value']:.2f}  {values}", file=out)
    if options.write_best and report.best:
        for written in write_best_sweeps(spec, report.best, Path(options.write_best)):
            print(f"[{spec.name}] wrote {written}", file=out)


def _param_value(text: str) -> Any:
    from prometar.config import parse_yaml

    return parse_yaml(text)


def _best(spec: SweepSpec, groups: list[SearchGroup], ledger: TrialLedger) -> list[dict[str, Any]]:
    assert spec.search is not None
    sign = 1 if spec.search.mode == "max" else -1
    best = []
    for group in groups:
        runs = [r for r in ledger.finished_in_group(group.key) if spec.search.metric in r.data.metrics]
        if not runs:
            continue
        top = max(runs, key=lambda r: sign * r.data.metrics[spec.search.metric])
        best.append({"group": group.key, "label": group.label, "dataset": group.base_config["data"]["dataset"],
                     "shots": group.base_config["data"]["shots"], "value": top.data.metrics[spec.search.metric],
                     "params": {k: _param_value(top.data.params[k]) for k in spec.search.space}})
    return best


def write_best_sweeps(spec: SweepSpec, best: list[dict[str, Any]], target: Path) -> list[Path]:
    """Write the best configuration as sweep file(s) for the real protocol.

    One search group: ``target`` itself. Several: ``<stem>.<dataset>-<shots>shots.yaml`` beside it,
    one per group (each best configuration applies to its own dataset and shots).
    """
    from dataclasses import replace

    written = []
    for entry in best:
        sub = replace(spec, grid={**spec.grid, "data.dataset": [entry["dataset"]], "data.shots": [entry["shots"]]})
        path = target if len(best) == 1 else target.with_name(f"{target.stem}.{entry['dataset']}-{entry['shots']}shots.yaml")
        name = f"{spec.name}_best" if len(best) == 1 else f"{spec.name}_best_{entry['dataset']}_{entry['shots']}shots"
        header = (f"# Best configuration of {spec.source} for {entry['label']}: "
                  f"{spec.search.metric if spec.search else 'metric'}={entry['value']:.2f} (validation, base classes)\n")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(header + spec_to_yaml(sub, name=name, overrides={**spec.overrides, **entry["params"]}))
        written.append(path)
    return written


def _finish(spec: SweepSpec, ledger: TrialLedger, output: Path, report: LaunchReport, options: LaunchOptions,
            out: IO[str]) -> None:
    """Summary line, the tables (``orchestration.tables``, when present), then close the parent run."""
    from orchestration.ui import ui_hint

    print(f"[{spec.name}] finished {report.finished} · failed {report.failed} · killed {report.killed} · "
          f"skipped (done before) {report.done_before}", file=out)
    print(f"[{spec.name}] {ui_hint(ledger.tracking_uri, output=options.output, default_uri=default_tracking_uri(output))}",
          file=out)
    try:
        if options.tables:
            _render_tables(spec, ledger, output, report, out)
    finally:
        if report.parent_run_id:
            ledger.end_run(report.parent_run_id, "FAILED" if report.exit_code else "FINISHED")


def _render_tables(spec: SweepSpec, ledger: TrialLedger, output: Path, report: LaunchReport, out: IO[str]) -> None:
    try:
        from orchestration.tables import render_tables_for_experiment
    except ImportError:
        return
    if ledger.experiment_id() is None:
        return
    from orchestration.ledger import summarize_sweep

    summary = summarize_sweep(spec)  # the planned runs only: the experiment may hold other configurations
    protocol = "search" if spec.search else spec.protocol
    try:
        written = render_tables_for_experiment(
            spec.name, ledger.tracking_uri, output / "tables" / spec.name, datasets=summary.datasets,
            protocol=protocol, search_space=summary.search_space, expected_seeds=summary.seeds,
            parent_run_id=report.parent_run_id, planned=summary.planned)
    except Exception as err:  # a table problem must not hide the sweep's outcome
        print(f"[{spec.name}] no table: {err}", file=out)
        return
    for name, path in written.items():
        if name.endswith(".md"):
            print(f"\n{path.read_text()}", file=out)


__all__ = [
    "LaunchError", "LaunchOptions", "LaunchReport", "SweepStatus", "TrackingError", "describe_validation",
    "join_ray", "launch", "launch_lock", "start_local_ray", "sweep_status", "validate_sweep", "write_best_sweeps",
]
