"""Launching a sweep: plan → dedupe against the ledger → Ray Tune fan-out → outcome.

:func:`launch` plans the sweep once (``orchestration.sweeps.planning``), checks the data root and
the tracking store (bad input raises an :class:`~orchestration.errors.InputError` before anything
is written), takes the launch lock, closes runs a dead launch left RUNNING, skips trial keys
already FINISHED (``force`` reruns them) or running in another live launch, and runs the rest on
Ray Tune (``orchestration.launch.tuner``; a search sweep: ``orchestration.launch.search``); a
trial an earlier launch left unfinished continues its MLflow run (one run per trial key). When
the sweep ends it prints the outcome and the command that shows the runs (``prometar-sweep ui``),
closes the launch's parent run and publishes the tables and the report of the planned runs
(``orchestration.results.publish``), logged on that run. The launch's state (options, report, the
launch in progress) lives in ``orchestration.launch.state``.

Embedded default: a local Ray started in-process, bound to 127.0.0.1, no dashboard; ``address``
joins a running cluster instead (``orchestration.launch.ray_session``).
"""

from __future__ import annotations

import contextlib
import sys
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from orchestration import layout
from orchestration.errors import (
    DiskFullLaunchError,
    InputError,
    LaunchError,
    TrackingError,
    TrackingLostError,
)
from orchestration.launch.doctor import DoctorOptions, failing, run_checks
from orchestration.launch.lock import launch_lock
from orchestration.launch.preflight import (
    check_cluster,
    check_data_root,
    check_inputs,
    check_local_gpus,
    check_output,
    check_storage,
)
from orchestration.launch.progress import ProgressLine
from orchestration.launch.ray_session import check_ray_address, ray_session
from orchestration.launch.reserve import SpaceReserve, space_reserve
from orchestration.launch.search import launch_search
from orchestration.launch.signals import sigterm_as_interrupt
from orchestration.launch.state import Launch, LaunchOptions, LaunchReport
from orchestration.launch.status import plan_status, revision_note
from orchestration.launch.trial_table import SourceModel, TrialTable
from orchestration.launch.tuner import MLFLOW_DATABASE_LOGGER, grid_space, parent_run, run_tuner, tune_config
from orchestration.ledger.outcomes import trial_outcomes
from orchestration.ledger.store import Claims, TrialLedger
from orchestration.ledger.vocabulary import FAILED, FINISHED, KILLED, SEARCH_GROUP_TAG, TRIAL_KEY_TAG
from orchestration.logs import quiet
from orchestration.storage import is_uri
from orchestration.sweeps.planning import SweepPlan, Trial, load_plan
from orchestration.ui import ui_hint
from prometar import protocols
from prometar.files import is_disk_full, out_of_space


def launch(
    path: str | Path, options: LaunchOptions | None = None, *, stream: IO[str] | None = None
) -> LaunchReport:
    """Run a sweep: the trials the ledger does not have FINISHED, on Ray Tune, recorded in MLflow.

    Args:
        path: The sweep file.
        options: Data root, output folder, cluster address, tracking URI, overrides, flags.
        stream: Where progress and summaries go (stdout by default).

    Returns:
        The launch report (``exit_code`` 1 when a trial failed), with the plan.

    Raises:
        SpecError: Bad sweep file. LaunchError: bad data root, or the same sweep is being launched
            into the same output folder by another process. TrackingError: unusable store.
            All raised before any run or trial starts.
    """
    out = stream or sys.stdout
    options = options or LaunchOptions()
    plan = load_plan(path, overrides=options.overrides)
    if is_uri(options.output):
        raise LaunchError(
            f"--output {options.output}: the output folder is a local folder (lock, tables, the "
            "default SQLite ledger); put Ray storage on object storage with --storage URI"
        )
    for note in plan.notes:
        print(note, file=sys.stderr)
    output = Path(options.output).resolve()
    check_output(output)
    if options.address is None:  # a local launch: the data and the weights are here
        check_data_root(plan, Path(options.data_root))
        check_inputs(plan, Path(options.data_root))
        if options.gpu_check:
            check_local_gpus(plan)
    else:  # on a cluster they live on its nodes
        check_inputs(plan, None, weights=False)
        if not options.dry_run:
            check_ray_address(options.address)
    ledger = TrialLedger.for_output(plan.name, output, options.tracking_uri)

    if options.dry_run:
        status = plan_status(plan, output, options.tracking_uri)
        done = 0 if options.force else status.done
        print(
            f"[{plan.name}] dry run: done {done} · to do {status.total - done} · total {status.total}"
            + (f" · {revision_note(status.other_revisions)}" if status.other_revisions else ""),
            file=out,
        )
        checks = run_checks(
            DoctorOptions(
                data_root=Path(options.data_root),
                output=output,
                tracking_uri=options.tracking_uri,
                storage=options.storage,
                address=options.address,
                inputs=False,  # checked above
            ),
            plan,
        )
        for check in checks:
            print(check.line(), file=out)
        report = LaunchReport(plan.name, status.total, done, status.total - done, plan=plan)
        report.checks_failed = len(failing(checks))
        return report

    if options.tracking_uri is not None:
        ledger.check_reachable()  # a remote store: before anything is written locally
    check_storage(options.storage)
    output.mkdir(parents=True, exist_ok=True)
    with (
        launch_lock(output, plan.name, source=plan.spec.source),
        sigterm_as_interrupt(),
        space_reserve(layout.space_reserve(output, plan.name)) as reserve,
        quiet(MLFLOW_DATABASE_LOGGER),  # a failed write raises too, and is reported as such
    ):
        return _launch_locked(plan, ledger, output, options, out, reserve)


