"""A sweep's status in the ledger: done / failed / running / to do of its planned trials (reads only).

For a grid sweep each planned trial key counts once, by its outcome
(``orchestration.ledger.outcomes``: FINISHED if any run finished, else its latest run's status —
the rule the report counts by too; a KILLED trial is to do); a RUNNING run is *stale* when no live
launch holds it (the next launch closes it as KILLED and reruns the trial). For a search sweep
the FINISHED samples of each planned group count, up to its ``num_samples``. An absent embedded
store means nothing has run, and is not created.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from orchestration.layout import DEFAULT_OUTPUT
from orchestration.ledger.launches import latest_overrides
from orchestration.ledger.outcomes import Outcome, count_outcomes, trial_outcomes
from orchestration.ledger.store import TrialLedger
from orchestration.ledger.vocabulary import FAILED, FINISHED, RUNNING, SEARCH_GROUP_TAG
from orchestration.sweeps.planning import SweepPlan, load_plan
from prometar import RESULT_REVISION


@dataclass(frozen=True)
class SweepStatus:
    """Ledger state of a sweep's planned trials.

    ``running`` counts trials with a RUNNING run; ``stale`` how many of those a dead launch left
    RUNNING (the next launch closes them as KILLED and runs them again); ``launches`` names the
    live launches holding the others. ``other_revisions`` (result revision → FINISHED runs) counts
    the runs code of another result revision recorded: not counted as done (their trial keys are
    not this code's).
    """

    sweep: str
    total: int
    done: int
    failed: int
    running: int
    todo: int
    stale: int = 0
    launches: tuple[str, ...] = ()
    other_revisions: Mapping[int, int] = field(default_factory=dict)

    def line(self) -> str:
        text = (
            f"{self.sweep}: done {self.done} · failed {self.failed} · running {self.running} · "
            f"to do {self.todo} · total {self.total}"
        )
        if self.stale:
            text += f" · {self.stale} of the running left by a dead launch (the next launch reruns them)"
        if self.launches:
            text += f" · live launch: {', '.join(self.launches)}"
        note = revision_note(self.other_revisions)
        if note:
            text += f" · {note}"
        return text


def revision_note(other_revisions: Mapping[int, int]) -> str:
    """Why FINISHED runs of another result revision are not counted ("" when there are none)."""
    if not other_revisions:
        return ""
    count = sum(other_revisions.values())
    which = "an earlier" if max(other_revisions) < RESULT_REVISION else "another"
    shown = ", ".join(f"r{revision}" for revision in other_revisions)
    return (
        f"{count} run{'s' if count != 1 else ''} finished under {which} result revision ({shown}) "
        f"{'are' if count != 1 else 'is'} not counted; this code is r{RESULT_REVISION}"
    )


def sweep_status(
    path: str | Path,
    *,
    output: Path = DEFAULT_OUTPUT,
    tracking_uri: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> SweepStatus:
    """done / failed / running / to do of a sweep, from the ledger (reads only: nothing is created,
    restored or closed; a deleted experiment is a ``TrackingError``).

    ``overrides``: the ``--set`` overrides the sweep was launched with (they change its trial keys);
    None: those its latest launch recorded (``ledger.launches``).
    """
    plan = load_plan(path, overrides=overrides or None)
    output = Path(output)
    if not TrialLedger.exists(output, tracking_uri):
        return SweepStatus(sweep=plan.name, total=plan.total, done=0, failed=0, running=0, todo=plan.total)
    ledger = TrialLedger.for_output(plan.name, output, tracking_uri)
    ledger.check_reachable()
    runs = ledger.runs()
    if overrides is None:
        recorded = latest_overrides(runs)
        if recorded:
            plan = load_plan(path, overrides=recorded)
    return ledger_status(plan, ledger, runs)


def plan_status(plan: SweepPlan, output: Path, tracking_uri: str | None) -> SweepStatus:
    """Counts of a planned sweep from the ledger; an absent default store is not created."""
    if not TrialLedger.exists(output, tracking_uri):
        return SweepStatus(sweep=plan.name, total=plan.total, done=0, failed=0, running=0, todo=plan.total)
    ledger = TrialLedger.for_output(plan.name, output, tracking_uri)
    ledger.check_reachable()
    return ledger_status(plan, ledger)


def ledger_status(plan: SweepPlan, ledger: TrialLedger, runs: list[Any] | None = None) -> SweepStatus:
    """Counts of a planned sweep from one snapshot of its ledger (``runs``, read when not given)."""
    runs = ledger.runs() if runs is None else runs
    other_revisions = ledger.finished_under_other_revisions(runs)
    if not plan.groups:
        outcomes = trial_outcomes(runs)
        for key, run in ledger.finished_anywhere(t.key for t in plan.sources).items():
            outcomes[key] = Outcome(FINISHED, run)  # a source model another transfer sweep trained
        return replace(
            _count(plan, outcomes, ledger.running_elsewhere(runs)),
            other_revisions=other_revisions,
        )
    search = plan.spec.search
    assert search is not None
    keys = {g.key for g in plan.groups}
    runs = [r for r in runs if r.data.tags.get(SEARCH_GROUP_TAG) in keys]
    done = sum(
        min(
            sum(r.data.tags.get(SEARCH_GROUP_TAG) == g.key and r.info.status == FINISHED for r in runs),
            search.num_samples,
        )
        for g in plan.groups
    )
    failed = sum(r.info.status == FAILED for r in runs)
    running = sum(r.info.status == RUNNING for r in runs)
    return SweepStatus(
        sweep=plan.name,
        total=plan.total,
        done=done,
        failed=failed,
        running=running,
        todo=max(0, plan.total - done - running),
        other_revisions=other_revisions,
    )


def _count(
    plan: SweepPlan, outcomes: Mapping[str, Outcome], live: Mapping[str, Any] | None = None
) -> SweepStatus:
    """Counts per planned trial; ``live``: trial key → live launch holding its RUNNING run."""
    live = live or {}
    keys = [trial.key for trial in plan.trials]
    counts = count_outcomes(outcomes, keys)
    stale = sum(outcomes[key].status == RUNNING and key not in live for key in keys if key in outcomes)
    total = len(keys)
    return SweepStatus(
        sweep=plan.name,
        total=total,
        done=counts.finished,
        failed=counts.failed,
        running=counts.running,
        todo=total - counts.finished - counts.failed - counts.running,
        stale=stale,
        launches=tuple(sorted(set(live.values()))),
    )