def _launch_locked(
    plan: SweepPlan,
    ledger: TrialLedger,
    output: Path,
    options: LaunchOptions,
    out: IO[str],
    reserve: SpaceReserve,
) -> LaunchReport:
    """The launch proper, while this process holds the sweep's launch lock."""
    if options.tracking_uri is None:
        ledger.check_reachable()  # creates the SQLite ledger in the output folder
    runs = ledger.runs()  # one snapshot: closing stale runs does not change which keys FINISHED
    closed = ledger.close_stale_runs(runs)
    if closed:
        print(f"[{plan.name}] closed {closed} run(s) a previous launch left RUNNING as KILLED", file=out)
    other_revisions = ledger.finished_under_other_revisions(runs)
    if other_revisions:
        print(f"[{plan.name}] {revision_note(other_revisions)}", file=out)
    busy = ledger.running_in_live_launches(runs)  # another live launch (another output, another machine)
    elsewhere = {run.data.tags[TRIAL_KEY_TAG]: holder for run, holder in busy}
    if elsewhere:
        holders = ", ".join(sorted(set(elsewhere.values())))
        print(
            f"[{plan.name}] {len(elsewhere)} trial(s) are running in another live launch ({holders}); "
            "not started here",
            file=out,
        )

    with _store_loss_ends_the_launch(ledger, plan.name):
        return _fan_out(plan, ledger, output, options, out, runs, busy, elsewhere, reserve)


def _fan_out(
    plan: SweepPlan,
    ledger: TrialLedger,
    output: Path,
    options: LaunchOptions,
    out: IO[str],
    runs: list[Any],
    busy: list[tuple[Any, str]],
    elsewhere: Mapping[str, str],
    reserve: SpaceReserve | None = None,
) -> LaunchReport:
    """Run the trials not done nor running elsewhere (``runs``: the ledger's snapshot); then the
    summary, tables and report."""
    trials = list(plan.trials)
    if plan.groups:
        report = LaunchReport(plan.name, plan.total, 0, 0, plan=plan)
        current = Launch(plan, ledger, report, output, options, out, reserve)
        busy_groups = Counter(run.data.tags.get(SEARCH_GROUP_TAG) for run, _ in busy)
        with _closing_parent(current):
            launch_search(current, busy_groups)
    else:
        outcomes = {} if options.force else trial_outcomes(runs)
        # a transfer's source model counts as done wherever it FINISHED (another transfer sweep)
        trained = {} if options.force else ledger.finished_anywhere(t.key for t in plan.sources)
        done = [
            t
            for t in trials
            if (t.key in outcomes and outcomes[t.key].status == FINISHED) or t.key in trained
        ]
        todo = [t for t in trials if t not in done and t.key not in elsewhere]
        report = LaunchReport(plan.name, len(trials), len(done), len(todo), plan=plan)
        current = Launch(plan, ledger, report, output, options, out, reserve)
        claims = _claim(current, todo)
        try:
            _run_claimed(current, [t for t in todo if t.key in claims.held], runs)
        except BaseException as err:
            with contextlib.suppress(Exception):  # the fan-out's own error is the one to report
                ledger.release(claims.held)
            if isinstance(err, InputError) and not (report.finished or report.failed or report.killed):
                with contextlib.suppress(Exception):
                    ledger.client.delete_run(report.parent_run_id)  # refused before any trial: no record
            raise
        ledger.release(claims.held)
    _finish(current)
    return report


def _claim(launch: Launch, todo: list[Trial]) -> Claims:
    """Claim the keys of ``todo`` in the ledger (``TrialLedger.claim``); say which another launch holds."""
    report = launch.report
    if not todo:
        return Claims(held={}, elsewhere={}, finished=frozenset())
    claims = launch.ledger.claim([t.key for t in todo], parent_run(launch))
    launch.say_claimed_elsewhere(claims.elsewhere, "trial(s)", "not started here")
    report.done_before += len(claims.finished)
    report.to_run = len(claims.held)
    return claims


def _run_claimed(current: Launch, todo: list[Trial], runs: list[Any]) -> None:
    """Fan a grid sweep's claimed trials out on Ray Tune (or say there is nothing to do)."""
    plan, ledger, report, options, out = (
        current.plan,
        current.ledger,
        current.report,
        current.options,
        current.out,
    )
    trials, done = list(plan.trials), report.done_before
    # one run per trial key: a trial an earlier launch left unfinished continues its run
    reopen = {} if options.force else ledger.reopenable({t.key for t in todo}, runs)
    if not todo and done == len(trials):
        print(f"[{plan.name}] nothing to do: all {len(trials)} trials FINISHED", file=out)
    elif not todo:
        print(
            f"[{plan.name}] nothing to do here: {done} of {len(trials)} trials FINISHED, the rest "
            "running in another live launch",
            file=out,
        )
    else:
        print(
            f"[{plan.name}] {len(todo)} to run, {report.done_before} already done, {len(trials)} in total",
            file=out,
        )
        if reopen:
            print(
                f"[{plan.name}] {len(reopen)} trial(s) continue the MLflow run an earlier launch left "
                "unfinished",
                file=out,
            )
        # After ray.init: Ray's own SIGTERM handler (an abort) is replaced, not the other way round.
        with _closing_parent(current), ray_session(options.address), sigterm_as_interrupt():
            check_cluster(
                plan,
                (t.dataset for t in todo),
                joined=options.address is not None,
                gpu_check=options.gpu_check,
                stream=sys.stderr,
            )
            progress = ProgressLine(plan.name, report.total, report.done_before, out)
            _run_grid(current, todo, progress, reopen)


def _run_grid(launch: Launch, todo: list[Trial], progress: ProgressLine, reopen: Mapping[str, Any]) -> None:
    """The grid trials to run: first the source models of a transfer sweep, then every other trial
    (a transfer trial evaluates its source model's prompts, found FINISHED in the ledger)."""
    sources = [t for t in todo if t.is_source]
    others = [t for t in todo if not t.is_source]
    for trials in (sources, others):
        if not trials:
            continue
        table = TrialTable(trials={t.key: t for t in trials})
        if trials is others and any(t.source for t in others):
            table, trials = _with_source_models(launch, others)
            if not trials:
                return
        run_tuner(
            launch,
            table,
            grid_space(trials),
            tune_config(launch),
            progress,
            reopen={key: run for key, run in reopen.items() if key in table.trials},
        )


def _with_source_models(launch: Launch, trials: list[Trial]) -> tuple[TrialTable, list[Trial]]:
    """The transfer trials whose source model FINISHED (in this sweep or another), with it; the
    others are not run, and the launch says so."""
    ledger = launch.ledger
    found = ledger.finished_anywhere({t.source for t in trials if t.source})
    ready = [t for t in trials if not t.source or t.source in found]
    waiting = len(trials) - len(ready)
    if waiting:
        print(
            f"[{launch.plan.name}] {waiting} transfer trial(s) not run: their source model did not "
            "finish (launch again once it has)",
            file=launch.out,
        )
        launch.report.blocked += waiting
    sources = {
        t.key: SourceModel(
            run_id=found[t.source].info.run_id,
            tracking_uri=ledger.tracking_uri,
            metrics={
                name: float(value)
                for name, value in found[t.source].data.metrics.items()
                if protocols.is_final_metric(name)
            },
        )
        for t in ready
        if t.source
    }
    return TrialTable(trials={t.key: t for t in ready}, sources=sources), ready


@contextmanager
def _closing_parent(launch: Launch) -> Iterator[None]:
    """If the fan-out itself breaks (Ray lost, interrupted), the launch's parent run ends FAILED.

    A full disk that broke it (Tune's own files, the ledger) ends it with one line naming the output
    folder (:class:`DiskFullLaunchError`), after the launch's reserve is given back so that the
    ledger can end the trials it left RUNNING as FAILED with that reason.
    """
    ledger, report = launch.ledger, launch.report
    try:
        yield
    except BaseException as err:
        # Tune may break on its own files (an empty error file) without saying the disk is full
        full = isinstance(err, Exception) and (
            is_disk_full(err) or report.disk_full > 0 or out_of_space(launch.output)
        )
        if full and launch.reserve is not None:
            launch.reserve.release()
        if report.parent_run_id:
            with contextlib.suppress(Exception):  # a store that is gone: the fan-out's error counts
                if full:
                    reason = f"no space left on device under {launch.output}"
                    ledger.fail_running(report.parent_run_id, reason)
                ledger.end_run(report.parent_run_id, FAILED)
        if full:
            raise DiskFullLaunchError(_disk_full_message(launch)) from None
        raise


def _disk_full_message(launch: Launch) -> str:
    """The one line a launch that met a full disk ends with."""
    return (
        f"[{launch.plan.name}] no space left on device: the output folder {launch.output} (or a disk "
        "the launch writes to) is full; the finished trials are recorded: free space and launch "
        "again to run the rest"
    )


@contextmanager
def _store_loss_ends_the_launch(ledger: TrialLedger, name: str) -> Iterator[None]:
    """A tracking store that stops answering during the fan-out ends the launch with one line
    (:class:`TrackingLostError`); what the ledger holds stays, and a relaunch continues."""
    try:
        yield
    except Exception as err:
        if isinstance(err, InputError):
            raise
        try:
            ledger.check_reachable()
        except TrackingError:
            first = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
            raise TrackingLostError(
                f"[{name}] tracking URI {ledger.tracking_uri} stopped answering during the launch "
                f"({first}); the finished trials are recorded: launch again when it is back"
            ) from None
        raise


def _finish(launch: Launch) -> None:
    """Summary line, close the parent run, then publish the tables and the report (it shows this
    launch as ended)."""
    plan, report, out = launch.plan, launch.report, launch.out
    print(
        f"[{plan.name}] finished {report.finished} · failed {report.failed} · killed {report.killed} · "
        f"skipped (done before) {report.done_before}",
        file=out,
    )
    if report.interrupted:
        print(
            f"[{plan.name}] interrupted: {report.interrupted} trial(s) did not end; launch again to "
            "run them (finished trials are kept)",
            file=out,
        )
    print(f"[{plan.name}] {ui_hint(launch.ledger.tracking_uri, output=launch.options.output)}", file=out)
    disk_full = report.disk_full or report.unrecorded
    if disk_full and launch.reserve is not None:
        launch.reserve.release()  # room for the ledger's last writes
    if report.parent_run_id:  # ended first: the report shows this launch as ended
        ended = KILLED if report.interrupted else FAILED if report.exit_code else FINISHED
        launch.ledger.end_run(report.parent_run_id, ended)
    if disk_full:  # no tables nor report on a full disk: `report` writes them once there is room
        print(_disk_full_message(launch), file=out)
    elif launch.ledger.experiment_id() is not None:
        _publish(launch)


def _publish(launch: Launch) -> None:
    """The tables of the runs the plan plans (the experiment may hold other configurations) and the
    report (not after an interruption), from one ledger read, logged on this launch's parent run
    (the latest launch's when this one had nothing to do): ``results.publish``."""
    from orchestration.ledger.runs import read_experiment
    from orchestration.results.context import ResultsContext
    from orchestration.results.publish import publish

    plan, options, output = launch.plan, launch.options, launch.output
    with_report = options.report and not launch.report.interrupted
    if not (options.tables or with_report):
        return
    context = ResultsContext.from_plan(
        plan, overrides=options.overrides, tracking_uri=launch.ledger.tracking_uri
    ).with_published()
    try:
        runs = read_experiment(plan.name, launch.ledger.tracking_uri, planned=context.planned)
        done = publish(
            context,
            runs,
            figures=with_report,
            tables_dir=layout.tables_folder(output, plan.name) if options.tables else None,
            report_dir=layout.reports_folder(output, plan.name) if with_report else None,
            log_to=launch.report.parent_run_id,
            log_latest=True,
            strict=False,
        )
    except Exception as err:  # a results problem must not hide the sweep's outcome (nor pass for success)
        launch.report.results_error = str(err) or type(err).__name__
        print(f"[{plan.name}] no results: {launch.report.results_error}", file=launch.out)
        return
    for note in done.notes:
        print(f"[{plan.name}] {note[0].lower()}{note[1:]}", file=launch.out)
    if options.tables:
        for table in done.tables:
            print(f"\n{table.render('markdown')}", file=launch.out)
    if done.report_html is not None:
        print(f"[{plan.name}] report: {done.report_html}", file=launch.out)


__all__ = ["Launch", "LaunchOptions", "LaunchReport", "launch"]
